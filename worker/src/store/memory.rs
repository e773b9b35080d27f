//! An in-memory [`ObjectStore`] for unit tests: S3's conditional semantics, without a server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{
    Copied, CopySource, DeleteCondition, Deleted, Download, ErrorClass, Location, ObjectInfo,
    ObjectStore, OutputSpec, Part, StoreError, WriteCondition, Written,
};

#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub body: Bytes,
    pub info: ObjectInfo,
    /// A delete marker of a versioned bucket: the key reads as absent while it is current.
    pub delete_marker: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Every version of every key, oldest first; the last is current.
    objects: HashMap<(String, String), Vec<StoredObject>>,
    uploads: HashMap<String, (OutputSpec, Vec<(i32, Bytes)>)>,
    next_id: u64,
    /// Bytes uploaded under this key right after the next GET of it: a newer upload arriving
    /// while the worker compresses.
    replace_after_get: Option<(String, Bytes)>,
    /// Operations that fail once, with this class.
    fail: HashMap<&'static str, ErrorClass>,
    /// The next completed multipart upload succeeds but answers `NoSuchUpload`, as a retry
    /// does after the first attempt's answer was lost.
    lose_complete_answer: bool,
    /// The next CreateMultipartUpload starts an upload whose id never reaches the caller
    /// (an attempt whose answer was lost) before the one it returns.
    lose_create_answer: bool,
    /// DeleteObject ignores `If-Match`, as some S3-compatible stores do.
    ignore_delete_conditions: bool,
    /// The next write stores its body with a byte changed, after every check: a store that
    /// damages what it keeps.
    damage_next_write: bool,
    /// The next GET of this key delivers its body cut short or changed, while saying it is the
    /// stored object: a download that broke, or whose resumed range came back different.
    damage_next_read: Option<(String, ReadDamage)>,
    aborted: Vec<String>,
    /// How often a multipart source's part sizes were asked for.
    part_sizes_asked: usize,
    completed: usize,
    parts_uploaded: usize,
    /// Server-side copies made, whole objects and parts.
    copies: usize,
}

