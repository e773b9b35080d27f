//! `s3-compressor estimate`: what compressing a bucket would save, from a bounded sample,
//! before anything is deployed. It writes nothing.
//!
//! The listing is `backfill`'s, routed by the same rules and policy. The objects a rule would
//! compress are grouped by rule and size class; within each group the first bytes of up to
//! [`SNIFF_PER_GROUP`] objects tell their content kind (content.rs), which splits the group
//! into strata. Each stratum gets a share of the read budget by its bytes (every stratum at
//! least one object while the budget lasts); each object sampled goes through the rule's own
//! policy and codec, whole or in a few windows ([`sample::ranges`]). The sample's ratio of
//! output to input bytes extrapolates to the rest of its stratum ([`model::extrapolate`]),
//! and prices come from the config's `[prices]`.

mod model;
mod report;
mod sample;

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use s3_compressor_config::StorageClass;
use tokio::sync::mpsc;

use crate::store::{S3Store, StoreError};
use crate::{Decision, Routes};
use model::CostModel;
use sample::Sampled;

/// What `s3-compressor estimate` was asked to do.
#[derive(Debug)]
pub(crate) struct Options {
    pub url: String,
    pub json: bool,
    /// The most of the listed bytes it may read, in percent.
    pub sample_percent: f64,
    /// The most bytes it may read, whatever the percentage allows.
    pub sample_bytes: u64,
    pub lambda_memory_mb: u32,
    pub horizon_months: f64,
    pub concurrency: usize,
}

/// Objects of one group (rule and size class) whose first bytes are read for their kind: past
/// this many, the kinds' shares are taken from these.
const SNIFF_PER_GROUP: usize = 256;
/// How much of an object's start tells its kind: every signature, and enough text to judge it.
const SNIFF_MAX: u64 = 256;
const SNIFF_MIN: u64 = 16;
/// The share of the budget the kinds may take.
const SNIFF_SHARE: f64 = 0.25;
/// The sample is chosen the same way on every run: a run can be repeated and compared.
const SEED: u64 = 0x5eed_e571_3a7e;

/// The size classes objects are grouped by, as upper bounds: 16 KiB, 128 KiB (the
/// infrequent-access classes' minimum), 1 MiB, 16 MiB, 128 MiB, 1 GiB, and above.
const SIZE_CLASSES: [u64; 6] = [16 << 10, 128 << 10, 1 << 20, 16 << 20, 128 << 20, 1 << 30];

fn size_class(size: u64) -> usize {
    SIZE_CLASSES
        .iter()
        .position(|&bound| size < bound)
        .unwrap_or(SIZE_CLASSES.len())
}

/// What the listing and the rules make of one object.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Not the rules' business: a folder marker, an output, no rule; with the summary's label.
    NotRouted(String),
    /// Its rule keeps it without reading it (smaller than `min_size`), or a rule takes it but
    /// its output cannot exist (refused): either way it stays as it is.
    Unchanged(String),
    /// Its rule moves it unchanged without reading it (smaller than `min_size`): its bytes stay
    /// what they are, but the copy is a request paid once.
    Moved(String),
    /// In Glacier Flexible Retrieval or Deep Archive: the worker fails it until it is restored.
    Archived { rule: usize },
    /// A rule would read it.
    Candidate { rule: usize },
}

#[derive(Debug)]
struct Object {
    key: String,
    size: u64,
    class: StorageClass,
    fate: Fate,
    /// Its content kind, once its first bytes were read.
    kind: Option<&'static str>,
    /// Its first bytes, once read, so that reading it whole later reads only the rest.
    head: Bytes,
    /// Kept by its rule's policy for its kind, without a sample (exact).
    kept_as_compressed: bool,
    sampled: Option<Sampled>,
}

/// The reads made, for the report and its budget.
#[derive(Debug, Default, Clone, Copy)]
struct Reads {
    bytes: u64,
    requests: u64,
    failed: u64,
}

