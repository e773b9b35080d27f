//! One object, top to bottom: route → read → compress → write → verify → delete.
//!
//! Every entry point (Lambda, `invoke`, `compress`, `serve`) hands objects to [`Worker::process`]
//! and maps the [`Outcome`] to its own protocol.

pub(crate) mod identity;
mod memory;
mod moving;
mod pace;
mod probe;
mod proof;
mod transfer;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use s3_compressor_config::{NotWorthIt, Rule};
use s3_compressor_events::ObjectRef;
use s3_compressor_formats::{
    already_compressed, Compressor, Entry, FormatError, Stats, SNIFF_BYTES,
};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::handoff::Handoff;
use crate::outcome::{Outcome, OutputProof, Proof, SourceFate};
use crate::store::{
    ContentHeaders, DeleteCondition, Deleted, Download, ErrorClass, Location, ObjectInfo,
    ObjectStore, OutputSpec, StoreError, WriteCondition,
};
use crate::{Decision, Plan, Routes};
use identity::SourceIdentity;
use memory::MemoryBudget;
pub use pace::{Deadline, Pace};
use probe::DeleteProbe;
use transfer::{PartWriter, UploadError, Uploaded};

/// Knobs that trade memory for throughput.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The smallest part of a multipart upload, and the most a single PutObject carries.
    pub min_part_size: usize,
    /// Parts uploading at once.
    pub parts_in_flight: usize,
    /// Bytes of the download buffered ahead of the compressor.
    pub read_ahead_bytes: usize,
    /// The largest object a move copies with one CopyObject; a larger one is copied in parts
    /// (UploadPartCopy). S3 copies at most 5 GiB in one request.
    pub copy_threshold: u64,
    /// The smallest part of a copy in parts (S3's least is 5 MiB, but for the last part).
    pub copy_part_size: u64,
}

impl Default for Tuning {
    /// About 36 MiB of buffers at most: 8 MiB parts, two uploading, one filling and one
    /// being decoded by the proof, and 4 MiB read ahead (at 100 MB/s, 40 ms of input: enough
    /// to ride out a stall of the download). Two parts uploading keep up with one core's
    /// deflate (8 MiB takes S3 well under the second one core needs to fill it); a third
    /// only held memory while a codec faster than the uploads (stored blocks, zstd) waited.
    fn default() -> Self {
        Self {
            min_part_size: 8 * 1024 * 1024,
            parts_in_flight: 2,
            read_ahead_bytes: 4 * 1024 * 1024,
            copy_threshold: 5 * 1024 * 1024 * 1024,
            // Parts of a copy hold no memory here, and S3 copies each in well under a minute.
            copy_part_size: 512 * 1024 * 1024,
        }
    }
}

/// Processes objects with one store and one set of routes.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Arc<dyn ObjectStore>,
    routes: Arc<Routes>,
    tuning: Tuning,
    /// Shared by every clone, so every object in flight counts against it.
    memory: Arc<MemoryBudget>,
    /// Aborts of multipart uploads left behind by objects stopped midway.
    aborts: TaskTracker,
    /// What an object's compression should take here, against the deadline.
    pace: Pace,
    /// Where objects that cannot finish before the deadline go; without it they fail.
    handoff: Option<Arc<dyn Handoff>>,
    /// Which buckets' store honours `If-Match` on DeleteObject, as found out so far.
    delete_probe: Arc<DeleteProbe>,
}

/// How long an entry point without a deadline waits, before it exits, for the uploads it
/// stopped to be aborted.
pub(crate) const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A reason to stop processing one object, already turned into its outcome.
type Stop = Box<Outcome>;

impl Worker {
    pub fn new(store: Arc<dyn ObjectStore>, routes: Arc<Routes>, tuning: Tuning) -> Self {
        Self {
            store,
            routes,
            tuning,
            memory: Arc::new(MemoryBudget::new(tuning)),
            aborts: TaskTracker::new(),
            pace: Pace::this_machine(),
            handoff: None,
            delete_probe: Arc::default(),
        }
    }

    /// Estimates against `deadline`s with this CPU.
    pub fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    /// Hands objects that cannot finish before their deadline to `handoff`.
    pub fn with_handoff(mut self, handoff: Option<Arc<dyn Handoff>>) -> Self {
        self.handoff = handoff;
        self
    }

