//! Moving bytes between the async S3 calls and the blocking compressor, with bounded memory.
//!
//! ```text
//! GET body ──chunks──▶ SourceReader ─▶ Format::compress ─▶ PartWriter ──parts──▶ upload_output
//!  (async task)        (blocking thread)                                      (async, N parts in flight)
//! ```
//! Both sides are bounded, so a slow side stalls the other instead of buffering: the download
//! by a budget of bytes read ahead, the output by a [`PartBudget`] of `parts_in_flight + 1`
//! parts (those uploading and the one filling). The output holds at most
//! `(parts_in_flight + 1) × part_size`, whatever the object's size, plus the one part the
//! proof's decoder may still be reading after its upload returned.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use crc_fast::{CrcAlgorithm, Digest};
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::store::{ErrorClass, Location, ObjectStore, OutputSpec, Part, StoreError, Written};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

const MIB: u64 = 1024 * 1024;

/// The most output a source of `source_size` bytes makes: deflate and zstd add well under 1%
/// to incompressible input, archives a few KiB of headers.
pub(crate) fn worst_output(source_size: u64) -> u64 {
    source_size + source_size / 100 + 64 * 1024
}

/// Part size for a source of `source_size` bytes: at least `min_part_size`, and large enough
/// that 10,000 parts hold even incompressible input plus the format's overhead.
pub(crate) fn part_size(source_size: u64, min_part_size: usize) -> usize {
    let needed = worst_output(source_size).div_ceil(MAX_PARTS);
    if needed <= min_part_size as u64 {
        return min_part_size;
    }
    usize::try_from(needed.div_ceil(MIB) * MIB).unwrap_or(usize::MAX)
}

/// Feeds the download to the compressor's reader, at most `read_ahead_bytes` ahead of it (plus
/// the chunk just received); stops when the reader goes away.
///
/// Bounded in bytes, not chunks, because chunk sizes depend on the connection: S3 over TLS
/// delivers records of about 16 KiB, a local endpoint half a MiB at a time.
pub(crate) fn spawn_download(
    mut body: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
    read_ahead_bytes: usize,
) -> SourceReader {
    let budget_bytes = u32::try_from(read_ahead_bytes.max(1)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(budget_bytes as usize));
    // The budget bounds what is queued: every chunk holds at least one permit.
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let failed = chunk.is_err();
            let size = chunk.as_ref().map_or(0, Bytes::len);
            // A chunk larger than the whole budget waits for all of it, then goes alone.
            let permits = u32::try_from(size)
                .unwrap_or(u32::MAX)
                .clamp(1, budget_bytes);
            let Ok(reserved) = Arc::clone(&budget).acquire_many_owned(permits).await else {
                break;
            };
            let held = chunk.map(|bytes| HeldChunk {
                bytes,
                _reserved: reserved,
            });
            if sender.send(held).is_err() || failed {
                break;
            }
        }
    });
    SourceReader {
        chunks: receiver,
        current: None,
    }
}

/// Downloaded bytes, holding their place in the read-ahead budget until the compressor has
/// read them.
struct HeldChunk {
    bytes: Bytes,
    _reserved: OwnedSemaphorePermit,
}

/// The source object as a blocking [`Read`], for the compressor's thread.
pub(crate) struct SourceReader {
    chunks: mpsc::UnboundedReceiver<Result<HeldChunk, StoreError>>,
    current: Option<HeldChunk>,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.current {
                Some(chunk) if !chunk.bytes.is_empty() => {
                    let n = buf.len().min(chunk.bytes.len());
                    buf[..n].copy_from_slice(&chunk.bytes.split_to(n));
                    return Ok(n);
                }
                // Dropping a finished chunk returns its bytes to the budget.
                _ => match self.chunks.blocking_recv() {
                    None => return Ok(0),
                    Some(Ok(chunk)) => self.current = Some(chunk),
                    Some(Err(error)) => return Err(io::Error::other(error)),
                },
            }
        }
    }
}

/// How many parts of output may exist at once, counted from the moment the writer starts
/// filling one until its upload returns.
///
/// Channel capacities alone do not bound this: a part also waits in the channel, in the
/// writer's blocked send and in the uploader's hand while every upload slot is taken, which
/// let a fast codec on incompressible input hold seven 8 MiB parts at once.
#[derive(Debug, Clone)]
pub(crate) struct PartBudget(Arc<Semaphore>);

