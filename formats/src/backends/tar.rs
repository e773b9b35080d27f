//! tar (`.tar`, `.tar.gz`, `.tar.zst`): for teams whose tooling expects tarballs. One entry
//! per archive, mode 0644; names longer than 100 bytes use GNU long-name records.

use std::io::{self, Read, Write};
use std::num::NonZeroUsize;

use super::gzip::{read_member, write_member};
use super::{
    level_or, read_zstd_frame, zstd_encoder, zstd_memory, InputSize, DEFLATE_LEVELS, ZSTD_LEVELS,
};
use crate::{Entry, Format, Kind, Registration, Written};

inventory::submit! {
    Registration {
        name: "tar",
        extension: "tar",
        content_type: "application/x-tar",
        kind: Kind::Archive,
        levels: None,
        crate_name: env!("CARGO_PKG_NAME"),
        build: |_| Box::new(Tar { outer: Outer::Plain }),
    }
}

inventory::submit! {
    Registration {
        name: "tar.gz",
        extension: "tar.gz",
        content_type: "application/gzip",
        kind: Kind::Archive,
        levels: Some(DEFLATE_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Tar {
            outer: Outer::Gzip {
                level: level_or(settings, DEFLATE_LEVELS).unsigned_abs(),
                threads: settings.threads,
            },
        }),
    }
}

inventory::submit! {
    Registration {
        name: "tar.zst",
        extension: "tar.zst",
        content_type: "application/zstd",
        kind: Kind::Archive,
        levels: Some(ZSTD_LEVELS),
        crate_name: env!("CARGO_PKG_NAME"),
        build: |settings| Box::new(Tar {
            outer: Outer::Zstd { level: level_or(settings, ZSTD_LEVELS), threads: settings.threads },
        }),
    }
}

/// The compression wrapped around the tar stream.
#[derive(Debug)]
enum Outer {
    Plain,
    Gzip { level: u32, threads: NonZeroUsize },
    Zstd { level: i32, threads: NonZeroUsize },
}

#[derive(Debug)]
struct Tar {
    outer: Outer,
}

impl Format for Tar {
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> io::Result<Written> {
        let size = entry.size().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "tar records the size before the data, so the input size must be known",
            )
        })?;
        match self.outer {
            Outer::Plain => write_tar(src, dst, entry, size).map(|()| Written::default()),
            Outer::Gzip { level, threads } => {
                let written = write_member(dst, None, entry, level, threads, |w| {
                    write_tar(src, w, entry, size)
                })?;
                // What was stored counts the tar headers too; the input is the entry alone.
                Ok(Written {
                    stored: written.stored.min(size),
                })
            }
            Outer::Zstd { level, threads } => {
                let mut zstd = zstd_encoder(dst, level, threads, tar_size(size))?;
                write_tar(src, &mut zstd, entry, size)?;
                zstd.finish()?;
                Ok(Written::default())
            }
        }
    }

    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
        match self.outer {
            Outer::Plain => read_tar(src, dst),
            Outer::Gzip { .. } => {
                read_member(&mut io::BufReader::new(src), |tar| read_tar(tar, dst))
            }
            Outer::Zstd { .. } => read_zstd_frame(src, |tar| read_tar(tar, dst)),
        }
    }

    fn memory(&self, size: Option<u64>) -> u64 {
        match self.outer {
            Outer::Plain => TAR_MEMORY,
            Outer::Gzip { level, threads } => {
                crate::deflate::memory(level, threads, size.map(|size| size + TAR_HEADERS))
            }
            Outer::Zstd { level, threads } => {
                zstd_memory(level, threads, size.map_or(InputSize::Unknown, tar_size))
            }
        }
    }
}

/// About what the tar stream of an entry adds to its data: the header, a long name's records,
/// the padding and the end-of-archive blocks.
const TAR_HEADERS: u64 = 8 * 1024;

/// What writing and reading a tar stream holds: a few blocks of 512 bytes and the copies'
/// buffers.
const TAR_MEMORY: u64 = 256 * 1024;

/// The size of the tar stream of an entry of `size` bytes, near enough to size zstd's window
/// and tables by; zstd is not told it exactly (a long name adds records), so it records none.
fn tar_size(size: u64) -> InputSize {
    InputSize::About(size.saturating_add(TAR_HEADERS))
}

/// Reads the one regular entry [`write_tar`] wrote into `dst`; the archive must end after it
/// with nothing but zero blocks.
fn read_tar(src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
    let invalid = |message: &str| io::Error::new(io::ErrorKind::InvalidData, message.to_owned());
    let mut archive = tar::Archive::new(src);
    {
        let mut entries = archive.entries()?;
        let mut entry = entries
            .next()
            .ok_or_else(|| invalid("the archive holds no entry"))??;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid("the archive's entry is not a regular file"));
        }
        let size = entry.size();
        let copied = io::copy(&mut entry, dst)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the entry holds {copied} of its {size} bytes"),
            ));
        }
        if entries.next().is_some() {
            return Err(invalid("the archive holds more than one entry"));
        }
    }
    // The reader stopped at the first of the two zero blocks that end an archive; the
    // second (and nothing but zeros after it) must still be there.
    let rest = archive.into_inner();
    let mut zeros = 0u64;
    let mut block = [0u8; 512];
    loop {
        match rest.read(&mut block)? {
            0 if zeros >= 512 && zeros % 512 == 0 => return Ok(()),
            0 => return Err(invalid("the archive's end-of-archive blocks are cut short")),
            n if block[..n].iter().all(|&byte| byte == 0) => zeros += n as u64,
            _ => {
                return Err(invalid(
                    "bytes other than zero blocks follow the archive's end",
                ))
            }
        }
    }
}

fn write_tar(src: &mut dyn Read, dst: &mut dyn Write, entry: &Entry, size: u64) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(entry.modified_unix_seconds());
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(dst);
    builder.append_data(&mut header, entry.name(), ExactSize::new(src, size))?;
    builder.into_inner()?;
    Ok(())
}

/// Fails the read when the source is not exactly the size written in the tar header, which
/// would otherwise yield an archive that silently truncates or misaligns the data.
struct ExactSize<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
}

impl<'a> ExactSize<'a> {
    fn new(inner: &'a mut dyn Read, size: u64) -> Self {
        Self {
            inner,
            remaining: size,
        }
    }
}

impl Read for ExactSize<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the input is longer than its announced size",
                )),
            };
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..limit])?;
        if n == 0 && limit > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the input ended {} bytes short of its announced size",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
