//! `s3-compressor serve` under load: many small objects uploaded in parallel, and every file of
//! the corpus uploaded by eight clients at once; outputs watched by listing, as a user of
//! `serve` would see them appear.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::results::{LoadResult, SmallResult, SmallRun};
use crate::run::Progress;
use crate::s3::{point_at, S3};
use crate::stats::median;

const BUCKET: &str = "files";
const ACCESS_KEY: &str = "bench-serve";
const SECRET_KEY: &str = "bench-serve-secret";
/// Uploads in flight at once.
const IN_FLIGHT: usize = 16;
/// Clients uploading at once in the mixed load: as many as in `serve`'s load test.
pub const CLIENTS: usize = 8;
/// How often the outputs are listed: the measured time is at most this much late.
const POLL: Duration = Duration::from_millis(50);
/// How long one run may take before the bench gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long the number of outputs may stay the same before the run is called stalled.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// The names of the two scenarios: serve's data folder is `NAME-data` in the work folder and
/// its stderr `NAME-serve.log` (see [`log_name`]).
pub const SMALL_OBJECTS: &str = "small-objects";
pub const EIGHT_CLIENTS: &str = "eight-clients";
const START_LIMIT: Duration = Duration::from_secs(60);
/// serve stops within a second when healthy; one stuck on its own objects never does.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// `s3-compressor serve` as a child, stopped (SIGINT, then SIGKILL) when dropped.
#[derive(Debug)]
struct ServeProcess {
    child: Child,
    url: String,
    log: PathBuf,
    stopped: bool,
}

impl ServeProcess {
    fn start(binary: &Path, work: &Path, scenario: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = work.join(log_name(scenario));
        let stderr =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(binary);
        point_at(&mut command, &url, ACCESS_KEY, SECRET_KEY);
        command
            .arg("serve")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(work.join(format!("{scenario}-data")))
            .args(["--bucket", BUCKET])
            .env("S3_COMPRESSOR_ACCESS_KEY", ACCESS_KEY)
            .env("S3_COMPRESSOR_SECRET_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        let mut serve = Self {
            child,
            url,
            log,
            stopped: false,
        };
        serve.wait_until_listening(port)?;
        Ok(serve)
    }

