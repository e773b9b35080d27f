//! From an invocation payload to a response: what Lambda, `invoke` and `serve` share.

use aws_lambda_events::event::s3::batch_job::{S3BatchJobResponse, S3BatchJobResult};
use aws_lambda_events::event::sqs::SqsBatchResponse;
use futures::StreamExt as _;
use s3_compressor_events::{BatchJob, EventError, Invocation, Notice, ObjectRef, SqsMessage};
use serde_json::{json, Value};

use crate::outcome::saved_bytes;
use crate::{Deadline, Outcome, Worker};

/// The invocation as a whole failed. Lambda retries it, then hands it to the on-failure
/// destination (the failure queue), which is where a person sees it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Transparent: the message is the event error's own, said once in an error chain.
    #[error(transparent)]
    UnrecognisedEvent(#[from] EventError),

    /// Not a `#[source]`, so that a chain does not repeat the message.
    #[error("the response could not be written: {0}")]
    Response(serde_json::Error),

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

/// Objects of one invocation processed at once. Small objects are mostly waiting on S3's
/// round trips, so many at a time is what makes a batch of 10,000 finish; the worker's memory
/// budget, not this, keeps large ones apart.
const OBJECTS_AT_ONCE: usize = 32;

/// Batch Operations result codes.
const SUCCEEDED: &str = "Succeeded";
const TEMPORARY_FAILURE: &str = "TemporaryFailure";
const PERMANENT_FAILURE: &str = "PermanentFailure";

/// The result string's label of a task that names no object this worker can read.
const INVALID_TASK: &str = "invalid_task";

impl HandlerError {
    /// The error type Lambda reports (and on-failure destinations record).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnrecognisedEvent(_) => "UnrecognisedEvent",
            Self::Response(_) => "ResponseError",
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
    /// `bytes_in - bytes_out`, kept apart because a sum of savings may be negative.
    pub bytes_saved: i64,
    /// Objects moved unchanged to their output prefix, and their bytes (which saved nothing).
    pub moved: u64,
    pub bytes_moved: u64,
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
    /// queue, and to its dead-letter queue in the end. Batch Operations jobs answer a result
    /// code per task, which the job's completion report lists.
    ///
    /// The payload is taken, and dropped once read: a batch of 10,000 records is megabytes
    /// as JSON, which need not stay while its objects are compressed.
    pub async fn handle(
        &self,
        payload: Value,
        deadline: Option<Deadline>,
    ) -> (Result<Value, HandlerError>, Totals) {
        let parsed = s3_compressor_events::parse(&payload);
        drop(payload);
        let invocation = match parsed {
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
                let results = self.process_all(notices.iter().collect(), deadline).await;
                (direct_response(&results), totals(&results))
            }
            Invocation::Sqs(messages) => {
                let (response, totals) = self.handle_sqs(&messages, deadline).await;
                (to_value(&response), totals)
            }
            Invocation::BatchJob(job) => {
                let (response, totals) = self.handle_batch_job(job, deadline).await;
                (to_value(&response), totals)
            }
        }
    }

    async fn handle_sqs(
        &self,
        messages: &[SqsMessage],
        deadline: Option<Deadline>,
    ) -> (SqsBatchResponse, Totals) {
        // Every object of every message at once, within the worker's memory budget; each
        // result is then traced back to its message.
        let (owners, notices): (Vec<usize>, Vec<&Notice>) = messages
            .iter()
            .enumerate()
            .filter_map(|(index, message)| Some((index, message.notices.as_ref().ok()?)))
            .flat_map(|(index, notices)| notices.iter().map(move |notice| (index, notice)))
            .unzip();
        let results = self.process_all(notices, deadline).await;
        let mut failed = vec![false; messages.len()];
        for (owner, result) in owners.iter().zip(&results) {
            failed[*owner] |= result.outcome.is_failure();
        }
        let mut response = SqsBatchResponse::default();
        for (message, failed) in messages.iter().zip(failed) {
            if let Err(error) = &message.notices {
                // Returned to the queue, and to its dead-letter queue in the end: a body
                // nobody understands is kept for a person to look at.
                tracing::error!(message_id = %message.message_id, %error, "SQS message not understood");
            } else if !failed {
                continue;
            }
            response.add_failure(message.message_id.clone());
        }
        (response, totals(&results))
    }

    /// Answers every task of a Batch Operations job with a result code ([`batch_result_code`])
    /// and a result string that starts with the outcome's label ([`batch_result_string`]), so
    /// the completion report can be filtered by what became of each object.
    async fn handle_batch_job(
        &self,
        job: BatchJob,
        deadline: Option<Deadline>,
    ) -> (S3BatchJobResponse, Totals) {
        tracing::info!(job_id = %job.job_id, tasks = job.tasks.len(), "S3 Batch Operations tasks");
        let notices: Vec<Notice> = job
            .tasks
            .iter()
            .filter_map(|task| task.object.as_ref().ok().cloned().map(Notice::Created))
            .collect();
        let processed = self.process_all(notices.iter().collect(), deadline).await;
        let totals = totals(&processed);
        let mut results = processed.into_iter();
        let mut response = S3BatchJobResponse::default();
        response.invocation_schema_version = Some(job.schema_version.clone());
        response.invocation_id = Some(job.invocation_id.clone());
        // What Batch Operations records for a task the answer leaves out; every task is
        // answered, so this only matters if that ever changes.
        response.treat_missing_keys_as = Some(PERMANENT_FAILURE.to_owned());
        let mut answered = Vec::with_capacity(job.tasks.len());
        for task in &job.tasks {
            let (code, detail) = match (&task.object, results.next()) {
                (Ok(_), Some(result)) => (
                    batch_result_code(&result.outcome),
                    batch_result_string(&result.outcome),
                ),
                (Err(error), _) => {
                    tracing::error!(task_id = %task.task_id, %error, "Batch Operations task not understood");
                    (PERMANENT_FAILURE, format!("{INVALID_TASK}: {error}"))
                }
                (Ok(_), None) => (
                    TEMPORARY_FAILURE,
                    "failed_transient: the task was not processed".to_owned(),
                ),
            };
            let mut result = S3BatchJobResult::default();
            result.task_id = Some(task.task_id.clone());
            result.result_code = Some(code.to_owned());
            result.result_string = Some(detail);
            answered.push(result);
        }
        response.results = answered;
        (response, totals)
    }

    /// Processes objects at once, at most [`OBJECTS_AT_ONCE`], within the worker's memory
    /// budget (large objects take turns in a lane of their own, small ones share the rest);
    /// the results in their order.
    async fn process_all(
        &self,
        notices: Vec<&Notice>,
        deadline: Option<Deadline>,
    ) -> Vec<ObjectResult> {
        let mut results: Vec<(usize, ObjectResult)> =
            futures::stream::iter(notices.into_iter().enumerate())
                .map(|(index, notice)| async move {
                    (index, self.process_notice(notice, deadline).await)
                })
                .buffer_unordered(OBJECTS_AT_ONCE)
                .collect()
                .await;
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, result)| result).collect()
    }

    async fn process_notice(&self, notice: &Notice, deadline: Option<Deadline>) -> ObjectResult {
        match notice {
            Notice::Created(object) => self.process(object, deadline).await,
            Notice::Ignored {
                bucket,
                key,
                event_name,
            } => {
                let outcome = Outcome::Skipped(format!("{event_name} is not an object creation"));
                tracing::info!(%bucket, %key, outcome = outcome.label(), "{outcome}");
                ObjectResult {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    outcome,
                }
            }
        }
    }

    /// Waits for the aborts of the multipart uploads that objects stopped at `deadline` left
    /// open, within the part of the deadline's margin kept for them ([`Worker::settle`]); an
    /// entry point calls it before it answers or exits. Says so when some did not finish.
    pub async fn settle(&self, deadline: Option<Deadline>) {
        let limit = deadline.map_or(crate::pipeline::ABORT_WAIT, |deadline| {
            deadline.abort_time()
        });
        if !self.worker.settle(limit).await {
            tracing::warn!(
                wait_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "some stopped multipart uploads were not aborted in time; the bucket's lifecycle \
                 rule removes them, and so does the next delivery of those objects"
            );
        }
    }

    pub async fn process(&self, object: &ObjectRef, deadline: Option<Deadline>) -> ObjectResult {
        ObjectResult {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            outcome: self.worker.process(object, deadline).await,
        }
    }
}

