//! Where `s3s-fs` 0.14.1 keeps things, and the bookkeeping it forgets.
//!
//! An object is the file `BUCKET/KEY` and a folder marker (`KEY/`) a directory, so a key cannot
//! be both an object and the folder of other objects (`a` and `a/b`): [`Layout::make_room`] says
//! so in words instead of the internal error `s3s-fs` would answer. `s3s-fs` never removes a
//! folder, not even when its last object is deleted; such an empty folder is no object (listings
//! skip it) and is removed when its name is written as an object.
//!
//! Besides the objects, `s3s-fs` writes, in the data directory itself:
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
//! reset them on completion.
//!
//! PutObject moves the new file into place *before* it compares the body with `Content-MD5` and
//! the `x-amz-checksum-*` the client sent: a corrupted upload is refused (BadDigest) and kept
//! anyway, replacing the previous object. [`Layout::keep_previous`] makes the write undoable.
//!
//! The layout is fixed by the exact `=0.14.1` pin.

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

/// The longest file name, in bytes, of the file systems Linux serves from (ext4, XFS, Btrfs,
/// tmpfs, ...).
const NAME_MAX: usize = 255;

/// The longest path, in bytes, without the terminating NUL of Linux's `PATH_MAX`.
const PATH_MAX: usize = 4095;

/// `s3s-fs` names a multipart upload by a hyphenated UUID.
const UPLOAD_ID_LEN: usize = 36;

