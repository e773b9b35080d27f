//! Moving bytes between the async S3 calls and the blocking compressor, with bounded memory.
//!
//! ```text
//! GET body ──chunks──▶ SourceReader ─▶ Format::compress ─▶ PartWriter ──parts──▶ upload_output
//!  (async task)        (blocking thread)                                      (async, N parts in flight)
//! ```
//! Both channels are bounded, so a slow side stalls the other instead of buffering: memory is
//! about `(parts_in_flight + 2) × part_size` plus the codec, whatever the object's size.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use crc_fast::{CrcAlgorithm, Digest};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::store::{ErrorClass, Location, ObjectStore, OutputSpec, Part, StoreError, Written};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// Part size for a source of `source_size` bytes: at least `min_part_size`, and large enough
/// that 10,000 parts hold even incompressible input plus the format's overhead.
pub(crate) fn part_size(source_size: u64, min_part_size: usize) -> usize {
    const MIB: u64 = 1024 * 1024;
    // Deflate and zstd add well under 1% to incompressible input; archives add a few KiB.
    let worst_output = source_size + source_size / 100 + MIB;
    let needed = worst_output.div_ceil(MAX_PARTS);
    if needed <= min_part_size as u64 {
        return min_part_size;
    }
    usize::try_from(needed.div_ceil(MIB) * MIB).unwrap_or(usize::MAX)
}

/// Feeds the download to a bounded channel; stops when the reader goes away.
pub(crate) fn spawn_download(
    mut body: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
    capacity: usize,
) -> SourceReader {
    let (sender, receiver) = mpsc::channel(capacity);
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    SourceReader {
        chunks: receiver,
        current: Bytes::new(),
    }
}

/// The source object as a blocking [`Read`], for the compressor's thread.
pub(crate) struct SourceReader {
    chunks: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What the compressor's thread sends to the uploader.
pub(crate) enum Chunk {
    /// A full part.
    Part(Bytes),
    /// Compression succeeded; the last (possibly short or empty) piece of output.
    Finished { last: Bytes, crc64nvme: u64 },
}

/// Cuts the compressed output into parts and hands each to the uploader.
///
/// Only an explicit [`PartWriter::finish`] tells the uploader the output is whole: if the
/// compressor fails or panics, the channel just closes and the upload is aborted.
pub(crate) struct PartWriter {
    parts: mpsc::Sender<Chunk>,
    buffer: Vec<u8>,
    part_size: usize,
    crc: Digest,
}

impl PartWriter {
    pub(crate) fn new(parts: mpsc::Sender<Chunk>, part_size: usize) -> Self {
        Self {
            parts,
            buffer: Vec::with_capacity(part_size),
            part_size,
            crc: Digest::new(CrcAlgorithm::Crc64Nvme),
        }
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.crc.update(&self.buffer);
        let last = Bytes::from(std::mem::take(&mut self.buffer));
        let crc64nvme = self.crc.finalize();
        self.send(Chunk::Finished { last, crc64nvme })
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
        let n = buf.len().min(self.part_size - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == self.part_size {
            self.crc.update(&self.buffer);
            let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
            self.send(Chunk::Part(Bytes::from(part)))?;
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
    fn set(&self, id: Option<String>) {
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
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.pending.take() else {
            return;
        };
        let (store, location) = (Arc::clone(&self.store), self.location.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { abort(store.as_ref(), &location, &upload_id).await });
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
            let bytes = last.len() as u64;
            let written = store
                .put(spec, last, &crc64nvme)
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

    let id = store
        .create_multipart(spec)
        .await
        .map_err(UploadError::Store)?;
    pending.set(Some(id.clone()));
    let result = upload_parts(Arc::clone(&store), spec, &id, first_part, chunks, in_flight).await;
    pending.set(None);
    if result.is_err() {
        abort(store.as_ref(), &spec.location, &id).await;
    }
    result
}

async fn upload_parts(
    store: Arc<dyn ObjectStore>,
    spec: &OutputSpec,
    upload_id: &str,
    first_part: Bytes,
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
        if !part.is_empty() || number == 0 {
            while tasks.len() >= in_flight.max(1) {
                parts.push(joined(tasks.join_next().await)?);
            }
            number += 1;
            bytes += part.len() as u64;
            let store = store.clone();
            let location = spec.location.clone();
            let upload_id = upload_id.to_owned();
            tasks
                .spawn(async move { store.upload_part(&location, &upload_id, number, part).await });
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
    let written = store
        .complete_multipart(spec, upload_id, parts, &crc64nvme)
        .await
        .map_err(UploadError::Store)?;
    Ok(Uploaded {
        written,
        bytes,
        crc64nvme,
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
    use super::*;

    const MIB: usize = 1024 * 1024;

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
