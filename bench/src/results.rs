//! What a run measured (results.json) and the targets computed from it.

use serde::Serialize;

use crate::contenders::{codec_name, end_to_end_name, Kind, Tool, FORMATS};
use crate::machine::Machine;
use crate::measure::Sample;
use crate::stats::{cpu_s_per_gb, mb_per_s, median, ratio, KIB, MIB};

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

/// `s3-compressor lambda` from spawn to its first connection to the Runtime API.
#[derive(Debug, Serialize)]
pub struct StartupResult {
    pub runs_ms: Vec<f64>,
    pub median_ms: Option<f64>,
}

/// One row of the Targets table.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    /// `None` when the inputs it needs were not measured.
    pub value: Option<f64>,
    pub unit: &'static str,
    pub goal: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

fn target(name: String, value: Option<f64>, unit: &'static str, goal: Goal) -> Target {
    // A relative difference is written with its sign: "≤ +3%".
    let sign = if unit == "%" { "+" } else { "" };
    let (goal, met) = match goal {
        Goal::AtLeast(bound) => (format!("≥ {sign}{bound}{unit}"), value.map(|v| v >= bound)),
        Goal::AtMost(bound) => (format!("≤ {sign}{bound}{unit}"), value.map(|v| v <= bound)),
    };
    Target {
        name,
        value,
        unit,
        goal,
        met,
    }
}

/// The input the throughput targets are about.
pub const TARGET_INPUT: &str = "logs.jsonl";

/// The Targets table, from the medians.
pub fn targets(
    inputs: &[InputResult],
    small: Option<&SmallResult>,
    startup: Option<&StartupResult>,
) -> Vec<Target> {
    let logs = inputs
        .iter()
        .find(|input| input.name == TARGET_INPUT && !input.streamed);
    let get = |name: &str| logs.and_then(|input| input.summary(name));
    let speedup = |ours: &str, theirs: &str| {
        let (ours, theirs) = (get(ours)?, get(theirs)?);
        Some(ours.mb_per_s / theirs.mb_per_s)
    };
    let zip = end_to_end_name("zip");
    let gzip = end_to_end_name("gzip");
    let zstd = end_to_end_name("zstd");

    let mut rows = vec![
        target(
            format!("{zip} ÷ `{}` throughput ({TARGET_INPUT})", Tool::Zip.name()),
            speedup(&zip, Tool::Zip.name()),
            "×",
            Goal::AtLeast(2.5),
        ),
        target(
            format!(
                "{zip} output size vs `{}` ({TARGET_INPUT})",
                Tool::Zip.name()
            ),
            get(&zip)
                .zip(get(Tool::Zip.name()))
                .map(|(ours, theirs)| (ours.output_bytes / theirs.output_bytes - 1.0) * 100.0),
            "%",
            Goal::AtMost(3.0),
        ),
        target(
            format!(
                "{gzip} ÷ `{}` throughput ({TARGET_INPUT})",
                Tool::Pigz.name()
            ),
            speedup(&gzip, Tool::Pigz.name()),
            "×",
            Goal::AtLeast(1.5),
        ),
        target(
            format!(
                "{zstd} ÷ `{}` throughput ({TARGET_INPUT})",
                Tool::ZstdT2.name()
            ),
            speedup(&zstd, Tool::ZstdT2.name()),
            "×",
            Goal::AtLeast(0.9),
        ),
    ];
    for format in FORMATS {
        rows.push(target(
            format!(
                "{} ÷ {} throughput ({TARGET_INPUT})",
                end_to_end_name(format),
                codec_name(format)
            ),
            speedup(&end_to_end_name(format), &codec_name(format)),
            "×",
            Goal::AtLeast(0.9),
        ));
    }
    for format in FORMATS {
        rows.push(target(
            format!("peak RSS of {} ({TARGET_INPUT})", end_to_end_name(format)),
            get(&end_to_end_name(format)).map(|s| s.peak_rss_mib),
            " MiB",
            Goal::AtMost(64.0),
        ));
    }
    for big in inputs.iter().filter(|input| input.streamed) {
        rows.push(target(
            format!("peak RSS of {zip} ({})", big.name),
            big.summary(&zip).map(|s| s.peak_rss_mib),
            " MiB",
            Goal::AtMost(64.0),
        ));
    }
    rows.push(target(
        "many small objects through `s3-compressor serve`".to_owned(),
        small.and_then(|small| small.objects_per_s),
        " objects/s",
        Goal::AtLeast(500.0),
    ));
    rows.push(target(
        "start-up (`s3-compressor lambda` to its first Runtime API connection)".to_owned(),
        startup.and_then(|startup| startup.median_ms),
        " ms",
        Goal::AtMost(50.0),
    ));
    rows
}
