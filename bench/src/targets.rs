//! The Targets table: the goals, each computed from the medians and marked met or missed.
//!
//! The goals are about CPU time rather than wall time where they can be: a Lambda invocation
//! pays for CPU time (see [`crate::lambda`]), and the CPU time of a process does not depend on
//! what else shares the machine's cores, as the embedded S3 endpoint does in the end-to-end runs.

use serde::Serialize;

use crate::contenders::{
    codec_name, end_to_end_name, end_to_end_one_core_name, one_core_name, proven_name, Tool,
    FORMATS, ONE_CORE_FORMAT, ONE_CORE_TOOL,
};
use crate::results::{InputResult, SmallResult, StartupResult, Summary};
use crate::stats::KIB;

/// One row of the Targets table.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    /// `None` when the inputs it needs were not measured.
    pub value: Option<f64>,
    pub unit: &'static str,
    pub goal: String,
    pub result: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Met,
    Missed,
    /// What it needs was not measured.
    NotMeasured,
    /// A figure shown for the reader, with no goal.
    Reported,
}

impl Outcome {
    fn of(met: Option<bool>) -> Self {
        match met {
            Some(true) => Outcome::Met,
            Some(false) => Outcome::Missed,
            None => Outcome::NotMeasured,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Outcome::Met => "met",
            Outcome::Missed => "missed",
            Outcome::NotMeasured => "n/a",
            Outcome::Reported => "reported",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

/// The input the CPU, throughput and size targets are about.
pub const TARGET_INPUT: &str = "logs.jsonl";

/// The incompressible input, which the codecs should pass through quickly and barely grow.
pub const RANDOM_INPUT: &str = "random.bin";

/// The codecs' median MB/s on random.bin in the committed run of commit 61ad217 (zip codec
/// only 56.9 MB/s, gzip codec only 60.8 MB/s): the baseline the random.bin speed-up is
/// measured against.
pub const PREVIOUS_RANDOM_CODEC_MB_S: [(&str, f64); 2] = [("zip", 56.9), ("gzip", 60.8)];

/// The formats whose codec is held against `zip -6`'s CPU time and against the size of the CLI
/// tool writing the same format.
const DEFLATE_TOOLS: [(&str, Tool); 2] = [("zip", Tool::Zip), ("gzip", Tool::Gzip)];

/// The memory every s3-compressor contender must stay within, on every input.
const RSS_LIMIT_MIB: f64 = 64.0;

fn target(name: String, value: Option<f64>, unit: &'static str, goal: Goal) -> Target {
    // A relative difference is written with its sign: "≤ +3%".
    let sign = if unit == "%" { "+" } else { "" };
    let (goal, met) = match goal {
        Goal::AtLeast(bound) => (
            format!("≥ {sign}{}{unit}", bound_text(bound)),
            value.map(|v| v >= bound),
        ),
        Goal::AtMost(bound) => (
            format!("≤ {sign}{}{unit}", bound_text(bound)),
            value.map(|v| v <= bound),
        ),
    };
    Target {
        name,
        value,
        unit,
        goal,
        result: Outcome::of(met),
    }
}

/// A figure with no goal.
fn reported(name: String, value: Option<f64>, unit: &'static str) -> Target {
    Target {
        name,
        value,
        unit,
        goal: "none".to_owned(),
        result: if value.is_some() {
            Outcome::Reported
        } else {
            Outcome::NotMeasured
        },
    }
}

/// A bound as a person writes it: at most four decimals, no trailing zeros.
fn bound_text(bound: f64) -> String {
    let text = format!("{bound:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

/// The medians of one input, if it was measured.
#[derive(Debug, Clone, Copy)]
struct On<'a> {
    input: Option<&'a InputResult>,
}

impl<'a> On<'a> {
    fn input(inputs: &'a [InputResult], name: &str) -> Self {
        Self {
            input: inputs
                .iter()
                .find(|input| input.name == name && !input.streamed),
        }
    }

    fn get(self, contender: &str) -> Option<Summary> {
        self.input?.summary(contender)
    }

    /// `ours` ÷ `theirs` of a median.
    fn ratio(self, ours: &str, theirs: &str, of: fn(&Summary) -> f64) -> Option<f64> {
        Some(of(&self.get(ours)?) / of(&self.get(theirs)?))
    }

    /// How much more `ours` has than `theirs` of a median, in percent (negative if less).
    fn percent_more(self, ours: &str, theirs: &str, of: fn(&Summary) -> f64) -> Option<f64> {
        Some((self.ratio(ours, theirs, of)? - 1.0) * 100.0)
    }

    /// `ours` minus `theirs`, in percent of `base`.
    fn percent_of(
        self,
        ours: &str,
        theirs: &str,
        base: &str,
        of: fn(&Summary) -> f64,
    ) -> Option<f64> {
        let difference = of(&self.get(ours)?) - of(&self.get(theirs)?);
        Some(difference / of(&self.get(base)?) * 100.0)
    }
}

fn cpu_s_per_gb(summary: &Summary) -> f64 {
    summary.cpu_s_per_gb
}

fn cpu_s(summary: &Summary) -> f64 {
    summary.cpu_s
}

fn output_bytes(summary: &Summary) -> f64 {
    summary.output_bytes
}

fn mb_per_s(summary: &Summary) -> f64 {
    summary.mb_per_s
}

/// The Targets table, from the medians.
pub fn targets(
    inputs: &[InputResult],
    small: Option<&SmallResult>,
    startup: Option<&StartupResult>,
) -> Vec<Target> {
    let logs = On::input(inputs, TARGET_INPUT);
    let random = On::input(inputs, RANDOM_INPUT);
    let mut rows = codec_targets(logs);
    rows.extend(random_targets(random));
    rows.extend(worker_overhead_targets(logs));
    rows.extend(one_core_targets(logs));
    rows.extend(proof_costs(logs));
    rows.extend(rss_targets(inputs));
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

/// zip and gzip codecs: about half the CPU time of `zip -6`, and output no larger than the CLI
/// tool's.
fn codec_targets(logs: On<'_>) -> Vec<Target> {
    let zip_6 = Tool::Zip.name();
    DEFLATE_TOOLS
        .iter()
        .flat_map(|&(format, tool)| {
            let codec = codec_name(format);
            let cpu = format!("{codec} CPU s/GB ÷ `{zip_6}` CPU s/GB ({TARGET_INPUT})");
            let size = format!("{codec} output size vs `{}` ({TARGET_INPUT})", tool.name());
            [
                target(
                    cpu,
                    logs.ratio(&codec, zip_6, cpu_s_per_gb),
                    "×",
                    Goal::AtMost(0.55),
                ),
                target(
                    size,
                    logs.percent_more(&codec, tool.name(), output_bytes),
                    "%",
                    Goal::AtMost(0.0),
                ),
            ]
        })
        .collect()
}

/// Incompressible input: the codecs 5× faster than in the 61ad217 run, their output at most
/// 0.1% + 1 KiB larger than the input.
fn random_targets(random: On<'_>) -> Vec<Target> {
    PREVIOUS_RANDOM_CODEC_MB_S
        .iter()
        .flat_map(|&(format, baseline)| {
            let codec = codec_name(format);
            let speed = format!(
                "{codec} throughput ÷ {baseline} MB/s (its median on {RANDOM_INPUT} in the \
                 61ad217 run)"
            );
            let speedup = random.get(&codec).map(|s| s.mb_per_s / baseline);
            [
                target(speed, speedup, "×", Goal::AtLeast(5.0)),
                stored_size_target(random, &codec),
            ]
        })
        .collect()
}

/// Output ≤ input × 1.001 + 1 KiB, shown as the output's growth in percent of the input.
fn stored_size_target(random: On<'_>, codec: &str) -> Target {
    let input_bytes = random.input.map(|input| input.bytes as f64);
    let output = random.get(codec).map(|s| s.output_bytes);
    let (value, met) = match (input_bytes, output) {
        (Some(input), Some(output)) if input > 0.0 => (
            Some((output / input - 1.0) * 100.0),
            Some(output <= stored_size_limit(input)),
        ),
        _ => (None, None),
    };
    let here = input_bytes
        .filter(|&input| input > 0.0)
        .map(|input| {
            format!(
                " (+{}% here)",
                bound_text((stored_size_limit(input) / input - 1.0) * 100.0)
            )
        })
        .unwrap_or_default();
    Target {
        name: format!("{codec} output size vs input ({RANDOM_INPUT})"),
        value,
        unit: "%",
        goal: format!("≤ input × 1.001 + 1 KiB{here}"),
        result: Outcome::of(met),
    }
}

/// The largest output an incompressible input of `input_bytes` may have.
fn stored_size_limit(input_bytes: f64) -> f64 {
    input_bytes * 1.001 + KIB
}

/// The worker's CPU beyond the codec's and its proof's (download, upload, copies, HTTP)
/// within 5% of the codec's; the proof, on by default, is reported on its own below.
fn worker_overhead_targets(logs: On<'_>) -> Vec<Target> {
    DEFLATE_TOOLS
        .iter()
        .map(|&(format, _)| {
            let e2e = end_to_end_name(format);
            let (proven, codec) = (proven_name(format), codec_name(format));
            target(
                format!(
                    "worker overhead: ({e2e} worker CPU − {proven} CPU) ÷ {codec} CPU \
                     ({TARGET_INPUT})"
                ),
                logs.percent_of(&e2e, &proven, &codec, cpu_s),
                "%",
                Goal::AtMost(5.0),
            )
        })
        .collect()
}

/// On one core (a Lambda function of up to 1,769 MB), the worker end to end against `zip -6`.
fn one_core_targets(logs: On<'_>) -> Vec<Target> {
    let ours = end_to_end_one_core_name(ONE_CORE_FORMAT);
    let theirs = one_core_name(ONE_CORE_TOOL.name());
    vec![
        target(
            format!("{ours} ÷ `{theirs}` throughput ({TARGET_INPUT})"),
            logs.ratio(&ours, &theirs, mb_per_s),
            "×",
            Goal::AtLeast(1.8),
        ),
        target(
            format!("{ours} output size vs `{theirs}` ({TARGET_INPUT})"),
            logs.percent_more(&ours, &theirs, output_bytes),
            "%",
            Goal::AtMost(0.0),
        ),
    ]
}

/// What proving each output costs on top of the codec (no goal).
fn proof_costs(logs: On<'_>) -> Vec<Target> {
    FORMATS
        .iter()
        .map(|format| {
            let (proven, codec) = (proven_name(format), codec_name(format));
            reported(
                format!("verification: ({proven} CPU − {codec} CPU) ÷ codec CPU ({TARGET_INPUT})"),
                logs.percent_more(&proven, &codec, cpu_s),
                "%",
            )
        })
        .collect()
}

/// Every s3-compressor contender (end to end and codec) within 64 MiB on every input, the
/// streamed one included: one row per contender, at the input where it peaked highest.
fn rss_targets(inputs: &[InputResult]) -> Vec<Target> {
    let mut names: Vec<&str> = Vec::new();
    for input in inputs {
        for contender in &input.contenders {
            if contender.format.is_some() && !names.contains(&contender.name.as_str()) {
                names.push(&contender.name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let highest = inputs
                .iter()
                .filter_map(|input| Some((input.name.as_str(), input.summary(name)?.peak_rss_mib)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let at = highest.map_or(String::new(), |(input, _)| format!(", at {input}"));
            target(
                format!("peak RSS of {name}, highest over every input{at}"),
                highest.map(|(_, mib)| mib),
                " MiB",
                Goal::AtMost(RSS_LIMIT_MIB),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contenders::Kind;
    use crate::measure::Sample;
    use crate::results::{ContenderResult, Run};

    const GB: u64 = 1_000_000_000;

    /// A contender measured once: `wall_s` and `cpu_s` seconds, `output` bytes, `rss_mib`.
    fn measured(name: &str, bytes: u64, wall_s: f64, cpu_s: f64, output: u64) -> ContenderResult {
        measured_rss(name, bytes, wall_s, cpu_s, output, 40.0)
    }

    fn measured_rss(
        name: &str,
        bytes: u64,
        wall_s: f64,
        cpu_s: f64,
        output: u64,
        rss_mib: f64,
    ) -> ContenderResult {
        let sample = Sample {
            wall_s,
            maxrss_kib: (rss_mib * 1024.0) as u64,
            user_s: cpu_s,
            sys_s: 0.0,
            exit: Some(0),
            signal: None,
        };
        let tool = Tool::ALL.iter().any(|tool| name.starts_with(tool.name()));
        ContenderResult {
            name: name.to_owned(),
            kind: if tool { Kind::Tool } else { Kind::Codec },
            format: (!tool).then_some("zip"),
            cpu: None,
            runs: vec![Run::new(bytes, &sample, output)],
            error: None,
        }
    }

    fn input(name: &str, bytes: u64, contenders: Vec<ContenderResult>) -> InputResult {
        InputResult {
            name: name.to_owned(),
            bytes,
            streamed: false,
            contenders,
        }
    }

    /// The targets of a run that measured `contenders` on logs.jsonl (1 GB) alone.
    fn on_logs(contenders: Vec<ContenderResult>) -> Vec<Target> {
        targets(&[input(TARGET_INPUT, GB, contenders)], None, None)
    }

    fn row<'a>(rows: &'a [Target], starts: &str) -> &'a Target {
        rows.iter()
            .find(|row| row.name.starts_with(starts))
            .unwrap_or_else(|| panic!("no target starting {starts:?} in {rows:#?}"))
    }

    /// Asserts that the row starting `starts` measured `value` (to 1e-9) and came out `outcome`.
    fn assert_row(rows: &[Target], starts: &str, value: f64, outcome: Outcome) {
        let target = row(rows, starts);
        let measured = target.value.unwrap_or(f64::NAN);
        assert!((measured - value).abs() < 1e-9, "{target:?}");
        assert_eq!(target.result, outcome, "{target:?}");
    }

    #[test]
    fn the_codec_must_take_at_most_0_55_of_zip_6s_cpu_and_write_no_more() {
        let rows = on_logs(vec![
            // 5.5 s per GB against 10: exactly the bound, met; one byte larger: missed.
            measured("zip codec only", GB, 3.0, 5.5, 1_000_001),
            measured("gzip codec only", GB, 3.0, 5.6, 999_000),
            measured("zip -6", GB, 10.0, 10.0, 1_000_000),
            measured("gzip -6", GB, 10.0, 10.0, 999_000),
        ]);
        let zip_cpu = row(&rows, "zip codec only CPU s/GB");
        assert_eq!(zip_cpu.value, Some(0.55));
        assert_eq!(zip_cpu.result, Outcome::Met);
        assert_eq!(zip_cpu.goal, "≤ 0.55×");
        let zip_size = row(&rows, "zip codec only output size vs `zip -6`");
        assert_eq!(zip_size.result, Outcome::Missed);
        assert_eq!(zip_size.goal, "≤ +0%");
        assert_eq!(
            row(&rows, "gzip codec only CPU s/GB").result,
            Outcome::Missed
        );
        let gzip_size = row(&rows, "gzip codec only output size vs `gzip -6`");
        assert_eq!(
            (gzip_size.value, gzip_size.result),
            (Some(0.0), Outcome::Met)
        );
    }

    #[test]
    fn random_bytes_must_pass_through_five_times_faster_and_barely_grow() {
        let bytes = 100 * 1024 * 1024;
        let limit = (bytes as f64 * 1.001) as u64 + 1024;
        // zip: 56.9 MB/s × 5 = 284.5 MB/s: 104.86 MB in 0.36 s is 291 MB/s.
        let random = input(
            RANDOM_INPUT,
            bytes,
            vec![
                measured("zip codec only", bytes, 0.36, 0.36, limit),
                measured("gzip codec only", bytes, 0.36, 0.36, limit + 1),
            ],
        );
        let rows = targets(&[random], None, None);
        let zip_speed = row(&rows, "zip codec only throughput ÷ 56.9 MB/s");
        assert_eq!(zip_speed.result, Outcome::Met, "{zip_speed:?}");
        // gzip's baseline is 60.8 MB/s: 291 MB/s is 4.79×.
        let gzip_speed = row(&rows, "gzip codec only throughput ÷ 60.8 MB/s");
        assert_eq!(gzip_speed.result, Outcome::Missed, "{gzip_speed:?}");
        assert_eq!(
            row(&rows, "zip codec only output size vs input").result,
            Outcome::Met
        );
        let gzip_size = row(&rows, "gzip codec only output size vs input");
        assert_eq!(gzip_size.result, Outcome::Missed);
        assert_eq!(gzip_size.goal, "≤ input × 1.001 + 1 KiB (+0.101% here)");
    }

    #[test]
    fn the_worker_may_add_five_percent_to_the_codecs_cpu() {
        let rows = on_logs(vec![
            measured("s3-compressor zip (e2e)", GB, 9.0, 11.4, 1),
            measured("zip codec + proof", GB, 8.0, 11.0, 1),
            measured("zip codec only", GB, 8.0, 10.0, 1),
            measured("s3-compressor gzip (e2e)", GB, 9.0, 11.6, 1),
            measured("gzip codec + proof", GB, 8.0, 11.0, 1),
            measured("gzip codec only", GB, 8.0, 10.0, 1),
        ]);
        assert_row(
            &rows,
            "worker overhead: (s3-compressor zip (e2e)",
            4.0,
            Outcome::Met,
        );
        let gzip = row(&rows, "worker overhead: (s3-compressor gzip (e2e)");
        assert_eq!(gzip.result, Outcome::Missed);
    }

    #[test]
    fn on_one_core_the_worker_must_be_1_8_times_zip_6() {
        let rows = on_logs(vec![
            measured("s3-compressor zip (e2e, 1 core)", GB, 10.0, 10.0, 97),
            measured("zip -6 (1 core)", GB, 19.0, 19.0, 100),
        ]);
        let speed = "s3-compressor zip (e2e, 1 core) ÷ `zip -6 (1 core)`";
        assert_row(&rows, speed, 1.9, Outcome::Met);
        let size = "s3-compressor zip (e2e, 1 core) output size";
        assert_row(&rows, size, -3.0, Outcome::Met);
    }

    #[test]
    fn the_proofs_cost_is_reported_without_a_goal() {
        let rows = on_logs(vec![
            measured("zip codec only", GB, 8.0, 10.0, 1),
            measured("zip codec + proof", GB, 8.0, 12.0, 1),
        ]);
        let zip = "verification: (zip codec + proof CPU";
        assert_row(&rows, zip, 20.0, Outcome::Reported);
        assert_eq!(row(&rows, zip).goal, "none");
        let gzip = row(&rows, "verification: (gzip codec + proof CPU");
        assert_eq!((gzip.value, gzip.result), (None, Outcome::NotMeasured));
    }

    #[test]
    fn peak_rss_is_held_at_the_input_where_it_is_highest() {
        let mut big = input(
            "big-logs.jsonl",
            5 * GB,
            vec![measured_rss(
                "s3-compressor zip (e2e)",
                5 * GB,
                1.0,
                1.0,
                1,
                70.0,
            )],
        );
        big.streamed = true;
        let inputs = [
            input(
                TARGET_INPUT,
                GB,
                vec![
                    measured_rss("s3-compressor zip (e2e)", GB, 1.0, 1.0, 1, 50.0),
                    measured_rss("zip codec only", GB, 1.0, 1.0, 1, 10.0),
                    measured_rss("zip -6", GB, 1.0, 1.0, 1, 100.0),
                ],
            ),
            input(
                RANDOM_INPUT,
                GB,
                vec![measured_rss("zip codec only", GB, 1.0, 1.0, 1, 64.0)],
            ),
            big,
        ];
        let rows = targets(&inputs, None, None);
        let e2e = row(&rows, "peak RSS of s3-compressor zip (e2e),");
        assert!(e2e.name.ends_with("at big-logs.jsonl"), "{}", e2e.name);
        assert_eq!(e2e.result, Outcome::Missed);
        let codec = row(&rows, "peak RSS of zip codec only,");
        assert!(codec.name.ends_with("at random.bin"), "{}", codec.name);
        assert_eq!(codec.result, Outcome::Met);
        // The CLI tools are not held to it.
        assert!(!rows.iter().any(|row| row.name.contains("zip -6,")));
    }

    #[test]
    fn targets_whose_inputs_are_missing_are_not_measured() {
        let rows = targets(&[], None, None);
        assert!(rows.iter().all(|row| row.result == Outcome::NotMeasured));
        assert!(row(&rows, "many small objects").value.is_none());
    }

    #[test]
    fn bounds_are_written_without_trailing_zeros() {
        assert_eq!(bound_text(0.55), "0.55");
        assert_eq!(bound_text(64.0), "64");
        assert_eq!(bound_text(0.0), "0");
        assert_eq!(bound_text(0.100_976_5), "0.101");
    }
}
