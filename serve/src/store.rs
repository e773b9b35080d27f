//! `s3s_fs::FileSystem`, plus what the worker needs from S3 and `s3s-fs` does not do.
//!
//! Every operation a normal client uses is handed to `s3s-fs`. Around that:
//! - every successful PutObject and CompleteMultipartUpload is announced as an [`Upload`];
//! - reads, writes and deletes of one key are serialized (see [`crate::locks`]);
//! - DeleteObject and DeleteObjects honour `If-Match` (and `x-amz-if-match-size`), GetObject and
//!   HeadObject honour `If-Match`, `If-None-Match` and the date conditions;
//! - keys a directory cannot hold faithfully are refused (see [`crate::keys`]), and so is a key
//!   that would be both an object and a folder, or too long for the file names `s3s-fs` makes
//!   of it (KeyTooLongError; see [`crate::layout`]);
//! - a malformed Content-MD5 is InvalidDigest, and a part whose Content-MD5 does not match is
//!   BadDigest (`s3s-fs` checks a PutObject's itself, and its checksums);
//! - a write that finds the disk full is answered 503 ServiceUnavailable, saying so, once the
//!   rest of its body was read, and leaves nothing behind (see [`crate::error::disk_full`]);
//! - stale checksums and metadata are not inherited by a new object (see [`crate::layout`]);
//! - listings honour `encoding-type=url` (see [`crate::listing`]);
//! - ListMultipartUploads, which `s3s-fs` lacks, is answered from its records;
//! - a whole-object GetObject streams the file in 1 MiB reads (see [`whole_file_body`]).

use std::sync::Arc;

use base64::Engine as _;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::body;
use crate::completed::{Completed, Completion};
use crate::conditions::{etag_matches, ReadConditions};
use crate::error::{disk_full, is_disk_full};
use crate::keys::check_key;
use crate::layout::Layout;
use crate::listing;
use crate::locks::KeyLocks;
use crate::{Removal, Upload};

/// Bytes per read when a whole object is streamed.
const READ_CHUNK: usize = 1024 * 1024;

/// MD5 of nothing: the ETag S3 gives a folder marker (`incoming/`).
const EMPTY_ETAG: &str = "d41d8cd98f00b204e9800998ecf8427e";

#[derive(Debug)]
pub(crate) struct Store {
    fs: FileSystem,
    layout: Layout,
    locks: Arc<KeyLocks>,
    uploads: mpsc::Sender<Upload>,
    removals: mpsc::Sender<Removal>,
    /// See [`crate::ServeOptions::announce_prefixes`]; removals are filtered the same way.
    announce_prefixes: Vec<String>,
    completed: Completed,
}

impl Store {
    pub(crate) fn new(
        fs: FileSystem,
        layout: Layout,
        uploads: mpsc::Sender<Upload>,
        removals: mpsc::Sender<Removal>,
        announce_prefixes: Vec<String>,
    ) -> Self {
        Self {
            fs,
            layout,
            locks: Arc::default(),
            uploads,
            removals,
            announce_prefixes,
            completed: Completed::default(),
        }
    }

