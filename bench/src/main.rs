//! `s3-compressor-bench`: one command that measures, on one machine in one run, the throughput,
//! compression ratio and peak RSS of `s3-compressor` end to end against a local S3 endpoint, of
//! the same format's codec alone, and of the CLI tools a user would run instead.
//!
//! See `bench/README.md` for what each measurement means and how it is taken.

mod affinity;
mod chart;
mod cli;
mod codec;
mod contenders;
mod inputs;
mod lambda;
mod machine;
mod measure;
mod report;
mod results;
mod run;
mod s3;
mod small;
mod startup;
mod stats;
mod targets;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // As `s3-compressor` itself does, so that the worker measured here holds what it holds
    // there.
    if !s3_compressor_allocator::return_large_allocations_when_freed() {
        eprintln!("s3-compressor-bench: warning: glibc refused a fixed mmap threshold");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Codec(args) => codec::codec(&args),
        Command::Measure(args) => measure::measure_child(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("s3-compressor-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