pub(crate) async fn run(
    options: Options,
    routes: Arc<Routes>,
    stall: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (bucket, prefix) = crate::backfill::parse_bucket_url(&options.url)?;
    let prefixes = match &prefix {
        Some(prefix) => vec![prefix.clone()],
        None => routes.source_prefixes(),
    };
    let progress = Progress::new();
    progress.init_logging();
    let store = Arc::new(S3Store::from_environment(stall).await);

    let mut objects = list(&store, &bucket, &prefixes, &routes, &progress).await?;
    let candidates: u64 = objects
        .iter()
        .filter(|object| matches!(object.fate, Fate::Candidate { .. }))
        .map(|object| object.size)
        .sum();
    let budget =
        ((candidates as f64 * options.sample_percent / 100.0) as u64).min(options.sample_bytes);
    let reader = Reader {
        store: Arc::clone(&store),
        bucket: bucket.clone(),
        concurrency: options.concurrency,
    };
    let mut rng = SplitMix(SEED);
    let groups = groups(&objects, &mut rng);
    let mut reads = sniff(&reader, &mut objects, &groups, budget, &routes, &progress).await;
    let plan = allocate(&objects, &groups, budget.saturating_sub(reads.bytes));
    sample_objects(&reader, &mut objects, &plan, &routes, &mut reads, &progress).await;
    progress.finish();

    let model = CostModel {
        prices: *routes.config().prices(),
        lambda_memory_mb: options.lambda_memory_mb,
    };
    let estimate = report::Estimate::build(
        &objects_view(&objects),
        &routes,
        &model,
        options.horizon_months,
    );
    let place = match &prefix {
        Some(prefix) => format!("s3://{bucket}/{prefix}"),
        None => format!("s3://{bucket} ({})", prefixes.join(", ")),
    };
    let run = report::Run {
        place,
        config: routes.config().origin().to_owned(),
        budget,
        bytes_read: reads.bytes,
        requests: reads.requests,
        failed_reads: reads.failed,
        seconds: started.elapsed().as_secs_f64(),
        lambda_memory_mb: options.lambda_memory_mb,
        horizon_months: options.horizon_months,
    };
    if options.json {
        report::write_json(out, &run, &estimate, &model)?;
    } else {
        report::write_human(out, &run, &estimate)?;
    }
    out.flush()?;
    Ok(())
}

/// The listing, routed: what each object is to the rules.
async fn list(
    store: &Arc<S3Store>,
    bucket: &str,
    prefixes: &[String],
    routes: &Routes,
    progress: &Progress,
) -> anyhow::Result<Vec<Object>> {
    let (found, mut listed) = mpsc::channel(1_200);
    let lister = {
        let (store, bucket, prefixes) = (Arc::clone(store), bucket.to_owned(), prefixes.to_vec());
        tokio::spawn(async move { store.list_into(&bucket, &prefixes, found).await })
    };
    progress.phase("listing", 0);
    let mut objects = Vec::new();
    while let Some(item) = listed.recv().await {
        let listed = item.map_err(|error| anyhow::anyhow!("the listing failed: {error}"))?;
        let size = listed.size.unwrap_or(0);
        let class = StorageClass::from_s3(listed.storage_class.as_deref());
        let fate = match routes.decide(&listed.key, Some(size)) {
            Decision::Skip(reason) => Fate::NotRouted(crate::backfill::skip_label(&reason)),
            Decision::Keep { reason, .. } => {
                Fate::Unchanged(format!("kept: {}", crate::backfill::kept_label(&reason)))
            }
            Decision::Move { reason, .. } => {
                Fate::Moved(format!("moved: {}", crate::backfill::kept_label(&reason)))
            }
            Decision::Refuse(_) => Fate::Unchanged("refused: output key too long".to_owned()),
            Decision::Compress(plan) => {
                let rule = rule_index(routes, plan.rule);
                if class.is_archived() {
                    Fate::Archived { rule }
                } else {
                    Fate::Candidate { rule }
                }
            }
        };
        objects.push(Object {
            key: listed.key,
            size,
            class,
            fate,
            kind: None,
            head: Bytes::new(),
            kept_as_compressed: false,
            sampled: None,
        });
        progress.tick(objects.len() as u64);
    }
    lister.await?;
    Ok(objects)
}