    /// Size and ETag of the object as stored now, read through `s3s-fs` itself so they are
    /// exactly what a HeadObject would answer. Call with the key's lock held.
    async fn stat<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
    ) -> S3Result<HeadObjectOutput> {
        let input = HeadObjectInput {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            ..Default::default()
        };
        Ok(self.fs.head_object(sibling(req, input)).await?.output)
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
    /// as [`Self::announce`] does. Folder markers are no objects and are not announced.
    async fn announce_removal(&self, bucket: &str, key: String) {
        if key.ends_with('/') || !self.announced(&key) {
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

    /// Refuses to write `key` where the directory tree cannot hold it (see [`Layout::make_room`]).
    ///
    /// A bucket that does not exist is `NoSuchBucket`, as on S3: `s3s-fs` would make its
    /// folder, and so the bucket, on the way to the object's file.
    async fn check_writable(&self, bucket: &str, key: &str) -> S3Result<()> {
        if !self.layout.has_bucket(bucket).await {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist; create it first (aws s3 mb s3://{bucket})"
            ));
        }
        if let Some(why) = self.layout.name_problem(bucket, key) {
            return Err(s3_error!(KeyTooLongError, "{why}"));
        }
        match self.layout.make_room(bucket, key).await {
            None => Ok(()),
            Some(why) => Err(s3_error!(
                InvalidRequest,
                "the embedded S3 server stores objects as files and cannot write {key:?}: {why}"
            )),
        }
    }

    /// S3's answer to a part, a listing, an abort or a completion of an upload that is not
    /// open; `s3s-fs` says `AccessDenied` (or `InvalidRequest` for an ID it could not parse).
    async fn check_upload(&self, upload_id: &str) -> S3Result<()> {
        if self.layout.has_upload(upload_id).await {
            return Ok(());
        }
        Err(s3_error!(
            NoSuchUpload,
            "The specified multipart upload does not exist: it was completed or aborted, or the \
             upload ID is wrong"
        ))
    }

    /// Keeps the ETag a part was stored with, for [`Self::check_parts`]. A part whose ETag
    /// cannot be kept is refused, so that the client uploads it again rather than find out at
    /// the completion.
    async fn record_part_etag(
        &self,
        upload_id: &str,
        part_number: i32,
        etag: Option<&ETag>,
    ) -> S3Result<()> {
        let Some(etag) = etag else {
            return Err(s3_error!(
                InternalError,
                "the part was stored without an ETag"
            ));
        };
        self.layout
            .record_part_etag(upload_id, part_number, etag.value())
            .await
            .map_err(|error| {
                s3_error!(
                    InternalError,
                    "the part's ETag could not be recorded: {error}; upload the part again"
                )
            })
    }

    /// S3 refuses a completion whose list names a part that was not uploaded, or with another
    /// ETag than it was uploaded with (`InvalidPart`); `s3s-fs` compares no ETag, and would
    /// end the upload half-way through a list it then finds wrong.
    async fn check_parts(
        &self,
        upload_id: &str,
        upload: Option<&CompletedMultipartUpload>,
    ) -> S3Result<()> {
        let parts = upload.and_then(|u| u.parts.as_deref()).unwrap_or_default();
        for part in parts {
            let Some(number) = part.part_number else {
                return Err(s3_error!(
                    InvalidPart,
                    "a part in the list has no part number"
                ));
            };
            let Some(uploaded) = self.layout.part_etag(upload_id, number).await else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} was not uploaded, or its upload did not finish"
                ));
            };
            let listed = part
                .e_tag
                .as_ref()
                .map(|etag| etag.value().trim_matches('"'));
            if listed != Some(uploaded.as_str()) {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s ETag is not the one it was uploaded with, {uploaded:?}"
                ));
            }
        }
        Ok(())
    }

    /// `s3s-fs` would answer a key naming a folder of objects with an internal error, or open
    /// the directory and fail while streaming; on S3 there is simply no such object.
    async fn check_not_folder(&self, bucket: &str, key: &str) -> S3Result<()> {
        if self.layout.is_folder(bucket, key).await {
            return Err(s3_error!(NoSuchKey));
        }
        Ok(())
    }
}

/// A request for another operation on behalf of `req`: same caller, same identity, no headers
/// (`s3s-fs` reads only the typed input and the credentials).
/// How many times a listing walks the bucket's folder before its error stands.
const LIST_WALKS: usize = 5;