    fn wait_until_listening(&mut self, port: u16) -> anyhow::Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.stopped = true;
                bail!(
                    "s3-compressor serve exited ({status}) before listening; its log:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "s3-compressor serve did not listen on {address} within {START_LIMIT:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// VmHWM of /proc/PID/status: the process's peak resident set so far.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|line| {
            line.strip_prefix("VmHWM:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Ctrl-C, as a user stops it; SIGKILL if it has not stopped within [`STOP_LIMIT`].
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
            }
            let deadline = Instant::now() + STOP_LIMIT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Already exited is fine: kill fails and wait reaps.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// serve's stderr during `scenario`, in the work folder.
pub fn log_name(scenario: &str) -> String {
    format!("{scenario}-serve.log")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Uploads `files` under `incoming/small/runN/` `runs` times and times until all outputs exist.
pub fn run(
    binary: &Path,
    files: &[PathBuf],
    runs: u32,
    work: &Path,
    handle: &Handle,
    progress: &mut Progress,
) -> anyhow::Result<SmallResult> {
    let mut bodies = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", path.display()))?;
        let body =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        bodies.push((name, Bytes::from(body)));
    }
    let bytes: u64 = bodies.iter().map(|(_, body)| body.len() as u64).sum();

    let mut serve = ServeProcess::start(binary, work, SMALL_OBJECTS)?;
    let s3 = S3::new(handle, &serve.url, ACCESS_KEY, SECRET_KEY);
    let mut results = Vec::new();
    for run in 1..=runs {
        let sources = format!("incoming/small/run{run}/");
        let outputs = format!("processed/small/run{run}/");
        let seconds = handle
            .block_on(one_run(s3.client(), &bodies, &sources, &outputs))
            .with_context(|| format!("run {run} of {} files", bodies.len()))?;
        let objects_per_s = bodies.len() as f64 / seconds;
        progress.line(format_args!(
            "small objects  s3-compressor serve  run {run}/{runs}: {} files in {seconds:.2} s = {objects_per_s:.0} objects/s",
            bodies.len()
        ));
        results.push(SmallRun {
            seconds,
            objects_per_s,
        });
    }
    let serve_peak_rss_kib = serve.peak_rss_kib();
    serve.stop();
    Ok(SmallResult {
        files: bodies.len(),
        bytes,
        objects_per_s: median(&results.iter().map(|r| r.objects_per_s).collect::<Vec<_>>()),
        runs: results,
        serve_peak_rss_kib,
    })
}

/// Seconds from the first upload's start until a listing shows every output.
async fn one_run(
    client: &Client,
    bodies: &[(String, Bytes)],
    sources: &str,
    outputs: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let uploads = async {
        upload_all(client, bodies, sources).await?;
        anyhow::Ok(Instant::now())
    };
    let done = wait_for_outputs(client, outputs, bodies.len(), started);
    let (uploaded, seen) = tokio::try_join!(uploads, done)?;
    Ok(seen.max(uploaded).duration_since(started).as_secs_f64())
}

async fn upload_all(
    client: &Client,
    bodies: &[(String, Bytes)],
    prefix: &str,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut uploads = JoinSet::new();
    for (name, body) in bodies {
        let (client, permits, body) = (client.clone(), Arc::clone(&permits), body.clone());
        let key = format!("{prefix}{name}");
        uploads.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            client
                .put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .with_context(|| format!("PutObject {key}"))?;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = uploads.join_next().await {
        joined.context("an upload task failed")??;
    }
    Ok(())
}

/// The moment a listing of `prefix` first held `expected` objects.
async fn wait_for_outputs(
    client: &Client,
    prefix: &str,
    expected: usize,
    started: Instant,
) -> anyhow::Result<Instant> {
    let (mut last_found, mut last_change) = (0, started);
    loop {
        let found = crate::s3::list(client, BUCKET, prefix).await?.len();
        let now = Instant::now();
        if found >= expected {
            return Ok(now);
        }
        if found != last_found {
            (last_found, last_change) = (found, now);
        }
        if now.duration_since(last_change) > STALL_LIMIT {
            bail!(
                "stalled: {found} of {expected} outputs under {prefix} after {:.0} s, none new \
                 for {STALL_LIMIT:?}",
                now.duration_since(started).as_secs_f64()
            );
        }
        if now.duration_since(started) > RUN_LIMIT {
            bail!(
                "only {found} of {expected} outputs appeared under {prefix} within {RUN_LIMIT:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every file of `files` (the corpus's large inputs and its small files) uploaded at once by
/// [`CLIENTS`] clients, each with its own connections, as a team's jobs would; large files in
/// parts. Timed until a listing shows every output; `serve`'s peak RSS is this load's alone.
pub fn eight_clients(
    binary: &Path,
    files: &[PathBuf],
    work: &Path,
    handle: &Handle,
    progress: &mut Progress,
) -> anyhow::Result<LoadResult> {
    let bytes = files
        .iter()
        .map(|path| std::fs::metadata(path).map(|meta| meta.len()))
        .sum::<std::io::Result<u64>>()
        .context("cannot size the corpus's files")?;
    let mut serve = ServeProcess::start(binary, work, EIGHT_CLIENTS)?;
    let started = Instant::now();
    let uploads = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let s3 = S3::new(handle, &serve.url, ACCESS_KEY, SECRET_KEY);
                let share = files.iter().skip(client).step_by(CLIENTS);
                scope.spawn(move || upload_files(&s3, share))
            })
            .collect();
        clients.into_iter().try_for_each(|client| {
            client
                .join()
                .map_err(|_| anyhow::anyhow!("an upload thread panicked"))?
        })
    });
    uploads?;
    let s3 = S3::new(handle, &serve.url, ACCESS_KEY, SECRET_KEY);
    let seen = handle.block_on(wait_for_outputs(
        s3.client(),
        LOAD_OUTPUTS,
        files.len(),
        started,
    ))?;
    let seconds = seen.duration_since(started).as_secs_f64();
    let serve_peak_rss_kib = serve.peak_rss_kib();
    serve.stop();
    progress.line(format_args!(
        "{CLIENTS} clients  s3-compressor serve: {} files, {:.0} MB in {seconds:.1} s, serve peak RSS {} KiB",
        files.len(),
        bytes as f64 / 1e6,
        serve_peak_rss_kib.map_or("n/a".to_owned(), |kib| kib.to_string())
    ));
    Ok(LoadResult {
        clients: CLIENTS,
        files: files.len(),
        bytes,
        seconds,
        serve_peak_rss_kib,
    })
}

/// Where [`eight_clients`] uploads, and where its outputs appear.
const LOAD_SOURCES: &str = "incoming/load/";
const LOAD_OUTPUTS: &str = "processed/load/";

fn upload_files<'a>(s3: &S3, files: impl Iterator<Item = &'a PathBuf>) -> anyhow::Result<()> {
    for path in files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", path.display()))?;
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        s3.upload(BUCKET, &format!("{LOAD_SOURCES}{name}"), &mut file)?;
    }
    Ok(())
}
