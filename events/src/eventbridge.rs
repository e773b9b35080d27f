//! S3 events delivered by Amazon EventBridge, to a rule's Lambda target or through an SQS
//! queue: `{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}`.
//!
//! Format: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html>
//!
//! # Keys are used as they are, not form-decoded
//!
//! AWS documents the URL-encoding of keys for event notifications only ("The object key name
//! value is URL encoded. For example, "red flower.jpg" becomes "red+flower.jpg"",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>).
//! The EventBridge page above describes `detail.object.key` with no such note, and its examples
//! only use keys that read the same either way. What settles it is an event captured from a real
//! bucket, whose key keeps its colons: `raw/health-check/2023-08-08T14:03:40.532432.zip`
//! (<https://gist.github.com/vincentclaes/7a5eb53acc05b316c86769fed25d4e1a>), where a
//! notification writes `%3A` (as in <https://github.com/aws/aws-sdk-js/issues/837>).
//!
//! Not everyone agrees: Powertools for AWS Lambda (Python) applies `unquote_plus` to
//! `S3EventBridgeNotificationObject.key`, and LocalStack percent-encodes keys in the EventBridge
//! events it emulates; neither points to AWS behaviour. Decoding a key that was not encoded is
//! not harmless either way round: `a+b.csv` would become `a b.csv` and `100%.csv` an error. So
//! the key is taken verbatim, as the evidence from real S3 says.

use serde_json::{Map, Value};

use crate::json::{quote, Located};
use crate::{object_ref, EventError, Notice, ObjectFields};

const SOURCE: &str = "aws.s3";
const OBJECT_CREATED: &str = "Object Created";

const FIELDS: ObjectFields = ObjectFields {
    etag: "etag",
    version_id: "version-id",
};

/// Every EventBridge event has a `detail-type`; nothing else this crate reads does.
pub(crate) fn is_event(object: &Map<String, Value>) -> bool {
    object.contains_key("detail-type")
}

pub(crate) fn event(event: &Located<'_>) -> Result<Notice, EventError> {
    let detail_type = event.required("detail-type")?.str()?;
    let source = event.required("source")?.str()?;
    if source != SOURCE {
        return Err(EventError::NotFromS3 {
            at: event.path.clone(),
            source_name: quote(source),
            detail_type: quote(detail_type),
        });
    }
    let detail = event.required("detail")?;
    if detail_type != OBJECT_CREATED {
        return Ok(Notice::Ignored {
            bucket: detail.lenient_str(&["bucket", "name"]).to_owned(),
            key: detail.lenient_str(&["object", "key"]).to_owned(),
            event_name: detail_type.to_owned(),
        });
    }
    let bucket = detail
        .required("bucket")?
        .required("name")?
        .non_empty_str()?;
    let object = detail.required("object")?;
    let key = object.required("key")?.non_empty_str()?.to_owned();
    Ok(Notice::Created(object_ref(bucket, key, &object, &FIELDS)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{Notice, ObjectRef};

    use crate::tests::{direct, error_message as error};

    #[test]
    fn object_created_names_its_object_with_the_key_verbatim() {
        assert_eq!(
            direct(&fixture!("eventbridge-object-created.json")),
            [Notice::Created(ObjectRef {
                bucket: "files".into(),
                key: "incoming/scans/March report+notes 50%.pdf".into(),
                version_id: Some("IYV3p45BT0ac8hjHg1houSdS1a.Mro8e".into()),
                size: Some(183_004),
                etag: Some("b1946ac92492d2347c6235b4d2611184".into()),
                sequencer: Some("00663209AC5E9D7B21".into()),
            })]
        );
    }

    #[test]
    fn other_s3_detail_types_are_skipped() {
        let payload = json!({
            "version": "0", "source": "aws.s3", "detail-type": "Object Deleted",
            "detail": {"bucket": {"name": "files"}, "object": {"key": "incoming/a b.csv"},
                       "reason": "DeleteObject", "deletion-type": "Permanently Deleted"}
        });
        assert_eq!(
            direct(&payload),
            [Notice::Ignored {
                bucket: "files".into(),
                key: "incoming/a b.csv".into(),
                event_name: "Object Deleted".into(),
            }]
        );
    }

    #[test]
    fn unversioned_objects_have_no_version() {
        let payload = json!({
            "source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": "files"},
                       "object": {"key": "incoming/a", "size": 5, "etag": "e", "sequencer": "01"}}
        });
        assert!(matches!(
            &direct(&payload)[..],
            [Notice::Created(ObjectRef {
                version_id: None,
                size: Some(5),
                ..
            })]
        ));
    }

    #[test]
    fn events_from_other_services_are_errors_that_name_them() {
        let payload = json!({
            "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "detail": {"instance-id": "i-abcd1111", "state": "pending"}
        });
        assert_eq!(
            error(&payload),
            "payload is an EventBridge event from source \"aws.ec2\", \
             detail-type \"EC2 Instance State-change Notification\"; \
             only events from \"aws.s3\" name objects"
        );
    }

    #[test]
    fn a_created_object_must_name_bucket_and_key() {
        fn event(detail: serde_json::Value) -> serde_json::Value {
            json!({"source": "aws.s3", "detail-type": "Object Created", "detail": detail})
        }
        for (payload, message) in [
            (
                json!({"source": "aws.s3", "detail-type": "Object Created"}),
                "payload.detail is missing",
            ),
            (
                json!({"detail-type": "Object Created", "detail": {}}),
                "payload.source is missing",
            ),
            (
                event(json!({"object": {"key": "incoming/a"}})),
                "payload.detail.bucket is missing",
            ),
            (
                event(json!({"bucket": {"name": "files"}, "object": {"key": ""}})),
                "payload.detail.object.key is empty",
            ),
            (
                event(json!({"bucket": "files", "object": {"key": "incoming/a"}})),
                "payload.detail.bucket: expected an object, received the string \"files\"",
            ),
            (
                event(json!({"bucket": {"name": "files"},
                             "object": {"key": "incoming/a", "size": "5"}})),
                "payload.detail.object.size: expected a non-negative integer, \
                 received the string \"5\"",
            ),
        ] {
            assert_eq!(error(&payload), message);
        }
    }
}
