//! The keys of each bucket, in S3's order, and listings answered from them.
//!
//! Objects are stored under a hash of their key (see [`crate::disk`]), so no directory walk
//! could list them in order; the index is that order. S3 orders keys by the bytes of their
//! UTF-8, which is how `String` compares, so a `BTreeMap` answers prefixes, delimiters and
//! resume points exactly.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::SystemTime;

/// What a listing says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub size: u64,
    pub e_tag: String,
    pub last_modified: SystemTime,
}

/// The keys of one bucket.
pub(crate) type Keys = BTreeMap<String, Entry>;

/// A listing request, whichever API it came from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<'a> {
    pub prefix: &'a str,
    /// `None` or empty: no grouping, as on S3.
    pub delimiter: Option<&'a str>,
    /// List what sorts strictly after this (a marker, `start-after` or continuation token).
    pub after: Option<&'a str>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Object(String, Entry),
    /// A common prefix: the prefix, then the key up to and including the first delimiter.
    Prefix(String),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Object(key, _) | Item::Prefix(key) => key,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub items: Vec<Item>,
    pub is_truncated: bool,
    /// Where the next page starts after (the last key or common prefix of this one), when
    /// there is a next page.
    pub next: Option<String>,
}

/// One page of `keys` as S3 lists it: keys under the prefix and after the resume point; with a
/// delimiter, keys with the delimiter after the prefix are rolled up into one common prefix each,
/// and a common prefix counts as one entry against `max_keys`. A common prefix that sorts at or
/// before the resume point was on an earlier page (the resume point is inside it) and is skipped.
pub(crate) fn list(keys: &Keys, query: &Query<'_>) -> Page {
    if query.max_keys == 0 {
        return Page::default();
    }
    let delimiter = query.delimiter.filter(|d| !d.is_empty());
    let start = match query.after {
        Some(after) if after >= query.prefix => Bound::Excluded(after),
        _ => Bound::Included(query.prefix),
    };
    let mut page = Page::default();
    for (key, entry) in keys.range::<str, _>((start, Bound::Unbounded)) {
        // Keys with the prefix are contiguous from the prefix on.
        let Some(rest) = key.strip_prefix(query.prefix) else {
            break;
        };
        let item = match delimiter.and_then(|d| rest.find(d).map(|at| at + d.len())) {
            Some(end) => {
                let common = &key[..query.prefix.len() + end];
                let listed = page.items.last().is_some_and(|last| last.name() == common);
                if listed || query.after.is_some_and(|after| common <= after) {
                    continue;
                }
                Item::Prefix(common.to_owned())
            }
            None => Item::Object(key.clone(), entry.clone()),
        };
        if page.items.len() == query.max_keys {
            page.is_truncated = true;
            break;
        }
        page.items.push(item);
    }
    if page.is_truncated {
        page.next = page.items.last().map(|item| item.name().to_owned());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Keys {
        names
            .iter()
            .map(|name| {
                let entry = Entry {
                    size: name.len() as u64,
                    e_tag: "e".to_owned(),
                    last_modified: SystemTime::UNIX_EPOCH,
                };
                ((*name).to_owned(), entry)
            })
            .collect()
    }

    fn names(page: &Page) -> Vec<String> {
        page.items
            .iter()
            .map(|item| match item {
                Item::Object(key, _) => key.clone(),
                Item::Prefix(prefix) => format!("[{prefix}]"),
            })
            .collect()
    }

    fn query<'a>(prefix: &'a str, delimiter: Option<&'a str>, after: Option<&'a str>) -> Query<'a> {
        Query {
            prefix,
            delimiter,
            after,
            max_keys: 1000,
        }
    }

    #[test]
    fn keys_are_listed_in_utf8_byte_order() {
        // 'Z' < 'a' < 'é' (0xC3) < '😀' (0xF0): byte order, not case or code-point folding.
        let all = keys(&["a", "Z", "é", "😀", "a/b", "a-b", "a0"]);
        let page = list(&all, &query("", None, None));
        assert_eq!(names(&page), ["Z", "a", "a-b", "a/b", "a0", "é", "😀"]);
        assert!(!page.is_truncated);
    }

    #[test]
    fn an_object_and_the_folder_of_others_coexist_and_group_as_on_s3() {
        let all = keys(&["foo/bar", "foo/bar/xyzzy", "foo/bar/", "foo/baz"]);
        let root = list(&all, &query("", Some("/"), None));
        assert_eq!(names(&root), ["[foo/]"]);
        let foo = list(&all, &query("foo/", Some("/"), None));
        assert_eq!(names(&foo), ["foo/bar", "[foo/bar/]", "foo/baz"]);
        let bar = list(&all, &query("foo/bar/", Some("/"), None));
        assert_eq!(names(&bar), ["foo/bar/", "foo/bar/xyzzy"]);
        let flat = list(&all, &query("foo/bar", Some(""), None));
        assert_eq!(names(&flat), ["foo/bar", "foo/bar/", "foo/bar/xyzzy"]);
    }

    #[test]
    fn a_delimiter_of_several_characters_groups_up_to_its_end() {
        let all = keys(&["a--b--c", "a--d", "x"]);
        let page = list(&all, &query("", Some("--"), None));
        assert_eq!(names(&page), ["[a--]", "x"]);
        let page = list(&all, &query("a--", Some("--"), None));
        assert_eq!(names(&page), ["[a--b--]", "a--d"]);
    }

    #[test]
    fn pages_resume_after_their_last_entry_without_repeating_a_common_prefix() {
        let all = keys(&["a/1", "a/2", "b", "c/1", "c/2", "d"]);
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let q = Query {
                max_keys: 1,
                ..query("", Some("/"), after.as_deref())
            };
            let page = list(&all, &q);
            seen.extend(names(&page));
            if !page.is_truncated {
                assert_eq!(page.next, None);
                break;
            }
            after = page.next;
        }
        assert_eq!(seen, ["[a/]", "b", "[c/]", "d"]);
    }

    #[test]
    fn start_after_before_the_prefix_starts_at_the_prefix_and_after_it_skips() {
        let all = keys(&["a", "b/1", "b/2", "c"]);
        assert_eq!(
            names(&list(&all, &query("b/", None, Some("a")))),
            ["b/1", "b/2"]
        );
        assert_eq!(names(&list(&all, &query("b/", None, Some("b/1")))), ["b/2"]);
        assert_eq!(names(&list(&all, &query("", None, Some("b/2")))), ["c"]);
        assert!(list(&all, &query("", None, Some("c"))).items.is_empty());
        // A resume point inside a common prefix: that prefix was already listed.
        assert_eq!(
            names(&list(&all, &query("", Some("/"), Some("b/1")))),
            ["c"]
        );
    }

    #[test]
    fn max_keys_bounds_the_page_and_zero_lists_nothing() {
        let all = keys(&["a", "b", "c"]);
        let q = Query {
            max_keys: 2,
            ..query("", None, None)
        };
        let page = list(&all, &q);
        assert_eq!(names(&page), ["a", "b"]);
        assert!(page.is_truncated);
        assert_eq!(page.next.as_deref(), Some("b"));
        let exact = Query {
            max_keys: 3,
            ..query("", None, None)
        };
        let page = list(&all, &exact);
        assert!(!page.is_truncated, "nothing is left after the page");
        let none = Query {
            max_keys: 0,
            ..query("", None, None)
        };
        assert_eq!(list(&all, &none), Page::default());
    }

    #[test]
    fn a_prefix_lists_only_its_keys_even_long_ones() {
        let long = format!("p/{}", "k".repeat(1022));
        let all = keys(&["o", "p", long.as_str(), "p0", "q"]);
        assert_eq!(names(&list(&all, &query("p/", None, None))), [long]);
        assert_eq!(
            names(&list(&all, &query("/", None, None))),
            Vec::<String>::new()
        );
    }
}
