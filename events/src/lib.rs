//! Turns a Lambda invocation payload into the objects the worker must process.
//!
//! The worker is invoked by S3 directly, through SQS (with S3, SNS or EventBridge in front of
//! the queue), by an EventBridge rule or by an S3 Batch Operations job, and each wraps "this
//! object was created" (or "process this object") differently.
//! [`parse`] recognises them all and answers with an [`Invocation`]: the objects, plus what the
//! worker needs to report back (per message for SQS and per task for Batch Operations, so that
//! one bad message does not send a whole batch back to the queue). It knows nothing of S3 clients, compression or config.
//!
//! Payloads are read from a [`serde_json::Value`] by hand rather than deserialised into
//! `aws_lambda_events` types or structs of our own: a typed deserialisation fails a whole batch
//! on one odd record and says "invalid type: string, expected u64" without saying where, while
//! this crate's errors name the path and the value found there
//! (`payload.Records[2].s3.object.size: expected a non-negative integer, received the string
//! "12"`). `aws_lambda_events` also models neither the `s3:TestEvent` nor S3's EventBridge
//! detail, and SQS and SNS bodies are strings that have to be parsed here anyway.
//!
//! Object keys in S3 notifications are form-urlencoded and are decoded with [`decode_key`];
//! keys in EventBridge events are used as they are (see the `eventbridge` module for the
//! evidence behind that).

/// Reads a fixture from the workspace's `tests/fixtures/events/`, shared with the end-to-end
/// tests so both sides agree on what real events look like.
#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<serde_json::Value>(include_str!(concat!(
            "../../tests/fixtures/events/",
            $name
        )))
        .expect(concat!($name, " is JSON"))
    };
}

mod batch_job;
mod error;
mod eventbridge;
mod json;
mod key;
mod notification;
mod sqs;

use serde_json::Value;

pub use batch_job::{BatchJob, BatchTask};
pub use error::EventError;
pub use key::decode_key;

use json::Located;

/// One object an event says was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// The key as stored in S3: decoded from a notification's form-urlencoding.
    pub key: String,
    /// `None` when the event has none: unversioned buckets, where S3 may also write `"null"`
    /// or `""`, which are not version ids a request could use.
    pub version_id: Option<String>,
    pub size: Option<u64>,
    /// Without surrounding quotes, as S3 compares it in `If-Match`.
    pub etag: Option<String>,
    /// Orders events for the same key: a greater value (compared as hex strings of equal
    /// length) is a later event.
    pub sequencer: Option<String>,
}

/// What one record of an event asks of the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Created(ObjectRef),
    /// A record that is not an object creation (e.g. `ObjectRemoved:Delete`, a misconfigured
    /// trigger): skipped with this reason, never an error.
    ///
    /// `bucket` and `key` are for the log line and best effort: empty when the record lacks
    /// them, and the raw key when it does not decode. `event_name` is the notification's
    /// `eventName` or the EventBridge `detail-type`.
    Ignored {
        bucket: String,
        key: String,
        event_name: String,
    },
}

/// A parsed payload, in the shape the worker has to answer in.
#[derive(Debug)]
pub enum Invocation {
    /// S3 notification records (possibly several) or an EventBridge event: no per-item
    /// reporting.
    Direct(Vec<Notice>),
    /// The `s3:TestEvent` S3 sends when a notification is configured: to be acknowledged, no
    /// error.
    TestEvent { bucket: String },
    /// An SQS batch; each message reported on its own (`batchItemFailures`).
    Sqs(Vec<SqsMessage>),
    /// An S3 Batch Operations invocation; each task answered on its own (a result code).
    BatchJob(BatchJob),
}

/// One message of an SQS batch.
#[derive(Debug)]
pub struct SqsMessage {
    /// What `batchItemFailures` names the message by.
    pub message_id: String,
    /// The S3 notification (or S3 test event -> `Ok(empty vec)`, or EventBridge event) in the
    /// body, also when SNS wraps it; `Err` for a body that is none of these: that message alone
    /// fails.
    pub notices: Result<Vec<Notice>, EventError>,
}

/// Reads a Lambda invocation payload.
///
/// # Errors
///
/// An [`EventError`] naming where the payload stops making sense and what was there: not an
/// object, none of the known shapes (the error lists its keys), no records, an unknown or
/// mixed `eventSource`, a created object without bucket or key, or a key that does not decode.
/// Problems inside one SQS message body are that message's [`SqsMessage::notices`] instead; a
/// batch fails as a whole only when a record lacks the `messageId` it would be reported by.
pub fn parse(payload: &Value) -> Result<Invocation, EventError> {
    let payload = Located::root(payload, "payload");
    match Shape::of(&payload)? {
        Shape::Records { records, source } => match source {
            notification::EVENT_SOURCE => Ok(Invocation::Direct(notification::records(&records)?)),
            sqs::EVENT_SOURCE => Ok(Invocation::Sqs(sqs::batch(&records)?)),
            _ => Err(unexpected_source(
                &records,
                source,
                "\"aws:s3\" (an S3 notification) or \"aws:sqs\" (an SQS batch)",
            )),
        },
        Shape::TestEvent { bucket } => Ok(Invocation::TestEvent { bucket }),
        Shape::EventBridge => Ok(Invocation::Direct(vec![eventbridge::event(&payload)?])),
        Shape::BatchJob => Ok(Invocation::BatchJob(batch_job::job(&payload)?)),
    }
}