fn rule_index(routes: &Routes, rule: &s3_compressor_config::Rule) -> usize {
    routes
        .config()
        .rules()
        .iter()
        .position(|candidate| std::ptr::eq(candidate, rule))
        .unwrap_or(0)
}

/// The candidates of each (rule, size class), in a random order: the first of each are the
/// ones read.
fn groups(objects: &[Object], rng: &mut SplitMix) -> BTreeMap<(usize, usize), Vec<usize>> {
    let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        if let Fate::Candidate { rule } = object.fate {
            groups
                .entry((rule, size_class(object.size)))
                .or_default()
                .push(index);
        }
    }
    for members in groups.values_mut() {
        rng.shuffle(members);
    }
    groups
}

/// Reads the first bytes of up to [`SNIFF_PER_GROUP`] objects of each group, within a quarter
/// of the budget: their kinds, and for a rule that keeps compressed content, whether it keeps
/// them. An object no longer than what is read is measured on the spot.
async fn sniff(
    reader: &Reader,
    objects: &mut [Object],
    groups: &BTreeMap<(usize, usize), Vec<usize>>,
    budget: u64,
    routes: &Routes,
    progress: &Progress,
) -> Reads {
    let allowance = (budget as f64 * SNIFF_SHARE) as u64;
    let wanted: usize = groups
        .values()
        .map(|members| members.len().min(SNIFF_PER_GROUP))
        .sum();
    // As many as SNIFF_MIN bytes each allow, spread over the groups by their share.
    let affordable = usize::try_from(allowance / SNIFF_MIN).unwrap_or(usize::MAX);
    let scale = if wanted > affordable {
        affordable as f64 / wanted as f64
    } else {
        1.0
    };
    let chosen: Vec<usize> = groups
        .values()
        .flat_map(|members| {
            let take = (members.len().min(SNIFF_PER_GROUP) as f64 * scale) as usize;
            members.iter().take(take).copied()
        })
        .collect();
    let head = (allowance / (chosen.len().max(1) as u64)).clamp(SNIFF_MIN, SNIFF_MAX);
    progress.phase("reading first bytes", chosen.len() as u64);
    let requests: Vec<ReadRequest> = chosen
        .iter()
        .map(|&index| {
            let object = &objects[index];
            (index, object.key.clone(), vec![(0, head.min(object.size))])
        })
        .collect();
    let mut reads = Reads::default();
    let results = reader.read_all(requests, progress, &mut reads).await;
    for (index, windows) in results {
        let object = &mut objects[index];
        let first = windows.first().cloned().unwrap_or_default();
        object.kind = Some(sample::kind_of(&first));
        let Fate::Candidate { rule } = object.fate else {
            continue;
        };
        let Some((rule, compressor)) = routes.rules().nth(rule) else {
            continue;
        };
        if rule
            .spares_content(s3_compressor_formats::already_compressed(&first))
            .is_some()
        {
            object.kept_as_compressed = true;
        } else if first.len() as u64 == object.size {
            object.sampled =
                Some(sample::measure(rule, compressor, &object.key, object.size, windows).await);
        } else {
            object.head = first;
        }
    }
    reads
}

