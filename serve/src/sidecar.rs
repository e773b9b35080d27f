//! What `s3s-fs` 0.14.1 keeps beside the buckets, and the bookkeeping it forgets.
//!
//! Besides `BUCKET/KEY` (the object's bytes), `s3s-fs` writes, in the data directory itself:
//!
//! - `.bucket-B.object-K.internal.json`: the ETag and the checksums of the last PutObject
//!   (`B` and `K` are the bucket and key in unpadded URL-safe base64);
//! - `.bucket-B.object-K.metadata.json`: Content-Type and user metadata;
//! - `.bucket-B.object-K.upload-ID.metadata.json` and `.upload-ID.json`: a multipart upload in
//!   progress.
//!
//! It never deletes the first two, and CompleteMultipartUpload keeps the checksums the old file
//! had. A key uploaded, deleted and uploaded again in parts would then be served with the first
//! file's CRC32, which every SDK that validates checksums rejects. We remove them on delete and
//! reset them on completion. The layout is fixed by the exact `=0.14.1` pin.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio::fs;

/// A multipart upload that was created and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) struct Sidecars {
    /// The data directory, canonical as `s3s-fs` makes it.
    root: PathBuf,
    tmp_counter: AtomicU64,
}

impl Sidecars {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            tmp_counter: AtomicU64::new(0),
        }
    }

    fn object_stem(bucket: &str, key: &str) -> String {
        format!(
            ".bucket-{}.object-{}",
            URL_SAFE_NO_PAD.encode(bucket),
            URL_SAFE_NO_PAD.encode(key)
        )
    }

    /// Removes the ETag, checksums and metadata of a deleted object.
    pub(crate) async fn forget_object(&self, bucket: &str, key: &str) {
        let stem = Self::object_stem(bucket, key);
        for suffix in [".internal.json", ".metadata.json"] {
            let path = self.root.join(format!("{stem}{suffix}"));
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    path = %path.display(), %error,
                    "could not remove the metadata of a deleted object"
                ),
            }
        }
    }

    /// Leaves only `e_tag` in the object's internal record: the checksums there belong to
    /// whatever file had the key before.
    pub(crate) async fn reset_internal_info(
        &self,
        bucket: &str,
        key: &str,
        e_tag: &str,
    ) -> io::Result<()> {
        let path = self
            .root
            .join(format!("{}.internal.json", Self::object_stem(bucket, key)));
        let content = serde_json::to_vec(&serde_json::json!({ "e_tag": e_tag }))?;
        // `s3s-fs` sweeps `.tmp.*.internal.part` at start-up, so a crash here leaves nothing.
        let tmp = self.root.join(format!(
            ".tmp.serve-{}-{}.internal.part",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&tmp, content).await?;
        if let Err(error) = fs::rename(&tmp, &path).await {
            let _ = fs::remove_file(&tmp).await;
            return Err(error);
        }
        Ok(())
    }

    /// The multipart uploads in progress in `bucket`, in no particular order.
    pub(crate) async fn pending_uploads(&self, bucket: &str) -> io::Result<Vec<PendingUpload>> {
        let prefix = format!(".bucket-{}.object-", URL_SAFE_NO_PAD.encode(bucket));
        let mut uploads = Vec::new();
        let mut entries = fs::read_dir(&self.root).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Some(rest) = rest.strip_suffix(".metadata.json") else {
                continue;
            };
            let Some((key, upload_id)) = rest.split_once(".upload-") else {
                continue;
            };
            let Some(key) = URL_SAFE_NO_PAD
                .decode(key)
                .ok()
                .and_then(|k| String::from_utf8(k).ok())
            else {
                continue;
            };
            // The metadata file outlives an upload whose completion failed half-way; the
            // upload's own record is the authority on whether it is still open.
            if !is_file(&self.root.join(format!(".upload-{upload_id}.json"))).await {
                continue;
            }
            let initiated = entry.metadata().await.and_then(|m| m.modified()).ok();
            uploads.push(PendingUpload {
                key,
                upload_id: upload_id.to_owned(),
                initiated,
            });
        }
        Ok(uploads)
    }
}

async fn is_file(path: &Path) -> bool {
    fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_uploads_are_read_back_from_their_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sidecars = Sidecars::new(dir.path().to_owned());
        let stem = Sidecars::object_stem("bucket", "incoming/a b+ü.csv");
        let open = dir.path().join(format!("{stem}.upload-1111.metadata.json"));
        let orphan = dir.path().join(format!("{stem}.upload-2222.metadata.json"));
        std::fs::write(open, "{}").expect("write");
        std::fs::write(orphan, "{}").expect("write");
        std::fs::write(dir.path().join(".upload-1111.json"), "null").expect("write");

        let uploads = sidecars.pending_uploads("bucket").await.expect("listed");
        assert_eq!(uploads.len(), 1, "{uploads:?}");
        assert_eq!(uploads[0].key, "incoming/a b+ü.csv");
        assert_eq!(uploads[0].upload_id, "1111");
        assert!(sidecars
            .pending_uploads("other")
            .await
            .expect("listed")
            .is_empty());
    }

    #[tokio::test]
    async fn reset_keeps_only_the_etag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sidecars = Sidecars::new(dir.path().to_owned());
        let path = dir.path().join(format!(
            "{}.internal.json",
            Sidecars::object_stem("b", "k")
        ));
        std::fs::write(&path, r#"{"e_tag":"old","checksum_crc32":"AAAAAA=="}"#).expect("write");
        sidecars
            .reset_internal_info("b", "k", "abc-2")
            .await
            .expect("reset");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(json, serde_json::json!({ "e_tag": "abc-2" }));
        sidecars.forget_object("b", "k").await;
        assert!(!path.exists());
    }
}
