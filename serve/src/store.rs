//! The S3 operations, answered from [`crate::disk`], and what the worker needs from S3:
//!
//! - every successful PutObject and CompleteMultipartUpload is announced as an [`Upload`], every
//!   DeleteObject and DeleteObjects as a [`Removal`];
//! - reads, writes and deletes of one key are serialized (see [`crate::locks`]);
//! - DeleteObject and DeleteObjects honour `If-Match` (and `x-amz-if-match-size`), GetObject and
//!   HeadObject honour `If-Match`, `If-None-Match` and the date conditions, PutObject and
//!   CompleteMultipartUpload `If-None-Match: *` (create-only) and `If-Match`;
//! - every key of up to 1,024 bytes of UTF-8 is stored (`a//b`, `../x`, `a` beside `a/b`), a
//!   longer one is KeyTooLongError, as on S3;
//! - a body is checked against its `Content-MD5` (malformed: InvalidDigest; wrong: BadDigest)
//!   and the `x-amz-checksum-*` the client sent, before it replaces anything;
//! - a write that finds the disk full is answered 503 ServiceUnavailable, saying so, once the
//!   rest of its body was read, and leaves nothing behind (see [`crate::error::disk_full`]);
//! - listings are answered from the index in S3's order and honour `encoding-type=url` (see
//!   [`crate::index`], [`crate::listing`]);
//! - a CompleteMultipartUpload checks the client's list of parts, and may be repeated (see
//!   [`crate::completed`]); ListMultipartUploads lists the uploads in progress;
//! - bodies stream in 1 MiB reads and writes, whatever the object's size.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::completed::{Completed, Completion};
use crate::conditions::{etag_matches, ReadConditions};
use crate::disk::{self, hex, Disk, PartRecord, Scratch, UploadRecord};
use crate::error::{disk_full, is_disk_full};
use crate::index::{self, Item, Query};
use crate::listing;
use crate::record::{Attributes, Checksums, Record};
use crate::{Removal, Upload};

/// A multipart upload in progress, as ListMultipartUploads sorts and pages them.
struct PendingUpload {
    key: String,
    upload_id: String,
    initiated: SystemTime,
}

/// Bytes per read when an object or a part is streamed.
const READ_CHUNK: usize = 1024 * 1024;

/// S3's longest key, in bytes of UTF-8.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// S3's smallest part, but for the last.
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// S3's most keys in one listing page.
const MAX_KEYS: i32 = 1000;

#[derive(Debug)]
pub(crate) struct Store {
    disk: Arc<Disk>,
    uploads: mpsc::Sender<Upload>,
    removals: mpsc::Sender<Removal>,
    /// See [`crate::ServeOptions::announce_prefixes`]; removals are filtered the same way.
    announce_prefixes: Vec<String>,
    completed: Completed,
}

/// A body as it was stored in a scratch file.
struct Received {
    scratch: Scratch,
    size: u64,
    md5: String,
    checksum: Checksum,
}

impl Store {
    pub(crate) fn new(
        disk: Arc<Disk>,
        uploads: mpsc::Sender<Upload>,
        removals: mpsc::Sender<Removal>,
        announce_prefixes: Vec<String>,
    ) -> Self {
        Self {
            disk,
            uploads,
            removals,
            announce_prefixes,
            completed: Completed::default(),
        }
    }

    /// Hands `upload` to the receiver, waiting while its queue is full: a notice is never
    /// dropped, and the client's request completes only once the notice is queued.
    async fn announce(&self, upload: Upload) {
        tracing::debug!(bucket = %upload.bucket, key = %upload.key, size = ?upload.size, etag = ?upload.etag, "upload completed");
        if !self.announced(&upload.key) {
            return;
        }
        if let Err(unsent) = self.uploads.send(upload).await {
            tracing::debug!(key = %unsent.0.key, "no one is listening for uploads; notice not delivered");
        }
    }

    /// Hands the removal of `key` to the removals' receiver, waiting while its queue is full,
    /// as [`Self::announce`] does.
    async fn announce_removal(&self, bucket: &str, key: String) {
        if !self.announced(&key) {
            return;
        }
        let removal = Removal {
            bucket: bucket.to_owned(),
            key,
        };
        if let Err(unsent) = self.removals.send(removal).await {
            tracing::debug!(key = %unsent.0.key, "no one is listening for removals; notice not delivered");
        }
    }

