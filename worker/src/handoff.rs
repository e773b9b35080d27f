//! Handing an object that one invocation cannot finish to a Fargate task.
//!
//! The task runs the same image with `compress s3://BUCKET/KEY`: the same pipeline, with no
//! deadline. The lambda stack configures it (`--large-objects fargate`) through the
//! `S3_COMPRESSOR_HANDOFF_*` variables; without them nothing is handed off and such an object
//! fails at once, with its source kept.
//!
//! Lambda redelivers a whole invocation when any of its records fails, and two deliveries of
//! one event can run at once, so a hand-off is recorded in the bucket before a task is started:
//! a small object under the records prefix, written only if absent, keyed by the source key
//! and the version (or ETag) read. A delivery that finds the record answers with the task it
//! names instead of starting another; the task removes the record once the object has an
//! outcome.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::error::ProvideErrorMetadata as _;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use bytes::Bytes;
use s3_compressor_events::ObjectRef;
use sha2::{Digest as _, Sha256};

use crate::store::{
    ContentHeaders, DeleteCondition, ErrorClass, Location, ObjectInfo, ObjectStore, OutputSpec,
    StoreError, WriteCondition, Written,
};
use crate::Routes;

/// How long a record naming a task keeps later deliveries from starting another: longer than
/// any task runs (a terabyte at the task's ~100 MB/s takes three hours) and than Lambda keeps
/// retrying an event (six hours at most). A task that dies without removing its record (killed,
/// out of memory) thus holds its object back this long at most.
pub const TASK_RECORD_LIFETIME: Duration = Duration::from_secs(6 * 60 * 60);

/// How long a record whose task is still being started holds off other deliveries: the
/// delivery that wrote it needs seconds for RunTask; one that died in between leaves it.
pub const CLAIM_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Metadata of a record: when it was written (seconds since the epoch) and the task, once
/// started.
const AT: &str = "handoff-at";
const TASK: &str = "handoff-task";

/// Why an object could not be handed off; it is then tried again (the source is untouched).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{variable} is set but {missing} is not; the lambda stack sets all six")]
    Incomplete {
        variable: &'static str,
        missing: &'static str,
    },

    #[error(
        "the hand-off records prefix {prefix:?} overlaps the source prefix {source_prefix:?}: \
         records there would be taken for uploads; choose a prefix outside every source prefix"
    )]
    RecordsUnderSource {
        prefix: String,
        source_prefix: String,
    },

    #[error("ECS RunTask failed: {0}")]
    RunTask(String),

    #[error("the hand-off record could not be kept: {0}")]
    Record(#[source] StoreError),

    #[error(
        "another delivery is starting its task (record s3://{bucket}/{key}); the next attempt \
         finds the task"
    )]
    Starting { bucket: String, key: String },

    #[error(
        "the hand-off record s3://{bucket}/{key} changed while it was read; the next attempt \
         looks again"
    )]
    Contended { bucket: String, key: String },
}

/// Hands one object, as this delivery read it, to work without a deadline; answers the task
/// that has it.
#[async_trait::async_trait]
pub trait Handoff: fmt::Debug + Send + Sync {
    async fn hand_off(&self, object: &ObjectRef, read: &ObjectInfo)
        -> Result<String, HandoffError>;
}

/// Starts one task for one object; the task removes `record` (a key in the object's bucket)
/// when it is done.
#[async_trait::async_trait]
pub trait TaskStarter: fmt::Debug + Send + Sync {
    async fn start(&self, object: &ObjectRef, record: &str) -> Result<String, HandoffError>;
}

/// A [`Handoff`] that starts a task only for an object no other delivery has handed off.
#[derive(Debug)]
pub struct RecordedHandoff {
    store: Arc<dyn ObjectStore>,
    /// Where the records go, in the object's own bucket.
    prefix: String,
    tasks: Arc<dyn TaskStarter>,
}

/// What an earlier delivery's record says.
enum Found {
    /// A task has the object.
    Task(String),
    /// Too old to hold anything back: its task must have ended. Replaced only while it still
    /// has this ETag.
    Stale(String),
}

