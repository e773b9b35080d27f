use std::path::Path;
use std::sync::Arc;

use s3_compressor_config::{
    Config, FormatCatalog, IfNotWorthIt, Naming, NotWorthIt, Routing, Rule, SkipReason,
};
use s3_compressor_formats::{Compressor, Kind, Options, Registry};

use crate::pipeline::identity::SourceIdentity;
use crate::Error;

/// The config with every rule's format resolved against the registry.
///
/// Built once at start-up, so a config naming an unknown format or a bad level stops the
/// process with the config's own error before any object is touched.
#[derive(Debug)]
pub struct Routes {
    config: Config,
    /// One per rule, in the config's order.
    compressors: Vec<Arc<Compressor>>,
    hash: String,
}

/// One rule as the worker applies it: what `check-config --json` prints for it, and what the
/// config's hash covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleSummary<'a> {
    pub prefix: &'a str,
    pub output_prefix: &'a str,
    pub format: &'a str,
    /// The level the format compresses at (the format's default when the rule names none);
    /// `None` for a format without levels (tar).
    pub level: Option<i32>,
    /// `None`: every available core.
    pub threads: Option<usize>,
    pub delete_source: bool,
    /// Left out when false, so that every config written before the option keeps its hash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete_without_if_match: bool,
    /// Left out when 0, for the same reason.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_size: u64,
    /// `"keep"` or `"move"`, or left out for `"compress"`, for the same reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_not_worth_it: Option<&'static str>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// How many hex digits of the SHA-256 the config's hash keeps: 48 bits, plenty to tell the
/// few configs a deployment ever has apart, and short enough to read in a table or a header.
const HASH_HEX_DIGITS: usize = 12;

/// What the worker will do with one key.
#[derive(Debug)]
pub enum Decision<'a> {
    Compress(Plan<'a>),
    /// The rule leaves the object where it is: compressing it would not pay.
    Keep {
        rule: &'a Rule,
        reason: NotWorthIt,
    },
    /// The rule moves the object unchanged to the plan's output key: compressing it would not
    /// pay.
    Move {
        plan: Plan<'a>,
        reason: NotWorthIt,
    },
    Skip(SkipReason),
    /// A rule takes the key, but its output cannot exist: a failure a person must see, found
    /// before anything is read.
    Refuse(String),
}

/// S3's longest key, in bytes of UTF-8. moto and `serve` take longer ones, so the worker checks
/// for itself rather than learn it from a PutObject after the whole compression.
pub const MAX_KEY_BYTES: usize = 1024;

/// How one key is compressed and where the result goes.
#[derive(Debug)]
pub struct Plan<'a> {
    pub rule: &'a Rule,
    pub compressor: &'a Arc<Compressor>,
    pub output_key: String,
}

impl Routes {
    /// Loads the config at `path`, or the built-in default when there is none.
    pub fn load(path: Option<&Path>, registry: &Registry) -> Result<Self, Error> {
        let catalog = RegistryCatalog(registry);
        let config = match path {
            Some(path) => Config::load(path, &catalog)?,
            None => Config::builtin_default(),
        };
        Self::resolve(config, registry)
    }

    fn resolve(config: Config, registry: &Registry) -> Result<Self, Error> {
        let compressors = config
            .rules()
            .iter()
            .map(|rule| {
                let options = Options {
                    level: rule.level,
                    threads: rule.threads,
                };
                Ok(Arc::new(registry.get(&rule.format)?.compressor(&options)?))
            })
            .collect::<Result<_, Error>>()?;
        let mut routes = Self {
            config,
            compressors,
            hash: String::new(),
        };
        routes.hash = hash_of(&routes.summaries())?;
        Ok(routes)
    }

    /// A short, stable name for what this config makes the worker do: the first 12 hex digits
    /// of the SHA-256 of its rules as [`Routes::summaries`] renders them (compact JSON, in the
    /// config's order, every default and the effective level filled in).
    ///
    /// Hashed from the validated rules rather than the file's bytes because the hash must
    /// name the behaviour: the built-in default has no file at all, and a comment, a blank
    /// line or a setting moved into `[defaults]` changes the bytes but not one output, so it
    /// must not look like a new config in an output's metadata or in a rollback. The effective
    /// level is part of it, so a binary whose format default changed shows a new hash too.
    pub fn config_hash(&self) -> &str {
        &self.hash
    }

