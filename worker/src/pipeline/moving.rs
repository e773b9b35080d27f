//! A move: an object whose compression would not pay, copied unchanged and server-side to
//! the output prefix under its own name, proven identical, then its source deleted.
//!
//! ```text
//! judged (first bytes read, or its size) -> the source's CRC-64/NVME (stored, or the source
//!   streamed through it) -> CopyObject, or UploadPartCopy over byte ranges above the
//!   threshold (copy-source If-Match on the ETag judged, that version, the output's write
//!   condition) -> verify (HEAD: size, CRC-64/NVME equal to the source's, source identity)
//!   -> delete the source (the compression's own delete: If-Match, recoverable)
//! ```
//! No byte of a source that keeps a full-object CRC-64/NVME is downloaded; one that keeps
//! another checksum (or none) is read once, held against what it keeps, for its CRC-64/NVME.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use s3_compressor_config::NotWorthIt;
use s3_compressor_events::ObjectRef;

use super::identity::SourceIdentity;
use super::{collision, failed, proof, read_failed, source_gone, source_of, transfer, Stop};
use crate::outcome::{Outcome, OutputProof, Proof, SourceProof};
use crate::store::{
    CopySource, ErrorClass, Location, ObjectInfo, ObjectStore, OutputSpec, Part, StoreError,
    WriteCondition, Written,
};
use crate::{Plan, Worker};

/// Parts copied at once: a part copy holds no memory here, only a request.
const COPY_PARTS_IN_FLIGHT: usize = 8;

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

impl Worker {
    /// Moves `object` to the plan's output key, for `reason`. `judged` is the source as the
    /// read that judged its content described it; `None` for an object spared by the size
    /// its event gave, which is then asked with a HEAD.
    pub(super) async fn move_object(
        &self,
        object: &ObjectRef,
        plan: &Plan<'_>,
        reason: NotWorthIt,
        judged: Option<ObjectInfo>,
    ) -> Outcome {
        match self.try_move_object(object, plan, reason, judged).await {
            Ok(outcome) | Err(outcome) => *outcome,
        }
    }

    async fn try_move_object(
        &self,
        object: &ObjectRef,
        plan: &Plan<'_>,
        reason: NotWorthIt,
        judged: Option<ObjectInfo>,
    ) -> Result<Box<Outcome>, Stop> {
        let source = source_of(object);
        let requested = object.version_id.as_deref();
        let output = Location {
            bucket: object.bucket.clone(),
            key: plan.output_key.clone(),
        };
        let judged = async {
            match judged {
                Some(info) => Ok(Some(info)),
                None => self.store.head(&source, requested).await,
            }
        };
        let (existing_output, current, judged) = tokio::join!(
            self.store.head(&output, None),
            self.current_if_named(&source, requested),
            judged,
        );
        let existing_output = existing_output.map_err(failed)?;
        let Some(mut info) = judged.map_err(failed)? else {
            return Err(Box::new(source_gone(
                &source,
                &output,
                existing_output.as_ref(),
            )));
        };
        let identity = SourceIdentity::read(&source.key, &info, requested);

        // A copy already made from this very source (a repeated or concurrent delivery, or a
        // run stopped before its delete) is proven as a new one is, then the source deleted.
        let made = existing_output.as_ref().filter(|info| identity.made(info));
        if made.is_none() {
            if let Some(current) = current.map_err(failed)? {
                self.ensure_current(&source, &output, &identity, current)
                    .await?;
            }
        }
        let target = match (&existing_output, made) {
            (_, Some(existing)) => Target::Made(written_as(existing)),
            (None, None) => Target::Write(WriteCondition::Absent),
            (Some(existing), None) if identity.same_key(existing) => {
                // Another upload of the key was moved or compressed before: replace that
                // output, only that one, and only with the key's current version.
                if requested.is_none() {
                    self.ensure_still_current(&source, &output, &identity)
                        .await?;
                }
                Target::Write(WriteCondition::Matches(
                    existing.etag.clone().unwrap_or_default(),
                ))
            }
            (Some(existing), None) => return Err(Box::new(collision(&output, existing))),
        };

        // The value the copy must show: the source's stored CRC-64/NVME, or its bytes'.
        self.learn_parts(&source, &mut info).await;
        let (crc64nvme, source_proof) = self.crc64nvme_of_source(&source, &identity, &info).await?;

        let written = match target {
            Target::Made(written) => written,
            Target::Write(condition) => {
                let metadata = identity
                    .output_metadata(&plan.rule.prefix, self.routes.config_hash())
                    .map_err(|error| Box::new(Outcome::permanent(error.to_string())))?;
                // The source's own metadata goes with it; the identity wins a clash of names.
                let metadata: HashMap<String, String> =
                    info.metadata.clone().into_iter().chain(metadata).collect();
                let spec = OutputSpec {
                    location: output.clone(),
                    headers: info.headers.clone(),
                    metadata,
                    condition,
                };
                let copy_source = CopySource {
                    location: source.clone(),
                    version_id: identity.version_id().map(str::to_owned),
                    etag: info.etag.clone(),
                };
                match self.copy(&copy_source, &spec, info.size, &crc64nvme).await {
                    Ok(written) => written,
                    Err(error) => {
                        self.after_failed_copy(&source, &identity, &output, error)
                            .await?
                    }
                }
            }
        };

        let output_proof = self
            .verify_copy(&source, &output, &written, &identity, info.size, &crc64nvme)
            .await?;
        let fate = self.delete_source(plan, &source, &identity).await?;
        Ok(Box::new(Outcome::Moved {
            output_key: output.key,
            reason,
            bytes: info.size,
            source: fate,
            proof: Proof {
                source: source_proof,
                output: output_proof,
            },
        }))
    }

