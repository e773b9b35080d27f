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
use crate::store::{Multipart, ObjectInfo};

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
/// source keeps one checksum algorithm, so the choice is mostly between it and the ETag). A
/// multipart upload's values count once its part sizes are known.
pub(crate) fn held_against(source: &ObjectInfo) -> Option<(SourceProof, &str)> {
    let parts = source
        .multipart
        .as_ref()
        .filter(|multipart| !multipart.part_sizes.is_empty());
    let of_parts =
        |value: fn(&Multipart) -> &Option<String>| parts.and_then(|parts| value(parts).as_ref());
    [
        (SourceProof::Crc64Nvme, source.crc64nvme.as_ref()),
        (SourceProof::Crc32c, source.crc32c.as_ref()),
        (SourceProof::Crc32, source.crc32.as_ref()),
        (SourceProof::Sha1, source.sha1.as_ref()),
        (SourceProof::Sha256, source.sha256.as_ref()),
        (SourceProof::EtagMd5, source.md5.as_ref()),
        (SourceProof::Crc32cParts, of_parts(|parts| &parts.crc32c)),
        (SourceProof::Crc32Parts, of_parts(|parts| &parts.crc32)),
        (SourceProof::Sha1Parts, of_parts(|parts| &parts.sha1)),
        (SourceProof::Sha256Parts, of_parts(|parts| &parts.sha256)),
        (SourceProof::EtagMd5Parts, of_parts(|parts| &parts.etag_md5)),
    ]
    .into_iter()
    .find_map(|(proof, stored)| Some((proof, stored?.as_str())))
}

/// What the bytes read of `source` are proven against.
pub(crate) fn source_proof(source: &ObjectInfo) -> SourceProof {
    held_against(source).map_or(SourceProof::SizeOnly, |(proof, _)| proof)
}

/// Why a multipart source's part sizes, as a store told them, cannot be used: a list that
/// does not describe this object would call a good read bad.
pub(crate) fn unusable_part_sizes(source: &ObjectInfo, sizes: &[u64]) -> Option<String> {
    let parts = source
        .multipart
        .as_ref()
        .map_or(0, |multipart| multipart.parts);
    let total: u64 = sizes.iter().sum();
    if sizes.len() != parts as usize {
        Some(format!("the store listed {} parts of {parts}", sizes.len()))
    } else if total != source.size || sizes.contains(&0) {
        Some(format!(
            "the parts listed add up to {total} bytes (or one is empty), not {}",
            source.size
        ))
    } else {
        None
    }
}

/// The one digest computed beside the CRC-64/NVME: only when there is a stored value to hold
/// it against, since every digest is another pass over every byte.
#[derive(Clone)]
enum Held {
    Crc32(Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
    /// A multipart upload's value: each part digested alone, and the parts' digests digested
    /// again in order.
    Parts(Box<PartsDigest>),
}

/// Digests each part as its bytes go by, so no part is held.
#[derive(Clone)]
struct PartsDigest {
    sizes: Vec<u64>,
    /// The part being read (from 0), and how many of its bytes are still to come.
    current: usize,
    left: u64,
    part: Held,
    /// What each part's digest starts from.
    empty: Held,
    of_parts: Held,
}

impl PartsDigest {
    fn update(&mut self, mut bytes: &[u8]) {
        // Bytes past the last part change no digest: the size check catches them.
        while !bytes.is_empty() && self.current < self.sizes.len() {
            let n = usize::try_from(self.left).map_or(bytes.len(), |left| left.min(bytes.len()));
            self.part.update(&bytes[..n]);
            bytes = &bytes[n..];
            self.left -= n as u64;
            if self.left == 0 {
                let part = std::mem::replace(&mut self.part, self.empty.clone());
                self.of_parts.update(&part.digest());
                self.current += 1;
                self.left = self.sizes.get(self.current).copied().unwrap_or(0);
            }
        }
    }