    /// Waits (up to `limit`) for the aborts of uploads that objects stopped midway left open,
    /// before the process exits or an invocation is answered: a runtime dropped mid-abort (or
    /// a Lambda environment frozen once answered) would leave them open until the bucket's
    /// lifecycle rule removes them. Returns whether they all finished. Closing the tracker
    /// only lets the wait end once none is left: the aborts of a later invocation are still
    /// tracked, and waited for by the next call.
    pub async fn settle(&self, limit: std::time::Duration) -> bool {
        self.aborts.close();
        tokio::time::timeout(limit, self.aborts.wait())
            .await
            .is_ok()
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Processes one object; never panics and never returns early without an outcome.
    ///
    /// `deadline` is when the caller must have an answer (the Lambda deadline less a margin):
    /// work still running then is abandoned, with any multipart upload aborted and the source
    /// left alone.
    pub async fn process(&self, object: &ObjectRef, deadline: Option<Deadline>) -> Outcome {
        let started = Instant::now();
        let prices = self.routes.config().prices();
        let plan = match self.routes.decide(&object.key, object.size) {
            Decision::Compress(plan) => plan,
            Decision::Keep { rule, reason } => {
                let outcome = Outcome::Kept(reason);
                report(object, Some((rule, None)), &outcome, started, prices);
                return outcome;
            }
            Decision::Move { plan, reason } => {
                let work = self.move_object(object, &plan, reason, None);
                let outcome = within(deadline, work).await;
                report(object, Some((plan.rule, None)), &outcome, started, prices);
                return outcome;
            }
            Decision::Skip(reason) => {
                let outcome = Outcome::Skipped(reason.to_string());
                report(object, None, &outcome, started, prices);
                return outcome;
            }
            Decision::Refuse(reason) => {
                let outcome = Outcome::permanent(reason);
                report(object, None, &outcome, started, prices);
                return outcome;
            }
        };
        let outcome = within(deadline, self.compress_object(object, &plan, deadline)).await;
        // A moved object was judged by its first bytes, never compressed.
        let format = match outcome {
            Outcome::Moved { .. } => None,
            _ => Some(plan.compressor.registration().name),
        };
        report(object, Some((plan.rule, format)), &outcome, started, prices);
        outcome
    }

    async fn compress_object(
        &self,
        object: &ObjectRef,
        plan: &Plan<'_>,
        deadline: Option<Deadline>,
    ) -> Outcome {
        match self.try_compress_object(object, plan, deadline).await {
            Ok(outcome) | Err(outcome) => *outcome,
        }
    }

    async fn try_compress_object(
        &self,
        object: &ObjectRef,
        plan: &Plan<'_>,
        deadline: Option<Deadline>,
    ) -> Result<Box<Outcome>, Stop> {
        let source = source_of(object);
        let output = Location {
            bucket: object.bucket.clone(),
            key: plan.output_key.clone(),
        };

        // Its place in the memory budget, sized by the event's word until the GET says better.
        let cost = |size| self.memory.cost(size, plan.compressor);
        let reservation = self
            .memory
            .reserve_for(&object.key, cost(object.size))
            .await;

        // Read: the exact version the event names, so a newer upload is never mixed in. The
        // output's HEAD, and for a named version the key's current object, go out alongside
        // the GET: one round trip instead of two or three, which is much of the time a small
        // object takes.
        let (existing_output, current, download) = tokio::join!(
            self.store.head(&output, None),
            self.current_if_named(&source, object.version_id.as_deref()),
            self.store.get(&source, object.version_id.as_deref()),
        );
        let existing_output = existing_output.map_err(failed)?;
        let download = match download {
            Ok(download) => download,
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Err(Box::new(
                    self.gone(plan, &source, &output, existing_output.as_ref())
                        .await,
                ))
            }
            Err(error) => return Err(failed(error)),
        };
        // Whether it pays, on the size read (an event may not say) and the first bytes, before
        // any compression work.
        let mut download = match self.judge(plan, download).await? {
            Ok(download) => download,
            Err((reason, judged)) => {
                drop(reservation);
                return match self
                    .routes
                    .spare(&object.key, plan.rule, plan.compressor, reason)
                {
                    Decision::Move { plan, reason } => Ok(Box::new(
                        self.move_object(object, &plan, reason, Some(judged)).await,
                    )),
                    Decision::Keep { reason, .. } => Err(Box::new(Outcome::Kept(reason))),
                    Decision::Refuse(reason) => Err(Box::new(Outcome::permanent(reason))),
                    Decision::Compress(_) | Decision::Skip(_) => Err(Box::new(Outcome::permanent(
                        "the rule neither keeps nor moves what it spares",
                    ))),
                };
            }
        };
        let reservation = self
            .memory
            .refit(reservation, cost(Some(download.info.size)))
            .await;
        let identity =
            SourceIdentity::read(&source.key, &download.info, object.version_id.as_deref());

        // An output already made from this very source: a repeated or concurrent delivery.
        if let Some(info) = existing_output.as_ref().filter(|info| identity.made(info)) {
            drop((download, reservation));
            return self
                .finish_duplicate(plan, object, &output, &identity, info, deadline)
                .await;
        }
        // A late event for a version that newer content replaced writes nothing, whether or not
        // an output exists yet: the newer version's own event makes it.
        if let Some(current) = current.map_err(failed)? {
            self.ensure_current(&source, &output, &identity, current)
                .await?;
        }
        let condition = match &existing_output {
            None => WriteCondition::Absent,
            Some(info) if identity.same_key(info) => {
                // Another upload of the same key was compressed before: replace that output,
                // and only that one, and only with the key's current version, so an output
                // never goes back to an older one however late its event comes.
                if object.version_id.is_none() {
                    self.ensure_still_current(&source, &output, &identity)
                        .await?;
                }
                WriteCondition::Matches(info.etag.clone().unwrap_or_default())
            }
            Some(info) => return Err(Box::new(collision(&output, info))),
        };

        // Within S3's limit whatever the key; only a store's overlong version id can pass it.
        let metadata = identity
            .output_metadata(&plan.rule.prefix, self.routes.config_hash())
            .map_err(|error| Box::new(Outcome::permanent(error.to_string())))?;

        // Not started if it cannot finish in time (a duplicate, above, is held to the same).
        self.check_time(object, plan, &download.info, deadline)
            .await?;

        // Compress and write.
        self.learn_parts(&source, &mut download.info).await;
        let source_proof = proof::source_proof(&download.info);
        let spec = OutputSpec {
            location: output.clone(),
            headers: ContentHeaders::of_type(plan.compressor.registration().content_type),
            metadata,
            condition,
        };
        let written = self
            .compress_and_upload(plan, &source, download, &spec, reservation)
            .await;
        let (stats, read, uploaded) = match written {
            Ok(done) => done,
            Err(WriteFailure::Stop(stop)) => return Err(stop),
            Err(WriteFailure::Store(error)) => {
                // A concurrent delivery of the same event that finished first aborts this
                // one's multipart upload as a stray (S3 then answers NoSuchUpload): its output
                // is made from this very source, so this delivery is done too.
                return match self.store.head(&output, None).await {
                    Ok(Some(info)) if identity.made(&info) => {
                        self.finish_duplicate(plan, object, &output, &identity, &info, deadline)
                            .await
                    }
                    _ => Err(failed(error)),
                };
            }
            Err(WriteFailure::Raced) => {
                // Someone wrote the output while we compressed: most often a concurrent
                // delivery of the same event, which is then simply done.
                return match self.store.head(&output, None).await.map_err(failed)? {
                    Some(info) if identity.made(&info) => {
                        self.finish_duplicate(plan, object, &output, &identity, &info, deadline)
                            .await
                    }
                    Some(info) if !identity.same_key(&info) => {
                        Err(Box::new(collision(&output, &info)))
                    }
                    Some(_) => {
                        // Another upload of this key got there first; if it is the newer one,
                        // this one is superseded.
                        self.ensure_still_current(&source, &output, &identity)
                            .await?;
                        Err(Box::new(Outcome::transient(
                            "the output was replaced while it was being written; the next attempt starts over",
                        )))
                    }
                    None => Err(Box::new(Outcome::transient(
                        "the output was removed while it was being written; the next attempt starts over",
                    ))),
                };
            }
        };

        // Verify before anything is deleted.
        let output_proof = self
            .verify(plan, &output, &uploaded, &identity, &read)
            .await?;

        // Delete the source: exactly what was read, never a newer upload.
        let fate = self.delete_source(plan, &source, &identity).await?;
        Ok(Box::new(Outcome::Compressed {
            output_key: output.key,
            bytes_in: stats.bytes_in,
            bytes_out: uploaded.bytes,
            stored: stats.stored,
            source: fate,
            proof: Proof {
                source: source_proof,
                output: output_proof,
            },
        }))
    }