/// Numbers scratch files; process-wide, because several servers may share a data directory.
static SCRATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct Layout {
    /// The data directory, canonical as `s3s-fs` makes it.
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// A name in the data directory that `s3s-fs` sweeps at start-up, so a crash never leaves
    /// one behind for long.
    fn scratch_path(&self, purpose: &str) -> PathBuf {
        self.root.join(format!(
            ".tmp.serve-{purpose}-{}-{}.internal.part",
            std::process::id(),
            SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Remembers the object now stored at `key` (a second hard link, no copy) so that a failed
    /// PutObject can be undone with [`Previous::restore`]. Call with the key's lock held.
    pub(crate) async fn keep_previous(&self, bucket: &str, key: &str) -> Previous {
        let path = self.object_path(bucket, key);
        if key.ends_with('/') || !is_file(&path).await {
            return Previous::Absent { path };
        }
        let backup = self.scratch_path("previous");
        match fs::hard_link(&path, &backup).await {
            Ok(()) => Previous::Kept { path, backup },
            Err(error) => {
                tracing::debug!(
                    path = %path.display(), %error,
                    "cannot link the previous object; a refused upload could not be undone"
                );
                Previous::Unknown
            }
        }
    }

    /// Opens the file that holds `key`'s bytes.
    pub(crate) async fn open_object(&self, bucket: &str, key: &str) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.object_path(bucket, key)).await
    }

    /// Whether the bucket exists (its folder does).
    pub(crate) async fn has_bucket(&self, bucket: &str) -> bool {
        is_dir(&self.root.join(bucket)).await
    }

    /// Whether `key` (not a folder marker) names a directory: the folder of other objects, so
    /// not an object at all.
    pub(crate) async fn is_folder(&self, bucket: &str, key: &str) -> bool {
        !key.ends_with('/') && is_dir(&self.object_path(bucket, key)).await
    }

    /// Gets `key` ready to be written as an object, or says why it cannot be: it is the folder
    /// of other objects, or one of its folders is an object. An empty folder in the way is
    /// removed. Call with the key's lock held.
    pub(crate) async fn make_room(&self, bucket: &str, key: &str) -> Option<String> {
        if self.is_folder(bucket, key).await
            && fs::remove_dir(self.object_path(bucket, key)).await.is_err()
        {
            return Some(format!(
                "objects exist below \"{key}/\", and a folder cannot also be an object here"
            ));
        }
        // Every folder the key needs: all segments but the last, or all of a folder marker's.
        let folders = match key.strip_suffix('/') {
            Some(marker) => marker,
            None => key.rsplit_once('/').map_or("", |(folders, _)| folders),
        };
        let mut folder = String::new();
        for segment in folders.split('/').filter(|s| !s.is_empty()) {
            folder.push_str(segment);
            if is_file(&self.object_path(bucket, &folder)).await {
                return Some(format!(
                    "\"{folder}\" is an object, and an object cannot also be a folder here"
                ));
            }
            folder.push('/');
        }
        None
    }

    /// The longest key, in bytes, that `bucket` can hold: every object has files in the data
    /// directory named after its key in base64 (see the module's notes), and the longest of
    /// them, a multipart upload's metadata, must fit in one file name.
    pub(crate) fn longest_key(bucket: &str) -> usize {
        let room = NAME_MAX.saturating_sub(
            Self::object_stem(bucket, "").len()
                + ".upload-".len()
                + UPLOAD_ID_LEN
                + ".metadata.json".len(),
        );
        // Unpadded base64 spends 4 characters on every 3 bytes, and 2 or 3 on what is left.
        room / 4 * 3 + (room % 4).saturating_sub(1)
    }

    /// Why `key` cannot be written as a file here, if it cannot: its name files would be longer
    /// than a file name may be, or its path longer than a path may be.
    pub(crate) fn name_problem(&self, bucket: &str, key: &str) -> Option<String> {
        let longest = Self::longest_key(bucket);
        if key.len() > longest {
            return Some(format!(
                "the embedded S3 server names files after each key, which limits keys in bucket \
                 \"{bucket}\" to {longest} bytes of UTF-8 (this key has {}; S3 allows 1,024)",
                key.len()
            ));
        }
        let path_len = self.object_path(bucket, key).as_os_str().len();
        if path_len > PATH_MAX {
            return Some(format!(
                "its file would be {}, a path of {path_len} bytes, over the {PATH_MAX} a path may \
                 have; serve from a data directory with a shorter path",
                self.object_path(bucket, key).display()
            ));
        }
        None
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
        let tmp = self.scratch_path("info");
        fs::write(&tmp, content).await?;
        if let Err(error) = fs::rename(&tmp, &path).await {
            let _ = fs::remove_file(&tmp).await;
            return Err(error);
        }
        Ok(())
    }

    /// Removes whatever parts of the multipart upload `upload_id` are left
    /// (`.upload_id-ID.part-N`).
    pub(crate) async fn remove_parts(&self, upload_id: &str) {
        let prefix = format!(".upload_id-{upload_id}.part-");
        let Ok(mut entries) = fs::read_dir(&self.root).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(&prefix))
            {
                remove_if_present(&entry.path()).await;
            }
        }
    }

    /// Whether the multipart upload `upload_id` is open: its record is there until it is
    /// completed or aborted. An ID `s3s-fs` could not have made (a UUID) names no upload, and
    /// no file either.
    pub(crate) async fn has_upload(&self, upload_id: &str) -> bool {
        let made_here = upload_id.len() == 36
            && upload_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-');
        made_here && is_file(&self.root.join(format!(".upload-{upload_id}.json"))).await
    }

    /// Where the ETag of part `part_number` of `upload_id` is kept. `s3s-fs` keeps none, and
    /// CompleteMultipartUpload must check the client's list against what was uploaded. Not
    /// named like `s3s-fs`'s own part files, which its ListParts would take for a part.
    fn part_etag_path(&self, upload_id: &str, part_number: i32) -> PathBuf {
        self.root
            .join(format!(".serve-part-etag-{upload_id}-{part_number}"))
    }

    pub(crate) async fn record_part_etag(
        &self,
        upload_id: &str,
        part_number: i32,
        etag: &str,
    ) -> io::Result<()> {
        fs::write(self.part_etag_path(upload_id, part_number), etag).await
    }

    /// The ETag part `part_number` of `upload_id` was uploaded with, if it was.
    pub(crate) async fn part_etag(&self, upload_id: &str, part_number: i32) -> Option<String> {
        fs::read_to_string(self.part_etag_path(upload_id, part_number))
            .await
            .ok()
    }

    /// Removes the part ETags of an upload completed or aborted.
    pub(crate) async fn forget_part_etags(&self, upload_id: &str) {
        let prefix = format!(".serve-part-etag-{upload_id}-");
        let Ok(mut entries) = fs::read_dir(&self.root).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(&prefix))
            {
                remove_if_present(&entry.path()).await;
            }
        }
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