/// s3s-fs lists by walking the bucket's folder, and a file deleted during the walk (the worker
/// deletes sources and failure reports all the time) fails it with an internal error, where S3
/// lists what is there. The walk is taken again, a few times, before that error is answered.
async fn walked<I, O, Listing>(
    req: S3Request<I>,
    list: impl Fn(S3Request<I>) -> Listing,
) -> S3Result<S3Response<O>>
where
    I: Clone,
    Listing: std::future::Future<Output = S3Result<S3Response<O>>>,
{
    let mut walks = 1;
    loop {
        match list(sibling(&req, req.input.clone())).await {
            Err(error) if *error.code() == S3ErrorCode::InternalError && walks < LIST_WALKS => {
                walks += 1;
            }
            listed => return listed,
        }
    }
}

fn sibling<T, U>(req: &S3Request<T>, input: U) -> S3Request<U> {
    S3Request {
        input,
        method: req.method.clone(),
        uri: req.uri.clone(),
        headers: Default::default(),
        extensions: Default::default(),
        credentials: req.credentials.clone(),
        region: req.region.clone(),
        service: req.service.clone(),
        trailing_headers: None,
    }
}

/// The bucket is not versioned: every object's version is `null`. `s3s-fs` ignores `versionId`,
/// so a GET would return, and a DELETE remove, the current object whatever version was named.
fn names_another_version(version_id: Option<&str>) -> bool {
    version_id.is_some_and(|v| v != "null")
}

fn no_such_version() -> S3Error {
    s3_error!(
        NoSuchVersion,
        "the embedded S3 server keeps no versions; only versionId \"null\" (the current object) exists"
    )
}

fn size_of(head: &HeadObjectOutput) -> Option<u64> {
    head.content_length.and_then(|n| u64::try_from(n).ok())
}

fn copy_source_object(source: &CopySource) -> S3Result<Option<(&str, &str)>> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if names_another_version(version_id.as_deref()) {
                return Err(no_such_version());
            }
            Ok(Some((bucket, key)))
        }
        _ => Ok(None),
    }
}

/// Hands the request's body over through [`body::share`], keeping a handle on what is left
/// of it.
fn share_body(body: &mut Option<StreamingBlob>) -> Option<body::Leftover> {
    let (shared, leftover) = body::share(body.take()?);
    *body = Some(shared);
    Some(leftover)
}

/// What a client is told of a write `s3s-fs` failed: a full disk is said in words (see
/// [`disk_full`]), after the rest of the body was read so that the client gets the answer.
async fn write_failure(error: S3Error, key: &str, leftover: Option<body::Leftover>) -> S3Error {
    if !is_disk_full(&error) {
        return error;
    }
    let drained = match leftover {
        Some(leftover) => leftover.drain().await,
        None => 0,
    };
    tracing::warn!(%key, drained, %error, "no space left to store an upload; refused it");
    disk_full(key)
}