    /// The source's full-object CRC-64/NVME and what it rests on: the value the store keeps,
    /// with no byte read; else the source read whole (that version, or while it has the ETag
    /// judged) and held against what it does keep (another checksum, the MD5 its ETag is, or
    /// its size alone), with its CRC-64/NVME computed on the way.
    async fn crc64nvme_of_source(
        &self,
        source: &Location,
        identity: &SourceIdentity,
        info: &ObjectInfo,
    ) -> Result<(String, SourceProof), Stop> {
        if let Some(crc64nvme) = &info.crc64nvme {
            return Ok((crc64nvme.clone(), SourceProof::Crc64Nvme));
        }
        let _reservation = self
            .memory
            .reserve((self.tuning.read_ahead_bytes + REQUEST_BYTES) as u64)
            .await;
        let download = match self.store.get(source, identity.version_id()).await {
            Ok(download) => download,
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Err(Box::new(Outcome::transient(
                    "the source was gone when it was read for its checksum; the next attempt \
                     finds out why",
                )))
            }
            Err(error) => return Err(failed(error)),
        };
        if !identity.is(&download.info) {
            return Err(Box::new(changed_before_copy()));
        }
        let reader = transfer::spawn_download(download.body, self.tuning.read_ahead_bytes);
        let held = info.clone();
        let read = tokio::task::spawn_blocking(move || proof::fingerprint_stream(reader, &held))
            .await
            .map_err(|_| Box::new(Outcome::transient("the checksum's thread crashed")))?
            .map_err(|error| Box::new(read_failed("the source", &error)))?;
        if let Err(proof::Disproof::BadRead(why) | proof::Disproof::BadOutput(why)) =
            proof::check(info, &read, &read)
        {
            return Err(Box::new(Outcome::transient(format!(
                "the source was not read whole: {why}; nothing was copied and the source is kept"
            ))));
        }
        let source_proof = proof::source_proof(info);
        tracing::info!(
            key = %source.key,
            source_proof = source_proof.label(),
            "the source keeps no CRC-64/NVME: it was read once to compute one"
        );
        Ok((transfer::encode_crc(read.crc64nvme), source_proof))
    }

    /// Copies `source` (of `size` bytes, CRC-64/NVME `crc64nvme`) to the spec's output: with
    /// one CopyObject up to the threshold, in parts above it.
    async fn copy(
        &self,
        source: &CopySource,
        spec: &OutputSpec,
        size: u64,
        crc64nvme: &str,
    ) -> Result<Written, StoreError> {
        if size <= self.tuning.copy_threshold {
            let copied = self.store.copy(source, spec).await?;
            return match (&copied.source_version_id, &source.version_id) {
                (Some(copied_version), Some(judged)) if copied_version != judged => {
                    Err(StoreError {
                        class: ErrorClass::PreconditionFailed,
                        operation: "CopyObject",
                        bucket: source.location.bucket.clone(),
                        key: source.location.key.clone(),
                        message: format!(
                            "version {copied_version} was copied, not {judged}, the one judged"
                        ),
                    })
                }
                _ => Ok(copied.written),
            };
        }
        let pending = transfer::PendingUpload::default();
        // Dropped at the deadline, mid-copy, this guard aborts what is open.
        let _abort_on_drop = transfer::AbortOnDrop {
            store: Arc::clone(&self.store),
            location: spec.location.clone(),
            pending: pending.clone(),
            aborts: self.aborts.clone(),
        };
        copy_in_parts(
            self.store.as_ref(),
            source,
            spec,
            size,
            self.tuning.copy_part_size,
            crc64nvme,
            &pending,
        )
        .await
    }

    /// A copy that did not succeed: done all the same when the copy is there, made from this
    /// source (a copy whose every answer was lost, or a concurrent delivery's), which is then
    /// proven like one made here; a changed source or output starts over; an output from
    /// another source is a collision.
    async fn after_failed_copy(
        &self,
        source: &Location,
        identity: &SourceIdentity,
        output: &Location,
        error: StoreError,
    ) -> Result<Written, Stop> {
        match self.store.head(output, None).await {
            Ok(Some(existing)) if identity.made(&existing) => return Ok(written_as(&existing)),
            Ok(Some(existing)) if !identity.same_key(&existing) => {
                return Err(Box::new(collision(output, &existing)))
            }
            _ if !error.is(ErrorClass::PreconditionFailed) && !error.is(ErrorClass::NotFound) => {
                return Err(failed(error))
            }
            _ => {}
        }
        match self.store.head(source, None).await.map_err(failed)? {
            Some(current) if identity.is(&current) => Err(Box::new(Outcome::transient(format!(
                "the copy was refused ({error}); the output changed meanwhile, and the next \
                 attempt starts over; the source is kept"
            )))),
            _ => Err(Box::new(changed_before_copy())),
        }
    }

    /// Shows the copy to be the source before anything is deleted: there, as large as the
    /// source, with the source's CRC-64/NVME (the store's own value of what it keeps, or the
    /// copy read back where it keeps none), and carrying this source's identity. A copy that
    /// fails is removed (that version, or while it has that ETag).
    async fn verify_copy(
        &self,
        source: &Location,
        output: &Location,
        written: &Written,
        identity: &SourceIdentity,
        size: u64,
        crc64nvme: &str,
    ) -> Result<OutputProof, Stop> {
        let version = written.version_id.as_deref();
        let Some(stored) = self.store.head(output, version).await.map_err(failed)? else {
            return Err(Box::new(Outcome::transient(
                "the copy was not found right after it was made; the source is kept",
            )));
        };
        let (proof, crc) = match &stored.crc64nvme {
            Some(crc) => (OutputProof::StoredChecksum, crc.clone()),
            None => (
                OutputProof::ReadBack,
                self.read_back_crc64nvme(output, version).await?,
            ),
        };
        let problem = if stored.size != size {
            Some(format!("is {} bytes but the source is {size}", stored.size))
        } else if crc != crc64nvme {
            Some(format!(
                "has CRC-64/NVME {crc} but the source has {crc64nvme}"
            ))
        } else if !identity.made(&stored) {
            Some("does not carry this source's identity in its metadata".to_owned())
        } else {
            None
        };
        let Some(problem) = problem else {
            tracing::debug!(key = %output.key, proof = proof.label(), "copy verified");
            return Ok(proof);
        };
        let removed = self
            .remove_unproven(output, version, written.etag.as_deref())
            .await;
        // A store that ignores the copy source's If-Match copies a newer upload: a race,
        // not a fault, and the next attempt judges what is there.
        let still_judged = matches!(
            self.store.head(source, None).await,
            Ok(Some(current)) if identity.is(&current)
        );
        let outcome = if still_judged {
            Outcome::permanent(format!(
                "verification failed: the copy s3://{}/{} {problem}; {removed}, and the source \
                 is kept",
                output.bucket, output.key
            ))
        } else {
            Outcome::transient(format!(
                "the source changed while it was copied: the copy {problem}; {removed}, and the \
                 next attempt starts over"
            ))
        };
        Err(Box::new(outcome))
    }

    /// The CRC-64/NVME of a copy as read back, on a store that keeps none.
    async fn read_back_crc64nvme(
        &self,
        output: &Location,
        version: Option<&str>,
    ) -> Result<String, Stop> {
        let _reservation = self
            .memory
            .reserve((self.tuning.read_ahead_bytes + REQUEST_BYTES) as u64)
            .await;
        let download = match self.store.get(output, version).await {
            Ok(download) => download,
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Err(Box::new(Outcome::transient(
                    "the copy was gone when it was read back; the source is kept",
                )))
            }
            Err(error) => return Err(failed(error)),
        };
        let reader = transfer::spawn_download(download.body, self.tuning.read_ahead_bytes);
        let read = tokio::task::spawn_blocking(move || {
            let mut stored = proof::FingerprintReader::crc64_only(reader);
            std::io::copy(&mut stored, &mut std::io::sink()).map(|_| stored.fingerprint())
        })
        .await
        .map_err(|_| Box::new(Outcome::transient("the read-back's thread crashed")))?
        .map_err(|error| Box::new(read_failed("the copy back", &error)))?;
        Ok(transfer::encode_crc(read.crc64nvme))
    }
}