impl RecordedHandoff {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: String, tasks: Arc<dyn TaskStarter>) -> Self {
        Self {
            store,
            prefix,
            tasks,
        }
    }

    /// One record per version read: a newer upload of the key is a new object to hand off. A
    /// hash keeps the key within S3's 1,024 bytes whatever the source key.
    fn record_of(&self, object: &ObjectRef, read: &ObjectInfo) -> Location {
        let identity = read
            .version_id
            .as_deref()
            .or(read.etag.as_deref())
            .unwrap_or_default();
        let digest = Sha256::new()
            .chain_update(object.key.as_bytes())
            .chain_update([0])
            .chain_update(identity.as_bytes())
            .finalize();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Location {
            bucket: object.bucket.clone(),
            key: format!("{}{hex}", self.prefix),
        }
    }

    /// Writes the record under `condition`; `task` once it is started.
    async fn write(
        &self,
        record: &Location,
        object: &ObjectRef,
        task: Option<&str>,
        condition: WriteCondition,
    ) -> Result<Written, StoreError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut metadata = HashMap::from([(AT.to_owned(), at.to_string())]);
        if let Some(task) = task {
            metadata.insert(TASK.to_owned(), task.to_owned());
        }
        // For a person who finds it; the time makes each write's ETag its own.
        let body = Bytes::from(format!(
            "s3://{}/{}{}: handed to {} at {at} (seconds since 1970); the task removes this \
             record when it is done\n",
            object.bucket,
            object.key,
            object
                .version_id
                .as_ref()
                .map_or_else(String::new, |version| format!(" version {version}")),
            task.unwrap_or("a task being started"),
        ));
        let crc = crate::pipeline::crc64nvme_of(&body);
        let spec = OutputSpec {
            location: record.clone(),
            headers: ContentHeaders::of_type("text/plain"),
            metadata,
            condition,
        };
        self.store.put(&spec, body, &crc).await
    }

    /// Reads the record another delivery won the write of.
    async fn found(&self, record: &Location) -> Result<Found, HandoffError> {
        let contended = || HandoffError::Contended {
            bucket: record.bucket.clone(),
            key: record.key.clone(),
        };
        let info = self
            .store
            .head(record, None)
            .await
            .map_err(HandoffError::Record)?
            .ok_or_else(contended)?;
        let age = info
            .metadata
            .get(AT)
            .and_then(|at| at.parse().ok())
            .and_then(|at| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH + Duration::from_secs(at))
                    .ok()
            })
            .unwrap_or(Duration::MAX);
        match info.metadata.get(TASK) {
            Some(task) if age < TASK_RECORD_LIFETIME => return Ok(Found::Task(task.clone())),
            None if age < CLAIM_LIFETIME => {
                return Err(HandoffError::Starting {
                    bucket: record.bucket.clone(),
                    key: record.key.clone(),
                })
            }
            _ => {}
        }
        info.etag.map(Found::Stale).ok_or_else(contended)
    }

    /// Replaces the claim with a record naming `task`. In a versioned bucket the claim's
    /// version is then removed, so the task's removal of the record leaves nothing behind.
    async fn name_task(&self, record: &Location, object: &ObjectRef, task: &str, claim: &Written) {
        let named = WriteCondition::Matches(claim.etag.clone().unwrap_or_default());
        if let Err(error) = self.write(record, object, Some(task), named).await {
            // The task runs; only a delivery after the claim's lifetime would start another.
            tracing::warn!(record = %record.key, %task, %error, "the hand-off record does not name its task");
            return;
        }
        if claim.version_id.is_some() {
            if let Err(error) = remove(&*self.store, record, claim).await {
                tracing::warn!(record = %record.key, %error, "the claim's version stays until the bucket's lifecycle rule expires it");
            }
        }
    }

    /// Writes the record if no other delivery has; `Ok(Err(task))` when one has.
    async fn claim(
        &self,
        record: &Location,
        object: &ObjectRef,
    ) -> Result<Result<Written, String>, HandoffError> {
        let first = self
            .write(record, object, None, WriteCondition::Absent)
            .await;
        match first {
            Ok(claim) => return Ok(Ok(claim)),
            Err(error) if error.is(ErrorClass::PreconditionFailed) => {}
            Err(error) => return Err(HandoffError::Record(error)),
        }
        let stale = match self.found(record).await? {
            Found::Task(task) => return Ok(Err(task)),
            Found::Stale(etag) => etag,
        };
        tracing::warn!(
            key = %object.key,
            record = %record.key,
            "the hand-off record is too old for its task to be running or starting; handing the \
             object off again"
        );
        match self
            .write(record, object, None, WriteCondition::Matches(stale))
            .await
        {
            Ok(claim) => Ok(Ok(claim)),
            Err(error) if error.is(ErrorClass::PreconditionFailed) => {
                Err(HandoffError::Contended {
                    bucket: record.bucket.clone(),
                    key: record.key.clone(),
                })
            }
            Err(error) => Err(HandoffError::Record(error)),
        }
    }
}

