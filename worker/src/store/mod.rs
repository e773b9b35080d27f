//! The seam between the pipeline and S3: the few calls the pipeline makes, nothing more.
//!
//! Production uses [`S3Store`] over `aws-sdk-s3`, for AWS and any S3-compatible endpoint alike;
//! unit tests use an in-memory store so they can stage the awkward cases (a collision, an
//! object replaced mid-flight) without a server.

mod error;
#[cfg(test)]
pub(crate) mod memory;
mod s3;

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::{ErrorClass, StoreError};
pub(crate) use s3::https_client;
pub use s3::S3Store;

/// Which object a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: Option<u64>,
    /// As S3 names it (`STANDARD_IA`, ...); `None` where the store does not say, which S3
    /// means as STANDARD.
    pub storage_class: Option<String>,
}

impl Listed {
    /// The object to process: whatever version is current when it is read, as for a person's
    /// `compress`; the listed size sizes its place in the memory budget.
    pub fn in_bucket(self, bucket: &str) -> s3_compressor_events::ObjectRef {
        s3_compressor_events::ObjectRef {
            bucket: bucket.to_owned(),
            key: self.key,
            version_id: None,
            size: self.size,
            etag: None,
            sequencer: None,
        }
    }
}

/// What HEAD (or GET) says about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Without quotes.
    pub etag: Option<String>,
    /// `None` in a bucket without versioning.
    pub version_id: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// User metadata, keys lower-case without the `x-amz-meta-` prefix.
    pub metadata: HashMap<String, String>,
    /// The full-object CRC-64/NVME, base64 as S3 sends it, when the store keeps one.
    pub crc64nvme: Option<String>,
    /// The full-object CRC-32, when the object was uploaded with one (not the composite
    /// checksum of a multipart upload, which is a checksum of part checksums).
    pub crc32: Option<String>,
    /// The full-object CRC-32C, SHA-1 and SHA-256, base64, on the same terms as `crc32`.
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// The MD5 of the content, lower-case hex, when the ETag is one: a single-part upload
    /// stored unencrypted or with SSE-S3 (SSE-KMS, SSE-C and multipart uploads have other
    /// ETags).
    pub md5: Option<String>,
    /// A multipart upload's values over its parts, when it is one.
    pub multipart: Option<Multipart>,
    /// The headers it is served with, which a move carries over to its copy.
    pub headers: ContentHeaders,
}

/// The headers an object is served with besides its metadata: what a copy made with new
/// metadata must be given again, or it would be served differently from its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
}

/// What a multipart upload's ETag and composite checksum are computed over: each part's
/// digest, concatenated, digested again. The bytes read can be held against them only once
/// the part boundaries are known, which HEAD and GET do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Multipart {
    /// How many parts, from the `-N` of its ETag (or of its composite checksum).
    pub parts: u32,
    /// The ETag without its `-N`, lower-case hex, when it is the MD5 of the parts' MD5s: not
    /// under SSE-KMS or SSE-C, where it is another value of the same shape.
    pub etag_md5: Option<String>,
    /// The composite checksums the upload carries, base64 without the `-N`.
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// The sizes of its parts in order, once [`ObjectStore::part_sizes`] told them (and they
    /// add up to the object); empty until then.
    pub part_sizes: Vec<u64>,
}

/// An object being read: what it is, and its bytes as they arrive.
pub struct Download {
    pub info: ObjectInfo,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A write that must not clobber what another writer put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Only if no object has the key (`If-None-Match: *`).
    Absent,
    /// Only if the object still has this ETag (`If-Match`): replaces one we have inspected.
    Matches(String),
}

/// How an output object is described when it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub location: Location,
    /// A compressed output's format's type; a moved object's own headers, its type among them.
    pub headers: ContentHeaders,
    pub metadata: HashMap<String, String>,
    pub condition: WriteCondition,
}

impl ContentHeaders {
    /// Only a content type, as a compressed output (or the worker's own object) has.
    pub fn of_type(content_type: &str) -> Self {
        Self {
            content_type: Some(content_type.to_owned()),
            ..Self::default()
        }
    }
}

