//! From TOML text to validated [`Rule`]s, collecting every problem on the way.
//!
//! The document is parsed into toml's spanned tree first, then each table is checked and
//! deserialized on its own, so a mistake in one rule neither hides the mistakes in the next nor
//! loses their positions.

use std::collections::HashMap;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::position::line_column;
use crate::prices::PRICE_FIELDS;
use crate::{FormatCatalog, IfNotWorthIt, Prices, Problem, Rule};

/// The format of a rule when neither it nor `[defaults]` names one.
pub(crate) const DEFAULT_FORMAT: &str = "zip";
/// Whether a rule deletes its sources when neither it nor `[defaults]` says.
pub(crate) const DEFAULT_DELETE_SOURCE: bool = true;

const TOP_LEVEL_FIELDS: &[&str] = &["defaults", "rule", "prices"];
/// Must list the fields of [`RawDefaults`]; a field missing here is reported as unknown.
const DEFAULTS_FIELDS: &[&str] = &[
    "format",
    "level",
    "threads",
    "delete_source",
    "delete_without_if_match",
    "min_size",
    "if_not_worth_it",
];
/// Must list the fields of [`RawRule`].
const RULE_FIELDS: &[&str] = &[
    "prefix",
    "output_prefix",
    "format",
    "level",
    "threads",
    "delete_source",
    "delete_without_if_match",
    "min_size",
    "if_not_worth_it",
];

const THREADS_TOO_FEW: &str = "threads must be at least 1; leave it out to use every core";

/// `[defaults]` as written. Unknown fields are removed and reported before deserializing, so
/// `deny_unknown_fields` only catches a field list that has drifted from the struct.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    format: Option<Spanned<String>>,
    level: Option<Spanned<i32>>,
    /// Signed so that `threads = -1` gets the same message as `threads = 0`, not serde's.
    threads: Option<Spanned<i64>>,
    delete_source: Option<bool>,
    delete_without_if_match: Option<bool>,
    /// Signed so that a negative size gets our message, not serde's.
    min_size: Option<Spanned<i64>>,
    if_not_worth_it: Option<Spanned<String>>,
}

/// One `[[rule]]` as written. The prefixes are optional here only so that a missing one is
/// reported in our words, next to any other problem of the rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prefix: Option<Spanned<String>>,
    output_prefix: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    level: Option<Spanned<i32>>,
    threads: Option<Spanned<i64>>,
    delete_source: Option<bool>,
    delete_without_if_match: Option<bool>,
    /// Signed so that a negative size gets our message, not serde's.
    min_size: Option<Spanned<i64>>,
    if_not_worth_it: Option<Spanned<String>>,
}

/// `[defaults]` after its own checks.
#[derive(Debug, Default)]
struct Defaults {
    format: Option<Spanned<String>>,
    level: Option<Spanned<i32>>,
    threads: Option<Spanned<usize>>,
    delete_source: Option<bool>,
    delete_without_if_match: Option<bool>,
    min_size: Option<u64>,
    if_not_worth_it: Option<IfNotWorthIt>,
    /// What the catalog said about `[defaults]` itself, so rules inheriting the same mistake do
    /// not repeat it.
    failure: Option<String>,
    /// Already reported; a rule inherits nothing in place of a mistyped field, and nothing
    /// paired with a mistyped format (its level).
    mistyped: Mistyped,
}

impl Defaults {
    fn format(&self) -> &str {
        self.format
            .as_ref()
            .map_or(DEFAULT_FORMAT, |format| format.get_ref())
    }
}

/// The fields of one table whose values had the wrong type; each was reported where it is.
#[derive(Debug, Default)]
struct Mistyped(Vec<&'static str>);

impl Mistyped {
    fn contains(&self, field: &str) -> bool {
        self.0.contains(&field)
    }
}

/// A `threads` value after the at-least-one check.
#[derive(Debug, Clone)]
enum Threads {
    Absent,
    /// Already reported; nothing else should be said about it, and nothing inherited in its
    /// place.
    Invalid,
    Valid(Spanned<usize>),
}

/// A `[[rule]]` that deserialized, with `[defaults]` applied.
#[derive(Debug)]
struct ParsedRule {
    /// The prefixes, when present and well formed; the cross-rule checks use only these, and
    /// a config is only accepted when every rule has both.
    prefix: Option<Spanned<String>>,
    output_prefix: Option<Spanned<String>>,
    format: String,
    level: Option<i32>,
    threads: Option<usize>,
    delete_source: bool,
    delete_without_if_match: bool,
    min_size: u64,
    if_not_worth_it: IfNotWorthIt,
}

/// Where a setting a rule uses came from, for pointing at it.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// Written in the table being checked, at this byte offset.
    Here(usize),
    /// Inherited from `[defaults]`, written on this line.
    Defaults(usize),
    /// Nobody wrote it.
    BuiltIn,
}

/// Parses and validates `text`; `Err` holds every problem, in file order.
pub(crate) fn parse(
    text: &str,
    catalog: &dyn FormatCatalog,
) -> Result<(Vec<Rule>, Prices), Vec<Problem>> {
    let mut checker = Checker {
        text,
        catalog,
        problems: Vec::new(),
    };
    let parsed = checker.check_document();
    if checker.problems.is_empty() {
        Ok(parsed)
    } else {
        Err(checker.into_problems())
    }
}

struct Checker<'a> {
    text: &'a str,
    catalog: &'a dyn FormatCatalog,
    /// Byte offset and message.
    problems: Vec<(usize, String)>,
}