/// The notices in a document that is not itself an SQS batch: an SQS message body, or the
/// SNS message inside one.
pub(crate) fn notices(document: &Located<'_>) -> Result<Vec<Notice>, EventError> {
    match Shape::of(document)? {
        Shape::Records { records, source } if source == notification::EVENT_SOURCE => {
            notification::records(&records)
        }
        Shape::Records { records, source } => Err(unexpected_source(
            &records,
            source,
            "\"aws:s3\" (an S3 notification)",
        )),
        Shape::TestEvent { .. } => Ok(Vec::new()),
        Shape::EventBridge => Ok(vec![eventbridge::event(document)?]),
        Shape::BatchJob => Err(EventError::UnexpectedEventSource {
            at: document.path.clone(),
            received: "an S3 Batch Operations invocation".to_owned(),
            expected: "an S3 notification, S3 test event or S3 EventBridge event (Batch \
                       Operations invokes the function itself, never through a queue)"
                .to_owned(),
        }),
    }
}

/// The ways a document can say which objects it is about.
enum Shape<'a> {
    /// `{"Records": [...]}`, non-empty, every record from the same `source`.
    Records {
        records: Vec<Located<'a>>,
        source: &'a str,
    },
    TestEvent {
        bucket: String,
    },
    EventBridge,
    BatchJob,
}

impl<'a> Shape<'a> {
    fn of(document: &Located<'a>) -> Result<Self, EventError> {
        let object = document.object()?;
        if object.contains_key("Records") {
            let records = document.required("Records")?.items()?;
            let Some(first) = records.first() else {
                return Err(EventError::Empty {
                    at: format!("{}.Records", document.path),
                });
            };
            let source = event_source(first)?;
            for record in records.iter().skip(1) {
                let other = event_source(record)?;
                if other != source {
                    return Err(EventError::UnexpectedEventSource {
                        at: format!("{}.eventSource", record.path),
                        received: json::quote(other),
                        expected: format!("{}, as in {}", json::quote(source), first.path),
                    });
                }
            }
            return Ok(Shape::Records { records, source });
        }
        if notification::is_test_event(object) {
            return Ok(Shape::TestEvent {
                bucket: notification::test_event_bucket(document)?,
            });
        }
        if eventbridge::is_event(object) {
            return Ok(Shape::EventBridge);
        }
        if batch_job::is_job(object) {
            return Ok(Shape::BatchJob);
        }
        Err(EventError::Unrecognised {
            at: document.path.clone(),
            keys: json::key_list(object),
        })
    }
}

/// A record's `eventSource`; SNS spells it `EventSource`, which is read too so that an SNS
/// record is named as such in the error rather than reported as having no source.
fn event_source<'a>(record: &Located<'a>) -> Result<&'a str, EventError> {
    match record.field("eventSource")? {
        Some(source) => source.str(),
        None => match record.field("EventSource")? {
            Some(source) => source.str(),
            None => Err(EventError::Missing {
                at: format!("{}.eventSource", record.path),
            }),
        },
    }
}

fn unexpected_source(records: &[Located<'_>], source: &str, expected: &str) -> EventError {
    let first = records
        .first()
        .map_or("Records[0]", |record| record.path.as_str());
    EventError::UnexpectedEventSource {
        at: format!("{first}.eventSource"),
        received: json::quote(source),
        expected: expected.to_owned(),
    }
}

/// What the two formats call the object fields that differ in spelling.
pub(crate) struct ObjectFields {
    etag: &'static str,
    version_id: &'static str,
}

/// The object `object` describes, with its already decoded `key`.
pub(crate) fn object_ref(
    bucket: &str,
    key: String,
    object: &Located<'_>,
    fields: &ObjectFields,
) -> Result<ObjectRef, EventError> {
    let etag = object
        .optional_str(fields.etag)?
        .map(|etag| etag.strip_prefix('"').unwrap_or(etag))
        .map(|etag| etag.strip_suffix('"').unwrap_or(etag))
        .filter(|etag| !etag.is_empty());
    Ok(ObjectRef {
        bucket: bucket.to_owned(),
        key,
        version_id: object
            .optional_str(fields.version_id)?
            .filter(|version| *version != "null")
            .map(str::to_owned),
        size: object.field("size")?.map(|size| size.u64()).transpose()?,
        etag: etag.map(str::to_owned),
        sequencer: object.optional_str("sequencer")?.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
