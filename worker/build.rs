//! Records the commit the binary is built from as `S3_COMPRESSOR_COMMIT`, which `--version`
//! prints and every output's metadata carries.
//!
//! `S3_COMPRESSOR_COMMIT` in the build's environment wins (a build from a source archive, or a
//! CI that knows better); otherwise `git rev-parse --short HEAD`; "unknown" without either.
//! deploy.sh builds the binary in the checkout, outside Docker, so git is there; the image's
//! build context holds only the finished binary. The value goes into S3 metadata (ASCII
//! headers), so anything but letters, digits, `.`, `-` and `_` counts as unknown.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=S3_COMPRESSOR_COMMIT");
    let commit = std::env::var("S3_COMPRESSOR_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| {
            watch_head();
            git(&["rev-parse", "--short", "HEAD"])
        })
        .filter(|commit| {
            commit.len() <= 64
                && commit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=S3_COMPRESSOR_COMMIT={commit}");
}

/// Builds again when HEAD moves: HEAD itself (a checkout), the branch it names (a commit) and
/// packed-refs (a branch packed by git gc). Only files that exist: cargo runs a build script
/// whose watched file is missing on every build.
fn watch_head() {
    let mut paths = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch);
    }
    for path in paths {
        let file = git(&["rev-parse", "--path-format=absolute", "--git-path", &path]);
        if let Some(file) = file.filter(|file| std::path::Path::new(file).is_file()) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}

/// What git prints, trimmed, if it runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
