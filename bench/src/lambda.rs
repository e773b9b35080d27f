//! What compressing a TB would cost on AWS Lambda, estimated from the worker's measured CPU time.
//!
//! Lambda allocates CPU in proportion to memory: one full vCPU at 1,769 MB. A CPU-bound
//! invocation with M ≤ 1,769 MB of memory therefore runs about `CPU seconds × 1769 / M` seconds
//! and is billed `M / 1024` GB for each of them, so its price, `CPU seconds × 1769 / 1024 ×
//! price per GB-second`, does not depend on M: a smaller function is slower, not cheaper. (At
//! 1,769 MB the worker's second thread gets no second vCPU, so the same holds there.) Requests
//! cost extra, per invocation: one per object.

use crate::stats::GB;

/// The memory at which a Lambda function gets one full vCPU, in MB.
pub const FULL_VCPU_MB: f64 = 1769.0;

/// USD per GB-second of an x86_64 function, us-east-1, first pricing tier.
pub const USD_PER_GB_SECOND: f64 = 0.000_016_666_7;

/// USD per million requests (invocations).
pub const USD_PER_MILLION_REQUESTS: f64 = 0.20;

/// The memory sizes the cost table shows, in MB: a small function and the one-vCPU one.
pub const MEMORIES_MB: [f64; 2] = [512.0, FULL_VCPU_MB];

/// TB as in USD per TB: 10^12 bytes of input.
pub const TB: f64 = 1e12;

/// How long a CPU-bound invocation of `memory_mb` (≤ 1,769 MB) runs to do `cpu_s` seconds of
/// CPU work: it gets `memory_mb / 1769` of a vCPU.
pub fn wall_s(cpu_s: f64, memory_mb: f64) -> f64 {
    cpu_s * FULL_VCPU_MB / memory_mb
}

/// The compute price, in USD, of a CPU-bound invocation of `memory_mb` (≤ 1,769 MB) doing
/// `cpu_s` seconds of CPU work: its duration times its memory in GB (1024 MB) times the price.
pub fn compute_usd(cpu_s: f64, memory_mb: f64) -> f64 {
    wall_s(cpu_s, memory_mb) * memory_mb / 1024.0 * USD_PER_GB_SECOND
}

/// The compute price of compressing a TB of input at `cpu_s_per_gb` CPU seconds per GB.
pub fn compute_usd_per_tb(cpu_s_per_gb: f64, memory_mb: f64) -> f64 {
    compute_usd(cpu_s_per_gb * TB / GB, memory_mb)
}

/// The request price of compressing a TB of input as objects of `object_bytes` each, one
/// invocation per object.
pub fn request_usd_per_tb(object_bytes: u64) -> f64 {
    if object_bytes == 0 {
        return f64::INFINITY;
    }
    TB / object_bytes as f64 * USD_PER_MILLION_REQUESTS / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    #[test]
    fn a_cpu_bound_invocation_costs_the_same_at_512_mb_and_at_one_vcpu() {
        let at_512 = compute_usd(10.0, 512.0);
        let at_full = compute_usd(10.0, FULL_VCPU_MB);
        assert!(close(at_512, at_full), "{at_512} vs {at_full}");
        // 10 CPU seconds × 1769 / 1024 GB-seconds per CPU second × the price.
        assert!(close(at_512, 10.0 * 1769.0 / 1024.0 * 0.000_016_666_7));
    }

    #[test]
    fn a_smaller_function_runs_longer_in_proportion() {
        assert!(close(wall_s(10.0, FULL_VCPU_MB), 10.0));
        assert!(close(wall_s(10.0, 512.0), 10.0 * 1769.0 / 512.0));
        assert!((wall_s(1.0, 512.0) - 3.455).abs() < 0.001);
    }

    #[test]
    fn one_cpu_second_per_gb_costs_about_three_cents_per_tb() {
        // 1000 CPU seconds per TB × 1769 / 1024 × $0.0000166667 = $0.02879.
        let usd = compute_usd_per_tb(1.0, 512.0);
        assert!((usd - 0.028_793).abs() < 0.000_001, "{usd}");
        assert!(close(compute_usd_per_tb(17.0, 512.0), 17.0 * usd));
    }

    #[test]
    fn requests_cost_per_object() {
        // A TB as 1 GB objects is 1000 requests: $0.0002.
        assert!(close(request_usd_per_tb(1_000_000_000), 0.0002));
        // As 1 MB objects, a million requests: $0.20.
        assert!(close(request_usd_per_tb(1_000_000), 0.20));
        assert_eq!(request_usd_per_tb(0), f64::INFINITY);
    }
}