    /// [`source_gone`], where a rule that moves what does not pay may have moved the source
    /// (under its own name) rather than compressed it.
    async fn gone(
        &self,
        plan: &Plan<'_>,
        source: &Location,
        output: &Location,
        existing_output: Option<&ObjectInfo>,
    ) -> Outcome {
        let outcome = source_gone(source, output, existing_output);
        if outcome != Outcome::SourceMissing
            || plan.rule.if_not_worth_it != s3_compressor_config::IfNotWorthIt::Move
        {
            return outcome;
        }
        let moved = Location {
            bucket: source.bucket.clone(),
            key: plan.rule.moved_key(&source.key),
        };
        match self.store.head(&moved, None).await {
            Ok(moved_output) => source_gone(source, &moved, moved_output.as_ref()),
            Err(error) => *failed(error),
        }
    }

    /// Says why the rule spares what `download` holds its compression, with the source as it
    /// was read: by its size, by the kind of compressed content its first bytes show, or by
    /// how little a sample of them shrinks (content no signature names: brotli, encrypted
    /// data, an unknown archive). Hands the download back whole otherwise. Only a rule that
    /// keeps or moves what does not pay reads ahead.
    async fn judge(
        &self,
        plan: &Plan<'_>,
        mut download: Download,
    ) -> Result<Result<Download, (NotWorthIt, ObjectInfo)>, Stop> {
        let info = download.info.clone();
        let kept = |reason| Ok(Err((reason, info)));
        if let Some(reason) = plan.rule.spares_by_size(Some(download.info.size)) {
            return kept(reason);
        }
        if !plan.rule.judges_content() {
            return Ok(Ok(download));
        }
        let wanted = usize::try_from(download.info.size)
            .unwrap_or(usize::MAX)
            .min(SAMPLE_BYTES);
        let mut sample = Vec::with_capacity(wanted);
        let mut chunks = Vec::new();
        while sample.len() < wanted {
            let Some(chunk) = download.body.next().await else {
                break;
            };
            let chunk = chunk.map_err(failed)?;
            let take = (wanted - sample.len()).min(chunk.len());
            sample.extend_from_slice(&chunk[..take]);
            chunks.push(Ok(chunk));
        }
        if let Some(reason) = plan.rule.spares_content(already_compressed(&sample)) {
            return kept(reason);
        }
        let sampled = sample.len() as u64;
        if let Some(compressed) = sample_compressed(plan.compressor, sample).await {
            if let Some(reason) = plan.rule.spares_sample(sampled, compressed) {
                return kept(reason);
            }
        }
        download.body = futures::stream::iter(chunks).chain(download.body).boxed();
        Ok(Ok(download))
    }

    /// Does not start an object that cannot finish before `deadline`, since it would be stopped
    /// there and retried from zero. One that needs more than a whole invocation never fits: it
    /// goes to the handoff when there is one, else it fails at once, permanently, saying what
    /// would work. One that only needs more than is left (objects before it in the batch took
    /// the rest) fails transiently, for a fresh invocation. The source is untouched either way.
    async fn check_time(
        &self,
        object: &ObjectRef,
        plan: &Plan<'_>,
        read: &ObjectInfo,
        deadline: Option<Deadline>,
    ) -> Result<(), Stop> {
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let size = read.size;
        let format = plan.compressor.registration().name;
        let needed = self.pace.estimate(format, size);
        let left = deadline.at.saturating_duration_since(Instant::now());
        if needed <= left {
            return Ok(());
        }
        let name = format!("s3://{}/{}", object.bucket, object.key);
        let why = |time: &str, seconds: u64| {
            format!(
                "{name} is {size} bytes; at the {:.1} MB/s {format} manages on {:.2} vCPU it \
                 needs about {} s, and {time} {seconds} s",
                self.pace.megabytes_per_second(format),
                self.pace.vcpus(),
                needed.as_secs(),
            )
        };
        if needed <= deadline.granted {
            return Err(Box::new(Outcome::transient(format!(
                "{}, so it was not started; a fresh invocation has the time",
                why("this invocation has", left.as_secs())
            ))));
        }
        let why = why("an invocation has", deadline.granted.as_secs());
        let Some(handoff) = &self.handoff else {
            return Err(Box::new(Outcome::permanent(format!(
                "{why}, so it was not started (the source is kept). Compress it where time is \
                 not limited: `s3-compressor compress {name}`, or deploy with \
                 --large-objects fargate to have such objects handed to a Fargate task"
            ))));
        };
        match handoff.hand_off(object, read).await {
            Ok(task) => {
                tracing::info!(key = %object.key, %task, "{why}: handed to a Fargate task");
                Err(Box::new(Outcome::HandedOff { task }))
            }
            Err(error) => Err(Box::new(Outcome::transient(format!(
                "{why}, and handing it to a Fargate task failed: {error}; the source is kept"
            )))),
        }
    }

