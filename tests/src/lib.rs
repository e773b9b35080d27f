//! End-to-end tests for s3-compressor, and what they share.
//!
//! `tests/formats.rs` round-trips every registered compression format through decoders that
//! share no code with the backends (the `zip`, `flate2`, `zstd`, `tar` and `brotli` crates'
//! readers, and the `unzip`, `gzip`, `zstd`, `tar` and `brotli` command-line tools where
//! installed). `tests/cli.rs` runs the real `s3-compressor` binary as a user would.
//! `tests/worker_moto.rs` runs `compress` and `invoke` against a real S3 API ([`Moto`], a
//! moto_server on 127.0.0.1), and `tests/worker_lambda.rs` runs the binary as a Lambda function
//! behind cargo-lambda's Runtime API emulator ([`LambdaFunction`]). `tests/worker_serve.rs`
//! runs `s3-compressor serve` and uploads to it with the AWS CLI.

pub mod events;
pub mod lambda;
pub mod moto;
pub mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use lambda::LambdaFunction;
pub use moto::Moto;

/// The workspace root, for the shipped files the tests read (`config/compressor.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `s3-compressor` binary, built from the current sources first.
///
/// Cargo only builds another package's binary for that package's own tests, so this asks cargo
/// for it once per test process; without that, a test could run a stale binary.
pub fn s3_compressor_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
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
    })
}

/// A command running the `s3-compressor` binary, built from the current sources first.
pub fn s3_compressor() -> Command {
    let mut command = Command::new(s3_compressor_binary());
    // Tests say which config they mean; one from the developer's shell must not leak in.
    command.env_remove("S3_COMPRESSOR_CONFIG");
    command
}

/// Whether `tool` is an executable file in a folder of `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool)).is_ok_and(|meta| {
                meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Whether every one of `tools` is installed. If not: on CI (`CI=true`, where `.ci/run`
/// installs them) a failure naming `install`, else a `SKIPPED:` line and `false`.
pub fn have(tools: &[&str], install: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} not installed; install with: {install}",
        missing.join(", ")
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message} (CI=true, so the tests that need them must run)"
    );
    println!("SKIPPED: {message}");
    false
}

/// splitmix64: fast, deterministic, and with no structure a compressor can use.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` incompressible bytes; the same `seed` gives the same bytes.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}
