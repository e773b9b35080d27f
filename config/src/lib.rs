//! The TOML prefix rules of s3-compressor: schema, defaults, validation, routing and output keys.
//!
//! A config file maps source prefixes to output prefixes and says how to compress what lands
//! under each (see `compressor.toml` beside this crate for the documented schema). This crate
//! knows nothing of codecs, S3 or Lambda: format names stay strings, and whoever owns the
//! formats answers for them through [`FormatCatalog`]. That keeps the rules testable on their
//! own and lets a team add a format without touching the config code.
//!
//! Every problem in a file is collected and reported at once with its line and column, so a
//! broken deployment is fixed in one round trip rather than one error per restart.

mod error;
mod parse;
mod position;
mod prices;
mod route;
mod rule;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use prices::{
    Prices, StorageClass, ARCHIVE_INDEX_BYTES, ARCHIVE_METADATA_BYTES, BILLED_GB, MIN_BILLABLE_IA,
};
pub use route::{NotWorthIt, Routing, SkipReason, MIN_SAMPLE_SAVING};
pub use rule::{IfNotWorthIt, Naming, Rule};

/// What `origin` says for a config that did not come from a file.
pub const BUILTIN_ORIGIN: &str = "built-in default";

/// Answered by whoever owns the formats (the worker implements it over its registry).
///
/// A trait rather than a list of names so the level ranges and thread limits stay with the
/// formats that define them, and this crate never has to learn them.
pub trait FormatCatalog {
    /// Ok if `format` exists and accepts `level` and `threads`; otherwise a sentence a user can
    /// act on, such as `unknown format "zipp"; known formats: gzip, zip` or
    /// `level 30 is out of range for format "zstd"; use a level from 1 to 22`.
    ///
    /// `None` means "the format's default" for `level` and "every available core" for
    /// `threads`, and must be accepted by every format that exists: validation asks about the
    /// format alone first so each message can point at the value it is about.
    fn check(&self, format: &str, level: Option<i32>, threads: Option<usize>)
        -> Result<(), String>;
}

/// Any function with the right shape is a catalog, which keeps stand-ins in tests one line long.
impl<F> FormatCatalog for F
where
    F: Fn(&str, Option<i32>, Option<usize>) -> Result<(), String>,
{
    fn check(
        &self,
        format: &str,
        level: Option<i32>,
        threads: Option<usize>,
    ) -> Result<(), String> {
        self(format, level, threads)
    }
}

/// A validated set of rules, ready to route keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    origin: String,
    rules: Vec<Rule>,
    prices: Prices,
}

impl Config {
    /// Parses and validates `text`; `origin` (usually the file's path) prefixes every problem.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] with every problem found, each at its line and column.
    pub fn parse(
        text: &str,
        origin: &str,
        catalog: &dyn FormatCatalog,
    ) -> Result<Config, ConfigError> {
        match parse::parse(text, catalog) {
            Ok((rules, prices)) => Ok(Config {
                origin: origin.to_owned(),
                rules,
                prices,
            }),
            Err(problems) => Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            }),
        }
    }

    /// Reads and validates the file at `path`, naming it in every problem.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`] as for
    /// [`Config::parse`].
    pub fn load(path: &Path, catalog: &dyn FormatCatalog) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), catalog)
    }

    /// The behaviour with no config file: one rule `incoming/` -> `processed/`, zip at its
    /// default level on every core, deleting the source once compressed.
    ///
    /// Not checked against a catalog: every build of the worker has zip, and this must work
    /// before anything else is known.
    pub fn builtin_default() -> Config {
        Config {
            origin: BUILTIN_ORIGIN.to_owned(),
            rules: vec![Rule {
                prefix: "incoming/".to_owned(),
                output_prefix: "processed/".to_owned(),
                format: parse::DEFAULT_FORMAT.to_owned(),
                level: None,
                threads: None,
                delete_source: parse::DEFAULT_DELETE_SOURCE,
                delete_without_if_match: false,
                min_size: 0,
                if_not_worth_it: IfNotWorthIt::Compress,
            }],
            prices: Prices::default(),
        }
    }

    /// The path the config was loaded from, or [`BUILTIN_ORIGIN`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The `[prices]` table, each field left out at its default (us-east-1 list prices).
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// The rules in file order, with `[defaults]` already applied.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Which rule, if any, handles `key`, checked in this order: a key ending in `/` is a
    /// folder marker (the prefix itself included); a key under any rule's output prefix is the
    /// worker's own output; otherwise the rule with the longest matching prefix wins, so
    /// `incoming/logs/` can refine `incoming/`.
    pub fn route(&self, key: &str) -> Routing<'_> {
        route::route(&self.rules, key)
    }
}