    /// Runs the compressor on a blocking thread between the download and the upload.
    ///
    /// The thread holds the object's `reservation` and gives it back when it ends, with the
    /// codec's state and the part it was filling: when the deadline drops this future, the
    /// thread runs on until its next read or write fails.
    async fn compress_and_upload(
        &self,
        plan: &Plan<'_>,
        source: &Location,
        download: Download,
        spec: &OutputSpec,
        reservation: memory::Reservation,
    ) -> Result<(Stats, proof::Fingerprint, Uploaded), WriteFailure> {
        let info = &download.info;
        let mut entry = Entry::new(base_name(&source.key)).with_size(info.size);
        if let Some(modified) = info.last_modified {
            entry = entry.with_modified(modified);
        }
        let part_size = transfer::part_size(info.size, self.tuning.min_part_size);
        let entry_size = info.size;
        let reader = transfer::spawn_download(download.body, self.tuning.read_ahead_bytes);
        let (parts, chunks) = mpsc::channel(1);
        let budget = transfer::PartBudget::new(self.tuning.parts_in_flight);
        let compressor = Arc::clone(plan.compressor);
        let source_info = download.info.clone();
        let compressing = tokio::task::spawn_blocking(move || {
            let _reservation = reservation;
            let expected_output = transfer::worst_output(entry_size);
            let writer =
                |copies| PartWriter::new(parts, copies, part_size, expected_output, budget);
            compress_proven(&compressor, reader, writer, &entry, &source_info)
        });

        let pending = transfer::PendingUpload::default();
        // Dropped at the deadline, mid-upload, this guard aborts what is open.
        let _abort_on_drop = transfer::AbortOnDrop {
            store: Arc::clone(&self.store),
            location: spec.location.clone(),
            pending: pending.clone(),
            aborts: self.aborts.clone(),
        };
        let uploaded = transfer::upload_output(
            Arc::clone(&self.store),
            spec,
            chunks,
            self.tuning.parts_in_flight,
            &pending,
        )
        .await;
        let compressed = compressing.await;

        let stop = |outcome: Outcome| Err(WriteFailure::Stop(Box::new(outcome)));
        match (compressed, uploaded) {
            (Ok(Ok((stats, read))), Ok(uploaded)) => Ok((stats, read, uploaded)),
            // The upload's own failure explains a compressor that could not write.
            (_, Err(UploadError::Store(error))) if error.is(ErrorClass::PreconditionFailed) => {
                Err(WriteFailure::Raced)
            }
            (_, Err(UploadError::Store(error))) => Err(WriteFailure::Store(error)),
            (Ok(Err(CompressFailure::Format(error))), _) => stop(compression_failed(error)),
            (Ok(Err(CompressFailure::BadRead(why))), _) => stop(Outcome::transient(format!(
                "the source was not read whole: {why}; nothing was written and the source is kept"
            ))),
            (Ok(Err(CompressFailure::Unproven(why))), _) => stop(Outcome::permanent(format!(
                "verification failed: {why}; nothing was written and the source is kept"
            ))),
            (Err(panic), _) => stop(Outcome::permanent(format!(
                "the compressor crashed: {panic}"
            ))),
            (Ok(Ok(_)), Err(UploadError::Incomplete)) => stop(Outcome::transient(
                "the upload ended before the compressor finished",
            )),
        }
    }

    /// Reads the output back before anything is deleted: it must be there, as large as what
    /// was written, made from this source, and hold the bytes that were sent. The store's own
    /// CRC-64/NVME shows the last; where it keeps none, the output is read back.
    async fn verify(
        &self,
        plan: &Plan<'_>,
        output: &Location,
        uploaded: &Uploaded,
        identity: &SourceIdentity,
        read: &proof::Fingerprint,
    ) -> Result<OutputProof, Stop> {
        let version = uploaded.written.version_id.as_deref();
        let Some(stored) = self.store.head(output, version).await.map_err(failed)? else {
            return Err(Box::new(Outcome::transient(
                "the output was not found right after it was written; the source is kept",
            )));
        };
        let proof = match stored.crc64nvme {
            Some(_) => OutputProof::StoredChecksum,
            None => OutputProof::ReadBack,
        };
        let problem = match stored_problem(&stored, uploaded, identity) {
            Some(problem) => Some(problem),
            None if proof == OutputProof::StoredChecksum => None,
            None => self.read_back(plan, output, uploaded, read).await?,
        };
        let Some(problem) = problem else {
            tracing::debug!(key = %output.key, proof = proof.label(), "output verified");
            return Ok(proof);
        };
        let removed = self
            .remove_unproven(
                output,
                uploaded.written.version_id.as_deref(),
                uploaded.written.etag.as_deref(),
            )
            .await;
        Err(Box::new(Outcome::permanent(format!(
            "verification failed: s3://{}/{} {problem}; {removed}, and the source is kept",
            output.bucket, output.key
        ))))
    }

