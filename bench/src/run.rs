//! `s3-compressor-bench run`: every measurement, in order, then the reports.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::affinity::OneCore;
use crate::cli::RunArgs;
use crate::contenders::{check_tools, Contender, Tool, FORMATS};
use crate::inputs::{warm_page_cache, Corpus, Input, Repeated};
use crate::machine::{git_commit, now_utc, Machine};
use crate::measure::{describe, own_cpu_s, Measurer, Sample};
use crate::results::{ContenderResult, InputResult, Results, Run};
use crate::s3::{Endpoint, BUCKET};
use crate::stats::{KIB, MB, MIB};
use crate::targets::targets;

/// One line per measurement on stderr, with the time since the start.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    pub fn line(&mut self, message: fmt::Arguments<'_>) {
        let seconds = self.started.elapsed().as_secs();
        eprintln!("[{:02}:{:02}] {message}", seconds / 60, seconds % 60);
    }
}

/// What every measurement needs.
#[derive(Debug)]
struct Context {
    binary: PathBuf,
    /// This program, for `codec`.
    exe: PathBuf,
    measurer: Measurer,
    endpoint: Endpoint,
    /// One config per format: `incoming/` -> `processed-FORMAT/`, source kept.
    configs: BTreeMap<&'static str, PathBuf>,
    /// Where codec and tool outputs go (one at a time).
    local: PathBuf,
    /// Where the one-core contenders run, and where the bench's threads go meanwhile.
    one_core: OneCore,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut progress = Progress::new();
    let command = command_line();
    let date_utc = now_utc();
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => exe.with_file_name("s3-compressor"),
    };
    if !binary.is_file() {
        bail!(
            "{} does not exist; build it (cargo build --profile image -p s3-compressor) or pass --binary",
            binary.display()
        );
    }
    let corpus = Corpus::discover(&args.corpus)?;
    if corpus.inputs.is_empty() && corpus.small.is_empty() {
        bail!(
            "nothing to measure in {}: none of logs.jsonl, records.csv, random.bin, small/",
            args.corpus.display()
        );
    }
    if !args.skip_tools {
        check_tools()?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let work_root = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("s3-compressor-bench-")
        .tempdir_in(&work_root)
        .with_context(|| format!("cannot make a folder in {}", work_root.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let mut notes = corpus.notes.clone();
    for note in &notes {
        progress.line(format_args!("note: {note}"));
    }

    let local = work.path().join("local");
    std::fs::create_dir_all(&local)?;
    let context = Context {
        configs: write_configs(work.path())?,
        endpoint: Endpoint::start(runtime.handle(), &work.path().join("s3"))?,
        measurer: Measurer::new(work.path().join("measured.log"))?,
        binary,
        exe,
        local,
        one_core: OneCore::plan()?,
    };
    progress.line(format_args!(
        "embedded S3 endpoint at {} (data in {})",
        context.endpoint.url(),
        work.path().display()
    ));

    let mut failures = Vec::new();
    // First, while the machine is quiet: the most noise-sensitive measurement.
    let startup = match crate::startup::run(&context.binary, work.path(), &mut progress) {
        Ok(result) => Some(result),
        Err(error) => {
            failed(&mut progress, &mut failures, "start-up", &error);
            None
        }
    };

    let contenders = Contender::all(!args.skip_tools);
    let mut inputs = Vec::new();
    for input in &corpus.inputs {
        match measure_input(&context, input, &contenders, args.runs, &mut progress) {
            Ok(result) => inputs.push(result),
            Err(error) => failed(&mut progress, &mut failures, &input.name, &error),
        }
    }
    if args.big_gib > 0 {
        let source = ["logs.jsonl", "records.csv"]
            .iter()
            .find_map(|name| corpus.input(name));
        match source {
            Some(source) => {
                match measure_big(&context, source, args.big_gib, args.runs, &mut progress) {
                    Ok(result) => inputs.push(result),
                    Err(error) => failed(&mut progress, &mut failures, "streamed input", &error),
                }
            }
            None => notes.push(
                "the streamed input is made from logs.jsonl or records.csv, and the corpus has \
                 neither; skipped"
                    .to_owned(),
            ),
        }
    }
    let Context {
        endpoint,
        binary,
        one_core,
        ..
    } = context;
    endpoint.shutdown();

    let small = if corpus.small.is_empty() {
        None
    } else {
        progress.line(format_args!(
            "small objects: starting s3-compressor serve for {} files",
            corpus.small.len()
        ));
        let measured = crate::small::run(
            &binary,
            &corpus.small,
            args.runs,
            work.path(),
            runtime.handle(),
            &mut progress,
        );
        serve_scenario(
            measured,
            crate::small::SMALL_OBJECTS,
            (work.path(), &args.out),
            &mut progress,
            &mut failures,
        )
    };
    let every_file: Vec<PathBuf> = corpus
        .inputs
        .iter()
        .map(|input| input.path.clone())
        .chain(corpus.small.iter().cloned())
        .collect();
    progress.line(format_args!(
        "{} clients: starting s3-compressor serve for {} files",
        crate::small::CLIENTS,
        every_file.len()
    ));
    let measured = crate::small::eight_clients(
        &binary,
        &every_file,
        work.path(),
        runtime.handle(),
        &mut progress,
    );
    let eight_clients = serve_scenario(
        measured,
        crate::small::EIGHT_CLIENTS,
        (work.path(), &args.out),
        &mut progress,
        &mut failures,
    );
    for input in &inputs {
        for contender in &input.contenders {
            if let Some(error) = &contender.error {
                failures.push(format!("{} on {}: {error}", contender.name, input.name));
            }
        }
    }

    notes.extend(method_notes(args.runs, &one_core));
    let results = Results {
        command,
        date_utc,
        commit: git_commit(),
        machine: Machine::describe(),
        runs_per_measurement: args.runs,
        targets: targets(&inputs, small.as_ref(), startup.as_ref()),
        inputs,
        small_objects: small,
        eight_clients,
        startup,
        failures,
        notes,
    };
    write_outputs(&args.out, &results)?;
    progress.line(format_args!(
        "wrote {}, {} and {}",
        args.out.join("results.md").display(),
        args.out.join("results.json").display(),
        args.out.join("throughput.svg").display()
    ));
    if !results.failures.is_empty() {
        bail!(
            "{} measurement(s) failed (listed in {} under \"Failed measurements\")",
            results.failures.len(),
            args.out.join("results.md").display()
        );
    }
    Ok(())
}

/// Reports a measurement that failed; the run goes on without it.
/// A serve scenario's result; or, if it failed, `None`, with the failure recorded and serve's
/// log copied from the work folder to the output folder, where the error says it is.
fn serve_scenario<T>(
    measured: anyhow::Result<T>,
    scenario: &str,
    (work, out): (&Path, &Path),
    progress: &mut Progress,
    failures: &mut Vec<String>,
) -> Option<T> {
    let error = match measured {
        Ok(result) => return Some(result),
        Err(error) => error,
    };
    let name = crate::small::log_name(scenario);
    let kept = out.join(&name);
    let error = match std::fs::copy(work.join(&name), &kept) {
        Ok(_) => error.context(format!("serve's log is in {}", kept.display())),
        Err(_) => error,
    };
    failed(progress, failures, scenario, &error);
    None
}

fn failed(progress: &mut Progress, failures: &mut Vec<String>, what: &str, error: &anyhow::Error) {
    progress.line(format_args!("FAILED: {what}: {error:#}"));
    failures.push(format!("{what}: {error:#}"));
}

/// This process's command line, shell-quoted where needed.
fn command_line() -> String {
    std::env::args_os()
        .map(|arg| {
            let arg = arg.to_string_lossy().into_owned();
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn output_prefix(format: &str) -> String {
    format!("processed-{format}/")
}

/// One config per format, each with the single rule the end-to-end runs use.
fn write_configs(work: &Path) -> anyhow::Result<BTreeMap<&'static str, PathBuf>> {
    let mut configs = BTreeMap::new();
    for format in FORMATS {
        let path = work.join(format!("{format}.toml"));
        let text = format!(
            "# s3-compressor-bench: {format} at its default level, the source kept for the next run.\n\
             [[rule]]\n\
             prefix = \"incoming/\"\n\
             output_prefix = \"{}\"\n\
             format = \"{format}\"\n\
             delete_source = false\n",
            output_prefix(format)
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        configs.insert(format, path);
    }
    Ok(configs)
}

/// Uploads `input`, then runs every contender on it `runs` times, interleaved (run 1 of each,
/// then run 2 of each, ...), and removes its objects.
fn measure_input(
    context: &Context,
    input: &Input,
    contenders: &[Contender],
    runs: u32,
    progress: &mut Progress,
) -> anyhow::Result<InputResult> {
    let s3 = &context.endpoint.s3;
    let key = format!("incoming/{}", input.name);
    progress.line(format_args!(
        "{}: {:.1} MB; reading it into the page cache and uploading it to s3://{BUCKET}/{key}",
        input.name,
        input.bytes as f64 / MB
    ));
    warm_page_cache(&input.path)?;
    let mut file =
        File::open(&input.path).with_context(|| format!("cannot open {}", input.path.display()))?;
    s3.upload(BUCKET, &key, &mut file)?;

    let mut results: Vec<ContenderResult> = contenders
        .iter()
        .map(|contender| new_result(context, *contender))
        .collect();
    for run in 1..=runs {
        for (contender, result) in contenders.iter().zip(&mut results) {
            if result.error.is_some() {
                continue;
            }
            let cores = Cores::of(*contender);
            let measured = match *contender {
                Contender::EndToEnd(format) | Contender::EndToEndOneCore(format) => {
                    end_to_end(context, format, &key, input.bytes, cores)
                }
                Contender::Codec(format) | Contender::CodecOneCore(format) => {
                    codec(context, format, input, Proof::Off, cores)
                }
                Contender::Proven(format) => codec(context, format, input, Proof::On, cores),
                Contender::Tool(tool) | Contender::ToolOneCore(tool) => {
                    tool_run(context, tool, input, cores)
                }
            };
            record(progress, &input.name, result, run, runs, measured);
        }
    }
    s3.delete(BUCKET, &key)?;
    for format in FORMATS {
        s3.delete_prefix(BUCKET, &output_prefix(format))?;
    }
    Ok(InputResult {
        name: input.name.clone(),
        bytes: input.bytes,
        streamed: false,
        contenders: results,
    })
}

/// The memory-bound run: `source` repeated to `gib` GiB, streamed into a multipart upload
/// (never a local file), then compressed end to end as zip.
fn measure_big(
    context: &Context,
    source: &Input,
    gib: u64,
    runs: u32,
    progress: &mut Progress,
) -> anyhow::Result<InputResult> {
    let s3 = &context.endpoint.s3;
    let bytes = gib.checked_mul(1 << 30).context("--big-gib is too large")?;
    let name = format!("big-{}", source.name);
    let key = format!("incoming/{name}");
    progress.line(format_args!(
        "{name}: streaming {} repeated to {gib} GiB into s3://{BUCKET}/{key}",
        source.name
    ));
    let mut reader = Repeated::new(&source.path, bytes)?;
    let uploaded = s3.upload(BUCKET, &key, &mut reader)?;
    anyhow::ensure!(
        uploaded == bytes,
        "uploaded {uploaded} bytes of {bytes} for {key}"
    );

    let mut result = new_result(context, Contender::EndToEnd("zip"));
    for run in 1..=runs {
        let measured = end_to_end(context, "zip", &key, bytes, Cores::All);
        record(progress, &name, &mut result, run, runs, measured);
        if result.error.is_some() {
            break;
        }
    }
    s3.delete(BUCKET, &key)?;
    s3.delete_prefix(BUCKET, &output_prefix("zip"))?;
    Ok(InputResult {
        name,
        bytes,
        streamed: true,
        contenders: vec![result],
    })
}

/// A contender's results, before its first run.
fn new_result(context: &Context, contender: Contender) -> ContenderResult {
    ContenderResult {
        name: contender.name(),
        kind: contender.kind(),
        format: contender.format(),
        cpu: contender.one_core().then_some(context.one_core.cpu),
        runs: Vec::new(),
        error: None,
    }
}

/// Which CPUs a measured process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cores {
    /// Every CPU the bench may use.
    All,
    /// [`OneCore::cpu`] alone, the bench's threads moved off it meanwhile.
    One,
}

impl Cores {
    fn of(contender: Contender) -> Self {
        if contender.one_core() {
            Cores::One
        } else {
            Cores::All
        }
    }
}

/// Whether `codec` also proves its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Off,
    On,
}

/// Measures `command` on the CPUs `cores` says.
fn measure(
    context: &Context,
    command: &Command,
    stdout: Option<&Path>,
    cores: Cores,
) -> anyhow::Result<Sample> {
    match cores {
        Cores::All => context.measurer.measure(command, stdout, None),
        Cores::One => {
            let _moved = context.one_core.clear_for_measurement()?;
            context
                .measurer
                .measure(command, stdout, Some(context.one_core.cpu))
        }
    }
}

/// Adds a run to `result` and reports it, or records why it failed (its later runs are then
/// skipped).
fn record(
    progress: &mut Progress,
    input: &str,
    result: &mut ContenderResult,
    run: u32,
    runs: u32,
    measured: anyhow::Result<Run>,
) {
    let contender = &result.name;
    match measured {
        Ok(measured) => {
            progress.line(format_args!(
                "{input}  {contender}  run {run}/{runs}: {:.1} MB/s, ratio {:.2}, peak RSS {:.1} MiB, {:.2} s",
                measured.mb_per_s,
                measured.ratio,
                measured.maxrss_kib as f64 * KIB / MIB,
                measured.wall_s
            ));
            result.runs.push(measured);
        }
        Err(error) => {
            progress.line(format_args!(
                "FAILED: {input}  {contender}  run {run}/{runs}: {error:#}"
            ));
            result.error = Some(format!("run {run}: {error:#}"));
        }
    }
}

/// `s3-compressor --config CFG compress s3://BUCKET/KEY`, its output removed first so the
/// worker compresses rather than finding its earlier output.
fn end_to_end(
    context: &Context,
    format: &str,
    key: &str,
    bytes: u64,
    cores: Cores,
) -> anyhow::Result<Run> {
    let s3 = &context.endpoint.s3;
    let prefix = output_prefix(format);
    s3.delete_prefix(BUCKET, &prefix)?;
    let config = context
        .configs
        .get(format)
        .with_context(|| format!("no config for {format}"))?;
    let mut command = Command::new(&context.binary);
    context.endpoint.point_at(&mut command);
    command
        .arg("--config")
        .arg(config)
        .arg("compress")
        .arg(format!("s3://{BUCKET}/{key}"));
    let cpu_before = own_cpu_s()?;
    let sample = measure(context, &command, None, cores)?;
    let endpoint_cpu_s = own_cpu_s()? - cpu_before;
    let outputs = s3.list(BUCKET, &prefix)?;
    let [output] = outputs.as_slice() else {
        bail!(
            "expected one output under {prefix} after {}, found {outputs:?}",
            describe(&command)
        );
    };
    let size = s3.head_size(BUCKET, &output.key)?;
    Ok(Run {
        endpoint_cpu_s: Some(endpoint_cpu_s),
        ..Run::new(bytes, &sample, size)
    })
}

/// `s3-compressor-bench codec --format FORMAT [--prove] INPUT OUTPUT`.
fn codec(
    context: &Context,
    format: &str,
    input: &Input,
    proof: Proof,
    cores: Cores,
) -> anyhow::Result<Run> {
    let output = context.local.join(format!("codec.{format}"));
    remove_if_present(&output)?;
    let mut command = Command::new(&context.exe);
    command.args(["codec", "--format", format]);
    if proof == Proof::On {
        command.arg("--prove");
    }
    command.arg(&input.path).arg(&output);
    let sample = measure(context, &command, None, cores)?;
    let size = output_size(&output)?;
    remove_if_present(&output)?;
    Ok(Run::new(input.bytes, &sample, size))
}

/// A CLI tool; stream tools write to stdout, which the bench (not a shell) sends to a file.
fn tool_run(context: &Context, tool: Tool, input: &Input, cores: Cores) -> anyhow::Result<Run> {
    let extension = match tool {
        Tool::Zip => "zip",
        Tool::Gzip | Tool::Pigz => "gz",
        Tool::Zstd | Tool::ZstdT2 => "zst",
    };
    // zip adds to an existing archive, so start from none.
    let output = context.local.join(format!("tool.{extension}"));
    remove_if_present(&output)?;
    let (command, to_stdout) = tool.command(&input.path, &output);
    let sample = measure(
        context,
        &command,
        to_stdout.then_some(output.as_path()),
        cores,
    )?;
    let size = output_size(&output)?;
    remove_if_present(&output)?;
    Ok(Run::new(input.bytes, &sample, size))
}

fn output_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("no output at {}", path.display()))?
        .len())
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// How the numbers were taken, for the reader of results.md.
fn method_notes(runs: u32, one_core: &OneCore) -> Vec<String> {
    vec![
        format!(
            "Every number is the median of {runs} run(s) on this machine in this run; runs are \
             interleaved (run 1 of every contender, then run 2, ...). MB/s counts input bytes, \
             MB = 10^6 bytes; ratio = input bytes / output bytes."
        ),
        "CPU s/GB: user + system CPU seconds of the measured process (`getrusage`, all its \
         threads) per GB of input, GB = 10^9 bytes, the median over the runs: what the work \
         costs whatever the number of cores, which is what a Lambda invocation pays for. For \
         the end-to-end contenders it is the worker process's CPU only: the embedded S3 \
         endpoint runs in the bench process and its CPU is not counted there (it is in \
         \"Where the end-to-end time goes\"; S3 does that work on its own machines)."
            .to_owned(),
        "End to end (e2e): the measured process is `s3-compressor --config CFG compress \
         s3://bench/incoming/NAME` (GET, compress, multipart upload, HEAD verify; the source is \
         kept). The S3 endpoint it talks to is the embedded `s3-compressor-serve` endpoint \
         running inside the bench process on 127.0.0.1, objects stored as files: it is a real S3 \
         endpoint, and its CPU time (serving the GET and the parts, SigV4, MD5 and checksums) \
         competes with the worker for the same cores, so it is part of the e2e cost; its memory \
         is not in the worker's peak RSS."
            .to_owned(),
        "Codec only: `s3-compressor-bench codec`, the same registry, options and \
         `Compressor::compress` call the worker makes, on the local file with 1 MiB buffered \
         reads and writes."
            .to_owned(),
        "Lambda cost per TB (an estimate, x86_64, us-east-1, first pricing tier): Lambda \
         allocates CPU in proportion to memory, one full vCPU at 1,769 MB, so a CPU-bound \
         invocation of memory M ≤ 1,769 MB runs about CPU_s × 1769/M seconds, billed at M/1024 \
         GB × $0.0000166667 per GB-second: cost = CPU_s × 1769/1024 × $0.0000166667, the same \
         at 512 MB and at 1,769 MB for a CPU-bound worker (at 1,769 MB the worker's second \
         thread gets no second vCPU); both columns are shown to make that point. CPU_s is the \
         worker's median CPU time; wall s/GB at 512 MB = CPU s/GB × 1769/512, the timeout an \
         object needs (900 s at most). Requests add $0.20 per million, one per object: for \
         objects of a GB or more that is negligible ($0.0002 per TB of 1 GB objects), so the \
         $/TB columns are the compute part alone. Time spent waiting on S3 and cold starts are \
         not in the estimate."
            .to_owned(),
        one_core_note(one_core),
        "CLI tools: the tools as a user runs them; stream tools write to stdout, which the bench \
         sends to a file itself (no shell)."
            .to_owned(),
        "Peak RSS: `ru_maxrss` of `getrusage(RUSAGE_CHILDREN)` in a fresh `s3-compressor-bench \
         measure` process whose only child is the measured command, so it is exactly that \
         command's peak. Wall time: spawn to exit, as that process sees it."
            .to_owned(),
        "Page cache: each input file was read once before its measurements, so every contender \
         reads it from memory; the endpoint's stored copy was just written and is cached too."
            .to_owned(),
        "Many small objects: `s3-compressor serve` (default config: zip, sources deleted) as a \
         separate process; the files are uploaded with 16 PutObjects in flight and the outputs \
         listed every 50 ms; objects/s = files / (first upload start to the listing that \
         shows every output); a run with no new output for 60 s is reported as stalled. Its \
         peak RSS is VmHWM from /proc/PID/status after all runs."
            .to_owned(),
        format!(
            "{} clients at once: a fresh `s3-compressor serve`; {0} threads, each with an S3 \
             client of its own, upload every file of the corpus (the large inputs first, in \
             parts of {} MiB, then the small files), each thread one file at a time, timed \
             until a listing shows every output. serve's peak RSS is VmHWM from \
             /proc/PID/status at the end.",
            crate::small::CLIENTS,
            crate::s3::PART_SIZE >> 20
        ),
        "Start-up: `s3-compressor lambda` with AWS_LAMBDA_RUNTIME_API pointing at a socket the \
         bench listens on, from spawn to the first accepted connection; median of 5 after one \
         uncounted run; measured first, before anything else loads the machine."
            .to_owned(),
    ]
}

/// How the one-core contenders ran, and where the endpoint was meanwhile.
fn one_core_note(one_core: &OneCore) -> String {
    let cpu = one_core.cpu;
    let bench = if one_core.others.is_empty() {
        format!(
            "this machine lets the bench use CPU {cpu} only, so the embedded S3 endpoint shared \
             it with the e2e worker"
        )
    } else {
        let others: Vec<String> = one_core.others.iter().map(usize::to_string).collect();
        format!(
            "meanwhile every thread of the bench process, the embedded S3 endpoint's among them, \
             was moved to CPU {} (`sched_setaffinity` on each of /proc/self/task/*) and moved \
             back after",
            others.join(",")
        )
    };
    format!(
        "One core (`(e2e, 1 core)`, `(1 core)`): the measured process runs on CPU {cpu} alone, \
         as `taskset -c {cpu} CMD` runs it (`measure` sets its CPU affinity before it starts the \
         command, which inherits it); Rust's `available_parallelism` honours it, so the worker \
         and the codec use one thread, as in a Lambda function of up to 1,769 MB (one vCPU); \
         {bench}."
    )
}

fn write_outputs(out: &Path, results: &Results) -> anyhow::Result<()> {
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    let markdown = out.join("results.md");
    std::fs::write(&markdown, crate::report::markdown(results))
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    let svg = out.join("throughput.svg");
    crate::chart::throughput(&svg, results)
        .with_context(|| format!("cannot draw {}", svg.display()))?;
    Ok(())
}
