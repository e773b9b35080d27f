//! Preconditions on an object's ETag and date, evaluated as S3 evaluates them.
//!
//! A reader that asks for "exactly the version I was told about" and a delete that must spare
//! a newer upload both depend on them; a copy checks its source with the same rules.

use s3s::dto::{ETag, ETagCondition, Timestamp};
use s3s::{s3_error, S3Result};

/// The conditional headers of a GetObject or HeadObject.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadConditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

impl ReadConditions<'_> {
    /// S3's rules (RFC 9110 §13.2.2): `If-Match` decides and `If-Unmodified-Since` is ignored
    /// when both are sent; likewise `If-None-Match` over `If-Modified-Since`. A failed
    /// `If-Match`/`If-Unmodified-Since` is 412, a failed `If-None-Match`/`If-Modified-Since` 304.
    pub(crate) fn check(
        &self,
        etag: Option<&ETag>,
        last_modified: Option<&Timestamp>,
    ) -> S3Result<()> {
        if let Some(condition) = self.if_match {
            if !etag_matches(condition, etag) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "the object's ETag does not match If-Match"
                ));
            }
        } else if let Some(since) = self.if_unmodified_since {
            if is_modified_since(last_modified, since) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "the object was modified after If-Unmodified-Since"
                ));
            }
        }

        if let Some(condition) = self.if_none_match {
            let matches = match condition {
                ETagCondition::Any => true,
                // If-None-Match uses the weak comparison.
                ETagCondition::ETag(expected) => etag.is_some_and(|e| e.weak_cmp(expected)),
            };
            if matches {
                return Err(s3_error!(NotModified));
            }
        } else if let Some(since) = self.if_modified_since {
            if !is_modified_since(last_modified, since) {
                return Err(s3_error!(NotModified));
            }
        }
        Ok(())
    }
}

/// `If-Match` with the strong comparison; `*` matches any existing object.
pub(crate) fn etag_matches(condition: &ETagCondition, etag: Option<&ETag>) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(expected) => etag.is_some_and(|e| e.strong_cmp(expected)),
    }
}

/// HTTP dates have whole seconds; file times have nanoseconds. Comparing at the precision of
/// the header is what makes `If-Modified-Since: <the Last-Modified we sent>` answer 304.
fn is_modified_since(last_modified: Option<&Timestamp>, since: &Timestamp) -> bool {
    let Some(last_modified) = last_modified else {
        return true;
    };
    seconds(last_modified) > seconds(since)
}

fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use s3s::S3ErrorCode;

    use super::*;

    fn strong(s: &str) -> ETag {
        ETag::Strong(s.to_owned())
    }

    fn code(result: S3Result<()>) -> Option<S3ErrorCode> {
        result.err().map(|e| e.code().clone())
    }

    #[test]
    fn if_match_passes_on_the_same_etag_and_fails_on_another() {
        let current = strong("abc");
        let same = ETagCondition::ETag(strong("abc"));
        let other = ETagCondition::ETag(strong("def"));
        let ok = ReadConditions {
            if_match: Some(&same),
            ..Default::default()
        };
        let stale = ReadConditions {
            if_match: Some(&other),
            ..Default::default()
        };
        assert_eq!(code(ok.check(Some(&current), None)), None);
        assert_eq!(
            code(stale.check(Some(&current), None)),
            Some(S3ErrorCode::PreconditionFailed)
        );
    }

    #[test]
    fn if_none_match_answers_not_modified_when_the_etag_is_current() {
        let current = strong("abc");
        let same = ETagCondition::ETag(strong("abc"));
        let conditions = ReadConditions {
            if_none_match: Some(&same),
            ..Default::default()
        };
        assert_eq!(
            code(conditions.check(Some(&current), None)),
            Some(S3ErrorCode::NotModified)
        );
    }

    #[test]
    fn dates_compare_at_whole_seconds_and_etags_take_precedence() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let modified = Timestamp::from(base + Duration::from_millis(400));
        let header = Timestamp::from(base);
        let later = Timestamp::from(base + Duration::from_secs(5));
        let current = strong("abc");
        let any = ETagCondition::Any;

        let unchanged = ReadConditions {
            if_modified_since: Some(&header),
            ..Default::default()
        };
        assert_eq!(
            code(unchanged.check(Some(&current), Some(&modified))),
            Some(S3ErrorCode::NotModified)
        );

        let unmodified_since_earlier = ReadConditions {
            if_unmodified_since: Some(&header),
            ..Default::default()
        };
        assert_eq!(
            code(unmodified_since_earlier.check(Some(&current), Some(&later))),
            Some(S3ErrorCode::PreconditionFailed)
        );

        let if_match_wins = ReadConditions {
            if_match: Some(&any),
            if_unmodified_since: Some(&header),
            ..Default::default()
        };
        assert_eq!(
            code(if_match_wins.check(Some(&current), Some(&later))),
            None
        );
    }
}
