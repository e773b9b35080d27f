//! Which object keys a directory can hold faithfully.
//!
//! `s3s-fs` stores `incoming/a/b.csv` as the file `BUCKET/incoming/a/b.csv`. S3 keys that do not
//! map one-to-one onto a path would silently alias another object (`a//b` and `a/./b` are the
//! file `a/b`) or leave the bucket's folder (`../x`). They are refused instead, with a message
//! that says why; every other key (spaces, `+`, unicode, deep paths) works as on S3.

use s3s::{s3_error, S3Result};

/// Refuses keys whose path segments would not round-trip through the file system.
///
/// A trailing `/` is allowed: it is a folder marker, stored as a directory.
pub(crate) fn check_key(key: &str) -> S3Result<()> {
    if let Some(problem) = key_problem(key) {
        return Err(s3_error!(
            InvalidArgument,
            "the embedded S3 server stores objects as files and cannot hold key {key:?}: {problem}"
        ));
    }
    Ok(())
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("the key is empty");
    }
    if key.contains('\0') {
        return Some("it contains a NUL character");
    }
    if key.starts_with('/') {
        return Some("it starts with '/'");
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    for segment in body.split('/') {
        match segment {
            "" => return Some("it contains an empty path segment ('//')"),
            "." | ".." => return Some("it contains a '.' or '..' path segment"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_keys_are_accepted() {
        for key in [
            "incoming/report.csv",
            "incoming/a b+c/ünïcödé 📄/deep/er/file name+1.csv",
            "incoming/",
            "x",
            "incoming/.hidden",
            "incoming/..double-dot-prefix",
        ] {
            assert_eq!(key_problem(key), None, "{key}");
        }
    }

    #[test]
    fn keys_that_alias_or_escape_are_refused() {
        for key in [
            "",
            "/incoming/a",
            "incoming//a",
            "incoming/./a",
            "incoming/../a",
            "..",
            "incoming//",
            "a\0b",
        ] {
            assert!(key_problem(key).is_some(), "{key:?}");
        }
    }

    #[test]
    fn the_error_names_the_key_and_the_reason() {
        let err = check_key("a//b").expect_err("refused");
        assert_eq!(err.code(), &s3s::S3ErrorCode::InvalidArgument);
        let message = err.message().unwrap_or_default();
        assert!(message.contains("\"a//b\""), "{message}");
        assert!(message.contains("empty path segment"), "{message}");
    }
}