/// A direct invocation fails as a whole when any object failed, naming the first few.
fn direct_response(results: &[ObjectResult]) -> Result<Value, HandlerError> {
    let failed: Vec<&ObjectResult> = results
        .iter()
        .filter(|result| result.outcome.is_failure())
        .collect();
    if failed.is_empty() {
        return Ok(json!({ "results": describe(results) }));
    }
    let mut errors: Vec<String> = failed
        .iter()
        .take(FAILURES_NAMED)
        .map(|result| format!("s3://{}/{}: {}", result.bucket, result.key, result.outcome))
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
}

/// `Succeeded` when nothing is left to do for the object: compressed, already done,
/// superseded by a newer version, kept by the rule as not worth compressing (asking again
/// would keep it again), or skipped with the reason (a manifest from S3 Inventory
/// lists outputs too). A missing source is not a success, since the job asked for an object
/// that is not there, and asking again will not bring it back: `PermanentFailure`.
///
/// A hand-off is `Succeeded`: the task's work is to start the Fargate task, and a
/// `TemporaryFailure` would make Batch Operations invoke again and start another task for the
/// same object. What becomes of the object from there is the Fargate task's to report (its
/// failures reach the alarm topic); the result string names the task.
fn batch_result_code(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Failed { retry: true, .. } => TEMPORARY_FAILURE,
        Outcome::Failed { retry: false, .. } | Outcome::SourceMissing => PERMANENT_FAILURE,
        Outcome::Compressed { .. }
        | Outcome::AlreadyDone { .. }
        | Outcome::Superseded { .. }
        | Outcome::HandedOff { .. }
        | Outcome::Kept(_)
        | Outcome::Moved { .. }
        | Outcome::Skipped(_) => SUCCEEDED,
    }
}