    fn announced(&self, key: &str) -> bool {
        self.announce_prefixes.is_empty()
            || self
                .announce_prefixes
                .iter()
                .any(|prefix| key.starts_with(prefix.as_str()))
    }

    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.disk.has_bucket(bucket) {
            return Ok(());
        }
        Err(s3_error!(NoSuchBucket))
    }

    /// Refuses to write `key` where S3 would: a bucket that does not exist, a key too long.
    fn check_writable(&self, bucket: &str, key: &str) -> S3Result<()> {
        if !self.disk.has_bucket(bucket) {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist; create it first (aws s3 mb s3://{bucket})"
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(s3_error!(
                KeyTooLongError,
                "Your key is too long: it has {} bytes of UTF-8, and S3 allows {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        Ok(())
    }

    /// The object `key` as stored now, or S3's answer for a missing one. Call with the key's
    /// lock held.
    async fn object(&self, bucket: &str, key: &str) -> S3Result<Record> {
        self.check_bucket(bucket)?;
        match self.disk.record(bucket, key).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(s3_error!(NoSuchKey)),
            Err(error) => Err(S3Error::internal_error(error)),
        }
    }

    /// The open multipart upload `upload_id` of `bucket`/`key`, or S3's answer to a part, a
    /// listing, an abort or a completion of an upload that is not open.
    async fn open_upload(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
    ) -> S3Result<UploadRecord> {
        match self.disk.upload(upload_id).await {
            Some(upload) if upload.bucket == bucket && upload.key == key => Ok(upload),
            _ => Err(s3_error!(
                NoSuchUpload,
                "The specified multipart upload does not exist: it was completed or aborted, or the \
                 upload ID is wrong"
            )),
        }
    }

    /// Streams `body` into a scratch file, hashing it as it goes. A write that finds the disk
    /// full reads the rest of the body, so that the client hears why.
    async fn receive(
        &self,
        body: StreamingBlob,
        mut checksum: ChecksumHasher,
        key: &str,
    ) -> S3Result<Received> {
        let mut body = body;
        let scratch = self.disk.scratch();
        let mut writer = match scratch.create().await {
            Ok(writer) => writer,
            Err(error) => return Err(write_failure(error, key, Some(body)).await),
        };
        let mut md5 = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(body_error)?;
            md5.update(&chunk);
            checksum.update(&chunk);
            size += chunk.len() as u64;
            if let Err(error) = writer.write_all(&chunk).await {
                return Err(write_failure(error, key, Some(body)).await);
            }
        }
        if let Err(error) = disk::finish(writer).await {
            return Err(write_failure(error, key, None).await);
        }
        Ok(Received {
            scratch,
            size,
            md5: hex(&md5.finalize()),
            checksum: checksum.finalize(),
        })
    }

    /// Installs `record` (with `data`, or the bytes it already names), answering a failure
    /// as a write's.
    async fn install(&self, bucket: &str, record: Record, data: Option<Scratch>) -> S3Result<()> {
        let key = record.key.clone();
        match self.disk.install(bucket, record, data).await {
            Ok(()) => Ok(()),
            Err(error) => Err(write_failure(error, &key, None).await),
        }
    }

    /// Copies `length` bytes of `path` from `start` into a scratch file; returns it and the
    /// MD5 of the bytes, in hex.
    async fn copy_range(
        &self,
        path: &std::path::Path,
        start: u64,
        length: u64,
        key: &str,
    ) -> S3Result<(Scratch, String)> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(S3Error::internal_error)?;
        file.seek(io::SeekFrom::Start(start))
            .await
            .map_err(S3Error::internal_error)?;
        let body = StreamingBlob::wrap(ReaderStream::with_capacity(file.take(length), READ_CHUNK));
        let received = self.receive(body, ChecksumHasher::default(), key).await?;
        Ok((received.scratch, received.md5))
    }
}

/// An error of the request's body: what s3s found wrong with it (a bad chunk signature...), or
/// the connection breaking off.
fn body_error(error: s3s::StdError) -> S3Error {
    match error.downcast::<S3Error>() {
        Ok(error) => *error,
        Err(error) => S3Error::with_source(S3ErrorCode::IncompleteBody, error),
    }
}

/// What a client is told of a write that failed: a full disk is said in words (see
/// [`disk_full`]), after the rest of the body was read so that the client gets the answer.
async fn write_failure(error: io::Error, key: &str, rest: Option<StreamingBlob>) -> S3Error {
    if !is_disk_full(&error) {
        return S3Error::internal_error(error);
    }
    let mut drained = 0u64;
    if let Some(mut rest) = rest {
        while let Some(Ok(chunk)) = rest.next().await {
            drained += chunk.len() as u64;
        }
    }
    tracing::warn!(%key, drained, %error, "no space left to store an upload; refused it");
    disk_full(key)
}

/// The bucket is not versioned: every object's version is `null`.
fn names_another_version(version_id: Option<&str>) -> bool {
    version_id.is_some_and(|v| v != "null")
}

fn no_such_version() -> S3Error {
    s3_error!(
        NoSuchVersion,
        "the embedded S3 server keeps no versions; only versionId \"null\" (the current object) exists"
    )
}

fn copy_source_object(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if names_another_version(version_id.as_deref()) {
                return Err(no_such_version());
            }
            Ok((bucket, key))
        }
        _ => Err(s3_error!(
            NotImplemented,
            "the embedded S3 server copies from buckets only, not access points or outposts"
        )),
    }
}

