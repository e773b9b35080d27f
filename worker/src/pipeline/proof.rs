//! The proof an output must pass before its source may be deleted: it decodes, in this
//! process and as it is uploaded, back to exactly the bytes that were read, and those bytes
//! are the object S3 describes (its size, and its own full-object checksum, or the MD5 its ETag
//! is, when it has one: see [`held_against`]).
//!
//! ```text
//! SourceReader ─▶ FingerprintReader ─▶ Format::compress ─▶ PartWriter ──parts──▶ upload
//!                  (bytes, CRC-64)                             │ the same parts
//!                                                              ▼
//!                                     Format::decompress ─▶ FingerprintWriter (bytes, CRC-64)
//! ```
//! The upload is completed only once both fingerprints agree, so an output that fails the
//! proof is never made visible. Once written, the output is shown to be the bytes sent: by the
//! store's own CRC-64/NVME, or by reading it back where the store keeps none (`verify`).

use std::io::{self, Read, Write};
use std::sync::mpsc::Receiver;

use bytes::{Buf, Bytes};
use crc_fast::{CrcAlgorithm, Digest};
use s3_compressor_formats::{Compressor, FormatError};
use sha2::Digest as _;

use super::transfer::encode_crc as encode_crc64;
use crate::outcome::SourceProof;
use crate::store::ObjectInfo;

/// How many bytes went through, their CRC-64/NVME, and the source's own kind of checksum when
/// it keeps another, so the bytes read can be held against what the store says the source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub bytes: u64,
    pub crc64nvme: u64,
    /// Encoded as the store gives it, for the [`SourceProof`] of the read.
    pub held: Option<String>,
}

/// The stored checksum the bytes read are held against, and what it is: of those the source
/// has, the cheapest to compute beside the CRC-64/NVME that the proof computes anyway (a
/// source keeps one checksum algorithm, so the choice is mostly between it and the ETag).
pub(crate) fn held_against(source: &ObjectInfo) -> Option<(SourceProof, &str)> {
    [
        (SourceProof::Crc64Nvme, &source.crc64nvme),
        (SourceProof::Crc32c, &source.crc32c),
        (SourceProof::Crc32, &source.crc32),
        (SourceProof::Sha1, &source.sha1),
        (SourceProof::Sha256, &source.sha256),
        (SourceProof::EtagMd5, &source.md5),
    ]
    .into_iter()
    .find_map(|(proof, stored)| Some((proof, stored.as_deref()?)))
}

/// What the bytes read of `source` are proven against.
pub(crate) fn source_proof(source: &ObjectInfo) -> SourceProof {
    held_against(source).map_or(SourceProof::SizeOnly, |(proof, _)| proof)
}

/// The one digest computed beside the CRC-64/NVME: only when there is a stored value to hold
/// it against, since every digest is another pass over every byte.
enum Held {
    Crc32(Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
}

impl Held {
    fn for_source(source: &ObjectInfo) -> Option<Self> {
        Self::for_proof(source_proof(source))
    }

