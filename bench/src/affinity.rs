//! The one-core contenders: a measured process on one CPU, as `taskset -c 0 CMD` runs it, and
//! the bench's own threads (the embedded S3 endpoint) kept off that CPU meanwhile.
//!
//! A process inherits its parent's CPU affinity, and Rust's `available_parallelism` honours
//! it, so a worker started on one CPU uses one thread, as it would with one vCPU.

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs in `set`, in order.
pub fn cpus(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// A set of the given CPUs.
pub fn cpu_set(cpus: &[usize]) -> anyhow::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .with_context(|| format!("CPU {cpu} is beyond what a CPU set holds"))?;
    }
    Ok(set)
}

/// The calling thread's CPUs.
pub fn own() -> anyhow::Result<CpuSet> {
    sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")
}

/// Moves the calling thread (and the processes and threads it starts from now on) to `set`.
pub fn set_own(set: &CpuSet) -> anyhow::Result<()> {
    sched_setaffinity(Pid::from_raw(0), set).context("sched_setaffinity")
}

/// Where a one-core contender runs, and where the bench's threads go meanwhile.
#[derive(Debug, Clone)]
pub struct OneCore {
    /// The measured process's CPU: the first one this process may use.
    pub cpu: usize,
    /// The bench's other CPUs; empty if it has only one (then the endpoint shares it).
    pub others: Vec<usize>,
}

impl OneCore {
    /// Splits this process's CPUs: the first for the measured process, the rest for the bench.
    pub fn plan() -> anyhow::Result<Self> {
        Self::split(&cpus(&own()?)).context("this process may run on no CPU at all")
    }

    fn split(allowed: &[usize]) -> Option<Self> {
        let (&cpu, others) = allowed.split_first()?;
        Some(Self {
            cpu,
            others: others.to_vec(),
        })
    }

    /// Moves every thread of this process onto the other CPUs until the returned guard is
    /// dropped, which moves them back; nothing is moved when there are no other CPUs.
    pub fn clear_for_measurement(&self) -> anyhow::Result<ThreadsMoved> {
        let original = own()?;
        if self.others.is_empty() {
            return Ok(ThreadsMoved { original: None });
        }
        // Set first, so that a thread failing to move below still gets moved back.
        let moved = ThreadsMoved {
            original: Some(original),
        };
        move_all_threads(&cpu_set(&self.others)?)?;
        Ok(moved)
    }
}

/// Puts this process's threads back on the CPUs they had when dropped.
#[derive(Debug)]
pub struct ThreadsMoved {
    original: Option<CpuSet>,
}

impl Drop for ThreadsMoved {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            // Best effort: a thread left on the other CPUs only runs on fewer cores.
            let _ = move_all_threads(original);
        }
    }
}

/// Sets the affinity of every thread of this process (`/proc/self/task/*`), passing over the
/// list again until a pass finds none left to move: a thread started meanwhile by a thread not
/// yet moved inherited the old CPUs.
fn move_all_threads(set: &CpuSet) -> anyhow::Result<()> {
    const PASSES: usize = 10;
    for _ in 0..PASSES {
        let mut moved_any = false;
        for tid in thread_ids()? {
            let pid = Pid::from_raw(tid);
            match sched_getaffinity(pid) {
                Ok(current) if current == *set => continue,
                // The thread has exited since the listing.
                Err(Errno::ESRCH) => continue,
                _ => {}
            }
            match sched_setaffinity(pid, set) {
                Ok(()) => moved_any = true,
                Err(Errno::ESRCH) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("sched_setaffinity({tid})"));
                }
            }
        }
        if !moved_any {
            return Ok(());
        }
    }
    anyhow::bail!("threads kept appearing on the old CPUs after {PASSES} passes")
}

/// The ids of this process's threads.
fn thread_ids() -> anyhow::Result<Vec<i32>> {
    let tasks = std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")?;
    let mut ids = Vec::new();
    for task in tasks {
        let task = task.context("cannot list /proc/self/task")?;
        if let Some(id) = task.file_name().to_str().and_then(|name| name.parse().ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cpu_is_measured_and_the_rest_go_to_the_bench() {
        let plan = OneCore::split(&[0, 1, 3]).expect("a plan");
        assert_eq!(plan.cpu, 0);
        assert_eq!(plan.others, vec![1, 3]);
        let alone = OneCore::split(&[2]).expect("a plan");
        assert_eq!((alone.cpu, alone.others.len()), (2, 0));
        assert!(OneCore::split(&[]).is_none());
    }

    #[test]
    fn cpu_sets_round_trip() {
        let set = cpu_set(&[0, 5, 7]).expect("a set");
        assert_eq!(cpus(&set), vec![0, 5, 7]);
        assert!(cpu_set(&[CpuSet::count()]).is_err());
    }

    #[test]
    fn the_threads_go_back_where_they_were() {
        let before = own().expect("own CPUs");
        let plan = OneCore::plan().expect("a plan");
        {
            let _moved = plan.clear_for_measurement().expect("moved");
            if !plan.others.is_empty() {
                assert_eq!(cpus(&own().expect("own CPUs")), plan.others);
            }
        }
        assert_eq!(own().expect("own CPUs"), before);
    }
}