/// A Content-MD5 that is not the base64 of 16 bytes is InvalidDigest, as on S3 (s3s-fs would
/// answer InvalidArgument, or BadDigest for the wrong length). Returns the MD5 in hex.
fn check_content_md5(content_md5: Option<&str>) -> S3Result<Option<String>> {
    let Some(content_md5) = content_md5 else {
        return Ok(None);
    };
    match base64::engine::general_purpose::STANDARD.decode(content_md5) {
        Ok(md5) if md5.len() == 16 => Ok(Some(md5.iter().map(|b| format!("{b:02x}")).collect())),
        _ => Err(s3_error!(
            InvalidDigest,
            "the Content-MD5 you specified is not valid: it must be the base64 of a 16-byte MD5"
        )),
    }
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

#[async_trait::async_trait]
impl S3 for Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn list_objects(
        &self,
        mut req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::no_empty_delimiter(&mut req.input.delimiter);
        let mut response = walked(req, |req| self.fs.list_objects(req)).await?;
        listing::empty_for_slash_prefix_v1(&mut response.output);
        listing::encode_v1(&mut response.output);
        Ok(response)
    }

    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::no_empty_delimiter(&mut req.input.delimiter);
        let mut response = walked(req, |req| self.fs.list_objects_v2(req)).await?;
        listing::empty_for_slash_prefix_v2(&mut response.output);
        listing::encode_v2(&mut response.output);
        Ok(response)
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let mut req = req;
        check_key(&req.input.key)?;
        check_content_md5(req.input.content_md5.as_deref())?;
        let bucket = req.input.bucket.clone();
        let key = req.input.key.clone();
        let guard = self.locks.lock(&bucket, &key).await;
        self.check_writable(&bucket, &key).await?;
        let head_req = sibling(&req, ());
        let leftover = share_body(&mut req.input.body);
        let previous = self.layout.keep_previous(&bucket, &key).await;
        let response = match self.fs.put_object(req).await {
            Ok(response) => {
                previous.discard().await;
                response
            }
            Err(error) => {
                // s3s-fs checks Content-MD5 and the checksums after the file is in place, and
                // may have written the new object's metadata before a write failed.
                let was_absent = previous.is_absent();
                previous.restore().await;
                if was_absent {
                    self.layout.forget_object(&bucket, &key).await;
                }
                return Err(write_failure(error, &key, leftover).await);
            }
        };
        let (size, etag) = if key.ends_with('/') {
            (Some(0), Some(EMPTY_ETAG.to_owned()))
        } else {
            let etag = response.output.e_tag.clone().map(ETag::into_value);
            match self.stat(&head_req, &bucket, &key).await {
                Ok(head) => (size_of(&head), etag),
                Err(error) => {
                    tracing::warn!(%bucket, %key, %error, "stored object could not be read back");
                    (None, etag)
                }
            }
        };
        // Released before announcing: a full queue must not keep readers of this key waiting.
        drop(guard);
        self.announce(Upload {
            bucket,
            key,
            size,
            etag,
        })
        .await;
        Ok(response)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        check_key(&req.input.key)?;
        if names_another_version(req.input.version_id.as_deref()) {
            return Err(no_such_version());
        }
        // Held until the file is open and its ETag read, not while the body streams: an open
        // file keeps its bytes even if a new upload replaces it.
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        self.check_not_folder(&req.input.bucket, &req.input.key)
            .await?;
        let input = &req.input;
        let conditions = ReadConditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        };
        if !conditions.is_empty() {
            let head = self.stat(&req, &input.bucket, &input.key).await?;
            conditions.check(head.e_tag.as_ref(), head.last_modified.as_ref())?;
        }
        let bucket = input.bucket.clone();
        // Opened under the same lock as s3s-fs's own open, so both see the same file.
        let whole_file = match input.range {
            None => self
                .layout
                .open_object(&input.bucket, &input.key)
                .await
                .ok(),
            Some(_) => None,
        };
        let mut response = match self.fs.get_object(req).await {
            Ok(response) => response,
            // s3s-fs answers NoSuchKey in a bucket that does not exist, where S3 says
            // NoSuchBucket: the bucket name is what the client got wrong.
            Err(error)
                if *error.code() == S3ErrorCode::NoSuchKey
                    && !self.layout.has_bucket(&bucket).await =>
            {
                return Err(s3_error!(NoSuchBucket));
            }
            Err(error) => return Err(error),
        };
        if let (Some(file), Some(length)) = (whole_file, response.output.content_length) {
            response.output.body = Some(whole_file_body(file, length));
        }
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        check_key(&req.input.key)?;
        if names_another_version(req.input.version_id.as_deref()) {
            return Err(no_such_version());
        }
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        self.check_not_folder(&req.input.bucket, &req.input.key)
            .await?;
        let input = req.input.clone();
        let response = self.fs.head_object(req).await?;
        let conditions = ReadConditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        };
        conditions.check(
            response.output.e_tag.as_ref(),
            response.output.last_modified.as_ref(),
        )?;
        Ok(response)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        check_key(&req.input.key)?;
        if req.input.if_match_last_modified_time.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "the embedded S3 server does not support x-amz-if-match-last-modified-time; use If-Match"
            ));
        }
        let bucket = req.input.bucket.clone();
        let key = req.input.key.clone();
        let guard = self.locks.lock(&bucket, &key).await;
        let conditional = req.input.if_match.is_some() || req.input.if_match_size.is_some();
        if names_another_version(req.input.version_id.as_deref()) {
            // As S3 for a version that does not exist: nothing to delete, and certainly not
            // the current object.
            if conditional {
                return Err(no_such_version());
            }
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        if self.layout.is_folder(&bucket, &key).await {
            // No object has this key; S3 answers 204, or 404 to a conditional delete.
            if conditional {
                return Err(s3_error!(NoSuchKey));
            }
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }

        if conditional {
            // As S3: a conditional delete of a missing object is 404, not the usual 204.
            let head = self.stat(&req, &bucket, &key).await?;
            if let Some(condition) = &req.input.if_match {
                if !etag_matches(condition, head.e_tag.as_ref()) {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "the object's ETag does not match If-Match; it was not deleted"
                    ));
                }
            }
            if let Some(expected) = req.input.if_match_size {
                if head.content_length != Some(expected) {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "the object's size does not match x-amz-if-match-size; it was not deleted"
                    ));
                }
            }
        }

        let response = self.fs.delete_object(req).await?;
        if !key.ends_with('/') {
            self.layout.forget_object(&bucket, &key).await;
        }
        // Released before announcing: a full queue must not keep users of this key waiting.
        drop(guard);
        self.announce_removal(&bucket, key).await;
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let mut req = req;
        let bucket = req.input.bucket.clone();
        let requested = std::mem::take(&mut req.input.delete.objects);
        let guards = self
            .locks
            .lock_all(&bucket, requested.iter().map(|o| o.key.as_str()))
            .await;

        let mut refused = Vec::new();
        let mut absent = Vec::new();
        let mut allowed = Vec::with_capacity(requested.len());
        for object in requested {
            if let Err(error) = check_key(&object.key) {
                let message = error.message().unwrap_or_default().to_owned();
                refused.push(delete_refusal(&object.key, error.code().clone(), &message));
                continue;
            }
            if object.last_modified_time.is_some() {
                refused.push(delete_refusal(
                    &object.key,
                    S3ErrorCode::NotImplemented,
                    "the embedded S3 server does not support LastModifiedTime conditions; use ETag",
                ));
                continue;
            }
            let conditional = object.e_tag.is_some() || object.size.is_some();
            let folder = self.layout.is_folder(&bucket, &object.key).await;
            if names_another_version(object.version_id.as_deref()) || folder {
                if conditional {
                    refused.push(delete_refusal(
                        &object.key,
                        S3ErrorCode::NoSuchKey,
                        "the object (or that version of it) does not exist",
                    ));
                } else {
                    absent.push(DeletedObject {
                        key: Some(object.key),
                        version_id: object.version_id,
                        ..Default::default()
                    });
                }
                continue;
            }
            if conditional {
                let head = match self.stat(&req, &bucket, &object.key).await {
                    Ok(head) => head,
                    Err(error) => {
                        let message = error
                            .message()
                            .unwrap_or("the object does not exist")
                            .to_owned();
                        refused.push(delete_refusal(&object.key, error.code().clone(), &message));
                        continue;
                    }
                };
                let etag_ok = object.e_tag.as_ref().is_none_or(|expected| {
                    head.e_tag.as_ref().is_some_and(|e| e.strong_cmp(expected))
                });
                let size_ok = object
                    .size
                    .is_none_or(|size| head.content_length == Some(size));
                if !(etag_ok && size_ok) {
                    refused.push(delete_refusal(
                        &object.key,
                        S3ErrorCode::PreconditionFailed,
                        "the object does not match the given ETag or size; it was not deleted",
                    ));
                    continue;
                }
            }
            allowed.push(object);
        }

        let keys: Vec<String> = allowed.iter().map(|o| o.key.clone()).collect();
        req.input.delete.objects = allowed;
        let mut response = self.fs.delete_objects(req).await?;
        for key in keys.iter().filter(|k| !k.ends_with('/')) {
            self.layout.forget_object(&bucket, key).await;
        }
        drop(guards);
        let removed: Vec<String> = response
            .output
            .deleted
            .iter()
            .flatten()
            .filter_map(|deleted| deleted.key.clone())
            .collect();
        for key in removed {
            self.announce_removal(&bucket, key).await;
        }
        if !absent.is_empty() {
            response
                .output
                .deleted
                .get_or_insert_with(Vec::new)
                .extend(absent);
        }
        if !refused.is_empty() {
            response
                .output
                .errors
                .get_or_insert_with(Vec::new)
                .extend(refused);
        }
        Ok(response)
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        check_key(&req.input.key)?;
        let Some((src_bucket, src_key)) = copy_source_object(&req.input.copy_source)? else {
            return self.fs.copy_object(req).await;
        };
        check_key(src_key)?;
        // Both keys, in (bucket, key) order like every other multi-key lock, so none deadlock.
        let source = (src_bucket, src_key);
        let target = (req.input.bucket.as_str(), req.input.key.as_str());
        let replaces_metadata = req
            .input
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
        let _first = self.locks.lock(first.0, first.1).await;
        let _second = if first == second {
            None
        } else {
            Some(self.locks.lock(second.0, second.1).await)
        };
        self.check_not_folder(src_bucket, src_key).await?;
        self.check_writable(&req.input.bucket, &req.input.key)
            .await?;
        let key = req.input.key.clone();
        match self.fs.copy_object(req).await {
            Ok(response) => Ok(response),
            Err(error) => Err(write_failure(error, &key, None).await),
        }
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        check_key(&req.input.key)?;
        // Checked again on completion; refusing now spares uploading every part first.
        self.check_writable(&req.input.bucket, &req.input.key)
            .await?;
        let key = req.input.key.clone();
        match self.fs.create_multipart_upload(req).await {
            Ok(response) => Ok(response),
            Err(error) => Err(write_failure(error, &key, None).await),
        }
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let mut req = req;
        let content_md5 = check_content_md5(req.input.content_md5.as_deref())?;
        self.check_upload(&req.input.upload_id).await?;
        let (upload_id, part_number) = (req.input.upload_id.clone(), req.input.part_number);
        let key = req.input.key.clone();
        let leftover = share_body(&mut req.input.body);
        let response = match self.fs.upload_part(req).await {
            Ok(response) => response,
            Err(error) => return Err(write_failure(error, &key, leftover).await),
        };
        // s3s-fs ignores Content-MD5 on parts; its ETag is the part's MD5. A part refused here
        // is replaced by the client's retry of the same part number.
        if let Some(expected) = content_md5 {
            let stored = response.output.e_tag.as_ref().map(|etag| etag.value());
            if stored != Some(expected.as_str()) {
                return Err(s3_error!(
                    BadDigest,
                    "the Content-MD5 you specified did not match what was received"
                ));
            }
        }
        self.record_part_etag(&upload_id, part_number, response.output.e_tag.as_ref())
            .await?;
        Ok(response)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.check_upload(&req.input.upload_id).await?;
        let (upload_id, part_number) = (req.input.upload_id.clone(), req.input.part_number);
        let response = match copy_source_object(&req.input.copy_source)? {
            None => self.fs.upload_part_copy(req).await?,
            Some((src_bucket, src_key)) => {
                check_key(src_key)?;
                let _guard = self.locks.lock(src_bucket, src_key).await;
                self.check_not_folder(src_bucket, src_key).await?;
                self.fs.upload_part_copy(req).await?
            }
        };
        let etag = response
            .output
            .copy_part_result
            .as_ref()
            .and_then(|result| result.e_tag.as_ref());
        self.record_part_etag(&upload_id, part_number, etag).await?;
        Ok(response)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.check_upload(&req.input.upload_id).await?;
        self.fs.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.check_upload(&req.input.upload_id).await?;
        let upload_id = req.input.upload_id.clone();
        let response = self.fs.abort_multipart_upload(req).await?;
        self.layout.forget_part_etags(&upload_id).await;
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        check_key(&req.input.key)?;
        let bucket = req.input.bucket.clone();
        let key = req.input.key.clone();
        let guard = self.locks.lock(&bucket, &key).await;
        let upload_id = req.input.upload_id.clone();
        if let Some(done) = self.completed.find(&upload_id, &bucket, &key) {
            return Ok(S3Response::new(CompleteMultipartUploadOutput {
                bucket: Some(done.bucket),
                key: Some(done.key),
                e_tag: Some(ETag::Strong(done.etag)),
                ..Default::default()
            }));
        }
        self.check_writable(&bucket, &key).await?;
        self.check_upload(&upload_id).await?;
        self.check_parts(&upload_id, req.input.multipart_upload.as_ref())
            .await?;
        let head_req = sibling(&req, ());
        let mut response = match self.fs.complete_multipart_upload(req).await {
            Ok(response) => response,
            Err(error) => {
                if is_disk_full(&error) {
                    // s3s-fs ended the upload before writing the object, and removed only the
                    // parts it had copied: the others would take the space for good.
                    self.layout.remove_parts(&upload_id).await;
                    self.layout.forget_part_etags(&upload_id).await;
                }
                return Err(write_failure(error, &key, None).await);
            }
        };
        // `s3s-fs` has finished the object when it returns and puts the result in a future that
        // s3s would await while writing the response. Resolve it here, so the upload is announced
        // whether or not the client stays to read the answer.
        if let Some(future) = response.output.future.take() {
            response.output = future.await?;
        }
        let etag = response.output.e_tag.clone().map(ETag::into_value);
        self.layout.forget_part_etags(&upload_id).await;
        if let Some(etag) = &etag {
            if let Err(error) = self.layout.reset_internal_info(&bucket, &key, etag).await {
                tracing::warn!(%bucket, %key, %error, "could not clear the checksums the key's previous object left");
            }
            self.completed.remember(
                &upload_id,
                Completion {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    etag: etag.clone(),
                },
            );
        }
        let size = match self.stat(&head_req, &bucket, &key).await {
            Ok(head) => size_of(&head),
            Err(error) => {
                tracing::warn!(%bucket, %key, %error, "completed object could not be read back");
                None
            }
        };
        drop(guard);
        self.announce(Upload {
            bucket,
            key,
            size,
            etag,
        })
        .await;
        Ok(response)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let head_bucket = HeadBucketInput {
            bucket: req.input.bucket.clone(),
            expected_bucket_owner: None,
        };
        // Answers NoSuchBucket exactly as s3s-fs does everywhere else.
        self.fs.head_bucket(sibling(&req, head_bucket)).await?;
        let input = req.input;
        if input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
            return Err(s3_error!(
                NotImplemented,
                "the embedded S3 server lists multipart uploads without a delimiter only"
            ));
        }

        let mut uploads = self
            .layout
            .pending_uploads(&input.bucket)
            .await
            .map_err(S3Error::internal_error)?;
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
                initiated: u.initiated.map(Timestamp::from),
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

/// The body of a whole-object read. s3s-fs reads 4 KiB at a time, each read a hop to tokio's
/// blocking pool: streaming 1 GiB cost seconds of CPU in thread hand-offs alone, taken from
/// the worker compressing on the same machine. 1 MiB reads make that 256 times rarer.
fn whole_file_body(file: tokio::fs::File, length: i64) -> StreamingBlob {
    let length = u64::try_from(length).unwrap_or(0);
    StreamingBlob::wrap(ReaderStream::with_capacity(file.take(length), READ_CHUNK))
}
