//! gzip (`.gz`): one gzip member whose header keeps the original name and time, so
//! `gzip -dN` restores both; deflated on every core the settings allow.

use std::io::{self, BufRead, Read, Write};
use std::num::NonZeroUsize;

use super::{level_or, DEFLATE_LEVELS};
use crate::deflate::deflate;
use crate::{expect_end, Entry, Format, Kind, Registration, Written};

inventory::submit! {
    Registration {
        name: "gzip",
        extension: "gz",
        content_type: "application/gzip",
        kind: Kind::Stream,
        levels: Some(DEFLATE_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Gzip {
            level: level_or(settings, DEFLATE_LEVELS).unsigned_abs(),
            threads: settings.threads,
        }),
    }
}

#[derive(Debug)]
struct Gzip {
    level: u32,
    threads: NonZeroUsize,
}

impl Format for Gzip {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<Written> {
        let name = Some(entry.name());
        write_member(dst, name, entry, self.level, self.threads, |w| {
            io::copy(src, w).map(drop)
        })
    }

    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
        read_member(&mut io::BufReader::new(src), |decoded| {
            io::copy(decoded, dst).map(drop)
        })
    }

    fn memory(&self, size: Option<u64>) -> u64 {
        crate::deflate::memory(self.level, self.threads, size)
    }
}

/// Writes one gzip member (RFC 1952) around what `produce` writes. A single member, not one
/// per block: some readers stop after the first member and would silently lose the rest.
pub(super) fn write_member(
    dst: &mut dyn Write,
    name: Option<&str>,
    entry: &Entry,
    level: u32,
    threads: NonZeroUsize,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Written> {
    dst.write_all(&header(name, entry, level))?;
    let ((), deflated) = deflate(dst, level, threads, produce)?;
    dst.write_all(&deflated.crc32.to_le_bytes())?;
    // ISIZE is the size modulo 2^32, by definition.
    dst.write_all(&(deflated.size as u32).to_le_bytes())?;
    Ok(Written {
        stored: deflated.stored,
    })
}

/// Reads the one gzip member [`write_member`] wrote, handing its decoded bytes to `consume`;
/// the trailer's CRC-32 and size are checked, and nothing may follow the member.
pub(super) fn read_member(
    src: &mut dyn BufRead,
    consume: impl FnOnce(&mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    let mut decoder = flate2::bufread::GzDecoder::new(src);
    consume(&mut decoder)?;
    // The trailer is checked when the decoder reaches it, which `consume` need not do.
    expect_end(&mut decoder)?;
    expect_end(decoder.into_inner())
}

fn header(name: Option<&str>, entry: &Entry, level: u32) -> Vec<u8> {
    const MAGIC: [u8; 2] = [0x1f, 0x8b];
    const DEFLATE: u8 = 8;
    const FNAME: u8 = 0x08;
    const OS_UNIX: u8 = 3;
    // The "extra flags" byte: 2 says maximum compression (gzip's 9, libdeflate's 9-12), 4 fastest.
    let extra_flags = match level {
        9.. => 2,
        1 => 4,
        _ => 0,
    };
    // gzip's MTIME is 32 bits; 0 means "no time" and is what a later time becomes.
    let mtime = u32::try_from(entry.modified_unix_seconds()).unwrap_or(0);
    // The name field ends at the first NUL, so a name cannot carry one.
    let name = name.map(|name| name.replace('\0', ""));
    let mut header = Vec::with_capacity(10 + name.as_ref().map_or(0, |name| name.len() + 1));
    header.extend_from_slice(&MAGIC);
    header.push(DEFLATE);
    header.push(if name.is_some() { FNAME } else { 0 });
    header.extend_from_slice(&mtime.to_le_bytes());
    header.push(extra_flags);
    header.push(OS_UNIX);
    if let Some(name) = name {
        header.extend_from_slice(name.as_bytes());
        header.push(0);
    }
    header
}