    fn for_proof(proof: SourceProof) -> Option<Self> {
        Some(match proof {
            SourceProof::Crc64Nvme | SourceProof::SizeOnly => return None,
            SourceProof::Crc32c => Self::Crc32(Digest::new(CrcAlgorithm::Crc32Iscsi)),
            SourceProof::Crc32 => Self::Crc32(Digest::new(CrcAlgorithm::Crc32IsoHdlc)),
            SourceProof::Sha1 => Self::Sha1(sha1::Sha1::new()),
            SourceProof::Sha256 => Self::Sha256(sha2::Sha256::new()),
            SourceProof::EtagMd5 => Self::Md5(md5::Md5::new()),
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Crc32(digest) => digest.update(bytes),
            Self::Sha1(digest) => digest.update(bytes),
            Self::Sha256(digest) => digest.update(bytes),
            Self::Md5(digest) => digest.update(bytes),
        }
    }

    /// As S3 writes it: checksums in base64 (a CRC big-endian), the ETag in lower-case hex.
    fn finish(&self) -> String {
        use base64::Engine as _;
        let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        match self {
            // A CRC-32 digest's value fits in 32 bits.
            Self::Crc32(digest) => {
                encode_crc32(u32::try_from(digest.finalize()).unwrap_or(u32::MAX))
            }
            Self::Sha1(digest) => base64(digest.clone().finalize().as_slice()),
            Self::Sha256(digest) => base64(digest.clone().finalize().as_slice()),
            Self::Md5(digest) => digest
                .clone()
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }
    }
}

struct Fingerprinting {
    crc64: Digest,
    held: Option<Held>,
    bytes: u64,
}

impl Fingerprinting {
    fn new(held: Option<Held>) -> Self {
        Self {
            crc64: Digest::new(CrcAlgorithm::Crc64Nvme),
            held,
            bytes: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.crc64.update(bytes);
        if let Some(held) = &mut self.held {
            held.update(bytes);
        }
        self.bytes += bytes.len() as u64;
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint {
            bytes: self.bytes,
            crc64nvme: self.crc64.finalize(),
            held: self.held.as_ref().map(Held::finish),
        }
    }
}

/// Fingerprints what the compressor reads.
pub(crate) struct FingerprintReader<R> {
    inner: R,
    fingerprint: Fingerprinting,
}

impl<R: Read> FingerprintReader<R> {
    /// Fingerprints a read of `source`, with the checksum it can be held against.
    pub(crate) fn new(inner: R, source: &ObjectInfo) -> Self {
        Self {
            inner,
            fingerprint: Fingerprinting::new(Held::for_source(source)),
        }
    }