/// A stratum: the objects of one rule, size class and kind whose kind is known.
type StratumKey = (usize, usize, &'static str);

fn stratum_of(object: &Object) -> Option<StratumKey> {
    match (&object.fate, object.kind) {
        (Fate::Candidate { rule }, Some(kind)) if !object.kept_as_compressed => {
            Some((*rule, size_class(object.size), kind))
        }
        _ => None,
    }
}

/// The objects to sample: every stratum's first object while the budget lasts (the largest
/// strata first), then each stratum up to its share of the budget by its bytes, then, with
/// what is left, more of each in turn.
fn allocate(
    objects: &[Object],
    groups: &BTreeMap<(usize, usize), Vec<usize>>,
    budget: u64,
) -> Vec<(usize, u64)> {
    // Each stratum's members in the group's random order, and its bytes scaled up by the
    // share of its group whose kind is known.
    let mut strata: BTreeMap<StratumKey, (Vec<usize>, f64)> = BTreeMap::new();
    for ((_, _), members) in groups {
        let known: u64 = members
            .iter()
            .filter(|&&index| objects[index].kind.is_some())
            .map(|&index| objects[index].size)
            .sum();
        let all: u64 = members.iter().map(|&index| objects[index].size).sum();
        let scale = if known == 0 {
            0.0
        } else {
            all as f64 / known as f64
        };
        for &index in members {
            if let Some(key) = stratum_of(&objects[index]) {
                let entry = strata.entry(key).or_default();
                entry.0.push(index);
                entry.1 += objects[index].size as f64 * scale;
            }
        }
    }
    let total: f64 = strata.values().map(|(_, bytes)| bytes).sum();
    let cost = |index: usize, windows: u64| -> u64 {
        to_read(&objects[index], windows)
            .iter()
            .map(|(_, len)| len)
            .sum()
    };
    let mut order: Vec<&StratumKey> = strata.keys().collect();
    order.sort_by(|a, b| strata[*b].1.total_cmp(&strata[*a].1));
    let mut left = budget;
    let mut spent: BTreeMap<StratumKey, u64> = BTreeMap::new();
    let mut next: BTreeMap<StratumKey, usize> = BTreeMap::new();
    let mut chosen = Vec::new();
    // Takes the stratum's next object not measured already, read in `windows` if it is large,
    // if `limit` allows; false when none.
    let mut take = |key: &StratumKey,
                    windows: u64,
                    limit: u64,
                    left: &mut u64,
                    chosen: &mut Vec<(usize, u64)>| {
        let members = &strata[key].0;
        let position = next.entry(*key).or_default();
        while *position < members.len() && objects[members[*position]].sampled.is_some() {
            *position += 1;
        }
        let Some(&index) = members.get(*position) else {
            return false;
        };
        let price = cost(index, windows);
        let spent = spent.entry(*key).or_default();
        if price > *left || *spent + price > limit {
            return false;
        }
        *left -= price;
        *spent += price;
        *position += 1;
        chosen.push((index, windows));
        true
    };
    for key in &order {
        let measured = strata[*key]
            .0
            .iter()
            .any(|&index| objects[index].sampled.is_some());
        if !measured {
            take(key, sample::FIRST_WINDOWS, u64::MAX, &mut left, &mut chosen);
        }
    }
    for key in &order {
        let share = if total > 0.0 {
            (budget as f64 * strata[*key].1 / total) as u64
        } else {
            0
        };
        while take(key, sample::WINDOWS, share, &mut left, &mut chosen) {}
    }
    let mut more = true;
    while more {
        more = false;
        for key in &order {
            more |= take(key, sample::WINDOWS, u64::MAX, &mut left, &mut chosen);
        }
    }
    chosen
}

async fn sample_objects(
    reader: &Reader,
    objects: &mut [Object],
    plan: &[(usize, u64)],
    routes: &Routes,
    reads: &mut Reads,
    progress: &Progress,
) {
    let requests: Vec<ReadRequest> = plan
        .iter()
        .map(|&(index, windows)| {
            let object = &objects[index];
            (index, object.key.clone(), to_read(object, windows))
        })
        .collect();
    progress.phase("sampling", plan.len() as u64);
    for (index, mut windows) in reader.read_all(requests, progress, reads).await {
        let object = &mut objects[index];
        if object.size <= sample::WHOLE_MAX && !object.head.is_empty() {
            let mut whole = object.head.to_vec();
            whole.extend(windows.iter().flatten());
            windows = vec![Bytes::from(whole)];
        }
        let Fate::Candidate { rule } = object.fate else {
            continue;
        };
        let Some((rule, compressor)) = routes.rules().nth(rule) else {
            continue;
        };
        object.sampled =
            Some(sample::measure(rule, compressor, &object.key, object.size, windows).await);
    }
}

/// The ranges a sample of `object` reads: [`sample::ranges`], less the first bytes already read
/// of an object read whole.
fn to_read(object: &Object, windows: u64) -> Vec<(u64, u64)> {
    let head = if object.size <= sample::WHOLE_MAX {
        object.head.len() as u64
    } else {
        0
    };
    sample::ranges(object.size, windows)
        .into_iter()
        .map(|(start, len)| (start + head, len.saturating_sub(head)))
        .filter(|(_, len)| *len > 0)
        .collect()
}

/// What the report needs of each object.
fn objects_view(objects: &[Object]) -> Vec<report::ObjectView<'_>> {
    objects
        .iter()
        .map(|object| report::ObjectView {
            size: object.size,
            class: object.class,
            fate: match &object.fate {
                Fate::NotRouted(label) => report::ViewFate::NotRouted(label),
                Fate::Unchanged(label) => report::ViewFate::Unchanged(label),
                Fate::Moved(label) => report::ViewFate::Moved(label),
                Fate::Archived { rule } => report::ViewFate::Archived(*rule),
                Fate::Candidate { rule } => report::ViewFate::Candidate {
                    rule: *rule,
                    size_class: size_class(object.size),
                    kind: object.kind,
                    kept_as_compressed: object.kept_as_compressed,
                    sampled: object.sampled,
                },
            },
        })
        .collect()
}

