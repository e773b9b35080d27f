//! Reading a raw DEFLATE stream back, strictly: the stream must reach its final block.
//!
//! flate2's `DeflateDecoder` reports a stream cut short as an ordinary end of input, which is
//! exactly the damage a verification must catch; gzip has a trailer that catches it, a zip
//! entry only its data descriptor.

use std::io::{self, BufRead, Write};

use flate2::{Decompress, FlushDecompress, Status};

/// Output per inflate call: large enough that the per-call overhead is noise.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// What was inflated: the input's CRC-32 and size as the stream decoded, and how many
/// compressed bytes the stream took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inflated {
    pub decoded: Decoded,
    pub compressed_size: u64,
}

/// The CRC-32 and size of what a stream decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub crc32: u32,
    pub size: u64,
}

/// Inflates one raw DEFLATE stream from `src` into `dst`, consuming exactly the stream's bytes.
pub(crate) fn inflate(src: &mut dyn BufRead, dst: &mut dyn Write) -> io::Result<Inflated> {
    let mut inflater = Decompress::new(false);
    let mut crc = crc32fast::Hasher::new();
    let mut output = vec![0u8; OUTPUT_CHUNK];
    loop {
        let input = src.fill_buf()?;
        let at_end = input.is_empty();
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress(input, &mut output, FlushDecompress::None)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        let consumed = usize::try_from(inflater.total_in() - before_in).unwrap_or(usize::MAX);
        let produced = usize::try_from(inflater.total_out() - before_out).unwrap_or(usize::MAX);
        src.consume(consumed);
        dst.write_all(&output[..produced])?;
        crc.update(&output[..produced]);
        if status == Status::StreamEnd {
            return Ok(Inflated {
                decoded: Decoded {
                    crc32: crc.finalize(),
                    size: inflater.total_out(),
                },
                compressed_size: inflater.total_in(),
            });
        }
        if produced == 0 && (at_end || consumed == 0) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the deflate stream ends before its final block",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use flate2::write::DeflateEncoder;
    use flate2::Compression;

    use super::*;

    fn deflated(input: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::new(6));
        encoder.write_all(input).unwrap();
        encoder.finish().unwrap()
    }

    fn input() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| format!("{i},{}\n", i % 97).into_bytes())
            .collect()
    }

    #[test]
    fn a_whole_stream_inflates_and_what_follows_it_is_left_unread() {
        let input = input();
        let mut stream = deflated(&input);
        let compressed_size = stream.len() as u64;
        stream.extend_from_slice(b"after");
        let mut src = io::BufReader::new(stream.as_slice());
        let mut decoded = Vec::new();
        let inflated = inflate(&mut src, &mut decoded).unwrap();
        assert_eq!(decoded, input);
        assert_eq!(inflated.compressed_size, compressed_size);
        assert_eq!(inflated.decoded.size, input.len() as u64);
        assert_eq!(inflated.decoded.crc32, crc32fast::hash(&input));
        let mut rest = Vec::new();
        src.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"after");
    }

    #[test]
    fn a_stream_cut_short_is_an_error_not_an_early_end() {
        let stream = deflated(&input());
        for cut in [0, 1, stream.len() / 2, stream.len() - 1] {
            let error = inflate(&mut &stream[..cut], &mut io::sink()).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }
}
