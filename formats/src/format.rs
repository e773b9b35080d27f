use std::fmt;
use std::io::{Read, Write};
use std::num::NonZeroUsize;

use crate::measure::{CountingWriter, HashingReader};
use crate::{Entry, FormatError};

/// A compression format, configured and ready to run.
///
/// Implementations must stream: memory use may not grow with the input, and everything the
/// format needs to write (trailers, central directories, checksums) is written before
/// `write_compressed` returns, so an error is reported here rather than lost in a `Drop`.
pub trait Format: Send + Sync + fmt::Debug {
    /// Reads `src` to its end and writes its compressed form to `dst`.
    fn write_compressed(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> std::io::Result<Written>;

    /// Reads what [`Format::write_compressed`] wrote and writes back the original bytes.
    ///
    /// This is the proof the worker asks for before it deletes a source, so it must fail
    /// rather than guess: on a checksum that does not match, a stream cut short, a second
    /// entry, or bytes after the end. Memory may not grow with the input here either.
    fn write_decompressed(&self, src: &mut dyn Read, dst: &mut dyn Write) -> std::io::Result<()>;

    /// The most memory, in bytes, this format holds at once to compress an input of `size`
    /// bytes (`None`: any size) and decode the output back: windows, match tables, blocks and
    /// worker buffers. The worker reserves it before it starts an object, so that small
    /// objects share what a large one takes alone; an estimate too low lets a batch outgrow
    /// the machine, one too high only runs fewer objects at once.
    ///
    /// The default is cautious for a single-threaded codec with a window of a few MiB.
    fn memory(&self, _size: Option<u64>) -> u64 {
        DEFAULT_MEMORY
    }
}

/// What [`Format::memory`] assumes of a format that does not say.
pub const DEFAULT_MEMORY: u64 = 16 * 1024 * 1024;

/// What a backend knows about its output that counting bytes cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Input bytes written as they are (deflate's stored blocks) because a sample showed they
    /// would not shrink: what users see as `stored` on the worker's line for the object.
    pub stored: u64,
}

/// How the output key is formed from the source key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A container that names its entries (zip, tar): its extension replaces the source's,
    /// because the original name survives inside the archive.
    Archive,
    /// A compressed byte stream (gzip, zstd): its extension is appended, so decompressing
    /// `report.csv.gz` gives back `report.csv`.
    Stream,
}

/// The compression levels a format accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub min: i32,
    pub max: i32,
    pub default: i32,
}

/// What a backend announces about itself with `inventory::submit!`.
///
/// Every field is `const`-constructible so a registration is a plain static.
#[derive(Debug)]
pub struct Registration {
    /// The name used in config files (`format = "zip"`).
    pub name: &'static str,
    /// File extension without the leading dot (`zip`, `tar.zst`).
    pub extension: &'static str,
    pub content_type: &'static str,
    pub kind: Kind,
    /// `None` for formats that take no level.
    pub levels: Option<Levels>,
    /// Which crate registered the format, to name both sides of a duplicate.
    pub crate_name: &'static str,
    /// Builds the format from options that [`Registration::compressor`] has validated.
    pub build: fn(&Settings) -> Box<dyn Format>,
}

/// Options as a user writes them; anything left out gets the format's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub level: Option<i32>,
    /// Upper bound on the cores the format may use. `None`: every available core.
    pub threads: Option<usize>,
}

/// Validated options handed to a backend's constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The level to use; `None` only for formats without levels.
    pub level: Option<i32>,
    pub threads: NonZeroUsize,
}

impl Registration {
    /// Checks `options` against what this format accepts, without building anything.
    ///
    /// Levels are validated, never clamped: a user who asked for level 30 of a format that
    /// stops at 22 should hear about it rather than silently get 22.
    pub fn settings(&self, options: &Options) -> Result<Settings, FormatError> {
        let level = match (self.levels, options.level) {
            (None, None) => None,
            (None, Some(_)) => return Err(FormatError::LevelNotAccepted { format: self.name }),
            (Some(levels), None) => Some(levels.default),
            (Some(levels), Some(level)) if (levels.min..=levels.max).contains(&level) => {
                Some(level)
            }
            (Some(levels), Some(level)) => {
                return Err(FormatError::LevelOutOfRange {
                    format: self.name,
                    level,
                    min: levels.min,
                    max: levels.max,
                })
            }
        };
        let threads = match options.threads {
            Some(threads) => NonZeroUsize::new(threads).ok_or(FormatError::ZeroThreads)?,
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };
        Ok(Settings { level, threads })
    }

    /// Validates `options` and builds a ready-to-run compressor.
    pub fn compressor(&'static self, options: &Options) -> Result<Compressor, FormatError> {
        let settings = self.settings(options)?;
        Ok(Compressor {
            registration: self,
            settings,
            format: (self.build)(&settings),
        })
    }
}

/// What one compression did, measured outside the backend so every format reports alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CRC-32 (IEEE) of the uncompressed input.
    pub crc32: u32,
    /// Input bytes written as they are, not compressed (see [`Written::stored`]).
    pub stored: u64,
}

/// A configured format together with its registration.
#[derive(Debug)]
pub struct Compressor {
    registration: &'static Registration,
    settings: Settings,
    format: Box<dyn Format>,
}

impl Compressor {
    pub fn registration(&self) -> &'static Registration {
        self.registration
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Compresses all of `src` into `dst` and measures what went through.
    pub fn compress(
        &self,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        entry: &Entry,
    ) -> Result<Stats, FormatError> {
        let mut reader = HashingReader::new(src);
        let mut writer = CountingWriter::new(dst);
        let written = self
            .format
            .write_compressed(&mut reader, &mut writer, entry)
            .and_then(|written| writer.flush().map(|()| written))
            .map_err(|source| FormatError::Compress {
                format: self.registration.name,
                source,
            })?;
        let (bytes_in, crc32) = reader.finish();
        Ok(Stats {
            bytes_in,
            bytes_out: writer.count(),
            crc32,
            stored: written.stored,
        })
    }

    /// Bytes this compressor holds to compress `size` bytes and decode them back (see
    /// [`Format::memory`]).
    pub fn memory(&self, size: Option<u64>) -> u64 {
        self.format.memory(size)
    }

    /// Decodes this format's output back into `dst`; fails on anything it did not write.
    pub fn decompress(&self, src: &mut dyn Read, dst: &mut dyn Write) -> Result<(), FormatError> {
        self.format
            .write_decompressed(src, dst)
            .and_then(|()| dst.flush())
            .map_err(|source| FormatError::Decompress {
                format: self.registration.name,
                source,
            })
    }
}

/// Fails unless `src` has nothing left: bytes after the end of a stream are not ours, and a
/// reader that stops early would hide them.
pub fn expect_end(src: &mut dyn Read) -> std::io::Result<()> {
    let mut probe = [0u8; 1];
    loop {
        return match src.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bytes follow the end of the compressed stream",
            )),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => Err(error),
        };
    }
}
