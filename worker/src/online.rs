//! The commands that talk to S3: `lambda`, `invoke`, `compress` and `serve`.
//!
//! Each builds the same [`Handler`] over the same [`Worker`]; only where events come from and
//! where results go differ.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use s3_compressor_events::ObjectRef;
use s3_compressor_formats::Registry;
use s3_compressor_serve::{EmbeddedS3, ServeOptions, Upload};
use tokio::task::JoinSet;

use crate::handler::Handler;
use crate::store::{ObjectStore, S3Store};
use crate::{Routes, Tuning, Worker};

/// Objects `serve` compresses at once: uploads from a person's shell are small and many.
const SERVE_PARALLEL_OBJECTS: usize = 8;

fn handler(
    store: Arc<dyn ObjectStore>,
    config: Option<&Path>,
    registry: &Registry,
) -> anyhow::Result<Handler> {
    // The config is loaded and checked before anything else, so a bad one stops the process
    // at start-up with its own error.
    let routes = Arc::new(Routes::load(config, registry)?);
    Ok(Handler::new(Worker::new(store, routes, Tuning::default())))
}

pub(crate) async fn lambda(config: Option<&Path>, registry: &Registry) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    check_lambda_environment()?;
    let store = Arc::new(S3Store::from_environment().await);
    let handler = handler(store, config, registry)?;
    crate::lambda::run(handler)
        .await
        .map_err(|error| anyhow::anyhow!("the Lambda runtime loop stopped: {error}"))
}

/// Lambda always sets these; `lambda_runtime` panics without them, so say what is missing
/// instead (it happens when the binary is started by hand against an emulator).
fn check_lambda_environment() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    ]
    .into_iter()
    .filter(|name| std::env::var_os(name).is_none())
    .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "not running on Lambda: {} not set (Lambda sets them; an emulator run needs them too)",
        missing.join(", ")
    );
    let memory = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    anyhow::ensure!(
        memory.parse::<i32>().is_ok(),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be a number of megabytes, got {memory:?}"
    );
    Ok(())
}

pub(crate) async fn invoke(
    event: &Path,
    config: Option<&Path>,
    registry: &Registry,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    let text = std::fs::read_to_string(event)
        .with_context(|| format!("cannot read the event file {}", event.display()))?;
    let payload: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", event.display()))?;
    let store = Arc::new(S3Store::from_environment().await);
    let handler = handler(store, config, registry)?;
    let (response, _totals) = handler.handle(&payload, None).await;
    let response = response.context("the handler failed")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&response)?)?;
    Ok(())
}

pub(crate) async fn compress(
    url: &str,
    version_id: Option<String>,
    config: Option<&Path>,
    registry: &Registry,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    let (bucket, key) = parse_s3_url(url)?;
    let store = Arc::new(S3Store::from_environment().await);
    let handler = handler(store, config, registry)?;
    let object = ObjectRef {
        bucket,
        key,
        version_id,
        size: None,
        etag: None,
        sequencer: None,
    };
    let result = handler.process(&object, None).await;
    writeln!(
        out,
        "s3://{}/{}: {}",
        result.bucket, result.key, result.outcome
    )?;
    if result.outcome.is_failure() {
        anyhow::bail!("s3://{}/{} was not compressed", result.bucket, result.key);
    }
    Ok(())
}

fn parse_s3_url(url: &str) -> anyhow::Result<(String, String)> {
    url.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .map(|(bucket, key)| (bucket.to_owned(), key.to_owned()))
        .with_context(|| format!("expected s3://BUCKET/KEY, got {url:?}"))
}

pub(crate) async fn serve(
    options: ServeOptions,
    config: Option<&Path>,
    registry: &Registry,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    // Checked before the endpoint opens: a bad config never accepts an upload it can't handle.
    let routes = Arc::new(Routes::load(config, registry)?);
    // Like an S3 event notification's prefix filter: only keys a rule takes are announced, so
    // the worker's own outputs never queue behind uploads it has not got to yet.
    let mut options = options;
    options.announce_prefixes = routes
        .config()
        .rules()
        .iter()
        .map(|rule| rule.prefix.clone())
        .collect();
    let (access_key, secret_key) = (options.access_key.clone(), options.secret_key.clone());
    let bucket = options.bucket.clone();
    let (server, mut uploads) = EmbeddedS3::start(options).await?;
    let endpoint = server.endpoint_url();
    let store = Arc::new(S3Store::for_endpoint(&endpoint, &access_key, &secret_key));
    let handler = Handler::new(Worker::new(store, routes, Tuning::default()));

    writeln!(
        out,
        "S3 endpoint {endpoint}, bucket {bucket}. To use it from this shell:"
    )?;
    writeln!(out, "export AWS_ACCESS_KEY_ID={access_key}")?;
    writeln!(out, "export AWS_SECRET_ACCESS_KEY={secret_key}")?;
    writeln!(out, "export AWS_DEFAULT_REGION=us-east-1")?;
    writeln!(out, "export AWS_ENDPOINT_URL={endpoint}")?;
    writeln!(
        out,
        "Then: aws s3 cp report.csv s3://{bucket}/incoming/   (Ctrl-C stops)"
    )?;
    out.flush()?;

    let mut running = JoinSet::new();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            upload = uploads.recv(), if running.len() < SERVE_PARALLEL_OBJECTS => {
                let Some(upload) = upload else { break };
                let handler = handler.clone();
                running.spawn(async move { handler.process(&object_of(upload), None).await });
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = &mut stop => {
                tracing::info!(in_flight = running.len(), "stopping after the objects in flight");
                break;
            }
        }
    }
    while running.join_next().await.is_some() {}
    // Uploads that arrive from here on stay under their prefix, uncompressed; closing the
    // queue first keeps an upload waiting for room in it from holding up the shutdown.
    drop(uploads);
    server.shutdown().await;
    Ok(())
}

fn object_of(upload: Upload) -> ObjectRef {
    ObjectRef {
        bucket: upload.bucket,
        key: upload.key,
        version_id: None,
        size: upload.size,
        etag: upload.etag,
        sequencer: None,
    }
}
