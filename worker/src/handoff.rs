//! Handing an object that one invocation cannot finish to a Fargate task.
//!
//! The task runs the same image with `compress s3://BUCKET/KEY`: the same pipeline, with no
//! deadline. The lambda stack configures it (`--large-objects fargate`) through the
//! `S3_COMPRESSOR_HANDOFF_*` variables; without them nothing is handed off and such an object
//! fails at once, with its source kept.

use std::fmt;

use aws_sdk_ecs::error::ProvideErrorMetadata as _;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use s3_compressor_events::ObjectRef;

/// Why an object could not be handed off; it is then tried again (the source is untouched).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{variable} is set but {missing} is not; the lambda stack sets all five")]
    Incomplete {
        variable: &'static str,
        missing: &'static str,
    },

    #[error("ECS RunTask failed: {0}")]
    RunTask(String),
}

/// Starts the work on one object somewhere without a deadline; answers what it started.
#[async_trait::async_trait]
pub trait Handoff: fmt::Debug + Send + Sync {
    async fn hand_off(&self, object: &ObjectRef) -> Result<String, HandoffError>;
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

const VARIABLES: [&str; 5] = [
    "S3_COMPRESSOR_HANDOFF_CLUSTER",
    "S3_COMPRESSOR_HANDOFF_TASK_DEFINITION",
    "S3_COMPRESSOR_HANDOFF_CONTAINER",
    "S3_COMPRESSOR_HANDOFF_SUBNETS",
    "S3_COMPRESSOR_HANDOFF_SECURITY_GROUPS",
];

impl FargateHandoff {
    /// The handoff the environment configures: `None` when none of its variables is set.
    pub async fn from_environment() -> Result<Option<Self>, HandoffError> {
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
        let [cluster, task_definition, container, subnets, security_groups] =
            <[String; 5]>::try_from(present).map_err(|_| HandoffError::Incomplete {
                variable: set,
                missing: "one of them",
            })?;
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
        Ok(Some(Self {
            client: aws_sdk_ecs::Client::new(&shared),
            cluster,
            task_definition,
            container,
            subnets: list(subnets),
            security_groups: list(security_groups),
        }))
    }
}

#[async_trait::async_trait]
impl Handoff for FargateHandoff {
    async fn hand_off(&self, object: &ObjectRef) -> Result<String, HandoffError> {
        let mut command = vec![
            "compress".to_owned(),
            format!("s3://{}/{}", object.bucket, object.key),
        ];
        if let Some(version) = &object.version_id {
            command.extend(["--version-id".to_owned(), version.clone()]);
        }
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
