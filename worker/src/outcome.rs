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
    /// A multipart upload's composite checksum or ETag, computed over its parts as the bytes
    /// went by, once the store told where the parts end.
    Crc32cParts,
    Crc32Parts,
    Sha1Parts,
    Sha256Parts,
    EtagMd5Parts,
    /// The store keeps nothing to hold the bytes against (an encrypted upload, or a multipart
    /// one whose parts it does not tell): only their count was checked.
    SizeOnly,
}

impl SourceProof {
    /// What each part of a multipart upload is digested with, for a proof over its parts.
    pub(crate) fn of_each_part(self) -> Option<Self> {
        Some(match self {
            Self::Crc32cParts => Self::Crc32c,
            Self::Crc32Parts => Self::Crc32,
            Self::Sha1Parts => Self::Sha1,
            Self::Sha256Parts => Self::Sha256,
            Self::EtagMd5Parts => Self::EtagMd5,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Crc64Nvme => "crc64nvme",
            Self::Crc32c => "crc32c",
            Self::Crc32 => "crc32",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::EtagMd5 => "etag-md5",
            Self::Crc32cParts => "crc32c-parts",
            Self::Crc32Parts => "crc32-parts",
            Self::Sha1Parts => "sha1-parts",
            Self::Sha256Parts => "sha256-parts",
            Self::EtagMd5Parts => "etag-md5-parts",
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
    /// The rule moves what would not pay: the object was copied unchanged, server-side, to
    /// `output_key`, proven identical, and its source dealt with as `source` says.
    Moved {
        output_key: String,
        reason: NotWorthIt,
        bytes: u64,
        source: SourceFate,
        proof: Proof,
    },
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

    /// Storage this outcome freed: the source's bytes less the output's, negative when an
    /// archive's headers outweigh what an incompressible source gained. `None` when nothing
    /// was written.
    pub fn saved_bytes(&self) -> Option<i64> {
        match self {
            Self::Compressed {
                bytes_in,
                bytes_out,
                ..
            } => Some(saved_bytes(*bytes_in, *bytes_out)),
            // The copy takes what the source took.
            Self::Moved { .. } => Some(0),
            _ => None,
        }
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
            Self::Moved { .. } => "moved",
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
                match saved_bytes(*bytes_in, *bytes_out) {
                    grown @ ..0 => write!(f, ", {} bytes larger", grown.unsigned_abs())?,
                    // Rounded down, so 99.6% never reads as all of it.
                    saved => write!(f, ", {}% saved", saved_percent(saved, *bytes_in))?,
                }
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
            Self::Moved {
                output_key,
                reason,
                bytes,
                source,
                ..
            } => write!(
                f,
                "moved: {reason}; copied unchanged to {output_key} ({bytes} bytes, nothing \
                 saved); {source}"
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

/// `bytes_in - bytes_out`, saturating at the ends of `i64` (18 EB: no object comes near).
pub fn saved_bytes(bytes_in: u64, bytes_out: u64) -> i64 {
    let saved = i128::from(bytes_in) - i128::from(bytes_out);
    i64::try_from(saved).unwrap_or(if saved < 0 { i64::MIN } else { i64::MAX })
}

/// `saved` (not negative) as whole percent of `bytes_in`, rounded down; 0 for an empty source.
pub(crate) fn saved_percent(saved: i64, bytes_in: u64) -> u128 {
    let saved = u128::from(saved.unsigned_abs());
    (saved * 100).checked_div(u128::from(bytes_in)).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Outcome, OutputProof, Proof, SourceFate, SourceProof};

    /// A compression of `bytes_in` to `bytes_out`, proven and its source deleted.
    pub(crate) fn compressed(bytes_in: u64, bytes_out: u64) -> Outcome {
        Outcome::Compressed {
            output_key: "processed/a.zip".into(),
            bytes_in,
            bytes_out,
            stored: 0,
            source: SourceFate::Deleted,
            proof: Proof {
                source: SourceProof::Crc64Nvme,
                output: OutputProof::StoredChecksum,
            },
        }
    }

    /// The outcome line says what was saved, rounded down, or how much larger the output is.
    #[test]
    fn a_compressed_outcome_says_what_it_saved() {
        let line = compressed(1000, 204).to_string();
        assert!(line.contains("(1000 -> 204 bytes, 79% saved)"), "{line}");
        assert_eq!(compressed(1000, 204).saved_bytes(), Some(796));
        let line = compressed(1000, 1).to_string();
        assert!(line.contains(", 99% saved)"), "{line}");
        let line = compressed(0, 120).to_string();
        assert!(
            line.contains("(0 -> 120 bytes, 120 bytes larger)"),
            "{line}"
        );
        assert_eq!(compressed(0, 120).saved_bytes(), Some(-120));
        assert_eq!(Outcome::SourceMissing.saved_bytes(), None);
    }

    /// A move says why, where to, and that it saved nothing.
    #[test]
    fn a_moved_outcome_says_why_and_where() {
        let moved = Outcome::Moved {
            output_key: "processed/a/x.jpg".into(),
            reason: s3_compressor_config::NotWorthIt::AlreadyCompressed { kind: "jpeg" },
            bytes: 4096,
            source: SourceFate::Deleted,
            proof: Proof {
                source: SourceProof::Crc64Nvme,
                output: OutputProof::StoredChecksum,
            },
        };
        assert_eq!(
            moved.to_string(),
            "moved: already compressed (jpeg); copied unchanged to processed/a/x.jpg (4096 \
             bytes, nothing saved); source deleted"
        );
        assert_eq!((moved.label(), moved.saved_bytes()), ("moved", Some(0)));
    }
}
