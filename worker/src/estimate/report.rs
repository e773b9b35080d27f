//! From the sampled objects to the report: each object's expected output, cost and saving,
//! summed by rule and content kind, with the error of each extrapolation.

use std::collections::BTreeMap;
use std::io::Write;

use indicatif::HumanBytes;
use s3_compressor_config::{IfNotWorthIt, StorageClass};

use super::model::{extrapolate, gb, payback_months, pays_back, CostModel, Measured, OneTime};
use super::sample::Sampled;
use crate::Routes;

/// What the report needs of one listed object.
#[derive(Debug)]
pub(crate) struct ObjectView<'a> {
    pub size: u64,
    pub class: StorageClass,
    pub fate: ViewFate<'a>,
}

#[derive(Debug)]
pub(crate) enum ViewFate<'a> {
    NotRouted(&'a str),
    Unchanged(&'a str),
    Moved(&'a str),
    Archived(usize),
    Candidate {
        rule: usize,
        size_class: usize,
        kind: Option<&'static str>,
        kept_as_compressed: bool,
        sampled: Option<Sampled>,
    },
}

/// One line of the report: a rule's objects of one content kind, or objects left as they are
/// for one reason. Counts of objects kept or below break-even are expected values: an object
/// not sampled is kept with the probability its stratum's sample shows.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Row {
    /// The rule's source prefix; empty for objects no rule compresses.
    pub rule: String,
    /// The rule's format and level, e.g. `zip, level 7`; empty for objects no rule compresses.
    pub format: String,
    /// The content kind, or why the objects stay as they are.
    pub kind: String,
    pub objects: u64,
    pub bytes: u64,
    pub bytes_after: f64,
    /// Two standard errors of `bytes_after` (about 95 %).
    pub bytes_after_error: f64,
    #[serde(skip)]
    variance: f64,
    pub sampled_objects: u64,
    /// Objects the rule's policy spares: kept in place, or moved unchanged when `moves`.
    pub kept_objects: f64,
    #[serde(skip)]
    moves: bool,
    pub storage_usd_per_month_now: f64,
    pub storage_usd_per_month_after: f64,
    pub saved_usd_per_month: f64,
    pub one_time_usd: OneTime,
    pub payback_months: Option<f64>,
    pub below_break_even_objects: f64,
    pub below_break_even_bytes: f64,
}

impl Row {
    fn named(rule: &str, format: &str, kind: &str) -> Self {
        Self {
            rule: rule.to_owned(),
            format: format.to_owned(),
            kind: kind.to_owned(),
            ..Self::default()
        }
    }

    fn add_unchanged(&mut self, size: u64, class: StorageClass, model: &CostModel) {
        let storage = model.prices.storage_usd_per_month(size, class);
        self.objects += 1;
        self.bytes += size;
        self.bytes_after += size as f64;
        self.storage_usd_per_month_now += storage;
        self.storage_usd_per_month_after += storage;
    }

    fn merge(&mut self, other: &Row) {
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.bytes_after += other.bytes_after;
        self.variance += other.variance;
        self.sampled_objects += other.sampled_objects;
        self.kept_objects += other.kept_objects;
        self.storage_usd_per_month_now += other.storage_usd_per_month_now;
        self.storage_usd_per_month_after += other.storage_usd_per_month_after;
        self.one_time_usd.add(&other.one_time_usd, 1.0);
        self.below_break_even_objects += other.below_break_even_objects;
        self.below_break_even_bytes += other.below_break_even_bytes;
    }

    fn finish(&mut self) {
        self.bytes_after_error = 2.0 * self.variance.sqrt();
        self.saved_usd_per_month =
            self.storage_usd_per_month_now - self.storage_usd_per_month_after;
        self.payback_months = payback_months(self.one_time_usd.total(), self.saved_usd_per_month);
    }
}

/// A stratum's sample, reduced to what extrapolates: output, codec seconds and the policy's
/// keeps per input byte, and the error of its total.
#[derive(Debug, Clone, Copy)]
struct Rates {
    ratio: f64,
    cpu_per_byte: f64,
    kept_share: f64,
}

#[derive(Debug, Default)]
struct Stratum {
    samples: Vec<Measured>,
    cpu_seconds: f64,
    kept: u64,
    unsampled_bytes: u64,
}

impl Stratum {
    fn rates(&self) -> Option<Rates> {
        let bytes: f64 = self.samples.iter().map(|s| s.size as f64).sum();
        let estimate = extrapolate(&self.samples, 0)?;
        Some(Rates {
            ratio: estimate.ratio,
            cpu_per_byte: if bytes > 0.0 {
                self.cpu_seconds / bytes
            } else {
                0.0
            },
            kept_share: self.kept as f64 / self.samples.len() as f64,
        })
    }

    fn variance(&self) -> Option<f64> {
        extrapolate(&self.samples, self.unsampled_bytes).map(|estimate| estimate.variance)
    }
}

/// The whole estimate: rows by rule and kind, rows of objects left as they are, the total.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Estimate {
    /// Bytes of rules none of whose objects the budget could read: counted as unchanged.
    pub unmeasured_bytes: u64,
    pub rows: Vec<Row>,
    pub unchanged: Vec<Row>,
    pub total: Row,
}