impl PartBudget {
    /// Room for `in_flight` parts uploading and one filling.
    pub(crate) fn new(in_flight: usize) -> Self {
        Self(Arc::new(Semaphore::new(in_flight.max(1) + 1)))
    }

    /// Waits, on the compressor's blocking thread, until a part may be started.
    fn reserve(&self) -> io::Result<OwnedSemaphorePermit> {
        futures::executor::block_on(Arc::clone(&self.0).acquire_owned())
            .map_err(|_| io::Error::other("the part budget was closed"))
    }
}

/// Output bytes, holding their place in the [`PartBudget`] until they are uploaded.
pub(crate) struct OutputBytes {
    pub bytes: Bytes,
    _reserved: Option<OwnedSemaphorePermit>,
}

/// What the compressor's thread sends to the uploader.
pub(crate) enum Chunk {
    /// A full part.
    Part(OutputBytes),
    /// Compression succeeded; the last (possibly short or empty) piece of output.
    Finished { last: OutputBytes, crc64nvme: u64 },
}

/// Cuts the compressed output into parts and hands each to the uploader, and a copy of each
/// to the decoder that proves the output (see [`super::proof`]).
///
/// Only an explicit [`PartWriter::release`] tells the uploader the output is whole: if the
/// compressor fails or panics, or the proof fails, the channel just closes and the upload is
/// aborted.
pub(crate) struct PartWriter {
    parts: mpsc::Sender<Chunk>,
    /// `None` once the output is closed, which ends the decoder's stream.
    copies: Option<std::sync::mpsc::SyncSender<Bytes>>,
    /// The decoder stopped taking parts before the end: it failed, and its error is the one
    /// that explains the writer's.
    decoder_stopped: bool,
    budget: PartBudget,
    /// The part being filled and its place in the budget; `None` between parts, so the next
    /// part is only started (and allocated) once the budget has room.
    filling: Option<(Vec<u8>, OwnedSemaphorePermit)>,
    part_size: usize,
    /// What a part is allocated with: the part size, or less when the whole output will be
    /// smaller, so that a 1 KiB object does not allocate 8 MiB.
    part_capacity: usize,
    crc: Digest,
}

impl PartWriter {
    pub(crate) fn new(
        parts: mpsc::Sender<Chunk>,
        copies: std::sync::mpsc::SyncSender<Bytes>,
        part_size: usize,
        expected_output: u64,
        budget: PartBudget,
    ) -> Self {
        Self {
            parts,
            copies: Some(copies),
            decoder_stopped: false,
            budget,
            filling: None,
            part_size,
            part_capacity: usize::try_from(expected_output)
                .map_or(part_size, |expected| expected.clamp(1, part_size)),
            crc: Digest::new(CrcAlgorithm::Crc64Nvme),
        }
    }

    /// Ends the output: the last part goes to the decoder, whose stream then ends. The
    /// uploader hears nothing yet.
    pub(crate) fn close(&mut self) -> io::Result<OutputBytes> {
        let last = self.seal()?;
        self.copies = None;
        Ok(last)
    }

    /// Tells the uploader the output is whole, and proven: it may complete the upload.
    pub(crate) fn release(self, last: OutputBytes) -> io::Result<()> {
        let crc64nvme = self.crc.finalize();
        self.send(Chunk::Finished { last, crc64nvme })
    }

    pub(crate) fn decoder_stopped(&self) -> bool {
        self.decoder_stopped
    }