/// What a key held before a PutObject, to put it back if the upload is refused.
#[derive(Debug)]
pub(crate) enum Previous {
    /// No object: a refused upload must leave none.
    Absent { path: PathBuf },
    /// The object, linked at `backup`.
    Kept { path: PathBuf, backup: PathBuf },
    /// An object that could not be linked (a file system without hard links).
    Unknown,
}

impl Previous {
    /// Whether the key held no object before the write.
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Previous::Absent { .. })
    }

    /// The upload succeeded: the previous object is no longer needed.
    pub(crate) async fn discard(self) {
        if let Previous::Kept { backup, .. } = self {
            remove_if_present(&backup).await;
        }
    }

    /// The upload was refused: whatever it left at the key goes, and the previous object
    /// (if any) is back.
    pub(crate) async fn restore(self) {
        match self {
            Previous::Absent { path } => {
                if is_file(&path).await {
                    tracing::debug!(path = %path.display(), "removing the body of a refused upload");
                    remove_if_present(&path).await;
                }
            }
            Previous::Kept { path, backup } => {
                if let Err(error) = fs::rename(&backup, &path).await {
                    tracing::warn!(path = %path.display(), %error, "could not put back the object a refused upload replaced");
                }
                // When nothing had replaced it, the rename was between two links of one file
                // and left both in place.
                remove_if_present(&backup).await;
            }
            Previous::Unknown => {}
        }
    }
}

async fn remove_if_present(path: &Path) {
    match fs::remove_file(path).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "could not remove a file"),
    }
}

