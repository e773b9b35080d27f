//! The deflate engines zip and gzip could use, compared on files on one thread: CPU seconds
//! per GB and ratio, in one run, for bench/README.md's choice of engine, block size and level.
//!
//! ```sh
//! cargo build --profile image -p s3-compressor-bench --example engines
//! taskset -c 0 target/image/examples/engines /tmp/s3-compressor-corpus/logs.jsonl [FILE...]
//! ENGINES=libdeflate:8:2048,zlib-rs:6:512 taskset -c 0 target/image/examples/engines FILE
//! ```
//!
//! Each engine compresses the file in blocks the way a parallel deflate would (on one thread
//! here, so its CPU time is the cost per core): `zlib-rs` with each block primed by the 32 KiB
//! before it and ended by a sync flush (history carried across blocks, as pigz does),
//! `libdeflate` on blocks of their own (no dictionary, which libdeflate does not take), and the
//! zip format as the worker runs it at its default level (libdeflate, the join of the blocks,
//! the incompressible-sample check, CRC-32). `ENGINES` lists `ENGINE:LEVEL:BLOCK_KIB`, comma
//! separated (block 0: the whole file as one block); left out, [`DEFAULT_ENGINES`].

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{bail, Context};
use flate2::{Compress, Compression, FlushCompress};
use nix::sys::resource::{getrusage, UsageWho};
use s3_compressor_formats::{Entry, Options, Registry};

const KIB: usize = 1024;
const DICTIONARY: usize = 32 * KIB;

/// The comparison behind the default level and block size (bench/README.md, "Real data").
const DEFAULT_ENGINES: &str = "libdeflate:6:512,libdeflate:6:4096,libdeflate:7:1024,\
    libdeflate:7:2048,libdeflate:7:4096,libdeflate:8:2048,zlib-rs:6:512,zlib-rs:7:512,\
    zlib-rs:9:512";

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        bail!("usage: engines FILE...");
    }
    for path in paths {
        let input = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
        engines(&path, &input)?;
    }
    Ok(())
}

fn engines(path: &str, input: &[u8]) -> anyhow::Result<()> {
    println!("{path}: {} bytes, one thread\n", input.len());
    println!("| engine | level | block | CPU s/GB | ratio |");
    println!("|---|---:|---:|---:|---:|");
    let spec = std::env::var("ENGINES").unwrap_or_else(|_| DEFAULT_ENGINES.to_owned());
    for item in spec.split(',').filter(|item| !item.is_empty()) {
        let fields: Vec<&str> = item.split(':').collect();
        let [engine, level, block] = fields[..] else {
            bail!("ENGINES: {item} is not ENGINE:LEVEL:BLOCK_KIB");
        };
        let level: i32 = level.parse().with_context(|| format!("level in {item}"))?;
        let block = match block
            .parse::<usize>()
            .with_context(|| format!("block in {item}"))?
        {
            0 => input.len().max(1),
            kib => kib * KIB,
        };
        let out = match engine {
            "zlib-rs" => timed(input, |input| zlib_rs(input, level, block))?,
            "libdeflate" => timed(input, |input| libdeflate(input, level, block))?,
            _ => bail!("ENGINES: no engine {engine} (zlib-rs, libdeflate)"),
        };
        row(engine, &level.to_string(), &kib(block), input, out);
    }
    let out = timed(input, zip_format)?;
    row(
        "s3-compressor zip (libdeflate + join)",
        "default",
        "default",
        input,
        out,
    );
    println!();
    Ok(())
}

fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes / KIB)
}

fn row(engine: &str, level: &str, block: &str, input: &[u8], (out, cpu): (usize, Duration)) {
    let gb = input.len() as f64 / 1e9;
    let ratio = input.len() as f64 / out as f64;
    let cpu = cpu.as_secs_f64() / gb;
    println!("| {engine} | {level} | {block} | {cpu:.2} | {ratio:.4} |");
}

/// Runs `compress` and returns its output size with the CPU time the process spent on it
/// (the zip format compresses on a thread of its own).
fn timed(
    input: &[u8],
    compress: impl FnOnce(&[u8]) -> anyhow::Result<usize>,
) -> anyhow::Result<(usize, Duration)> {
    let before = process_cpu()?;
    let out = compress(input)?;
    Ok((out, process_cpu()? - before))
}

fn process_cpu() -> anyhow::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage(RUSAGE_SELF)")?;
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec().unsigned_abs())
            + Duration::from_micros(time.tv_usec().unsigned_abs())
    };
    Ok(micros(user) + micros(system))
}

fn zlib_rs(input: &[u8], level: i32, block: usize) -> anyhow::Result<usize> {
    let mut compress = Compress::new(Compression::new(level.unsigned_abs()), false);
    let mut output = Vec::with_capacity(2 * block);
    let mut total = 0;
    let mut previous: Option<&[u8]> = None;
    for chunk in input.chunks(block) {
        compress.reset();
        if let Some(previous) = previous {
            compress.set_dictionary(&previous[previous.len().saturating_sub(DICTIONARY)..])?;
        }
        output.clear();
        compress.compress_vec(chunk, &mut output, FlushCompress::Sync)?;
        total += output.len();
        previous = Some(chunk);
    }
    Ok(total)
}

fn libdeflate(input: &[u8], level: i32, block: usize) -> anyhow::Result<usize> {
    let level = libdeflater::CompressionLvl::new(level)
        .map_err(|error| anyhow::anyhow!("libdeflate level: {error:?}"))?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut output = vec![0; compressor.deflate_compress_bound(block)];
    let mut total = 0;
    for chunk in input.chunks(block) {
        total += compressor
            .deflate_compress(chunk, &mut output)
            .map_err(|error| anyhow::anyhow!("libdeflate: {error:?}"))?;
    }
    Ok(total)
}

/// Counts what the zip format writes without keeping it.
#[derive(Debug, Default)]
struct Count(usize);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn zip_format(input: &[u8]) -> anyhow::Result<usize> {
    let registry = Registry::from_inventory()?;
    let options = Options {
        level: None,
        threads: Some(NonZeroUsize::MIN.get()),
    };
    let compressor = registry.get("zip")?.compressor(&options)?;
    let entry = Entry::new("input").with_size(input.len() as u64);
    let mut count = Count::default();
    compressor.compress(&mut &input[..], &mut count, &entry)?;
    Ok(count.0)
}
