//! The arithmetic of an estimate, apart from S3: how a stratum's sampled objects extrapolate
//! to the rest of it, with what error, and what compressing an object costs and saves.

use s3_compressor_config::{Prices, StorageClass, BILLED_GB};

/// The output part size of the pipeline: outputs larger than this are multipart uploads.
pub(crate) const PART_BYTES: u64 = 8 * 1024 * 1024;
/// GET-priced requests per compressed object: the source's GET, the output's HEAD before the
/// write and after it (the proof).
const GET_CLASS_REQUESTS: f64 = 3.0;
/// Lambda's vCPU share grows with memory: 1,769 MB buys one vCPU.
const MB_PER_VCPU: f64 = 1769.0;

/// One sampled object: its size, what its output measured (or projected from its windows),
/// and how uncertain that projection is (0 for an object read and compressed whole).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measured {
    pub size: u64,
    pub out: f64,
    /// The variance of `out` from sampling windows of the object rather than all of it.
    pub within_variance: f64,
}

/// What a stratum's sample says of its unsampled objects: their output bytes per input byte,
/// and the variance of the extrapolated total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Extrapolation {
    pub ratio: f64,
    pub variance: f64,
}

/// The standard deviation of a ratio in [0, 1] is at most 1/2 (Popoviciu's inequality): what
/// a stratum with a single sample assumes of its spread, since one value shows none.
const RATIO_SPREAD_BOUND: f64 = 0.5;

/// The ratio estimator over `samples`, for `unsampled_bytes` more bytes of the same stratum.
///
/// The ratio is Σout / Σin of the samples; its standard error is s_e / (x̄ √n), s_e the spread
/// of the samples' residuals out_i − ratio·in_i (n − 1 degrees of freedom) and x̄ their mean
/// size. The unsampled total's variance is that error times their bytes, squared, plus each
/// windowed sample's own variance scaled to the share of the stratum it stands for. With one
/// sample there is no spread to measure, and the bound above stands in. `None` without samples.
pub(crate) fn extrapolate(samples: &[Measured], unsampled_bytes: u64) -> Option<Extrapolation> {
    let n = samples.len();
    let bytes: f64 = samples.iter().map(|sample| sample.size as f64).sum();
    if n == 0 {
        return None;
    }
    let out: f64 = samples.iter().map(|sample| sample.out).sum();
    let ratio = if bytes > 0.0 { out / bytes } else { 1.0 };
    let unsampled = unsampled_bytes as f64;
    let mean_size = bytes / n as f64;
    let ratio_error = if n < 2 || mean_size == 0.0 {
        RATIO_SPREAD_BOUND
    } else {
        let squares: f64 = samples
            .iter()
            .map(|sample| (sample.out - ratio * sample.size as f64).powi(2))
            .sum();
        (squares / (n - 1) as f64).sqrt() / (mean_size * (n as f64).sqrt())
    };
    // A sampled object read in windows stands for itself and for its share of the unsampled.
    let weight = if bytes > 0.0 {
        1.0 + unsampled / bytes
    } else {
        1.0
    };
    let within: f64 = samples.iter().map(|sample| sample.within_variance).sum();
    Some(Extrapolation {
        ratio,
        variance: (unsampled * ratio_error).powi(2) + weight * weight * within,
    })
}

/// The variance of an object's output projected from windows of it: the windows' ratios
/// spread as s², their mean's variance s²/k with the finite-population correction for the
/// share of the object read, times its size squared. 0 for fewer than two windows.
pub(crate) fn window_variance(size: u64, windows: &[(u64, u64)]) -> f64 {
    let k = windows.len();
    if k < 2 || size == 0 {
        return 0.0;
    }
    let ratios: Vec<f64> = windows
        .iter()
        .map(|&(read, out)| out as f64 / read.max(1) as f64)
        .collect();
    let mean = ratios.iter().sum::<f64>() / k as f64;
    let spread = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    let read: u64 = windows.iter().map(|&(read, _)| read).sum();
    let unread_share = 1.0 - (read as f64 / size as f64).min(1.0);
    (size as f64).powi(2) * spread / k as f64 * unread_share
}

/// The one-time cost of compressing one object, by what it is spent on (USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct OneTime {
    pub requests: f64,
    pub retrieval: f64,
    pub lambda: f64,
}

impl OneTime {
    pub fn total(&self) -> f64 {
        self.requests + self.retrieval + self.lambda
    }

    pub fn add(&mut self, other: &OneTime, times: f64) {
        self.requests += other.requests * times;
        self.retrieval += other.retrieval * times;
        self.lambda += other.lambda * times;
    }
}

/// What a compression costs and saves, for the prices and the function's memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CostModel {
    pub prices: Prices,
    pub lambda_memory_mb: u32,
}

impl CostModel {
    /// PUT-priced requests to write an output of `out` bytes: one PutObject, or a multipart
    /// upload's create, parts and complete.
    pub fn put_requests(out: u64) -> f64 {
        if out <= PART_BYTES {
            1.0
        } else {
            2.0 + out.div_ceil(PART_BYTES) as f64
        }
    }