    /// Fingerprints bytes with no stored checksum but a CRC-64/NVME to be held against.
    pub(crate) fn crc64_only(inner: R) -> Self {
        Self {
            inner,
            fingerprint: Fingerprinting::new(None),
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
    let mut decoded = FingerprintWriter(Fingerprinting::new(None));
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
    read: &Fingerprint,
    decoded: &Fingerprint,
) -> Result<(), Disproof> {
    if read.bytes != source.size {
        return Err(Disproof::BadRead(format!(
            "{} bytes were read of a source of {} bytes",
            read.bytes, source.size
        )));
    }
    let read_crc64 = encode_crc64(read.crc64nvme);
    if let Some((proof, stored)) = held_against(source) {
        let computed = match proof {
            SourceProof::Crc64Nvme => Some(read_crc64.as_str()),
            _ => read.held.as_deref(),
        };
        if computed != Some(stored) {
            return Err(Disproof::BadRead(format!(
                "the bytes read have {} {}, the source's stored value is {stored}",
                name(proof),
                computed.unwrap_or("(not computed)")
            )));
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

/// The stored value's name, for messages.
fn name(proof: SourceProof) -> &'static str {
    match proof {
        SourceProof::Crc64Nvme => "CRC-64/NVME",
        SourceProof::Crc32c => "CRC-32C",
        SourceProof::Crc32 => "CRC-32",
        SourceProof::Sha1 => "SHA-1",
        SourceProof::Sha256 => "SHA-256",
        SourceProof::EtagMd5 => "MD5 (its ETag)",
        SourceProof::SizeOnly => "size",
    }
}

/// `bytes` as a store that keeps only `kept` describes them, for the unit tests' store.
#[cfg(test)]
pub(crate) fn stored_as(kept: SourceProof, bytes: &[u8]) -> ObjectInfo {
    let value = || {
        let mut held = Held::for_proof(kept)?;
        held.update(bytes);
        Some(held.finish())
    };
    let mut info = ObjectInfo {
        size: bytes.len() as u64,
        ..ObjectInfo::default()
    };
    match kept {
        SourceProof::Crc64Nvme => {
            let crc = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, bytes);
            info.crc64nvme = Some(encode_crc64(crc));
        }
        SourceProof::Crc32c => info.crc32c = value(),
        SourceProof::Crc32 => info.crc32 = value(),
        SourceProof::Sha1 => info.sha1 = value(),
        SourceProof::Sha256 => info.sha256 = value(),
        SourceProof::EtagMd5 => info.md5 = value(),
        SourceProof::SizeOnly => {}
    }
    info
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

    fn fingerprint(source: &ObjectInfo, bytes: &[u8]) -> Fingerprint {
        let mut fingerprint = Fingerprinting::new(Held::for_source(source));
        fingerprint.update(bytes);
        fingerprint.finish()
    }

    /// `123456789` with each kind of stored value S3 may have for it (the check values of the
    /// CRCs' catalogue and the digests' test vectors), one at a time.
    fn check_string_stored_with_each() -> Vec<(SourceProof, ObjectInfo)> {
        let size = ObjectInfo {
            size: 9,
            ..ObjectInfo::default()
        };
        let with = |edit: fn(&mut ObjectInfo)| {
            let mut info = size.clone();
            edit(&mut info);
            info
        };
        vec![
            (
                SourceProof::Crc64Nvme,
                with(|info| info.crc64nvme = Some(encode_crc64(0xAE8B_1486_0A79_9888))),
            ),
            (
                SourceProof::Crc32c,
                with(|info| info.crc32c = Some(encode_crc32(0xE306_9283))),
            ),
            (
                SourceProof::Crc32,
                with(|info| info.crc32 = Some(encode_crc32(0xCBF4_3926))),
            ),
            (
                SourceProof::Sha1,
                with(|info| info.sha1 = Some("98O8HYCOBHMq32eZZczDTKeuNEE=".to_owned())),
            ),
            (
                SourceProof::Sha256,
                with(|info| {
                    info.sha256 = Some("FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=".to_owned());
                }),
            ),
            (
                SourceProof::EtagMd5,
                with(|info| info.md5 = Some("25f9e794323b453885f5181f1b624d0b".to_owned())),
            ),
            (SourceProof::SizeOnly, size),
        ]
    }

    #[test]
    fn each_stored_value_is_computed_as_s3_computes_it_and_only_it() {
        for (proof, stored) in check_string_stored_with_each() {
            assert_eq!(source_proof(&stored), proof);
            let read = fingerprint(&stored, b"123456789");
            assert_eq!(read.bytes, 9);
            assert_eq!(
                read.held.is_some(),
                !matches!(proof, SourceProof::Crc64Nvme | SourceProof::SizeOnly),
                "{proof:?}: a digest is computed only for a stored value other than CRC-64/NVME"
            );
            assert_eq!(check(&stored, &read, &read), Ok(()), "{proof:?}");
        }
    }

    #[test]
    fn the_cheapest_stored_value_is_the_one_held() {
        let (_, crc64) = &check_string_stored_with_each()[0];
        let all = ObjectInfo {
            crc32: Some(encode_crc32(0xCBF4_3926)),
            md5: Some("25f9e794323b453885f5181f1b624d0b".to_owned()),
            ..crc64.clone()
        };
        assert_eq!(source_proof(&all), SourceProof::Crc64Nvme);
        let no_crc64 = ObjectInfo {
            crc64nvme: None,
            ..all
        };
        assert_eq!(source_proof(&no_crc64), SourceProof::Crc32);
    }

    #[test]
    fn a_short_or_damaged_read_is_a_bad_read_whatever_the_output() {
        for (proof, stored) in check_string_stored_with_each() {
            let short = fingerprint(&stored, b"12345678");
            let result = check(&stored, &short, &short);
            assert!(
                matches!(result, Err(Disproof::BadRead(_))),
                "{proof:?}: {result:?}"
            );
            let damaged = fingerprint(&stored, b"123456780");
            let result = check(&stored, &damaged, &damaged);
            if proof == SourceProof::SizeOnly {
                // Nothing to hold the bytes against: what a store without checksums allows.
                assert_eq!(result, Ok(()));
            } else {
                assert!(
                    matches!(result, Err(Disproof::BadRead(_))),
                    "{proof:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn an_output_that_decodes_to_other_bytes_is_a_bad_output() {
        for (proof, stored) in check_string_stored_with_each() {
            let read = fingerprint(&stored, b"123456789");
            for decoded in [&b"123456780"[..], b"1234", b""] {
                let decoded = fingerprint(&stored, decoded);
                let result = check(&stored, &read, &decoded);
                assert!(
                    matches!(result, Err(Disproof::BadOutput(_))),
                    "{proof:?}: {result:?}"
                );
            }
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