    /// Reads back the output as written (that version, or while it has that ETag) on a store
    /// that keeps no checksum: its bytes must have the CRC-64/NVME that was sent, and decode
    /// to what was read. Says what is wrong with it, if anything.
    async fn read_back(
        &self,
        plan: &Plan<'_>,
        output: &Location,
        uploaded: &Uploaded,
        read: &proof::Fingerprint,
    ) -> Result<Option<String>, Stop> {
        let written = &uploaded.written;
        // A read-ahead and a decoder again: their place in the budget, counted (generously) as
        // an object of the output's size.
        let _reservation = self
            .memory
            .reserve_for(
                &output.key,
                self.memory.cost(Some(uploaded.bytes), plan.compressor),
            )
            .await;
        let download = match self.store.get(output, written.version_id.as_deref()).await {
            Ok(download) => download,
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Err(Box::new(Outcome::transient(
                    "the output was gone when it was read back; the source is kept",
                )))
            }
            Err(error) => return Err(failed(error)),
        };
        if written.etag.is_some() && download.info.etag != written.etag {
            return Err(Box::new(Outcome::transient(
                "the output was replaced before it was read back; the next attempt starts over; \
                 the source is kept",
            )));
        }
        let reader = transfer::spawn_download(download.body, self.tuning.read_ahead_bytes);
        let compressor = Arc::clone(plan.compressor);
        let (stored, decoded) = tokio::task::spawn_blocking(move || {
            let mut stored = proof::FingerprintReader::crc64_only(reader);
            let decoded = proof::decode_stream(&compressor, &mut stored);
            // A decoder may stop before the end (a zip's central directory): every byte counts.
            let rest = std::io::copy(&mut stored, &mut std::io::sink());
            (rest.map(|_| stored.fingerprint()), decoded)
        })
        .await
        .map_err(|_| Box::new(Outcome::transient("the read-back's thread crashed")))?;
        // A failed read surfaces in either; its class decides, before the bytes are judged.
        if let Some(outcome) = decoded.as_ref().err().and_then(store_error_in) {
            return Err(Box::new(outcome));
        }
        let stored = stored.map_err(|error| Box::new(read_failed("the output back", &error)))?;
        if (stored.bytes, transfer::encode_crc(stored.crc64nvme))
            != (uploaded.bytes, uploaded.crc64nvme.clone())
        {
            return Ok(Some(format!(
                "read back is {} bytes with CRC-64/NVME {}, but {} bytes with {} were written",
                stored.bytes,
                transfer::encode_crc(stored.crc64nvme),
                uploaded.bytes,
                uploaded.crc64nvme
            )));
        }
        match decoded {
            Ok(decoded) if (decoded.bytes, decoded.crc64nvme) == (read.bytes, read.crc64nvme) => {
                Ok(None)
            }
            Ok(decoded) => Ok(Some(format!(
                "read back decodes to {} bytes, not the {} that were read",
                decoded.bytes, read.bytes
            ))),
            Err(error) => Ok(Some(format!("read back does not decode: {error}"))),
        }
    }

    /// Removes an output that failed its proof, which the next delivery would otherwise trust
    /// for carrying this source's identity; only it: that version, or the object while it still
    /// has that ETag. Says what became of it.
    async fn remove_unproven(
        &self,
        output: &Location,
        version_id: Option<&str>,
        etag: Option<&str>,
    ) -> String {
        let condition = match (version_id, etag) {
            (Some(version), _) => DeleteCondition::Version(version.to_owned()),
            (None, Some(etag)) => DeleteCondition::Matches(etag.to_owned()),
            (None, None) => {
                return "it could not be removed (the store reported neither version nor ETag)"
                    .to_owned()
            }
        };
        match self.store.delete(output, &condition).await {
            Ok(_) => "it was removed".to_owned(),
            Err(error) => format!("removing it failed too ({error})"),
        }
    }

    /// The key's current object (`None`: a delete marker, or nothing), when the event names a
    /// version: an event without one reads whatever is current, and so is never late.
    async fn current_if_named(
        &self,
        source: &Location,
        version_id: Option<&str>,
    ) -> Result<Option<Option<ObjectInfo>>, StoreError> {
        match version_id {
            Some(_) => self.store.head(source, None).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`Worker::ensure_current`] with a fresh look at the key's current object.
    async fn ensure_still_current(
        &self,
        source: &Location,
        output: &Location,
        identity: &SourceIdentity,
    ) -> Result<(), Stop> {
        if identity.version_id().is_none() {
            return Ok(());
        }
        let current = self.store.head(source, None).await.map_err(failed)?;
        self.ensure_current(source, output, identity, current).await
    }

    /// Stops with [`Outcome::Superseded`] when newer content replaced the version read.
    /// Only a versioned source can tell: an unversioned read is always of the current object.
    /// A delete marker on top supersedes nothing (the version is only hidden, by a person or by
    /// a delete that could not be limited to what it read): then the newest version holding
    /// content decides.
    async fn ensure_current(
        &self,
        source: &Location,
        output: &Location,
        identity: &SourceIdentity,
        current: Option<ObjectInfo>,
    ) -> Result<(), Stop> {
        let Some(version_id) = identity.version_id() else {
            return Ok(());
        };
        let newest = match current {
            Some(info) if identity.is(&info) => return Ok(()),
            Some(_) => None,
            None => self
                .store
                .newest_content_version(source)
                .await
                .map_err(failed)?,
        };
        if newest.as_deref() == Some(version_id) {
            return Ok(());
        }
        Err(Box::new(Outcome::Superseded {
            output_key: output.key.clone(),
        }))
    }

    /// Deletes exactly what was compressed, if the rule says so.
    async fn delete_source(
        &self,
        plan: &Plan<'_>,
        source: &Location,
        identity: &SourceIdentity,
    ) -> Result<SourceFate, Stop> {
        if !plan.rule.delete_source {
            return Ok(SourceFate::Kept);
        }
        let Some(condition) = identity.delete_condition() else {
            tracing::warn!(key = %source.key, "the source has neither a version id nor an ETag; it is kept");
            return Ok(SourceFate::Kept);
        };
        if !self.delete_is_limited(plan, source).await? {
            return Ok(SourceFate::KeptStoreIgnoresIfMatch);
        }
        match self.store.delete(source, &condition).await {
            Ok(Deleted::Now { marker }) => {
                if let Some(marker) = marker {
                    tracing::info!(
                        key = %source.key,
                        delete_marker = %marker,
                        "source deleted recoverably: removing this delete marker restores it"
                    );
                }
                Ok(SourceFate::Deleted)
            }
            Ok(Deleted::AlreadyGone) => Ok(SourceFate::AlreadyGone),
            Err(error) if error.is(ErrorClass::PreconditionFailed) => {
                self.after_refused_delete(source, identity, &error).await
            }
            Err(error) => Err(failed(error)),
        }
    }

    /// Whether the source's delete may go out: the store limits it to what was read (it
    /// honours `If-Match`), or the rule says to delete on such a store all the same.
    async fn delete_is_limited(&self, plan: &Plan<'_>, source: &Location) -> Result<bool, Stop> {
        if plan.rule.delete_without_if_match {
            return Ok(true);
        }
        self.delete_probe
            .honours_if_match(
                self.store.as_ref(),
                &source.bucket,
                &plan.rule.output_prefix,
            )
            .await
            .map_err(|error| {
                Box::new(Outcome::Failed {
                    retry: error.is(ErrorClass::Transient),
                    error: format!(
                        "finding out whether the store honours If-Match on DeleteObject failed \
                         ({error}); the output is proven and the source is kept"
                    ),
                })
            })
    }

    /// A refused delete (412, or 409 while another operation on the key is under way) means a
    /// newer upload only if another object is current now: if the one read still is, the
    /// conflicting operation failed, and only a retry finishes the job.
    async fn after_refused_delete(
        &self,
        source: &Location,
        identity: &SourceIdentity,
        refusal: &StoreError,
    ) -> Result<SourceFate, Stop> {
        match self.store.head(source, None).await.map_err(failed)? {
            Some(current) if identity.is(&current) => Err(Box::new(Outcome::transient(format!(
                "the source's delete was refused ({refusal}), yet it is still the object that \
                 was read; the output is proven, and the next attempt deletes the source"
            )))),
            Some(_) => Ok(SourceFate::KeptNewerUpload),
            None => Ok(SourceFate::AlreadyGone),
        }
    }

    /// The output already exists and was made from this source: finish what the earlier
    /// delivery may not have (deleting the source), but only on the strength of a proof made
    /// here, since nothing says the earlier delivery's proof passed. The proof reads the
    /// source and the output whole, so it is held to the deadline as a compression is.
    async fn finish_duplicate(
        &self,
        plan: &Plan<'_>,
        object: &ObjectRef,
        output: &Location,
        identity: &SourceIdentity,
        existing: &ObjectInfo,
        deadline: Option<Deadline>,
    ) -> Result<Box<Outcome>, Stop> {
        let done = |fate| {
            Box::new(Outcome::AlreadyDone {
                output_key: output.key.clone(),
                source: fate,
            })
        };
        if !plan.rule.delete_source {
            return Ok(done(SourceFate::Kept));
        }
        let read = identity.as_read();
        self.check_time(object, plan, &read, deadline).await?;
        let reservation = self
            .memory
            .reserve_for(
                &object.key,
                self.memory.cost(Some(read.size), plan.compressor),
            )
            .await;
        let source = &source_of(object);
        let (source_read, output_read) = tokio::join!(
            self.store.get(source, identity.version_id()),
            self.store.get(output, existing.version_id.as_deref()),
        );
        let mut source_read = match source_read {
            Ok(download) => download,
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Ok(done(SourceFate::AlreadyGone))
            }
            Err(error) => return Err(failed(error)),
        };
        let output_read = match output_read {
            Ok(download) if identity.made(&download.info) => download,
            Ok(_) => {
                return Err(Box::new(Outcome::transient(
                    "the output changed while it was being checked; the next attempt starts over",
                )))
            }
            Err(error) if error.is(ErrorClass::NotFound) => {
                return Err(Box::new(Outcome::transient(
                    "the output was removed while it was being checked; the next attempt starts over",
                )))
            }
            Err(error) => return Err(failed(error)),
        };
        let output_version = output_read.info.clone();
        self.learn_parts(source, &mut source_read.info).await;
        match self
            .prove_existing(plan, source_read, output_read, reservation)
            .await?
        {
            Ok(()) => {}
            Err(proof::Disproof::BadRead(why)) => {
                return Err(Box::new(Outcome::transient(format!(
                    "the source was not read whole: {why}; the source is kept"
                ))))
            }
            Err(proof::Disproof::BadOutput(why)) => {
                let removed = self
                    .remove_unproven(
                        output,
                        output_version.version_id.as_deref(),
                        output_version.etag.as_deref(),
                    )
                    .await;
                return Err(Box::new(Outcome::transient(format!(
                    "an earlier output of this source failed its proof ({why}); {removed}, and \
                     the next attempt starts over; the source is kept"
                ))));
            }
        }
        let fate = self.delete_source(plan, source, identity).await?;
        Ok(done(fate))
    }

    /// Asks the store, with one request, where a multipart source's parts end, so that the
    /// bytes read can be held against its ETag or composite checksum: S3 computes those over
    /// the parts. Where the store does not tell, or tells something that does not describe
    /// this object, the read is held against its size alone, as before, and the log says why:
    /// an unknown boundary must never make a good read look bad.
    async fn learn_parts(&self, source: &Location, info: &mut ObjectInfo) {
        let Some(multipart) = &info.multipart else {
            return;
        };
        let over_parts = [
            &multipart.etag_md5,
            &multipart.crc32c,
            &multipart.crc32,
            &multipart.sha1,
            &multipart.sha256,
        ];
        // A full-object value needs no boundaries; without any value they would prove nothing.
        if proof::held_against(info).is_some() || over_parts.iter().all(|value| value.is_none()) {
            return;
        }
        let sizes = self.store.part_sizes(source, info).await.and_then(|sizes| {
            match proof::unusable_part_sizes(info, &sizes) {
                Some(why) => Err(why),
                None => Ok(sizes),
            }
        });
        match sizes {
            Ok(sizes) => {
                if let Some(multipart) = info.multipart.as_mut() {
                    multipart.part_sizes = sizes;
                }
            }
            Err(why) => tracing::info!(
                key = %source.key,
                parts = info.multipart.as_ref().map(|multipart| multipart.parts),
                why,
                "the multipart source's part boundaries are unknown; its read is held against its size alone"
            ),
        }
    }

    /// Decodes an existing output and reads its source side by side, for the same proof a new
    /// output passes; the proof's thread holds `reservation` until it ends.
    async fn prove_existing(
        &self,
        plan: &Plan<'_>,
        source: Download,
        output: Download,
        reservation: memory::Reservation,
    ) -> Result<Result<(), proof::Disproof>, Stop> {
        let source_info = source.info.clone();
        let source_reader = transfer::spawn_download(source.body, self.tuning.read_ahead_bytes);
        let output_reader = transfer::spawn_download(output.body, self.tuning.read_ahead_bytes);
        let compressor = Arc::clone(plan.compressor);
        let reading = source_info.clone();
        let proving = tokio::task::spawn_blocking(move || {
            let _reservation = reservation;
            std::thread::scope(|scope| {
                let decoder = scope.spawn(|| proof::decode_stream(&compressor, output_reader));
                let read = proof::fingerprint_stream(source_reader, &reading);
                (read, decoder.join())
            })
        });
        let (read, decoded) = proving
            .await
            .map_err(|_| Box::new(Outcome::transient("the proof's thread crashed")))?;
        let read = read.map_err(|error| Box::new(read_failed("the source", &error)))?;
        let decoded = match decoded {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(error)) => {
                // A failed read of the output surfaces as a decode error; its class decides.
                if let Some(outcome) = store_error_in(&error) {
                    return Err(Box::new(outcome));
                }
                return Ok(Err(proof::Disproof::BadOutput(error.to_string())));
            }
            Err(_) => {
                return Ok(Err(proof::Disproof::BadOutput(
                    "the decoder crashed".to_owned(),
                )))
            }
        };
        Ok(proof::check(&source_info, &read, &decoded))
    }
}

