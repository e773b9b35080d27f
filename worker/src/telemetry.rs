//! Logs and metrics: `tracing` for people, CloudWatch Embedded Metric Format for dashboards.

use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::handler::Totals;

/// Logs go to stderr, as JSON when Lambda asks for it (`AWS_LAMBDA_LOG_FORMAT=JSON`, set by
/// the function's JSON logging config) and as compact text otherwise. The level comes from
/// `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn init_logging() {
    init_logging_with(tracing::Level::INFO, std::io::stderr);
}

/// [`init_logging`] with another default level and writer (for output that has to share the
/// terminal with a progress bar).
pub(crate) fn init_logging_with<W>(default: tracing::Level, writer: W)
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .and_then(|level| level.to_lowercase().parse::<Targets>().ok())
        // The SDK warns on every read of an object uploaded in parts that its per-part checksum
        // cannot be validated; that is how S3 works, not something an operator can act on.
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(default)
                .with_target("aws_sdk_s3::http_response_checksum", tracing::Level::ERROR)
        });
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal, never into a log file or CloudWatch.
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests) keeps the first subscriber, which is what we want.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.compact().finish().with(filter).try_init()
    };
}

/// One EMF line for an invocation: CloudWatch turns it into metrics without any API call.
pub fn metrics_line(totals: &Totals, duration: Duration, function: &str) -> String {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": "s3-compressor",
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    { "Name": "Objects", "Unit": "Count" },
                    { "Name": "Compressed", "Unit": "Count" },
                    { "Name": "Moved", "Unit": "Count" },
                    { "Name": "Failures", "Unit": "Count" },
                    { "Name": "BytesIn", "Unit": "Bytes" },
                    { "Name": "BytesOut", "Unit": "Bytes" },
                    { "Name": "BytesSaved", "Unit": "Bytes" },
                    { "Name": "Duration", "Unit": "Milliseconds" }
                ]
            }]
        },
        "FunctionName": function,
        "Objects": totals.objects,
        "Compressed": totals.compressed,
        // Moved unchanged (if_not_worth_it = "move"): their bytes are in no BytesIn, and
        // saved nothing.
        "Moved": totals.moved,
        "Failures": totals.failures,
        "BytesIn": totals.bytes_in,
        "BytesOut": totals.bytes_out,
        "BytesSaved": totals.bytes_saved,
        "Duration": duration.as_millis(),
    })
    .to_string()
}
