//! What happened to one object, in terms every entry point can map to its protocol.

use std::fmt;

use s3_compressor_config::NotWorthIt;

/// What became of the source object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFate {
    Deleted,
    /// The rule keeps sources.
    Kept,
    /// A newer upload replaced the source while it was being compressed; that upload stays
    /// (and gets its own event).
    KeptNewerUpload,
    /// The store ignores `If-Match` on DeleteObject, so the delete could not be limited to
    /// what was read, and the rule does not say to delete anyway.
    KeptStoreIgnoresIfMatch,
    /// An earlier delivery had already deleted it.
    AlreadyGone,
}

/// What a delete was earned on, for the log line: stores differ in what they keep, and a
/// person auditing a bucket wants to know what each source's delete rested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// What the bytes read were held against, besides the source's size.
    pub source: SourceProof,
    /// How the stored output was shown to be the bytes sent.
    pub output: OutputProof,
}

/// The source's own stored value that the bytes read matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceProof {
    Crc64Nvme,
    Crc32c,
    Crc32,
    Sha1,
    Sha256,
    /// The ETag of a single-part upload stored unencrypted or with SSE-S3, which is the MD5 of
    /// its content.
    EtagMd5,
    /// The store keeps nothing to hold the bytes against (a multipart upload without a
    /// full-object checksum, or an encrypted one): only their count was checked.
    SizeOnly,
}

impl SourceProof {
    pub fn label(self) -> &'static str {
        match self {
            Self::Crc64Nvme => "crc64nvme",
            Self::Crc32c => "crc32c",
            Self::Crc32 => "crc32",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::EtagMd5 => "etag-md5",
            Self::SizeOnly => "size",
        }
    }
}

/// How the output, once written, was shown to hold the bytes that were sent (and proven).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputProof {
    /// The store's own CRC-64/NVME of what it keeps equals the one sent.
    StoredChecksum,
    /// The store keeps no checksum: the output was read back, its CRC-64/NVME compared with
    /// the one sent, and decoded again.
    ReadBack,
}

impl OutputProof {
    pub fn label(self) -> &'static str {
        match self {
            Self::StoredChecksum => "stored-checksum",
            Self::ReadBack => "read-back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Compressed {
        output_key: String,
        bytes_in: u64,
        bytes_out: u64,
        /// Input bytes written as they are, because a sample showed they would not shrink.
        stored: u64,
        source: SourceFate,
        proof: Proof,
    },
    /// The output from this very source existed already: a repeated or concurrent delivery.
    AlreadyDone {
        output_key: String,
        source: SourceFate,
    },
    /// This version of the source is no longer the key's current one (a newer upload or a delete
    /// came after it) and the output was made from, or is left to, what came after: an output
    /// never goes back to an older version. The version stays as a noncurrent version,
    /// recoverable until the bucket's lifecycle rule expires it.
    Superseded { output_key: String },
    /// Too large to finish before the invocation's deadline: handed to this Fargate task, which
    /// compresses it with the same pipeline. The source stays until that is done.
    HandedOff { task: String },
    /// The rule leaves the object where it is, untouched, since compressing it would not pay;
    /// nothing was written. A success: nothing is left to do.
    Kept(NotWorthIt),
    /// Nothing to do, with the reason.
    Skipped(String),
    /// The source is not there and no output was made from it: for an event, one that came
    /// after the object was deleted (nothing to do, and a retry would not change that); for a
    /// person naming an object, a key or version that does not exist.
    SourceMissing,
    /// `retry`: whether trying again later may succeed (throttling, 5xx, timeouts), as opposed
    /// to a failure that would repeat forever (access denied, a collision). Whether anything
    /// does try again is the entry point's business: Lambda and SQS do, `compress` and `serve`
    /// do not.
    Failed { retry: bool, error: String },
}

impl Outcome {
    pub fn transient(error: impl Into<String>) -> Self {
        Self::Failed {
            retry: true,
            error: error.into(),
        }
    }

    pub fn permanent(error: impl Into<String>) -> Self {
        Self::Failed {
            retry: false,
            error: error.into(),
        }
    }

    pub fn should_retry(&self) -> bool {
        matches!(self, Self::Failed { retry: true, .. })
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }

    /// A short, stable name for logs, responses and Batch Operations result strings: what a
    /// person filters on, so a missing source (nothing was done, though something was asked)
    /// is not counted among the skips (nothing was asked of it).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Compressed { .. } => "compressed",
            Self::AlreadyDone { .. } => "already_done",
            Self::Superseded { .. } => "superseded",
            Self::HandedOff { .. } => "handed_off",
            Self::Kept(_) => "kept",
            Self::Skipped(_) => "skipped",
            Self::SourceMissing => "missing",
            Self::Failed { retry: true, .. } => "failed_transient",
            Self::Failed { retry: false, .. } => "failed_permanent",
        }
    }
}

impl fmt::Display for SourceFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deleted => "source deleted",
            Self::Kept => "source kept (rule)",
            Self::KeptNewerUpload => "source kept: a newer upload replaced it meanwhile",
            Self::KeptStoreIgnoresIfMatch => {
                "source kept: this store ignores If-Match on DeleteObject, so a delete could also \
                 remove a newer upload landing meanwhile; set delete_without_if_match = true in \
                 the config's rule (or [defaults]) to delete anyway"
            }
            Self::AlreadyGone => "source already deleted",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Compressed {
                output_key,
                bytes_in,
                bytes_out,
                stored,
                source,
                ..
            } => {
                write!(
                    f,
                    "compressed to {output_key} ({bytes_in} -> {bytes_out} bytes"
                )?;
                match *stored {
                    0 => {}
                    all if all == *bytes_in => write!(f, ", stored: it would not shrink")?,
                    some => write!(f, ", {some} of them stored: they would not shrink")?,
                }
                write!(f, "); {source}")
            }
            Self::AlreadyDone { output_key, source } => {
                write!(f, "already compressed to {output_key}; {source}")
            }
            Self::Superseded { output_key } => write!(
                f,
                "superseded: a newer upload or a delete of the key came after this version; \
                 {output_key} is left to the newer one, and this version stays noncurrent \
                 (recoverable) until the bucket's lifecycle rule expires it"
            ),
            Self::HandedOff { task } => write!(
                f,
                "handed off: too large for this invocation, so Fargate task {task} compresses \
                 it; the source stays until that is done"
            ),
            Self::Kept(reason) => write!(
                f,
                "kept: {reason}; compressing it would not pay, so it is left where it is and \
                 nothing is written"
            ),
            Self::Skipped(reason) => write!(f, "skipped: {reason}"),
            Self::SourceMissing => {
                f.write_str("missing: the source no longer exists and no output was made from it")
            }
            Self::Failed { retry: true, error } => {
                write!(f, "failed (transient: trying again may succeed): {error}")
            }
            Self::Failed {
                retry: false,
                error,
            } => write!(f, "failed (trying again will not help): {error}"),
        }
    }
}
