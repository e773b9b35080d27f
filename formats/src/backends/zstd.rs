//! zstd (`.zst`): checksummed frames with the content size when known, on every core allowed.

use std::io::{self, Read, Write};
use std::num::NonZeroUsize;

use super::{level_or, read_zstd_frame, zstd_encoder, zstd_memory, InputSize, ZSTD_LEVELS};
use crate::{Entry, Format, Kind, Registration, Written};

inventory::submit! {
    Registration {
        name: "zstd",
        extension: "zst",
        content_type: "application/zstd",
        kind: Kind::Stream,
        levels: Some(ZSTD_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Zstd {
            level: level_or(settings, ZSTD_LEVELS),
            threads: settings.threads,
        }),
    }
}

#[derive(Debug)]
struct Zstd {
    level: i32,
    threads: NonZeroUsize,
}

impl Format for Zstd {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<Written> {
        let mut encoder = zstd_encoder(dst, self.level, self.threads, input_size(entry.size()))?;
        io::copy(src, &mut encoder)?;
        encoder.finish()?;
        Ok(Written::default())
    }

    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
        read_zstd_frame(src, |decoded| io::copy(decoded, dst).map(drop))
    }

    fn memory(&self, size: Option<u64>) -> u64 {
        zstd_memory(self.level, self.threads, input_size(size))
    }
}

/// The source's size is the frame's content size, so it is recorded exactly.
fn input_size(size: Option<u64>) -> InputSize {
    size.map_or(InputSize::Unknown, InputSize::Exact)
}
