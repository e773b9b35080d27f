//! S3 event notifications, as S3 sends them to Lambda, SQS and SNS:
//! `{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {...}}]}`,
//! and the `s3:TestEvent` it sends once when a notification is configured.
//!
//! Format: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>

use serde_json::{Map, Value};

use crate::json::Located;
use crate::key::{decode_key, decode_key_at};
use crate::{object_ref, EventError, Notice, ObjectFields};

pub(crate) const EVENT_SOURCE: &str = "aws:s3";

/// Every creation event name (`ObjectCreated:Put`, `:Post`, `:Copy`,
/// `:CompleteMultipartUpload`) starts with this; nothing else does.
const CREATED_PREFIX: &str = "ObjectCreated:";

const TEST_EVENT: &str = "s3:TestEvent";

const FIELDS: ObjectFields = ObjectFields {
    etag: "eTag",
    version_id: "versionId",
};

/// The notices of records already known to come from S3. All or nothing: a direct invocation
/// has no way to report one record as failed, so a bad record fails the invocation and Lambda
/// retries it whole.
pub(crate) fn records(records: &[Located<'_>]) -> Result<Vec<Notice>, EventError> {
    records.iter().map(record).collect()
}

fn record(record: &Located<'_>) -> Result<Notice, EventError> {
    let event_name = record.required("eventName")?.non_empty_str()?;
    let s3 = record.required("s3")?;
    if !event_name.starts_with(CREATED_PREFIX) {
        let raw_key = s3.lenient_str(&["object", "key"]);
        return Ok(Notice::Ignored {
            bucket: s3.lenient_str(&["bucket", "name"]).to_owned(),
            key: decode_key(raw_key).unwrap_or_else(|_| raw_key.to_owned()),
            event_name: event_name.to_owned(),
        });
    }
    let bucket = s3.required("bucket")?.required("name")?.non_empty_str()?;
    let object = s3.required("object")?;
    let key = object.required("key")?;
    let decoded = decode_key_at(key.non_empty_str()?, &key.path)?;
    Ok(Notice::Created(object_ref(
        bucket, decoded, &object, &FIELDS,
    )?))
}

/// `{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": ...}`.
pub(crate) fn is_test_event(object: &Map<String, Value>) -> bool {
    object.get("Event").and_then(Value::as_str) == Some(TEST_EVENT)
}

pub(crate) fn test_event_bucket(event: &Located<'_>) -> Result<String, EventError> {
    Ok(event.required("Bucket")?.non_empty_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{parse, EventError, Invocation, Notice, ObjectRef};

    use crate::tests::{direct, error_message as error};

    /// A one-record notification with `object` as its `s3.object`.
    fn with_object(event_name: &str, object: serde_json::Value) -> serde_json::Value {
        json!({"Records": [{
            "eventSource": "aws:s3",
            "eventName": event_name,
            "s3": {"bucket": {"name": "files"}, "object": object}
        }]})
    }

    #[test]
    fn a_single_put_names_its_object() {
        assert_eq!(
            direct(&fixture!("s3-put.json")),
            [Notice::Created(ObjectRef {
                bucket: "files".into(),
                key: "incoming/reports/2024-05/sales.csv".into(),
                version_id: None,
                size: Some(1_048_576),
                etag: Some("9b2cf535f27731c974343645a3985328".into()),
                sequencer: Some("00663207AE5C0D1E3F".into()),
            })]
        );
    }

    #[test]
    fn every_record_is_read_and_keys_are_decoded() {
        assert_eq!(
            direct(&fixture!("s3-multi.json")),
            [
                Notice::Created(ObjectRef {
                    bucket: "files".into(),
                    key: "incoming/teams/emea/finance/2024/q1/Q1 report + appendix 100% final.csv"
                        .into(),
                    version_id: Some("3HL4kqtJlcpXroDTDmjVBH40Nrjfkd".into()),
                    size: Some(52311),
                    etag: Some("6f5902ac237024bdd0c176cb93063dc4".into()),
                    sequencer: Some("00663207C31D2A9B07".into()),
                }),
                Notice::Created(ObjectRef {
                    bucket: "files".into(),
                    key: "incoming/日本/empty marker.txt".into(),
                    // S3 writes "null" for an object written before versioning was enabled.
                    version_id: None,
                    size: Some(0),
                    etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
                    sequencer: Some("00663207C41E5F0A12".into()),
                }),
                Notice::Ignored {
                    bucket: "files".into(),
                    key: "incoming/old draft.csv".into(),
                    event_name: "ObjectRemoved:Delete".into(),
                },
            ]
        );
    }

    #[test]
    fn the_test_event_is_acknowledged() {
        match parse(&fixture!("s3-test-event.json")) {
            Ok(Invocation::TestEvent { bucket }) => assert_eq!(bucket, "files"),
            other => panic!("expected the test event, got {other:?}"),
        }
        assert_eq!(
            error(&json!({"Service": "Amazon S3", "Event": "s3:TestEvent"})),
            "payload.Bucket is missing"
        );
    }

    #[test]
    fn etags_lose_their_quotes_and_empty_values_are_none() {
        let notices = direct(&with_object(
            "ObjectCreated:Copy",
            json!({"key": "incoming/a", "eTag": "\"abc-2\"", "versionId": "", "sequencer": ""}),
        ));
        assert_eq!(
            notices,
            [Notice::Created(ObjectRef {
                bucket: "files".into(),
                key: "incoming/a".into(),
                version_id: None,
                size: None,
                etag: Some("abc-2".into()),
                sequencer: None,
            })]
        );
        let notices = direct(&with_object(
            "ObjectCreated:Post",
            json!({"key": "incoming/a", "eTag": "\"\"", "versionId": null, "size": null}),
        ));
        let [Notice::Created(object)] = &notices[..] else {
            panic!("expected one created object, got {notices:?}");
        };
        assert_eq!((&object.etag, object.size), (&None, None));
    }

    #[test]
    fn records_that_are_not_creations_are_skipped_even_when_incomplete() {
        let payload = json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectRestore:Completed",
             "s3": {"bucket": {"name": "files"}, "object": {"key": "incoming/100%"}}},
            {"eventSource": "aws:s3", "eventName": "LifecycleExpiration:Delete", "s3": {}},
        ]});
        assert_eq!(
            direct(&payload),
            [
                Notice::Ignored {
                    bucket: "files".into(),
                    // Not decodable, kept raw: it is only logged.
                    key: "incoming/100%".into(),
                    event_name: "ObjectRestore:Completed".into(),
                },
                Notice::Ignored {
                    bucket: String::new(),
                    key: String::new(),
                    event_name: "LifecycleExpiration:Delete".into(),
                },
            ]
        );
    }

    #[test]
    fn a_created_object_must_name_bucket_and_key() {
        let record = |s3: serde_json::Value| {
            json!({"Records": [
                {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                 "s3": {"bucket": {"name": "files"}, "object": {"key": "incoming/ok"}}},
                {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": s3},
            ]})
        };
        for (s3, message) in [
            (
                json!({"object": {"key": "incoming/a"}}),
                "payload.Records[1].s3.bucket is missing",
            ),
            (
                json!({"bucket": {"name": ""}, "object": {"key": "incoming/a"}}),
                "payload.Records[1].s3.bucket.name is empty",
            ),
            (
                json!({"bucket": {"name": "files"}}),
                "payload.Records[1].s3.object is missing",
            ),
            (
                json!({"bucket": {"name": "files"}, "object": {}}),
                "payload.Records[1].s3.object.key is missing",
            ),
            (
                json!({"bucket": {"name": "files"}, "object": {"key": 7}}),
                "payload.Records[1].s3.object.key: expected a string, received the number 7",
            ),
            (
                json!({"bucket": {"name": "files"}, "object": {"key": "incoming/a", "size": -1}}),
                "payload.Records[1].s3.object.size: expected a non-negative integer, \
                 received the number -1",
            ),
            (
                json!({"bucket": {"name": "files"}, "object": {"key": "incoming/%FF"}}),
                "payload.Records[1].s3.object.key \"incoming/%FF\" decodes to bytes that are \
                 not UTF-8",
            ),
            (
                json!({"bucket": {"name": "files"}, "object": {"key": "incoming/50%off"}}),
                "payload.Records[1].s3.object.key \"incoming/50%off\" has an invalid \
                 percent-escape \"%of\" at byte 11; S3 escapes a byte as % and two hex digits",
            ),
        ] {
            assert_eq!(error(&record(s3)), message);
        }
    }

    #[test]
    fn a_record_without_an_event_name_is_an_error() {
        let payload = json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]});
        let error = parse(&payload).expect_err("no eventName");
        assert!(
            matches!(&error, EventError::Missing { at } if at == "payload.Records[0].eventName")
        );
    }
}
