//! The Lambda runtime loop around the shared [`Handler`].

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::handler::Handler;
use crate::telemetry::metrics_line;
use crate::Deadline;

/// Time kept back from the invocation deadline to abort uploads and answer cleanly: a tenth
/// of the time left, at most this much.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

pub async fn run(handler: Handler) -> Result<(), lambda_runtime::Error> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let handler = &handler;
    let function = function.as_str();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let started = Instant::now();
        let deadline = deadline_of(event.context.deadline);
        let (response, totals) = handler.handle(event.payload, deadline).await;
        // Once answered, Lambda may freeze the environment with an abort mid-request.
        handler.settle(deadline).await;
        // EMF lines go to stdout, where Lambda's log capture picks them up as they are.
        println!("{}", metrics_line(&totals, started.elapsed(), function));
        // lambda_runtime logs the failed invocation itself, at ERROR with the diagnostic.
        response.map_err(|error| Diagnostic {
            error_type: error.kind().to_owned(),
            error_message: error.to_string(),
        })
    }))
    .await
}

/// Lambda gives the deadline as milliseconds since the epoch.
///
/// A deadline that has passed before the work starts cannot be Lambda's (it would not have
/// started the invocation): it comes from a clock problem or an emulator that sends the
/// timeout instead (cargo-lambda sends 600000). Working without a deadline then is better than
/// failing every object at once; Lambda still stops the function at its real timeout.
fn deadline_of(deadline_ms: u64) -> Option<Deadline> {
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    match deadline.duration_since(SystemTime::now()) {
        Ok(remaining) => Some(Deadline::after(remaining, DEADLINE_MARGIN)),
        Err(_) => {
            tracing::warn!(
                deadline_ms,
                "the invocation deadline is already past; working without one"
            );
            None
        }
    }
}
