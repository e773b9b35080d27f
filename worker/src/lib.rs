//! The s3-compressor worker: what every entry point shares.
//!
//! The binary's `main.rs` only parses the command line and calls in here.

pub mod cli;
mod commands;
mod error;
mod routes;

pub use error::Error;
pub use routes::{Decision, Plan, Routes};

// Add-on formats are linked in here, one line each; their `inventory::submit!` does the rest.
use s3_compressor_format_brotli as _;
