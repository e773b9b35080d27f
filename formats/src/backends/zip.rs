//! zip: one deflated entry per archive, the default format. The entry is deflated on every
//! core the settings allow; rawzip writes the container around the stream.

use std::io::{self, BufRead, Read, Write};
use std::num::NonZeroUsize;

use rawzip::time::UtcDateTime;
use rawzip::{CompressionMethod, DataDescriptorOutput, ZipArchiveWriter};

use super::{level_or, DEFLATE_LEVELS};
use crate::deflate::deflate;
use crate::inflate::inflate;
use crate::{expect_end, Entry, Format, Kind, Registration, Written};

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
    ) -> io::Result<Written> {
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
        Ok(Written {
            stored: deflated.stored,
        })
    }

    /// Streams the archive the way it was written: local header, DEFLATE data, data
    /// descriptor, then the central directory, which must describe the same entry (it is what
    /// `unzip` trusts).
    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
        let mut src = io::BufReader::new(src);
        let name = read_local_header(&mut src)?;
        let inflated = inflate(&mut src, dst)?;
        let decoded = inflated.decoded;
        let zip64 = inflated.compressed_size >= ZIP64_THRESHOLD || decoded.size >= ZIP64_THRESHOLD;
        let descriptor = read_descriptor(&mut src, zip64)?;
        if descriptor != (decoded.crc32, inflated.compressed_size, decoded.size) {
            return Err(invalid(format!(
                "the data descriptor says CRC-32 {:08x}, {} bytes compressed, {} decoded; \
                 the data is {:08x}, {}, {}",
                descriptor.0,
                descriptor.1,
                descriptor.2,
                decoded.crc32,
                inflated.compressed_size,
                decoded.size
            )));
        }
        check_central_directory(&mut src, &name, decoded.crc32)
    }

    fn memory(&self, size: Option<u64>) -> u64 {
        crate::deflate::memory(self.level, self.threads, size)
    }
}

const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const DESCRIPTOR_SIGNATURE: u32 = 0x0807_4b50;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY_SIGNATURE: u32 = 0x0605_4b50;
/// Sizes from here on are written as 64 bits (zip64).
const ZIP64_THRESHOLD: u64 = 0xFFFF_FFFF;
/// The central directory of one entry is a few hundred bytes plus its name (at most 64 KiB);
/// more than this is not an archive we wrote, and is not read into memory.
const CENTRAL_DIRECTORY_LIMIT: u64 = 256 * 1024;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the local file header of a DEFLATE entry; returns the entry's name.
fn read_local_header(src: &mut dyn BufRead) -> io::Result<Vec<u8>> {
    let mut fixed = [0u8; 30];
    src.read_exact(&mut fixed)?;
    if u32_at(&fixed, 0) != Some(LOCAL_HEADER_SIGNATURE) {
        return Err(invalid(
            "the archive does not start with a local file header".to_owned(),
        ));
    }
    if u16_at(&fixed, 8) != Some(CompressionMethod::DEFLATE.as_u16()) {
        return Err(invalid("the entry is not DEFLATE-compressed".to_owned()));
    }
    let name_len = u16_at(&fixed, 26).unwrap_or_default();
    let extra_len = u16_at(&fixed, 28).unwrap_or_default();
    let mut name = vec![0u8; usize::from(name_len)];
    src.read_exact(&mut name)?;
    io::copy(&mut src.take(u64::from(extra_len)), &mut io::sink())?;
    Ok(name)
}

/// Reads a data descriptor: (CRC-32, compressed size, uncompressed size).
fn read_descriptor(src: &mut dyn BufRead, zip64: bool) -> io::Result<(u32, u64, u64)> {
    let mut descriptor = [0u8; 24];
    let len = if zip64 { 24 } else { 16 };
    src.read_exact(&mut descriptor[..len])?;
    if u32_at(&descriptor, 0) != Some(DESCRIPTOR_SIGNATURE) {
        return Err(invalid(
            "no data descriptor follows the entry's data".to_owned(),
        ));
    }
    let crc32 = u32_at(&descriptor, 4).unwrap_or_default();
    let size = |at: usize| -> u64 {
        if zip64 {
            descriptor
                .get(at..at + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        } else {
            u32_at(&descriptor, at).map_or(0, u64::from)
        }
    };
    let (compressed, uncompressed) = if zip64 {
        (size(8), size(16))
    } else {
        (size(8), size(12))
    };
    Ok((crc32, compressed, uncompressed))
}

/// The central directory must list exactly this entry, with this CRC, and end the archive.
fn check_central_directory(src: &mut dyn BufRead, name: &[u8], crc32: u32) -> io::Result<()> {
    let mut directory = Vec::new();
    src.take(CENTRAL_DIRECTORY_LIMIT)
        .read_to_end(&mut directory)?;
    expect_end(src)?;
    let listed_name =
        u16_at(&directory, 28).and_then(|len| directory.get(46..46 + usize::from(len)));
    if u32_at(&directory, 0) != Some(CENTRAL_HEADER_SIGNATURE) || listed_name != Some(name) {
        return Err(invalid(
            "the central directory does not list the entry that was written".to_owned(),
        ));
    }
    if u32_at(&directory, 16) != Some(crc32) {
        return Err(invalid(
            "the central directory's CRC-32 is not the entry's".to_owned(),
        ));
    }
    // The end record closes the archive (no comment), and counts one entry (or defers to
    // its zip64 twin).
    let end = directory.len().saturating_sub(22);
    let entries = u16_at(&directory, end + 10);
    if u32_at(&directory, end) != Some(END_OF_CENTRAL_DIRECTORY_SIGNATURE)
        || !matches!(entries, Some(1 | 0xFFFF))
    {
        return Err(invalid(
            "the archive does not end with an end-of-central-directory record for one entry"
                .to_owned(),
        ));
    }
    Ok(())
}
