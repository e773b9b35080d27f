use std::fmt;

use crate::{IfNotWorthIt, Rule};

/// What to do with an object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing<'a> {
    /// Compress it with this rule.
    Matched(&'a Rule),
    /// Leave it alone, for this reason.
    Skipped(SkipReason),
}

/// Why a key is left alone. Each is an ordinary outcome, not an error: a bucket holds more
/// than the worker's uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The key ends with `/`: the empty object consoles create to show a folder.
    FolderMarker,
    /// The key is the worker's own output. Validation keeps output prefixes out of source
    /// prefixes, so this only fires for keys no rule would match anyway; it stays as a runtime
    /// guard because compressing output again would never stop.
    UnderOutputPrefix { output_prefix: String },
    /// No rule's prefix is a prefix of the key.
    NoMatchingRule,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::FolderMarker => {
                f.write_str("the key ends with \"/\", so it is a folder marker, not a file")
            }
            SkipReason::UnderOutputPrefix { output_prefix } => write!(
                f,
                "the key is under the output prefix \"{output_prefix}\", so it is compressed \
                 output; compressing it again would never stop"
            ),
            SkipReason::NoMatchingRule => f.write_str("no rule's prefix matches the key"),
        }
    }
}

/// Why an object its rule takes would not pay for its compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotWorthIt {
    /// Smaller than the rule's `min_size`: its requests cost more than its storage would save.
    BelowMinSize { size: u64, min_size: u64 },
    /// Its first bytes show a format that is compressed already (the name of that format):
    /// compressing it again saves next to nothing and costs a download, the work and an upload.
    AlreadyCompressed { kind: &'static str },
    /// A sample of its first `sampled` bytes compressed to `compressed`, saving less than
    /// [`MIN_SAMPLE_SAVING`]: content no signature names, yet compressed or random all the same.
    DoesNotShrink { sampled: u64, compressed: u64 },
}

/// The least share of a sample that compression must save for the object to be compressed
/// under a rule that keeps what does not pay. Content compressed already saves nothing or
/// grows (a format stores what will not shrink, and adds its headers); any real redundancy,
/// even in binaries, saves ten times this.
pub const MIN_SAMPLE_SAVING: f64 = 0.02;

impl fmt::Display for NotWorthIt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotWorthIt::BelowMinSize { size, min_size } => {
                write!(f, "below min_size {min_size} ({size} bytes)")
            }
            NotWorthIt::AlreadyCompressed { kind } => write!(f, "already compressed ({kind})"),
            NotWorthIt::DoesNotShrink {
                sampled,
                compressed,
            } => write!(
                f,
                "does not shrink (its first {sampled} bytes compress to {compressed})"
            ),
        }
    }
}

impl Rule {
    /// Whether this rule spares an object of `size` bytes its compression (keeps or moves it,
    /// as [`Rule::if_not_worth_it`] says), and why. `None` for an unknown size: the worker asks
    /// again once a read tells it.
    pub fn spares_by_size(&self, size: Option<u64>) -> Option<NotWorthIt> {
        let size = size?;
        (self.judges_content() && size < self.min_size).then_some(NotWorthIt::BelowMinSize {
            size,
            min_size: self.min_size,
        })
    }

    /// Whether this rule spares content of `kind`, a format found compressed already in an
    /// object's first bytes (`None`: none was found), its compression, and why.
    pub fn spares_content(&self, kind: Option<&'static str>) -> Option<NotWorthIt> {
        let kind = kind?;
        self.judges_content()
            .then_some(NotWorthIt::AlreadyCompressed { kind })
    }

    /// Whether this rule spares an object whose first `sampled` bytes compress to `compressed`
    /// bytes in its format its compression, and why.
    pub fn spares_sample(&self, sampled: u64, compressed: u64) -> Option<NotWorthIt> {
        let saved = sampled.saturating_sub(compressed) as f64;
        (self.judges_content() && sampled > 0 && saved < sampled as f64 * MIN_SAMPLE_SAVING)
            .then_some(NotWorthIt::DoesNotShrink {
                sampled,
                compressed,
            })
    }

    /// Whether an object's first bytes matter to this rule: only a rule that keeps or moves
    /// what does not pay looks at them.
    pub fn judges_content(&self) -> bool {
        self.if_not_worth_it != IfNotWorthIt::Compress
    }

    /// The policy in a sentence, for `explain` and `check-config`; `None` when everything is
    /// compressed.
    pub fn policy(&self) -> Option<String> {
        let done = match self.if_not_worth_it {
            IfNotWorthIt::Compress => return None,
            IfNotWorthIt::Keep => "kept",
            IfNotWorthIt::Move => "moved unchanged to the output prefix",
        };
        Some(match self.min_size {
            0 => format!("already-compressed content is {done}"),
            min_size => {
                format!("already-compressed content and objects under {min_size} bytes are {done}")
            }
        })
    }
}