    /// Lambda's billed GB-seconds for `cpu_seconds` of codec work: the function runs on
    /// memory/1,769 of a vCPU, so the work takes that much longer, billed at its memory.
    pub fn lambda_gb_seconds(&self, cpu_seconds: f64) -> f64 {
        let memory_mb = f64::from(self.lambda_memory_mb.max(1));
        let duration = cpu_seconds / (memory_mb / MB_PER_VCPU);
        duration * memory_mb / 1024.0
    }

    /// Compressing a `size`-byte object in `class` into `out` bytes with `cpu_seconds` of
    /// codec work (compressing and decoding the output for the proof).
    pub fn one_time(&self, size: u64, class: StorageClass, out: f64, cpu_seconds: f64) -> OneTime {
        let p = &self.prices;
        let out = out.max(0.0).round() as u64;
        OneTime {
            requests: GET_CLASS_REQUESTS * p.get_per_1000 / 1000.0
                + Self::put_requests(out) * p.put_per_1000 / 1000.0,
            retrieval: p.retrieval_usd(size, class),
            lambda: p.lambda_per_million_requests / 1e6
                + self.lambda_gb_seconds(cpu_seconds) * p.lambda_gb_second,
        }
    }

    /// What an object kept by its rule's policy costs: the invocation, and for one judged on
    /// its first bytes, the GET that read them.
    pub fn judged(&self, read_first_bytes: bool) -> OneTime {
        let p = &self.prices;
        OneTime {
            requests: if read_first_bytes {
                p.get_per_1000 / 1000.0
            } else {
                0.0
            },
            retrieval: 0.0,
            lambda: p.lambda_per_million_requests / 1e6,
        }
    }

    /// What an object its rule's policy moves unchanged costs: what judging it costs, and
    /// the server-side copy (PUT-priced; a copy in parts above 5 GiB is several). The delete
    /// is free.
    pub fn moved(&self, size: u64, read_first_bytes: bool) -> OneTime {
        let mut cost = self.judged(read_first_bytes);
        cost.requests += Self::copy_requests(size) * self.prices.put_per_1000 / 1000.0;
        cost
    }

    /// PUT-priced requests to copy `size` bytes as a move does: one CopyObject up to 5 GiB,
    /// above it a multipart upload's create, 512 MiB part copies and complete.
    pub fn copy_requests(size: u64) -> f64 {
        const WHOLE_COPY_MAX: u64 = 5 << 30;
        const COPY_PART_BYTES: u64 = 512 << 20;
        if size <= WHOLE_COPY_MAX {
            1.0
        } else {
            2.0 + size.div_ceil(COPY_PART_BYTES) as f64
        }
    }

    /// Storage a month saved by storing `out` bytes instead of `size`, both in `class`.
    pub fn saved_per_month(&self, size: u64, class: StorageClass, out: f64) -> f64 {
        let out = out.max(0.0).round() as u64;
        self.prices.storage_usd_per_month(size, class)
            - self.prices.storage_usd_per_month(out, class)
    }
}

/// Months until `one_time` is paid back by `saved_per_month`; `None` when nothing is saved.
pub(crate) fn payback_months(one_time: f64, saved_per_month: f64) -> Option<f64> {
    (saved_per_month > 0.0).then(|| one_time / saved_per_month)
}

/// Whether compressing pays back within `horizon_months`.
pub(crate) fn pays_back(one_time: f64, saved_per_month: f64, horizon_months: f64) -> bool {
    payback_months(one_time, saved_per_month).is_some_and(|months| months <= horizon_months)
}

