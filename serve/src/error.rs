use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use s3s::{s3_error, S3Error};

/// Why the embedded endpoint could not start. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "\"{bucket}\" is not a valid S3 bucket name; use 3 to 63 lowercase letters, digits, \
         dots and hyphens, starting and ending with a letter or a digit"
    )]
    InvalidBucketName { bucket: String },

    #[error("the {which} key is empty; give both an access key and a secret key")]
    EmptyCredential { which: &'static str },

    #[error(
        "cannot create the data directory {}: {source}; choose a directory you can write to",
        path.display()
    )]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "cannot create the folder of bucket \"{bucket}\" at {}: {source}; \
         remove whatever is in the way or choose another data directory",
        path.display()
    )]
    CreateBucket {
        bucket: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `s3s-fs` refused the directory (it canonicalizes it and sweeps leftover temporary files);
    /// its error type is not a `std::error::Error`, so only its text is kept.
    #[error("cannot serve objects from {}: {reason}; check the directory's permissions", path.display())]
    OpenStore { path: PathBuf, reason: String },

    #[error(
        "address {addr} is already in use; stop whatever listens there or choose another port \
         (port 0 picks a free one)"
    )]
    AddrInUse { addr: SocketAddr },

    #[error("cannot listen on {addr}: {source}; choose an address of this machine and a port you may open")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Whether a failed write failed because the data directory's file system is full (or the
/// user's quota is): an I/O error with that kind anywhere in its chain of causes.
pub(crate) fn is_disk_full(error: &S3Error) -> bool {
    let mut cause = error
        .source()
        .map(|source| source as &(dyn std::error::Error + 'static));
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        cause = current.source();
    }
    false
}

/// The answer to a write the disk had no room for. S3 has no error for a full disk; 503
/// ServiceUnavailable says that the server, not the request, is at fault and that the same
/// request may succeed later (the worker frees space as it compresses, and a person can free
/// more), and every SDK retries it with backoff before giving up.
pub(crate) fn disk_full(key: &str) -> S3Error {
    s3_error!(
        ServiceUnavailable,
        "the embedded S3 server's disk is full: there was no space left in its data directory to \
         store {key:?}, and nothing of it was kept; free some space and try again"
    )
}
