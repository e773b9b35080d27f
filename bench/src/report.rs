//! results.md: the tables a person reads.

use std::fmt::Write as _;

use crate::contenders::{codec_name, end_to_end_name, proven_name, Kind, FORMATS};
use crate::lambda::{compute_usd_per_tb, request_usd_per_tb, wall_s, MEMORIES_MB};
use crate::results::{InputResult, LoadResult, Results};
use crate::stats::{KIB, MB, MIB};
use crate::targets::Target;

pub fn markdown(results: &Results) -> String {
    let mut md = String::new();
    // Writing to a String cannot fail.
    let _ = write_markdown(&mut md, results);
    md
}

fn write_markdown(md: &mut String, results: &Results) -> std::fmt::Result {
    let machine = &results.machine;
    writeln!(md, "# s3-compressor benchmark\n")?;
    writeln!(md, "- command: `{}`", results.command)?;
    writeln!(md, "- date: {}", results.date_utc)?;
    writeln!(
        md,
        "- commit: {}",
        results
            .commit
            .as_deref()
            .unwrap_or("unknown (not a git checkout)")
    )?;
    writeln!(
        md,
        "- machine: {} CPUs (nproc), {}, {} RAM, Linux {}",
        machine.nproc,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        machine
            .memory_kib
            .map_or("unknown".to_owned(), |kib| format!(
                "{:.1} GiB",
                kib as f64 * KIB / (MIB * 1024.0)
            )),
        machine.kernel.as_deref().unwrap_or("unknown")
    )?;
    writeln!(
        md,
        "- runs per measurement: {} (tables show medians)",
        results.runs_per_measurement
    )?;
    writeln!(
        md,
        "- the S3 endpoint of the end-to-end runs runs inside the benchmark process: its CPU \
         time is part of the end-to-end cost (see Notes)\n"
    )?;
    if !results.failures.is_empty() {
        writeln!(md, "## Failed measurements\n")?;
        for failure in &results.failures {
            writeln!(md, "- {}", failure.replace('\n', " "))?;
        }
        writeln!(md)?;
    }
    writeln!(md, "![median throughput](throughput.svg)\n")?;

    for input in &results.inputs {
        input_table(md, input)?;
    }

    cpu_table(md, results)?;
    lambda_table(md, results)?;

    if let Some(small) = &results.small_objects {
        writeln!(md, "## Many small objects (`s3-compressor serve`)\n")?;
        writeln!(
            md,
            "| files | MB | objects/s (median) | serve peak RSS MiB (VmHWM) | runs (objects/s) |"
        )?;
        writeln!(md, "|---:|---:|---:|---:|---|")?;
        writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} |\n",
            small.files,
            small.bytes as f64 / MB,
            small
                .objects_per_s
                .map_or("n/a".to_owned(), |v| format!("{v:.0}")),
            mib_or_na(small.serve_peak_rss_kib),
            small
                .runs
                .iter()
                .map(|run| format!("{:.0}", run.objects_per_s))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }

    if let Some(load) = &results.eight_clients {
        load_table(md, load, worker_peak_rss_kib(results))?;
    }

    if let Some(startup) = &results.startup {
        writeln!(md, "## Start-up (`s3-compressor lambda`)\n")?;
        writeln!(md, "| median ms | runs (ms) |")?;
        writeln!(md, "|---:|---|")?;
        writeln!(
            md,
            "| {} | {} |\n",
            startup
                .median_ms
                .map_or("n/a".to_owned(), |v| format!("{v:.1}")),
            startup
                .runs_ms
                .iter()
                .map(|ms| format!("{ms:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | goal | result |")?;
    writeln!(md, "|---|---:|---|---|")?;
    for target in &results.targets {
        target_row(md, target)?;
    }
    writeln!(md)?;

    writeln!(md, "## Notes\n")?;
    for note in &results.notes {
        writeln!(md, "- {note}")?;
    }
    Ok(())
}

fn load_table(md: &mut String, load: &LoadResult, worker_kib: Option<u64>) -> std::fmt::Result {
    writeln!(
        md,
        "## {} clients at once (`s3-compressor serve`)\n",
        load.clients
    )?;
    writeln!(
        md,
        "| files | MB | seconds | MB/s | serve peak RSS MiB (VmHWM) | the worker's own peak RSS MiB (largest end-to-end run above) |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        md,
        "| {} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
        load.files,
        load.bytes as f64 / MB,
        load.seconds,
        load.bytes as f64 / MB / load.seconds,
        mib_or_na(load.serve_peak_rss_kib),
        mib_or_na(worker_kib),
    )
}

fn mib_or_na(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_owned(), |kib| {
        format!("{:.1}", kib as f64 * KIB / MIB)
    })
}

/// The most any end-to-end run of the worker held resident: what `serve` adds under load is
/// measured against it.
fn worker_peak_rss_kib(results: &Results) -> Option<u64> {
    results
        .inputs
        .iter()
        .flat_map(|input| &input.contenders)
        .filter(|contender| contender.kind == Kind::EndToEnd)
        .flat_map(|contender| &contender.runs)
        .map(|run| run.maxrss_kib)
        .max()
}

fn input_table(md: &mut String, input: &InputResult) -> std::fmt::Result {
    if input.streamed {
        writeln!(
            md,
            "## Input: {} ({:.1} MB, generated and streamed into a multipart upload)\n",
            input.name,
            input.bytes as f64 / MB
        )?;
    } else {
        writeln!(
            md,
            "## Input: {} ({:.1} MB)\n",
            input.name,
            input.bytes as f64 / MB
        )?;
    }
    writeln!(
        md,
        "| contender | MB/s (median) | CPU s/GB (median) | ratio | peak RSS MiB (median) | runs (MB/s) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---|")?;
    for contender in &input.contenders {
        let runs = contender
            .runs
            .iter()
            .map(|run| format!("{:.1}", run.mb_per_s))
            .collect::<Vec<_>>()
            .join(", ");
        match contender.summary() {
            Some(summary) => writeln!(
                md,
                "| {} | {:.1} | {:.2} | {:.3} | {:.1} | {runs} |",
                contender.name,
                summary.mb_per_s,
                summary.cpu_s_per_gb,
                summary.ratio,
                summary.peak_rss_mib
            )?,
            None => writeln!(
                md,
                "| {} | failed | | | | see Failed measurements |",
                contender.name
            )?,
        }
    }
    writeln!(md)
}

/// Wall and CPU seconds of each end-to-end run beside the codec alone: how much of the
/// difference is the worker's own extra work and how much the endpoint's.
fn cpu_table(md: &mut String, results: &Results) -> std::fmt::Result {
    let mut rows = Vec::new();
    for input in &results.inputs {
        for format in FORMATS {
            let Some(e2e) = input.summary(&end_to_end_name(format)) else {
                continue;
            };
            let codec = input.summary(&codec_name(format));
            let proven = input.summary(&proven_name(format));
            let seconds =
                |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.2}"));
            // What the proof adds to the codec's CPU time, in percent.
            let proof_cost = match (codec, proven) {
                (Some(codec), Some(proven)) if codec.cpu_s > 0.0 => {
                    format!("{:+.1}%", (proven.cpu_s / codec.cpu_s - 1.0) * 100.0)
                }
                _ => "–".to_owned(),
            };
            rows.push(format!(
                "| {} | {format} | {:.2} | {:.2} | {} | {} | {} | {} | {proof_cost} |",
                input.name,
                e2e.wall_s,
                e2e.cpu_s,
                seconds(e2e.endpoint_cpu_s),
                seconds(codec.map(|c| c.wall_s)),
                seconds(codec.map(|c| c.cpu_s)),
                seconds(proven.map(|c| c.cpu_s)),
            ));
        }
    }
    write_section(
        md,
        "Where the end-to-end time goes (medians, seconds)",
        "Worker CPU is the `compress` process's user + system time; endpoint CPU is what the \
         benchmark process (the embedded S3 endpoint) used meanwhile, on the same cores. The \
         proof (decoding every output as it is written and comparing its CRC-64/NVME with the \
         input's, before any source is deleted) is on in the worker; `codec + proof` runs it \
         beside the codec alone, and the last column is what it adds.",
        "| input | format | e2e wall | worker CPU | endpoint CPU | codec-only wall | codec-only CPU | codec + proof CPU | proof cost |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|",
        &rows,
    )
}

