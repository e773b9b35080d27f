/// Why a payload, or one SQS message in it, names no object to process.
///
/// Every message starts with where the problem is, as a path into what was received
/// (`payload.Records[2].s3.object.key`; `body...` inside an SQS message body, whose message id
/// the caller has), and says what was found there. One log line is then enough to find the bad
/// input, without logging payloads that may hold customer file names in bulk.
///
/// Quoted values are cut to a recognisable prefix and escaped, so a 256 KiB body or a key full
/// of newlines cannot flood or forge log lines.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("{at}: expected {expected}, received {received}")]
    WrongType {
        at: String,
        expected: &'static str,
        received: String,
    },

    #[error("{at} is missing")]
    Missing { at: String },

    #[error("{at} is empty")]
    Empty { at: String },

    /// An SQS body, or the SNS message inside one, that does not parse as JSON.
    #[error("{at} is not JSON ({source}); received {received}")]
    NotJson {
        at: String,
        received: String,
        #[source]
        source: serde_json::Error,
    },

    /// An object with none of the shapes this crate knows; the keys usually say what it is
    /// (`httpMethod`: API Gateway, `Type`: SNS, ...).
    #[error(
        "{at} is not an S3 notification, S3 test event, SQS batch, S3 EventBridge event or S3 \
         Batch Operations invocation; its keys are {keys}"
    )]
    Unrecognised { at: String, keys: String },

    /// A record from a service this crate does not read, or a batch that mixes services.
    #[error("{at} is {received}; expected {expected}")]
    UnexpectedEventSource {
        at: String,
        received: String,
        expected: String,
    },

    /// An EventBridge event that some other service sent: a rule that matches too much.
    #[error(
        "{at} is an EventBridge event from source {source_name}, detail-type {detail_type}; \
         only events from \"aws.s3\" name objects"
    )]
    NotFromS3 {
        at: String,
        source_name: String,
        detail_type: String,
    },

    /// A value outside the few a field may take.
    #[error("{at} is the string {received}; expected {expected}")]
    UnexpectedValue {
        at: String,
        received: String,
        expected: &'static str,
    },

    /// A `%` not followed by two hex digits. Not guessed at: a key that S3 did not encode
    /// this way is not one S3 sent, and decoding it "leniently" could name another object.
    #[error(
        "{at} {key} has an invalid percent-escape {escape} at byte {offset}; \
         S3 escapes a byte as % and two hex digits"
    )]
    InvalidEscape {
        at: String,
        key: String,
        escape: String,
        offset: usize,
    },

    /// Object keys are UTF-8, so escapes that decode to anything else were not written by S3.
    #[error("{at} {key} decodes to bytes that are not UTF-8")]
    NotUtf8 { at: String, key: String },
}

impl EventError {
    /// Where in the received JSON the problem is, such as `payload.Records[2].s3.object.key`.
    pub fn at(&self) -> &str {
        match self {
            EventError::WrongType { at, .. }
            | EventError::Missing { at }
            | EventError::Empty { at }
            | EventError::NotJson { at, .. }
            | EventError::Unrecognised { at, .. }
            | EventError::UnexpectedEventSource { at, .. }
            | EventError::UnexpectedValue { at, .. }
            | EventError::NotFromS3 { at, .. }
            | EventError::InvalidEscape { at, .. }
            | EventError::NotUtf8 { at, .. } => at,
        }
    }
}