/// `work`, stopped at `deadline` (the source untouched, any multipart upload aborted).
async fn within(
    deadline: Option<Deadline>,
    work: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.at.into(), work)
            .await
            .unwrap_or_else(|_| {
                Outcome::transient(
                    "stopped at the invocation deadline before the output was verified; \
                     the source is untouched and the next attempt starts over",
                )
            }),
    }
}

/// One log line per object, with the fields a dashboard filters on: the rule that took it,
/// and the format it was to be compressed in (none for an object kept by its size alone).
fn report(
    object: &ObjectRef,
    taken: Option<(&Rule, Option<&'static str>)>,
    outcome: &Outcome,
    started: Instant,
    prices: &s3_compressor_config::Prices,
) {
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let rule = taken.map(|(rule, _)| rule.prefix.as_str());
    let format = taken.and_then(|(_, format)| format);
    let (bytes_in, bytes_out, stored_bytes, proof) = match outcome {
        Outcome::Compressed {
            bytes_in,
            bytes_out,
            stored,
            proof,
            ..
        } => (
            Some(*bytes_in),
            Some(*bytes_out),
            Some(*stored),
            Some(*proof),
        ),
        Outcome::Moved { bytes, proof, .. } => (Some(*bytes), Some(*bytes), None, Some(*proof)),
        _ => (None, None, None, None),
    };
    // What the source's delete rested on: see docs/how-it-works.md, Guarantees.
    let source_proof = proof.map(|proof| proof.source.label());
    let proof = proof.map(|proof| proof.output.label());
    // `stored: true` when no byte was worth compressing; how many were, when some were not.
    let stored = stored_bytes
        .zip(bytes_in)
        .map(|(stored, bytes_in)| stored == bytes_in && stored > 0);
    let stored_bytes = stored_bytes.filter(|&stored| stored > 0);
    // Input size over output size, as docs/ and the benchmark quote it: 4.0 means four times
    // smaller.
    let ratio = match (bytes_in, bytes_out) {
        (Some(bytes_in), Some(bytes_out)) if bytes_out > 0 => {
            Some((bytes_in as f64 / bytes_out as f64 * 1000.0).round() / 1000.0)
        }
        _ => None,
    };
    // Storage freed once the source is gone (negative when the archive outweighs the source).
    let saved_bytes = outcome.saved_bytes();
    // What that storage costs a month in S3 Standard, where outputs are written, at the
    // config's [prices]: what `estimate` reckons the same object saves.
    let saved_usd_per_month = saved_bytes
        .map(|saved| saved as f64 / s3_compressor_config::BILLED_GB * prices.standard_gb_month);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                bucket = %object.bucket,
                key = %object.key,
                rule,
                format,
                bytes_in,
                bytes_out,
                ratio,
                saved_bytes,
                saved_usd_per_month,
                stored,
                stored_bytes,
                source_proof,
                proof,
                ms,
                outcome = outcome.label(),
                "{outcome}"
            )
        };
    }
    match outcome {
        Outcome::Failed { .. } => line!(error),
        _ => line!(info),
    }
}

