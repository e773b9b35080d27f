//! The proof an output must pass before its source may be deleted: it decodes, in this
//! process and as it is uploaded, back to exactly the bytes that were read, and those bytes
//! are the object S3 describes (its size, and its own full-object checksums when it has them).
//!
//! ```text
//! SourceReader ─▶ FingerprintReader ─▶ Format::compress ─▶ PartWriter ──parts──▶ upload
//!                  (bytes, CRC-64)                             │ the same parts
//!                                                              ▼
//!                                     Format::decompress ─▶ FingerprintWriter (bytes, CRC-64)
//! ```
//! The upload is completed only once both fingerprints agree, so an output that fails the
//! proof is never made visible.

use std::io::{self, Read, Write};
use std::sync::mpsc::Receiver;

use bytes::{Buf, Bytes};
use crc_fast::{CrcAlgorithm, Digest};
use s3_compressor_formats::{Compressor, FormatError};

use super::transfer::encode_crc as encode_crc64;
use crate::store::ObjectInfo;

/// How many bytes went through, and their checksums in the two kinds S3 keeps whole-object
/// checksums in (CRC-64/NVME by default, CRC-32 as the SDKs send it), so the bytes read can
/// also be held against the source's stored checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub bytes: u64,
    pub crc64nvme: u64,
    /// Only when there is a stored CRC-32 to hold it against: another pass over every byte
    /// is not worth it otherwise.
    pub crc32: Option<u32>,
}

#[derive(Debug)]
struct Fingerprinting {
    crc64: Digest,
    crc32: Option<Digest>,
    bytes: u64,
}

impl Fingerprinting {
    fn new(with_crc32: bool) -> Self {
        Self {
            crc64: Digest::new(CrcAlgorithm::Crc64Nvme),
            crc32: with_crc32.then(|| Digest::new(CrcAlgorithm::Crc32IsoHdlc)),
            bytes: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.crc64.update(bytes);
        if let Some(crc32) = &mut self.crc32 {
            crc32.update(bytes);
        }
        self.bytes += bytes.len() as u64;
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint {
            bytes: self.bytes,
            crc64nvme: self.crc64.finalize(),
            // A CRC-32 digest's value fits in 32 bits.
            crc32: self
                .crc32
                .as_ref()
                .map(|crc32| u32::try_from(crc32.finalize()).unwrap_or(u32::MAX)),
        }
    }
}

/// Fingerprints what the compressor reads.
pub(crate) struct FingerprintReader<R> {
    inner: R,
    fingerprint: Fingerprinting,
}

impl<R: Read> FingerprintReader<R> {
    /// Fingerprints a read of `source`, with the checksums it can be held against.
    pub(crate) fn new(inner: R, source: &ObjectInfo) -> Self {
        Self {
            inner,
            fingerprint: Fingerprinting::new(source.crc32.is_some()),
        }
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint.finish()
    }
}

impl<R: Read> Read for FingerprintReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.fingerprint.update(&buf[..n]);
        Ok(n)
    }
}

/// Fingerprints what the decoder gives back, and keeps nothing.
struct FingerprintWriter(Fingerprinting);

impl Write for FingerprintWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output's parts, as the compressor's writer copies them, as one stream.
struct PartsReader {
    parts: Receiver<Bytes>,
    current: Bytes,
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            // A closed channel is the end of the output.
            match self.parts.recv() {
                Ok(part) => self.current = part,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

/// Decodes the output parts as they arrive; ends when the sender closes the channel.
pub(crate) fn decode_parts(
    compressor: &Compressor,
    parts: Receiver<Bytes>,
) -> Result<Fingerprint, FormatError> {
    decode_stream(
        compressor,
        PartsReader {
            parts,
            current: Bytes::new(),
        },
    )
}

/// Decodes a whole output and fingerprints what it gives back.
pub(crate) fn decode_stream(
    compressor: &Compressor,
    mut compressed: impl Read,
) -> Result<Fingerprint, FormatError> {
    let mut decoded = FingerprintWriter(Fingerprinting::new(false));
    compressor.decompress(&mut compressed, &mut decoded)?;
    Ok(decoded.0.finish())
}

/// Reads a whole stream and fingerprints it.
pub(crate) fn fingerprint_stream(
    stream: impl Read,
    source: &ObjectInfo,
) -> io::Result<Fingerprint> {
    let mut reader = FingerprintReader::new(stream, source);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.fingerprint())
}

/// Why an output may not stand for its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disproof {
    /// What was read is not the object S3 describes: a download cut short or damaged on the
    /// way. Reading again may succeed.
    BadRead(String),
    /// The output does not give back what was read.
    BadOutput(String),
}

