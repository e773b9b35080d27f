/// A completed upload: a PutObject or CompleteMultipartUpload that succeeded.
///
/// Sent once per upload, after the object is in place and readable, so a consumer may fetch it
/// at once. Parts of a multipart upload are not uploads; only its completion is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub bucket: String,
    /// The key as the client sent it, decoded (`incoming/a b.csv`, not `incoming/a%20b.csv`).
    pub key: String,
    /// The object's size in bytes; `None` only if it could not be read back after the write.
    pub size: Option<u64>,
    /// The ETag as S3 reports it, without the quotes: the MD5 in hex for PutObject,
    /// `MD5-OF-PART-MD5S-PARTCOUNT` for a multipart upload. Pass it as `If-Match` to delete or
    /// read exactly this version.
    pub etag: Option<String>,
}

/// A key removed by DeleteObject or DeleteObjects, like S3's `ObjectRemoved` event: what lets a
/// consumer drop what it keeps about an object that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub bucket: String,
    pub key: String,
}
