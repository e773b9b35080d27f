//! Start-up time: `s3-compressor lambda` from spawn to its first connection to the Lambda
//! Runtime API, which here is a listening socket the bench owns and never answers.

use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::results::StartupResult;
use crate::run::Progress;
use crate::stats::median;

pub const RUNS: usize = 5;
const LIMIT: Duration = Duration::from_secs(30);

/// A child killed and reaped when dropped.
#[derive(Debug)]
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited is fine: kill fails and wait reaps.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(binary: &Path, work: &Path, progress: &mut Progress) -> anyhow::Result<StartupResult> {
    // One run first that is not counted: it loads the binary into the page cache.
    once(binary, work)?;
    let mut runs_ms = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        let ms = once(binary, work)?.as_secs_f64() * 1000.0;
        progress.line(format_args!(
            "start-up  s3-compressor lambda  run {run}/{RUNS}: {ms:.1} ms"
        ));
        runs_ms.push(ms);
    }
    Ok(StartupResult {
        median_ms: median(&runs_ms),
        runs_ms,
    })
}

fn once(binary: &Path, work: &Path) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    let port = listener.local_addr()?.port();
    let log = work.join("lambda.log");
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(binary);
    // Credentials and region from the environment, so the SDK looks nowhere else; it never
    // talks to S3 here.
    crate::s3::point_at(&mut command, "http://127.0.0.1:9", "bench", "bench-secret");
    command
        .arg("lambda")
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);

    let started = Instant::now();
    let mut child = KillOnDrop(
        command
            .spawn()
            .with_context(|| format!("cannot start {} lambda", binary.display()))?,
    );
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).context("poll")?;
        if ready > 0 {
            let elapsed = started.elapsed();
            listener
                .accept()
                .context("accepting the function's connection")?;
            return Ok(elapsed);
        }
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "s3-compressor lambda exited ({status}) before connecting to the Runtime API; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if started.elapsed() > LIMIT {
            bail!(
                "s3-compressor lambda did not connect to the Runtime API within {LIMIT:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
}
