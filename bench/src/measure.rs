//! Wall time and peak RSS of one child process, measured exactly.
//!
//! The bench re-executes itself as `s3-compressor-bench measure [--stdout FILE] -- CMD ARGS...`.
//! That fresh process has exactly one child, so once it has waited for it,
//! `getrusage(RUSAGE_CHILDREN)`'s `ru_maxrss` is that child's peak resident set (KiB on Linux)
//! and nothing else's. The wall time is taken around spawn..wait.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};

use crate::affinity;
use crate::cli::MeasureArgs;

/// What `measure` prints: one JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub wall_s: f64,
    pub maxrss_kib: u64,
    /// CPU time the command used, in user and kernel mode (all its threads).
    pub user_s: f64,
    pub sys_s: f64,
    /// The exit code, `None` if the command was killed by a signal.
    pub exit: Option<i32>,
    pub signal: Option<i32>,
}

/// The longest nap between checks whether the child has exited: the wall time is at most this
/// much late, and the measuring process wakes at most 500 times a second.
const MAX_POLL: Duration = Duration::from_millis(2);

/// `s3-compressor-bench measure`: runs the command, prints a [`Sample`].
pub fn measure_child(args: &MeasureArgs) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .context("measure needs a command after --")?;
    let stdout = match &args.stdout {
        Some(path) => Stdio::from(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut command = Command::new(program);
    command.args(rest).stdin(Stdio::null()).stdout(stdout);
    let started = Instant::now();
    let mut child = match args.cpu {
        Some(cpu) => spawn_on(&mut command, cpu)?,
        None => spawn(&mut command)?,
    };
    let status = wait(&mut child, Duration::from_secs(args.timeout_s))?;
    let wall = started.elapsed();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let sample = Sample {
        wall_s: wall.as_secs_f64(),
        maxrss_kib: u64::try_from(usage.max_rss()).unwrap_or(0),
        user_s: seconds(usage.user_time()),
        sys_s: seconds(usage.system_time()),
        exit: status.code(),
        signal: status.signal(),
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

fn spawn(command: &mut Command) -> anyhow::Result<Child> {
    command
        .spawn()
        .with_context(|| format!("cannot start {}", describe(command)))
}

/// Spawns `command` on `cpu` alone: this process moves there, the child inherits it, and this
/// process moves back, so that its polling does not share the measured CPU.
fn spawn_on(command: &mut Command, cpu: usize) -> anyhow::Result<Child> {
    let original = affinity::own()?;
    affinity::set_own(&affinity::cpu_set(&[cpu])?)
        .with_context(|| format!("cannot run on CPU {cpu}"))?;
    let child = spawn(command);
    affinity::set_own(&original)?;
    child
}

pub fn seconds(time: TimeVal) -> f64 {
    time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6
}

/// CPU time this process has used so far (user + system, all threads).
pub fn own_cpu_s() -> anyhow::Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage(RUSAGE_SELF)")?;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Waits for `child`, polling so that a hung child can be killed after `timeout`.
///
/// Polling (rather than a watchdog thread) means the child is only ever killed before it has
/// been reaped, so its pid cannot belong to anyone else yet.
fn wait(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(50);
    loop {
        if let Some(status) = child.try_wait().context("waiting for the command")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            // Already exited is fine: kill fails and wait reaps.
            let _ = child.kill();
            let _ = child.wait();
            bail!("the command did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(MAX_POLL);
    }
}

/// The parent's side: runs commands under `s3-compressor-bench measure`.
#[derive(Debug, Clone)]
pub struct Measurer {
    /// This program.
    exe: PathBuf,
    /// One stderr log per measurement is written here (overwritten by the next one).
    log: PathBuf,
}

impl Measurer {
    pub fn new(log: PathBuf) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's own path")?;
        Ok(Self { exe, log })
    }

    /// Runs `command` (its program, arguments and environment changes) under `measure`, its
    /// stdout into `stdout` if given, on CPU `cpu` alone if given. A command that fails is an
    /// error carrying its stderr.
    pub fn measure(
        &self,
        command: &Command,
        stdout: Option<&Path>,
        cpu: Option<usize>,
    ) -> anyhow::Result<Sample> {
        let what = describe(command);
        let log = File::create(&self.log)
            .with_context(|| format!("cannot create {}", self.log.display()))?;
        let mut wrapper = Command::new(&self.exe);
        wrapper.arg("measure");
        if let Some(stdout) = stdout {
            wrapper.arg("--stdout").arg(stdout);
        }
        if let Some(cpu) = cpu {
            wrapper.arg("--cpu").arg(cpu.to_string());
        }
        wrapper
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => wrapper.env(name, value),
                None => wrapper.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapper.current_dir(dir);
        }
        let output = wrapper
            .stdin(Stdio::null())
            .stderr(log)
            .output()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let sample = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Sample>(line).ok());
        match sample {
            Some(sample) if output.status.success() && sample.exit == Some(0) => Ok(sample),
            Some(sample) => bail!(
                "{what} failed (exit {:?}, signal {:?}); its stderr:\n{}",
                sample.exit,
                sample.signal,
                self.log_tail()
            ),
            None => bail!(
                "measuring {what} failed ({}); stderr:\n{}",
                output.status,
                self.log_tail()
            ),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// `program arg arg`, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