/// Holds what was read against what S3 says the source is, then against what the output
/// decodes to.
pub(crate) fn check(
    source: &ObjectInfo,
    read: Fingerprint,
    decoded: Fingerprint,
) -> Result<(), Disproof> {
    if read.bytes != source.size {
        return Err(Disproof::BadRead(format!(
            "{} bytes were read of a source of {} bytes",
            read.bytes, source.size
        )));
    }
    let read_crc64 = encode_crc64(read.crc64nvme);
    let stored_checksums = [
        (
            "CRC-64/NVME",
            source.crc64nvme.as_deref(),
            Some(read_crc64.clone()),
        ),
        (
            "CRC-32",
            source.crc32.as_deref(),
            read.crc32.map(encode_crc32),
        ),
    ];
    for (name, stored, read) in stored_checksums {
        if let (Some(stored), Some(read)) = (stored, read) {
            if stored != read {
                return Err(Disproof::BadRead(format!(
                    "the bytes read have {name} {read}, the source's stored checksum is {stored}"
                )));
            }
        }
    }
    if (decoded.bytes, decoded.crc64nvme) != (read.bytes, read.crc64nvme) {
        return Err(Disproof::BadOutput(format!(
            "the output decodes to {} bytes with CRC-64/NVME {}, but {} bytes with {} were read",
            decoded.bytes,
            encode_crc64(decoded.crc64nvme),
            read.bytes,
            read_crc64
        )));
    }
    Ok(())
}

/// Base64 of the big-endian checksum, as S3 writes checksums.
fn encode_crc32(crc: u32) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fingerprint_of(bytes: &[u8]) -> Fingerprint {
        let mut fingerprint = Fingerprinting::new(true);
        fingerprint.update(bytes);
        fingerprint.finish()
    }

    fn source(bytes: &[u8]) -> ObjectInfo {
        ObjectInfo {
            size: bytes.len() as u64,
            crc64nvme: Some(encode_crc64(fingerprint_of(bytes).crc64nvme)),
            crc32: Some(encode_crc32(crc32fast::hash(bytes))),
            ..ObjectInfo::default()
        }
    }

    #[test]
    fn the_crc32_is_the_one_s3_and_zip_use() {
        assert_eq!(fingerprint_of(b"123456789").crc32, Some(0xCBF4_3926));
        assert_eq!(
            fingerprint_of(b"123456789").crc32,
            Some(crc32fast::hash(b"123456789"))
        );
    }

    #[test]
    fn the_same_bytes_read_stored_and_decoded_pass() {
        let body = b"id,amount\n1,2\n";
        let print = fingerprint_of(body);
        assert_eq!(check(&source(body), print, print), Ok(()));
        let unchecked = ObjectInfo {
            size: body.len() as u64,
            ..ObjectInfo::default()
        };
        assert_eq!(check(&unchecked, print, print), Ok(()));
    }

    #[test]
    fn a_short_or_damaged_read_is_a_bad_read_whatever_the_output() {
        let body = b"id,amount\n1,2\n";
        let short = &body[..body.len() - 1];
        let result = check(&source(body), fingerprint_of(short), fingerprint_of(short));
        assert!(matches!(result, Err(Disproof::BadRead(_))), "{result:?}");
        let damaged = b"id,amount\n1,3\n";
        for stored in [
            ObjectInfo {
                crc32: None,
                ..source(body)
            },
            ObjectInfo {
                crc64nvme: None,
                ..source(body)
            },
        ] {
            let result = check(&stored, fingerprint_of(damaged), fingerprint_of(damaged));
            assert!(matches!(result, Err(Disproof::BadRead(_))), "{result:?}");
        }
    }

    #[test]
    fn an_output_that_decodes_to_other_bytes_is_a_bad_output() {
        let body = b"id,amount\n1,2\n";
        for decoded in [&b"id,amount\n1,3\n"[..], &body[..3], b""] {
            let result = check(&source(body), fingerprint_of(body), fingerprint_of(decoded));
            assert!(matches!(result, Err(Disproof::BadOutput(_))), "{result:?}");
        }
    }

    #[test]
    fn parts_read_back_as_one_stream() {
        let (sender, parts) = std::sync::mpsc::sync_channel(4);
        for part in [&b"ab"[..], b"", b"cde", b"f"] {
            sender.send(Bytes::copy_from_slice(part)).unwrap();
        }
        drop(sender);
        let mut reader = PartsReader {
            parts,
            current: Bytes::new(),
        };
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"abcdef");
    }
}
