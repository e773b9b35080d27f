//! Where objects and multipart uploads live on disk, and the index of every bucket.
//!
//! ```text
//! DATA/BUCKET/                                  a bucket
//! DATA/BUCKET/.s3-compressor-bucket             marks a bucket in this layout (see crate::migrate)
//! DATA/BUCKET/.s3-compressor-objects/HH/H.json  an object's record (crate::record)
//! DATA/BUCKET/.s3-compressor-objects/HH/H.U.data  its bytes
//! DATA/.s3-compressor/uploads/ID/               a multipart upload: upload.json, part-N.json, part-N.U.data
//! DATA/.s3-compressor/tmp/                      files being written, swept on start
//! ```
//!
//! `H` is the SHA-256 of the key in hex and `HH` its first two digits, so every key, up to S3's
//! 1,024 bytes and whatever its segments, has a file name of fixed length, and `foo/bar`,
//! `foo/bar/xyzzy` and `foo/bar/` are three unrelated files. `U` is unique per write.
//!
//! A write goes to a scratch file in `tmp/`, is synced, and renamed next to the record; then the
//! record, written the same way, is renamed over the old one: that rename is the moment the key
//! changes, so a reader sees the old object or the new one, never part of one, and a crash leaves
//! at worst a data file no record names, removed on the next start.
//!
//! One [`Disk`] serves a data directory per process, shared by every server started on it, so
//! their indexes and key locks are the same. Two processes must not serve one directory.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use crate::index::{Entry, Keys};
use crate::locks::KeyLocks;
use crate::migrate;
use crate::record::{Attributes, Record};

/// A file in a bucket's folder that says the bucket is in this layout.
pub(crate) const BUCKET_MARK: &str = ".s3-compressor-bucket";
/// The folder of a bucket's objects.
pub(crate) const OBJECTS: &str = ".s3-compressor-objects";
/// The folder, in the data directory, of what is not in a bucket.
pub(crate) const OWN: &str = ".s3-compressor";

/// Bytes buffered while a body is written to disk.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The data directories open in this process, by canonical path.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<Disk>>> = Mutex::new(BTreeMap::new());

/// Numbers scratch files and upload IDs.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    pub number: i32,
    pub data: String,
    pub size: u64,
    pub e_tag: String,
    pub modified_secs: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub attributes: Attributes,
    pub initiated_secs: u64,
}

#[derive(Debug)]
pub(crate) struct Disk {
    root: PathBuf,
    buckets: Mutex<HashMap<String, Keys>>,
    pub(crate) locks: Arc<KeyLocks>,
}

impl Disk {
    /// The storage of the canonical data directory `root`: the one already open in this process,
    /// or opened now (scratch files swept, an `s3s-fs` layout migrated, the index read).
    pub(crate) async fn open(root: PathBuf) -> Result<Arc<Disk>, DiskError> {
        tokio::task::spawn_blocking(move || {
            let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(disk) = open.get(&root).and_then(Weak::upgrade) {
                return Ok(disk);
            }
            let disk = Arc::new(Disk::load(root.clone())?);
            open.retain(|_, disk| disk.strong_count() > 0);
            open.insert(root, Arc::downgrade(&disk));
            Ok(disk)
        })
        .await?
    }