    fn digest(&self) -> Vec<u8> {
        let mut of_parts = self.of_parts.clone();
        // A read that ended inside a part: what was read of it counts, so the value differs.
        if self
            .sizes
            .get(self.current)
            .is_some_and(|&size| size != self.left)
        {
            of_parts.update(&self.part.digest());
        }
        of_parts.digest()
    }
}

impl Held {
    fn for_source(source: &ObjectInfo) -> Option<Self> {
        let proof = source_proof(source);
        let Some(each) = proof.of_each_part() else {
            return Self::for_proof(proof);
        };
        Self::over_parts(each, source.multipart.as_ref()?.part_sizes.clone())
    }

    /// Digests parts of these sizes with `each`, and their digests again.
    fn over_parts(each: SourceProof, sizes: Vec<u64>) -> Option<Self> {
        let empty = Self::for_proof(each)?;
        Some(Self::Parts(Box::new(PartsDigest {
            current: 0,
            left: sizes.first().copied().unwrap_or(0),
            sizes,
            part: empty.clone(),
            of_parts: empty.clone(),
            empty,
        })))
    }

    fn for_proof(proof: SourceProof) -> Option<Self> {
        Some(match proof {
            SourceProof::Crc32c => Self::Crc32(Digest::new(CrcAlgorithm::Crc32Iscsi)),
            SourceProof::Crc32 => Self::Crc32(Digest::new(CrcAlgorithm::Crc32IsoHdlc)),
            SourceProof::Sha1 => Self::Sha1(sha1::Sha1::new()),
            SourceProof::Sha256 => Self::Sha256(sha2::Sha256::new()),
            SourceProof::EtagMd5 => Self::Md5(md5::Md5::new()),
            _ => return None,
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Crc32(digest) => digest.update(bytes),
            Self::Sha1(digest) => digest.update(bytes),
            Self::Sha256(digest) => digest.update(bytes),
            Self::Md5(digest) => digest.update(bytes),
            Self::Parts(parts) => parts.update(bytes),
        }
    }

    /// The digest's bytes (a CRC big-endian), as a multipart upload's value is computed over.
    fn digest(&self) -> Vec<u8> {
        match self {
            // A CRC-32 digest's value fits in 32 bits.
            Self::Crc32(digest) => u32::try_from(digest.finalize())
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec(),
            Self::Sha1(digest) => digest.clone().finalize().to_vec(),
            Self::Sha256(digest) => digest.clone().finalize().to_vec(),
            Self::Md5(digest) => digest.clone().finalize().to_vec(),
            Self::Parts(parts) => parts.digest(),
        }
    }

    fn is_md5(&self) -> bool {
        match self {
            Self::Md5(_) => true,
            Self::Parts(parts) => parts.of_parts.is_md5(),
            _ => false,
        }
    }

    /// As S3 writes it: checksums in base64, the ETag in lower-case hex (a multipart upload's
    /// without its `-N`).
    fn finish(&self) -> String {
        use base64::Engine as _;
        let digest = self.digest();
        if self.is_md5() {
            digest.iter().map(|byte| format!("{byte:02x}")).collect()
        } else {
            base64::engine::general_purpose::STANDARD.encode(digest)
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
        SourceProof::Crc32cParts => "CRC-32C of its parts' CRC-32Cs",
        SourceProof::Crc32Parts => "CRC-32 of its parts' CRC-32s",
        SourceProof::Sha1Parts => "SHA-1 of its parts' SHA-1s",
        SourceProof::Sha256Parts => "SHA-256 of its parts' SHA-256s",
        SourceProof::EtagMd5Parts => "MD5 of its parts' MD5s (its ETag)",
        SourceProof::SizeOnly => "size",
    }
}

/// `bytes` as a store that keeps only `kept` describes them, for the unit tests' store. A
/// multipart upload's are of three parts, whose sizes the store tells.
#[cfg(test)]
pub(crate) fn stored_as(kept: SourceProof, bytes: &[u8]) -> ObjectInfo {
    let third = bytes.len() as u64 / 3;
    let part_sizes = vec![third, third, bytes.len() as u64 - 2 * third];
    let value = || {
        let mut held = match kept.of_each_part() {
            Some(each) => Held::over_parts(each, part_sizes.clone())?,
            None => Held::for_proof(kept)?,
        };
        held.update(bytes);
        Some(held.finish())
    };
    let mut info = ObjectInfo {
        size: bytes.len() as u64,
        ..ObjectInfo::default()
    };
    let mut multipart = Multipart {
        parts: 3,
        part_sizes: part_sizes.clone(),
        ..Multipart::default()
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
        SourceProof::Crc32cParts => multipart.crc32c = value(),
        SourceProof::Crc32Parts => multipart.crc32 = value(),
        SourceProof::Sha1Parts => multipart.sha1 = value(),
        SourceProof::Sha256Parts => multipart.sha256 = value(),
        SourceProof::EtagMd5Parts => multipart.etag_md5 = value(),
        SourceProof::SizeOnly => {}
    }
    if kept.of_each_part().is_some() {
        info.multipart = Some(multipart);
    }
    info
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Base64 of the big-endian checksum, as S3 writes checksums.
    fn encode_crc32(crc: u32) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
    }

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

    /// `123456789` uploaded in two parts, `1234` and `56789`, with each kind of value over its
    /// parts (computed with Python's hashlib and zlib, and awscrt for CRC-32C).
    fn check_string_in_two_parts_with_each() -> Vec<(SourceProof, ObjectInfo)> {
        [
            (SourceProof::Crc32cParts, "wClZWQ=="),
            (SourceProof::Crc32Parts, "rBMwBw=="),
            (SourceProof::Sha1Parts, "ZPMlzVAPwgmwAy0Yd3tZeXQx43E="),
            (
                SourceProof::Sha256Parts,
                "bnRBBTileCDVQlLT/6fZJGrqcf3O3X6G8kD8V7zZqxQ=",
            ),
            (
                SourceProof::EtagMd5Parts,
                "d8399932ce6023ac3365f50fbbcde132",
            ),
        ]
        .into_iter()
        .map(|(proof, value)| {
            let mut multipart = Multipart {
                parts: 2,
                part_sizes: vec![4, 5],
                ..Multipart::default()
            };
            let value = Some(value.to_owned());
            match proof {
                SourceProof::Crc32cParts => multipart.crc32c = value,
                SourceProof::Crc32Parts => multipart.crc32 = value,
                SourceProof::Sha1Parts => multipart.sha1 = value,
                SourceProof::Sha256Parts => multipart.sha256 = value,
                _ => multipart.etag_md5 = value,
            }
            let info = ObjectInfo {
                size: 9,
                multipart: Some(multipart),
                ..ObjectInfo::default()
            };
            (proof, info)
        })
        .collect()
    }

    #[test]
    fn a_multipart_value_is_computed_over_the_parts_however_the_bytes_arrive() {
        for (proof, stored) in check_string_in_two_parts_with_each() {
            assert_eq!(source_proof(&stored), proof);
            for chunk in [1, 2, 3, 4, 9] {
                let mut read = Fingerprinting::new(Held::for_source(&stored));
                for bytes in b"123456789".chunks(chunk) {
                    read.update(bytes);
                }
                let read = read.finish();
                assert_eq!(check(&stored, &read, &read), Ok(()), "{proof:?} by {chunk}");
            }
            for damaged in [&b"123456780"[..], b"123556789", b"12345678"] {
                let read = fingerprint(&stored, damaged);
                let result = check(&stored, &read, &read);
                assert!(
                    matches!(result, Err(Disproof::BadRead(_))),
                    "{proof:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_multipart_value_counts_only_once_the_part_sizes_are_known_and_add_up() {
        for (_, mut stored) in check_string_in_two_parts_with_each() {
            assert_eq!(unusable_part_sizes(&stored, &[4, 5]), None);
            for wrong in [&[9][..], &[4, 4], &[4, 6], &[0, 9], &[3, 3, 3]] {
                assert!(unusable_part_sizes(&stored, wrong).is_some(), "{wrong:?}");
            }
            stored.multipart.as_mut().unwrap().part_sizes.clear();
            assert_eq!(source_proof(&stored), SourceProof::SizeOnly);
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
