//! End-to-end tests for s3-compressor, and what they share.
//!
//! `tests/formats.rs` round-trips every registered compression format through decoders that
//! share no code with the backends (the `zip`, `flate2`, `zstd`, `tar` and `brotli` crates'
//! readers, and the `unzip`, `gzip`, `zstd`, `tar` and `brotli` command-line tools where
//! installed).
//!
//! The tests that run a binary live in the package that has it, so that cargo builds it once,
//! in the same build as the tests: `worker/tests/` runs `s3-compressor` as a user would — the
//! offline commands, `compress` and `invoke` against a real S3 API ([`Moto`], a moto_server on
//! 127.0.0.1), the binary as a Lambda function behind cargo-lambda's Runtime API emulator
//! ([`LambdaFunction`]), `serve` with the AWS CLI uploading to it, the deployment and the
//! README's quick start — and `bench/tests/` runs the benchmark. This crate is what they
//! share: the servers, the processes and the events, and [`FaultProxy`], which stands between
//! a client and moto_server and spoils the S3 operations a fault test picks.

pub mod aws_cli;
pub mod estimate;
pub mod events;
pub mod faults;
pub mod lambda;
pub mod moto;
pub mod process;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use faults::FaultProxy;
pub use lambda::LambdaFunction;
pub use moto::Moto;

/// The key pair every test gives moto_server's clients: distinctive, so that
/// [`assert_no_leaks`] can look for the secret.
pub const MOTO_ACCESS_KEY: &str = "s3c-test-access-key";
pub const MOTO_SECRET_KEY: &str = "s3c-test-secret-never-printed";

/// What nothing the worker prints may contain: the tests' secret keys (moto's, and the one
/// `worker/tests/worker_serve.rs` gives `serve`), the parts of a presigned URL or a signed
/// request that would let someone act with the credentials, and a marker of object content
/// (every row of [`csv_text`] has `customer-`; no test key does).
pub const LEAK_MARKERS: &[&str] = &[
    MOTO_SECRET_KEY,
    "serve-test-secret",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "Signature=",
    "customer-",
];

/// Fails the test if `output` (what `what` printed) contains any of [`LEAK_MARKERS`].
///
/// The harness calls it on the output of every `s3-compressor` process it runs and of the
/// Lambda function, so every end-to-end test checks the worker's logs, not one test.
pub fn assert_no_leaks(what: &str, output: &str) {
    for marker in LEAK_MARKERS {
        if let Some(at) = output.find(marker) {
            let line = output[..at].lines().count().max(1);
            panic!("{what} printed {marker:?} (line {line}); logs must never hold credentials, signatures or object content:\n{output}");
        }
    }
}

/// The workspace root, for the shipped files the tests read (`config/compressor.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Where cargo builds: `CARGO_TARGET_DIR` when it is set, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `s3-compressor` binary of this build.
///
/// The tests that run it are the worker package's integration tests (`worker/tests/`), so cargo
/// builds the binary in the same build as the tests, with the same features and profile, and
/// says where it is.
pub fn s3_compressor_binary() -> PathBuf {
    built_binary("s3-compressor")
}

/// A binary cargo built for the running test, from `CARGO_BIN_EXE_<name>`: cargo sets it for
/// the integration tests of the package that has the binary.
pub fn built_binary(name: &str) -> PathBuf {
    let variable = format!("CARGO_BIN_EXE_{name}");
    std::env::var_os(&variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: a test that runs {name} must be an integration test of \
                 the package that has that binary (cargo sets it only for those)"
            )
        })
}

/// A command running the `s3-compressor` binary.
pub fn s3_compressor() -> Command {
    let mut command = Command::new(s3_compressor_binary());
    // Tests say which config they mean; one from the developer's shell must not leak in.
    command.env_remove("S3_COMPRESSOR_CONFIG");
    command
}

