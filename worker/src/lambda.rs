//! The Lambda runtime loop around the shared [`Handler`].

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

use crate::handler::Handler;
use crate::telemetry::metrics_line;

/// Time kept back from the invocation deadline to abort uploads and answer cleanly.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

pub async fn run(handler: Handler) -> Result<(), lambda_runtime::Error> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let handler = &handler;
    let function = function.as_str();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let started = Instant::now();
        let deadline = instant_of(event.context.deadline);
        let (response, totals) = handler.handle(&event.payload, Some(deadline)).await;
        // EMF lines go to stdout, where Lambda's log capture picks them up as they are.
        println!("{}", metrics_line(&totals, started.elapsed(), function));
        response.map_err(|error| {
            tracing::error!(%error, "invocation failed");
            lambda_runtime::Error::from(error.to_string())
        })
    }))
    .await
}

/// Lambda gives the deadline as milliseconds since the epoch.
fn instant_of(deadline_ms: u64) -> Instant {
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let remaining = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN);
    Instant::now() + remaining
}
