//! Whether a store honours `If-Match` on DeleteObject: found out, once per bucket and process.
//!
//! The source's delete is limited to what was read by `If-Match` on its ETag. A store that
//! ignores the header (several S3-compatible stores, and older versions of others) deletes
//! whatever is current instead: a newer upload that landed during compression. So before the
//! first delete in a bucket the worker puts a small object of its own under the rule's output
//! prefix, deletes it with an ETag it cannot have, and expects 412; then removes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::store::{
    ContentHeaders, DeleteCondition, Deleted, ErrorClass, Location, ObjectStore, OutputSpec,
    StoreError, WriteCondition, Written,
};

/// What the probe object holds, for whoever finds one a failed cleanup left behind.
const BODY: &[u8] = b"s3-compressor asked whether this store honours If-Match on DeleteObject; \
    this object is safe to delete\n";

/// An ETag no object has: S3's are hex digits, with a `-N` part count for multipart uploads.
const IMPOSSIBLE_ETAG: &str = "s3-compressor-probe-etag";

/// The answers so far, one per bucket; shared by every clone of the worker.
#[derive(Debug, Default)]
pub(crate) struct DeleteProbe {
    buckets: Mutex<HashMap<String, Arc<OnceCell<bool>>>>,
}

impl DeleteProbe {
    /// Whether DeleteObject in `bucket` refuses a delete whose `If-Match` fails. Asked once per
    /// bucket (concurrent callers wait for the one probe); a failed probe is not remembered, so
    /// the next delete asks again.
    pub(crate) async fn honours_if_match(
        &self,
        store: &dyn ObjectStore,
        bucket: &str,
        output_prefix: &str,
    ) -> Result<bool, StoreError> {
        let answer = Arc::clone(
            self.buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(bucket.to_owned())
                .or_default(),
        );
        answer
            .get_or_try_init(|| probe(store, bucket, output_prefix))
            .await
            .copied()
    }
}

async fn probe(
    store: &dyn ObjectStore,
    bucket: &str,
    output_prefix: &str,
) -> Result<bool, StoreError> {
    let location = Location {
        bucket: bucket.to_owned(),
        key: probe_key(output_prefix),
    };
    let spec = OutputSpec {
        location: location.clone(),
        headers: ContentHeaders::of_type("text/plain"),
        metadata: HashMap::new(),
        condition: WriteCondition::Absent,
    };
    let crc =
        super::transfer::encode_crc(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, BODY));
    let written = match store.put(&spec, Bytes::from_static(BODY), &crc).await {
        Ok(written) => written,
        Err(error) => landed(store, &location).await.ok_or(error)?,
    };
    let wrong = DeleteCondition::Matches(IMPOSSIBLE_ETAG.to_owned());
    let (honoured, marker) = match store.delete(&location, &wrong).await {
        Err(error) if error.is(ErrorClass::PreconditionFailed) => (true, None),
        Err(error) => {
            remove(store, &location, &written, None).await;
            return Err(error);
        }
        Ok(Deleted::Now { marker }) => (false, marker),
        Ok(Deleted::AlreadyGone) => (false, None),
    };
    remove(store, &location, &written, marker).await;
    if honoured {
        tracing::info!(bucket, "the store honours If-Match on DeleteObject");
    } else {
        tracing::warn!(
            bucket,
            "the store ignores If-Match on DeleteObject: sources are kept unless the rule sets \
             delete_without_if_match = true"
        );
    }
    Ok(honoured)
}

/// The probe object as a write whose answer was lost left it (the key is this probe's alone),
/// so that a lost answer fails nothing where the write can be seen to have landed.
async fn landed(store: &dyn ObjectStore, location: &Location) -> Option<Written> {
    let info = store.head(location, None).await.ok()??;
    (info.size == BODY.len() as u64).then_some(Written {
        etag: info.etag,
        version_id: info.version_id,
    })
}

/// A key of its own under the output prefix, where the worker may write and delete and where
/// no rule compresses anything; unique, so that concurrent probes never meet.
fn probe_key(output_prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!(
        "{output_prefix}.s3-compressor-probe-{}-{nanos}",
        std::process::id()
    )
}

/// Removes the probe object (by version where the bucket keeps versions, with the marker an
/// ignored condition left); a failure only leaves a small object behind, so it is logged.
async fn remove(
    store: &dyn ObjectStore,
    location: &Location,
    written: &Written,
    marker: Option<String>,
) {
    let conditions = match (&written.version_id, &written.etag) {
        (Some(version), _) => std::iter::once(version.clone())
            .chain(marker)
            .map(DeleteCondition::Version)
            .collect(),
        (None, Some(etag)) => vec![DeleteCondition::Matches(etag.clone())],
        (None, None) => Vec::new(),
    };
    for condition in conditions {
        if let Err(error) = store.delete(location, &condition).await {
            tracing::warn!(
                bucket = %location.bucket,
                key = %location.key,
                %error,
                "the If-Match probe object could not be removed; it is safe to delete"
            );
        }
    }
}
