//! Events as S3, SQS and EventBridge deliver them, for `invoke` and the Lambda emulator.

use std::path::Path;

use serde_json::{json, Value};

/// A file of `tests/fixtures/events/`, shared with the events crate's own tests.
pub fn fixture(name: &str) -> Value {
    let path = crate::workspace_root()
        .join("tests/fixtures/events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A key as S3 writes it in a notification: form-urlencoded, a space as `+`, every byte
/// outside letters, digits, `-_.~*` and `/` as `%XX` (so `+` is `%2B` and `%` is `%25`).
pub fn form_encode(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len() * 3);
    for byte in key.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' | b'/' => {
                encoded.push(char::from(byte));
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// Decodes `%XX` escapes (metadata values the worker percent-encodes).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escape) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// One `ObjectCreated:Put` record of an S3 notification, shaped like S3's own but without
/// the object's `size` and `eTag` (optional to the worker, which reads the object itself).
pub fn s3_record(bucket: &str, key: &str, version_id: Option<&str>) -> Value {
    let mut object = json!({
        "key": form_encode(key),
        "sequencer": "0066320A1B2C3D4E5F",
    });
    if let Some(version_id) = version_id {
        object["versionId"] = json!(version_id);
    }
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T09:15:42.381Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": { "principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE" },
        "requestParameters": { "sourceIPAddress": "127.0.0.1" },
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "Ww3Hq0nqVcv1ylJ5aBmZl3HpXxKqR0CkVQgYH3uTJpHl1GZ8wIqL3b4nZ0p9aBCdEfGhIjKlMnOpQrStUvWxYz=="
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "compress-incoming",
            "bucket": {
                "name": bucket,
                "ownerIdentity": { "principalId": "A3NL1KOZZKEXAMPLE" },
                "arn": format!("arn:aws:s3:::{bucket}")
            },
            "object": object
        }
    })
}

/// An S3 notification for objects of an unversioned bucket.
pub fn s3_event(bucket: &str, keys: &[&str]) -> Value {
    json!({ "Records": keys.iter().map(|key| s3_record(bucket, key, None)).collect::<Vec<_>>() })
}

/// One SQS message of a batch, with `body` as its text.
pub fn sqs_message(message_id: &str, body: &str) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("AQEB{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1714555211200",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1714555211212"
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:111122223333:files-incoming",
        "awsRegion": "us-east-1"
    })
}

/// An SQS batch.
pub fn sqs_batch(messages: Vec<Value>) -> Value {
    json!({ "Records": messages })
}

/// Writes `event` as JSON to `dir/name` and returns the path, for `invoke --event`.
pub fn write_event(dir: &Path, name: &str, event: &Value) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(event).expect("events serialise");
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    path
}