    /// Ends the part being filled (empty if none was started), with its place in the budget,
    /// and gives the decoder its copy.
    fn seal(&mut self) -> io::Result<OutputBytes> {
        let Some((buffer, reserved)) = self.filling.take() else {
            return Ok(OutputBytes {
                bytes: Bytes::new(),
                _reserved: None,
            });
        };
        self.crc.update(&buffer);
        let bytes = Bytes::from(buffer);
        if let Some(copies) = &self.copies {
            if copies.send(bytes.clone()).is_err() {
                self.decoder_stopped = true;
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the decoder checking the output stopped",
                ));
            }
        }
        Ok(OutputBytes {
            bytes,
            _reserved: Some(reserved),
        })
    }

    fn send(&self, chunk: Chunk) -> io::Result<()> {
        self.parts.blocking_send(chunk).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload of the output stopped",
            )
        })
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (buffer, _) = match &mut self.filling {
            Some(filling) => filling,
            None => {
                let reserved = self.budget.reserve()?;
                self.filling
                    .insert((Vec::with_capacity(self.part_capacity), reserved))
            }
        };
        let n = buf.len().min(self.part_size - buffer.len());
        buffer.extend_from_slice(&buf[..n]);
        if buffer.len() == self.part_size {
            let part = self.seal()?;
            self.send(Chunk::Part(part))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the uploader produced.
#[derive(Debug)]
pub(crate) struct Uploaded {
    pub written: Written,
    pub bytes: u64,
    /// Base64 of the big-endian CRC-64/NVME, as S3 reports checksums.
    pub crc64nvme: String,
}

/// Why the output could not be written.
#[derive(Debug)]
pub(crate) enum UploadError {
    Store(StoreError),
    /// The compressor stopped without finishing; its own error says why.
    Incomplete,
}

/// The id of a multipart upload in progress, shared with an [`AbortOnDrop`] guard.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingUpload(Arc<Mutex<Option<String>>>);

impl PendingUpload {
    pub(crate) fn set(&self, id: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = id;
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Aborts the pending multipart upload, if any, when dropped: the deadline drops the upload's
/// future wherever it is, and an upload left behind would cost storage until the lifecycle
/// rule removed it.
pub(crate) struct AbortOnDrop {
    pub store: Arc<dyn ObjectStore>,
    pub location: Location,
    pub pending: PendingUpload,
    /// Where the abort is tracked, so that an entry point stopping early can wait for it.
    pub aborts: TaskTracker,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.pending.take() else {
            return;
        };
        let (store, location) = (Arc::clone(&self.store), self.location.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.aborts.track_future(async move {
                    abort(store.as_ref(), &location, &upload_id).await;
                }));
            }
            Err(_) => tracing::error!(upload_id, "no runtime left to abort the multipart upload"),
        }
    }
}

/// Uploads the output as it is produced: one PutObject if it fits in one part, else a
/// multipart upload with up to `in_flight` parts on the wire.
///
/// While a multipart upload is open its id is in `pending`; on its own errors this aborts
/// the upload itself.
pub(crate) async fn upload_output(
    store: Arc<dyn ObjectStore>,
    spec: &OutputSpec,
    mut chunks: mpsc::Receiver<Chunk>,
    in_flight: usize,
    pending: &PendingUpload,
) -> Result<Uploaded, UploadError> {
    let first = chunks.recv().await.ok_or(UploadError::Incomplete)?;
    let first_part = match first {
        Chunk::Finished { last, crc64nvme } => {
            let crc64nvme = encode_crc(crc64nvme);
            let bytes = last.bytes.len() as u64;
            let written = store
                .put(spec, last.bytes, &crc64nvme)
                .await
                .map_err(UploadError::Store)?;
            return Ok(Uploaded {
                written,
                bytes,
                crc64nvme,
            });
        }
        Chunk::Part(part) => part,
    };

    let id = match store.create_multipart(spec).await {
        Ok(id) => id,
        Err(error) => {
            // An attempt whose answer was lost may still have started an upload.
            abort_strays(store.as_ref(), &spec.location).await;
            return Err(UploadError::Store(error));
        }
    };
    pending.set(Some(id.clone()));
    let result = upload_parts(Arc::clone(&store), spec, &id, first_part, chunks, in_flight).await;
    pending.set(None);
    match &result {
        Ok(_) => abort_strays(store.as_ref(), &spec.location).await,
        Err(_) => abort(store.as_ref(), &spec.location, &id).await,
    }
    result.map_err(|error| match error {
        // The upload vanished under us: someone aborted it (a concurrent delivery cleaning up
        // after itself). The next attempt starts afresh.
        UploadError::Store(mut error) if error.is(ErrorClass::NotFound) => {
            error.class = ErrorClass::Transient;
            UploadError::Store(error)
        }
        other => other,
    })
}

/// Aborts the uploads still open on the output's key. A CreateMultipartUpload whose answer was
/// lost starts an upload nobody knows the id of; once this run's output is complete (or its
/// upload could not even start), no other open upload on the key can become the output
/// without failing its write condition, so aborting them loses nothing: at worst a
/// concurrent delivery of the same object fails transiently and finds the output on its
/// retry. Best effort: the bucket's lifecycle rule is the backstop.
pub(crate) async fn abort_strays(store: &dyn ObjectStore, location: &Location) {
    match store.open_uploads(location).await {
        Ok(ids) => {
            for id in ids {
                abort(store, location, &id).await;
            }
        }
        Err(error) => tracing::warn!(%error, "could not list the uploads left open on the output"),
    }
}