/// A Content-MD5 that is not the base64 of 16 bytes is InvalidDigest, as on S3. Returns the
/// MD5 in hex.
fn check_content_md5(content_md5: Option<&str>) -> S3Result<Option<String>> {
    let Some(content_md5) = content_md5 else {
        return Ok(None);
    };
    match base64::engine::general_purpose::STANDARD.decode(content_md5) {
        Ok(md5) if md5.len() == 16 => Ok(Some(hex(&md5))),
        _ => Err(s3_error!(
            InvalidDigest,
            "the Content-MD5 you specified is not valid: it must be the base64 of a 16-byte MD5"
        )),
    }
}

fn check_md5(expected: Option<&str>, md5: &str) -> S3Result<()> {
    if expected.is_some_and(|expected| expected != md5) {
        return Err(s3_error!(
            BadDigest,
            "the Content-MD5 you specified did not match what was received"
        ));
    }
    Ok(())
}

/// The checksums a PutObject asks for: those it sent a value of, and the one it names.
fn requested_checksums(input: &PutObjectInput) -> S3Result<ChecksumHasher> {
    let mut hasher = ChecksumHasher::default();
    if input.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if input.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if input.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if input.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if input.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if let Some(algorithm) = &input.checksum_algorithm {
        match algorithm.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            _ => return Err(s3_error!(NotImplemented, "Unsupported checksum algorithm")),
        }
    }
    Ok(hasher)
}

