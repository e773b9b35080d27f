//! SQS batches: `{"Records": [{"eventSource": "aws:sqs", "messageId": ..., "body": "..."}]}`.
//!
//! A body is a JSON document in a string: an S3 notification or test event (S3 -> SQS), an
//! EventBridge event (rule -> SQS), or an SNS envelope around either of the first two
//! (S3 -> SNS -> SQS fan-out without raw message delivery; with it, the body is the S3 document
//! itself). Each message is judged on its own, so a bad one fails alone and is retried or sent
//! to the dead-letter queue without its neighbours.

use serde_json::Value;

use crate::json::{quote, Located};
use crate::{notices, EventError, Notice, SqsMessage};

pub(crate) const EVENT_SOURCE: &str = "aws:sqs";

/// The messages of records already known to come from SQS.
///
/// A record without a usable `messageId` fails the whole batch: it cannot be named in
/// `batchItemFailures`, and an unreported message would count as processed and be deleted.
pub(crate) fn batch(records: &[Located<'_>]) -> Result<Vec<SqsMessage>, EventError> {
    records
        .iter()
        .map(|record| {
            let message_id = record.required("messageId")?.non_empty_str()?.to_owned();
            let notices = record
                .required("body")
                .and_then(|body| body_notices(body.str()?));
            Ok(SqsMessage {
                message_id,
                notices,
            })
        })
        .collect()
}

fn body_notices(body: &str) -> Result<Vec<Notice>, EventError> {
    let document = from_json(body, "body")?;
    let located = Located::root(&document, "body");
    match sns_message(&located)? {
        Some(message) => {
            let inner = from_json(message, "body.Message")?;
            notices(&Located::root(&inner, "body.Message"))
        }
        None => notices(&located),
    }
}

/// The `Message` of an SNS notification envelope, `None` for anything else.
fn sns_message<'a>(document: &Located<'a>) -> Result<Option<&'a str>, EventError> {
    let is_sns = document
        .value
        .get("Type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind == "Notification");
    if !is_sns {
        return Ok(None);
    }
    Ok(Some(document.required("Message")?.str()?))
}

