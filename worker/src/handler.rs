//! From an invocation payload to a response: what Lambda, `invoke` and `serve` share.

use std::time::Instant;

use s3_compressor_events::{EventError, Invocation, Notice, ObjectRef, SqsMessage};
use serde_json::{json, Value};

use crate::{Outcome, Worker};

/// The invocation as a whole failed. Lambda retries it, then hands it to the on-failure
/// destination (the failure queue), which is where a person sees it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    UnrecognisedEvent(#[from] EventError),

    #[error("{failed} of {total} objects failed: {errors}")]
    Failed {
        failed: usize,
        total: usize,
        /// Whether any of the failures may go away on a retry.
        retryable: bool,
        /// Each failed object with its reason, the first few of them.
        errors: String,
    },
}

/// Failures named in one invocation's error; the log has every one.
const FAILURES_NAMED: usize = 5;

impl HandlerError {
    /// The error type Lambda reports (and on-failure destinations record).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnrecognisedEvent(_) => "UnrecognisedEvent",
            Self::Failed {
                retryable: true, ..
            } => "RetryableFailure",
            Self::Failed {
                retryable: false, ..
            } => "PermanentFailure",
        }
    }
}

/// What one notice came to.
#[derive(Debug, Clone)]
pub struct ObjectResult {
    pub bucket: String,
    pub key: String,
    pub outcome: Outcome,
}

/// Totals of one invocation, for the metrics line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub objects: u64,
    pub compressed: u64,
    pub failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone)]
pub struct Handler {
    worker: Worker,
}

impl Handler {
    pub fn new(worker: Worker) -> Self {
        Self { worker }
    }

    /// Handles one invocation payload.
    ///
    /// S3 notifications and EventBridge events have no per-object reply, so any failure fails
    /// the whole invocation: Lambda retries it (objects already done are recognised), then
    /// records it on the failure queue. A failure a retry cannot fix (a collision, access
    /// denied, a failed proof) fails it too, so that it reaches the queue instead of ending as
    /// a log line. SQS batches answer `batchItemFailures`: the failed messages return to the
    /// queue, and to its dead-letter queue in the end.
    pub async fn handle(
        &self,
        payload: &Value,
        deadline: Option<Instant>,
    ) -> (Result<Value, HandlerError>, Totals) {
        let invocation = match s3_compressor_events::parse(payload) {
            Ok(invocation) => invocation,
            Err(error) => return (Err(error.into()), Totals::default()),
        };
        match invocation {
            Invocation::TestEvent { bucket } => {
                tracing::info!(%bucket, "s3:TestEvent acknowledged");
                let response = json!({ "status": "s3:TestEvent acknowledged", "bucket": bucket });
                (Ok(response), Totals::default())
            }
            Invocation::Direct(notices) => {
                let results = self.process_all(&notices, deadline).await;
                let totals = totals(&results);
                let failed: Vec<&ObjectResult> = results
                    .iter()
                    .filter(|result| result.outcome.is_failure())
                    .collect();
                let response = if failed.is_empty() {
                    Ok(json!({ "results": describe(&results) }))
                } else {
                    let mut errors: Vec<String> = failed
                        .iter()
                        .take(FAILURES_NAMED)
                        .map(|result| {
                            format!("s3://{}/{}: {}", result.bucket, result.key, result.outcome)
                        })
                        .collect();
                    if failed.len() > FAILURES_NAMED {
                        errors.push(format!(
                            "and {} more (see the log)",
                            failed.len() - FAILURES_NAMED
                        ));
                    }
                    Err(HandlerError::Failed {
                        failed: failed.len(),
                        total: results.len(),
                        retryable: failed.iter().any(|result| result.outcome.should_retry()),
                        errors: errors.join("; "),
                    })
                };
                (response, totals)
            }
            Invocation::Sqs(messages) => {
                let (response, totals) = self.handle_sqs(&messages, deadline).await;
                (Ok(response), totals)
            }
        }
    }

    async fn handle_sqs(
        &self,
        messages: &[SqsMessage],
        deadline: Option<Instant>,
    ) -> (Value, Totals) {
        let mut failures = Vec::new();
        let mut all_results = Vec::new();
        for message in messages {
            let notices = match &message.notices {
                Ok(notices) => notices,
                Err(error) => {
                    // Returned to the queue, and to its dead-letter queue in the end: a body
                    // nobody understands is kept for a person to look at.
                    tracing::error!(message_id = %message.message_id, %error, "SQS message not understood");
                    failures.push(json!({ "itemIdentifier": message.message_id }));
                    continue;
                }
            };
            let results = self.process_all(notices, deadline).await;
            if results.iter().any(|result| result.outcome.is_failure()) {
                failures.push(json!({ "itemIdentifier": message.message_id }));
            }
            all_results.extend(results);
        }
        let totals = totals(&all_results);
        (json!({ "batchItemFailures": failures }), totals)
    }

    /// One object at a time: each already uses every core it is given, and memory stays
    /// that of one object.
    async fn process_all(
        &self,
        notices: &[Notice],
        deadline: Option<Instant>,
    ) -> Vec<ObjectResult> {
        let mut results = Vec::with_capacity(notices.len());
        for notice in notices {
            let result = match notice {
                Notice::Created(object) => self.process(object, deadline).await,
                Notice::Ignored {
                    bucket,
                    key,
                    event_name,
                } => {
                    let outcome =
                        Outcome::Skipped(format!("{event_name} is not an object creation"));
                    tracing::info!(%bucket, %key, outcome = outcome.label(), "{outcome}");
                    ObjectResult {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        outcome,
                    }
                }
            };
            results.push(result);
        }
        results
    }

    pub async fn process(&self, object: &ObjectRef, deadline: Option<Instant>) -> ObjectResult {
        ObjectResult {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            outcome: self.worker.process(object, deadline).await,
        }
    }
}

fn describe(results: &[ObjectResult]) -> Vec<Value> {
    results
        .iter()
        .map(|result| {
            json!({
                "bucket": result.bucket,
                "key": result.key,
                "outcome": result.outcome.label(),
                "detail": result.outcome.to_string(),
            })
        })
        .collect()
}

fn totals(results: &[ObjectResult]) -> Totals {
    let mut totals = Totals::default();
    for result in results {
        totals.objects += 1;
        match &result.outcome {
            Outcome::Compressed {
                bytes_in,
                bytes_out,
                ..
            } => {
                totals.compressed += 1;
                totals.bytes_in += bytes_in;
                totals.bytes_out += bytes_out;
            }
            Outcome::Failed { .. } => totals.failures += 1,
            Outcome::AlreadyDone { .. }
            | Outcome::Superseded { .. }
            | Outcome::Skipped(_)
            | Outcome::SourceMissing => {}
        }
    }
    totals
}
