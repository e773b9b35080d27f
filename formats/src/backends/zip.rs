//! zip: one deflated entry per archive, the default format. The entry is deflated on every
//! core the settings allow; rawzip writes the container around the stream.

use std::io::{self, Read, Write};
use std::num::NonZeroUsize;

use rawzip::time::UtcDateTime;
use rawzip::{CompressionMethod, DataDescriptorOutput, ZipArchiveWriter};

use super::{level_or, DEFLATE_LEVELS};
use crate::deflate::deflate;
use crate::{Entry, Format, Kind, Registration};

inventory::submit! {
    Registration {
        name: "zip",
        extension: "zip",
        content_type: "application/zip",
        kind: Kind::Archive,
        levels: Some(DEFLATE_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Zip {
            level: level_or(settings, DEFLATE_LEVELS).unsigned_abs(),
            threads: settings.threads,
        }),
    }
}

#[derive(Debug)]
struct Zip {
    level: u32,
    threads: NonZeroUsize,
}

impl Format for Zip {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<()> {
        // A streaming archive never seeks back: sizes and CRC go into a data descriptor after
        // the data (zip64-sized past 4 GiB), so the output can go straight into an upload.
        let mut archive = ZipArchiveWriter::new(dst);
        let mut file = archive
            .new_file(entry.name())
            .compression_method(CompressionMethod::DEFLATE)
            .unix_permissions(0o100_644);
        if entry.modified().is_some() {
            let seconds = i64::try_from(entry.modified_unix_seconds()).unwrap_or(i64::MAX);
            file = file.last_modified(UtcDateTime::from_unix(seconds));
        }
        let (mut data, _) = file.start().map_err(io::Error::other)?;
        let ((), deflated) = deflate(&mut data, self.level, self.threads, |w| {
            io::copy(src, w).map(drop)
        })?;
        data.finish(DataDescriptorOutput::new(deflated.crc32, deflated.size))
            .map_err(io::Error::other)?;
        archive.finish().map_err(io::Error::other)?;
        Ok(())
    }
}