/// GB as AWS bills them.
pub(crate) fn gb(bytes: f64) -> f64 {
    bytes / BILLED_GB
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12_f64.max(b.abs() * 1e-9)
    }

    fn model() -> CostModel {
        CostModel {
            prices: Prices::default(),
            lambda_memory_mb: 512,
        }
    }

    #[test]
    fn a_small_output_is_one_put_a_large_one_a_multipart_upload() {
        assert_eq!(CostModel::put_requests(0), 1.0);
        assert_eq!(CostModel::put_requests(8 * MIB), 1.0);
        // 20 MiB: create, three 8 MiB parts, complete.
        assert_eq!(CostModel::put_requests(20 * MIB), 5.0);
    }

    #[test]
    fn the_one_time_cost_adds_requests_retrieval_and_compute() {
        // A 1 MiB object of STANDARD compressed to 256 KiB with 0.05 s of codec work on a
        // 512 MB function: 3 GET-class requests at $0.0004/1000 and 1 PUT at $0.005/1000;
        // 0.05 s of CPU at 512/1769 of a vCPU is 0.172753... s, at 0.5 GB that is
        // 0.0863770 GB-s, at $0.0000166667; plus the invocation's $0.20 per million.
        let cost = model().one_time(MIB, StorageClass::Standard, (256 * KIB) as f64, 0.05);
        assert!(close(cost.requests, 3.0 * 0.0000004 + 0.000005));
        assert_eq!(cost.retrieval, 0.0);
        let gb_seconds = 0.05 * 1769.0 / 1024.0;
        assert!(close(cost.lambda, 0.0000002 + gb_seconds * 0.0000166667));
        // From Standard-IA, reading costs $0.01 per GB besides.
        let ia = model().one_time(MIB, StorageClass::StandardIa, (256 * KIB) as f64, 0.05);
        assert!(close(ia.retrieval, 0.01 / 1024.0));
    }

    #[test]
    fn a_move_pays_one_copy_or_a_multipart_copy_above_five_gib() {
        let model = model();
        let put = model.prices.put_per_1000 / 1000.0;
        let get = model.prices.get_per_1000 / 1000.0;
        // Judged by its first bytes (one GET), then one CopyObject.
        assert!(close(model.moved(MIB, true).requests, get + put));
        // Below min_size nothing is read: the copy alone.
        assert!(close(model.moved(MIB, false).requests, put));
        // 6 GiB: create, twelve part copies of 512 MiB, complete.
        assert!(close(model.moved(6 << 30, false).requests, 14.0 * put));
    }

    #[test]
    fn a_saving_in_an_infrequent_class_stops_at_its_minimum() {
        let model = model();
        // 1 MiB -> 256 KiB in STANDARD saves 768 KiB at $0.023/GB.
        assert!(close(
            model.saved_per_month(MIB, StorageClass::Standard, (256 * KIB) as f64),
            0.75 / 1024.0 * 0.023
        ));
        // In Standard-IA the output is billed as 128 KiB whatever it shrinks to below that:
        // 1 MiB -> 10 KiB saves what 1 MiB -> 128 KiB does, 896 KiB at $0.0125/GB.
        assert!(close(
            model.saved_per_month(MIB, StorageClass::StandardIa, (10 * KIB) as f64),
            896.0 / 1_048_576.0 * 0.0125
        ));
        // And 100 KiB -> 10 KiB there saves nothing at all.
        assert_eq!(
            model.saved_per_month(100 * KIB, StorageClass::StandardIa, (10 * KIB) as f64),
            0.0
        );
    }

    #[test]
    fn break_even_is_the_one_time_cost_over_the_monthly_saving() {
        // A 32 KiB object of STANDARD shrinking to 8 KiB saves 24 KiB a month:
        // 24/2^20 GB × 0.023 = $5.2643e-7 a month; it costs at least 3 GETs and a PUT
        // ($6.2e-6) and an invocation ($2e-7): over a year to pay back, as the config says.
        let model = model();
        let saved = model.saved_per_month(32 * KIB, StorageClass::Standard, (8 * KIB) as f64);
        assert!(close(saved, 24.0 / 1_048_576.0 * 0.023));
        let cost = model.one_time(32 * KIB, StorageClass::Standard, (8 * KIB) as f64, 0.0);
        assert!(close(cost.total(), 0.0000062 + 0.0000002));
        let months = payback_months(cost.total(), saved).unwrap_or(f64::INFINITY);
        assert!(close(months, 0.0000064 / (24.0 / 1_048_576.0 * 0.023)));
        assert!((12.0..13.0).contains(&months), "{months}");
        assert!(!pays_back(cost.total(), saved, 12.0));
        assert!(pays_back(cost.total(), saved, 13.0));
        // Nothing saved never pays back.
        assert_eq!(payback_months(1.0, 0.0), None);
        assert!(!pays_back(0.0, 0.0, 1000.0));
    }

    #[test]
    fn the_ratio_estimator_extrapolates_and_bounds_its_error() {
        let sample = |size: u64, out: f64| Measured {
            size,
            out,
            within_variance: 0.0,
        };
        // Two samples of 100 bytes, 30 and 50 out: ratio 0.4; residuals -10 and +10, s_e² =
        // 200, SE(ratio) = √200 / (100 √2) = 0.1; 1,000 unsampled bytes: variance 100².
        let estimate = extrapolate(&[sample(100, 30.0), sample(100, 50.0)], 1000);
        let estimate = estimate.unwrap_or(Extrapolation {
            ratio: f64::NAN,
            variance: f64::NAN,
        });
        assert!(close(estimate.ratio, 0.4));
        assert!(close(estimate.variance, 10_000.0));
        // One sample shows no spread: the ratio's error is taken as 1/2.
        let single = extrapolate(&[sample(100, 30.0)], 1000).map(|e| e.variance);
        assert_eq!(single, Some(500.0 * 500.0));
        assert_eq!(extrapolate(&[], 1000), None);
    }

    #[test]
    fn windows_that_agree_leave_no_doubt_and_windows_that_differ_do() {
        assert_eq!(window_variance(MIB, &[(KIB, 300), (KIB, 300)]), 0.0);
        // Ratios 0.25 and 0.75 over 2 KiB of a 1 MiB object: s² = 0.125, /2, × (1 - 2/1024).
        let variance = window_variance(MIB, &[(KIB, 256), (KIB, 768)]);
        let expected = (MIB as f64).powi(2) * 0.125 / 2.0 * (1.0 - 2.0 / 1024.0);
        assert!(close(variance, expected));
    }
}