/// How much of an object's start a rule that keeps what does not pay compresses as a sample:
/// one small deflate block, a millisecond of work, held in memory only until it is judged.
pub(crate) const SAMPLE_BYTES: usize = 64 * 1024;
const _: () = assert!(
    SAMPLE_BYTES >= SNIFF_BYTES,
    "the sample holds every signature"
);

/// The size `sample` compresses to in the rule's own format and level, or `None` where that
/// says nothing: an empty sample, a format that does not compress (tar), or a sample the
/// format failed on (the object is then compressed, and its own failure reported).
pub(crate) async fn sample_compressed(
    compressor: &Arc<Compressor>,
    sample: Vec<u8>,
) -> Option<u64> {
    if sample.is_empty() || compressor.registration().levels.is_none() {
        return None;
    }
    let compressor = Arc::clone(compressor);
    tokio::task::spawn_blocking(move || {
        let entry = Entry::new("sample").with_size(sample.len() as u64);
        let mut output = Vec::with_capacity(sample.len());
        compressor
            .compress(&mut sample.as_slice(), &mut output, &entry)
            .ok()
            .map(|_| output.len() as u64)
    })
    .await
    .ok()
    .flatten()
}

/// Compresses on this (blocking) thread while a second one decodes the output as it is
/// written; hands the output over for completion only once the proof holds.
fn compress_proven(
    compressor: &Compressor,
    reader: impl std::io::Read,
    writer: impl FnOnce(std::sync::mpsc::SyncSender<bytes::Bytes>) -> PartWriter,
    entry: &Entry,
    source_info: &ObjectInfo,
) -> Result<(Stats, proof::Fingerprint), CompressFailure> {
    let as_compress_error = |source| FormatError::Compress {
        format: compressor.registration().name,
        source,
    };
    std::thread::scope(|scope| {
        // A hand-over, not a queue: the decoder holds at most the part it is decoding beyond
        // those the upload holds.
        let (copies, copied) = std::sync::mpsc::sync_channel(0);
        let decoder = scope.spawn(|| proof::decode_parts(compressor, copied));
        let mut writer = writer(copies);
        let mut read = proof::FingerprintReader::new(reader, source_info);
        let written = compressor
            .compress(&mut read, &mut writer, entry)
            .and_then(|stats| Ok((stats, writer.close().map_err(as_compress_error)?)));
        let (stats, last) = match written {
            Ok(written) => written,
            Err(error) => {
                let decoder_stopped = writer.decoder_stopped();
                // Ends the decoder's stream (and the upload) before waiting for it.
                drop(writer);
                return Err(match (decoder_stopped, decoder.join()) {
                    // The decoder gave up first: its error is the reason.
                    (true, Ok(Err(decode_error))) => {
                        CompressFailure::Unproven(decode_error.to_string())
                    }
                    _ => CompressFailure::Format(error),
                });
            }
        };
        let decoded = match decoder.join() {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(error)) => return Err(CompressFailure::Unproven(error.to_string())),
            Err(_) => return Err(CompressFailure::Unproven("the decoder crashed".to_owned())),
        };
        let read = read.fingerprint();
        match proof::check(source_info, &read, &decoded) {
            Ok(()) => {}
            Err(proof::Disproof::BadRead(why)) => return Err(CompressFailure::BadRead(why)),
            Err(proof::Disproof::BadOutput(why)) => return Err(CompressFailure::Unproven(why)),
        }
        writer
            .release(last)
            .map_err(|source| CompressFailure::Format(as_compress_error(source)))
            .map(|()| (stats, read))
    })
}