/// What a row is keyed by: rule index (`usize::MAX` for objects no rule compresses) and label.
type RowKey = (usize, String);

impl Estimate {
    pub fn build(
        objects: &[ObjectView<'_>],
        routes: &Routes,
        model: &CostModel,
        horizon_months: f64,
    ) -> Self {
        // Strata by (rule, size class, kind); `None` kind: objects whose first bytes were not
        // read, which take their group's rates (every kind of it, by bytes).
        let mut strata: BTreeMap<(usize, usize, Option<&'static str>), Stratum> = BTreeMap::new();
        for object in objects {
            let ViewFate::Candidate {
                rule,
                size_class,
                kind,
                kept_as_compressed: false,
                sampled,
            } = &object.fate
            else {
                continue;
            };
            let stratum = strata.entry((*rule, *size_class, *kind)).or_default();
            match sampled {
                Some(sampled) => {
                    stratum.samples.push(sampled.measured);
                    stratum.cpu_seconds += sampled.cpu_seconds;
                    stratum.kept += u64::from(sampled.kept);
                }
                None => stratum.unsampled_bytes += object.size,
            }
        }
        let pooled = |filter: &dyn Fn(usize, usize) -> bool| {
            let mut pooled = Stratum::default();
            for ((rule, size_class, _), stratum) in &strata {
                if filter(*rule, *size_class) {
                    pooled.samples.extend(&stratum.samples);
                    pooled.cpu_seconds += stratum.cpu_seconds;
                    pooled.kept += stratum.kept;
                }
            }
            pooled
        };
        // Each stratum's rates: its own sample, else its group's, else its rule's.
        let mut rates: BTreeMap<(usize, usize, Option<&'static str>), (Rates, f64)> =
            BTreeMap::new();
        let mut unmeasured = 0;
        for (key, stratum) in &strata {
            let (rule, size_class, _) = *key;
            let group = pooled(&|r, c| r == rule && c == size_class);
            let whole_rule = pooled(&|r, _| r == rule);
            let chosen = [stratum, &group, &whole_rule]
                .into_iter()
                .find_map(|candidate| Some((candidate, candidate.rates()?)));
            let (rate, variance) = match chosen {
                Some((source, rate)) if std::ptr::eq(source, stratum) => {
                    (rate, stratum.variance().unwrap_or(0.0))
                }
                // Borrowed rates: the spread of the samples they come from, for these bytes.
                Some((source, rate)) => {
                    let variance = extrapolate(&source.samples, stratum.unsampled_bytes)
                        .map_or(0.0, |estimate| estimate.variance);
                    (rate, variance)
                }
                // Nothing of the rule was read: nothing is claimed saved, and the doubt is
                // the bound's.
                None => {
                    unmeasured += stratum.unsampled_bytes;
                    (
                        Rates {
                            ratio: 1.0,
                            cpu_per_byte: 0.0,
                            kept_share: 0.0,
                        },
                        (stratum.unsampled_bytes as f64 * 0.5).powi(2),
                    )
                }
            };
            rates.insert(*key, (rate, variance));
        }

        let rules: Vec<RuleView> = routes
            .rules()
            .map(|(rule, compressor)| RuleView {
                prefix: rule.prefix.clone(),
                format: crate::commands::describe_compression(compressor),
                moves: rule.if_not_worth_it == IfNotWorthIt::Move,
            })
            .collect();
        let mut rows: BTreeMap<RowKey, Row> = BTreeMap::new();
        let mut unchanged: BTreeMap<String, Row> = BTreeMap::new();
        for object in objects {
            let (size, class) = (object.size, object.class);
            match &object.fate {
                ViewFate::NotRouted(label) => unchanged
                    .entry(format!("not routed: {label}"))
                    .or_insert_with(|| Row::named("", "", &format!("not routed: {label}")))
                    .add_unchanged(size, class, model),
                ViewFate::Unchanged(label) => unchanged
                    .entry((*label).to_owned())
                    .or_insert_with(|| Row::named("", "", label))
                    .add_unchanged(size, class, model),
                ViewFate::Moved(label) => {
                    let row = unchanged
                        .entry((*label).to_owned())
                        .or_insert_with(|| Row::named("", "", label));
                    row.add_unchanged(size, class, model);
                    row.one_time_usd.add(&model.moved(size, false), 1.0);
                }
                ViewFate::Archived(rule) => {
                    row_for(
                        &mut rows,
                        &rules,
                        *rule,
                        "archived: restore before compressing",
                    )
                    .add_unchanged(size, class, model);
                }
                ViewFate::Candidate {
                    rule,
                    size_class,
                    kind,
                    kept_as_compressed,
                    sampled,
                } => {
                    let row = row_for(&mut rows, &rules, *rule, kind.unwrap_or("kind not read"));
                    let spared = if row.moves {
                        model.moved(size, true)
                    } else {
                        model.judged(true)
                    };
                    if *kept_as_compressed {
                        row.add_unchanged(size, class, model);
                        row.kept_objects += 1.0;
                        row.one_time_usd.add(&spared, 1.0);
                        continue;
                    }
                    let (out, cpu, kept) = match (sampled, rates.get(&(*rule, *size_class, *kind)))
                    {
                        (Some(sampled), _) => (
                            sampled.measured.out,
                            sampled.cpu_seconds,
                            f64::from(u8::from(sampled.kept)),
                        ),
                        (None, Some((rate, _))) => (
                            rate.ratio * size as f64,
                            rate.cpu_per_byte * size as f64,
                            rate.kept_share,
                        ),
                        (None, None) => (size as f64, 0.0, 0.0),
                    };
                    let compressed = 1.0 - kept;
                    let one_time = model.one_time(size, class, out, cpu);
                    let saved = model.saved_per_month(size, class, out);
                    row.objects += 1;
                    row.bytes += size;
                    row.bytes_after += out;
                    row.sampled_objects += u64::from(sampled.is_some());
                    row.kept_objects += kept;
                    let now = model.prices.storage_usd_per_month(size, class);
                    row.storage_usd_per_month_now += now;
                    row.storage_usd_per_month_after += now - saved;
                    row.one_time_usd.add(&one_time, compressed);
                    row.one_time_usd.add(&spared, kept);
                    if !pays_back(one_time.total(), saved, horizon_months) {
                        row.below_break_even_objects += compressed;
                        row.below_break_even_bytes += compressed * size as f64;
                    }
                }
            }
        }
        // Each stratum's doubt goes to the row of its kind.
        for ((rule, _, kind), (_, variance)) in &rates {
            if let Some(row) = rows.get_mut(&(*rule, kind.unwrap_or("kind not read").to_owned())) {
                row.variance += variance;
            }
        }
        let mut total = Row::named("", "", "total");
        let mut rows: Vec<Row> = rows.into_values().collect();
        let mut unchanged: Vec<Row> = unchanged.into_values().collect();
        for row in rows.iter_mut().chain(unchanged.iter_mut()) {
            row.finish();
            total.merge(row);
        }
        total.finish();
        Self {
            unmeasured_bytes: unmeasured,
            rows,
            unchanged,
            total,
        }
    }
}

/// The row of `rule`'s objects of `kind`, made on first use.
fn row_for<'r>(
    rows: &'r mut BTreeMap<RowKey, Row>,
    rules: &[RuleView],
    rule: usize,
    kind: &str,
) -> &'r mut Row {
    rows.entry((rule, kind.to_owned()))
        .or_insert_with(|| match rules.get(rule) {
            Some(view) => Row {
                moves: view.moves,
                ..Row::named(&view.prefix, &view.format, kind)
            },
            None => Row::named("", "", kind),
        })
}

/// What a row needs of its rule.
struct RuleView {
    prefix: String,
    /// `zip, level 7`, as check-config shows it.
    format: String,
    /// What its policy spares is moved (a copy, paid once) rather than kept in place.
    moves: bool,
}

/// What the run did, for the report's first line and `--json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Run {
    pub place: String,
    pub config: String,
    pub budget: u64,
    pub bytes_read: u64,
    pub requests: u64,
    pub failed_reads: u64,
    pub seconds: f64,
    pub lambda_memory_mb: u32,
    pub horizon_months: f64,
}

