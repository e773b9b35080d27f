use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match s3_compressor::cli::Cli::parse().run(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