/// `LABEL: what happened`, the label being [`Outcome::label`]: a stable word to filter a
/// completion report by, however the sentence after it is worded. Said once when the
/// sentence already starts with it.
fn batch_result_string(outcome: &Outcome) -> String {
    let label = outcome.label();
    let said = outcome.to_string();
    let labelled = said
        .strip_prefix(label)
        .is_some_and(|rest| rest.starts_with(": "));
    if labelled {
        said
    } else {
        format!("{label}: {said}")
    }
}

/// The response types serialise to plain JSON objects; should one ever not, the invocation
/// says so rather than answering something Lambda would misread.
fn to_value(response: &impl serde::Serialize) -> Result<Value, HandlerError> {
    serde_json::to_value(response).map_err(HandlerError::Response)
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
        totals.add(&result.outcome);
    }
    totals
}

impl Totals {
    /// Counts one object's outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        self.objects += 1;
        match outcome {
            Outcome::Compressed {
                bytes_in,
                bytes_out,
                ..
            } => {
                self.compressed += 1;
                self.bytes_in += bytes_in;
                self.bytes_out += bytes_out;
                self.bytes_saved = self
                    .bytes_saved
                    .saturating_add(saved_bytes(*bytes_in, *bytes_out));
            }
            Outcome::Moved { bytes, .. } => {
                self.moved += 1;
                self.bytes_moved += bytes;
            }
            Outcome::Failed { .. } => self.failures += 1,
            Outcome::AlreadyDone { .. }
            | Outcome::Superseded { .. }
            | Outcome::HandedOff { .. }
            | Outcome::Kept(_)
            | Outcome::Skipped(_)
            | Outcome::SourceMissing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use s3_compressor_config::NotWorthIt;
    use s3_compressor_formats::Registry;
    use serde_json::json;

    use super::{batch_result_code, batch_result_string, Handler};
    use crate::store::memory::MemoryStore;
    use crate::{Outcome, OutputProof, Proof, Routes, SourceFate, SourceProof, Tuning, Worker};

    /// What a completion report says for each outcome: a result code, and a label to filter on.
    #[test]
    fn each_outcome_has_its_result_code_and_label() {
        let cases = [
            (
                Outcome::Compressed {
                    output_key: "processed/a.zip".into(),
                    bytes_in: 10,
                    bytes_out: 5,
                    stored: 0,
                    source: SourceFate::Deleted,
                    proof: Proof {
                        source: SourceProof::Crc64Nvme,
                        output: OutputProof::StoredChecksum,
                    },
                },
                "Succeeded",
                "compressed: compressed to processed/a.zip",
            ),
            (
                Outcome::AlreadyDone {
                    output_key: "processed/a.zip".into(),
                    source: SourceFate::AlreadyGone,
                },
                "Succeeded",
                "already_done: already compressed to processed/a.zip",
            ),
            (
                Outcome::Superseded {
                    output_key: "processed/a.zip".into(),
                },
                "Succeeded",
                "superseded: a newer upload",
            ),
            (
                Outcome::Skipped("no rule takes notes/".into()),
                "Succeeded",
                "skipped: no rule takes notes/",
            ),
            (
                Outcome::Kept(NotWorthIt::AlreadyCompressed { kind: "zip" }),
                "Succeeded",
                "kept: already compressed (zip); compressing it would not pay",
            ),
            (
                Outcome::SourceMissing,
                "PermanentFailure",
                "missing: the source no longer exists",
            ),
            (
                Outcome::HandedOff {
                    task: "arn:task/1".into(),
                },
                "Succeeded",
                "handed_off: handed off: too large for this invocation, so Fargate task arn:task/1",
            ),
            (
                Outcome::transient("SlowDown"),
                "TemporaryFailure",
                "failed_transient: failed (transient",
            ),
            (
                Outcome::permanent("AccessDenied"),
                "PermanentFailure",
                "failed_permanent: failed (trying again will not help): AccessDenied",
            ),
        ];
        for (outcome, code, start) in cases {
            assert_eq!(batch_result_code(&outcome), code, "{outcome:?}");
            let said = batch_result_string(&outcome);
            assert!(
                said.starts_with(start),
                "{said:?} should start with {start:?}"
            );
        }
    }

    /// A job naming an object that is not there fails that task permanently, told apart from
    /// the one compressed, the one skipped and the one that names no object.
    #[tokio::test]
    async fn a_batch_job_reports_a_missing_object_as_a_permanent_failure() {
        let store = Arc::new(MemoryStore::default());
        store.insert("files", "incoming/here.csv", b"a,b\n1,2\n");
        let registry = Registry::from_inventory().unwrap();
        let routes = Arc::new(Routes::load(None, &registry).unwrap());
        let handler = Handler::new(Worker::new(store, routes, Tuning::default()));
        let task = |id: &str, bucket: &str, key: &str| json!({"taskId": id, "s3Bucket": bucket, "s3Key": key, "s3VersionId": null});
        let job = json!({
            "invocationSchemaVersion": "2.0",
            "invocationId": "inv",
            "job": {"id": "j"},
            "tasks": [
                task("here", "files", "incoming/here.csv"),
                task("gone", "files", "incoming/gone.csv"),
                task("outside", "files", "notes/a.txt"),
                task("nameless", "", "incoming/a.csv"),
            ]
        });
        let (response, totals) = handler.handle(job, None).await;
        let response = response.unwrap();
        let answered: Vec<(&str, &str, &str)> = response["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| {
                let said = result["resultString"].as_str().unwrap();
                (
                    result["taskId"].as_str().unwrap(),
                    result["resultCode"].as_str().unwrap(),
                    said.split_once(": ").map_or(said, |(label, _)| label),
                )
            })
            .collect();
        assert_eq!(
            answered,
            [
                ("here", "Succeeded", "compressed"),
                ("gone", "PermanentFailure", "missing"),
                ("outside", "Succeeded", "skipped"),
                ("nameless", "PermanentFailure", "invalid_task"),
            ],
            "{response:#}"
        );
        assert_eq!((totals.objects, totals.compressed), (3, 1));
    }
}