#[async_trait::async_trait]
impl Handoff for RecordedHandoff {
    async fn hand_off(
        &self,
        object: &ObjectRef,
        read: &ObjectInfo,
    ) -> Result<String, HandoffError> {
        let record = self.record_of(object, read);
        let claim = match self.claim(&record, object).await? {
            Ok(claim) => claim,
            Err(task) => {
                tracing::info!(key = %object.key, %task, record = %record.key, "already handed to a Fargate task");
                return Ok(task);
            }
        };
        let task = match self.tasks.start(object, &record.key).await {
            Ok(task) => task,
            Err(error) => {
                // Released, so the retry of this failure starts the task.
                if let Err(release) = remove(&*self.store, &record, &claim).await {
                    tracing::warn!(record = %record.key, error = %release, "the hand-off record of a task that did not start stays until it expires");
                }
                return Err(error);
            }
        };
        self.name_task(&record, object, &task, &claim).await;
        Ok(task)
    }
}

/// Removes a hand-off record once its object has an outcome (what the task does last), so a
/// later delivery of that object is handed off anew rather than taken as in hand.
pub async fn release(store: &dyn ObjectStore, record: &Location) -> Result<(), StoreError> {
    match store.head(record, None).await? {
        Some(info) => {
            let written = Written {
                etag: info.etag,
                version_id: info.version_id,
            };
            remove(store, record, &written).await
        }
        None => Ok(()),
    }
}

/// Deletes exactly the record version written (for good: it is ours and holds nothing).
async fn remove(
    store: &dyn ObjectStore,
    record: &Location,
    written: &Written,
) -> Result<(), StoreError> {
    let condition = match (&written.version_id, &written.etag) {
        (Some(version), _) => DeleteCondition::Version(version.clone()),
        (None, Some(etag)) => DeleteCondition::Matches(etag.clone()),
        // Nothing to name it by: it expires instead.
        (None, None) => return Ok(()),
    };
    store.delete(record, &condition).await.map(|_| ())
}

/// `ecs:RunTask` of the stack's task definition, in the function's own subnets.
pub struct FargateHandoff {
    client: aws_sdk_ecs::Client,
    cluster: String,
    task_definition: String,
    container: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

impl fmt::Debug for FargateHandoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FargateHandoff")
            .field("cluster", &self.cluster)
            .field("task_definition", &self.task_definition)
            .finish_non_exhaustive()
    }
}

const VARIABLES: [&str; 6] = [
    "S3_COMPRESSOR_HANDOFF_CLUSTER",
    "S3_COMPRESSOR_HANDOFF_TASK_DEFINITION",
    "S3_COMPRESSOR_HANDOFF_CONTAINER",
    "S3_COMPRESSOR_HANDOFF_SUBNETS",
    "S3_COMPRESSOR_HANDOFF_SECURITY_GROUPS",
    "S3_COMPRESSOR_HANDOFF_RECORDS",
];

