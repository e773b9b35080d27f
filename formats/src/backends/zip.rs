//! zip: one deflated entry per archive, the default format.

use std::io::{self, Read, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::{level_or, DEFLATE_LEVELS, ZIP64_THRESHOLD};
use crate::{Entry, Format, Kind, Registration};

inventory::submit! {
    Registration {
        name: "zip",
        extension: "zip",
        content_type: "application/zip",
        kind: Kind::Archive,
        levels: Some(DEFLATE_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Zip { level: level_or(settings, DEFLATE_LEVELS) }),
    }
}

#[derive(Debug)]
struct Zip {
    level: i32,
}

impl Format for Zip {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(i64::from(self.level)))
            .unix_permissions(0o644)
            .last_modified_time(dos_time(entry))
            // Unknown sizes get zip64 too: finding out at 4 GiB would be too late to say so in
            // the local header, which a streaming writer has already sent.
            .large_file(entry.size().is_none_or(|size| size >= ZIP64_THRESHOLD));
        // A stream writer never seeks back: sizes and CRC go into a data descriptor after the
        // data, so the output can go straight into an upload.
        let mut archive = ZipWriter::new_stream(dst);
        archive
            .start_file(entry.name(), options)
            .map_err(io::Error::other)?;
        io::copy(src, &mut archive)?;
        archive.finish().map_err(io::Error::other)?;
        Ok(())
    }
}

/// The entry's time as DOS time; DOS time cannot say anything before 1980, so those and
/// unknown times become zip's default of 1980-01-01.
fn dos_time(entry: &Entry) -> zip::DateTime {
    let Some(modified) = entry.modified() else {
        return zip::DateTime::default();
    };
    let utc = time::OffsetDateTime::from(modified);
    zip::DateTime::try_from(time::PrimitiveDateTime::new(utc.date(), utc.time()))
        .unwrap_or_default()
}
