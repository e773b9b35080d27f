//! Content compressed already, told from an object's first bytes rather than its name: a
//! name can lie (`photo.dat`), and the bytes cannot.
//!
//! Left out on purpose: brotli and raw deflate have no signature; PDF keeps text, fonts and
//! cross-reference tables uncompressed beside its compressed streams, and often shrinks by a
//! fifth; Avro's codec is written after its schema, far past the first bytes, and the default
//! ("null") compresses well; WAV and BMP are raw samples and pixels; TIFF is most often
//! uncompressed. Each of these is compressed, and the per-block sample stores what will not
//! shrink.

/// How many of an object's first bytes [`already_compressed`] needs to recognise every kind
/// it knows; fewer (a shorter object) only means fewer kinds can match.
pub const SNIFF_BYTES: usize = 12;

/// A signature: each of `parts`, a magic at its byte offset.
struct Signature {
    parts: &'static [(usize, &'static [u8])],
    kind: &'static str,
}

impl Signature {
    fn matches(&self, head: &[u8]) -> bool {
        self.parts.iter().all(|(offset, magic)| {
            head.get(*offset..)
                .is_some_and(|rest| rest.starts_with(magic))
        })
    }
}

/// A signature of `kind`: each magic at its offset.
macro_rules! signature {
    ($kind:expr => $(($offset:expr, $magic:expr)),+) => {
        Signature {
            parts: &[$(($offset, $magic)),+],
            kind: $kind,
        }
    };
}

/// The kinds recognised, first match wins: the ISO media rows naming a brand come before the
/// bare `ftyp` row, which takes every other brand.
const SIGNATURES: &[Signature] = &[
    // Archives and compressed streams. zip also covers docx, xlsx, jar, apk, epub, odt.
    signature!("zip" => (0, b"PK\x03\x04")),
    signature!("zip" => (0, b"PK\x05\x06")),
    signature!("zip" => (0, b"PK\x07\x08")),
    signature!("gzip" => (0, b"\x1f\x8b")),
    signature!("zstd" => (0, b"\x28\xb5\x2f\xfd")),
    signature!("xz" => (0, b"\xfd7zXZ\x00")),
    signature!("7z" => (0, b"7z\xbc\xaf\x27\x1c")),
    signature!("rar" => (0, b"Rar!\x1a\x07")),
    signature!("lz4" => (0, b"\x04\x22\x4d\x18")),
    // Images.
    signature!("jpeg" => (0, b"\xff\xd8\xff")),
    signature!("png" => (0, b"\x89PNG\r\n\x1a\n")),
    signature!("gif" => (0, b"GIF87a")),
    signature!("gif" => (0, b"GIF89a")),
    signature!("webp" => (0, b"RIFF"), (8, b"WEBP")),
    // ISO base media: the brand after `ftyp` names the kind.
    signature!("mov" => (4, b"ftypqt  ")),
    signature!("avif" => (4, b"ftypavif")),
    signature!("heif" => (4, b"ftypheic")),
    signature!("heif" => (4, b"ftypheix")),
    signature!("heif" => (4, b"ftypmif1")),
    signature!("mp4" => (4, b"ftyp")),
    // Audio and video.
    signature!("mp3" => (0, b"ID3")),
    signature!("mp3" => (0, b"\xff\xfb")),
    signature!("mp3" => (0, b"\xff\xf3")),
    signature!("mp3" => (0, b"\xff\xf2")),
    signature!("ogg" => (0, b"OggS")),
    signature!("flac" => (0, b"fLaC")),
    signature!("webm/mkv" => (0, b"\x1a\x45\xdf\xa3")),
    signature!("avi" => (0, b"RIFF"), (8, b"AVI ")),
    // Columnar data, compressed per column.
    signature!("parquet" => (0, b"PAR1")),
    signature!("orc" => (0, b"ORC")),
    // Web fonts.
    signature!("woff2" => (0, b"wOF2")),
    signature!("woff" => (0, b"wOFF")),
];

/// The kind of compressed content `head` (an object's first bytes, at least [`SNIFF_BYTES`]
/// of them where the object has that many) starts with, if any.
pub fn already_compressed(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"BZh")
        && head
            .get(3)
            .is_some_and(|block| (b'1'..=b'9').contains(block))
    {
        return Some("bzip2");
    }
    SIGNATURES
        .iter()
        .find(|signature| signature.matches(head))
        .map(|signature| signature.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of at least [`SNIFF_BYTES`]: `start`, then text.
    fn head(start: &[u8]) -> Vec<u8> {
        let mut head = start.to_vec();
        head.extend_from_slice(b"plain text that follows the header");
        head
    }

    #[test]
    fn each_kind_is_recognised_from_a_real_header() {
        let cases: &[(&[u8], &str)] = &[
            (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "zip"),
            (b"PK\x05\x06\x00\x00\x00\x00", "zip"),
            (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "gzip"),
            (b"\x28\xb5\x2f\xfd\x24\x05", "zstd"),
            (b"BZh91AY&SY", "bzip2"),
            (b"\xfd7zXZ\x00\x00\x04", "xz"),
            (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
            (b"Rar!\x1a\x07\x01\x00", "rar"),
            (b"\x04\x22\x4d\x18\x64\x40", "lz4"),
            (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "png"),
            (b"GIF89a\x01\x00", "gif"),
            (b"GIF87a\x01\x00", "gif"),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
            (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4"),
            (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "mov"),
            (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "avif"),
            (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "heif"),
            (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
            (b"\xff\xfb\x90\x64\x00", "mp3"),
            (b"OggS\x00\x02\x00\x00", "ogg"),
            (b"fLaC\x00\x00\x00\x22", "flac"),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm/mkv"),
            (b"RIFF\x24\x00\x00\x00AVI LIST", "avi"),
            (b"PAR1\x15\x04\x15\x10", "parquet"),
            (b"ORC\x0a\x03", "orc"),
            (b"wOF2\x00\x01\x00\x00", "woff2"),
            (b"wOFF\x00\x01\x00\x00", "woff"),
        ];
        for (start, kind) in cases {
            assert_eq!(already_compressed(&head(start)), Some(*kind), "{start:x?}");
        }
    }

    #[test]
    fn compressible_content_is_not_recognised() {
        let cases: &[&[u8]] = &[
            b"",
            b"date,amount\n2024-01-01,3\n",
            b"{\"level\":\"info\",\"msg\":\"started\"}\n",
            b"<!DOCTYPE html><html>",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3",
            b"Obj\x01\x04\x14avro.codec\x08null",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"BM\x36\x00\x0c\x00\x00\x00",
            b"BZh0 not a bzip2 block size",
            b"\x7fELF\x02\x01\x01\x00",
            b"PK",
            b"xxxxWEBP",
        ];
        for start in cases {
            assert_eq!(already_compressed(start), None, "{start:x?}");
        }
    }

    #[test]
    fn a_head_shorter_than_a_signature_matches_only_the_shorter_signatures() {
        assert_eq!(already_compressed(b"\x1f\x8b"), Some("gzip"));
        assert_eq!(already_compressed(b"\x00\x00\x00\x20ftyp"), Some("mp4"));
        assert_eq!(already_compressed(b"RIFF\x24\x00\x00\x00WEB"), None);
    }

    #[test]
    fn every_signature_fits_in_the_sniffed_bytes() {
        for signature in SIGNATURES {
            for (offset, magic) in signature.parts {
                assert!(offset + magic.len() <= SNIFF_BYTES, "{}", signature.kind);
            }
        }
    }
}
