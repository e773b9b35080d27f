//! What a run measured (results.json) and the targets computed from it.

use serde::Serialize;

use crate::contenders::Kind;
use crate::machine::Machine;
use crate::measure::Sample;
use crate::stats::{cpu_s_per_gb, mb_per_s, median, ratio, KIB, MIB};
use crate::targets::Target;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub command: String,
    pub date_utc: String,
    pub commit: Option<String>,
    pub machine: Machine,
    pub runs_per_measurement: u32,
    pub inputs: Vec<InputResult>,
    pub small_objects: Option<SmallResult>,
    pub eight_clients: Option<LoadResult>,
    pub startup: Option<StartupResult>,
    pub targets: Vec<Target>,
    /// Measurements that failed: the rest of the run went on without them.
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

/// All contenders on one input.
#[derive(Debug, Serialize)]
pub struct InputResult {
    pub name: String,
    pub bytes: u64,
    /// Generated while uploading, never stored as a local file (only end to end).
    pub streamed: bool,
    pub contenders: Vec<ContenderResult>,
}

#[derive(Debug, Serialize)]
pub struct ContenderResult {
    pub name: String,
    pub kind: Kind,
    pub format: Option<&'static str>,
    /// The one CPU its measured process ran on, for the one-core contenders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<usize>,
    pub runs: Vec<Run>,
    /// Why the runs stopped, if one failed (the later runs are then left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One measured run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Run {
    pub wall_s: f64,
    pub maxrss_kib: u64,
    /// CPU seconds (user + system) of the measured process.
    pub cpu_s: f64,
    /// `cpu_s` per GB (10^9 bytes) of input.
    pub cpu_s_per_gb: f64,
    /// End to end only: CPU seconds the bench process (the S3 endpoint) used meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_cpu_s: Option<f64>,
    pub output_bytes: u64,
    pub mb_per_s: f64,
    pub ratio: f64,
}

impl Run {
    pub fn new(input_bytes: u64, sample: &Sample, output_bytes: u64) -> Self {
        Self {
            wall_s: sample.wall_s,
            maxrss_kib: sample.maxrss_kib,
            cpu_s: sample.user_s + sample.sys_s,
            cpu_s_per_gb: cpu_s_per_gb(sample.user_s + sample.sys_s, input_bytes),
            endpoint_cpu_s: None,
            output_bytes,
            mb_per_s: mb_per_s(input_bytes, sample.wall_s),
            ratio: ratio(input_bytes, output_bytes),
        }
    }
}

/// Medians over a contender's runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub mb_per_s: f64,
    pub ratio: f64,
    pub peak_rss_mib: f64,
    pub output_bytes: f64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub cpu_s_per_gb: f64,
    pub endpoint_cpu_s: Option<f64>,
}

impl ContenderResult {
    pub fn summary(&self) -> Option<Summary> {
        let of = |f: fn(&Run) -> f64| median(&self.runs.iter().map(f).collect::<Vec<_>>());
        Some(Summary {
            mb_per_s: of(|run| run.mb_per_s)?,
            ratio: of(|run| run.ratio)?,
            peak_rss_mib: of(|run| run.maxrss_kib as f64 * KIB / MIB)?,
            output_bytes: of(|run| run.output_bytes as f64)?,
            wall_s: of(|run| run.wall_s)?,
            cpu_s: of(|run| run.cpu_s)?,
            cpu_s_per_gb: of(|run| run.cpu_s_per_gb)?,
            endpoint_cpu_s: median(
                &self
                    .runs
                    .iter()
                    .filter_map(|run| run.endpoint_cpu_s)
                    .collect::<Vec<_>>(),
            ),
        })
    }
}

impl InputResult {
    pub fn contender(&self, name: &str) -> Option<&ContenderResult> {
        self.contenders.iter().find(|c| c.name == name)
    }

    pub fn summary(&self, name: &str) -> Option<Summary> {
        self.contender(name)?.summary()
    }
}

/// Many small objects through `s3-compressor serve`.
#[derive(Debug, Serialize)]
pub struct SmallResult {
    pub files: usize,
    pub bytes: u64,
    pub runs: Vec<SmallRun>,
    pub objects_per_s: Option<f64>,
    /// The serve process's VmHWM (peak RSS) after all runs.
    pub serve_peak_rss_kib: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SmallRun {
    /// From the first upload's start to the moment the last output was seen.
    pub seconds: f64,
    pub objects_per_s: f64,
}

/// Every file of the corpus uploaded to `s3-compressor serve` by several clients at once.
#[derive(Debug, Serialize)]
pub struct LoadResult {
    pub clients: usize,
    pub files: usize,
    pub bytes: u64,
    /// From the first upload's start to the moment the last output was seen.
    pub seconds: f64,
    /// The serve process's VmHWM (peak RSS) at the end.
    pub serve_peak_rss_kib: Option<u64>,
}

/// `s3-compressor lambda` from spawn to its first connection to the Runtime API.
#[derive(Debug, Serialize)]
pub struct StartupResult {
    pub runs_ms: Vec<f64>,
    pub median_ms: Option<f64>,
}
