//! `s3-compressor backfill`: the objects already in a bucket, through the pipeline uploads take.
//!
//! The listing streams, a page at a time, into a short queue; objects a rule takes run a few at
//! a time through [`Worker::process`], exactly as an event's would, so a rerun recognises what
//! is done (its source is gone, or its output was made from it) and an interrupted run is
//! simply run again.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use s3_compressor_config::{IfNotWorthIt, NotWorthIt, SkipReason};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::outcome::saved_bytes;
use crate::store::S3Store;
use crate::{Decision, Outcome, Routes, Worker};

/// What `s3-compressor backfill` was asked to do.
#[derive(Debug)]
pub(crate) struct Options {
    pub url: String,
    pub dry_run: bool,
    pub concurrency: usize,
    pub limit: Option<u64>,
}

/// How often progress is logged when there is no terminal to draw a bar on.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Listed objects queued ahead of the workers: a page and a bit, so memory stays that of a
/// page whatever the bucket holds.
const LISTED_AHEAD: usize = 1_200;
/// Failures the summary names one by one; the log has every one.
const FAILURES_NAMED: usize = 20;

pub(crate) async fn run(
    options: Options,
    routes: Arc<Routes>,
    settings: crate::cli::Settings,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (bucket, prefix) = parse_bucket_url(&options.url)?;
    let prefixes = match &prefix {
        Some(prefix) => vec![prefix.clone()],
        None => routes.source_prefixes(),
    };
    let progress = Progress::new(options.dry_run);
    progress.init_logging();
    let store = Arc::new(S3Store::from_environment(settings.stall).await);
    let worker = Worker::new(
        Arc::clone(&store) as Arc<dyn crate::store::ObjectStore>,
        Arc::clone(&routes),
        settings.tuning,
    );
    let (found, mut listed) = mpsc::channel(LISTED_AHEAD);
    let lister = {
        let (bucket, prefixes) = (bucket.clone(), prefixes.clone());
        tokio::spawn(async move { store.list_into(&bucket, &prefixes, found).await })
    };

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut running = JoinSet::new();
    let mut listing_open = true;
    let mut stop = Stop::No;
    let mut interrupts = signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?;
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    loop {
        let limit_reached = options.limit.is_some_and(|limit| tally.taken >= limit);
        if running.is_empty() && (!listing_open || stop != Stop::No || limit_reached) {
            break;
        }
        tokio::select! {
            _ = interrupts.recv() => {
                stop = match stop {
                    Stop::No => {
                        progress.say(&format!(
                            "interrupted: finishing the {} objects in flight and starting no more \
                             (Ctrl-C again aborts them, leaving their sources untouched)",
                            running.len()
                        ));
                        Stop::Finishing
                    }
                    Stop::Finishing | Stop::Aborting => {
                        progress.say("aborting the objects in flight; their sources stay as they are");
                        running.abort_all();
                        Stop::Aborting
                    }
                };
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                tally.record(done);
                progress.update(&tally);
            }
            item = listed.recv(),
                if listing_open && stop == Stop::No && !limit_reached
                    && running.len() < options.concurrency =>
            {
                let Some(item) = item else {
                    listing_open = false;
                    continue;
                };
                let listed = match item {
                    Ok(listed) => listed,
                    Err(error) => {
                        tally.listing_failed = Some(error.to_string());
                        listing_open = false;
                        continue;
                    }
                };
                tally.found += 1;
                tally.bytes_found += listed.size.unwrap_or(0);
                match routes.decide(&listed.key, listed.size) {
                    Decision::Keep { reason, .. } => {
                        *tally.kept.entry(kept_label(&reason)).or_default() += 1;
                        if options.dry_run {
                            writeln!(out, "{}: kept: {reason}", listed.key)?;
                        }
                    }
                    Decision::Move { plan, reason } if options.dry_run => {
                        tally.count_moved(&reason, listed.size.unwrap_or(0));
                        writeln!(out, "{}: moved: {reason} -> {}", listed.key, plan.output_key)?;
                    }
                    Decision::Skip(reason) => {
                        *tally.skipped.entry(skip_label(&reason)).or_default() += 1;
                        if options.dry_run {
                            writeln!(out, "{}: skipped: {reason}", listed.key)?;
                        }
                    }
                    Decision::Refuse(reason) => {
                        if options.dry_run {
                            writeln!(out, "{}: refused: {reason}", listed.key)?;
                        }
                        tally.failed.push((listed.key, Outcome::permanent(reason)));
                    }
                    Decision::Compress(plan) if options.dry_run => {
                        tally.taken += 1;
                        writeln!(out, "{}", describe_plan(&listed.key, &plan))?;
                    }
                    // Moved or compressed by the pipeline, which judges the content first.
                    Decision::Move { .. } | Decision::Compress(_) => {
                        tally.taken += 1;
                        let worker = worker.clone();
                        let object = listed.in_bucket(&bucket);
                        running.spawn(async move {
                            let outcome = worker.process(&object, None).await;
                            (object.key, outcome)
                        });
                    }
                }
                progress.update(&tally);
            }
            _ = ticks.tick() => progress.log(&tally, started.elapsed()),
        }
    }
    // Dropping the receiver stops the lister at its next object.
    drop(listed);
    lister.abort();
    if stop == Stop::Aborting && !worker.settle(crate::pipeline::ABORT_WAIT).await {
        progress.say(
            "some stopped uploads were not aborted in time; the bucket's lifecycle rule removes \
             them, and so does the next run that compresses those keys",
        );
    }
    progress.finish();

    let place = match &prefix {
        Some(prefix) => format!("s3://{bucket}/{prefix}"),
        None => format!("s3://{bucket} ({})", prefixes.join(", ")),
    };
    tally.write_summary(out, &place, options.dry_run, stop, started.elapsed())?;
    out.flush()?;
    if let Some(error) = &tally.listing_failed {
        anyhow::bail!("the listing failed: {error}");
    }
    anyhow::ensure!(
        tally.failed.is_empty() && tally.aborted == 0,
        "{} objects failed and {} were aborted; rerun to try them again",
        tally.failed.len(),
        tally.aborted
    );
    anyhow::ensure!(
        stop == Stop::No,
        "interrupted; rerun to go on where this run stopped"
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// The first Ctrl-C: what is in flight finishes, nothing new starts.
    Finishing,
    /// The second: what is in flight is abandoned (uploads aborted, sources untouched).
    Aborting,
}

/// `s3://BUCKET`, `s3://BUCKET/` or `s3://BUCKET/PREFIX`.
pub(crate) fn parse_bucket_url(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let rest = url
        .strip_prefix("s3://")
        .with_context(|| format!("expected s3://BUCKET or s3://BUCKET/PREFIX, got {url:?}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(
        !bucket.is_empty(),
        "expected s3://BUCKET or s3://BUCKET/PREFIX, got {url:?} (no bucket)"
    );
    Ok((
        bucket.to_owned(),
        Some(prefix.to_owned()).filter(|prefix| !prefix.is_empty()),
    ))
}

fn describe_plan(key: &str, plan: &crate::Plan<'_>) -> String {
    // Content is judged on the first bytes read, which a dry run does not read.
    let unless = match plan.rule.if_not_worth_it {
        IfNotWorthIt::Compress => String::new(),
        IfNotWorthIt::Keep => {
            "; kept instead if its first bytes show compressed content".to_owned()
        }
        IfNotWorthIt::Move => format!(
            "; moved unchanged to {} instead if its first bytes show compressed content",
            plan.rule.moved_key(key)
        ),
    };
    format!(
        "{key} -> {} (rule {}, {}, source {}{unless})",
        plan.output_key,
        plan.rule.prefix,
        crate::commands::describe_compression(plan.compressor),
        crate::commands::describe_source_handling(plan.rule)
    )
}

/// What the summary counts a kept object under: the kind of content, or the size limit.
pub(crate) fn kept_label(reason: &NotWorthIt) -> String {
    match reason {
        NotWorthIt::AlreadyCompressed { kind } => format!("already compressed ({kind})"),
        NotWorthIt::BelowMinSize { min_size, .. } => format!("below min_size {min_size}"),
        NotWorthIt::DoesNotShrink { .. } => "does not shrink".to_owned(),
    }
}

pub(crate) fn skip_label(reason: &SkipReason) -> String {
    match reason {
        SkipReason::FolderMarker => "folder marker".to_owned(),
        SkipReason::UnderOutputPrefix { output_prefix } => {
            format!("output (under {output_prefix})")
        }
        SkipReason::NoMatchingRule => "no rule matches".to_owned(),
    }
}

/// What the run has seen so far.
#[derive(Debug, Default)]
struct Tally {
    found: u64,
    bytes_found: u64,
    /// Objects a rule takes, started (or printed, in a dry run).
    taken: u64,
    compressed: u64,
    bytes_in: u64,
    bytes_out: u64,
    already_done: u64,
    superseded: u64,
    gone: u64,
    /// Only an invocation with a deadline hands objects off, and a backfill has none; counted
    /// all the same, should that change.
    handed_off: u64,
    skipped: BTreeMap<String, u64>,
    /// Objects whose compression would not pay, by why.
    kept: BTreeMap<String, u64>,
    /// Objects moved unchanged since their compression would not pay, by why: how many, and
    /// their bytes.
    moved: BTreeMap<String, (u64, u64)>,
    /// Each failed key with its outcome.
    failed: Vec<(String, Outcome)>,
    aborted: u64,
    listing_failed: Option<String>,
}

impl Tally {
    fn count_moved(&mut self, reason: &NotWorthIt, bytes: u64) {
        let (count, moved) = self.moved.entry(kept_label(reason)).or_default();
        *count += 1;
        *moved += bytes;
    }

    fn record(&mut self, done: Result<(String, Outcome), tokio::task::JoinError>) {
        let (key, outcome) = match done {
            Ok(done) => done,
            Err(error) if error.is_cancelled() => {
                self.aborted += 1;
                return;
            }
            Err(error) => {
                let outcome = Outcome::permanent(format!("the object's task crashed: {error}"));
                self.failed.push(("(unknown)".to_owned(), outcome));
                return;
            }
        };
        match outcome {
            Outcome::Compressed {
                bytes_in,
                bytes_out,
                ..
            } => {
                self.compressed += 1;
                self.bytes_in += bytes_in;
                self.bytes_out += bytes_out;
            }
            Outcome::AlreadyDone { .. } => self.already_done += 1,
            Outcome::Superseded { .. } => self.superseded += 1,
            Outcome::SourceMissing => self.gone += 1,
            Outcome::HandedOff { .. } => self.handed_off += 1,
            Outcome::Kept(reason) => *self.kept.entry(kept_label(&reason)).or_default() += 1,
            Outcome::Moved { reason, bytes, .. } => self.count_moved(&reason, bytes),
            Outcome::Skipped(reason) => *self.skipped.entry(reason).or_default() += 1,
            failed @ Outcome::Failed { .. } => self.failed.push((key, failed)),
        }
    }

    /// Objects finished one way or another (skips included).
    fn done(&self) -> u64 {
        self.compressed
            + self.already_done
            + self.superseded
            + self.gone
            + self.handed_off
            + self.skipped.values().sum::<u64>()
            + self.kept.values().sum::<u64>()
            + self.moved.values().map(|(count, _)| count).sum::<u64>()
            + self.failed.len() as u64
            + self.aborted
    }

    fn write_summary(
        &self,
        out: &mut dyn Write,
        place: &str,
        dry_run: bool,
        stop: Stop,
        elapsed: Duration,
    ) -> std::io::Result<()> {
        let how = match (dry_run, stop, &self.listing_failed) {
            (_, _, Some(_)) => "stopped: the listing failed",
            (true, _, _) => "dry run, nothing was changed",
            (false, Stop::No, None) => "finished",
            (false, Stop::Finishing, None) => "interrupted after the objects in flight finished",
            (false, Stop::Aborting, None) => "interrupted, objects in flight aborted",
        };
        writeln!(
            out,
            "backfill of {place}: {how} in {:.1} s",
            elapsed.as_secs_f64()
        )?;
        let mut rows: Vec<[String; 3]> = vec![[
            "found".to_owned(),
            self.found.to_string(),
            HumanBytes(self.bytes_found).to_string(),
        ]];
        if dry_run {
            rows.push([
                "would compress".to_owned(),
                self.taken.to_string(),
                String::new(),
            ]);
        } else {
            let ratio = if self.bytes_out > 0 {
                format!(
                    ", ratio {:.2}",
                    self.bytes_in as f64 / self.bytes_out as f64
                )
            } else {
                String::new()
            };
            // What the run freed, as the outcome of each object says it.
            let saved = match saved_bytes(self.bytes_in, self.bytes_out) {
                0 if self.compressed == 0 => String::new(),
                grown @ ..0 => format!(", {} larger", HumanBytes(grown.unsigned_abs())),
                saved => format!(", saved {}", HumanBytes(saved.unsigned_abs())),
            };
            rows.push([
                "compressed".to_owned(),
                self.compressed.to_string(),
                format!(
                    "{} -> {}{ratio}{saved}",
                    HumanBytes(self.bytes_in),
                    HumanBytes(self.bytes_out)
                ),
            ]);
            rows.push([
                "already done".to_owned(),
                self.already_done.to_string(),
                String::new(),
            ]);
            rows.push([
                "superseded by a newer upload".to_owned(),
                self.superseded.to_string(),
                String::new(),
            ]);
            rows.push([
                "gone since listed".to_owned(),
                self.gone.to_string(),
                String::new(),
            ]);
        }
        for (reason, count) in &self.kept {
            rows.push([format!("kept: {reason}"), count.to_string(), String::new()]);
        }
        for (reason, (count, bytes)) in &self.moved {
            rows.push([
                format!("moved: {reason}"),
                count.to_string(),
                format!("{}, saved 0", HumanBytes(*bytes)),
            ]);
        }
        for (reason, count) in &self.skipped {
            rows.push([
                format!("skipped: {reason}"),
                count.to_string(),
                String::new(),
            ]);
        }
        if !dry_run {
            let transient = self
                .failed
                .iter()
                .filter(|(_, outcome)| outcome.should_retry())
                .count();
            rows.push([
                "failed, may pass on a rerun".to_owned(),
                transient.to_string(),
                String::new(),
            ]);
            rows.push([
                "failed, needs a person".to_owned(),
                (self.failed.len() - transient).to_string(),
                String::new(),
            ]);
            if self.aborted > 0 {
                rows.push([
                    "aborted".to_owned(),
                    self.aborted.to_string(),
                    String::new(),
                ]);
            }
        }
        let width = rows
            .iter()
            .map(|row| row[0].chars().count())
            .max()
            .unwrap_or(0);
        let count_width = rows.iter().map(|row| row[1].len()).max().unwrap_or(0);
        for [label, count, detail] in &rows {
            let line = format!("  {label:<width$}  {count:>count_width$}  {detail}");
            writeln!(out, "{}", line.trim_end())?;
        }
        if !dry_run && elapsed.as_secs_f64() > 0.0 {
            let seconds = elapsed.as_secs_f64();
            writeln!(
                out,
                "  {:.1} objects/s, {}/s read",
                self.done() as f64 / seconds,
                HumanBytes((self.bytes_in as f64 / seconds) as u64)
            )?;
        }
        for (key, outcome) in self.failed.iter().take(FAILURES_NAMED) {
            writeln!(out, "failed: {key}: {outcome}")?;
        }
        if self.failed.len() > FAILURES_NAMED {
            writeln!(
                out,
                "and {} more failures (see the log)",
                self.failed.len() - FAILURES_NAMED
            )?;
        }
        if let Some(error) = &self.listing_failed {
            writeln!(out, "listing failed: {error}")?;
        }
        Ok(())
    }
}

/// A progress bar on a terminal, periodic log lines elsewhere.
enum Progress {
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    fn new(dry_run: bool) -> Self {
        // A dry run prints a line per object: a bar would only fight it.
        if dry_run || !std::io::stderr().is_terminal() {
            return Progress::Lines;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} objects, ETA {eta}, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// With a bar, only warnings and errors are logged by default, printed above the bar;
    /// without one, every object's line, as on Lambda.
    fn init_logging(&self) {
        match self {
            Progress::Bar(bar) => {
                let bar = bar.clone();
                crate::telemetry::init_logging_with(tracing::Level::WARN, move || {
                    AboveBar(bar.clone())
                });
            }
            Progress::Lines => crate::telemetry::init_logging(),
        }
    }

    fn update(&self, tally: &Tally) {
        if let Progress::Bar(bar) = self {
            bar.set_length(tally.found);
            bar.set_position(tally.done());
            bar.set_message(format!(
                "{} of {} read, {} failed",
                HumanBytes(tally.bytes_in),
                HumanBytes(tally.bytes_found),
                tally.failed.len()
            ));
        }
    }

    fn log(&self, tally: &Tally, elapsed: Duration) {
        if let Progress::Lines = self {
            tracing::info!(
                found = tally.found,
                done = tally.done(),
                compressed = tally.compressed,
                failed = tally.failed.len(),
                bytes_in = tally.bytes_in,
                bytes_found = tally.bytes_found,
                seconds = elapsed.as_secs(),
                "backfill progress"
            );
        }
    }

    /// A message for the person at the terminal (or the log).
    fn say(&self, message: &str) {
        match self {
            Progress::Bar(bar) => bar.println(message),
            Progress::Lines => tracing::warn!("{message}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Writes log lines above the progress bar instead of through it.
pub(crate) struct AboveBar(pub(crate) ProgressBar);

impl Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::{parse_bucket_url, Stop, Tally};
    use crate::outcome::tests::compressed;
    use crate::Outcome;

    fn summary(outcomes: &[Outcome]) -> String {
        let mut tally = Tally::default();
        for outcome in outcomes {
            tally.record(Ok(("incoming/a.csv".into(), outcome.clone())));
        }
        let mut out = Vec::new();
        tally
            .write_summary(&mut out, "s3://files", false, Stop::No, Duration::ZERO)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The compressed row says what the run freed, and says so plainly when outputs grew.
    #[test]
    fn the_summary_says_what_the_run_saved() {
        let saved = summary(&[compressed(3 << 20, 1 << 20), compressed(1 << 20, 0)]);
        assert!(
            saved.contains("4.00 MiB -> 1.00 MiB, ratio 4.00, saved 3.00 MiB"),
            "{saved}"
        );
        let grown = summary(&[compressed(10, 130)]);
        assert!(
            grown.contains("10 B -> 130 B, ratio 0.08, 120 B larger"),
            "{grown}"
        );
        let none = summary(&[]);
        assert!(
            !none.contains("saved") && !none.contains("larger"),
            "{none}"
        );
    }

    #[test]
    fn bucket_urls_name_a_bucket_and_maybe_a_prefix() {
        let parsed = |url: &str| parse_bucket_url(url).map_err(|error| error.to_string());
        assert_eq!(parsed("s3://files").ok(), Some(("files".into(), None)));
        assert_eq!(parsed("s3://files/").ok(), Some(("files".into(), None)));
        assert_eq!(
            parsed("s3://files/incoming/2024/").ok(),
            Some(("files".into(), Some("incoming/2024/".into())))
        );
        assert!(parsed("files/incoming").is_err_and(|error| error.contains("expected s3://")));
        assert!(parsed("s3:///incoming").is_err_and(|error| error.contains("no bucket")));
    }
}
