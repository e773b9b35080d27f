//! The benchmark tool (`bench/`) as a user runs it: `s3-compressor-bench run` on a tiny corpus
//! this test writes, one run of everything, and the three reports it leaves behind.
//!
//! No timing is asserted: only that every contender ran on every input, with plausible ratios
//! and peak RSS. It needs the CLI tools it compares against (`zip`, `gzip`, `pigz`, `zstd`); a
//! missing one makes the test print `SKIPPED: ...` and return, except on CI (`CI=true`), where
//! it fails with the command that installs them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use s3_compressor_tests::process::run;
use s3_compressor_tests::{built_binary, have};
use serde_json::Value;

const TOOLS: [&str; 4] = ["zip", "gzip", "pigz", "zstd"];
const INSTALL: &str = "apt-get install -y zip gzip pigz zstd";

const INPUTS: [&str; 3] = ["logs.jsonl", "records.csv", "random.bin"];
const CONTENDERS: [&str; 17] = [
    "s3-compressor zip (e2e)",
    "s3-compressor gzip (e2e)",
    "s3-compressor zstd (e2e)",
    "s3-compressor zip (e2e, 1 core)",
    "zip codec only",
    "gzip codec only",
    "zstd codec only",
    "zip codec only (1 core)",
    "zip codec + proof",
    "gzip codec + proof",
    "zstd codec + proof",
    "zip -6",
    "gzip -6",
    "pigz -6 -p 2",
    "zstd -3",
    "zstd -3 -T2",
    "zip -6 (1 core)",
];
const SMALL_FILES: usize = 50;

/// The `s3-compressor` binary the benchmark measures: the one cargo builds beside this package's
/// binary when the workspace's tests are built together (`cargo test --workspace`, as `.ci/run`
/// does), so it is current. Run alone (`cargo test -p s3-compressor-bench`), build the worker
/// first.
fn worker_binary() -> PathBuf {
    let bench = built_binary("s3-compressor-bench");
    let worker = bench.with_file_name("s3-compressor");
    assert!(
        worker.is_file(),
        "{} does not exist: build it with `cargo build -p s3-compressor`, or run the workspace's \
         tests together (cargo nextest run --workspace)",
        worker.display()
    );
    worker
}

/// xorshift64*: deterministic bytes with no structure a compressor can use.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A corpus shaped like make_corpus.py's, small enough for a test: ~3 MiB of JSON log lines,
/// ~300 KiB of CSV, 1 MiB of random bytes and 50 small files.
fn write_corpus(dir: &Path) {
    let mut random = Random(0x5eed_1234_abcd_ef01);
    let services = ["checkout-api", "auth-svc", "catalog", "payments", "search"];
    let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"];
    let mut logs = String::new();
    let mut line = 0u64;
    while logs.len() < 3 << 20 {
        line += 1;
        logs.push_str(&format!(
            "{{\"ts\":\"2024-01-01T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"service\":\"{}\",\
             \"request_id\":\"{:016x}\",\"user_id\":\"u_{}\",\"path\":\"/api/v1/orders/{}\",\
             \"status\":{},\"latency_ms\":{}.{:03},\"msg\":\"request completed\"}}\n",
            line / 3_600_000 % 24,
            line / 60_000 % 60,
            line / 1000 % 60,
            line % 1000,
            levels[random.below(levels.len() as u64) as usize],
            services[random.below(services.len() as u64) as usize],
            random.next(),
            random.below(500_000),
            random.below(2_000_000),
            [200, 200, 200, 201, 404, 500][random.below(6) as usize],
            random.below(400),
            random.below(1000),
        ));
    }
    std::fs::write(dir.join("logs.jsonl"), logs).unwrap();

    let mut csv = String::from("id,customer,country,qty,unit_price,status\n");
    let mut id = 0u64;
    while csv.len() < 300 << 10 {
        id += 1;
        csv.push_str(&format!(
            "{id},cust_{:06},{},{},{}.{:02},{}\n",
            random.below(200_000),
            ["US", "DE", "FR", "JP", "BR"][random.below(5) as usize],
            random.below(20) + 1,
            random.below(900),
            random.below(100),
            ["shipped", "pending", "delivered"][random.below(3) as usize],
        ));
    }
    std::fs::write(dir.join("records.csv"), csv).unwrap();

    let bytes: Vec<u8> = (0..(1 << 20) / 8)
        .flat_map(|_| random.next().to_le_bytes())
        .collect();
    std::fs::write(dir.join("random.bin"), bytes).unwrap();

    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    for i in 0..SMALL_FILES {
        let size = 1024 + random.below(15 * 1024) as usize;
        let mut text = String::new();
        while text.len() < size {
            text.push_str(
                ["order ", "user ", "payment ", "retry ", "cache "][random.below(5) as usize],
            );
        }
        let extension = ["txt", "json", "log"][i % 3];
        std::fs::write(small.join(format!("file_{i:03}.{extension}")), text).unwrap();
    }
}

/// The lines of the results.md section whose heading starts with `heading`.
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = markdown
        .lines()
        .skip_while(|line| !line.starts_with(heading));
    let Some(_) = lines.next() else {
        panic!("results.md has no section {heading:?}:\n{markdown}");
    };
    lines.take_while(|line| !line.starts_with("## ")).collect()
}

/// The body rows of a table whose header starts with `| input`.
fn table_rows<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .copied()
        .filter(|row| row.starts_with("| ") && !row.starts_with("| input"))
        .collect()
}

/// A table row's cells, trimmed.
fn cells(row: &str) -> Vec<&str> {
    row.trim_matches('|').split(" | ").map(str::trim).collect()
}

