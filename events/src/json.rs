//! Reading a [`serde_json::Value`] with the path to each value kept beside it, so that every
//! error can say where it is and what it found.

use serde_json::{Map, Value};

use crate::EventError;

/// How many characters of a received string an error quotes: enough to recognise it, few
/// enough that a 256 KiB SQS body does not end up in one log line.
const QUOTED_CHARS: usize = 80;

/// How many keys of an unrecognised object an error lists.
const LISTED_KEYS: usize = 12;

/// A value in the received JSON and the path that leads to it (`payload.Records[0].s3`).
pub(crate) struct Located<'a> {
    pub(crate) value: &'a Value,
    pub(crate) path: String,
}

impl<'a> Located<'a> {
    /// The whole of a document, named `name` in errors (`payload`, `body`, `body.Message`).
    pub(crate) fn root(value: &'a Value, name: &str) -> Self {
        Self {
            value,
            path: name.to_owned(),
        }
    }

    pub(crate) fn object(&self) -> Result<&'a Map<String, Value>, EventError> {
        self.value
            .as_object()
            .ok_or_else(|| self.wrong_type("an object"))
    }

    /// The member `name` of this object; `None` when it is absent or `null`, which AWS writes
    /// for some values it does not have.
    pub(crate) fn field(&self, name: &str) -> Result<Option<Located<'a>>, EventError> {
        Ok(self
            .object()?
            .get(name)
            .filter(|value| !value.is_null())
            .map(|value| Located {
                value,
                path: format!("{}.{name}", self.path),
            }))
    }

    pub(crate) fn required(&self, name: &str) -> Result<Located<'a>, EventError> {
        self.field(name)?.ok_or_else(|| EventError::Missing {
            at: format!("{}.{name}", self.path),
        })
    }

    pub(crate) fn str(&self) -> Result<&'a str, EventError> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    /// A string that must say something: an empty bucket name or key names no object.
    pub(crate) fn non_empty_str(&self) -> Result<&'a str, EventError> {
        match self.str()? {
            "" => Err(EventError::Empty {
                at: self.path.clone(),
            }),
            text => Ok(text),
        }
    }

    pub(crate) fn u64(&self) -> Result<u64, EventError> {
        self.value
            .as_u64()
            .ok_or_else(|| self.wrong_type("a non-negative integer"))
    }

    /// The string member `name`; `None` when it is absent, `null` or empty, all of which AWS
    /// uses for "no value".
    pub(crate) fn optional_str(&self, name: &str) -> Result<Option<&'a str>, EventError> {
        match self.field(name)? {
            Some(member) => Ok(Some(member.str()?).filter(|text| !text.is_empty())),
            None => Ok(None),
        }
    }

    /// The elements of this array, each with its index in its path.
    pub(crate) fn items(&self) -> Result<Vec<Located<'a>>, EventError> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.wrong_type("an array"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(index, value)| Located {
                value,
                path: format!("{}[{index}]", self.path),
            })
            .collect())
    }

    /// The string found by following `names`, or `""`; for records that are skipped anyway,
    /// where a missing name must not turn a skip into an error.
    pub(crate) fn lenient_str(&self, names: &[&str]) -> &'a str {
        names
            .iter()
            .try_fold(self.value, |value, name| value.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub(crate) fn wrong_type(&self, expected: &'static str) -> EventError {
        EventError::WrongType {
            at: self.path.clone(),
            expected,
            received: describe(self.value),
        }
    }
}

/// A short description of a received value for an error message: its type, and the value
/// itself when it is small (`the string "aws:sns"`, `an object with keys "a", "b"`).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => format!("the string {}", quote(text)),
        Value::Array(items) if items.len() == 1 => "an array of 1 item".to_owned(),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(map) if map.is_empty() => "an empty object".to_owned(),
        Value::Object(map) => format!("an object with keys {}", key_list(map)),
    }
}

