//! S3 Batch Operations jobs: `{"invocationSchemaVersion": "1.0" | "2.0", "invocationId": ...,
//! "job": {...}, "tasks": [...]}`.
//!
//! The two schema versions name the bucket differently: 1.0 by its ARN, 2.0 by its name (and
//! 2.0 may carry `job.userArguments`). Both form-encode the key, as event notifications do
//! (`incoming/batch me.txt` arrives as `incoming/batch+me.txt`): AWS's example handler
//! URL-decodes it, Powertools applies `unquote_plus` for both schemas, and a key taken as it is
//! names an object that does not exist. Each task is judged on its own, like an SQS message,
//! so one bad task fails alone with its reason in the job's completion report.

use serde_json::Map;

use crate::json::{quote, Located};
use crate::key::decode_key_at;
use crate::{EventError, ObjectRef};

/// One Batch Operations invocation, with what its answer must echo back.
#[derive(Debug)]
pub struct BatchJob {
    /// `"1.0"` or `"2.0"`; the response carries the same.
    pub schema_version: String,
    pub invocation_id: String,
    pub job_id: String,
    pub tasks: Vec<BatchTask>,
}

/// One task of a job: an object from the manifest.
#[derive(Debug)]
pub struct BatchTask {
    /// What the result for this task is reported under.
    pub task_id: String,
    /// `Err` for a task that names no object this crate can read: that task alone fails.
    pub object: Result<ObjectRef, EventError>,
}

/// Whether `object` is shaped like a Batch Operations invocation.
pub(crate) fn is_job(object: &Map<String, serde_json::Value>) -> bool {
    object.contains_key("invocationSchemaVersion") && object.contains_key("tasks")
}

/// Reads a job; the whole invocation fails only when it cannot be answered: an unknown schema
/// version, or a task without the id its result is reported by.
pub(crate) fn job(payload: &Located<'_>) -> Result<BatchJob, EventError> {
    let version_field = payload.required("invocationSchemaVersion")?;
    let schema_version = version_field.str()?;
    let schema = match schema_version {
        "1.0" => Schema::V1,
        "2.0" => Schema::V2,
        other => {
            return Err(EventError::UnexpectedValue {
                at: version_field.path,
                received: quote(other),
                expected: "\"1.0\" or \"2.0\"",
            })
        }
    };
    let invocation_id = payload
        .required("invocationId")?
        .non_empty_str()?
        .to_owned();
    let job_id = payload
        .required("job")?
        .optional_str("id")?
        .unwrap_or_default()
        .to_owned();
    let tasks = payload
        .required("tasks")?
        .items()?
        .iter()
        .map(|task| {
            Ok(BatchTask {
                task_id: task.required("taskId")?.non_empty_str()?.to_owned(),
                object: schema.object(task),
            })
        })
        .collect::<Result<Vec<_>, EventError>>()?;
    if tasks.is_empty() {
        return Err(EventError::Empty {
            at: format!("{}.tasks", payload.path),
        });
    }
    Ok(BatchJob {
        schema_version: schema_version.to_owned(),
        invocation_id,
        job_id,
        tasks,
    })
}

#[derive(Clone, Copy)]
enum Schema {
    V1,
    V2,
}

impl Schema {
    fn object(self, task: &Located<'_>) -> Result<ObjectRef, EventError> {
        let raw_key = task.required("s3Key")?;
        let bucket = match self {
            Schema::V1 => {
                let arn = task.required("s3BucketArn")?;
                bucket_of_arn(arn.non_empty_str()?)
                    .ok_or_else(|| EventError::UnexpectedValue {
                        at: arn.path.clone(),
                        received: quote(arn.value.as_str().unwrap_or_default()),
                        expected: "a bucket ARN, arn:PARTITION:s3:::BUCKET",
                    })?
                    .to_owned()
            }
            Schema::V2 => task.required("s3Bucket")?.non_empty_str()?.to_owned(),
        };
        let key = decode_key_at(raw_key.non_empty_str()?, &raw_key.path)?;
        Ok(ObjectRef {
            bucket,
            key,
            version_id: task
                .optional_str("s3VersionId")?
                .filter(|version| *version != "null")
                .map(str::to_owned),
            size: None,
            etag: None,
            sequencer: None,
        })
    }
}

