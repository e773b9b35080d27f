//! `s3-compressor-bench codec`: one format's codec alone on a local file.
//!
//! The same registry, options and [`Compressor::compress`] call the worker makes, with the same
//! entry (the file's name, size and modification time); only the S3 download and multipart
//! upload around it are replaced by buffered file I/O. With `--prove`, the output is also
//! decoded as it is written and its CRC-64/NVME held against the input's, as the worker proves
//! every output before it deletes a source: the difference is what the proof costs.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{bail, Context as _};
use crc_fast::{CrcAlgorithm, Digest};
use s3_compressor_formats::{Compressor, Entry, Options, Registry, Stats};

use crate::cli::CodecArgs;

/// Read and write buffers, large enough that system calls cost nothing measurable.
const BUFFER: usize = 1 << 20;

/// Compressed bytes handed to the decoder at a time.
const PROOF_CHUNK: usize = 1 << 20;

pub fn codec(args: &CodecArgs) -> anyhow::Result<()> {
    let registry = Registry::from_inventory()?;
    let options = Options {
        level: args.level,
        threads: args.threads,
    };
    let compressor = registry.get(&args.format)?.compressor(&options)?;

    let input =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let metadata = input
        .metadata()
        .with_context(|| format!("cannot stat {}", args.input.display()))?;
    let name = args
        .input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut entry = Entry::new(&name).with_size(metadata.len());
    if let Ok(modified) = metadata.modified() {
        entry = entry.with_modified(modified);
    }
    let output = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;

    let mut reader = BufReader::with_capacity(BUFFER, input);
    let mut writer = BufWriter::with_capacity(BUFFER, output);
    let stats = if args.prove {
        compress_and_prove(&compressor, &mut reader, &mut writer, &entry)?
    } else {
        compressor.compress(&mut reader, &mut writer, &entry)?
    };
    writer
        .flush()
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{}: {} -> {} bytes ({}, level {:?}, {} threads, stored: {} bytes)",
        args.input.display(),
        stats.bytes_in,
        stats.bytes_out,
        args.format,
        compressor.settings().level,
        compressor.settings().threads,
        stats.stored
    );
    Ok(())
}

/// Compresses `src` into `dst` while a second thread decodes the output and checksums what
/// comes back, then compares: the worker's proof, minus S3.
fn compress_and_prove(
    compressor: &Compressor,
    src: &mut dyn Read,
    dst: &mut dyn Write,
    entry: &Entry,
) -> anyhow::Result<Stats> {
    std::thread::scope(|scope| {
        let (copies, copied) = sync_channel(0);
        let decoder = scope.spawn(move || {
            let mut decoded = Crc64Writer::default();
            compressor
                .decompress(&mut ChunkReader::new(copied), &mut decoded)
                .map(|()| (decoded.bytes, decoded.digest.finalize()))
        });
        let mut read = Crc64Reader {
            inner: src,
            digest: Digest::new(CrcAlgorithm::Crc64Nvme),
            bytes: 0,
        };
        let mut tee = Tee {
            inner: dst,
            copies,
            pending: Vec::with_capacity(PROOF_CHUNK),
        };
        let stats = compressor.compress(&mut read, &mut tee, entry)?;
        tee.close()?;
        let decoded = decoder
            .join()
            .map_err(|_| anyhow::anyhow!("the decoder crashed"))??;
        let input = (read.bytes, read.digest.finalize());
        if decoded != input {
            bail!("the output decodes to {decoded:?} (bytes, CRC-64), the input is {input:?}");
        }
        Ok(stats)
    })
}

struct Crc64Reader<'a> {
    inner: &'a mut dyn Read,
    digest: Digest,
    bytes: u64,
}

impl Read for Crc64Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Crc64Writer {
    digest: Digest,
    bytes: u64,
}

impl Default for Crc64Writer {
    fn default() -> Self {
        Self {
            digest: Digest::new(CrcAlgorithm::Crc64Nvme),
            bytes: 0,
        }
    }
}

impl Write for Crc64Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.digest.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes through to the file, and hands the decoder a copy in chunks.
struct Tee<'a> {
    inner: &'a mut dyn Write,
    copies: SyncSender<Vec<u8>>,
    pending: Vec<u8>,
}

impl Tee<'_> {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(PROOF_CHUNK));
        self.copies
            .send(chunk)
            .map_err(|_| io::Error::other("the decoder stopped"))
    }

    /// The last chunk; dropping the sender then ends the decoder's stream.
    fn close(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= PROOF_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct ChunkReader {
    chunks: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    fn new(chunks: Receiver<Vec<u8>>) -> Self {
        Self {
            chunks,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