/// How a damaged read differs from the object it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadDamage {
    /// The last byte never arrives.
    Short,
    /// A byte of the last quarter is changed: what a resumed range that came back different
    /// gives the reader.
    ResumedAltered,
}

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    versioned: bool,
    /// Keeps no checksum of what it stores, as some S3-compatible stores do.
    without_checksums: bool,
    /// How long each UploadPart takes: an upload slower than the codec.
    part_latency: Duration,
    state: Mutex<State>,
    /// Body bytes GETs delivered, as they were taken: what a move must not download.
    bytes_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryStore {
    pub(crate) fn versioned() -> Self {
        Self {
            versioned: true,
            ..Self::default()
        }
    }

    pub(crate) fn without_checksums() -> Self {
        Self {
            without_checksums: true,
            ..Self::default()
        }
    }

    pub(crate) fn with_part_latency(part_latency: Duration) -> Self {
        Self {
            part_latency,
            ..Self::default()
        }
    }

    pub(crate) fn part_sizes_asked(&self) -> usize {
        self.lock().part_sizes_asked
    }

    pub(crate) fn parts_uploaded(&self) -> usize {
        self.lock().parts_uploaded
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn copies(&self) -> usize {
        self.lock().copies
    }

    /// The object a copy reads, if it is still the one named.
    fn copy_source(
        &self,
        source: &CopySource,
        operation: &'static str,
    ) -> Result<StoredObject, StoreError> {
        self.check_failure(operation, &source.location)?;
        let object = self
            .find(&source.location, source.version_id.as_deref())
            .ok_or_else(|| {
                error(
                    ErrorClass::NotFound,
                    operation,
                    &source.location,
                    "NoSuchKey",
                )
            })?;
        if source.etag.is_some() && object.info.etag != source.etag {
            return Err(error(
                ErrorClass::PreconditionFailed,
                operation,
                &source.location,
                "PreconditionFailed (x-amz-copy-source-if-match)",
            ));
        }
        self.lock().copies += 1;
        Ok(object)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, bucket: &str, key: &str, body: &[u8]) -> ObjectInfo {
        self.insert_with_metadata(bucket, key, body, HashMap::new())
    }

    /// What a GET of the key returns: the current version, unless that is a delete marker.
    pub(crate) fn current(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        self.lock()
            .objects
            .get(&(bucket.to_owned(), key.to_owned()))
            .and_then(|versions| versions.last().cloned())
            .filter(|object| !object.delete_marker)
    }

    /// The keys under `prefix` that read as present, sorted.
    pub(crate) fn keys_under(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .objects
            .iter()
            .filter(|((in_bucket, key), versions)| {
                in_bucket == bucket
                    && key.starts_with(prefix)
                    && versions.last().is_some_and(|object| !object.delete_marker)
            })
            .map(|((_, key), _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Versions of the key that hold data (delete markers are not counted).
    pub(crate) fn versions(&self, bucket: &str, key: &str) -> usize {
        self.lock()
            .objects
            .get(&(bucket.to_owned(), key.to_owned()))
            .map_or(0, |versions| {
                versions
                    .iter()
                    .filter(|object| !object.delete_marker)
                    .count()
            })
    }

    /// Removes the key's delete marker: how a person restores a deleted source.
    pub(crate) fn remove_delete_marker(&self, bucket: &str, key: &str) -> bool {
        let mut state = self.lock();
        let Some(versions) = state.objects.get_mut(&(bucket.to_owned(), key.to_owned())) else {
            return false;
        };
        let before = versions.len();
        versions.retain(|object| !object.delete_marker);
        versions.len() < before
    }

    pub(crate) fn replace_after_get(&self, key: &str, body: &[u8]) {
        self.lock().replace_after_get = Some((key.to_owned(), Bytes::copy_from_slice(body)));
    }

    pub(crate) fn fail_once(&self, operation: &'static str, class: ErrorClass) {
        self.lock().fail.insert(operation, class);
    }

    pub(crate) fn lose_complete_answer(&self) {
        self.lock().lose_complete_answer = true;
    }

    pub(crate) fn lose_create_answer(&self) {
        self.lock().lose_create_answer = true;
    }

    pub(crate) fn ignore_delete_conditions(&self) {
        self.lock().ignore_delete_conditions = true;
    }

    pub(crate) fn damage_next_write(&self) {
        self.lock().damage_next_write = true;
    }

    pub(crate) fn damage_next_read(&self, key: &str, damage: ReadDamage) {
        self.lock().damage_next_read = Some((key.to_owned(), damage));
    }

    /// Stores an object whose stored checksum is `kept` alone (for `EtagMd5`, its ETag is its
    /// MD5; for a multipart upload's value, see `stored_as`), as stores and upload tools leave
    /// them.
    pub(crate) fn insert_keeping(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        kept: crate::SourceProof,
    ) -> ObjectInfo {
        let mut state = self.lock();
        let written = self.store(
            &mut state,
            bucket,
            key,
            Bytes::copy_from_slice(body),
            HashMap::new(),
        );
        let stored = crate::pipeline::stored_as(kept, body);
        let info = ObjectInfo {
            etag: stored
                .md5
                .clone()
                .or_else(|| {
                    let multipart = stored.multipart.as_ref()?;
                    Some(format!(
                        "{}-{}",
                        multipart.etag_md5.as_ref()?,
                        multipart.parts
                    ))
                })
                .or(written.etag),
            version_id: written.version_id,
            last_modified: written.last_modified,
            ..stored
        };
        if let Some(current) = state
            .objects
            .get_mut(&(bucket.to_owned(), key.to_owned()))
            .and_then(|versions| versions.last_mut())
        {
            current.info = info.clone();
        }
        info
    }

    /// Stores an object with user metadata, as another run of the worker would have.
    pub(crate) fn insert_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        metadata: HashMap<String, String>,
    ) -> ObjectInfo {
        let mut state = self.lock();
        self.store(
            &mut state,
            bucket,
            key,
            Bytes::copy_from_slice(body),
            metadata,
        )
    }

    pub(crate) fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    pub(crate) fn completed_multipart(&self) -> usize {
        self.lock().completed
    }

    pub(crate) fn aborted(&self) -> usize {
        self.lock().aborted.len()
    }

    fn store(
        &self,
        state: &mut State,
        bucket: &str,
        key: &str,
        body: Bytes,
        metadata: HashMap<String, String>,
    ) -> ObjectInfo {
        state.next_id += 1;
        let info = ObjectInfo {
            size: body.len() as u64,
            etag: Some(format!("etag-{}", state.next_id)),
            version_id: self.versioned.then(|| format!("v{}", state.next_id)),
            last_modified: Some(std::time::SystemTime::UNIX_EPOCH),
            metadata,
            crc64nvme: (!self.without_checksums).then(|| crate::pipeline::crc64nvme_of(&body)),
            ..ObjectInfo::default()
        };
        let versions = state
            .objects
            .entry((bucket.to_owned(), key.to_owned()))
            .or_default();
        if !self.versioned {
            versions.clear();
        }
        versions.push(StoredObject {
            body,
            info: info.clone(),
            delete_marker: false,
        });
        info
    }

    fn check_failure(
        &self,
        operation: &'static str,
        location: &Location,
    ) -> Result<(), StoreError> {
        match self.lock().fail.remove(operation) {
            Some(class) => Err(error(class, operation, location, "injected failure")),
            None => Ok(()),
        }
    }

    fn take_read_damage(&self, key: &str) -> Option<ReadDamage> {
        let mut state = self.lock();
        match state.damage_next_read.take() {
            Some((damaged, damage)) if damaged == key => Some(damage),
            other => {
                state.damage_next_read = other;
                None
            }
        }
    }

    fn find(&self, location: &Location, version_id: Option<&str>) -> Option<StoredObject> {
        let state = self.lock();
        let versions = state
            .objects
            .get(&(location.bucket.clone(), location.key.clone()))?;
        match version_id {
            Some(id) => versions
                .iter()
                .find(|object| object.info.version_id.as_deref() == Some(id))
                .cloned(),
            None => versions.last().cloned(),
        }
        .filter(|object| !object.delete_marker)
    }

    fn write(
        &self,
        spec: &OutputSpec,
        body: Bytes,
        operation: &'static str,
    ) -> Result<Written, StoreError> {
        let location = &spec.location;
        let current = self.find(location, None);
        let allowed = match (&spec.condition, &current) {
            (WriteCondition::Absent, None) => true,
            (WriteCondition::Absent, Some(_)) => false,
            (WriteCondition::Matches(etag), Some(object)) => {
                object.info.etag.as_ref() == Some(etag)
            }
            (WriteCondition::Matches(_), None) => false,
        };
        if !allowed {
            return Err(error(
                ErrorClass::PreconditionFailed,
                operation,
                location,
                "condition not met",
            ));
        }
        let mut state = self.lock();
        let body = if std::mem::take(&mut state.damage_next_write) {
            let mut damaged = body.to_vec();
            if let Some(byte) = damaged.last_mut() {
                *byte ^= 1;
            }
            Bytes::from(damaged)
        } else {
            body
        };
        let mut info = self.store(
            &mut state,
            &location.bucket,
            &location.key,
            body,
            spec.metadata.clone(),
        );
        info.headers = spec.headers.clone();
        if let Some(stored) = state
            .objects
            .get_mut(&(location.bucket.clone(), location.key.clone()))
            .and_then(|versions| versions.last_mut())
        {
            stored.info.headers = info.headers.clone();
        }
        Ok(Written {
            etag: info.etag,
            version_id: info.version_id,
        })
    }
}

/// `body` as a damaged read delivers it.
fn damaged(body: &Bytes, damage: ReadDamage) -> Bytes {
    let mut bytes = body.to_vec();
    match damage {
        ReadDamage::Short => {
            bytes.pop();
        }
        ReadDamage::ResumedAltered => {
            let at = bytes.len() * 3 / 4;
            if let Some(byte) = bytes.get_mut(at) {
                *byte ^= 1;
            }
        }
    }
    Bytes::from(bytes)
}

fn error(
    class: ErrorClass,
    operation: &'static str,
    location: &Location,
    message: &str,
) -> StoreError {
    StoreError {
        class,
        operation,
        bucket: location.bucket.clone(),
        key: location.key.clone(),
        message: message.to_owned(),
    }
}

/// An object as HEAD and GET describe it: a multipart upload's part sizes are not said.
fn as_told(mut info: ObjectInfo) -> ObjectInfo {
    if let Some(multipart) = info.multipart.as_mut() {
        multipart.part_sizes.clear();
    }
    info
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn get(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Download, StoreError> {
        self.check_failure("GetObject", location)?;
        let object = self
            .find(location, version_id)
            .ok_or_else(|| error(ErrorClass::NotFound, "GetObject", location, "NoSuchKey"))?;
        let replacement = {
            let mut state = self.lock();
            match state.replace_after_get.take() {
                Some((key, body)) if key == location.key => Some(body),
                other => {
                    state.replace_after_get = other;
                    None
                }
            }
        };
        if let Some(body) = replacement {
            let mut state = self.lock();
            self.store(
                &mut state,
                &location.bucket,
                &location.key,
                body,
                HashMap::new(),
            );
        }
        let body = match self.take_read_damage(&location.key) {
            None => object.body,
            Some(damage) => damaged(&object.body, damage),
        };
        // Small chunks, so the reader's reassembly is exercised.
        let chunks: Vec<Bytes> = body.chunks(1000).map(Bytes::copy_from_slice).collect();
        let read = std::sync::Arc::clone(&self.bytes_read);
        let body = futures::stream::iter(chunks).map(move |chunk| {
            read.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
            Ok(chunk)
        });
        Ok(Download {
            info: as_told(object.info),
            body: body.boxed(),
        })
    }

    async fn head(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectInfo>, StoreError> {
        self.check_failure("HeadObject", location)?;
        Ok(self
            .find(location, version_id)
            .map(|object| as_told(object.info)))
    }

    async fn part_sizes(
        &self,
        location: &Location,
        source: &ObjectInfo,
    ) -> Result<Vec<u64>, String> {
        self.lock().part_sizes_asked += 1;
        self.check_failure("PartSizes", location)
            .map_err(|error| error.to_string())?;
        self.find(location, source.version_id.as_deref())
            .and_then(|object| object.info.multipart)
            .map(|multipart| multipart.part_sizes)
            .filter(|sizes| !sizes.is_empty())
            .ok_or_else(|| "the store tells no part sizes".to_owned())
    }

    async fn put(
        &self,
        spec: &OutputSpec,
        body: Bytes,
        crc64nvme: &str,
    ) -> Result<Written, StoreError> {
        self.check_failure("PutObject", &spec.location)?;
        if crate::pipeline::crc64nvme_of(&body) != crc64nvme {
            return Err(error(
                ErrorClass::Permanent,
                "PutObject",
                &spec.location,
                "BadDigest",
            ));
        }
        self.write(spec, body, "PutObject")
    }

    async fn create_multipart(&self, spec: &OutputSpec) -> Result<String, StoreError> {
        self.check_failure("CreateMultipartUpload", &spec.location)?;
        let mut state = self.lock();
        if std::mem::take(&mut state.lose_create_answer) {
            // The attempt whose answer was lost; the SDK's retry creates the one returned.
            state.next_id += 1;
            let lost = format!("upload-{}", state.next_id);
            state.uploads.insert(lost, (spec.clone(), Vec::new()));
        }
        state.next_id += 1;
        let id = format!("upload-{}", state.next_id);
        state.uploads.insert(id.clone(), (spec.clone(), Vec::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        location: &Location,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, StoreError> {
        self.check_failure("UploadPart", location)?;
        if !self.part_latency.is_zero() {
            tokio::time::sleep(self.part_latency).await;
        }
        let mut state = self.lock();
        let (_, parts) = state
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| error(ErrorClass::NotFound, "UploadPart", location, "NoSuchUpload"))?;
        parts.push((number, body));
        state.parts_uploaded += 1;
        Ok(Part {
            number,
            etag: format!("part-{number}"),
            crc64nvme: None,
        })
    }

    async fn complete_multipart(
        &self,
        spec: &OutputSpec,
        upload_id: &str,
        parts: Vec<Part>,
        crc64nvme: &str,
    ) -> Result<Written, StoreError> {
        self.check_failure("CompleteMultipartUpload", &spec.location)?;
        let (_, mut uploaded) = self.lock().uploads.remove(upload_id).ok_or_else(|| {
            error(
                ErrorClass::NotFound,
                "CompleteMultipartUpload",
                &spec.location,
                "NoSuchUpload",
            )
        })?;
        uploaded.sort_by_key(|(number, _)| *number);
        let numbers: Vec<i32> = parts.iter().map(|part| part.number).collect();
        let expected: Vec<i32> = uploaded.iter().map(|(number, _)| *number).collect();
        if numbers != expected {
            return Err(error(
                ErrorClass::Permanent,
                "CompleteMultipartUpload",
                &spec.location,
                "InvalidPart",
            ));
        }
        let body: Vec<u8> = uploaded
            .iter()
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect();
        let body = Bytes::from(body);
        if crate::pipeline::crc64nvme_of(&body) != crc64nvme {
            return Err(error(
                ErrorClass::Permanent,
                "CompleteMultipartUpload",
                &spec.location,
                "BadDigest",
            ));
        }
        let written = self.write(spec, body, "CompleteMultipartUpload")?;
        let mut state = self.lock();
        state.completed += 1;
        if std::mem::take(&mut state.lose_complete_answer) {
            return Err(error(
                ErrorClass::NotFound,
                "CompleteMultipartUpload",
                &spec.location,
                "NoSuchUpload",
            ));
        }
        Ok(written)
    }

    async fn abort_multipart(
        &self,
        location: &Location,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.uploads.remove(upload_id);
        state.aborted.push(upload_id.to_owned());
        let _ = location;
        Ok(())
    }

    async fn open_uploads(&self, location: &Location) -> Result<Vec<String>, StoreError> {
        Ok(self
            .lock()
            .uploads
            .iter()
            .filter(|(_, (spec, _))| spec.location == *location)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn newest_content_version(
        &self,
        location: &Location,
    ) -> Result<Option<String>, StoreError> {
        self.check_failure("ListObjectVersions", location)?;
        Ok(self
            .lock()
            .objects
            .get(&(location.bucket.clone(), location.key.clone()))
            .and_then(|versions| versions.iter().rev().find(|object| !object.delete_marker))
            .map(|object| {
                object
                    .info
                    .version_id
                    .clone()
                    .unwrap_or_else(|| "null".to_owned())
            }))
    }

    async fn copy(&self, source: &CopySource, spec: &OutputSpec) -> Result<Copied, StoreError> {
        let object = self.copy_source(source, "CopyObject")?;
        let written = self.write(spec, object.body, "CopyObject")?;
        Ok(Copied {
            written,
            source_version_id: object.info.version_id,
        })
    }

    async fn copy_part(
        &self,
        source: &CopySource,
        location: &Location,
        upload_id: &str,
        number: i32,
        range: std::ops::Range<u64>,
    ) -> Result<Part, StoreError> {
        let object = self.copy_source(source, "UploadPartCopy")?;
        let bytes = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(start, end)| object.body.get(start..end))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| {
                error(
                    ErrorClass::Permanent,
                    "UploadPartCopy",
                    location,
                    "InvalidRange",
                )
            })?;
        let mut state = self.lock();
        let (_, parts) = state.uploads.get_mut(upload_id).ok_or_else(|| {
            error(
                ErrorClass::NotFound,
                "UploadPartCopy",
                location,
                "NoSuchUpload",
            )
        })?;
        parts.push((number, bytes));
        Ok(Part {
            number,
            etag: format!("part-{number}"),
            crc64nvme: None,
        })
    }

    async fn delete(
        &self,
        location: &Location,
        condition: &DeleteCondition,
    ) -> Result<Deleted, StoreError> {
        self.check_failure("DeleteObject", location)?;
        let mut state = self.lock();
        let ignore_conditions = state.ignore_delete_conditions;
        let Some(versions) = state
            .objects
            .get_mut(&(location.bucket.clone(), location.key.clone()))
        else {
            return Ok(Deleted::AlreadyGone);
        };
        match condition {
            DeleteCondition::Version(id) => {
                versions.retain(|object| object.info.version_id.as_deref() != Some(id));
                Ok(Deleted::Now { marker: None })
            }
            DeleteCondition::Matches(etag) => {
                let Some(current) = versions.last().filter(|object| !object.delete_marker) else {
                    return Ok(Deleted::AlreadyGone);
                };
                if current.info.etag.as_ref() != Some(etag) && !ignore_conditions {
                    return Err(error(
                        ErrorClass::PreconditionFailed,
                        "DeleteObject",
                        location,
                        "PreconditionFailed",
                    ));
                }
                if !self.versioned {
                    versions.clear();
                    return Ok(Deleted::Now { marker: None });
                }
                state.next_id += 1;
                let marker = format!("v{}", state.next_id);
                state
                    .objects
                    .entry((location.bucket.clone(), location.key.clone()))
                    .or_default()
                    .push(StoredObject {
                        body: Bytes::new(),
                        info: ObjectInfo {
                            version_id: Some(marker.clone()),
                            ..ObjectInfo::default()
                        },
                        delete_marker: true,
                    });
                Ok(Deleted::Now {
                    marker: Some(marker),
                })
            }
        }
    }
}