impl Checker<'_> {
    fn report(&mut self, offset: usize, message: String) {
        self.problems.push((offset, message));
    }

    fn line(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    fn into_problems(mut self) -> Vec<Problem> {
        // Stable, so problems at one spot keep the order they were found in.
        self.problems.sort_by_key(|(offset, _)| *offset);
        self.problems
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_column(self.text, offset);
                Problem {
                    line,
                    column,
                    message,
                }
            })
            .collect()
    }

    fn check_document(&mut self) -> (Vec<Rule>, Prices) {
        let (document, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            // The tree around a syntax error is a guess; checking it would report phantoms.
            for error in errors {
                let offset = error.span().map_or(0, |span| span.start);
                self.report(offset, format!("invalid TOML: {}", error.message()));
            }
            return (Vec::new(), Prices::default());
        }

        let mut defaults = None;
        let mut rules = None;
        let mut prices = Prices::default();
        for (key, value) in document.get_ref() {
            match key.get_ref().as_ref() {
                "defaults" => defaults = Some(value),
                "rule" => rules = Some(value),
                "prices" => prices = self.check_prices(value),
                name => self.unknown_field(key.span().start, name, "", TOP_LEVEL_FIELDS),
            }
        }

        let defaults = match defaults {
            Some(value) => self.check_defaults(value),
            None => Defaults::default(),
        };
        let rules = match rules {
            Some(value) => self.rule_tables(value),
            None => {
                self.report(0, no_rules());
                Vec::new()
            }
        };

        let mut parsed = Vec::new();
        for (header, table) in rules {
            if let Some(rule) = self.check_rule(header, table, &defaults) {
                parsed.push(rule);
            }
        }
        self.check_prefixes_together(&parsed);

        let rules = parsed
            .into_iter()
            .filter_map(ParsedRule::into_rule)
            .collect();
        (rules, prices)
    }

    /// `[prices]`: each field a number of USD, at least 0; a field left out keeps its default.
    /// Every field is checked on its own, so one mistake hides none of the others.
    fn check_prices(&mut self, value: &Spanned<DeValue<'_>>) -> Prices {
        let mut prices = Prices::default();
        let DeValue::Table(table) = value.get_ref() else {
            self.report(
                value.span().start,
                "prices must be a table: write [prices] on a line of its own and its fields \
                 on the lines below"
                    .to_owned(),
            );
            return prices;
        };
        let known: Vec<&str> = PRICE_FIELDS.iter().map(|(name, _, _)| *name).collect();
        for (key, field) in table.iter() {
            let name = key.get_ref().as_ref();
            let Some((_, _, set)) = PRICE_FIELDS.iter().find(|(known, _, _)| *known == name) else {
                self.unknown_field(key.span().start, name, " in [prices]", &known);
                continue;
            };
            let offset = field.span().start;
            match f64::deserialize(ValueDeserializer::from(field.clone())) {
                Ok(price) if price.is_finite() && price >= 0.0 => set(&mut prices, price),
                Ok(price) => self.report(
                    offset,
                    format!("{name} {price} is not a price; give USD as a number, 0 or more"),
                ),
                Err(_) => self.report(
                    offset,
                    format!("{name} must be a number of USD, such as 0.023"),
                ),
            }
        }
        prices
    }

    /// Reports `name`, found at `offset` in `table` (e.g. `" in [[rule]]"`), with the fields that
    /// would have been accepted and the likeliest one meant.
    fn unknown_field(&mut self, offset: usize, name: &str, table: &str, known: &[&str]) {
        let hint = closest(name, known)
            .map(|field| format!("did you mean \"{field}\"? "))
            .unwrap_or_default();
        self.report(
            offset,
            format!(
                "unknown field \"{name}\"{table}; {hint}known fields: {}",
                known.join(", ")
            ),
        );
    }

    /// Deserializes `value` as `T` after reporting and dropping the fields `T` does not have,
    /// then every field of the wrong type, one at a time: serde stops at the first, and a table
    /// given up for it would hide the next one and every check of the table's other values.
    ///
    /// Returns the ill-typed fields with `T`: they were written, so the caller neither
    /// inherits a default in their place nor reports them missing.
    fn deserialize_table<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
        known: &[&'static str],
    ) -> Option<(T, Mistyped)> {
        let DeValue::Table(table) = value.get_ref() else {
            return None;
        };
        for (key, _) in table.iter() {
            if !known.contains(&key.get_ref().as_ref()) {
                self.unknown_field(
                    key.span().start,
                    key.get_ref(),
                    &format!(" in {name}"),
                    known,
                );
            }
        }
        let mut mistyped = Mistyped::default();
        loop {
            let mut fields = DeTable::new();
            for (key, field) in table.iter() {
                let field_name = key.get_ref().as_ref();
                if known.contains(&field_name) && !mistyped.contains(field_name) {
                    fields.insert(key.clone(), field.clone());
                }
            }
            let filtered = Spanned::new(value.span(), DeValue::Table(fields.clone()));
            let error = match T::deserialize(ValueDeserializer::from(filtered)) {
                Ok(parsed) => return Some((parsed, mistyped)),
                Err(error) => error,
            };
            // toml's message leaves out the field; find it from the position.
            let offset = error.span().map_or(value.span().start, |span| span.start);
            let field = fields
                .iter()
                .find(|(key, value)| key.span().contains(&offset) || value.span().contains(&offset))
                .and_then(|(key, _)| {
                    known
                        .iter()
                        .copied()
                        .find(|known| *known == key.get_ref().as_ref())
                });
            match field {
                Some(field) => {
                    self.report(offset, format!("{field}: {}", error.message()));
                    mistyped.0.push(field);
                }
                // Nothing to drop and try again without: the table is given up.
                None => {
                    self.report(offset, error.message().to_owned());
                    return None;
                }
            }
        }
    }

    fn check_defaults(&mut self, value: &Spanned<DeValue<'_>>) -> Defaults {
        let header = value.span().start;
        if !value.get_ref().is_table() {
            self.report(
                header,
                "defaults must be a table: write [defaults] on a line of its own and its \
                 fields on the lines below"
                    .to_owned(),
            );
            return Defaults::default();
        }
        let Some((raw, mistyped)) =
            self.deserialize_table::<RawDefaults>(value, "[defaults]", DEFAULTS_FIELDS)
        else {
            return Defaults::default();
        };
        let threads = match self.check_threads(raw.threads.as_ref()) {
            Threads::Valid(threads) => Some(threads),
            Threads::Absent | Threads::Invalid => None,
        };
        let mut defaults = Defaults {
            format: raw.format,
            level: raw.level,
            threads,
            delete_source: raw.delete_source,
            delete_without_if_match: raw.delete_without_if_match,
            min_size: self.check_min_size(raw.min_size.as_ref()),
            if_not_worth_it: self.check_if_not_worth_it(raw.if_not_worth_it.as_ref()),
            failure: None,
            mistyped,
        };
        // A format of the wrong type names none to check a level or threads against.
        if defaults.mistyped.contains("format") {
            return defaults;
        }
        let format_origin = match &defaults.format {
            Some(format) => Origin::Here(format.span().start),
            None => Origin::BuiltIn,
        };
        let level = defaults
            .level
            .as_ref()
            .map(|level| (*level.get_ref(), Origin::Here(level.span().start)));
        let threads = defaults
            .threads
            .as_ref()
            .map(|threads| (*threads.get_ref(), Origin::Here(threads.span().start)));
        let format = defaults.format().to_owned();
        defaults.failure = self.check_format(
            "[defaults]",
            header,
            (&format, format_origin),
            level,
            threads,
            None,
        );
        defaults
    }

    /// The `[[rule]]` tables with the offsets of their headers.
    fn rule_tables<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
    ) -> Vec<(usize, &'v Spanned<DeValue<'i>>)> {
        let Some(items) = value.get_ref().as_array() else {
            self.report(
                value.span().start,
                "rule must be a list of tables: start each rule with a [[rule]] line".to_owned(),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.report(value.span().start, no_rules());
        }
        let mut tables = Vec::new();
        for item in items.iter() {
            if item.get_ref().is_table() {
                tables.push((item.span().start, item));
            } else {
                self.report(
                    item.span().start,
                    "each rule must be a table with a prefix and an output_prefix, \
                     written under a [[rule]] line"
                        .to_owned(),
                );
            }
        }
        tables
    }

    fn check_rule(
        &mut self,
        header: usize,
        value: &Spanned<DeValue<'_>>,
        defaults: &Defaults,
    ) -> Option<ParsedRule> {
        let (raw, mistyped) = self.deserialize_table::<RawRule>(value, "[[rule]]", RULE_FIELDS)?;
        let prefix = match &raw.prefix {
            Some(prefix) => self.check_prefix_shape("prefix", prefix, "incoming/"),
            None if mistyped.contains("prefix") => None,
            None => {
                self.report(
                    header,
                    "this [[rule]] has no prefix; add prefix = \"incoming/\" naming the folder \
                     whose uploads it compresses"
                        .to_owned(),
                );
                None
            }
        };
        let output_prefix = match &raw.output_prefix {
            Some(output_prefix) => {
                self.check_prefix_shape("output_prefix", output_prefix, "processed/")
            }
            None if mistyped.contains("output_prefix") => None,
            None => {
                self.report(
                    header,
                    "this [[rule]] has no output_prefix; add output_prefix = \"processed/\" \
                     naming the folder the compressed objects go to"
                        .to_owned(),
                );
                None
            }
        };
        let threads = if mistyped.contains("threads") {
            Threads::Invalid
        } else {
            self.check_threads(raw.threads.as_ref())
        };
        // A format of the wrong type, here or in the [defaults] this rule would inherit from,
        // names none to check a level or threads against.
        let format_mistyped = mistyped.contains("format")
            || (raw.format.is_none() && defaults.mistyped.contains("format"));

        // The prefix is where inherited settings are blamed: it names the rule best.
        let anchor = raw
            .prefix
            .as_ref()
            .map_or(header, |prefix| prefix.span().start);
        let (format, format_origin) = match &raw.format {
            Some(format) => (format.get_ref().clone(), Origin::Here(format.span().start)),
            None => match &defaults.format {
                Some(format) => (
                    format.get_ref().clone(),
                    Origin::Defaults(self.line(format.span().start)),
                ),
                None => (DEFAULT_FORMAT.to_owned(), Origin::BuiltIn),
            },
        };
        // Levels mean different things per format (zstd 19 is not gzip 19), so the default
        // level only carries over together with the default format.
        let level = match &raw.level {
            Some(level) => Some((*level.get_ref(), Origin::Here(level.span().start))),
            None if mistyped.contains("level") || defaults.mistyped.contains("format") => None,
            None if format == defaults.format() => defaults.level.as_ref().map(|level| {
                (
                    *level.get_ref(),
                    Origin::Defaults(self.line(level.span().start)),
                )
            }),
            None => None,
        };
        let threads = match threads {
            Threads::Valid(threads) => {
                Some((*threads.get_ref(), Origin::Here(threads.span().start)))
            }
            Threads::Invalid => None,
            Threads::Absent => defaults.threads.as_ref().map(|threads| {
                (
                    *threads.get_ref(),
                    Origin::Defaults(self.line(threads.span().start)),
                )
            }),
        };
        if !format_mistyped {
            self.check_format(
                "this rule",
                anchor,
                (&format, format_origin),
                level,
                threads,
                defaults.failure.as_deref(),
            );
        }

        let if_not_worth_it = self
            .check_if_not_worth_it(raw.if_not_worth_it.as_ref())
            .or(defaults.if_not_worth_it)
            .unwrap_or_default();
        let min_size = match (&raw.min_size, self.check_min_size(raw.min_size.as_ref())) {
            (Some(written), Some(min_size)) => {
                if min_size > 0 && if_not_worth_it == IfNotWorthIt::Compress {
                    self.report(
                        written.span().start,
                        format!(
                            "min_size {min_size} does nothing while this rule compresses every \
                             object; add if_not_worth_it = \"keep\" to keep smaller objects \
                             where they are (or \"move\" to move them unchanged to the output \
                             prefix), or remove min_size"
                        ),
                    );
                }
                min_size
            }
            _ => defaults.min_size.unwrap_or(0),
        };

        Some(ParsedRule {
            prefix,
            output_prefix,
            format,
            level: level.map(|(level, _)| level),
            threads: threads.map(|(threads, _)| threads),
            delete_source: raw
                .delete_source
                .or(defaults.delete_source)
                .unwrap_or(DEFAULT_DELETE_SOURCE),
            delete_without_if_match: raw
                .delete_without_if_match
                .or(defaults.delete_without_if_match)
                .unwrap_or(false),
            min_size,
            if_not_worth_it,
        })
    }

    /// `min_size` in bytes, or `None` when absent or already reported.
    fn check_min_size(&mut self, min_size: Option<&Spanned<i64>>) -> Option<u64> {
        let min_size = min_size?;
        match u64::try_from(*min_size.get_ref()) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                self.report(
                    min_size.span().start,
                    format!(
                        "min_size {} is negative; give a size in bytes, or 0 (the default) for \
                         no minimum",
                        min_size.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// `if_not_worth_it`, or `None` when absent or already reported.
    fn check_if_not_worth_it(&mut self, value: Option<&Spanned<String>>) -> Option<IfNotWorthIt> {
        let value = value?;
        let known = [
            IfNotWorthIt::Compress,
            IfNotWorthIt::Keep,
            IfNotWorthIt::Move,
        ];
        if let Some(action) = known
            .into_iter()
            .find(|action| action.name() == value.get_ref())
        {
            return Some(action);
        }
        let message = format!(
            "if_not_worth_it \"{}\" is not one of \"compress\" (compress such objects anyway, \
             the default), \"keep\" (leave them where they are) or \"move\" (move them \
             unchanged to the output prefix)",
            value.get_ref()
        );
        self.report(value.span().start, message);
        None
    }

    /// Asks the catalog about the format alone, then with the level, then with the threads, so
    /// that its answer is reported at the value it is about. Returns the first complaint.
    ///
    /// Inherited values are blamed at `anchor` with a note of where they came from, unless the
    /// complaint is `inherited_failure`: that was already reported at `[defaults]` itself.
    fn check_format(
        &mut self,
        scope: &str,
        anchor: usize,
        format: (&str, Origin),
        level: Option<(i32, Origin)>,
        threads: Option<(usize, Origin)>,
        inherited_failure: Option<&str>,
    ) -> Option<String> {
        let (name, format_origin) = format;
        let mut failure = self
            .catalog
            .check(name, None, None)
            .err()
            .map(|message| (message, format_origin, format!("format \"{name}\"")));
        if let (None, Some((value, origin))) = (&failure, level) {
            failure = self
                .catalog
                .check(name, Some(value), None)
                .err()
                .map(|message| (message, origin, format!("level {value}")));
        }
        if let (None, Some((value, origin))) = (&failure, threads) {
            failure = self
                .catalog
                .check(name, level.map(|(level, _)| level), Some(value))
                .err()
                .map(|message| (message, origin, format!("threads {value}")));
        }
        let (message, origin, what) = failure?;
        match origin {
            Origin::Here(offset) => self.report(offset, message.clone()),
            Origin::Defaults(_) | Origin::BuiltIn
                if inherited_failure == Some(message.as_str()) => {}
            Origin::Defaults(line) => self.report(
                anchor,
                format!("{scope} inherits {what} from [defaults] (line {line}): {message}"),
            ),
            Origin::BuiltIn => self.report(
                anchor,
                format!("{scope} uses the built-in default {what}: {message}"),
            ),
        }
        Some(message)
    }

    fn check_threads(&mut self, threads: Option<&Spanned<i64>>) -> Threads {
        let Some(threads) = threads else {
            return Threads::Absent;
        };
        let offset = threads.span().start;
        let value = *threads.get_ref();
        if value < 1 {
            self.report(offset, THREADS_TOO_FEW.to_owned());
            return Threads::Invalid;
        }
        match usize::try_from(value) {
            Ok(value) => Threads::Valid(Spanned::new(threads.span(), value)),
            Err(_) => {
                self.report(
                    offset,
                    format!(
                        "threads {value} is more than this machine can count; \
                         leave it out to use every core"
                    ),
                );
                Threads::Invalid
            }
        }
    }

    /// Checks one prefix on its own; returns it when it is fit for the cross-rule checks.
    fn check_prefix_shape(
        &mut self,
        field: &str,
        prefix: &Spanned<String>,
        example: &str,
    ) -> Option<Spanned<String>> {
        let offset = prefix.span().start;
        let value = prefix.get_ref();
        if value.is_empty() {
            self.report(
                offset,
                format!(
                    "{field} is empty, which would take in every key in the bucket; \
                     name a folder such as \"{example}\""
                ),
            );
            return None;
        }
        let trimmed = value.trim_start_matches('/');
        let fixed = if trimmed.is_empty() {
            format!("a folder such as \"{example}\"")
        } else if trimmed.ends_with('/') {
            format!("\"{trimmed}\"")
        } else {
            format!("\"{trimmed}/\"")
        };
        let mut fine = true;
        if value.starts_with('/') {
            self.report(
                offset,
                format!(
                    "{field} \"{value}\" starts with \"/\", but S3 keys never do, \
                     so it would match nothing; write {fixed}"
                ),
            );
            fine = false;
        }
        if !value.ends_with('/') {
            self.report(
                offset,
                format!(
                    "{field} \"{value}\" must end with \"/\" so that it stops at a folder \
                     boundary (otherwise it also matches \"{value}-old/...\"); write {fixed}"
                ),
            );
            fine = false;
        }
        fine.then(|| prefix.clone())
    }

    /// Duplicate prefixes, and any output prefix and source prefix of which one contains the
    /// other: the worker would then pick up its own output and compress it again, forever.
    fn check_prefixes_together(&mut self, rules: &[ParsedRule]) {
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        for rule in rules {
            let Some(prefix) = &rule.prefix else { continue };
            let offset = prefix.span().start;
            match first_use.get(prefix.get_ref().as_str()) {
                Some(&first) => {
                    let line = self.line(first);
                    self.report(
                        offset,
                        format!(
                            "prefix \"{}\" is already used on line {line}; each prefix may \
                             have one rule only, so merge the two or change one prefix",
                            prefix.get_ref()
                        ),
                    );
                }
                None => {
                    first_use.insert(prefix.get_ref(), offset);
                }
            }
        }

        for (source_index, source_rule) in rules.iter().enumerate() {
            let Some(source) = &source_rule.prefix else {
                continue;
            };
            for (output_index, output_rule) in rules.iter().enumerate() {
                let Some(output) = &output_rule.output_prefix else {
                    continue;
                };
                let same_rule = source_index == output_index;
                let (source_value, output_value) = (source.get_ref(), output.get_ref());
                if output_value.starts_with(source_value.as_str()) {
                    let relation = if output_value == source_value {
                        "is the same as"
                    } else {
                        "lies inside"
                    };
                    let whose = self.whose(same_rule, source);
                    self.report(
                        output.span().start,
                        format!(
                            "output_prefix \"{output_value}\" {relation} the prefix \
                             \"{source_value}\" {whose}, so the worker would pick up its own \
                             output and compress it again, forever; choose an output_prefix \
                             that is outside every prefix"
                        ),
                    );
                } else if source_value.starts_with(output_value.as_str()) {
                    let whose = self.whose(same_rule, output);
                    self.report(
                        source.span().start,
                        format!(
                            "prefix \"{source_value}\" lies inside the output_prefix \
                             \"{output_value}\" {whose}, so the worker would pick up its own \
                             output and compress it again, forever; move this prefix out of \
                             every output_prefix"
                        ),
                    );
                }
            }
        }
    }

    /// "of this rule", or "on line N" for another rule's value.
    fn whose(&self, same_rule: bool, other: &Spanned<String>) -> String {
        if same_rule {
            "of this rule".to_owned()
        } else {
            format!("on line {}", self.line(other.span().start))
        }
    }
}

impl ParsedRule {
    /// The finished rule; `None` only for a rule whose problems were reported.
    fn into_rule(self) -> Option<Rule> {
        Some(Rule {
            prefix: self.prefix?.into_inner(),
            output_prefix: self.output_prefix?.into_inner(),
            format: self.format,
            level: self.level,
            threads: self.threads,
            delete_source: self.delete_source,
            delete_without_if_match: self.delete_without_if_match,
            min_size: self.min_size,
            if_not_worth_it: self.if_not_worth_it,
        })
    }
}

fn no_rules() -> String {
    "no [[rule]] is defined, so nothing would ever be compressed; add a [[rule]] with a \
     prefix and an output_prefix"
        .to_owned()
}

/// The known name within two edits of `name`, if exactly one is closest: typos like `formt`
/// or `output-prefix` deserve a suggestion, unrelated words do not.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let mut best: Option<(usize, &str)> = None;
    for &candidate in known {
        let distance = edit_distance(&name.to_lowercase(), candidate);
        if distance <= 2 && best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_catalog;

    /// Every problem of `text` as `LINE:COLUMN: message`.
    fn problems(text: &str) -> Vec<String> {
        problems_with(text, &test_catalog::check)
    }

    fn problems_with(text: &str, catalog: &dyn FormatCatalog) -> Vec<String> {
        match parse(text, catalog) {
            Ok(rules) => panic!("expected problems, got {rules:?}"),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn rules(text: &str) -> Vec<Rule> {
        parse(text, &test_catalog::check)
            .unwrap_or_else(|problems| {
                panic!("expected a valid config, got {problems:?}");
            })
            .0
    }

    fn rule(prefix: &str, output_prefix: &str, format: &str, level: Option<i32>) -> Rule {
        Rule {
            prefix: prefix.into(),
            output_prefix: output_prefix.into(),
            format: format.into(),
            level,
            threads: None,
            delete_source: true,
            delete_without_if_match: false,
            min_size: 0,
            if_not_worth_it: IfNotWorthIt::Compress,
        }
    }

    const MINIMAL: &str = "[[rule]]\nprefix = \"in/\"\noutput_prefix = \"out/\"\n";

    #[test]
    fn a_minimal_rule_gets_the_built_in_defaults() {
        assert_eq!(rules(MINIMAL), [rule("in/", "out/", "zip", None)]);
    }

    #[test]
    fn rules_keep_file_order_and_own_settings() {
        let text = r#"
[[rule]]
prefix = "b/"
output_prefix = "out/b/"
format = "tar"
threads = 3
delete_source = false

[[rule]]
prefix = "a/"
output_prefix = "out/a/"
format = "brotli"
level = 0
"#;
        assert_eq!(
            rules(text),
            [
                Rule {
                    threads: Some(3),
                    delete_source: false,
                    ..rule("b/", "out/b/", "tar", None)
                },
                rule("a/", "out/a/", "brotli", Some(0)),
            ]
        );
    }

    #[test]
    fn rules_inherit_format_threads_and_delete_source() {
        let text = r#"
[defaults]
format = "gzip"
threads = 2
delete_source = false

[[rule]]
prefix = "a/"
output_prefix = "out/a/"

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
format = "zstd"
threads = 4
delete_source = true
"#;
        assert_eq!(
            rules(text),
            [
                Rule {
                    threads: Some(2),
                    delete_source: false,
                    ..rule("a/", "out/a/", "gzip", None)
                },
                Rule {
                    threads: Some(4),
                    ..rule("b/", "out/b/", "zstd", None)
                },
            ]
        );
    }

    #[test]
    fn delete_without_if_match_is_off_unless_set_and_inherits_from_defaults() {
        let text = r#"
[defaults]
delete_without_if_match = true

[[rule]]
prefix = "a/"
output_prefix = "out/a/"

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
delete_without_if_match = false
"#;
        assert_eq!(
            rules(text),
            [
                Rule {
                    delete_without_if_match: true,
                    ..rule("a/", "out/a/", "zip", None)
                },
                rule("b/", "out/b/", "zip", None),
            ]
        );
        assert_eq!(
            problems(&format!("{MINIMAL}delete_without_if_match = \"yes\"\n")),
            ["4:27: delete_without_if_match: invalid type: string \"yes\", expected a boolean"]
        );
    }

    #[test]
    fn the_not_worth_it_policy_is_off_unless_set_and_inherits_from_defaults() {
        let text = r#"
[defaults]
if_not_worth_it = "keep"
min_size = 131072

[[rule]]
prefix = "a/"
output_prefix = "out/a/"

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
min_size = 4096

[[rule]]
prefix = "c/"
output_prefix = "out/c/"
if_not_worth_it = "compress"
"#;
        let keep = |min_size, rule: Rule| Rule {
            min_size,
            if_not_worth_it: IfNotWorthIt::Keep,
            ..rule
        };
        assert_eq!(
            rules(text),
            [
                keep(131072, rule("a/", "out/a/", "zip", None)),
                keep(4096, rule("b/", "out/b/", "zip", None)),
                Rule {
                    min_size: 131072,
                    ..rule("c/", "out/c/", "zip", None)
                },
            ]
        );
        assert_eq!(rules(MINIMAL), [rule("in/", "out/", "zip", None)]);
    }

    #[test]
    fn the_not_worth_it_policy_is_checked() {
        assert_eq!(
            problems(&format!(
                "{MINIMAL}if_not_worth_it = \"skip\"\nmin_size = -1\n"
            )),
            [
                "4:19: if_not_worth_it \"skip\" is not one of \"compress\" (compress such objects \
                 anyway, the default), \"keep\" (leave them where they are) or \"move\" (move \
                 them unchanged to the output prefix)",
                "5:12: min_size -1 is negative; give a size in bytes, or 0 (the default) for no \
                 minimum",
            ]
        );
        assert_eq!(
            problems(&format!("{MINIMAL}min_size = 4096\n")),
            [
                "4:12: min_size 4096 does nothing while this rule compresses every object; add \
              if_not_worth_it = \"keep\" to keep smaller objects where they are (or \"move\" to \
              move them unchanged to the output prefix), or remove min_size"
            ]
        );
        assert_eq!(
            problems(&format!("{MINIMAL}min_size = \"4 KiB\"\n")),
            ["4:12: min_size: invalid type: string \"4 KiB\", expected i64"]
        );
    }

    #[test]
    fn a_rule_may_move_what_does_not_pay() {
        assert_eq!(
            rules(&format!(
                "{MINIMAL}if_not_worth_it = \"move\"\nmin_size = 32768\n"
            )),
            [Rule {
                min_size: 32768,
                if_not_worth_it: IfNotWorthIt::Move,
                ..rule("in/", "out/", "zip", None)
            }]
        );
    }

    #[test]
    fn the_default_level_follows_only_the_default_format() {
        let text = r#"
[defaults]
format = "zstd"
level = 19

[[rule]]  # inherits the format, so the level too
prefix = "a/"
output_prefix = "out/a/"

[[rule]]  # names the default format: same meaning, so the level carries over
prefix = "b/"
output_prefix = "out/b/"
format = "zstd"

[[rule]]  # gzip 19 does not exist; gzip's own default applies, and this is no error
prefix = "c/"
output_prefix = "out/c/"
format = "gzip"

[[rule]]
prefix = "d/"
output_prefix = "out/d/"
format = "gzip"
level = 9

[[rule]]  # tar takes no level; the zstd one must not follow it there
prefix = "e/"
output_prefix = "out/e/"
format = "tar"
"#;
        assert_eq!(
            rules(text),
            [
                rule("a/", "out/a/", "zstd", Some(19)),
                rule("b/", "out/b/", "zstd", Some(19)),
                rule("c/", "out/c/", "gzip", None),
                rule("d/", "out/d/", "gzip", Some(9)),
                rule("e/", "out/e/", "tar", None),
            ]
        );
    }

    #[test]
    fn the_default_level_without_a_default_format_goes_with_zip() {
        let text = r#"
[defaults]
level = 9

[[rule]]
prefix = "a/"
output_prefix = "out/a/"

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
format = "zip"

[[rule]]
prefix = "c/"
output_prefix = "out/c/"
format = "zstd"
"#;
        assert_eq!(
            rules(text),
            [
                rule("a/", "out/a/", "zip", Some(9)),
                rule("b/", "out/b/", "zip", Some(9)),
                rule("c/", "out/c/", "zstd", None),
            ]
        );
    }

    #[test]
    fn inline_tables_are_rules_too() {
        let text = "rule = [{ prefix = \"in/\", output_prefix = \"out/\", format = \"gzip\" }]\n";
        assert_eq!(rules(text), [rule("in/", "out/", "gzip", None)]);
    }

    #[test]
    fn syntax_errors_are_reported_where_they_are() {
        assert_eq!(
            problems("[[rule]]\nprefix = data/\n"),
            ["2:10: invalid TOML: string values must be quoted, expected literal string"]
        );
        assert_eq!(
            problems("[[rule]\nprefix = \"a/\"\n"),
            ["1:8: invalid TOML: unclosed array table, expected `]`"]
        );
    }

    #[test]
    fn several_syntax_errors_are_reported_at_once() {
        let text = "[[rule]]\nprefix = \"a/\nlevel = 'x\noutput_prefix = \"b/\"\n";
        assert_eq!(
            problems(text),
            [
                "2:13: invalid TOML: invalid basic string, expected `\"`",
                "3:11: invalid TOML: invalid literal string, expected `'`",
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let text = "[[rule]]\nprefix = \"a/\"\nprefix = \"b/\"\noutput_prefix = \"c/\"\n";
        assert_eq!(problems(text), ["3:1: invalid TOML: duplicate key"]);
    }

    #[test]
    fn unknown_fields_are_reported_everywhere_at_once() {
        let text = r#"colour = "blue"

[defaults]
formt = "gzip"

[[rule]]
prefix = "in/"
output-prefix = "out/"
output_prefix = "out/"
compress = true
"#;
        assert_eq!(
            problems(text),
            [
                "1:1: unknown field \"colour\"; known fields: defaults, rule, prices",
                "4:1: unknown field \"formt\" in [defaults]; did you mean \"format\"? \
                 known fields: format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
                "8:1: unknown field \"output-prefix\" in [[rule]]; did you mean \"output_prefix\"? \
                 known fields: prefix, output_prefix, format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
                "10:1: unknown field \"compress\" in [[rule]]; known fields: prefix, \
                 output_prefix, format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
            ]
        );
    }

    #[test]
    fn a_rule_with_an_unknown_field_is_still_checked() {
        let text = "[[rule]]\nprefix = \"in\"\noutput_prefix = \"out/\"\nlevl = 3\n";
        assert_eq!(
            problems(text),
            [
                "2:10: prefix \"in\" must end with \"/\" so that it stops at a folder boundary \
                 (otherwise it also matches \"in-old/...\"); write \"in/\"",
                "4:1: unknown field \"levl\" in [[rule]]; did you mean \"level\"? known fields: \
                 prefix, output_prefix, format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
            ]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let text = r#"
[defaults]
delete_source = "yes"

[[rule]]
prefix = "in/"
output_prefix = "out/"
level = "high"
"#;
        assert_eq!(
            problems(text),
            [
                "3:17: delete_source: invalid type: string \"yes\", expected a boolean",
                "8:9: level: invalid type: string \"high\", expected i32",
            ]
        );
    }

    /// A value of the wrong type costs only itself: every other problem of its table, and of
    /// the rules that use it, is still found in the same run.
    #[test]
    fn a_wrong_type_hides_no_other_problem() {
        let text = r#"[defaults]
delete_source = "yes"
level = 13
threads = "two"

[[rule]]
prefix = "incoming/"
output_prefix = "processed/"
delete_without_if_match = 1
level = "high"
formt = "gzip"

[[rule]]
prefix = "incoming/logs/"
output_prefix = "incoming/logs/done/"
format = "gzip"
level = 30
delete_source = "no"

[[rule]]
prefix = 7
output_prefix = "processed/other/"
format = ["zstd"]
level = 99
"#;
        assert_eq!(
            problems(text),
            [
                "2:17: delete_source: invalid type: string \"yes\", expected a boolean",
                "3:9: level 13 is out of range for format \"zip\"; use a level from 1 to 12",
                "4:11: threads: invalid type: string \"two\", expected i64",
                "9:27: delete_without_if_match: invalid type: integer `1`, expected a boolean",
                "10:9: level: invalid type: string \"high\", expected i32",
                "11:1: unknown field \"formt\" in [[rule]]; did you mean \"format\"? known \
                 fields: prefix, output_prefix, format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
                "15:17: output_prefix \"incoming/logs/done/\" lies inside the prefix \
                 \"incoming/\" on line 7, so the worker would pick up its own output and \
                 compress it again, forever; choose an output_prefix that is outside every \
                 prefix",
                "15:17: output_prefix \"incoming/logs/done/\" lies inside the prefix \
                 \"incoming/logs/\" of this rule, so the worker would pick up its own output \
                 and compress it again, forever; choose an output_prefix that is outside every \
                 prefix",
                "17:9: level 30 is out of range for format \"gzip\"; use a level from 1 to 12",
                "18:17: delete_source: invalid type: string \"no\", expected a boolean",
                "21:10: prefix: invalid type: integer `7`, expected a string",
                "23:10: format: invalid type: sequence, expected a string",
            ]
        );
    }

    #[test]
    fn tables_and_lists_must_have_the_right_shape() {
        assert_eq!(
            problems("defaults = \"zip\"\n[[rule]]\nprefix = \"in/\"\noutput_prefix = \"out/\"\n"),
            [
                "1:12: defaults must be a table: write [defaults] on a line of its own and its \
              fields on the lines below"
            ]
        );
        assert_eq!(
            problems("[rule]\nprefix = \"in/\"\noutput_prefix = \"out/\"\n"),
            ["1:1: rule must be a list of tables: start each rule with a [[rule]] line"]
        );
        assert_eq!(
            problems("rule = [\"in/\"]\n"),
            [
                "1:9: each rule must be a table with a prefix and an output_prefix, written under \
              a [[rule]] line"
            ]
        );
    }

    #[test]
    fn a_config_without_rules_is_refused() {
        let message = "no [[rule]] is defined, so nothing would ever be compressed; add a \
                       [[rule]] with a prefix and an output_prefix";
        assert_eq!(problems(""), [format!("1:1: {message}")]);
        assert_eq!(problems("# nothing\n"), [format!("1:1: {message}")]);
        assert_eq!(
            problems("[defaults]\nformat = \"gzip\"\n"),
            [format!("1:1: {message}")]
        );
        assert_eq!(problems("\nrule = []\n"), [format!("2:8: {message}")]);
    }

    #[test]
    fn unknown_formats_are_reported_at_the_format() {
        let text =
            "[[rule]]\nprefix = \"in/\"\noutput_prefix = \"out/\"\nformat = \"zipp\"\nlevel = 99\n";
        // The level is not checked against a format that does not exist.
        assert_eq!(
            problems(text),
            ["4:10: unknown format \"zipp\"; known formats: brotli, gzip, tar, tar.gz, tar.zst, \
              zip, zstd"]
        );
    }

    #[test]
    fn bad_levels_are_reported_at_the_level() {
        let text = r#"[[rule]]
prefix = "a/"
output_prefix = "out/a/"
format = "zstd"
level = 30

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
format = "tar"
level = 1

[[rule]]
prefix = "c/"
output_prefix = "out/c/"
level = 0
"#;
        assert_eq!(
            problems(text),
            [
                "5:9: level 30 is out of range for format \"zstd\"; use a level from 1 to 22",
                "11:9: format \"tar\" takes no compression level; remove the level",
                "16:9: level 0 is out of range for format \"zip\"; use a level from 1 to 12",
            ]
        );
    }

    #[test]
    fn threads_must_be_at_least_one() {
        let text = r#"[defaults]
threads = -2

[[rule]]
prefix = "a/"
output_prefix = "out/a/"
threads = 0
"#;
        assert_eq!(
            problems(text),
            [
                "2:11: threads must be at least 1; leave it out to use every core",
                "7:11: threads must be at least 1; leave it out to use every core",
            ]
        );
    }

    #[test]
    fn threads_the_catalog_refuses_are_reported_at_the_threads() {
        let text = "[[rule]]\nprefix = \"a/\"\noutput_prefix = \"out/a/\"\nthreads = 100\n";
        assert_eq!(
            problems(text),
            ["4:11: threads 100 is more than format \"zip\" can use; use at most 64"]
        );
    }

    #[test]
    fn defaults_are_checked_themselves_and_not_again_in_each_rule() {
        let text = r#"[defaults]
format = "zipp"

[[rule]]
prefix = "a/"
output_prefix = "out/a/"

[[rule]]
prefix = "b/"
output_prefix = "out/b/"
format = "gzip"
"#;
        assert_eq!(
            problems(text),
            ["2:10: unknown format \"zipp\"; known formats: brotli, gzip, tar, tar.gz, tar.zst, \
              zip, zstd"]
        );

        let text =
            "[defaults]\nlevel = 13\n\n[[rule]]\nprefix = \"a/\"\noutput_prefix = \"out/a/\"\n";
        assert_eq!(
            problems(text),
            ["2:9: level 13 is out of range for format \"zip\"; use a level from 1 to 12"]
        );
    }

    #[test]
    fn inherited_values_are_blamed_at_the_rule_prefix() {
        // A catalog where only gzip refuses threads, so [defaults] is fine on its own.
        let catalog =
            |format: &str, _level: Option<i32>, threads: Option<usize>| match (format, threads) {
                ("gzip", Some(_)) => {
                    Err("format \"gzip\" compresses on one core; remove threads".to_owned())
                }
                ("gzip" | "zstd", _) => Ok(()),
                _ => Err(format!(
                    "unknown format \"{format}\"; known formats: gzip, zstd"
                )),
            };
        let text = r#"[defaults]
format = "zstd"
threads = 8

[[rule]]
prefix = "a/"
output_prefix = "out/a/"
format = "gzip"
"#;
        assert_eq!(
            problems_with(text, &catalog),
            [
                "6:10: this rule inherits threads 8 from [defaults] (line 3): format \"gzip\" \
              compresses on one core; remove threads"
            ]
        );

        // No format anywhere: the built-in zip, which this catalog lacks.
        let text = "[[rule]]\nprefix = \"a/\"\noutput_prefix = \"out/a/\"\n";
        assert_eq!(
            problems_with(text, &catalog),
            ["2:10: this rule uses the built-in default format \"zip\": unknown format \"zip\"; \
              known formats: gzip, zstd"]
        );
        let text = "[defaults]\nthreads = 1\n\n[[rule]]\nprefix = \"a/\"\noutput_prefix = \"out/a/\"\nformat = \"gzip\"\n";
        assert_eq!(
            problems_with(text, &catalog),
            [
                "1:1: [defaults] uses the built-in default format \"zip\": unknown format \
                 \"zip\"; known formats: gzip, zstd",
                "5:10: this rule inherits threads 1 from [defaults] (line 2): format \"gzip\" \
                 compresses on one core; remove threads",
            ]
        );
    }

    #[test]
    fn prefixes_must_be_folders_without_a_leading_slash() {
        let text = r#"[[rule]]
prefix = ""
output_prefix = "/out/"

[[rule]]
prefix = "/in"
output_prefix = "done"

[[rule]]
prefix = "/"
output_prefix = "ok/"
"#;
        assert_eq!(
            problems(text),
            [
                "2:10: prefix is empty, which would take in every key in the bucket; name a \
                 folder such as \"incoming/\"",
                "3:17: output_prefix \"/out/\" starts with \"/\", but S3 keys never do, so it \
                 would match nothing; write \"out/\"",
                "6:10: prefix \"/in\" starts with \"/\", but S3 keys never do, so it would match \
                 nothing; write \"in/\"",
                "6:10: prefix \"/in\" must end with \"/\" so that it stops at a folder boundary \
                 (otherwise it also matches \"/in-old/...\"); write \"in/\"",
                "7:17: output_prefix \"done\" must end with \"/\" so that it stops at a folder \
                 boundary (otherwise it also matches \"done-old/...\"); write \"done/\"",
                "10:10: prefix \"/\" starts with \"/\", but S3 keys never do, so it would match \
                 nothing; write a folder such as \"incoming/\"",
            ]
        );
    }

    #[test]
    fn missing_prefixes_are_reported_at_the_rule_header() {
        let text = "[[rule]]\nformat = \"gzip\"\n\n  [[rule]]\nprefix = \"a/\"\n";
        assert_eq!(
            problems(text),
            [
                "1:1: this [[rule]] has no prefix; add prefix = \"incoming/\" naming the folder \
                 whose uploads it compresses",
                "1:1: this [[rule]] has no output_prefix; add output_prefix = \"processed/\" \
                 naming the folder the compressed objects go to",
                "4:3: this [[rule]] has no output_prefix; add output_prefix = \"processed/\" \
                 naming the folder the compressed objects go to",
            ]
        );
    }

    #[test]
    fn a_duplicate_prefix_is_reported_at_the_second_naming_the_first() {
        let text = r#"[[rule]]
prefix = "in/"
output_prefix = "out/"

[[rule]]
output_prefix = "out/gz/"
prefix = "in/"
format = "gzip"
"#;
        assert_eq!(
            problems(text),
            [
                "7:10: prefix \"in/\" is already used on line 2; each prefix may have one rule \
              only, so merge the two or change one prefix"
            ]
        );
    }

    #[test]
    fn output_inside_a_source_prefix_is_refused() {
        let text = r#"[[rule]]
prefix = "data/"
output_prefix = "data/compressed/"

[[rule]]
prefix = "uploads/"
output_prefix = "uploads/"

[[rule]]
prefix = "logs/"
output_prefix = "uploads/logs/"
"#;
        assert_eq!(
            problems(text),
            [
                "3:17: output_prefix \"data/compressed/\" lies inside the prefix \"data/\" of \
                 this rule, so the worker would pick up its own output and compress it again, \
                 forever; choose an output_prefix that is outside every prefix",
                "7:17: output_prefix \"uploads/\" is the same as the prefix \"uploads/\" of this \
                 rule, so the worker would pick up its own output and compress it again, \
                 forever; choose an output_prefix that is outside every prefix",
                "11:17: output_prefix \"uploads/logs/\" lies inside the prefix \"uploads/\" on \
                 line 6, so the worker would pick up its own output and compress it again, \
                 forever; choose an output_prefix that is outside every prefix",
            ]
        );
    }

    #[test]
    fn a_source_prefix_inside_an_output_prefix_is_refused() {
        let text = r#"[[rule]]
prefix = "in/"
output_prefix = "archive/"

[[rule]]
prefix = "archive/2024/"
output_prefix = "cold/"

[[rule]]
prefix = "x/y/"
output_prefix = "x/"
"#;
        assert_eq!(
            problems(text),
            [
                "6:10: prefix \"archive/2024/\" lies inside the output_prefix \"archive/\" on \
                 line 3, so the worker would pick up its own output and compress it again, \
                 forever; move this prefix out of every output_prefix",
                "10:10: prefix \"x/y/\" lies inside the output_prefix \"x/\" of this rule, so \
                 the worker would pick up its own output and compress it again, forever; move \
                 this prefix out of every output_prefix",
            ]
        );
    }

    #[test]
    fn outputs_may_nest_in_each_other() {
        let text = r#"[[rule]]
prefix = "in/"
output_prefix = "out/"

[[rule]]
prefix = "in/logs/"
output_prefix = "out/logs/"
"#;
        assert_eq!(rules(text).len(), 2);
    }

    #[test]
    fn every_problem_is_reported_at_once_in_file_order() {
        let text = r#"[defaults]
format = "gzip"
level = 13
threads = 0

[[rule]]
prefix = "incoming"
output_prefix = "processed/"
format = "zstd"
level = 23

[[rule]]
prefix = "incoming/"
output_prefix = "incoming/done/"
speed = "fast"

[[rule]]
prefix = "incoming/"
output_prefix = "elsewhere/"
format = "rar"
"#;
        assert_eq!(
            problems(text),
            [
                "3:9: level 13 is out of range for format \"gzip\"; use a level from 1 to 12",
                "4:11: threads must be at least 1; leave it out to use every core",
                "7:10: prefix \"incoming\" must end with \"/\" so that it stops at a folder \
                 boundary (otherwise it also matches \"incoming-old/...\"); write \"incoming/\"",
                "10:9: level 23 is out of range for format \"zstd\"; use a level from 1 to 22",
                "14:17: output_prefix \"incoming/done/\" lies inside the prefix \"incoming/\" of \
                 this rule, so the worker would pick up its own output and compress it again, \
                 forever; choose an output_prefix that is outside every prefix",
                "14:17: output_prefix \"incoming/done/\" lies inside the prefix \"incoming/\" on \
                 line 18, so the worker would pick up its own output and compress it again, \
                 forever; choose an output_prefix that is outside every prefix",
                "15:1: unknown field \"speed\" in [[rule]]; known fields: prefix, output_prefix, \
                 format, level, threads, delete_source, \
                 delete_without_if_match, min_size, if_not_worth_it",
                "18:10: prefix \"incoming/\" is already used on line 13; each prefix may have \
                 one rule only, so merge the two or change one prefix",
                "20:10: unknown format \"rar\"; known formats: brotli, gzip, tar, tar.gz, \
                 tar.zst, zip, zstd",
            ]
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = "[[rule]]\nprefix = \"in/\"\noutput_prefix = \"out/\"\n# é\nformat = \"zïp\"\n";
        assert_eq!(
            problems(text),
            [
                "5:10: unknown format \"zïp\"; known formats: brotli, gzip, tar, tar.gz, tar.zst, \
              zip, zstd"
            ]
        );
        let text = "rule = [{ prefix = \"日本/\", output_prefix = \"日本/x/\" }]\n";
        assert_eq!(
            problems(text),
            ["1:43: output_prefix \"日本/x/\" lies inside the prefix \"日本/\" of this rule, so \
              the worker would pick up its own output and compress it again, forever; choose \
              an output_prefix that is outside every prefix"]
        );
    }

    #[test]
    fn field_lists_match_the_raw_structs() {
        // Every listed field deserializes, so none is listed without being accepted.
        let text = r#"[defaults]
format = "zstd"
level = 3
threads = 1
delete_source = false
delete_without_if_match = false
min_size = 0
if_not_worth_it = "compress"

[[rule]]
prefix = "in/"
output_prefix = "out/"
format = "zstd"
level = 3
threads = 1
delete_source = false
delete_without_if_match = false
min_size = 0
if_not_worth_it = "compress"
"#;
        let parsed = rules(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(DEFAULTS_FIELDS.len() + 2, RULE_FIELDS.len());
        assert_eq!(
            text.matches(" = ").count(),
            DEFAULTS_FIELDS.len() + RULE_FIELDS.len()
        );
    }

    #[test]
    fn typos_get_a_suggestion_and_strangers_do_not() {
        assert_eq!(closest("formt", RULE_FIELDS), Some("format"));
        assert_eq!(closest("Prefix", RULE_FIELDS), Some("prefix"));
        assert_eq!(closest("thread", RULE_FIELDS), Some("threads"));
        assert_eq!(closest("delete", RULE_FIELDS), None);
        assert_eq!(closest("colour", TOP_LEVEL_FIELDS), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