/// `text` in double quotes with control characters escaped, cut after [`QUOTED_CHARS`]
/// characters of output so that escapes cannot make it long either.
pub(crate) fn quote(text: &str) -> String {
    let mut quoted = String::from('"');
    let mut width = 0;
    for c in text.chars() {
        let escaped = c.escape_debug();
        width += escaped.len();
        if width > QUOTED_CHARS {
            quoted.push_str("\"...");
            return quoted;
        }
        // `char::escape_debug` escapes `'` as well, which reads oddly inside double quotes.
        if c == '\'' {
            quoted.push(c);
        } else {
            quoted.extend(escaped);
        }
    }
    quoted.push('"');
    quoted
}

/// The first [`LISTED_KEYS`] keys of `map`, quoted, and how many more there are.
pub(crate) fn key_list(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        return "(none: the object is empty)".to_owned();
    }
    let mut list: Vec<String> = map.keys().take(LISTED_KEYS).map(|key| quote(key)).collect();
    if map.len() > LISTED_KEYS {
        list.push(format!("and {} more", map.len() - LISTED_KEYS));
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptions_name_the_type_and_small_values() {
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!(false)), "false");
        assert_eq!(describe(&json!(-3)), "the number -3");
        assert_eq!(describe(&json!("aws:sns")), "the string \"aws:sns\"");
        assert_eq!(describe(&json!([1])), "an array of 1 item");
        assert_eq!(describe(&json!([1, 2])), "an array of 2 items");
        assert_eq!(describe(&json!({})), "an empty object");
        assert_eq!(
            describe(&json!({"b": 1, "a": 2})),
            "an object with keys \"a\", \"b\""
        );
    }

    #[test]
    fn quotes_are_cut_and_escaped() {
        let long = "x".repeat(200);
        assert_eq!(quote(&long), format!("\"{}\"...", "x".repeat(80)));
        assert_eq!(quote("two\nlines"), "\"two\\nlines\"");
        assert_eq!(quote("it's \"x\""), "\"it's \\\"x\\\"\"");
        // Escapes count towards the cut.
        assert_eq!(
            quote(&"\u{1b}".repeat(50)),
            format!("\"{}\"...", "\\u{1b}".repeat(13))
        );
        // Cut on a character boundary, never inside one.
        let wide = "日".repeat(100);
        assert_eq!(quote(&wide), format!("\"{}\"...", "日".repeat(80)));
    }

    #[test]
    fn long_key_lists_say_how_many_were_left_out() {
        let map: Map<String, Value> = (0..20).map(|n| (format!("k{n:02}"), json!(n))).collect();
        let list = key_list(&map);
        assert!(list.starts_with("\"k00\", \"k01\""), "{list}");
        assert!(list.ends_with("\"k11\", and 8 more"), "{list}");
    }

    #[test]
    fn paths_follow_the_members_and_indexes_read() {
        let value = json!({"Records": [{"s3": {"object": {"size": "12"}}}]});
        let root = Located::root(&value, "payload");
        let records = root.required("Records").and_then(|r| r.items());
        let record = records.expect("Records is an array").remove(0);
        let size = record
            .required("s3")
            .and_then(|s3| s3.required("object"))
            .and_then(|object| object.required("size"))
            .expect("the path exists");
        assert_eq!(
            size.u64().expect_err("a string is not a size").to_string(),
            "payload.Records[0].s3.object.size: expected a non-negative integer, \
             received the string \"12\""
        );
        assert_eq!(
            record
                .required("eventName")
                .err()
                .map(|error| error.to_string()),
            Some("payload.Records[0].eventName is missing".to_owned())
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let value = json!({"versionId": null, "eTag": ""});
        let object = Located::root(&value, "object");
        assert!(object.field("versionId").expect("an object").is_none());
        assert_eq!(object.optional_str("eTag").expect("a string"), None);
        assert_eq!(
            object
                .required("versionId")
                .err()
                .map(|error| error.to_string()),
            Some("object.versionId is missing".to_owned())
        );
    }
}