    fn load(root: PathBuf) -> Result<Disk, DiskError> {
        let tmp = root.join(OWN).join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_at(&tmp)(error)),
        }
        for dir in [tmp, root.join(OWN).join("uploads")] {
            std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        }
        migrate::migrate(&root)?;
        let mut buckets = HashMap::new();
        for entry in std::fs::read_dir(&root).map_err(io_at(&root))? {
            let entry = entry.map_err(io_at(&root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.path().join(BUCKET_MARK).is_file() {
                continue;
            }
            let keys = load_bucket(&entry.path().join(OBJECTS))?;
            tracing::debug!(bucket = %name, objects = keys.len(), "bucket indexed");
            buckets.insert(name, keys);
        }
        Ok(Disk {
            root,
            buckets: Mutex::new(buckets),
            locks: Arc::default(),
        })
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Keys>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the keys of `bucket`, or answers `None` when there is no such bucket.
    pub(crate) fn with_keys<T>(&self, bucket: &str, f: impl FnOnce(&Keys) -> T) -> Option<T> {
        self.buckets().get(bucket).map(f)
    }

    pub(crate) fn has_bucket(&self, bucket: &str) -> bool {
        self.buckets().contains_key(bucket)
    }

    /// The listing entry of `key`, if it is an object.
    pub(crate) fn entry(&self, bucket: &str, key: &str) -> Option<Entry> {
        self.buckets().get(bucket)?.get(key).cloned()
    }

    /// The buckets and when their folders were made.
    pub(crate) async fn list_buckets(&self) -> Vec<(String, SystemTime)> {
        let mut names: Vec<String> = self.buckets().keys().cloned().collect();
        names.sort();
        let mut buckets = Vec::with_capacity(names.len());
        for name in names {
            let created = fs::metadata(self.root.join(&name))
                .await
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            buckets.push((name, created));
        }
        buckets
    }

    /// Makes the bucket; `false` if it already existed.
    pub(crate) async fn create_bucket(&self, bucket: &str) -> io::Result<bool> {
        if self.has_bucket(bucket) {
            return Ok(false);
        }
        let dir = self.root.join(bucket);
        fs::create_dir_all(dir.join(OBJECTS)).await?;
        fs::write(dir.join(BUCKET_MARK), b"1\n").await?;
        Ok(self
            .buckets()
            .insert(bucket.to_owned(), Keys::new())
            .is_none())
    }

    /// Removes an empty bucket: `Ok(false)` if it has objects.
    pub(crate) async fn delete_bucket(&self, bucket: &str) -> io::Result<bool> {
        {
            let mut buckets = self.buckets();
            match buckets.get(bucket) {
                Some(keys) if !keys.is_empty() => return Ok(false),
                Some(_) => {
                    buckets.remove(bucket);
                }
                None => return Ok(true),
            }
        }
        fs::remove_dir_all(self.root.join(bucket)).await?;
        Ok(true)
    }

    fn record_path(&self, bucket: &str, key: &str) -> PathBuf {
        let hash = key_hash(key);
        self.root
            .join(bucket)
            .join(OBJECTS)
            .join(&hash[..2])
            .join(format!("{hash}.json"))
    }

    /// The record of `key`, if it is an object. Call with the key's lock held.
    pub(crate) async fn record(&self, bucket: &str, key: &str) -> io::Result<Option<Record>> {
        if self.entry(bucket, key).is_none() {
            return Ok(None);
        }
        let path = self.record_path(bucket, key);
        let bytes = match fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let record: Record = serde_json::from_slice(&bytes)?;
        Ok((record.key == key).then_some(record))
    }

    /// Where the bytes of `record` are.
    pub(crate) fn data_path(&self, bucket: &str, record: &Record) -> PathBuf {
        let mut path = self.record_path(bucket, &record.key);
        path.set_file_name(&record.data);
        path
    }

    /// A new file in the scratch folder, removed when dropped unless installed.
    pub(crate) fn scratch(&self) -> Scratch {
        Scratch {
            path: self.root.join(OWN).join("tmp").join(unique()),
        }
    }

    /// Makes `data` (a synced scratch file, or `None` to keep the bytes `record.data` names)
    /// the bytes of `record.key`, and `record` its record. Call with the key's lock held.
    pub(crate) async fn install(
        &self,
        bucket: &str,
        mut record: Record,
        data: Option<Scratch>,
    ) -> io::Result<()> {
        let path = self.record_path(bucket, &record.key);
        let Some(folder) = path.parent() else {
            return Err(io::Error::other("a record path has a folder"));
        };
        fs::create_dir_all(folder).await?;
        let previous = self.record(bucket, &record.key).await.ok().flatten();
        if let Some(data) = data {
            let hash = key_hash(&record.key);
            record.data = format!("{hash}.{}.data", unique());
            fs::rename(&data.path, folder.join(&record.data)).await?;
            data.disarm();
        }
        write_synced(&self.scratch(), &path, &serde_json::to_vec(&record)?).await?;
        if let Some(previous) = previous.filter(|p| p.data != record.data) {
            remove_if_present(&self.data_path(bucket, &previous)).await;
        }
        let entry = Entry {
            size: record.size,
            e_tag: record.e_tag.clone(),
            last_modified: record.last_modified(),
        };
        if let Some(keys) = self.buckets().get_mut(bucket) {
            keys.insert(record.key, entry);
        }
        Ok(())
    }

    /// Removes the object `key`; `false` if there was none. Call with the key's lock held.
    pub(crate) async fn remove(&self, bucket: &str, key: &str) -> io::Result<bool> {
        let Some(record) = self.record(bucket, key).await? else {
            return Ok(false);
        };
        // The record first: once it is gone the key is free, and the data is just a file.
        fs::remove_file(self.record_path(bucket, key)).await?;
        if let Some(keys) = self.buckets().get_mut(bucket) {
            keys.remove(key);
        }
        remove_if_present(&self.data_path(bucket, &record)).await;
        Ok(true)
    }

    fn upload_dir(&self, upload_id: &str) -> Option<PathBuf> {
        let valid = (1..=64).contains(&upload_id.len())
            && upload_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
        valid.then(|| self.root.join(OWN).join("uploads").join(upload_id))
    }

    /// Starts a multipart upload; returns its ID.
    pub(crate) async fn create_upload(&self, upload: &UploadRecord) -> io::Result<String> {
        let id = unique();
        let dir = self.root.join(OWN).join("uploads").join(&id);
        fs::create_dir_all(&dir).await?;
        let written = write_synced(
            &self.scratch(),
            &dir.join("upload.json"),
            &serde_json::to_vec(upload)?,
        )
        .await;
        if let Err(error) = written {
            let _ = fs::remove_dir_all(&dir).await;
            return Err(error);
        }
        Ok(id)
    }

    /// The upload `upload_id`, if it is open.
    pub(crate) async fn upload(&self, upload_id: &str) -> Option<UploadRecord> {
        let dir = self.upload_dir(upload_id)?;
        let bytes = fs::read(dir.join("upload.json")).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Makes `data` part `number` of the upload, replacing any part of that number.
    pub(crate) async fn install_part(
        &self,
        upload_id: &str,
        mut part: PartRecord,
        data: Scratch,
    ) -> io::Result<()> {
        let Some(dir) = self.upload_dir(upload_id) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such upload"));
        };
        let number = part.number;
        let previous = self.part(upload_id, number).await;
        part.data = format!("part-{number}.{}.data", unique());
        fs::rename(&data.path, dir.join(&part.data)).await?;
        data.disarm();
        write_synced(
            &self.scratch(),
            &dir.join(format!("part-{number}.json")),
            &serde_json::to_vec(&part)?,
        )
        .await?;
        if let Some(previous) = previous {
            remove_if_present(&dir.join(previous.data)).await;
        }
        Ok(())
    }

    /// Part `number` of the upload, as last uploaded.
    pub(crate) async fn part(&self, upload_id: &str, number: i32) -> Option<PartRecord> {
        let dir = self.upload_dir(upload_id)?;
        let bytes = fs::read(dir.join(format!("part-{number}.json")))
            .await
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn part_path(&self, upload_id: &str, part: &PartRecord) -> Option<PathBuf> {
        Some(self.upload_dir(upload_id)?.join(&part.data))
    }

    /// The parts of the upload, by number.
    pub(crate) async fn parts(&self, upload_id: &str) -> io::Result<Vec<PartRecord>> {
        let Some(dir) = self.upload_dir(upload_id) else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::new();
        let mut entries = fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_prefix("part-")?.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some(part) = self.part(upload_id, number).await {
                parts.push(part);
            }
        }
        parts.sort_by_key(|part| part.number);
        Ok(parts)
    }

    /// Ends the upload: its parts and record go.
    pub(crate) async fn remove_upload(&self, upload_id: &str) {
        let Some(dir) = self.upload_dir(upload_id) else {
            return;
        };
        // Its record first, so that a crash half-way leaves no upload that looks open.
        remove_if_present(&dir.join("upload.json")).await;
        if let Err(error) = fs::remove_dir_all(&dir).await {
            tracing::warn!(path = %dir.display(), %error, "could not remove the parts of an ended upload");
        }
    }

    /// The uploads in progress in `bucket`, with their IDs, in no particular order.
    pub(crate) async fn pending_uploads(
        &self,
        bucket: &str,
    ) -> io::Result<Vec<(String, UploadRecord)>> {
        let mut uploads = Vec::new();
        let mut entries = fs::read_dir(self.root.join(OWN).join("uploads")).await?;
        while let Some(entry) = entries.next_entry().await? {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(upload) = self.upload(&id).await.filter(|u| u.bucket == bucket) {
                uploads.push((id, upload));
            }
        }
        Ok(uploads)
    }
}

/// A file being written in the scratch folder; removed when dropped unless it was installed.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file for writing, buffered.
    pub(crate) async fn create(&self) -> io::Result<tokio::io::BufWriter<fs::File>> {
        let file = fs::File::create(&self.path).await?;
        Ok(tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file))
    }

    /// The file was renamed into place: nothing to remove.
    fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "could not remove a scratch file");
            }
        }
    }
}