pub(crate) fn write_json(
    out: &mut dyn Write,
    run: &Run,
    estimate: &Estimate,
    model: &CostModel,
) -> anyhow::Result<()> {
    let prices: serde_json::Map<String, serde_json::Value> = model
        .prices
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into()))
        .collect();
    let report = serde_json::json!({
        "place": run.place,
        "config": run.config,
        "objects": estimate.total.objects,
        "bytes": estimate.total.bytes,
        "read": {
            "budget_bytes": run.budget,
            "bytes": run.bytes_read,
            "requests": run.requests,
            "failed": run.failed_reads,
        },
        "seconds": run.seconds,
        "lambda_memory_mb": run.lambda_memory_mb,
        "horizon_months": run.horizon_months,
        "prices": prices,
        "unmeasured_bytes": estimate.unmeasured_bytes,
        "rows": estimate.rows,
        "unchanged": estimate.unchanged,
        "total": estimate.total,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn write_human(
    out: &mut dyn Write,
    run: &Run,
    estimate: &Estimate,
) -> std::io::Result<()> {
    let total = &estimate.total;
    writeln!(
        out,
        "estimate of {}: {} objects, {}; read {} ({:.1} %) in {} requests, {:.1} s",
        run.place,
        total.objects,
        HumanBytes(total.bytes),
        HumanBytes(run.bytes_read),
        percent(run.bytes_read as f64, total.bytes as f64),
        run.requests,
        run.seconds
    )?;
    if run.failed_reads > 0 {
        writeln!(
            out,
            "{} samples could not be read (see the warnings); estimated without them",
            run.failed_reads
        )?;
    }
    writeln!(out)?;
    let header = [
        "RULE",
        "FORMAT",
        "CONTENT",
        "OBJECTS",
        "NOW",
        "AFTER",
        "±",
        "SAVED/MONTH",
        "ONE-TIME",
        "PAYBACK",
    ];
    let line = |row: &Row| -> [String; 10] {
        let spared = if row.moves { "moved" } else { "kept" };
        let kept = if row.kept_objects >= 0.5 && row.kept_objects < row.objects as f64 - 0.5 {
            format!(" ({:.0} {spared})", row.kept_objects)
        } else if row.kept_objects >= row.objects as f64 - 0.5
            && row.objects > 0
            && !row.rule.is_empty()
        {
            format!(" ({spared})")
        } else {
            String::new()
        };
        [
            row.rule.clone(),
            row.format.clone(),
            format!("{}{kept}", row.kind),
            row.objects.to_string(),
            HumanBytes(row.bytes).to_string(),
            HumanBytes(row.bytes_after.max(0.0) as u64).to_string(),
            HumanBytes(row.bytes_after_error as u64).to_string(),
            usd(row.saved_usd_per_month),
            usd(row.one_time_usd.total()),
            months(row.payback_months),
        ]
    };
    let mut rows: Vec<[String; 10]> = estimate.rows.iter().map(line).collect();
    rows.extend(estimate.unchanged.iter().map(line));
    rows.push(line(total));
    crate::commands::write_table(out, header, &rows)?;
    writeln!(out)?;
    let saved = total.bytes as f64 - total.bytes_after;
    writeln!(
        out,
        "below break-even in {} months: {:.0} objects, {}",
        run.horizon_months,
        total.below_break_even_objects,
        HumanBytes(total.below_break_even_bytes as u64)
    )?;
    writeln!(
        out,
        "one-time: requests {}, retrieval {}, Lambda {} (at {} MB)",
        usd(total.one_time_usd.requests),
        usd(total.one_time_usd.retrieval),
        usd(total.one_time_usd.lambda),
        run.lambda_memory_mb
    )?;
    if estimate.unmeasured_bytes > 0 {
        writeln!(
            out,
            "{} under rules of which the budget read nothing: counted as unchanged (a larger \
             --sample-percent or --sample-bytes reads them)",
            HumanBytes(estimate.unmeasured_bytes)
        )?;
    }
    writeln!(out)?;
    let payback = match total.payback_months {
        Some(months) => format!("pays back in {}", self::months(Some(months))),
        None => "never pays back".to_owned(),
    };
    writeln!(
        out,
        "Compressing this bucket would save about {} (±{}), {} a month; it costs about {} once \
         and {payback}.",
        gb_text(saved),
        gb_text(total.bytes_after_error),
        usd(total.saved_usd_per_month),
        usd(total.one_time_usd.total()),
    )?;
    Ok(())
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// Bytes as GB (2^30) with enough digits to read, or smaller units under one GB.
fn gb_text(bytes: f64) -> String {
    if bytes.abs() >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GB", gb(bytes))
    } else if bytes < 0.0 {
        format!("-{}", HumanBytes((-bytes) as u64))
    } else {
        HumanBytes(bytes as u64).to_string()
    }
}

/// Dollars with the digits that matter: cents from $1, four significant figures below.
pub(crate) fn usd(value: f64) -> String {
    let sign = if value < 0.0 { "-" } else { "" };
    let value = value.abs();
    if value >= 1.0 {
        format!("{sign}${value:.2}")
    } else if value == 0.0 {
        "$0".to_owned()
    } else if value < 0.000_001 {
        format!("{sign}<$0.000001")
    } else {
        let digits = (3 - value.log10().floor() as i32).clamp(2, 6) as usize;
        format!("{sign}${value:.digits$}")
    }
}

fn months(value: Option<f64>) -> String {
    match value {
        None => "never".to_owned(),
        Some(months) if months < 1.0 => "< 1 month".to_owned(),
        Some(months) if months >= 1200.0 => "> 100 years".to_owned(),
        Some(months) => format!("{months:.0} months"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3_compressor_config::Prices;

    fn routes(toml: &str) -> Routes {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), toml).expect("the config is written");
        let registry = s3_compressor_formats::Registry::from_inventory().expect("the registry");
        Routes::load(Some(file.path()), &registry).expect("the config loads")
    }

    /// An already-compressed object a rule spares by its first bytes, as the sniff finds it.
    fn spared(size: u64) -> ObjectView<'static> {
        ObjectView {
            size,
            class: StorageClass::Standard,
            fate: ViewFate::Candidate {
                rule: 0,
                size_class: 3,
                kind: Some("gzip"),
                kept_as_compressed: true,
                sampled: None,
            },
        }
    }

    #[test]
    fn what_a_moving_rule_spares_is_called_moved_and_costs_its_copy() {
        let model = CostModel {
            prices: Prices::default(),
            lambda_memory_mb: 512,
        };
        let objects = [
            spared(4 << 20),
            spared(4 << 20),
            ObjectView {
                size: 100,
                class: StorageClass::Standard,
                fate: ViewFate::Moved("moved: below min_size 1024"),
            },
        ];
        let rule = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
                    min_size = 1024\nif_not_worth_it = ";
        let (get, put) = (model.prices.get_per_1000, model.prices.put_per_1000);
        let lambda = model.prices.lambda_per_million_requests / 1e6;

        let moving = Estimate::build(&objects, &routes(&format!("{rule}\"move\"")), &model, 12.0);
        let row = &moving.rows[0];
        assert_eq!((row.kind.as_str(), row.kept_objects), ("gzip", 2.0));
        assert_eq!(row.bytes_after, (8 << 20) as f64);
        let each = get / 1000.0 + put / 1000.0 + lambda;
        assert!(
            (row.one_time_usd.total() - 2.0 * each).abs() < 1e-12,
            "{row:?}"
        );
        let small = &moving.unchanged[0];
        assert_eq!(small.kind, "moved: below min_size 1024");
        assert!((small.one_time_usd.total() - (put / 1000.0 + lambda)).abs() < 1e-12);
        assert_eq!(moving.total.saved_usd_per_month, 0.0);

        // The same objects under a keeping rule cost only the read that judged them.
        let keeping = Estimate::build(
            &objects[..2],
            &routes(&format!("{rule}\"keep\"")),
            &model,
            12.0,
        );
        let each = get / 1000.0 + lambda;
        assert!((keeping.rows[0].one_time_usd.total() - 2.0 * each).abs() < 1e-12);

        let mut human = Vec::new();
        let run = Run {
            place: "s3://mixed".to_owned(),
            config: "test".to_owned(),
            budget: 0,
            bytes_read: 0,
            requests: 0,
            failed_reads: 0,
            seconds: 0.0,
            lambda_memory_mb: 512,
            horizon_months: 12.0,
        };
        write_human(&mut human, &run, &moving).expect("the report is written");
        let human = String::from_utf8(human).expect("UTF-8");
        assert!(human.contains("gzip (moved)"), "{human}");
    }

    #[test]
    fn dollars_keep_the_digits_that_matter() {
        assert_eq!(usd(1234.567), "$1234.57");
        assert_eq!(usd(0.5), "$0.5000");
        assert_eq!(usd(0.000_123_4), "$0.000123");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(-0.02), "-$0.02000");
        assert_eq!(usd(1e-9), "<$0.000001");
        assert_eq!(months(Some(14.6)), "15 months");
        assert_eq!(months(None), "never");
    }
}
