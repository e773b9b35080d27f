/// How the caller should react to a failed store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    NotFound,
    /// A conditional request's condition did not hold (412), or another conditional write won
    /// the race (409 ConditionalRequestConflict).
    PreconditionFailed,
    /// Worth retrying later: throttling, 5xx, timeouts, connection failures.
    Transient,
    /// Retrying cannot help: access denied, an archived object, a malformed request.
    Permanent,
}

/// A failed store call, with what was being done to which object.
#[derive(Debug, thiserror::Error)]
#[error("{operation} s3://{bucket}/{key}: {message}")]
pub struct StoreError {
    pub class: ErrorClass,
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    pub message: String,
}

impl StoreError {
    pub fn is(&self, class: ErrorClass) -> bool {
        self.class == class
    }
}
