//! The commands that talk to S3: `lambda`, `invoke`, `compress` and `serve`.
//!
//! Each builds the same [`Handler`] over the same [`Worker`]; only where events come from and
//! where results go differ.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::HumanBytes;
use s3_compressor_events::ObjectRef;
use s3_compressor_serve::{EmbeddedS3, ServeOptions, Upload, UPLOAD_QUEUE};
use tokio::task::JoinSet;

use crate::cli::Settings;
use crate::failures::{self, FailureReports, Recorded};
use crate::handler::{Handler, ObjectResult, Totals};
use crate::outcome::saved_percent;
use crate::store::{Location, ObjectStore, S3Store};
use crate::{Deadline, Outcome, Pace, Routes, Tuning, Worker};

/// Objects `serve` compresses at once: uploads from a person's shell are small and many.
const SERVE_PARALLEL_OBJECTS: usize = 8;

fn handler(store: Arc<dyn ObjectStore>, routes: Arc<Routes>, tuning: Tuning) -> Handler {
    Handler::new(Worker::new(store, routes, tuning))
}

/// The handler of an invocation with a deadline: objects that cannot finish in time go to the
/// Fargate task the environment configures, if any, and are judged by the CPU the function
/// has.
async fn invocation_handler(
    store: Arc<dyn ObjectStore>,
    routes: Arc<Routes>,
    tuning: Tuning,
) -> anyhow::Result<Handler> {
    let handoff = crate::handoff::from_environment(Arc::clone(&store), &routes).await?;
    let worker = Worker::new(store, routes, tuning)
        .with_pace(Pace::from_environment())
        .with_handoff(handoff);
    Ok(Handler::new(worker))
}

pub(crate) async fn lambda(routes: Arc<Routes>, settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    // Which build and which rules this execution environment runs: with the metadata of each
    // output, what tells one deployment's work from another's.
    tracing::info!(
        version = crate::VERSION,
        config = routes.config().origin(),
        config_hash = routes.config_hash(),
        "starting"
    );
    check_lambda_environment()?;
    let store = Arc::new(S3Store::from_environment(settings.stall).await);
    let handler = invocation_handler(store, routes, settings.tuning).await?;
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
    timeout: Option<Duration>,
    routes: Arc<Routes>,
    settings: Settings,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    // Read as it is parsed: a batch's file can be megabytes, which need not be held twice.
    let file = std::fs::File::open(event)
        .with_context(|| format!("cannot read the event file {}", event.display()))?;
    let payload: serde_json::Value = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not JSON", event.display()))?;
    let store = Arc::new(S3Store::from_environment(settings.stall).await);
    let handler = invocation_handler(store, routes, settings.tuning).await?;
    let deadline = timeout.map(|timeout| Deadline::after(timeout, crate::lambda::DEADLINE_MARGIN));
    let (response, _totals) = handler.handle(payload, deadline).await;
    // The runtime ends with this function, and any abort still running with it.
    handler.settle(deadline).await;
    let response = response.context("the handler failed")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&response)?)?;
    Ok(())
}

pub(crate) async fn compress(
    url: &str,
    version_id: Option<String>,
    handoff_record: Option<String>,
    routes: Arc<Routes>,
    settings: Settings,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    let (bucket, key) = parse_s3_url(url)?;
    let store = Arc::new(S3Store::from_environment(settings.stall).await);
    let handler = handler(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        routes,
        settings.tuning,
    );
    let object = ObjectRef {
        bucket,
        key,
        version_id,
        size: None,
        etag: None,
        sequencer: None,
    };
    let version = object
        .version_id
        .as_ref()
        .map_or_else(String::new, |id| format!(" (version {id})"));
    let result = handler.process(&object, None).await;
    handler.settle(None).await;
    if let Some(record) = handoff_record {
        release_handoff(&*store, &object.bucket, record).await;
    }
    let name = format!("s3://{}/{}{version}", result.bucket, result.key);
    // A person named this object: one that is not there is a mistake to point out, not the
    // late event the pipeline takes it for.
    if result.outcome == Outcome::SourceMissing {
        writeln!(out, "{name}: not found")?;
        anyhow::bail!("{name} does not exist; check the bucket, key and version");
    }
    writeln!(out, "{name}: {}", result.outcome)?;
    if result.outcome.is_failure() {
        anyhow::bail!("{name} was not compressed");
    }
    Ok(())
}