/// USD per TB of input on Lambda, from each end-to-end run's worker CPU (see [`crate::lambda`]).
fn lambda_table(md: &mut String, results: &Results) -> std::fmt::Result {
    let mut rows = Vec::new();
    for input in &results.inputs {
        for contender in &input.contenders {
            let Some(summary) = contender.summary() else {
                continue;
            };
            if contender.kind != Kind::EndToEnd {
                continue;
            }
            let per_gb = summary.cpu_s_per_gb;
            let usd =
                MEMORIES_MB.map(|memory| format!("{:.3}", compute_usd_per_tb(per_gb, memory)));
            rows.push(format!(
                "| {} | {} | {per_gb:.2} | {} | {:.1} | {:.4} |",
                input.name,
                contender.name,
                usd.join(" | "),
                wall_s(per_gb, MEMORIES_MB[0]),
                request_usd_per_tb(input.bytes),
            ));
        }
    }
    write_section(
        md,
        "Lambda cost per TB (estimate, x86_64, us-east-1)",
        "The compute price of the worker's CPU s/GB (the S3 endpoint's CPU is not in it), \
         cost = CPU s × 1769/1024 × $0.0000166667 (the formula and what it assumes are in \
         Notes): the same at 512 MB as at 1,769 MB. TB = 10^12 bytes of input. The last column \
         is the request price for objects the size of this input, not in the compute columns.",
        "| input | contender | worker CPU s/GB | compute $/TB at 512 MB | compute $/TB at 1,769 MB | wall s/GB at 512 MB | requests $/TB |\n\
         |---|---|---:|---:|---:|---:|---:|",
        &rows,
    )
}

/// A section with a paragraph and a table: `head` is the table's header and alignment lines.
/// Nothing is written when there are no rows.
fn write_section(
    md: &mut String,
    heading: &str,
    paragraph: &str,
    head: &str,
    rows: &[String],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(md, "## {heading}\n")?;
    writeln!(md, "{paragraph}\n")?;
    writeln!(md, "{head}")?;
    for row in rows {
        writeln!(md, "{row}")?;
    }
    writeln!(md)
}

fn target_row(md: &mut String, target: &Target) -> std::fmt::Result {
    let value = match target.value {
        Some(value) if target.unit == "%" => format!("{value:+.2}%"),
        Some(value) if target.unit == "×" => format!("{value:.2}×"),
        Some(value) => format!("{value:.1}{}", target.unit),
        None => "not measured".to_owned(),
    };
    writeln!(
        md,
        "| {} | {value} | {} | {} |",
        target.name,
        target.goal,
        target.result.text()
    )
}
