/// One route from a source prefix to an output prefix, with `[defaults]` already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Keys starting with this are compressed by this rule (unless a longer prefix matches).
    /// Ends with `/` and never starts with one.
    pub prefix: String,
    /// Where the compressed objects go. Ends with `/`, never starts with one, and neither lies
    /// inside any rule's `prefix` nor contains one.
    pub output_prefix: String,
    /// A format name the catalog accepted; this crate does not interpret it.
    pub format: String,
    /// `None`: the format's default level.
    pub level: Option<i32>,
    /// At least 1 when set. `None`: every available core.
    pub threads: Option<usize>,
    /// Delete the source object once its compressed copy is written.
    pub delete_source: bool,
    /// Delete the source even on a store found to ignore `If-Match` on DeleteObject, where a
    /// newer upload landing during compression would be deleted with it. Off by default: such
    /// a store keeps its sources, since the delete could not be limited to what was read.
    pub delete_without_if_match: bool,
    /// Objects smaller than this many bytes do not pay for their compression. 0: every size
    /// does. Only [`IfNotWorthIt::Keep`] and [`IfNotWorthIt::Move`] act on it.
    pub min_size: u64,
    /// What becomes of an object that does not pay: too small, or compressed already.
    pub if_not_worth_it: IfNotWorthIt,
}

/// What a rule does with an object whose compression would not pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfNotWorthIt {
    /// Compress it anyway, as every object was before the policy existed: every upload under a
    /// prefix becomes an output under its output prefix, whatever it holds.
    #[default]
    Compress,
    /// Leave it where it is, untouched, and say why.
    Keep,
    /// Copy it unchanged, server-side, to the output prefix under its own name, and delete the
    /// source once the copy is proven identical: the output prefix still holds every upload,
    /// without the download, the compute and the upload a compression costs.
    Move,
}

impl IfNotWorthIt {
    /// The word the config file uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compress => "compress",
            Self::Keep => "keep",
            Self::Move => "move",
        }
    }
}

/// How a format's extension joins the source key's file name.
///
/// The caller picks per format: an archive that records the original name inside (zip, tar)
/// replaces the extension, since the name is not lost; a bare compressed stream (gzip, zstd)
/// appends, so that decompressing `report.csv.gz` gives back `report.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `report.csv` -> `report.zip`.
    ReplaceExtension,
    /// `report.csv` -> `report.csv.gz`.
    AppendExtension,
}

impl Rule {
    /// The key to write the compressed form of `source_key` to: the source key with this rule's
    /// `prefix` swapped for its `output_prefix` and `extension` (given without its leading dot,
    /// and possibly with dots of its own, like `tar.zst`) added to the file name:
    /// `incoming/a/b/report.csv` -> `processed/a/b/report.zip` ([`Naming::ReplaceExtension`])
    /// or `processed/a/b/report.csv.gz` ([`Naming::AppendExtension`]).
    ///
    /// Only the last path component loses an extension, so dots in folder names stay, and a
    /// leading dot is part of a name rather than an extension: `.env` -> `.env.zip`, `README`
    /// -> `README.zip`, `a.tar.gz` -> `a.tar.zip`.
    ///
    /// `source_key` should be one that [`Config::route`](crate::Config::route) matched to this
    /// rule. Any other key is placed under `output_prefix` whole rather than refused, so that
    /// the result still never lands under a source prefix.
    pub fn output_key(&self, source_key: &str, extension: &str, naming: Naming) -> String {
        let relative = source_key.strip_prefix(&self.prefix).unwrap_or(source_key);
        let (folder, name) = match relative.rfind('/') {
            Some(slash) => relative.split_at(slash + 1),
            None => ("", relative),
        };
        let stem = match naming {
            Naming::ReplaceExtension => without_extension(name),
            Naming::AppendExtension => name,
        };
        let extension = extension.trim_start_matches('.');
        let mut key = String::with_capacity(
            self.output_prefix.len() + folder.len() + stem.len() + extension.len() + 1,
        );
        key.push_str(&self.output_prefix);
        key.push_str(folder);
        key.push_str(stem);
        if !extension.is_empty() {
            key.push('.');
            key.push_str(extension);
        }
        key
    }