/// The checksums the client sent, in headers or (with a streamed body) in trailers.
fn sent_checksums(
    input: &PutObjectInput,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<Checksums> {
    let mut sent = Checksums {
        checksum_crc32: input.checksum_crc32.clone(),
        checksum_crc32c: input.checksum_crc32c.clone(),
        checksum_crc64nvme: input.checksum_crc64nvme.clone(),
        checksum_sha1: input.checksum_sha1.clone(),
        checksum_sha256: input.checksum_sha256.clone(),
    };
    let Some(trailers) = trailers.and_then(s3s::TrailingHeaders::take) else {
        return Ok(sent);
    };
    for (name, field) in [
        ("x-amz-checksum-crc32", &mut sent.checksum_crc32),
        ("x-amz-checksum-crc32c", &mut sent.checksum_crc32c),
        ("x-amz-checksum-crc64nvme", &mut sent.checksum_crc64nvme),
        ("x-amz-checksum-sha1", &mut sent.checksum_sha1),
        ("x-amz-checksum-sha256", &mut sent.checksum_sha256),
    ] {
        if let Some(value) = trailers.get(name) {
            let value = value.to_str().map_err(|_| s3_error!(InvalidArgument))?;
            *field = Some(value.to_owned());
        }
    }
    Ok(sent)
}

/// Every checksum computed must be the one sent: a checksum asked for by algorithm alone, with
/// no value sent, is refused too, as `s3s-fs` did.
fn check_checksums(computed: &Checksums, sent: &Checksums) -> S3Result<()> {
    for (name, computed, sent) in [
        ("crc32", &computed.checksum_crc32, &sent.checksum_crc32),
        ("crc32c", &computed.checksum_crc32c, &sent.checksum_crc32c),
        (
            "crc64nvme",
            &computed.checksum_crc64nvme,
            &sent.checksum_crc64nvme,
        ),
        ("sha1", &computed.checksum_sha1, &sent.checksum_sha1),
        ("sha256", &computed.checksum_sha256, &sent.checksum_sha256),
    ] {
        if computed != sent {
            return Err(s3_error!(
                BadDigest,
                "checksum_{name} mismatch: expected `{}`, got `{}`",
                sent.as_deref().unwrap_or_default(),
                computed.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Why an object of a DeleteObjects request may not be deleted, as S3 reports it per key.
fn delete_refusal(key: &str, code: S3ErrorCode, message: &str) -> Error {
    Error {
        code: Some(code.as_str().to_owned()),
        key: Some(key.to_owned()),
        message: Some(message.to_owned()),
        version_id: None,
    }
}

fn new_record(
    key: &str,
    size: u64,
    e_tag: String,
    checksums: Checksums,
    attributes: Attributes,
) -> Record {
    let mut record = Record {
        key: key.to_owned(),
        data: String::new(),
        size,
        e_tag,
        checksums,
        attributes,
        modified_secs: 0,
        modified_nanos: 0,
    };
    record.set_last_modified(SystemTime::now());
    record
}

fn size_i64(size: u64) -> S3Result<i64> {
    i64::try_from(size).map_err(S3Error::internal_error)
}

fn listed_object(key: String, entry: index::Entry) -> S3Result<Object> {
    Ok(Object {
        key: Some(key),
        size: Some(size_i64(entry.size)?),
        e_tag: Some(ETag::Strong(entry.e_tag)),
        last_modified: Some(Timestamp::from(entry.last_modified)),
        ..Default::default()
    })
}

/// A listing page's objects and common prefixes, each `None` when there are none.
type Split = (Option<Vec<Object>>, Option<Vec<CommonPrefix>>);

/// A listing page as S3's contents and common prefixes.
fn split_page(items: Vec<Item>) -> S3Result<Split> {
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for item in items {
        match item {
            Item::Object(key, entry) => contents.push(listed_object(key, entry)?),
            Item::Prefix(prefix) => prefixes.push(CommonPrefix {
                prefix: Some(prefix),
            }),
        }
    }
    Ok((
        (!contents.is_empty()).then_some(contents),
        (!prefixes.is_empty()).then_some(prefixes),
    ))
}

fn max_keys(requested: Option<i32>) -> (i32, usize) {
    let max_keys = requested.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS);
    (max_keys, usize::try_from(max_keys).unwrap_or(0))
}

/// The headers an upload keeps, from an input that has them all (PutObject,
/// CreateMultipartUpload, CopyObject with `REPLACE`).
macro_rules! attributes_of {
    ($input:expr) => {{
        let mut attributes = Attributes {
            user_metadata: $input.metadata,
            content_encoding: $input.content_encoding,
            content_type: $input.content_type,
            content_disposition: $input.content_disposition,
            content_language: $input.content_language,
            cache_control: $input.cache_control,
            expires: None,
            website_redirect_location: $input.website_redirect_location,
        };
        attributes.set_expires($input.expires);
        attributes
    }};
}

/// `bytes=START-END` (END optional), within an object of `size` bytes: the start and length.
fn copy_range(range: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(range) = range else {
        return Ok((0, size));
    };
    let Some((start, end)) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) else {
        return Err(s3_error!(
            InvalidArgument,
            "the copy source range must be bytes=START-END"
        ));
    };
    let start: u64 = start.parse().map_err(|_| s3_error!(InvalidArgument))?;
    let end: u64 = if end.is_empty() {
        size.saturating_sub(1)
    } else {
        end.parse().map_err(|_| s3_error!(InvalidArgument))?
    };
    if start > end || start >= size || end >= size {
        return Err(s3_error!(InvalidRange));
    }
    Ok((start, end - start + 1))
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        match self.disk.create_bucket(&req.input.bucket).await {
            Ok(true) => Ok(S3Response::new(CreateBucketOutput::default())),
            Ok(false) => Err(s3_error!(BucketAlreadyExists)),
            Err(error) => Err(S3Error::internal_error(error)),
        }
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .disk
            .list_buckets()
            .await
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.check_bucket(&req.input.bucket)?;
        match self.disk.delete_bucket(&req.input.bucket).await {
            Ok(true) => Ok(S3Response::new(DeleteBucketOutput {})),
            Ok(false) => Err(s3_error!(BucketNotEmpty)),
            Err(error) => Err(S3Error::internal_error(error)),
        }
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let (max_keys, page_len) = max_keys(input.max_keys);
        let query = Query {
            prefix: input.prefix.as_deref().unwrap_or(""),
            delimiter: input.delimiter.as_deref(),
            after: input.marker.as_deref(),
            max_keys: page_len,
        };
        let page = self
            .disk
            .with_keys(&input.bucket, |keys| index::list(keys, &query))
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let (contents, common_prefixes) = split_page(page.items)?;
        let mut output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: listing::delimiter(input.delimiter),
            marker: input.marker,
            max_keys: Some(max_keys),
            is_truncated: Some(page.is_truncated),
            next_marker: page.next,
            contents,
            common_prefixes,
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        listing::encode_v1(&mut output);
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let (max_keys, page_len) = max_keys(input.max_keys);
        let after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let query = Query {
            prefix: input.prefix.as_deref().unwrap_or(""),
            delimiter: input.delimiter.as_deref(),
            after,
            max_keys: page_len,
        };
        let page = self
            .disk
            .with_keys(&input.bucket, |keys| index::list(keys, &query))
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let key_count = i32::try_from(page.items.len()).unwrap_or(MAX_KEYS);
        let (contents, common_prefixes) = split_page(page.items)?;
        let mut output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: listing::delimiter(input.delimiter),
            start_after: input.start_after,
            continuation_token: input.continuation_token,
            next_continuation_token: page.next,
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(page.is_truncated),
            contents,
            common_prefixes,
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        listing::encode_v2(&mut output);
        Ok(S3Response::new(output))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let S3Request {
            mut input,
            trailing_headers,
            ..
        } = req;
        let content_md5 = check_content_md5(input.content_md5.as_deref())?;
        if let Some(class) = &input.storage_class {
            if !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str()) {
                return Err(s3_error!(InvalidStorageClass));
            }
        }
        let Some(body) = input.body.take() else {
            return Err(s3_error!(IncompleteBody));
        };
        let bucket = input.bucket.clone();
        let key = input.key.clone();
        let guard = self.disk.locks.lock(&bucket, &key).await;
        self.check_writable(&bucket, &key)?;
        let current = self.disk.entry(&bucket, &key);
        if input
            .if_none_match
            .as_ref()
            .is_some_and(ETagCondition::is_any)
            && current.is_some()
        {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        if let Some(condition) = &input.if_match {
            let Some(current) = &current else {
                return Err(s3_error!(PreconditionFailed, "Object does not exist"));
            };
            if !etag_matches(condition, Some(&ETag::Strong(current.e_tag.clone()))) {
                return Err(s3_error!(PreconditionFailed, "ETag does not match"));
            }
        }

        let hasher = requested_checksums(&input)?;
        let received = self.receive(body, hasher, &key).await?;
        check_md5(content_md5.as_deref(), &received.md5)?;
        let computed = Checksums::from(received.checksum);
        let sent = sent_checksums(&input, trailing_headers.as_ref())?;
        check_checksums(&computed, &sent)?;

        let size = received.size;
        let record = new_record(
            &key,
            size,
            received.md5.clone(),
            computed.clone(),
            attributes_of!(input),
        );
        self.install(&bucket, record, Some(received.scratch))
            .await?;
        // Released before announcing: a full queue must not keep readers of this key waiting.
        drop(guard);
        self.announce(Upload {
            bucket,
            key,
            size: Some(size),
            etag: Some(received.md5.clone()),
        })
        .await;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(received.md5)),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_sha1: computed.checksum_sha1,
            checksum_sha256: computed.checksum_sha256,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if names_another_version(input.version_id.as_deref()) {
            return Err(no_such_version());
        }
        // Held until the file is open, not while the body streams: an open file keeps its
        // bytes even if a new upload replaces it.
        let guard = self.disk.locks.lock(&input.bucket, &input.key).await;
        let record = self.object(&input.bucket, &input.key).await?;
        let etag = ETag::Strong(record.e_tag.clone());
        let last_modified = Timestamp::from(record.last_modified());
        ReadConditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(Some(&etag), Some(&last_modified))?;
        let mut file = tokio::fs::File::open(self.disk.data_path(&input.bucket, &record))
            .await
            .map_err(S3Error::internal_error)?;
        drop(guard);

        let size = record.size;
        let (start, length, content_range) = match &input.range {
            None => (0, size, None),
            Some(range) => {
                let range = range.check(size)?;
                let length = range.end - range.start;
                let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
                (range.start, length, Some(content_range))
            }
        };
        if start > 0 {
            file.seek(io::SeekFrom::Start(start))
                .await
                .map_err(S3Error::internal_error)?;
        }
        let body = StreamingBlob::wrap(ReaderStream::with_capacity(file.take(length), READ_CHUNK));
        // S3 answers no checksum for a part of an object.
        let checksums = if length == size {
            record.checksums
        } else {
            Checksums::default()
        };
        let attributes = record.attributes;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(size_i64(length)?),
            content_range,
            last_modified: Some(last_modified),
            e_tag: Some(etag),
            expires: attributes.expires(),
            metadata: attributes.user_metadata,
            content_encoding: attributes.content_encoding,
            content_type: attributes.content_type,
            content_disposition: attributes.content_disposition,
            content_language: attributes.content_language,
            cache_control: attributes.cache_control,
            website_redirect_location: attributes.website_redirect_location,
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        if names_another_version(input.version_id.as_deref()) {
            return Err(no_such_version());
        }
        let record = {
            let _guard = self.disk.locks.lock(&input.bucket, &input.key).await;
            self.object(&input.bucket, &input.key).await?
        };
        let etag = ETag::Strong(record.e_tag.clone());
        let last_modified = Timestamp::from(record.last_modified());
        ReadConditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(Some(&etag), Some(&last_modified))?;
        let checksums = record.checksums;
        let attributes = record.attributes;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size_i64(record.size)?),
            last_modified: Some(last_modified),
            e_tag: Some(etag),
            expires: attributes.expires(),
            metadata: attributes.user_metadata,
            content_encoding: attributes.content_encoding,
            content_type: attributes.content_type,
            content_disposition: attributes.content_disposition,
            content_language: attributes.content_language,
            cache_control: attributes.cache_control,
            website_redirect_location: attributes.website_redirect_location,
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        if input.if_match_last_modified_time.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "the embedded S3 server does not support x-amz-if-match-last-modified-time; use If-Match"
            ));
        }
        let bucket = input.bucket;
        let key = input.key;
        let guard = self.disk.locks.lock(&bucket, &key).await;
        let conditional = input.if_match.is_some() || input.if_match_size.is_some();
        if names_another_version(input.version_id.as_deref()) {
            // As S3 for a version that does not exist: nothing to delete, and certainly not
            // the current object.
            if conditional {
                return Err(no_such_version());
            }
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        self.check_bucket(&bucket)?;
        if conditional {
            // As S3: a conditional delete of a missing object is 404, not the usual 204.
            let record = self.object(&bucket, &key).await?;
            if let Some(condition) = &input.if_match {
                if !etag_matches(condition, Some(&ETag::Strong(record.e_tag.clone()))) {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "the object's ETag does not match If-Match; it was not deleted"
                    ));
                }
            }
            if let Some(expected) = input.if_match_size {
                if size_i64(record.size)? != expected {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "the object's size does not match x-amz-if-match-size; it was not deleted"
                    ));
                }
            }
        }
        self.disk
            .remove(&bucket, &key)
            .await
            .map_err(S3Error::internal_error)?;
        // Released before announcing: a full queue must not keep users of this key waiting.
        drop(guard);
        self.announce_removal(&bucket, key).await;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let bucket = input.bucket;
        self.check_bucket(&bucket)?;
        let requested = input.delete.objects;
        let guards = self
            .disk
            .locks
            .lock_all(&bucket, requested.iter().map(|o| o.key.as_str()))
            .await;

        let mut refused = Vec::new();
        let mut deleted = Vec::new();
        let mut removed = Vec::new();
        for object in requested {
            if object.last_modified_time.is_some() {
                refused.push(delete_refusal(
                    &object.key,
                    S3ErrorCode::NotImplemented,
                    "the embedded S3 server does not support LastModifiedTime conditions; use ETag",
                ));
                continue;
            }
            let conditional = object.e_tag.is_some() || object.size.is_some();
            let other_version = names_another_version(object.version_id.as_deref());
            if conditional {
                let record = match self.object(&bucket, &object.key).await {
                    Ok(record) if !other_version => record,
                    Ok(_) => {
                        refused.push(delete_refusal(
                            &object.key,
                            S3ErrorCode::NoSuchKey,
                            "the object (or that version of it) does not exist",
                        ));
                        continue;
                    }
                    Err(error) => {
                        let message = error
                            .message()
                            .unwrap_or("the object does not exist")
                            .to_owned();
                        refused.push(delete_refusal(&object.key, error.code().clone(), &message));
                        continue;
                    }
                };
                let etag_ok = object
                    .e_tag
                    .as_ref()
                    .is_none_or(|expected| ETag::Strong(record.e_tag.clone()).strong_cmp(expected));
                let size_ok = object
                    .size
                    .is_none_or(|size| i64::try_from(record.size).ok() == Some(size));
                if !(etag_ok && size_ok) {
                    refused.push(delete_refusal(
                        &object.key,
                        S3ErrorCode::PreconditionFailed,
                        "the object does not match the given ETag or size; it was not deleted",
                    ));
                    continue;
                }
            }
            if !other_version {
                if let Err(error) = self.disk.remove(&bucket, &object.key).await {
                    refused.push(delete_refusal(
                        &object.key,
                        S3ErrorCode::InternalError,
                        &format!("the object could not be deleted: {error}"),
                    ));
                    continue;
                }
                removed.push(object.key.clone());
            }
            deleted.push(DeletedObject {
                key: Some(object.key),
                version_id: object.version_id,
                ..Default::default()
            });
        }
        drop(guards);
        for key in removed {
            self.announce_removal(&bucket, key).await;
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!refused.is_empty()).then_some(refused),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (src_bucket, src_key) = copy_source_object(&input.copy_source)?;
        // Both keys, in (bucket, key) order like every other multi-key lock, so none deadlock.
        let source = (src_bucket, src_key);
        let target = (input.bucket.as_str(), input.key.as_str());
        let replaces_metadata = input
            .metadata_directive
            .as_ref()
            .is_some_and(|directive| directive.as_str() == MetadataDirective::REPLACE);
        if source == target && !replaces_metadata {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata"
            ));
        }
        let (first, second) = if source <= target {
            (source, target)
        } else {
            (target, source)
        };
        let _first = self.disk.locks.lock(first.0, first.1).await;
        let _second = if first == second {
            None
        } else {
            Some(self.disk.locks.lock(second.0, second.1).await)
        };
        let src = self.object(src_bucket, src_key).await?;
        self.check_writable(&input.bucket, &input.key)?;

        // S3's precedence: If-Match over If-Unmodified-Since, If-None-Match over If-Modified-Since.
        let src_etag = ETag::Strong(src.e_tag.clone());
        let src_modified = Timestamp::from(src.last_modified());
        let failed = |_| s3_error!(PreconditionFailed);
        ReadConditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        }
        .check(Some(&src_etag), Some(&src_modified))
        .map_err(failed)?;

        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let src_data = self.disk.data_path(src_bucket, &src);
        let attributes = if replaces_metadata {
            attributes_of!(input)
        } else {
            src.attributes.clone()
        };
        let mut record = new_record(&key, src.size, src.e_tag, src.checksums, attributes);
        let data = if source == target {
            record.data = src.data;
            None
        } else {
            let (scratch, _) = self.copy_range(&src_data, 0, src.size, &key).await?;
            Some(scratch)
        };
        let last_modified = Timestamp::from(record.last_modified());
        let e_tag = ETag::Strong(record.e_tag.clone());
        self.install(&bucket, record, data).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(e_tag),
                last_modified: Some(last_modified),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        // Checked again on completion; refusing now spares uploading every part first.
        self.check_writable(&input.bucket, &input.key)?;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let upload = UploadRecord {
            bucket: bucket.clone(),
            key: key.clone(),
            initiated_secs: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            attributes: attributes_of!(input),
        };
        let upload_id = match self.disk.create_upload(&upload).await {
            Ok(id) => id,
            Err(error) => return Err(write_failure(error, &key, None).await),
        };
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let mut input = req.input;
        let content_md5 = check_content_md5(input.content_md5.as_deref())?;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        self.open_upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let Some(body) = input.body.take() else {
            return Err(s3_error!(IncompleteBody));
        };
        let received = self
            .receive(body, ChecksumHasher::default(), &input.key)
            .await?;
        // A part refused here is replaced by the client's retry of the same part number.
        check_md5(content_md5.as_deref(), &received.md5)?;
        let part = PartRecord {
            number: input.part_number,
            data: String::new(),
            size: received.size,
            e_tag: received.md5.clone(),
            modified_secs: disk::seconds(SystemTime::now()),
        };
        if let Err(error) = self
            .disk
            .install_part(&input.upload_id, part, received.scratch)
            .await
        {
            return Err(write_failure(error, &input.key, None).await);
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(received.md5)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        self.open_upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let (src_bucket, src_key) = copy_source_object(&input.copy_source)?;
        let (scratch, md5) = {
            let _guard = self.disk.locks.lock(src_bucket, src_key).await;
            let src = self.object(src_bucket, src_key).await?;
            let (start, length) = copy_range(input.copy_source_range.as_deref(), src.size)?;
            let path = self.disk.data_path(src_bucket, &src);
            let (scratch, md5) = self.copy_range(&path, start, length, &input.key).await?;
            (scratch, (md5, length))
        };
        let (md5, size) = md5;
        let now = SystemTime::now();
        let part = PartRecord {
            number: input.part_number,
            data: String::new(),
            size,
            e_tag: md5.clone(),
            modified_secs: disk::seconds(now),
        };
        if let Err(error) = self
            .disk
            .install_part(&input.upload_id, part, scratch)
            .await
        {
            return Err(write_failure(error, &input.key, None).await);
        }
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(md5)),
                last_modified: Some(Timestamp::from(now)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.open_upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let parts = self
            .disk
            .parts(&input.upload_id)
            .await
            .map_err(S3Error::internal_error)?
            .into_iter()
            .map(|part| {
                Ok(Part {
                    part_number: Some(part.number),
                    size: Some(size_i64(part.size)?),
                    e_tag: Some(ETag::Strong(part.e_tag)),
                    last_modified: Some(Timestamp::from(
                        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(part.modified_secs),
                    )),
                    ..Default::default()
                })
            })
            .collect::<S3Result<Vec<_>>>()?;
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            parts: Some(parts),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.open_upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        self.disk.remove_upload(&input.upload_id).await;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let bucket = input.bucket.clone();
        let key = input.key.clone();
        let guard = self.disk.locks.lock(&bucket, &key).await;
        let upload_id = input.upload_id.clone();
        if let Some(done) = self.completed.find(&upload_id, &bucket, &key) {
            return Ok(S3Response::new(CompleteMultipartUploadOutput {
                bucket: Some(done.bucket),
                key: Some(done.key),
                e_tag: Some(ETag::Strong(done.etag)),
                ..Default::default()
            }));
        }
        self.check_writable(&bucket, &key)?;
        let upload = self.open_upload(&upload_id, &bucket, &key).await?;
        let listed = input
            .multipart_upload
            .and_then(|u| u.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(InvalidPart, "You must specify at least one part"));
        }
        let current = self.disk.entry(&bucket, &key);
        if input
            .if_none_match
            .as_ref()
            .is_some_and(ETagCondition::is_any)
            && current.is_some()
        {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        if let Some(condition) = &input.if_match {
            let Some(current) = &current else {
                return Err(s3_error!(PreconditionFailed, "Object does not exist"));
            };
            if !etag_matches(condition, Some(&ETag::Strong(current.e_tag.clone()))) {
                return Err(s3_error!(PreconditionFailed, "ETag does not match"));
            }
        }
        let parts = self.check_parts(&upload_id, &listed).await?;

        let (scratch, size, etag) = self.concatenate(&upload_id, &parts, &key).await?;
        let record = new_record(
            &key,
            size,
            etag.clone(),
            Checksums::default(),
            upload.attributes,
        );
        self.install(&bucket, record, Some(scratch)).await?;
        self.disk.remove_upload(&upload_id).await;
        self.completed.remember(
            &upload_id,
            Completion {
                bucket: bucket.clone(),
                key: key.clone(),
                etag: etag.clone(),
            },
        );
        drop(guard);
        self.announce(Upload {
            bucket: bucket.clone(),
            key: key.clone(),
            size: Some(size),
            etag: Some(etag.clone()),
        })
        .await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.check_bucket(&req.input.bucket)?;
        let input = req.input;
        if input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
            return Err(s3_error!(
                NotImplemented,
                "the embedded S3 server lists multipart uploads without a delimiter only"
            ));
        }

        let mut uploads: Vec<PendingUpload> = self
            .disk
            .pending_uploads(&input.bucket)
            .await
            .map_err(S3Error::internal_error)?
            .into_iter()
            .map(|(upload_id, upload)| PendingUpload {
                key: upload.key,
                upload_id,
                initiated: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(upload.initiated_secs),
            })
            .collect();
        let prefix = input.prefix.as_deref().unwrap_or("");
        uploads.retain(|u| u.key.starts_with(prefix));
        if let Some(key_marker) = input.key_marker.as_deref() {
            let id_marker = input.upload_id_marker.as_deref();
            uploads.retain(|u| match id_marker {
                Some(id) => (u.key.as_str(), u.upload_id.as_str()) > (key_marker, id),
                None => u.key.as_str() > key_marker,
            });
        }
        // By key, then by upload ID, so that the markers above resume exactly where a page ended.
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));

        let max_uploads = input.max_uploads.unwrap_or(1000).clamp(0, 1000);
        let page_len = usize::try_from(max_uploads).unwrap_or(0);
        let is_truncated = uploads.len() > page_len;
        uploads.truncate(page_len);
        let (next_key_marker, next_upload_id_marker) = match (is_truncated, uploads.last()) {
            (true, Some(last)) => (Some(last.key.clone()), Some(last.upload_id.clone())),
            _ => (None, None),
        };

        let uploads = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(Timestamp::from(u.initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max_uploads),
            is_truncated: Some(is_truncated),
            next_key_marker,
            next_upload_id_marker,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

impl Store {
    /// S3 refuses a completion whose list is out of order, names a part that was not uploaded
    /// or with another ETag than it was uploaded with, or a part but the last under 5 MiB.
    /// Returns the parts to join, in order.
    async fn check_parts(
        &self,
        upload_id: &str,
        listed: &[CompletedPart],
    ) -> S3Result<Vec<PartRecord>> {
        let mut parts: Vec<PartRecord> = Vec::with_capacity(listed.len());
        for part in listed {
            let Some(number) = part.part_number else {
                return Err(s3_error!(
                    InvalidPart,
                    "a part in the list has no part number"
                ));
            };
            if parts
                .last()
                .is_some_and(|previous| previous.number >= number)
            {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "the list of parts was not in ascending order"
                ));
            }
            let Some(uploaded) = self.disk.part(upload_id, number).await else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} was not uploaded, or its upload did not finish"
                ));
            };
            let listed = part
                .e_tag
                .as_ref()
                .map(|etag| etag.value().trim_matches('"'));
            if listed != Some(uploaded.e_tag.as_str()) {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s ETag is not the one it was uploaded with, {:?}",
                    uploaded.e_tag
                ));
            }
            if parts
                .last()
                .is_some_and(|previous| previous.size < MIN_PART_BYTES)
            {
                return Err(s3_error!(EntityTooSmall));
            }
            parts.push(uploaded);
        }
        Ok(parts)
    }

    /// Joins the parts into a scratch file; returns it, its size and its ETag, the MD5 of the
    /// parts' MD5s and their count. Each part's MD5 is taken again from its bytes: a part
    /// replaced while this ran would otherwise end up under the ETag of another.
    async fn concatenate(
        &self,
        upload_id: &str,
        parts: &[PartRecord],
        key: &str,
    ) -> S3Result<(Scratch, u64, String)> {
        let scratch = self.disk.scratch();
        let mut writer = match scratch.create().await {
            Ok(writer) => writer,
            Err(error) => return Err(write_failure(error, key, None).await),
        };
        let mut buf = vec![0u8; READ_CHUNK];
        let mut md5s = Md5::new();
        let mut size = 0u64;
        for part in parts {
            let Some(path) = self.disk.part_path(upload_id, part) else {
                return Err(s3_error!(NoSuchUpload));
            };
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(S3Error::internal_error)?;
            let mut md5 = Md5::new();
            loop {
                let read = file.read(&mut buf).await.map_err(S3Error::internal_error)?;
                if read == 0 {
                    break;
                }
                md5.update(&buf[..read]);
                if let Err(error) = writer.write_all(&buf[..read]).await {
                    return Err(write_failure(error, key, None).await);
                }
                size += read as u64;
            }
            let md5 = md5.finalize();
            if hex(&md5) != part.e_tag {
                return Err(s3_error!(
                    InvalidPart,
                    "part {} was replaced while the upload was being completed; list it again",
                    part.number
                ));
            }
            md5s.update(&md5);
        }
        if let Err(error) = disk::finish(writer).await {
            return Err(write_failure(error, key, None).await);
        }
        let etag = format!("{}-{}", hex(&md5s.finalize()), parts.len());
        Ok((scratch, size, etag))
    }
}