/// Flushes and syncs a file written through [`Scratch::create`], so that its bytes are on disk
/// before a rename makes them an object's.
pub(crate) async fn finish(mut writer: tokio::io::BufWriter<fs::File>) -> io::Result<()> {
    writer.flush().await?;
    writer.get_mut().sync_all().await
}

/// Writes `bytes` to `path` atomically, through `scratch`.
async fn write_synced(scratch: &Scratch, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut writer = scratch.create().await?;
    writer.write_all(bytes).await?;
    finish(writer).await?;
    fs::rename(scratch.path(), path).await
}

/// A name no other write in this process, or in an earlier one, has used.
pub(crate) fn unique() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(now.as_nanos().to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex(&hash.finalize()[..16])
}

/// Whole seconds since the Unix epoch.
pub(crate) fn seconds(when: SystemTime) -> u64 {
    when.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn remove_if_present(path: &Path) {
    match fs::remove_file(path).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "could not remove a file"),
    }
}

/// Reads the records of a bucket into its index, and removes the data files no record names
/// (what a crash between a write and its record, or a record and the old data's removal, left).
fn load_bucket(objects: &Path) -> Result<Keys, DiskError> {
    let mut keys = Keys::new();
    let folders = match std::fs::read_dir(objects) {
        Ok(folders) => folders,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(keys),
        Err(error) => return Err(io_at(objects)(error)),
    };
    for folder in folders {
        let folder = folder.map_err(io_at(objects))?.path();
        let mut named = Vec::new();
        let mut data = Vec::new();
        for file in std::fs::read_dir(&folder).map_err(io_at(&folder))? {
            let path = file.map_err(io_at(&folder))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {
                    if let Some(record) = read_record(&path) {
                        let entry = Entry {
                            size: record.size,
                            e_tag: record.e_tag.clone(),
                            last_modified: record.last_modified(),
                        };
                        named.push(record.data);
                        keys.insert(record.key, entry);
                    }
                }
                Some("data") => data.push(path),
                _ => {}
            }
        }
        for path in data {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !named.iter().any(|n| n == name) {
                tracing::info!(path = %path.display(), "removing the bytes of an interrupted write");
                std::fs::remove_file(&path).map_err(io_at(&path))?;
            }
        }
    }
    Ok(keys)
}

/// A record that names its own file and whose data is there; anything else is left alone,
/// and said.
fn read_record(path: &Path) -> Option<Record> {
    let record: Record = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(record) => record,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "not an object record; ignored");
            return None;
        }
    };
    let own = path.file_stem().and_then(|s| s.to_str()) == Some(key_hash(&record.key).as_str());
    if !own || !path.with_file_name(&record.data).is_file() {
        tracing::warn!(path = %path.display(), key = %record.key, "an object record without its file; ignored");
        return None;
    }
    Some(record)
}