/// Routes `key` in this order: a folder marker (any key ending in `/`, the prefix itself
/// included) is skipped; then a key under any rule's output prefix; then the rule with the
/// longest matching source prefix wins, so `incoming/logs/` can refine `incoming/`.
pub(crate) fn route<'a>(rules: &'a [Rule], key: &str) -> Routing<'a> {
    if key.ends_with('/') {
        return Routing::Skipped(SkipReason::FolderMarker);
    }
    if let Some(rule) = longest(rules, key, |rule| &rule.output_prefix) {
        return Routing::Skipped(SkipReason::UnderOutputPrefix {
            output_prefix: rule.output_prefix.clone(),
        });
    }
    match longest(rules, key, |rule| &rule.prefix) {
        Some(rule) => Routing::Matched(rule),
        None => Routing::Skipped(SkipReason::NoMatchingRule),
    }
}

/// The rule whose chosen prefix is the longest one `key` starts with; the first in file order
/// on a tie, which only output prefixes can have.
fn longest<'a>(
    rules: &'a [Rule],
    key: &str,
    prefix: impl Fn(&Rule) -> &String,
) -> Option<&'a Rule> {
    rules
        .iter()
        .filter(|rule| key.starts_with(prefix(rule).as_str()))
        .fold(None, |best: Option<&Rule>, rule| match best {
            Some(best) if prefix(best).len() >= prefix(rule).len() => Some(best),
            _ => Some(rule),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, output_prefix: &str) -> Rule {
        Rule {
            prefix: prefix.into(),
            output_prefix: output_prefix.into(),
            format: "zip".into(),
            level: None,
            threads: None,
            delete_source: true,
            delete_without_if_match: false,
            min_size: 0,
            if_not_worth_it: IfNotWorthIt::Compress,
        }
    }

    fn rules() -> Vec<Rule> {
        vec![
            rule("incoming/", "processed/"),
            rule("incoming/logs/", "processed/logs/"),
            rule("incoming/logs/debug/", "archive/debug/"),
        ]
    }

    fn matched_prefix<'a>(rules: &'a [Rule], key: &str) -> &'a str {
        match route(rules, key) {
            Routing::Matched(rule) => &rule.prefix,
            Routing::Skipped(reason) => panic!("{key} was skipped: {reason}"),
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_file_order() {
        let mut rules = rules();
        for _ in 0..2 {
            assert_eq!(matched_prefix(&rules, "incoming/a.csv"), "incoming/");
            assert_eq!(
                matched_prefix(&rules, "incoming/logs/app.log"),
                "incoming/logs/"
            );
            assert_eq!(
                matched_prefix(&rules, "incoming/logs/debug/x/y.log"),
                "incoming/logs/debug/"
            );
            assert_eq!(matched_prefix(&rules, "incoming/logsX/a"), "incoming/");
            rules.reverse();
        }
    }

    #[test]
    fn folder_markers_are_skipped_including_the_prefix_itself() {
        let rules = rules();
        for key in [
            "incoming/",
            "incoming/logs/",
            "incoming/new folder/",
            "processed/",
            "x/",
        ] {
            assert_eq!(
                route(&rules, key),
                Routing::Skipped(SkipReason::FolderMarker),
                "{key}"
            );
        }
    }

    #[test]
    fn output_is_skipped_naming_the_longest_output_prefix() {
        let rules = rules();
        assert_eq!(
            route(&rules, "processed/a.zip"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "processed/".into()
            })
        );
        assert_eq!(
            route(&rules, "processed/logs/app.log.gz"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "processed/logs/".into()
            })
        );
    }

    #[test]
    fn the_output_guard_comes_before_matching() {
        // A config that validation would refuse, to show the guard holds on its own.
        let rules = vec![rule("data/", "data/compressed/")];
        assert_eq!(
            route(&rules, "data/compressed/a.zip"),
            Routing::Skipped(SkipReason::UnderOutputPrefix {
                output_prefix: "data/compressed/".into()
            })
        );
    }

    #[test]
    fn unmatched_keys_are_skipped() {
        let rules = rules();
        for key in [
            "",
            "report.csv",
            "Incoming/a.csv",
            "incoming",
            "other/incoming/a.csv",
        ] {
            assert_eq!(
                route(&rules, key),
                Routing::Skipped(SkipReason::NoMatchingRule),
                "{key}"
            );
        }
        assert_eq!(
            route(&[], "incoming/a"),
            Routing::Skipped(SkipReason::NoMatchingRule)
        );
    }

    fn keeping(min_size: u64) -> Rule {
        Rule {
            min_size,
            if_not_worth_it: IfNotWorthIt::Keep,
            ..rule("incoming/", "processed/")
        }
    }

    #[test]
    fn a_keeping_rule_keeps_only_what_is_below_min_size() {
        let rule = keeping(4096);
        assert_eq!(
            rule.spares_by_size(Some(4095)),
            Some(NotWorthIt::BelowMinSize {
                size: 4095,
                min_size: 4096
            })
        );
        assert_eq!(
            rule.spares_by_size(Some(0))
                .map(|why| why.to_string())
                .as_deref(),
            Some("below min_size 4096 (0 bytes)")
        );
        assert_eq!(rule.spares_by_size(Some(4096)), None);
        assert_eq!(
            rule.spares_by_size(None),
            None,
            "an unknown size is asked again later"
        );
        assert_eq!(keeping(0).spares_by_size(Some(0)), None);
    }

    #[test]
    fn a_keeping_rule_keeps_compressed_content() {
        let rule = keeping(0);
        assert!(rule.judges_content());
        assert_eq!(
            rule.spares_content(Some("zip"))
                .map(|why| why.to_string())
                .as_deref(),
            Some("already compressed (zip)")
        );
        assert_eq!(rule.spares_content(None), None);
    }

    #[test]
    fn a_keeping_rule_keeps_what_its_sample_shows_does_not_shrink() {
        let rule = keeping(0);
        assert_eq!(
            rule.spares_sample(65536, 65100)
                .map(|why| why.to_string())
                .as_deref(),
            Some("does not shrink (its first 65536 bytes compress to 65100)")
        );
        assert!(rule.spares_sample(100, 180).is_some(), "it grows");
        assert_eq!(rule.spares_sample(65536, 64000), None, "2.3 % saved");
        assert_eq!(rule.spares_sample(65536, 9000), None);
        assert_eq!(
            rule.spares_sample(0, 22),
            None,
            "an empty sample says nothing"
        );
    }

    #[test]
    fn a_compressing_rule_keeps_nothing() {
        let rule = Rule {
            min_size: 4096,
            ..rule("incoming/", "processed/")
        };
        assert!(!rule.judges_content());
        assert_eq!(rule.spares_by_size(Some(1)), None);
        assert_eq!(rule.spares_content(Some("zip")), None);
        assert_eq!(rule.spares_sample(100, 180), None);
        assert_eq!(rule.policy(), None);
    }

    #[test]
    fn the_policy_reads_as_a_sentence() {
        assert_eq!(
            keeping(0).policy().as_deref(),
            Some("already-compressed content is kept")
        );
        assert_eq!(
            keeping(131072).policy().as_deref(),
            Some("already-compressed content and objects under 131072 bytes are kept")
        );
        let moving = Rule {
            if_not_worth_it: IfNotWorthIt::Move,
            ..keeping(32768)
        };
        assert_eq!(
            moving.policy().as_deref(),
            Some(
                "already-compressed content and objects under 32768 bytes are moved unchanged \
                 to the output prefix"
            )
        );
    }

    /// A moving rule judges exactly what a keeping one does; only what becomes of it differs.
    #[test]
    fn a_moving_rule_spares_what_a_keeping_one_does() {
        let moving = Rule {
            if_not_worth_it: IfNotWorthIt::Move,
            ..keeping(4096)
        };
        assert!(moving.judges_content());
        assert_eq!(
            moving.spares_by_size(Some(4095)),
            keeping(4096).spares_by_size(Some(4095))
        );
        assert!(moving.spares_content(Some("jpeg")).is_some());
        assert!(moving.spares_sample(100, 180).is_some());
        assert_eq!(moving.moved_key("incoming/a/x.jpg"), "processed/a/x.jpg");
        assert_eq!(moving.moved_key("incoming/.env"), "processed/.env");
    }

    #[test]
    fn skip_reasons_read_as_sentences() {
        assert_eq!(
            SkipReason::FolderMarker.to_string(),
            "the key ends with \"/\", so it is a folder marker, not a file"
        );
        assert_eq!(
            SkipReason::UnderOutputPrefix {
                output_prefix: "processed/".into()
            }
            .to_string(),
            "the key is under the output prefix \"processed/\", so it is compressed output; \
             compressing it again would never stop"
        );
        assert_eq!(
            SkipReason::NoMatchingRule.to_string(),
            "no rule's prefix matches the key"
        );
    }
}