/// Why the compressor's side did not hand over a proven output.
enum CompressFailure {
    Format(FormatError),
    /// What was read is not the source as S3 describes it.
    BadRead(String),
    /// The output does not decode back to what was read.
    Unproven(String),
}

/// Why writing the output did not succeed.
enum WriteFailure {
    /// A conditional write lost: the output changed since it was inspected.
    Raced,
    /// The store refused a write for another reason.
    Store(StoreError),
    Stop(Stop),
}

/// Where the object an event names is.
fn source_of(object: &ObjectRef) -> Location {
    Location {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
    }
}

/// The source is gone: fine if its output exists (an earlier delivery finished), otherwise
/// nothing can be done and retrying would not change that.
fn source_gone(
    source: &Location,
    output: &Location,
    existing_output: Option<&ObjectInfo>,
) -> Outcome {
    match existing_output {
        Some(info) if identity::made_from_key(info, &source.key) => Outcome::AlreadyDone {
            output_key: output.key.clone(),
            source: SourceFate::AlreadyGone,
        },
        _ => Outcome::SourceMissing,
    }
}

/// What the output's HEAD shows is wrong with it: another size than was written, another
/// CRC-64/NVME than was sent (when the store keeps one), or not this source's identity.
fn stored_problem(
    stored: &ObjectInfo,
    uploaded: &Uploaded,
    identity: &SourceIdentity,
) -> Option<String> {
    if stored.size != uploaded.bytes {
        return Some(format!(
            "is {} bytes but {} were written",
            stored.size, uploaded.bytes
        ));
    }
    if let Some(crc) = stored
        .crc64nvme
        .as_ref()
        .filter(|crc| **crc != uploaded.crc64nvme)
    {
        return Some(format!(
            "has CRC-64/NVME {crc} but {} was written",
            uploaded.crc64nvme
        ));
    }
    (!identity.made(stored))
        .then(|| "does not carry this source's identity in its metadata".to_owned())
}

fn collision(output: &Location, existing: &ObjectInfo) -> Outcome {
    let origin = identity::source_key_of(existing).map_or_else(
        || "not by s3-compressor".to_owned(),
        |key| format!("from {key}"),
    );
    Outcome::permanent(format!(
        "s3://{}/{} already exists, made {origin}; it is not overwritten and the source is kept \
         (two sources map to the same output key: rename one, or route them differently)",
        output.bucket, output.key
    ))
}

fn failed(error: StoreError) -> Stop {
    let retry = error.is(ErrorClass::Transient);
    Box::new(Outcome::Failed {
        retry,
        error: error.to_string(),
    })
}

/// A failed read surfaces inside the compressor as an I/O error; its class decides.
fn compression_failed(error: FormatError) -> Outcome {
    store_error_in(&error).unwrap_or_else(|| Outcome::permanent(error.to_string()))
}

/// The S3 error behind a format's I/O error, if a read from S3 is what failed.
fn store_error_in(error: &FormatError) -> Option<Outcome> {
    let (FormatError::Compress { source, .. } | FormatError::Decompress { source, .. }) = error
    else {
        return None;
    };
    source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StoreError>())
        .map(|read_error| Outcome::Failed {
            retry: read_error.is(ErrorClass::Transient),
            error: read_error.to_string(),
        })
}

/// A read (of `what`) that failed outside a format.
fn read_failed(what: &str, error: &std::io::Error) -> Outcome {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StoreError>())
    {
        Some(read_error) => Outcome::Failed {
            retry: read_error.is(ErrorClass::Transient),
            error: read_error.to_string(),
        },
        None => Outcome::transient(format!("reading {what} failed: {error}")),
    }
}

/// The CRC-64/NVME of `bytes` as S3 reports it: for small objects written whole, and the
/// in-memory store of the unit tests.
pub(crate) fn crc64nvme_of(bytes: &[u8]) -> String {
    transfer::encode_crc(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes))
}

#[cfg(test)]
pub(crate) use proof::stored_as;

#[cfg(test)]
mod tests;

/// The last path component: the name a user gave the file.
pub(crate) fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
