//! Brotli (`.br`) for s3-compressor, as an add-on crate.
//!
//! Brotli compresses text better than gzip and every browser decodes it, which makes it the
//! format for precompressed web assets. It lives outside `s3-compressor-formats` to show the
//! whole recipe for a team's own format: implement [`Format`], submit a [`Registration`], and
//! link the crate into the worker.

use std::io::{self, Read, Write};

use brotli::enc::BrotliEncoderParams;
use s3_compressor_formats::{
    expect_end, inventory, Entry, Format, Kind, Levels, Registration, Written,
};

/// Brotli's qualities; 11 is slow and meant for assets compressed once and served often,
/// so the default is the 9 that web servers commonly use for static files.
const LEVELS: Levels = Levels {
    min: 0,
    max: 11,
    default: 9,
};

/// A 4 MiB window (2^22), brotli's own default: larger windows help little on web assets and
/// cost decoders memory.
const WINDOW_BITS: i32 = 22;

/// Compressed input buffered by the decoder.
const DECODE_BUFFER: usize = 64 * 1024;

inventory::submit! {
    Registration {
        name: "brotli",
        extension: "br",
        content_type: "application/x-brotli",
        kind: Kind::Stream,
        levels: Some(LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Brotli { quality: settings.level.unwrap_or(LEVELS.default) }),
    }
}

#[derive(Debug)]
struct Brotli {
    quality: i32,
}

impl Format for Brotli {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<Written> {
        let params = BrotliEncoderParams {
            quality: self.quality,
            lgwin: WINDOW_BITS,
            size_hint: entry
                .size()
                .map_or(0, |size| usize::try_from(size).unwrap_or(usize::MAX)),
            ..BrotliEncoderParams::default()
        };
        // `BrotliCompress` reports a failed final write, where `CompressorWriter::into_inner`
        // would drop it.
        brotli::BrotliCompress(&mut &mut *src, &mut &mut *dst, &params)?;
        Ok(Written::default())
    }

    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
        let mut decoder = brotli::Decompressor::new(src, DECODE_BUFFER);
        io::copy(&mut decoder, dst)?;
        // The decoder reports bytes left in its buffer after the stream's end on the read
        // after the last; bytes it never buffered are still in `src`.
        expect_end(&mut decoder)?;
        expect_end(decoder.into_inner())
    }
}