#[test]
fn the_benchmark_measures_every_contender_on_a_tiny_corpus() {
    if !have(&TOOLS, INSTALL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let out = dir.path().join("results");
    std::fs::create_dir(&corpus).unwrap();
    write_corpus(&corpus);

    let finished = run(Command::new(built_binary("s3-compressor-bench"))
        .arg("run")
        .arg("--corpus")
        .arg(&corpus)
        .arg("--out")
        .arg(&out)
        .args(["--runs", "1", "--big-gib", "0"])
        .arg("--binary")
        .arg(worker_binary())
        .arg("--work-dir")
        .arg(dir.path()));
    assert!(
        finished.success(),
        "s3-compressor-bench run failed: {}",
        finished.describe()
    );

    // results.md: a table per input with a row for every contender.
    let markdown = std::fs::read_to_string(out.join("results.md")).unwrap();
    for input in INPUTS {
        let rows = section(&markdown, &format!("## Input: {input} "));
        for contender in CONTENDERS {
            let prefix = format!("| {contender} | ");
            assert!(
                rows.iter().any(|row| row.starts_with(&prefix)),
                "no row for {contender} under {input}:\n{markdown}"
            );
        }
    }
    // CPU s/GB, beside MB/s: a number in every row.
    for input in INPUTS {
        for row in section(&markdown, &format!("## Input: {input} "))
            .into_iter()
            .filter(|row| row.starts_with("| ") && !row.starts_with("| contender"))
        {
            let cells = cells(row);
            assert!(
                cells[2].parse::<f64>().is_ok_and(|v| v > 0.0),
                "no CPU s/GB in {row}"
            );
        }
    }
    // The Lambda cost: one row per end-to-end contender and input, the same USD per TB at
    // 512 MB and at 1,769 MB.
    let cost_rows = table_rows(&section(&markdown, "## Lambda cost per TB"));
    assert_eq!(cost_rows.len(), INPUTS.len() * 4, "{markdown}");
    for row in cost_rows {
        let cells = cells(row);
        assert!(cells[1].contains("(e2e"), "{row}");
        let usd: Vec<f64> = cells[3..5].iter().map(|c| c.parse().unwrap()).collect();
        assert!(usd[0] > 0.0 && usd[0] == usd[1], "{row}");
    }
    for heading in [
        "## Many small objects",
        "## 8 clients at once",
        "## Start-up",
        "## Targets",
    ] {
        assert!(!section(&markdown, heading).is_empty(), "{heading}");
    }
    // What the proof costs, per input and format: a percentage in the last column.
    let cost_rows = table_rows(&section(&markdown, "## Where the end-to-end time goes"));
    assert_eq!(cost_rows.len(), INPUTS.len() * 3, "{markdown}");
    for row in cost_rows {
        let cost = row
            .trim_end_matches(" |")
            .rsplit("| ")
            .next()
            .unwrap_or_default();
        assert!(
            cost.ends_with('%') && cost[..cost.len() - 1].parse::<f64>().is_ok(),
            "no proof cost in {row}"
        );
    }

    // results.json: the raw runs, with plausible ratios and peak RSS.
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let inputs = json["inputs"].as_array().unwrap();
    for name in INPUTS {
        let input = inputs
            .iter()
            .find(|input| input["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in results.json: {json:#}"));
        let contenders = input["contenders"].as_array().unwrap();
        assert_eq!(
            contenders.len(),
            CONTENDERS.len(),
            "{name}: {contenders:#?}"
        );
        for contender in contenders {
            let runs = contender["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 1, "{contender}");
            let run = &runs[0];
            let what = format!("{} on {name}: {run}", contender["name"]);
            let ratio = run["ratio"].as_f64().unwrap();
            match name {
                "random.bin" => assert!((0.9..=1.1).contains(&ratio), "{what}"),
                _ => assert!(ratio > 1.0, "{what}"),
            }
            let rss_kib = run["maxrss_kib"].as_u64().unwrap();
            assert!(rss_kib > 0 && rss_kib < 1 << 20, "{what}");
            assert!(run["mb_per_s"].as_f64().unwrap() > 0.0, "{what}");
            assert!(run["cpu_s_per_gb"].as_f64().unwrap() > 0.0, "{what}");
            // The one-core contenders name their CPU; the others run on any.
            let one_core = contender["name"].as_str().unwrap().contains("1 core");
            assert_eq!(contender["cpu"].is_u64(), one_core, "{what}");
        }
    }
    assert_eq!(json["small_objects"]["files"], SMALL_FILES, "{json:#}");
    assert!(json["small_objects"]["objects_per_s"].as_f64().unwrap() > 0.0);
    // Every file of the corpus, uploaded by eight clients at once; serve's peak is measured.
    let load = &json["eight_clients"];
    assert_eq!(load["clients"], 8, "{json:#}");
    assert_eq!(load["files"], INPUTS.len() + SMALL_FILES, "{json:#}");
    assert!(load["seconds"].as_f64().unwrap() > 0.0, "{json:#}");
    let serve_kib = load["serve_peak_rss_kib"].as_u64().unwrap();
    assert!(serve_kib > 0 && serve_kib < 1 << 20, "{json:#}");
    let load_row = table_rows(&section(&markdown, "## 8 clients at once"))[0];
    assert_eq!(cells(load_row).len(), 6, "{load_row}");
    assert_eq!(json["startup"]["runs_ms"].as_array().unwrap().len(), 5);
    assert!(!json["targets"].as_array().unwrap().is_empty());

    // throughput.svg: an SVG with bars.
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("<rect"));
}
