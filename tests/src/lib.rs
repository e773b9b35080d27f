//! End-to-end tests for s3-compressor, and what they share.
//!
//! `tests/formats.rs` round-trips every registered compression format through decoders that
//! share no code with the backends (the `zip`, `flate2`, `zstd`, `tar` and `brotli` crates'
//! readers, and the `unzip`, `gzip`, `zstd`, `tar` and `brotli` command-line tools where
//! installed). `tests/cli.rs` runs the real `s3-compressor` binary as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root, for the shipped files the tests read (`config/compressor.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A command running the `s3-compressor` binary, built from the current sources first.
///
/// Cargo only builds another package's binary for that package's own tests, so this asks cargo
/// for it once per test run; without that, a test could run a stale binary.
pub fn s3_compressor() -> Command {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    let binary = BINARY.get_or_init(|| {
        let build = escargot::CargoBuild::new()
            .manifest_path(workspace_root().join("Cargo.toml"))
            .package("s3-compressor")
            .bin("s3-compressor")
            .current_release()
            .run();
        match build {
            Ok(run) => run.path().to_owned(),
            Err(error) => panic!("cannot build the s3-compressor binary: {error}"),
        }
    });
    let mut command = Command::new(binary);
    // Tests say which config they mean; one from the developer's shell must not leak in.
    command.env_remove("S3_COMPRESSOR_CONFIG");
    command
}