/// An object to read: its index among the listed, its key, and the byte ranges to read.
type ReadRequest = (usize, String, Vec<(u64, u64)>);

/// Ranged reads, a few at a time.
struct Reader {
    store: Arc<S3Store>,
    bucket: String,
    concurrency: usize,
}

impl Reader {
    /// Reads each object's ranges; an object whose read fails is left out (counted), and the
    /// estimate extrapolates over it as over any object not read.
    async fn read_all(
        &self,
        requests: Vec<ReadRequest>,
        progress: &Progress,
        reads: &mut Reads,
    ) -> Vec<(usize, Vec<Bytes>)> {
        let mut results = Vec::with_capacity(requests.len());
        let mut stream = futures::stream::iter(requests)
            .map(|(index, key, ranges)| async move {
                let read = futures::stream::iter(ranges)
                    .then(|(start, len)| {
                        let key = key.clone();
                        async move {
                            if len == 0 {
                                return Ok::<_, StoreError>(Bytes::new());
                            }
                            self.store.get_range(&self.bucket, &key, start, len).await
                        }
                    })
                    .try_collect::<Vec<Bytes>>()
                    .await;
                (index, key, read)
            })
            .buffer_unordered(self.concurrency.max(1));
        while let Some((index, key, read)) = stream.next().await {
            match read {
                Ok(windows) => {
                    reads.requests += windows.iter().filter(|w| !w.is_empty()).count() as u64;
                    reads.bytes += windows.iter().map(|w| w.len() as u64).sum::<u64>();
                    results.push((index, windows));
                }
                Err(error) => {
                    reads.failed += 1;
                    tracing::warn!(key, %error, "could not read a sample; estimated without it");
                }
            }
            progress.advance(reads.bytes);
        }
        results
    }
}

/// splitmix64: a few lines of well-mixed, reproducible randomness for choosing the sample.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let pick = (self.next() % (last as u64 + 1)) as usize;
            items.swap(last, pick);
        }
    }
}