/// Where a move's copy comes from.
enum Target {
    /// A copy made from this source already exists: a repeated or concurrent delivery.
    Made(Written),
    /// A copy is to be made under this condition.
    Write(WriteCondition),
}

/// An existing object, as a write would have reported it.
fn written_as(existing: &ObjectInfo) -> Written {
    Written {
        etag: existing.etag.clone(),
        version_id: existing.version_id.clone(),
    }
}

/// What a request holds besides a read-ahead, as the memory budget counts it.
const REQUEST_BYTES: usize = 1024 * 1024;

fn changed_before_copy() -> Outcome {
    Outcome::transient(
        "the source changed after it was judged (a newer upload); nothing was copied from it, \
         and the next attempt judges what is there",
    )
}

/// The part size for a copy of `size` bytes: at least `min_part_size`, and large enough that
/// 10,000 parts hold it.
fn copy_part_size(size: u64, min_part_size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS);
    if needed <= min_part_size {
        return min_part_size.max(1);
    }
    needed.div_ceil(MIB) * MIB
}

/// A multipart upload whose parts are copied server-side from byte ranges of `source`,
/// completed under the spec's write condition with the source's CRC-64/NVME as the object's,
/// which S3 checks against the parts' own. While it is open its id is in `pending`; on its own
/// errors this aborts it.
async fn copy_in_parts(
    store: &dyn ObjectStore,
    source: &CopySource,
    spec: &OutputSpec,
    size: u64,
    min_part_size: u64,
    crc64nvme: &str,
    pending: &transfer::PendingUpload,
) -> Result<Written, StoreError> {
    let part_size = copy_part_size(size, min_part_size);
    let id = match store.create_multipart(spec).await {
        Ok(id) => id,
        Err(error) => {
            // An attempt whose answer was lost may still have started an upload.
            transfer::abort_strays(store, &spec.location).await;
            return Err(error);
        }
    };
    pending.set(Some(id.clone()));
    let ranges = (0..size.div_ceil(part_size)).map(|index| {
        let start = index * part_size;
        (index, start..(start + part_size).min(size))
    });
    let copied: Result<Vec<Part>, StoreError> = futures::stream::iter(ranges)
        .map(|(index, range)| {
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            store.copy_part(source, &spec.location, &id, number, range)
        })
        .buffered(COPY_PARTS_IN_FLIGHT)
        .try_collect()
        .await;
    let completed = match copied {
        Ok(parts) => match store.complete_multipart(spec, &id, parts, crc64nvme).await {
            // A retried complete whose first answer was lost: the upload became the object.
            Err(error) if error.is(ErrorClass::NotFound) => {
                transfer::completed_meanwhile(store, spec, size, crc64nvme)
                    .await
                    .ok_or(error)
            }
            other => other,
        },
        Err(error) => Err(error),
    };
    pending.set(None);
    match &completed {
        Ok(_) => transfer::abort_strays(store, &spec.location).await,
        Err(_) => transfer::abort(store, &spec.location, &id).await,
    }
    completed
}

#[cfg(test)]
mod tests {
    use super::copy_part_size;

    #[test]
    fn copy_parts_start_at_the_minimum_and_grow_to_fit_ten_thousand() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(copy_part_size(11 * MIB, 5 * MIB), 5 * MIB);
        let five_tib = 5 << 40;
        let part = copy_part_size(five_tib, 512 * MIB);
        assert!(part * 10_000 >= five_tib && part % MIB == 0, "{part}");
    }
}