/// The handoff the environment configures, recorded through `store`: `None` when none of its
/// variables is set.
pub async fn from_environment(
    store: Arc<dyn ObjectStore>,
    routes: &Routes,
) -> Result<Option<Arc<dyn Handoff>>, HandoffError> {
    let values: Vec<Option<String>> = VARIABLES
        .iter()
        .map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .collect();
    let Some(set) = VARIABLES
        .iter()
        .zip(&values)
        .find_map(|(name, value)| value.as_ref().map(|_| *name))
    else {
        return Ok(None);
    };
    let mut present = Vec::with_capacity(VARIABLES.len());
    for (name, value) in VARIABLES.iter().zip(values) {
        present.push(value.ok_or(HandoffError::Incomplete {
            variable: set,
            missing: name,
        })?);
    }
    let [cluster, task_definition, container, subnets, security_groups, records] =
        <[String; 6]>::try_from(present).map_err(|_| HandoffError::Incomplete {
            variable: set,
            missing: "one of them",
        })?;
    check_records_prefix(&records, routes)?;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::store::https_client())
        .load()
        .await;
    let list = |text: String| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let tasks = FargateHandoff {
        client: aws_sdk_ecs::Client::new(&shared),
        cluster,
        task_definition,
        container,
        subnets: list(subnets),
        security_groups: list(security_groups),
    };
    Ok(Some(Arc::new(RecordedHandoff::new(
        store,
        records,
        Arc::new(tasks),
    ))))
}

/// A record under a source prefix would be compressed as an upload, and one above a source
/// prefix could share keys with uploads.
fn check_records_prefix(prefix: &str, routes: &Routes) -> Result<(), HandoffError> {
    match routes.source_prefix_overlapping(prefix) {
        Some(source_prefix) => Err(HandoffError::RecordsUnderSource {
            prefix: prefix.to_owned(),
            source_prefix,
        }),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl TaskStarter for FargateHandoff {
    async fn start(&self, object: &ObjectRef, record: &str) -> Result<String, HandoffError> {
        let mut command = vec![
            "compress".to_owned(),
            format!("s3://{}/{}", object.bucket, object.key),
        ];
        if let Some(version) = &object.version_id {
            command.extend(["--version-id".to_owned(), version.clone()]);
        }
        command.extend(["--handoff-record".to_owned(), record.to_owned()]);
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.subnets.clone()))
            .set_security_groups(Some(self.security_groups.clone()))
            .assign_public_ip(AssignPublicIp::Disabled)
            .build()
            .map_err(|error| HandoffError::RunTask(error.to_string()))?;
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&self.container)
                    .set_command(Some(command))
                    .build(),
            )
            .build();
        let output = self
            .client
            .run_task()
            .cluster(&self.cluster)
            .task_definition(&self.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("s3-compressor")
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(network)
                    .build(),
            )
            .overrides(overrides)
            .send()
            .await
            .map_err(|error| {
                HandoffError::RunTask(match (error.code(), error.message()) {
                    (Some(code), message) => format!("{code}: {}", message.unwrap_or_default()),
                    (None, _) => match error.raw_response() {
                        Some(response) => format!("HTTP {}", response.status().as_u16()),
                        None => error.to_string(),
                    },
                })
            })?;
        if let Some(failure) = output.failures().first() {
            return Err(HandoffError::RunTask(format!(
                "{}: {}",
                failure.reason().unwrap_or("no reason given"),
                failure.detail().unwrap_or_default()
            )));
        }
        output
            .tasks()
            .first()
            .and_then(|task| task.task_arn())
            .map(str::to_owned)
            .ok_or_else(|| HandoffError::RunTask("RunTask started no task".to_owned()))
    }
}

/// Records what it is asked to start instead of starting a task; refuses while `refuse` is set,
/// as RunTask does without capacity.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct RecordingTasks {
    pub started: std::sync::Mutex<Vec<(ObjectRef, String)>>,
    pub refuse: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl RecordingTasks {
    pub(crate) fn count(&self) -> usize {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl TaskStarter for RecordingTasks {
    async fn start(&self, object: &ObjectRef, record: &str) -> Result<String, HandoffError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HandoffError::RunTask("no Fargate capacity".to_owned()));
        }
        let mut started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        started.push((object.clone(), record.to_owned()));
        Ok(format!(
            "arn:aws:ecs:us-east-1:123456789012:task/cluster/{}",
            started.len()
        ))
    }
}

#[cfg(test)]
mod tests;
