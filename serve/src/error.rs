use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use s3s::{s3_error, S3Error};

use crate::disk::DiskError;

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

    /// The directory's objects could not be read, or its scratch files swept, or a layout of
    /// `s3s-fs` migrated.
    #[error("cannot serve objects from {}: {source}; check the directory's permissions", path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: DiskError,
    },

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
/// user's quota is).
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
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