async fn upload_parts(
    store: Arc<dyn ObjectStore>,
    spec: &OutputSpec,
    upload_id: &str,
    first_part: OutputBytes,
    mut chunks: mpsc::Receiver<Chunk>,
    in_flight: usize,
) -> Result<Uploaded, UploadError> {
    let mut tasks = JoinSet::new();
    let mut parts = Vec::new();
    let mut bytes = 0u64;
    let mut number = 0i32;
    let mut next = Some(Chunk::Part(first_part));
    let crc64nvme = loop {
        let (part, finished) = match next.take() {
            Some(Chunk::Part(part)) => (part, None),
            Some(Chunk::Finished { last, crc64nvme }) => (last, Some(crc64nvme)),
            None => return Err(UploadError::Incomplete),
        };
        // An empty last piece after full parts adds nothing; S3 also rejects empty parts
        // anywhere but alone.
        if !part.bytes.is_empty() || number == 0 {
            while tasks.len() >= in_flight.max(1) {
                parts.push(joined(tasks.join_next().await)?);
            }
            number += 1;
            bytes += part.bytes.len() as u64;
            let store = store.clone();
            let location = spec.location.clone();
            let upload_id = upload_id.to_owned();
            tasks.spawn(async move {
                let OutputBytes { bytes, _reserved } = part;
                store
                    .upload_part(&location, &upload_id, number, bytes)
                    .await
            });
        }
        if let Some(crc) = finished {
            break crc;
        }
        next = chunks.recv().await;
    };
    while let Some(result) = tasks.join_next().await {
        parts.push(joined(Some(result))?);
    }
    parts.sort_by_key(|part| part.number);
    let crc64nvme = encode_crc(crc64nvme);
    let written = match store
        .complete_multipart(spec, upload_id, parts, &crc64nvme)
        .await
    {
        Ok(written) => written,
        // A retried complete whose first attempt succeeded but whose answer was lost: the
        // upload is gone because it became the object. Only our exact bytes count as that.
        Err(error) if error.is(ErrorClass::NotFound) => {
            match completed_meanwhile(store.as_ref(), spec, bytes, &crc64nvme).await {
                Some(written) => written,
                None => return Err(UploadError::Store(error)),
            }
        }
        Err(error) => return Err(UploadError::Store(error)),
    };
    Ok(Uploaded {
        written,
        bytes,
        crc64nvme,
    })
}

/// The output as this upload would have completed it, if that is what is there now: the
/// size, the full-object checksum and the source identity all match.
pub(crate) async fn completed_meanwhile(
    store: &dyn ObjectStore,
    spec: &OutputSpec,
    bytes: u64,
    crc64nvme: &str,
) -> Option<Written> {
    let info = store.head(&spec.location, None).await.ok()??;
    let ours = info.size == bytes
        && info.crc64nvme.as_deref() == Some(crc64nvme)
        && spec
            .metadata
            .iter()
            .all(|(name, value)| info.metadata.get(name) == Some(value));
    ours.then(|| {
        tracing::info!(key = %spec.location.key, "the upload had completed; its answer was lost");
        Written {
            etag: info.etag,
            version_id: info.version_id,
        }
    })
}

fn joined(
    result: Option<Result<Result<Part, StoreError>, tokio::task::JoinError>>,
) -> Result<Part, UploadError> {
    match result {
        Some(Ok(Ok(part))) => Ok(part),
        Some(Ok(Err(error))) => Err(UploadError::Store(error)),
        // A part task that panicked or was cancelled: nothing sensible to complete.
        Some(Err(_)) | None => Err(UploadError::Incomplete),
    }
}

/// Best effort: a failed abort is logged, and the bucket's lifecycle rule for incomplete
/// uploads is the backstop.
pub(crate) async fn abort(store: &dyn ObjectStore, location: &Location, upload_id: &str) {
    match store.abort_multipart(location, upload_id).await {
        Ok(()) => {
            tracing::info!(bucket = %location.bucket, key = %location.key, "multipart upload aborted")
        }
        Err(error) if error.is(ErrorClass::NotFound) => {}
        Err(error) => tracing::error!(%error, upload_id, "could not abort the multipart upload"),
    }
}

