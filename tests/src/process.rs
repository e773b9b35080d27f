//! Child processes the tests start: bounded in time, drained while they run, killed on drop.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any one run of the binary may take before the test calls it hung. Generous: it
/// only turns a hang into a failure with the output so far, instead of a stuck CI job.
pub const HANG_LIMIT: Duration = Duration::from_secs(300);

/// A process that has exited, with everything it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Status and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// What [`Running::finish_measuring_memory`] saw, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryKib {
    /// VmHWM: the most the process ever held resident.
    pub peak: u64,
    /// The largest VmRSS sampled.
    pub largest_sampled: u64,
}

/// Peak and current resident set of a running process, in KiB, from /proc.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The most the process `pid` has held resident so far (VmHWM), in KiB; `None` once it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    memory_kib(pid).map(|(peak, _)| peak)
}

/// A running child whose stdout and stderr are read as it goes (so it never blocks on a full
/// pipe), killed and reaped if dropped before it finished.
#[derive(Debug)]
pub struct Running {
    what: String,
    /// Whether this is one of the project's binaries, whose output [`crate::assert_no_leaks`]
    /// checks.
    ours: bool,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    finished: bool,
}

fn drain(stream: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    stream.map(|mut stream| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error only cuts the captured output short; the status still tells.
            let _ = stream.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

impl Running {
    /// Starts `command` with no stdin and both outputs captured.
    pub fn spawn(command: &mut Command) -> Self {
        let what = format!("{command:?}");
        let ours = std::path::Path::new(command.get_program())
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("s3-compressor"));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Self {
            what,
            ours,
            child,
            stdout,
            stderr,
            finished: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The result if the process has exited, without waiting for it otherwise.
    pub fn try_finish(&mut self) -> Option<Finished> {
        let status = self
            .child
            .try_wait()
            .unwrap_or_else(|error| panic!("cannot wait for {}: {error}", self.what))?;
        self.finished = true;
        let joined = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|handle| handle.join().unwrap_or_default())
                .unwrap_or_default()
        };
        let finished = Finished {
            status,
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
        };
        if self.ours {
            crate::assert_no_leaks(&self.what, &finished.stdout);
            crate::assert_no_leaks(&self.what, &finished.stderr);
        }
        Some(finished)
    }

    /// Waits for the process to exit; kills it and fails the test if it takes longer than
    /// `limit`.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(finished) = self.try_finish() {
                return finished;
            }
            if Instant::now() >= deadline {
                self.stop();
                let partial = self.try_finish();
                panic!(
                    "{} did not finish within {limit:?}; killed it. {}",
                    self.what,
                    partial.map_or_else(String::new, |finished| finished.describe())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Running::finish`], sampling the process's memory every 20 ms as it runs: the peak
    /// resident set the kernel recorded (VmHWM) and the largest resident set seen (VmRSS), in
    /// KiB.
    pub fn finish_measuring_memory(mut self, limit: Duration) -> (Finished, MemoryKib) {
        let deadline = Instant::now() + limit;
        let mut measured = MemoryKib::default();
        loop {
            if let Some((peak, resident)) = memory_kib(self.id()) {
                measured.peak = measured.peak.max(peak);
                measured.largest_sampled = measured.largest_sampled.max(resident);
            }
            if let Some(finished) = self.try_finish() {
                return (finished, measured);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {limit:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        // Already exited is fine: kill fails and wait reaps.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.stop();
        }
    }
}

/// Runs `command` to completion within [`HANG_LIMIT`].
pub fn run(command: &mut Command) -> Finished {
    Running::spawn(command).finish(HANG_LIMIT)
}

/// A child that is killed and reaped when this guard is dropped (servers the tests start).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Kills and reaps the child now; later calls and the drop do nothing more.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Whether the child is still running, and its status if not.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released for a server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free port on 127.0.0.1: {error}"))
}

/// Waits until something accepts TCP connections on `port`, or `child` exits, or `limit`
/// passes; says which, so the caller can explain.
pub fn wait_for_port(port: u16, child: &mut KillOnDrop, limit: Duration) -> Result<(), String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.exited() {
            return Err(format!("it exited ({status}) before accepting connections"));
        }
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing accepted connections on {address} within {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