async fn is_file(path: &Path) -> bool {
    fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

async fn is_dir(path: &Path) -> bool {
    fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_uploads_are_read_back_from_their_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(dir.path().to_owned());
        let stem = Layout::object_stem("bucket", "incoming/a b+ü.csv");
        let open = dir.path().join(format!("{stem}.upload-1111.metadata.json"));
        let orphan = dir.path().join(format!("{stem}.upload-2222.metadata.json"));
        std::fs::write(open, "{}").expect("write");
        std::fs::write(orphan, "{}").expect("write");
        std::fs::write(dir.path().join(".upload-1111.json"), "null").expect("write");

        let uploads = layout.pending_uploads("bucket").await.expect("listed");
        assert_eq!(uploads.len(), 1, "{uploads:?}");
        assert_eq!(uploads[0].key, "incoming/a b+ü.csv");
        assert_eq!(uploads[0].upload_id, "1111");
        assert!(layout
            .pending_uploads("other")
            .await
            .expect("listed")
            .is_empty());
    }

    #[tokio::test]
    async fn a_key_cannot_be_both_an_object_and_a_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("b/incoming/a")).expect("mkdir");
        std::fs::write(dir.path().join("b/incoming/a/file.csv"), "x").expect("write");
        std::fs::create_dir_all(dir.path().join("b/incoming/emptied")).expect("mkdir");
        let layout = Layout::new(dir.path().to_owned());

        let folder = layout
            .make_room("b", "incoming/a")
            .await
            .expect("a conflict");
        assert!(folder.contains("\"incoming/a/\""), "{folder}");
        let file = layout
            .make_room("b", "incoming/a/file.csv/x")
            .await
            .expect("a conflict");
        assert!(
            file.contains("\"incoming/a/file.csv\" is an object"),
            "{file}"
        );
        assert_eq!(layout.make_room("b", "incoming/a/other.csv").await, None);
        assert_eq!(layout.make_room("b", "incoming/a/").await, None);
        assert!(layout
            .make_room("b", "incoming/a/file.csv/")
            .await
            .is_some());
        assert_eq!(layout.make_room("b", "new/deep/key").await, None);
        assert!(layout.is_folder("b", "incoming/a").await);
        assert!(!layout.is_folder("b", "incoming/a/").await);

        assert_eq!(layout.make_room("b", "incoming/emptied").await, None);
        assert!(
            !dir.path().join("b/incoming/emptied").exists(),
            "an empty folder is no object"
        );
    }

    #[tokio::test]
    async fn a_refused_write_is_undone_and_an_accepted_one_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("b/k")).expect("mkdir");
        let layout = Layout::new(dir.path().to_owned());
        let object = dir.path().join("b/k/o");

        // A refused upload of a new key leaves nothing.
        let previous = layout.keep_previous("b", "k/o").await;
        std::fs::write(&object, "corrupt").expect("write");
        previous.restore().await;
        assert!(!object.exists());

        // A refused upload over an existing object brings it back.
        std::fs::write(&object, "old").expect("write");
        let previous = layout.keep_previous("b", "k/o").await;
        std::fs::write(dir.path().join("b/k/tmp"), "corrupt").expect("write");
        std::fs::rename(dir.path().join("b/k/tmp"), &object).expect("replace");
        previous.restore().await;
        assert_eq!(std::fs::read_to_string(&object).expect("read"), "old");

        // A refusal that wrote nothing leaves the object as it was.
        let previous = layout.keep_previous("b", "k/o").await;
        previous.restore().await;
        assert_eq!(std::fs::read_to_string(&object).expect("read"), "old");

        // An accepted upload stays.
        let previous = layout.keep_previous("b", "k/o").await;
        std::fs::write(dir.path().join("b/k/tmp"), "new").expect("write");
        std::fs::rename(dir.path().join("b/k/tmp"), &object).expect("replace");
        previous.discard().await;
        assert_eq!(std::fs::read_to_string(&object).expect("read"), "new");

        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// The limit is what the file system really allows: the longest key's upload metadata file
    /// can be created in the data directory, one byte more cannot.
    #[test]
    fn the_longest_key_fits_a_file_name_and_one_byte_more_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(dir.path().to_owned());
        assert_eq!(Layout::longest_key("files"), 130);
        let upload_metadata = |key: &str| {
            let id = "0".repeat(UPLOAD_ID_LEN);
            let stem = Layout::object_stem("files", key);
            std::fs::write(
                dir.path().join(format!("{stem}.upload-{id}.metadata.json")),
                "{}",
            )
        };
        for bucket_len in [3, 5, 40, 63] {
            let bucket = "b".repeat(bucket_len);
            let longest = Layout::longest_key(&bucket);
            let key = format!("incoming/{}", "k".repeat(longest - "incoming/".len()));
            assert_eq!(layout.name_problem(&bucket, &key), None, "{bucket}");
            let problem = layout
                .name_problem(&bucket, &format!("{key}k"))
                .expect("one byte too long");
            assert!(
                problem.contains(&format!("to {longest} bytes")),
                "{problem}"
            );
        }
        let key = format!("incoming/{}", "ü".repeat(60));
        assert!(key.len() <= 130);
        upload_metadata(&key).expect("the longest key's files can be made");
        let key = format!("incoming/{}", "k".repeat(130 - 9));
        upload_metadata(&key).expect("the longest key's files can be made");
        let error = upload_metadata(&format!("{key}k")).expect_err("one byte more cannot");
        assert_eq!(error.raw_os_error(), Some(36), "ENAMETOOLONG: {error}");
    }

    #[tokio::test]
    async fn reset_keeps_only_the_etag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(dir.path().to_owned());
        let path = dir
            .path()
            .join(format!("{}.internal.json", Layout::object_stem("b", "k")));
        std::fs::write(&path, r#"{"e_tag":"old","checksum_crc32":"AAAAAA=="}"#).expect("write");
        layout
            .reset_internal_info("b", "k", "abc-2")
            .await
            .expect("reset");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(json, serde_json::json!({ "e_tag": "abc-2" }));
        layout.forget_object("b", "k").await;
        assert!(!path.exists());
    }
}