fn from_json(text: &str, at: &str) -> Result<Value, EventError> {
    serde_json::from_str(text).map_err(|source| EventError::NotJson {
        at: at.to_owned(),
        received: quote(text),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{parse, EventError, Invocation, Notice, ObjectRef, SqsMessage};

    fn batch(payload: &serde_json::Value) -> Vec<SqsMessage> {
        match parse(payload) {
            Ok(Invocation::Sqs(messages)) => messages,
            other => panic!("expected an SQS batch, got {other:?}"),
        }
    }

    /// A one-message batch with `body` as the message body.
    fn one_message(body: &str) -> Result<Vec<Notice>, EventError> {
        let payload = json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "m-1", "body": body}
        ]});
        let mut messages = batch(&payload);
        assert_eq!(messages.len(), 1);
        messages.remove(0).notices
    }

    #[test]
    fn each_message_is_judged_on_its_own() {
        let messages = batch(&fixture!("sqs-batch.json"));
        let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "059f36b4-87a3-44ab-83d2-661975830a7d",
                "2e1424d4-f796-459a-8184-9c92662be6da",
                "c8f1b3a2-5d4e-4f60-9a7b-1e2d3c4b5a69"
            ]
        );
        assert_eq!(
            messages[0].notices.as_ref().ok(),
            Some(&vec![Notice::Created(ObjectRef {
                bucket: "files".into(),
                key: "incoming/batch/orders 2024-05-01.json".into(),
                version_id: Some("Kx9.Jq2lGzBf3tM0Yy8pVaN5cRdE4wUh".into()),
                size: Some(734),
                etag: Some("0f343b0931126a20f133d67c2b018a3b".into()),
                sequencer: Some("006632089B1A2F3E4D".into()),
            })])
        );
        // The test event S3 sends when the queue is configured: nothing to do, not a failure.
        assert_eq!(messages[1].notices.as_ref().ok(), Some(&Vec::new()));
        let error = messages[2].notices.as_ref().expect_err("garbage body");
        assert_eq!(
            error.to_string(),
            "body is not JSON (expected value at line 1 column 1); \
             received \"hello from a script that posts to the wrong queue\""
        );
    }

    #[test]
    fn sns_envelopes_are_opened() {
        let messages = batch(&fixture!("sqs-sns.json"));
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].message_id,
            "d7a3e6c1-0b2f-4e8d-9c5a-3f1e2d4c6b8a"
        );
        assert_eq!(
            messages[0].notices.as_ref().ok(),
            Some(&vec![Notice::Created(ObjectRef {
                bucket: "files".into(),
                key: "incoming/shared/Budget (2024) v3.xlsx".into(),
                version_id: None,
                size: Some(88213),
                etag: Some("3858f62230ac3c915f300c664312c63f".into()),
                sequencer: Some("00663208F0C1D2E3F4".into()),
            })])
        );
    }

    #[test]
    fn an_sns_wrapped_test_event_is_acknowledged() {
        let test_event = fixture!("s3-test-event.json").to_string();
        let body = json!({"Type": "Notification", "Message": test_event}).to_string();
        assert_eq!(one_message(&body).ok(), Some(Vec::new()));
    }

    #[test]
    fn eventbridge_events_routed_to_a_queue_are_read() {
        let body = fixture!("eventbridge-object-created.json").to_string();
        let notices = one_message(&body).expect("an S3 EventBridge event");
        assert!(matches!(
            &notices[..],
            [Notice::Created(ObjectRef { key, .. })]
                if key == "incoming/scans/March report+notes 50%.pdf"
        ));
    }

    #[test]
    fn bad_bodies_say_where_and_what() {
        for (body, message) in [
            (
                "[1, 2]",
                "body: expected an object, received an array of 2 items",
            ),
            (r#"{"Records": []}"#, "body.Records is empty"),
            (
                r#"{"Type": "Notification", "Message": "not json"}"#,
                "body.Message is not JSON (expected ident at line 1 column 2); \
                 received \"not json\"",
            ),
            (
                r#"{"Type": "Notification", "Subject": "x"}"#,
                "body.Message is missing",
            ),
            (
                r#"{"Type": "Notification", "Message": "{\"Type\": \"Notification\", \"Message\": \"{}\"}"}"#,
                "body.Message is not an S3 notification, S3 test event, SQS batch, \
                 S3 EventBridge event or S3 Batch Operations invocation; its keys are \"Message\", \"Type\"",
            ),
            (
                r#"{"Records": [{"eventSource": "aws:sqs", "messageId": "x", "body": "{}"}]}"#,
                "body.Records[0].eventSource is \"aws:sqs\"; \
                 expected \"aws:s3\" (an S3 notification)",
            ),
            (
                r#"{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "files"}, "object": {"key": "a%zz"}}}]}"#,
                "body.Records[0].s3.object.key \"a%zz\" has an invalid percent-escape \"%zz\" \
                 at byte 1; S3 escapes a byte as % and two hex digits",
            ),
        ] {
            let error = one_message(body).expect_err(body);
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_record_that_cannot_be_reported_fails_the_batch() {
        for (record, message) in [
            (
                json!({"eventSource": "aws:sqs", "body": "{}"}),
                "payload.Records[1].messageId is missing",
            ),
            (
                json!({"eventSource": "aws:sqs", "messageId": "", "body": "{}"}),
                "payload.Records[1].messageId is empty",
            ),
            (
                json!({"eventSource": "aws:s3", "messageId": "m-2", "body": "{}"}),
                "payload.Records[1].eventSource is \"aws:s3\"; \
                 expected \"aws:sqs\", as in payload.Records[0]",
            ),
        ] {
            let payload = json!({"Records": [
                {"eventSource": "aws:sqs", "messageId": "m-1", "body": "{}"},
                record
            ]});
            assert_eq!(
                parse(&payload).expect_err("unreportable").to_string(),
                message
            );
        }
    }

    #[test]
    fn a_message_without_a_body_fails_alone() {
        let payload = json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "m-1"},
            {"eventSource": "aws:sqs", "messageId": "m-2", "body": 5},
        ]});
        let messages = batch(&payload);
        let errors: Vec<String> = messages
            .iter()
            .map(|m| m.notices.as_ref().expect_err("no usable body").to_string())
            .collect();
        assert_eq!(
            errors,
            [
                "payload.Records[0].body is missing",
                "payload.Records[1].body: expected a string, received the number 5"
            ]
        );
    }
}
