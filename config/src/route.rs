use std::fmt;

use crate::Rule;

/// What to do with an object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing<'a> {
    /// Compress it with this rule.
    Matched(&'a Rule),
    /// Leave it alone, for this reason.
    Skipped(SkipReason),
}

/// Why a key is left alone. Each is an ordinary outcome, not an error: a bucket holds more
/// than the worker's uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The key ends with `/`: the empty object consoles create to show a folder.
    FolderMarker,
    /// The key is the worker's own output. Validation keeps output prefixes out of source
    /// prefixes, so this only fires for keys no rule would match anyway; it stays as a runtime
    /// guard because compressing output again would never stop.
    UnderOutputPrefix { output_prefix: String },
    /// No rule's prefix is a prefix of the key.
    NoMatchingRule,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::FolderMarker => {
                f.write_str("the key ends with \"/\", so it is a folder marker, not a file")
            }
            SkipReason::UnderOutputPrefix { output_prefix } => write!(
                f,
                "the key is under the output prefix \"{output_prefix}\", so it is compressed \
                 output; compressing it again would never stop"
            ),
            SkipReason::NoMatchingRule => f.write_str("no rule's prefix matches the key"),
        }
    }
}

/// Routes `key` in this order: a folder marker (any key ending in `/`, the prefix itself
/// included) is skipped; then a key under any rule's output prefix; then the rule with the
/// longest matching source prefix wins, so `incoming/logs/` can refine `incoming/`.
pub(crate) fn route<'a>(rules: &'a [Rule], key: &str) -> Routing<'a> {
    if key.ends_with('/') {
        return Routing::Skipped(SkipReason::FolderMarker);
    }
    if let Some(rule) = longest(rules, key, |rule| &rule.output_prefix) {
        return Routing::Skipped(SkipReason::UnderOutputPrefix {
            output_prefix: rule.output_prefix.clone(),
        });
    }
    match longest(rules, key, |rule| &rule.prefix) {
        Some(rule) => Routing::Matched(rule),
        None => Routing::Skipped(SkipReason::NoMatchingRule),
    }
}

/// The rule whose chosen prefix is the longest one `key` starts with; the first in file order
/// on a tie, which only output prefixes can have.
fn longest<'a>(
    rules: &'a [Rule],
    key: &str,
    prefix: impl Fn(&Rule) -> &String,
) -> Option<&'a Rule> {
    rules
        .iter()
        .filter(|rule| key.starts_with(prefix(rule).as_str()))
        .fold(None, |best: Option<&Rule>, rule| match best {
            Some(best) if prefix(best).len() >= prefix(rule).len() => Some(best),
            _ => Some(rule),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, output_prefix: &str) -> Rule {
        Rule {
            prefix: prefix.into(),
            output_prefix: output_prefix.into(),
            format: "zip".into(),
            level: None,
            threads: None,
            delete_source: true,
            delete_without_if_match: false,
        }
    }

    fn rules() -> Vec<Rule> {
        vec![
            rule("incoming/", "processed/"),
            rule("incoming/logs/", "processed/logs/"),
            rule("incoming/logs/debug/", "archive/debug/"),
        ]
    }

    fn matched_prefix<'a>(rules: &'a [Rule], key: &str) -> &'a str {
        match route(rules, key) {
            Routing::Matched(rule) => &rule.prefix,
            Routing::Skipped(reason) => panic!("{key} was skipped: {reason}"),
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_file_order() {
        let mut rules = rules();
        for _ in 0..2 {
            assert_eq!(matched_prefix(&rules, "incoming/a.csv"), "incoming/");
            assert_eq!(
                matched_prefix(&rules, "incoming/logs/app.log"),
                "incoming/logs/"
            );
            assert_eq!(
                matched_prefix(&rules, "incoming/logs/debug/x/y.log"),
                "incoming/logs/debug/"
            );
            assert_eq!(matched_prefix(&rules, "incoming/logsX/a"), "incoming/");
            rules.reverse();
        }
    }

    #[test]
    fn folder_markers_are_skipped_including_the_prefix_itself() {
        let rules = rules();
        for key in [
            "incoming/",
            "incoming/logs/",
            "incoming/new folder/",
            "processed/",
            "x/",
        ] {
            assert_eq!(
                route(&rules, key),
                Routing::Skipped(SkipReason::FolderMarker),
                "{key}"
            );
        }
    }

    #[test]
    fn output_is_skipped_naming_the_longest_output_prefix() {
        let rules = rules();
        assert_eq!(
            route(&rules, "processed/a.zip"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "processed/".into()
            })
        );
        assert_eq!(
            route(&rules, "processed/logs/app.log.gz"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "processed/logs/".into()
            })
        );
    }

    #[test]
    fn the_output_guard_comes_before_matching() {
        // A config that validation would refuse, to show the guard holds on its own.
        let rules = vec![rule("data/", "data/compressed/")];
        assert_eq!(
            route(&rules, "data/compressed/a.zip"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "data/compressed/".into()
            })
        );
    }

    #[test]
    fn unmatched_keys_are_skipped() {
        let rules = rules();
        for key in [
            "",
            "report.csv",
            "Incoming/a.csv",
            "incoming",
            "other/incoming/a.csv",
        ] {
            assert_eq!(
                route(&rules, key),
                Routing::Skipped(SkipReason::NoMatchingRule),
                "{key}"
            );
        }
        assert_eq!(
            route(&[], "incoming/a"),
            Routing::Skipped(SkipReason::NoMatchingRule)
        );
    }

    #[test]
    fn skip_reasons_read_as_sentences() {
        assert_eq!(
            SkipReason::FolderMarker.to_string(),
            "the key ends with \"/\", so it is a folder marker, not a file"
        );
        assert_eq!(
            SkipReason::UnderOutputPrefix {
                output_prefix: "processed/".into()
            }
            .to_string(),
            "the key is under the output prefix \"processed/\", so it is compressed output; \
             compressing it again would never stop"
        );
        assert_eq!(
            SkipReason::NoMatchingRule.to_string(),
            "no rule's prefix matches the key"
        );
    }
}