#[cfg(test)]
pub(crate) mod test_catalog {
    /// A stand-in for the worker's registry with the real formats' names and level ranges.
    ///
    /// Threads are capped at 64 only so that tests can see a catalog refuse a thread count.
    pub(crate) fn check(
        format: &str,
        level: Option<i32>,
        threads: Option<usize>,
    ) -> Result<(), String> {
        const FORMATS: &[(&str, Option<(i32, i32)>)] = &[
            ("brotli", Some((0, 11))),
            ("gzip", Some((1, 12))),
            ("tar", None),
            ("tar.gz", Some((1, 12))),
            ("tar.zst", Some((1, 22))),
            ("zip", Some((1, 12))),
            ("zstd", Some((1, 22))),
        ];
        let Some((_, levels)) = FORMATS.iter().find(|(name, _)| *name == format) else {
            let known: Vec<&str> = FORMATS.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "unknown format \"{format}\"; known formats: {}",
                known.join(", ")
            ));
        };
        match (levels, level) {
            (None, Some(_)) => {
                return Err(format!(
                    "format \"{format}\" takes no compression level; remove the level"
                ))
            }
            (Some((min, max)), Some(level)) if !(*min..=*max).contains(&level) => {
                return Err(format!(
                    "level {level} is out of range for format \"{format}\"; use a level from {min} to {max}"
                ))
            }
            _ => {}
        }
        match threads {
            Some(threads) if threads > 64 => Err(format!(
                "threads {threads} is more than format \"{format}\" can use; use at most 64"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_routes_incoming_to_processed_as_zip() {
        let config = Config::builtin_default();
        assert_eq!(config.origin(), "built-in default");
        assert_eq!(
            config.rules(),
            [Rule {
                prefix: "incoming/".into(),
                output_prefix: "processed/".into(),
                format: "zip".into(),
                level: None,
                threads: None,
                delete_source: true,
                delete_without_if_match: false,
                min_size: 0,
                if_not_worth_it: IfNotWorthIt::Compress,
            }]
        );
        let Routing::Matched(rule) = config.route("incoming/a/report.csv") else {
            panic!("incoming/a/report.csv should match the built-in rule");
        };
        assert_eq!(
            rule.output_key("incoming/a/report.csv", "zip", Naming::ReplaceExtension),
            "processed/a/report.zip"
        );
        assert_eq!(
            config.route("processed/a/report.zip"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "processed/".into()
            })
        );
    }

    #[test]
    fn builtin_default_is_what_an_equivalent_file_says() {
        let text = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n";
        let parsed = Config::parse(text, BUILTIN_ORIGIN, &test_catalog::check)
            .expect("the equivalent file is valid");
        assert_eq!(parsed, Config::builtin_default());
    }

    #[test]
    fn load_reports_the_path_it_could_not_read() {
        let path = Path::new("/nonexistent/s3-compressor/compressor.toml");
        let error = Config::load(path, &test_catalog::check).expect_err("the file does not exist");
        assert_eq!(
            error.to_string(),
            "cannot read config file /nonexistent/s3-compressor/compressor.toml"
        );
        let cause = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .expect("the OS error is the source");
        assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_problems() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[defaults]\nformat = \"zip\"\n").expect("temp file is writable");
        let error = Config::load(&path, &test_catalog::check).expect_err("no rules");
        assert_eq!(
            error.to_string(),
            format!(
                "{}:1:1: no [[rule]] is defined, so nothing would ever be compressed; \
                 add a [[rule]] with a prefix and an output_prefix",
                path.display()
            )
        );
    }

    const DEPLOYED: &str = include_str!("../compressor.toml");

    fn deployed() -> Config {
        Config::parse(DEPLOYED, "config/compressor.toml", &test_catalog::check)
            .unwrap_or_else(|error| panic!("the deployed config is invalid:\n{error}"))
    }

    /// The documented `[prices]` of the shipped config, uncommented, are the built-in
    /// defaults: the file cannot drift from the code.
    #[test]
    fn the_documented_prices_are_the_defaults() {
        let (_, prices) = DEPLOYED
            .split_once("\n[prices]\n")
            .expect("the shipped config documents [prices]");
        let uncommented: String = prices
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(uncommented.lines().count(), 13, "{uncommented}");
        let text = format!("{RULE}[prices]\n{uncommented}");
        let config = Config::parse(&text, "prices.toml", &test_catalog::check).expect("valid");
        assert_eq!(*config.prices(), Prices::default());
        assert_eq!(*deployed().prices(), Prices::default());
    }

    const RULE: &str = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n";

    #[test]
    fn prices_override_the_defaults_field_by_field() {
        let text = format!("{RULE}[prices]\nstandard_gb_month = 0.025\nget_per_1000 = 0\n");
        let config = Config::parse(&text, "prices.toml", &test_catalog::check).expect("valid");
        assert_eq!(
            *config.prices(),
            Prices {
                standard_gb_month: 0.025,
                get_per_1000: 0.0,
                ..Prices::default()
            }
        );
    }

    #[test]
    fn every_problem_of_the_prices_is_reported_at_once() {
        let text = format!(
            "{RULE}[prices]\nstandard_gb_mnth = 0.025\nget_per_1000 = \"cheap\"\n\
             put_per_1000 = -1\nlambda_gb_second = 0.00001\n"
        );
        let error = Config::parse(&text, "prices.toml", &test_catalog::check).expect_err("bad");
        assert_eq!(
            error.to_string(),
            "prices.toml:5:1: unknown field \"standard_gb_mnth\" in [prices]; did you mean \
             \"standard_gb_month\"? known fields: standard_gb_month, standard_ia_gb_month, \
             onezone_ia_gb_month, glacier_ir_gb_month, glacier_gb_month, deep_archive_gb_month, \
             intelligent_tiering_gb_month, put_per_1000, get_per_1000, ia_retrieval_gb, \
             glacier_ir_retrieval_gb, lambda_gb_second, lambda_per_million_requests\n\
             prices.toml:6:16: get_per_1000 must be a number of USD, such as 0.023\n\
             prices.toml:7:16: put_per_1000 -1 is not a price; give USD as a number, 0 or more"
        );
        let error = Config::parse(
            &format!("prices = 3\n{RULE}"),
            "p.toml",
            &test_catalog::check,
        )
        .expect_err("not a table");
        assert!(
            error.to_string().contains("prices must be a table"),
            "{error}"
        );
    }

    #[test]
    fn the_deployed_config_is_the_default_plus_three_routes() {
        let rule = |prefix: &str, output_prefix: &str, format: &str, level| Rule {
            prefix: prefix.into(),
            output_prefix: output_prefix.into(),
            format: format.into(),
            level,
            threads: None,
            delete_source: true,
            delete_without_if_match: false,
            min_size: 0,
            if_not_worth_it: IfNotWorthIt::Compress,
        };
        let config = deployed();
        assert_eq!(config.origin(), "config/compressor.toml");
        assert_eq!(
            config.rules(),
            [
                rule("incoming/", "processed/", "zip", None),
                rule("incoming/logs/", "processed/logs/", "gzip", Some(6)),
                rule(
                    "incoming/archives/",
                    "processed/archives/",
                    "zstd",
                    Some(19)
                ),
                rule("incoming/bundles/", "processed/bundles/", "tar.zst", None),
            ]
        );
        assert_eq!(config.rules()[0], Config::builtin_default().rules()[0]);
    }

    #[test]
    fn the_deployed_config_routes_each_example_as_its_comments_say() {
        let config = deployed();
        let examples = [
            (
                "incoming/2024/report.csv",
                "zip",
                Naming::ReplaceExtension,
                "processed/2024/report.zip",
            ),
            (
                "incoming/logs/2024/app.log",
                "gz",
                Naming::AppendExtension,
                "processed/logs/2024/app.log.gz",
            ),
            (
                "incoming/logs/report.log",
                "gz",
                Naming::AppendExtension,
                "processed/logs/report.log.gz",
            ),
            (
                "incoming/archives/data.csv",
                "zst",
                Naming::AppendExtension,
                "processed/archives/data.csv.zst",
            ),
            (
                "incoming/bundles/site.html",
                "tar.zst",
                Naming::ReplaceExtension,
                "processed/bundles/site.tar.zst",
            ),
        ];
        for (key, extension, naming, expected) in examples {
            let Routing::Matched(rule) = config.route(key) else {
                panic!("{key} should be matched");
            };
            let output = rule.output_key(key, extension, naming);
            assert_eq!(output, expected);
            assert!(
                matches!(
                    config.route(&output),
                    Routing::Skipped(SkipReason::UnderOutputPrefix { .. })
                ),
                "{output} must not be compressed again"
            );
        }
        assert_eq!(
            config.route("incoming/logs/"),
            Routing::Skipped(SkipReason::FolderMarker)
        );
        assert_eq!(
            config.route("uploads/report.csv"),
            Routing::Skipped(SkipReason::NoMatchingRule)
        );
    }

    #[test]
    fn the_deployed_config_documents_every_field() {
        for field in [
            "[defaults]",
            "[[rule]]",
            "format:",
            "level:",
            "threads:",
            "delete_source:",
            "delete_without_if_match:",
            "if_not_worth_it:",
            "min_size:",
            "prefix ",
            "output_prefix ",
        ] {
            assert!(
                DEPLOYED
                    .lines()
                    .any(|line| line.starts_with('#') && line.contains(field)),
                "compressor.toml has no comment about {field}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        /// Folder-shaped prefixes of 1 to 3 segments drawn from `segment`.
        fn folder(segment: &'static str) -> impl Strategy<Value = String> {
            proptest::collection::vec(segment, 1..=3).prop_map(|parts| parts.join("/") + "/")
        }

        /// Source prefixes from a tiny alphabet, so that they often nest (`a/`, `a/b/`) and
        /// longest-prefix matching gets exercised; output prefixes from a wider one, so that
        /// they collide with a source now and then and such configs are refused, yet most
        /// generated configs are valid.
        fn valid_config() -> impl Strategy<Value = Config> {
            proptest::collection::vec((folder("[ab]{1,2}"), folder("[a-z]{1,2}")), 1..=4)
                .prop_filter_map("prefixes overlap", |pairs| {
                    let text: String = pairs
                        .iter()
                        .map(|(prefix, output_prefix)| {
                            format!(
                                "[[rule]]\nprefix = \"{prefix}\"\noutput_prefix = \"{output_prefix}\"\n"
                            )
                        })
                        .collect();
                    Config::parse(&text, "generated", &test_catalog::check).ok()
                })
        }

        fn check_key(config: &Config, key: &str) -> Result<(), TestCaseError> {
            let namings = [
                ("zip", Naming::ReplaceExtension),
                ("tar.zst", Naming::ReplaceExtension),
                ("gz", Naming::AppendExtension),
            ];
            match config.route(key) {
                Routing::Skipped(SkipReason::FolderMarker) => prop_assert!(key.ends_with('/')),
                Routing::Matched(rule) => {
                    prop_assert!(key.starts_with(&rule.prefix));
                    for (extension, naming) in namings {
                        let output = rule.output_key(key, extension, naming);
                        prop_assert!(output.starts_with(&rule.output_prefix), "{output}");
                        for any_rule in config.rules() {
                            prop_assert!(!output.starts_with(&any_rule.prefix), "{output}");
                        }
                        prop_assert!(
                            !matches!(config.route(&output), Routing::Matched(_)),
                            "{output} would be compressed again"
                        );
                    }
                }
                other => prop_assert!(false, "{key} under a source prefix routed to {other:?}"),
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn output_never_routes_back(config in valid_config(), rule in any::<Index>(), rest in any::<String>()) {
                let prefix = &rule.get(config.rules()).prefix;
                check_key(&config, &format!("{prefix}{rest}"))?;
            }

            #[test]
            fn deployed_output_never_routes_back(rule in any::<Index>(), rest in "[^\u{0}]{0,60}") {
                let config = deployed();
                let prefix = &rule.get(config.rules()).prefix;
                check_key(&config, &format!("{prefix}{rest}"))?;
            }

            #[test]
            fn longest_prefix_wins(config in valid_config(), rest in "[ab/]{0,8}[a-z.]{1,8}") {
                for rule in config.rules() {
                    let key = format!("{}{rest}", rule.prefix);
                    let Routing::Matched(matched) = config.route(&key) else {
                        return Err(TestCaseError::fail(format!("{key} was not matched")));
                    };
                    let longest = config
                        .rules()
                        .iter()
                        .filter(|candidate| key.starts_with(&candidate.prefix))
                        .map(|candidate| candidate.prefix.len())
                        .max();
                    prop_assert_eq!(Some(matched.prefix.len()), longest);
                }
            }
        }
    }
}
