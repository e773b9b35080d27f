//! Streaming compression formats for s3-compressor.
//!
//! Each format is a backend in a file of its own under `backends/` (or in a crate of its own, see
//! `addons/`), announced to the rest of the program with [`inventory::submit!`] of a
//! [`Registration`]. Nothing here knows about S3, Lambda or config files: a backend turns a
//! [`Read`](std::io::Read) into a [`Write`](std::io::Write), as a stream, and that is all.

mod backends;
mod content;
mod deflate;
mod entry;
mod error;
mod format;
mod inflate;
mod measure;
mod registry;

pub use content::{already_compressed, SNIFF_BYTES};
pub use entry::{safe_entry_name, Entry};
pub use error::FormatError;
pub use format::{
    expect_end, Compressor, Format, Kind, Levels, Options, Registration, Settings, Stats, Written,
    DEFAULT_MEMORY,
};
pub use registry::Registry;

// Add-on crates call `inventory::submit!` through this re-export, so they need no direct
// dependency on `inventory` and always agree with us on its version.
pub use inventory;

inventory::collect!(Registration);
