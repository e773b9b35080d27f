//! How long an object will take, so that one that cannot finish before the invocation's
//! deadline is not started: Lambda would stop it at the timeout and retry it twice, from zero,
//! to the same end.

use std::time::{Duration, Instant};

const MB: f64 = 1_000_000.0;

/// What one second of one vCPU compresses with each format at its default level, end to end
/// and proof included: the slowest input of the benchmark (`bench/results/results.md`,
/// records.csv or random.bin, worker CPU per input) with the proof's measured cost added, and
/// rounded down. Formats the benchmark does not run get the most cautious figure.
fn bytes_per_cpu_second(format: &str) -> f64 {
    match format {
        "zip" | "gzip" => 25.0 * MB,
        "zstd" => 65.0 * MB,
        "tar" => 150.0 * MB,
        _ => 5.0 * MB,
    }
}

/// Requests around the compression itself (HEAD, GET, the upload's completion, the read-back
/// and the delete), at S3's latencies.
const REQUESTS: Duration = Duration::from_secs(2);

/// Lambda gives a function one vCPU at 1,769 MB, in proportion below and above, and six at
/// its largest, 10,240 MB.
const MB_PER_LAMBDA_VCPU: f64 = 1769.0;
const MAX_LAMBDA_VCPUS: f64 = 6.0;

/// When an invocation must have its answer, and how long it had in all.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    /// The whole invocation's time: an object that needs more can never finish in one, while
    /// one that needs more than is *left* can in a fresh invocation.
    pub granted: Duration,
    /// Kept after `at`, before the invocation ends: to abort the uploads of objects stopped at
    /// `at`, and to answer.
    pub margin: Duration,
}

impl Deadline {
    /// `remaining` from now, less the margin to answer cleanly: a tenth, at most `margin`.
    pub fn after(remaining: Duration, margin: Duration) -> Self {
        let margin = margin.min(remaining / 10);
        let granted = remaining - margin;
        Self {
            at: Instant::now() + granted,
            granted,
            margin,
        }
    }

    /// How long, from now, the aborts of stopped uploads may take: until half the margin is
    /// spent, leaving the other half to answer.
    pub fn abort_time(&self) -> Duration {
        (self.at + self.margin / 2).saturating_duration_since(Instant::now())
    }
}

/// The CPU a worker has, for its estimates.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    vcpus: f64,
    /// The requests around the compression itself.
    requests: Duration,
}

impl Pace {
    /// A Lambda function of `memory_mb` MB.
    pub fn lambda(memory_mb: u32) -> Self {
        Self {
            vcpus: (f64::from(memory_mb) / MB_PER_LAMBDA_VCPU).min(MAX_LAMBDA_VCPUS),
            requests: REQUESTS,
        }
    }

    /// As a Lambda function when `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` says so, otherwise this
    /// machine's cores.
    pub fn from_environment() -> Self {
        std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .and_then(|memory| memory.parse().ok())
            .map_or_else(Self::this_machine, Self::lambda)
    }

    pub fn this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            vcpus: cores as f64,
            requests: REQUESTS,
        }
    }

    /// A machine of `vcpus` whose requests take no time: for tests that stage a deadline.
    #[cfg(test)]
    pub(crate) const fn instant_requests(vcpus: f64) -> Self {
        Self {
            vcpus,
            requests: Duration::ZERO,
        }
    }

    /// vCPUs, for messages.
    pub fn vcpus(&self) -> f64 {
        self.vcpus
    }

    /// MB per second `format` manages here.
    pub fn megabytes_per_second(&self, format: &str) -> f64 {
        bytes_per_cpu_second(format) * self.vcpus / MB
    }

    /// How long `size` bytes in `format` should take here, at most.
    pub fn estimate(&self, format: &str, size: u64) -> Duration {
        let seconds = size as f64 / (bytes_per_cpu_second(format) * self.vcpus.max(0.01));
        self.requests + Duration::from_secs_f64(seconds.min(1e9))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Pace;

    #[test]
    fn lambda_cpu_follows_memory_up_to_six_vcpus() {
        assert!((Pace::lambda(1769).vcpus() - 1.0).abs() < 1e-9);
        assert!((Pace::lambda(512).vcpus() - 512.0 / 1769.0).abs() < 1e-9);
        // 10,240 MB has six, a little more than the proportion: the estimate stays cautious.
        let largest = Pace::lambda(10_240).vcpus();
        assert!(largest > 5.7 && largest <= 6.0, "{largest}");
    }

    #[test]
    fn estimates_grow_with_size_and_shrink_with_cpu() {
        let small = Pace::lambda(512);
        let large = Pace::lambda(3538);
        // 1 GB of zip at 512 MB: 1e9 / (25e6 * 0.289) = 138 s, plus the requests.
        let at_512 = small.estimate("zip", 1_000_000_000);
        assert!(at_512 > Duration::from_secs(139) && at_512 < Duration::from_secs(142));
        assert!(large.estimate("zip", 1_000_000_000) < at_512 / 3);
        assert!(small.estimate("zstd", 1_000_000_000) < at_512);
        // A format the benchmark does not run is assumed slow.
        assert!(small.estimate("brotli", 1_000_000_000) > at_512);
        assert_eq!(small.estimate("zip", 0), Duration::from_secs(2));
    }
}