/// `arn:aws:s3:::bucket` (any partition) → `bucket`.
fn bucket_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("s3"), Some(""), Some(""), Some(bucket)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some(bucket).filter(|bucket| !bucket.is_empty() && !bucket.contains('/'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::BatchJob;
    use crate::{parse, Invocation, ObjectRef};

    fn job(payload: &serde_json::Value) -> BatchJob {
        match parse(payload) {
            Ok(Invocation::BatchJob(job)) => job,
            other => panic!("expected a Batch Operations job, got {other:?}"),
        }
    }

    /// `TASK: BUCKET/KEY`, or `TASK: ERROR` for a task that names no object.
    fn each_task(job: &BatchJob) -> Vec<String> {
        job.tasks
            .iter()
            .map(|task| match &task.object {
                Ok(object) => format!("{}: {}/{}", task.task_id, object.bucket, object.key),
                Err(error) => format!("{}: {error}", task.task_id),
            })
            .collect()
    }

    fn object(bucket: &str, key: &str, version_id: Option<&str>) -> ObjectRef {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            version_id: version_id.map(Into::into),
            size: None,
            etag: None,
            sequencer: None,
        }
    }

    #[test]
    fn schema_1_gives_the_bucket_arn_and_a_url_encoded_key() {
        let job = job(&fixture!("batch-job-1.0.json"));
        assert_eq!(job.schema_version, "1.0");
        assert_eq!(
            job.invocation_id,
            "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo"
        );
        assert_eq!(job.job_id, "f3cc4f60-61f6-4a2b-8a21-d07600c373ce");
        assert_eq!(job.tasks.len(), 1);
        assert_eq!(job.tasks[0].task_id, "dGFza2lkZ29lc2hlcmUK");
        assert_eq!(
            job.tasks[0].object.as_ref().ok(),
            Some(&object(
                "amzn-s3-demo-bucket",
                "incoming/customer images/1+1.jpg",
                Some("1")
            ))
        );
    }

    #[test]
    fn schema_2_gives_the_bucket_name_and_a_form_encoded_key() {
        let job = job(&fixture!("batch-job-2.0.json"));
        assert_eq!(job.schema_version, "2.0");
        assert_eq!(
            job.tasks[0].object.as_ref().ok(),
            Some(&object(
                "amzn-s3-demo-bucket",
                "incoming/100% a+b.csv",
                None
            ))
        );
    }

    #[test]
    fn schema_2_keys_are_decoded_like_schema_1_keys() {
        let payload = json!({
            "invocationSchemaVersion": "2.0",
            "invocationId": "inv",
            "job": {"id": "j"},
            "tasks": [
                {"taskId": "space", "s3Bucket": "b", "s3Key": "incoming/batch+me.txt"},
                {"taskId": "plus", "s3Bucket": "b", "s3Key": "incoming/1%2B1.txt"},
                {"taskId": "escape", "s3Bucket": "b", "s3Key": "incoming/100%.csv"}
            ]
        });
        assert_eq!(
            each_task(&job(&payload)),
            [
                "space: b/incoming/batch me.txt",
                "plus: b/incoming/1+1.txt",
                "escape: payload.tasks[2].s3Key \"incoming/100%.csv\" has an invalid \
                 percent-escape \"%.c\" at byte 12; S3 escapes a byte as % and two hex digits",
            ]
        );
    }

    #[test]
    fn a_bad_task_fails_alone_and_says_where() {
        let payload = json!({
            "invocationSchemaVersion": "1.0",
            "invocationId": "inv",
            "job": {"id": "j"},
            "tasks": [
                {"taskId": "good", "s3Key": "incoming/a.csv", "s3BucketArn": "arn:aws:s3:::b"},
                {"taskId": "arn", "s3Key": "incoming/a.csv", "s3BucketArn": "arn:aws:s3:::"},
                {"taskId": "escape", "s3Key": "incoming/100%.csv", "s3BucketArn": "arn:aws:s3:::b"},
                {"taskId": "no-key", "s3BucketArn": "arn:aws:s3:::b"}
            ]
        });
        assert_eq!(
            each_task(&job(&payload)),
            [
                "good: b/incoming/a.csv",
                "arn: payload.tasks[1].s3BucketArn is the string \"arn:aws:s3:::\"; \
                 expected a bucket ARN, arn:PARTITION:s3:::BUCKET",
                "escape: payload.tasks[2].s3Key \"incoming/100%.csv\" has an invalid \
                 percent-escape \"%.c\" at byte 12; S3 escapes a byte as % and two hex digits",
                "no-key: payload.tasks[3].s3Key is missing",
            ]
        );
    }

    #[test]
    fn a_job_that_cannot_be_answered_fails_whole() {
        let unknown_version = json!({
            "invocationSchemaVersion": "3.0", "invocationId": "i", "job": {}, "tasks": []
        });
        let error = parse(&unknown_version).expect_err("unknown version");
        assert_eq!(
            error.to_string(),
            "payload.invocationSchemaVersion is the string \"3.0\"; expected \"1.0\" or \"2.0\""
        );
        let no_task_id = json!({
            "invocationSchemaVersion": "2.0", "invocationId": "i", "job": {},
            "tasks": [{"s3Bucket": "b", "s3Key": "k"}]
        });
        let error = parse(&no_task_id).expect_err("no task id");
        assert_eq!(error.to_string(), "payload.tasks[0].taskId is missing");
        let no_tasks = json!({
            "invocationSchemaVersion": "2.0", "invocationId": "i", "job": {}, "tasks": []
        });
        let error = parse(&no_tasks).expect_err("no tasks");
        assert_eq!(error.to_string(), "payload.tasks is empty");
    }
}
