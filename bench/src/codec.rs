//! `s3-compressor-bench codec`: one format's codec alone on a local file.
//!
//! The same registry, options and [`Compressor::compress`] call the worker makes, with the same
//! entry (the file's name, size and modification time); only the S3 download and multipart
//! upload around it are replaced by buffered file I/O.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};

use anyhow::Context as _;
use s3_compressor_formats::{Entry, Options, Registry};

use crate::cli::CodecArgs;

/// Read and write buffers, large enough that system calls cost nothing measurable.
const BUFFER: usize = 1 << 20;

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
    let stats = compressor.compress(&mut reader, &mut writer, &entry)?;
    writer
        .flush()
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{}: {} -> {} bytes ({}, level {:?}, {} threads)",
        args.input.display(),
        stats.bytes_in,
        stats.bytes_out,
        args.format,
        compressor.settings().level,
        compressor.settings().threads
    );
    Ok(())
}
