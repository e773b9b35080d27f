//! gzip (`.gz`): a deflate stream whose header keeps the original name and time, so
//! `gzip -dN` restores both.

use std::io::{self, Read, Write};

use flate2::{Compression, GzBuilder};

use super::{level_or, DEFLATE_LEVELS};
use crate::{Entry, Format, Kind, Registration};

inventory::submit! {
    Registration {
        name: "gzip",
        extension: "gz",
        content_type: "application/gzip",
        kind: Kind::Stream,
        levels: Some(DEFLATE_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Gzip { level: level_or(settings, DEFLATE_LEVELS) }),
    }
}

#[derive(Debug)]
struct Gzip {
    level: i32,
}

impl Format for Gzip {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<()> {
        let mut encoder = GzBuilder::new()
            .filename(entry.name())
            // gzip's MTIME is 32 bits; 0 means "no time" and is what a later time becomes.
            .mtime(u32::try_from(entry.modified_unix_seconds()).unwrap_or(0))
            .write(dst, Compression::new(self.level.unsigned_abs()));
        io::copy(src, &mut encoder)?;
        encoder.try_finish()
    }
}