/// The task's last step, whatever the object's outcome: a failure is reported by the task's exit
/// code (the stack's rule puts it on the failure queue), and a later delivery must not take the
/// object as still in hand.
async fn release_handoff(store: &dyn ObjectStore, bucket: &str, key: String) {
    let record = Location {
        bucket: bucket.to_owned(),
        key,
    };
    match crate::handoff::release(store, &record).await {
        Ok(()) => tracing::info!(record = %record.key, "hand-off record removed"),
        Err(error) => tracing::warn!(
            record = %record.key,
            %error,
            "the hand-off record stays until it expires"
        ),
    }
}

fn parse_s3_url(url: &str) -> anyhow::Result<(String, String)> {
    url.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .map(|(bucket, key)| (bucket.to_owned(), key.to_owned()))
        .with_context(|| format!("expected s3://BUCKET/KEY, got {url:?}"))
}

/// `serve`'s secret key when none is given: public (it is in README), so printed for copying.
pub(crate) const DEFAULT_SECRET_KEY: &str = "s3-compressor-secret";

pub(crate) async fn serve(
    options: ServeOptions,
    routes: Arc<Routes>,
    settings: Settings,
    settle: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    failures::check_routes(&routes)?;
    let (access_key, secret_key) = (options.access_key.clone(), options.secret_key.clone());
    let bucket = options.bucket.clone();
    let (server, mut uploads, mut removals) = EmbeddedS3::start_with_removals(options).await?;
    let endpoint = server.endpoint_url();
    let store = Arc::new(S3Store::for_endpoint(
        &endpoint,
        &access_key,
        &secret_key,
        settings.stall,
    ));
    let prefixes = routes.source_prefixes();
    let handler = handler(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        routes,
        settings.tuning,
    );
    let reports = Arc::new(FailureReports::load(Arc::clone(&store), &bucket).await);

    writeln!(
        out,
        "S3 endpoint {endpoint}, bucket {bucket}. To use it from this shell:"
    )?;
    writeln!(out, "export AWS_ACCESS_KEY_ID={access_key}")?;
    // A secret someone chose stays out of the console, and so out of any log it is kept in.
    if secret_key == DEFAULT_SECRET_KEY {
        writeln!(out, "export AWS_SECRET_ACCESS_KEY={secret_key}")?;
    } else {
        writeln!(
            out,
            "export AWS_SECRET_ACCESS_KEY=...   # the secret key serve was given"
        )?;
    }
    writeln!(out, "export AWS_DEFAULT_REGION=us-east-1")?;
    writeln!(out, "export AWS_ENDPOINT_URL={endpoint}")?;
    writeln!(
        out,
        "Then: aws s3 cp report.csv s3://{bucket}/incoming/   (Ctrl-C stops)"
    )?;
    writeln!(
        out,
        "Failure reports: aws s3 ls --recursive s3://{bucket}/{}   ({} from before)",
        failures::PREFIX,
        reports.count().await
    )?;
    out.flush()?;

    // Sources already there (left by a run that stopped before finishing them, or copied into
    // the folder) are taken up like new uploads.
    let (found, mut left_over) = tokio::sync::mpsc::channel(SERVE_PARALLEL_OBJECTS);
    {
        let (store, bucket) = (Arc::clone(&store), bucket.clone());
        tokio::spawn(async move { store.list_into(&bucket, &prefixes, found).await });
    }
    let mut left_over_open = true;
    let mut removals_open = true;

    let mut running = JoinSet::new();
    // Uploads wait here for `settle` before they are compressed, oldest first; all wait as
    // long, so the first is always the next one due. Bounded like the server's queue, so that
    // a burst still holds clients back rather than growing this without end.
    let mut settling = std::collections::VecDeque::new();
    let mut totals = Totals::default();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let next_due = settling
            .front()
            .map_or_else(tokio::time::Instant::now, |(due, _)| *due);
        tokio::select! {
            upload = uploads.recv(), if settling.len() < UPLOAD_QUEUE => {
                let Some(upload) = upload else { break };
                settling.push_back((tokio::time::Instant::now() + settle, upload));
            }
            () = tokio::time::sleep_until(next_due),
                if !settling.is_empty() && running.len() < SERVE_PARALLEL_OBJECTS =>
            {
                if let Some((_, upload)) = settling.pop_front() {
                    running.spawn(process(handler.clone(), Arc::clone(&reports), object_of(upload), false));
                }
            }
            removal = removals.recv(), if removals_open => match removal {
                Some(removal) => {
                    let source = Location { bucket: removal.bucket, key: removal.key };
                    reports.clear(&source).await;
                }
                None => removals_open = false,
            },
            listed = left_over.recv(), if left_over_open && running.len() < SERVE_PARALLEL_OBJECTS => {
                let listed = match listed {
                    Some(Ok(listed)) => listed,
                    Some(Err(error)) => {
                        tracing::error!(%error, "could not list the objects left from before");
                        left_over_open = false;
                        continue;
                    }
                    None => {
                        left_over_open = false;
                        continue;
                    }
                };
                tracing::info!(%bucket, key = %listed.key, "taking up an object left from before");
                let object = listed.in_bucket(&bucket);
                running.spawn(process(handler.clone(), Arc::clone(&reports), object, true));
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                report(done, &mut totals, out)?;
            }
            _ = &mut stop => {
                tracing::info!(in_flight = running.len(), "stopping after the objects in flight");
                break;
            }
        }
    }
    // Not drained from here on: a delete must not wait for it. A report whose source is
    // deleted now is removed at the next start.
    drop(removals);
    // Uploads still settling were accepted before the stop: they are compressed now, not left
    // for the next start.
    for (_, upload) in settling {
        while running.len() >= SERVE_PARALLEL_OBJECTS {
            if let Some(done) = running.join_next().await {
                report(done, &mut totals, out)?;
            }
        }
        running.spawn(process(
            handler.clone(),
            Arc::clone(&reports),
            object_of(upload),
            false,
        ));
    }
    while let Some(done) = running.join_next().await {
        report(done, &mut totals, out)?;
    }
    writeln!(out, "{}", run_summary(&totals))?;
    // Uploads that arrive from here on stay under their prefix, uncompressed; closing the
    // queue first keeps an upload waiting for room in it from holding up the shutdown.
    drop(uploads);
    server.shutdown().await;
    Ok(())
}