    /// The key a moved object is copied to: `source_key` with this rule's `prefix` swapped for
    /// its `output_prefix`, its name unchanged (`incoming/a/x.jpg` -> `processed/a/x.jpg`).
    pub fn moved_key(&self, source_key: &str) -> String {
        self.output_key(source_key, "", Naming::AppendExtension)
    }
}

/// `name` without its last `.extension`, where a name made of nothing but leading dots before
/// that last dot (`.env`, `..env`) has no extension: those dots belong to the name.
fn without_extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, _)) if stem.chars().any(|c| c != '.') => stem,
        _ => name,
    }
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

    fn replace(key: &str, extension: &str) -> String {
        rule("incoming/", "processed/").output_key(key, extension, Naming::ReplaceExtension)
    }

    fn append(key: &str, extension: &str) -> String {
        rule("incoming/", "processed/").output_key(key, extension, Naming::AppendExtension)
    }

    #[test]
    fn replace_swaps_the_last_extension_of_the_file_name() {
        assert_eq!(
            replace("incoming/a/b/report.csv", "zip"),
            "processed/a/b/report.zip"
        );
        assert_eq!(
            replace("incoming/report.csv", "tar.zst"),
            "processed/report.tar.zst"
        );
        assert_eq!(replace("incoming/a.tar.gz", "zip"), "processed/a.tar.zip");
        assert_eq!(
            replace("incoming/x/README", "zip"),
            "processed/x/README.zip"
        );
        assert_eq!(replace("incoming/x/.env", "zip"), "processed/x/.env.zip");
        assert_eq!(replace("incoming/x/..env", "zip"), "processed/x/..env.zip");
        assert_eq!(
            replace("incoming/x/.env.local", "zip"),
            "processed/x/.env.zip"
        );
        assert_eq!(
            replace("incoming/x/report.", "zip"),
            "processed/x/report.zip"
        );
    }

    #[test]
    fn replace_leaves_dots_in_folders_alone() {
        assert_eq!(
            replace("incoming/v1.2/notes", "zip"),
            "processed/v1.2/notes.zip"
        );
        assert_eq!(
            replace("incoming/v1.2/a.b/c.d.e", "tar"),
            "processed/v1.2/a.b/c.d.tar"
        );
    }

    #[test]
    fn append_keeps_the_whole_file_name() {
        assert_eq!(
            append("incoming/a/b/report.csv", "gz"),
            "processed/a/b/report.csv.gz"
        );
        assert_eq!(append("incoming/a.tar", "zst"), "processed/a.tar.zst");
        assert_eq!(append("incoming/README", "br"), "processed/README.br");
        assert_eq!(append("incoming/.env", "gz"), "processed/.env.gz");
    }

    #[test]
    fn spaces_unicode_and_deep_paths_survive() {
        assert_eq!(
            replace("incoming/Q1 reports/sales final.xlsx", "zip"),
            "processed/Q1 reports/sales final.zip"
        );
        assert_eq!(
            append("incoming/日本/naïve résumé.txt", "gz"),
            "processed/日本/naïve résumé.txt.gz"
        );
        assert_eq!(
            replace("incoming/a/b/c/d/e/f/g/h/i/j/k.log", "tar.gz"),
            "processed/a/b/c/d/e/f/g/h/i/j/k.tar.gz"
        );
        assert_eq!(
            replace("incoming/emoji 🎉.png", "zip"),
            "processed/emoji 🎉.zip"
        );
    }

    #[test]
    fn the_prefix_is_swapped_not_the_first_folder() {
        let logs = rule("incoming/logs/", "processed/logs/");
        assert_eq!(
            logs.output_key("incoming/logs/2024/app.log", "gz", Naming::AppendExtension),
            "processed/logs/2024/app.log.gz"
        );
        let flat = rule("uploads/", "archive/by-upload/");
        assert_eq!(
            flat.output_key("uploads/x.csv", "zip", Naming::ReplaceExtension),
            "archive/by-upload/x.zip"
        );
    }

    #[test]
    fn a_stray_leading_dot_on_the_extension_is_tolerated() {
        assert_eq!(
            replace("incoming/report.csv", ".zip"),
            "processed/report.zip"
        );
        assert_eq!(append("incoming/report.csv", ""), "processed/report.csv");
    }

    #[test]
    fn a_key_outside_the_prefix_still_lands_under_the_output_prefix() {
        assert_eq!(
            replace("elsewhere/report.csv", "zip"),
            "processed/elsewhere/report.zip"
        );
    }
}