/// A progress bar on a terminal (stderr), nothing elsewhere.
struct Progress(ProgressBar);

impl Progress {
    fn new() -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self(ProgressBar::with_draw_target(None, target))
    }

    /// Warnings and errors only, above the bar.
    fn init_logging(&self) {
        let bar = self.0.clone();
        crate::telemetry::init_logging_with(tracing::Level::WARN, move || {
            crate::backfill::AboveBar(bar.clone())
        });
    }

    fn phase(&self, name: &str, len: u64) {
        let template = if len == 0 {
            "{spinner} {elapsed_precise} {prefix}: {pos} objects"
        } else {
            "{spinner} {elapsed_precise} {prefix} [{bar:24}] {pos}/{len} objects, {msg} read"
        };
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        self.0.set_style(style);
        self.0.set_prefix(name.to_owned());
        self.0.set_length(len);
        self.0.set_position(0);
        self.0.enable_steady_tick(Duration::from_millis(200));
    }

    fn tick(&self, listed: u64) {
        self.0.set_position(listed);
    }

    fn advance(&self, bytes_read: u64) {
        self.0.inc(1);
        self.0.set_message(HumanBytes(bytes_read).to_string());
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::model::Measured;
    use super::*;

    fn candidate(size: u64, kind: &'static str, sampled: bool) -> Object {
        Object {
            key: format!("incoming/{size}"),
            size,
            class: StorageClass::Standard,
            fate: Fate::Candidate { rule: 0 },
            kind: Some(kind),
            head: Bytes::new(),
            kept_as_compressed: false,
            sampled: sampled.then_some(Sampled {
                measured: Measured {
                    size,
                    out: size as f64,
                    within_variance: 0.0,
                },
                cpu_seconds: 0.0,
                kept: false,
            }),
        }
    }

    #[test]
    fn every_stratum_gets_a_sample_before_any_gets_a_second_and_the_budget_holds() {
        // 10 text objects of 100 KiB and one binary object of 100 KiB, with 300 KiB to read:
        // the binary one is read, though its share of the bytes (1/11) would not buy it.
        let mut objects: Vec<Object> = (0..10)
            .map(|_| candidate(100 << 10, "text", false))
            .collect();
        objects.push(candidate(100 << 10, "binary", false));
        let mut rng = SplitMix(1);
        let groups = groups(&objects, &mut rng);
        let chosen = allocate(&objects, &groups, 300 << 10);
        assert_eq!(chosen.len(), 3, "{chosen:?}");
        assert!(chosen.iter().any(|&(index, _)| index == 10), "{chosen:?}");
        // A stratum measured already (small objects read whole with their first bytes) is
        // not read again first.
        let mut objects: Vec<Object> = (0..3).map(|_| candidate(100, "text", true)).collect();
        objects.push(candidate(100 << 10, "text", false));
        let groups_measured = groups_of(&objects);
        assert_eq!(allocate(&objects, &groups_measured, 0), []);
    }

    fn groups_of(objects: &[Object]) -> BTreeMap<(usize, usize), Vec<usize>> {
        groups(objects, &mut SplitMix(2))
    }

    #[test]
    fn size_classes_split_at_the_documented_bounds() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class((16 << 10) - 1), 0);
        assert_eq!(size_class(128 << 10), 2);
        assert_eq!(size_class(u64::MAX), SIZE_CLASSES.len());
    }

    #[test]
    fn the_shuffle_is_a_permutation_and_repeats() {
        let mut first: Vec<u32> = (0..50).collect();
        let mut second = first.clone();
        SplitMix(7).shuffle(&mut first);
        SplitMix(7).shuffle(&mut second);
        assert_eq!(first, second);
        assert_ne!(first, (0..50).collect::<Vec<_>>());
        first.sort_unstable();
        assert_eq!(first, (0..50).collect::<Vec<_>>());
    }
}