/// One object through the worker, then its failure report written or removed.
async fn process(
    handler: Handler,
    reports: Arc<FailureReports>,
    object: ObjectRef,
    left_over: bool,
) -> Done {
    let result = handler.process(&object, None).await;
    let recorded = reports.record(&result).await;
    Done {
        repeated: left_over && recorded == Some(Recorded::Unchanged),
        result,
    }
}

/// What became of one object in `serve`.
struct Done {
    result: ObjectResult,
    /// A source left from before failed again exactly as its report says: a restart tried it
    /// again, and the console has shown it already.
    repeated: bool,
}

/// A failure goes to the console as well as the log: `serve` is run by a person watching it.
/// One repeated at start-up, unchanged, is only counted in its report. Every outcome counts
/// towards what the run saved.
fn report(
    done: Result<Done, tokio::task::JoinError>,
    totals: &mut Totals,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if let Ok(done) = &done {
        totals.add(&done.result.outcome);
    }
    match done {
        Ok(Done {
            result,
            repeated: true,
        }) => {
            tracing::info!(bucket = %result.bucket, key = %result.key, "failed again as its failure report says");
        }
        Ok(Done { result, .. }) if result.outcome.is_failure() => {
            writeln!(
                out,
                "s3://{}/{}: {}",
                result.bucket, result.key, result.outcome
            )?;
        }
        Ok(_) => {}
        Err(error) => writeln!(out, "an object's task crashed: {error}")?,
    }
    out.flush()?;
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

/// The line `serve` ends with: what this run compressed and the storage that freed, and what
/// it moved unchanged (which freed nothing).
fn run_summary(totals: &Totals) -> String {
    let moved = match totals.moved {
        0 => String::new(),
        moved => format!(
            " {moved} moved unchanged, {}, saved 0.",
            HumanBytes(totals.bytes_moved)
        ),
    };
    if totals.compressed == 0 {
        return format!("Stopped: nothing compressed in this run.{moved}");
    }
    let outcome = match totals.bytes_saved {
        grown @ ..0 => format!("{} larger", HumanBytes(grown.unsigned_abs())),
        saved => format!(
            "saved {} ({}%)",
            HumanBytes(saved.unsigned_abs()),
            saved_percent(saved, totals.bytes_in)
        ),
    };
    format!(
        "Stopped: {} compressed in this run, {} -> {}, {outcome}.{moved}",
        totals.compressed,
        HumanBytes(totals.bytes_in),
        HumanBytes(totals.bytes_out)
    )
}