pub(crate) fn encode_crc(crc: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ContentHeaders, WriteCondition};

    const MIB: usize = 1024 * 1024;

    /// A compressor slower than the download (most are): what the download takes from the body
    /// stays within the byte budget, however small the chunks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_download_reads_ahead_at_most_its_budget_in_bytes() {
        const CHUNK: usize = 1000;
        const CHUNKS: usize = 100;
        const BUDGET: usize = 4 * CHUNK;
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&taken);
        let body = futures::stream::iter((0..CHUNKS).map(move |i| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from(vec![(i % 251) as u8; CHUNK]))
        }))
        .boxed();
        let mut reader = spawn_download(body, BUDGET);
        // Nothing is read yet: the download runs until the budget stops it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ahead = taken.load(Ordering::SeqCst);
        assert!(
            ahead <= BUDGET / CHUNK + 1,
            "{ahead} chunks of {CHUNK} bytes taken ahead of a reader that read nothing; budget {BUDGET} bytes"
        );
        let read = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all)
        })
        .await
        .unwrap()
        .unwrap();
        let expected: Vec<u8> = (0..CHUNKS)
            .flat_map(|i| vec![(i % 251) as u8; CHUNK])
            .collect();
        assert_eq!(read, expected);
    }

    /// A codec far faster than the uploads (incompressible input through zstd does this): the
    /// output must wait for the budget instead of piling up parts in the channel and the
    /// uploader's hands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_held_at_once_is_the_parts_uploading_plus_the_one_filling() {
        const PART: usize = 64 * 1024;
        const PARTS: usize = 24;
        const IN_FLIGHT: usize = 2;
        let store = Arc::new(MemoryStore::with_part_latency(Duration::from_millis(20)));
        let spec = OutputSpec {
            location: Location {
                bucket: "files".to_owned(),
                key: "processed/big.zst".to_owned(),
            },
            headers: ContentHeaders::of_type("application/zstd"),
            metadata: HashMap::new(),
            condition: WriteCondition::Absent,
        };
        let (parts, chunks) = mpsc::channel(1);
        let budget = PartBudget::new(IN_FLIGHT);
        let observed = Arc::clone(&store);
        let (copies, copied) = std::sync::mpsc::sync_channel(1);
        let draining = std::thread::spawn(move || copied.iter().count());
        let writing = tokio::task::spawn_blocking(move || {
            let mut writer = PartWriter::new(parts, copies, PART, PART as u64, budget);
            let block = vec![7u8; 16 * 1024];
            let (mut written, mut most_held) = (0, 0);
            while written < PARTS * PART {
                written += writer.write(&block)?;
                // Parts begun and not yet uploaded, each up to a part of memory.
                most_held = most_held.max(written.div_ceil(PART) - observed.parts_uploaded());
            }
            let last = writer.close()?;
            writer.release(last)?;
            io::Result::Ok(most_held)
        });
        let store_for_upload: Arc<dyn ObjectStore> = store.clone();
        let uploaded = upload_output(
            store_for_upload,
            &spec,
            chunks,
            IN_FLIGHT,
            &PendingUpload::default(),
        )
        .await;
        let most_held = writing.await.unwrap().unwrap();
        assert_eq!(draining.join().unwrap(), PARTS, "every part was copied");

        assert_eq!(
            uploaded.ok().map(|done| done.bytes),
            Some((PARTS * PART) as u64)
        );
        assert_eq!(store.parts_uploaded(), PARTS);
        assert!(
            most_held <= IN_FLIGHT + 1,
            "{most_held} parts held at once, budget {}",
            IN_FLIGHT + 1
        );
    }

    #[test]
    fn parts_start_at_the_minimum_and_grow_to_fit_ten_thousand() {
        assert_eq!(part_size(0, 8 * MIB), 8 * MIB);
        assert_eq!(part_size(1 << 30, 8 * MIB), 8 * MIB);
        for size in [80u64 << 30, 1 << 40, 5 << 40] {
            let part = part_size(size, 8 * MIB) as u64;
            assert!(part * MAX_PARTS >= size + size / 100, "{size}: {part}");
            assert_eq!(part % MIB as u64, 0);
        }
    }
}
