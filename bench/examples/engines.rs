//! The deflate engines zip and gzip could use, compared on files on one thread: CPU seconds
//! per GB and ratio, in one run, for bench/README.md's choice of engine, block size and level.
//!
//! ```sh
//! cargo build --profile image -p s3-compressor-bench --example engines
//! taskset -c 0 target/image/examples/engines /tmp/s3-compressor-corpus/logs.jsonl [FILE...]
//! ```
//!
//! Each engine compresses the file in blocks the way a parallel deflate would (on one thread
//! here, so its CPU time is the cost per core): zlib-rs with each block primed by the 32 KiB
//! before it and ended by a sync flush (the engine before libdeflate), libdeflate on blocks of
//! their own (no dictionary, which libdeflate does not take), and the zip format as the worker
//! runs it (libdeflate, the join of the blocks, the incompressible-sample check, CRC-32).

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{bail, Context};
use flate2::{Compress, Compression, FlushCompress};
use nix::sys::resource::{getrusage, UsageWho};
use s3_compressor_formats::{Entry, Options, Registry};

const KIB: usize = 1024;
const DICTIONARY: usize = 32 * KIB;

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
    for (level, block) in [(5, 128 * KIB), (6, 128 * KIB)] {
        let out = timed(input, |input| zlib_rs(input, level, block))?;
        row(
            "zlib-rs, dictionary + sync flush",
            level,
            &kib(block),
            input,
            out,
        );
    }
    for (level, block) in [
        (1, 512 * KIB),
        (6, 512 * KIB),
        (6, 1024 * KIB),
        (7, 512 * KIB),
        (7, 1024 * KIB),
        (7, 2048 * KIB),
        (7, 4096 * KIB),
        (7, input.len().max(1)),
        (8, 1024 * KIB),
    ] {
        let out = timed(input, |input| libdeflate(input, level, block))?;
        row(
            "libdeflate, blocks on their own",
            level,
            &kib(block),
            input,
            out,
        );
    }
    let out = timed(input, zip_format)?;
    row(
        "s3-compressor zip (libdeflate + join)",
        6,
        "1024 KiB",
        input,
        out,
    );
    println!();
    Ok(())
}

fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes / KIB)
}

fn row(engine: &str, level: i32, block: &str, input: &[u8], (out, cpu): (usize, Duration)) {
    let gb = input.len() as f64 / 1e9;
    let ratio = input.len() as f64 / out as f64;
    let cpu = cpu.as_secs_f64() / gb;
    println!("| {engine} | {level} | {block} | {cpu:.2} | {ratio:.3} |");
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
        level: Some(6),
        threads: Some(NonZeroUsize::MIN.get()),
    };
    let compressor = registry.get("zip")?.compressor(&options)?;
    let entry = Entry::new("input").with_size(input.len() as u64);
    let mut count = Count::default();
    compressor.compress(&mut &input[..], &mut count, &entry)?;
    Ok(count.0)
}