    /// Each rule as the worker applies it, in the config's order.
    pub fn summaries(&self) -> Vec<RuleSummary<'_>> {
        self.rules()
            .map(|(rule, compressor)| RuleSummary {
                prefix: &rule.prefix,
                output_prefix: &rule.output_prefix,
                format: &rule.format,
                level: compressor.settings().level,
                threads: rule.threads,
                delete_source: rule.delete_source,
                delete_without_if_match: rule.delete_without_if_match,
                min_size: rule.min_size,
                if_not_worth_it: (rule.if_not_worth_it != IfNotWorthIt::Compress)
                    .then(|| rule.if_not_worth_it.name()),
            })
            .collect()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The source prefixes to list to find every object a rule takes: the rules' prefixes,
    /// sorted, without those nested in another.
    pub fn source_prefixes(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = self
            .config
            .rules()
            .iter()
            .map(|rule| rule.prefix.clone())
            .collect();
        prefixes.sort();
        prefixes.dedup_by(|nested, parent| nested.starts_with(parent.as_str()));
        prefixes
    }

    /// The first source prefix that takes keys under `prefix`, or is taken by it: what makes
    /// `prefix` unfit for the worker's own objects, which no rule may route.
    pub fn source_prefix_overlapping(&self, prefix: &str) -> Option<String> {
        self.source_prefixes()
            .into_iter()
            .find(|source| prefix.starts_with(source.as_str()) || source.starts_with(prefix))
    }

    /// Each rule with the compressor it resolved to.
    pub fn rules(&self) -> impl Iterator<Item = (&Rule, &Arc<Compressor>)> {
        self.config.rules().iter().zip(&self.compressors)
    }

    /// What to do with `key`, of `size` bytes when known: routing, then the rule's policy for
    /// objects whose compression would not pay, as far as the size shows it (the content is
    /// judged later, on the first bytes read).
    pub fn decide(&self, key: &str, size: Option<u64>) -> Decision<'_> {
        let rule = match self.config.route(key) {
            Routing::Matched(rule) => rule,
            Routing::Skipped(reason) => return Decision::Skip(reason),
        };
        let Some((rule, compressor)) = self
            .rules()
            .find(|(candidate, _)| std::ptr::eq(*candidate, rule))
        else {
            // `route` only returns rules of this config, each of which has a compressor.
            return Decision::Skip(SkipReason::NoMatchingRule);
        };
        if let Some(reason) = rule.spares_by_size(size) {
            return self.spare(key, rule, compressor, reason);
        }
        let registration = compressor.registration();
        let naming = match registration.kind {
            Kind::Archive => Naming::ReplaceExtension,
            Kind::Stream => Naming::AppendExtension,
        };
        let output_key = rule.output_key(key, registration.extension, naming);
        match self.plan(key, rule, compressor, output_key) {
            Ok(plan) => Decision::Compress(plan),
            Err(refused) => refused,
        }
    }

    /// What becomes of `key`, which `rule` spares its compression for `reason`: kept, or moved
    /// under its own name to the rule's output prefix.
    pub(crate) fn spare<'a>(
        &'a self,
        key: &str,
        rule: &'a Rule,
        compressor: &'a Arc<Compressor>,
        reason: NotWorthIt,
    ) -> Decision<'a> {
        if rule.if_not_worth_it != IfNotWorthIt::Move {
            return Decision::Keep { rule, reason };
        }
        match self.plan(key, rule, compressor, rule.moved_key(key)) {
            Ok(plan) => Decision::Move { plan, reason },
            Err(refused) => refused,
        }
    }

    /// A plan to write `output_key`, or the refusal of one S3 would not take.
    fn plan<'a>(
        &'a self,
        key: &str,
        rule: &'a Rule,
        compressor: &'a Arc<Compressor>,
        output_key: String,
    ) -> Result<Plan<'a>, Decision<'a>> {
        if output_key.len() > MAX_KEY_BYTES {
            return Err(Decision::Refuse(format!(
                "the output key would be {} bytes ({} -> {}), over S3's limit of \
                 {MAX_KEY_BYTES}; the source is kept: shorten its key, or the rule's output \
                 prefix \"{}\"",
                output_key.len(),
                rule.prefix,
                rule.output_prefix,
                rule.output_prefix,
            )));
        }
        if let Err(error) = SourceIdentity::check_fits(key, &rule.prefix, &self.hash) {
            return Err(Decision::Refuse(error.to_string()));
        }
        Ok(Plan {
            rule,
            compressor,
            output_key,
        })
    }
}

fn hash_of(summaries: &[RuleSummary<'_>]) -> Result<String, Error> {
    let canonical = serde_json::to_vec(summaries).map_err(Error::Render)?;
    Ok(sha256_hex(&canonical)
        .chars()
        .take(HASH_HEX_DIGITS)
        .collect())
}

/// The SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Lets the config check format names and options against the linked-in formats, without the
/// config crate knowing any of them.
struct RegistryCatalog<'a>(&'a Registry);

impl FormatCatalog for RegistryCatalog<'_> {
    fn check(
        &self,
        format: &str,
        level: Option<i32>,
        threads: Option<usize>,
    ) -> Result<(), String> {
        self.0
            .get(format)
            .and_then(|registration| registration.settings(&Options { level, threads }))
            .map(drop)
            .map_err(|error| error.to_string())
    }
}
