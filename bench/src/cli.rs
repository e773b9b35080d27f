//! The command line, as clap sees it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "s3-compressor-bench",
    version,
    about,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole benchmark on a corpus and write results.md, results.json and
    /// throughput.svg into --out.
    Run(RunArgs),
    /// Compress a local file with one format's codec alone, exactly as the worker runs it,
    /// minus S3.
    Codec(CodecArgs),
    /// Internal: run a command, then print its wall time, peak RSS and exit status as one JSON
    /// line.
    #[command(hide = true)]
    Measure(MeasureArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The corpus made by make_corpus.py: logs.jsonl, records.csv, random.bin, small/ (any of
    /// them may be missing).
    #[arg(long, value_name = "DIR")]
    pub corpus: PathBuf,
    /// Where results.md, results.json and throughput.svg are written (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Runs of every measurement; the tables show medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// The s3-compressor binary to measure; default: the one beside this program.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Size of the streamed input (logs.jsonl repeated) for the memory-bound end-to-end run, in
    /// GiB; 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub big_gib: u64,
    /// Leave out the CLI tools (zip, gzip, pigz, zstd).
    #[arg(long)]
    pub skip_tools: bool,
    /// Where the S3 endpoints keep their data and the local outputs are written (a temporary
    /// folder inside it, removed at the end). Needs room for the inputs, the streamed input
    /// and their outputs. Default: the system's temporary folder.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CodecArgs {
    /// A format name as configs use it (zip, gzip, zstd, ...).
    #[arg(long)]
    pub format: String,
    /// The level; default: the format's default.
    #[arg(long)]
    pub level: Option<i32>,
    /// The most cores the format may use; default: all available (as the worker).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also decode the output as it is written and compare it with the input, as the worker
    /// proves every output before it deletes a source.
    #[arg(long)]
    pub prove: bool,
    pub input: PathBuf,
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Send the command's stdout to this file (default: discarded).
    #[arg(long, value_name = "FILE")]
    pub stdout: Option<PathBuf>,
    /// Run the command on this CPU only, as `taskset -c CPU` would (this process itself stays
    /// where it was while it waits).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Kill the command and fail after this many seconds.
    #[arg(long, default_value_t = 7200)]
    pub timeout_s: u64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}