/// An AWS SDK S3 client for the endpoint at `endpoint` (path-style, us-east-1), signing with
/// the given key pair, over rustls with ring as the worker's own client (the SDK has no default
/// client in this workspace).
pub fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
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

/// How to get the Python tools the tests run (moto_server, aws, cargo-lambda, cfn-lint,
/// hadolint, checkov): `.ci/run` keeps them in the checkout's own virtualenv, so that neither
/// the system's nor the user's Python changes, and the tests find them on `PATH` like any
/// other tool.
pub const PYTHON_TOOLS: &str =
    ".ci/run (it installs them in .venv/), then: source .venv/bin/activate";

/// Whether every one of `tools` is installed. If not: on CI (`CI=true`, where `.ci/run`
/// installs them) a failure naming `install`, else a `SKIPPED:` line and `false`.
///
/// A tool in the checkout's `.venv/bin` but not on `PATH` is missing too (the tests run it by
/// name, and so do the scripts they run), but the message says to activate the virtualenv
/// rather than to install it again.
pub fn have(tools: &[&str], install: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let venv_bin = workspace_root().join(".venv").join("bin");
    let message = if missing.iter().all(|tool| venv_bin.join(tool).is_file()) {
        format!(
            "{} not on PATH, but in .venv/bin: source .venv/bin/activate first",
            missing.join(", ")
        )
    } else {
        format!(
            "{} not installed; install with: {install}",
            missing.join(", ")
        )
    };
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

/// `len` bytes of CSV-like text, the kind of object the worker is mostly given, from row
/// `first_row` on (so different seeds give different text).
pub fn csv_text(len: usize, first_row: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    out.extend_from_slice(b"id,customer,region,amount,status\n");
    let mut row = first_row;
    while out.len() < len {
        let line = format!(
            "{row},customer-{:04},{},{}.{:02},{}\n",
            row * 7919 % 9973,
            ["eu-west-1", "us-east-1", "ap-south-1"][(row % 3) as usize],
            row * 104_729 % 100_000,
            row % 100,
            if row % 17 == 0 { "refunded" } else { "paid" },
        );
        out.extend_from_slice(line.as_bytes());
        row += 1;
    }
    out.truncate(len);
    out
}

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// The one entry of a zip output: its name, and the length and CRC-32 of what it decodes to,
/// read by the `zip` crate (no code shared with the worker's writer). Fails the test if the
/// archive does not hold exactly one entry that decodes.
pub fn zip_entry(bytes: &[u8]) -> (String, u64, u32) {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .unwrap_or_else(|error| panic!("not a zip: {error}"));
    assert_eq!(archive.len(), 1, "one entry");
    let mut entry = archive
        .by_index(0)
        .unwrap_or_else(|error| panic!("the entry: {error}"));
    let name = entry
        .name()
        .unwrap_or_else(|error| panic!("the entry's name: {error}"))
        .into_owned();
    let mut content = Vec::new();
    entry
        .read_to_end(&mut content)
        .unwrap_or_else(|error| panic!("{name} does not decode: {error}"));
    (name, content.len() as u64, crc32(&content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_output_passes_the_leak_check() {
        assert_no_leaks(
            "a worker",
            "{\"level\":\"INFO\",\"key\":\"incoming/report.csv\",\"outcome\":\"compressed\"}",
        );
    }

    #[test]
    fn every_marker_fails_the_leak_check() {
        for marker in LEAK_MARKERS {
            let output = format!("line one\nGET /b/k?X=1&{marker}=abc HTTP/1.1\n");
            let caught = std::panic::catch_unwind(|| assert_no_leaks("a worker", &output));
            assert!(caught.is_err(), "{marker:?} went unnoticed");
        }
        let content = String::from_utf8(csv_text(200, 1)).expect("text");
        let caught = std::panic::catch_unwind(|| assert_no_leaks("a worker", &content));
        assert!(caught.is_err(), "object content went unnoticed");
    }
}
