//! The s3-compressor worker: what every entry point shares.
//!
//! The binary's `main.rs` only parses the command line and calls in here.

mod backfill;
pub mod cli;
mod commands;
mod error;
mod estimate;
mod failures;
pub mod handler;
pub mod handoff;
mod lambda;
mod online;
mod outcome;
mod pipeline;
mod routes;
pub mod store;
pub mod telemetry;

pub use error::Error;
pub use outcome::{Outcome, OutputProof, Proof, SourceFate, SourceProof};
pub use pipeline::{Deadline, Pace, Tuning, Worker};
pub use routes::{Decision, Plan, Routes, RuleSummary};

/// The package version and the commit it was built from (`build.rs`), e.g. `0.1.0+1a2b3c4`:
/// what `--version` prints and every output's metadata records.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("S3_COMPRESSOR_COMMIT"));

// Add-on formats are linked in here, one line each; their `inventory::submit!` does the rest.
use s3_compressor_format_brotli as _;