/// The object a server-side copy reads: that version, and only while it has that ETag, so
/// that a newer upload landing meanwhile is never what is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub location: Location,
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

/// What a completed server-side copy reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub written: Written,
    /// The version the store says it copied, where it says one.
    pub source_version_id: Option<String>,
}

/// What a completed write reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

/// An uploaded part, as `complete_multipart` needs it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// From 1.
    pub number: i32,
    pub etag: String,
    /// The part's CRC-64/NVME as the store computed it, when it reports one.
    pub crc64nvme: Option<String>,
}

/// What a delete may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteCondition {
    /// Exactly this version, for good: only for an output of our own that failed its proof.
    Version(String),
    /// The current object, only while it still has this ETag (`If-Match`), so an upload that
    /// replaced it survives. In a versioned bucket this leaves a delete marker and keeps the
    /// version, recoverable.
    Matches(String),
}

/// What a delete found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted; in a versioned bucket, `marker` is the delete marker's version id, which is
    /// what a restore removes.
    Now { marker: Option<String> },
    /// Nothing was there any more: another delivery got to it first.
    AlreadyGone,
}

/// The S3 calls the pipeline makes.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Starts reading an object, or a given version of it.
    async fn get(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Download, StoreError>;

    /// `Ok(None)` when there is no such object (or version).
    async fn head(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectInfo>, StoreError>;

    /// A single-request write, with the full-object CRC-64/NVME for the store to check.
    async fn put(
        &self,
        spec: &OutputSpec,
        body: Bytes,
        crc64nvme: &str,
    ) -> Result<Written, StoreError>;

    /// Starts a multipart upload whose parts carry CRC-64/NVME checksums; returns its id.
    async fn create_multipart(&self, spec: &OutputSpec) -> Result<String, StoreError>;

    /// Uploads part `number` (from 1).
    async fn upload_part(
        &self,
        location: &Location,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, StoreError>;

    /// Completes an upload from its parts in order, under the spec's write condition.
    async fn complete_multipart(
        &self,
        spec: &OutputSpec,
        upload_id: &str,
        parts: Vec<Part>,
        crc64nvme: &str,
    ) -> Result<Written, StoreError>;

    async fn abort_multipart(&self, location: &Location, upload_id: &str)
        -> Result<(), StoreError>;

    /// The ids of the multipart uploads open on exactly this key.
    async fn open_uploads(&self, location: &Location) -> Result<Vec<String>, StoreError>;

    /// The id of the newest version of exactly this key that holds content (`null` for one
    /// written before versioning was enabled), skipping delete markers: whether a version
    /// was superseded by data or only hidden by a delete. `None` when no version holds content.
    async fn newest_content_version(
        &self,
        location: &Location,
    ) -> Result<Option<String>, StoreError>;

    /// The sizes of a multipart `source`'s parts, in order, as the store tells them with one
    /// request; `Err` says why they are not known (the store does not tell, or failed to), for
    /// the log: the read is then held against its size alone.
    async fn part_sizes(
        &self,
        location: &Location,
        source: &ObjectInfo,
    ) -> Result<Vec<u64>, String>;

    /// Copies `source` whole, server-side, to the spec's location with the spec's headers and
    /// metadata, under its write condition; the store computes the copy's CRC-64/NVME.
    async fn copy(&self, source: &CopySource, spec: &OutputSpec) -> Result<Copied, StoreError>;

    /// Copies the bytes `range` of `source` (end exclusive), server-side, as part `number`
    /// (from 1) of a multipart upload started by [`ObjectStore::create_multipart`].
    async fn copy_part(
        &self,
        source: &CopySource,
        location: &Location,
        upload_id: &str,
        number: i32,
        range: std::ops::Range<u64>,
    ) -> Result<Part, StoreError>;

    /// Deletes under `condition`. An object that is already gone is not an error.
    async fn delete(
        &self,
        location: &Location,
        condition: &DeleteCondition,
    ) -> Result<Deleted, StoreError>;
}
