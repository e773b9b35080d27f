//! Which source an output was made from, recorded in the output's metadata.
//!
//! This is what tells a repeated delivery (same source: nothing to do) from a collision (two
//! sources mapping to one output key: never overwrite) and from a newer upload of the same key
//! (replace the older output).
//!
//! S3 takes at most 2 KB of user metadata, and a key of 1,024 bytes percent-encoded can be
//! three times that: a key (or rule prefix) that would not fit is recorded as its SHA-256
//! instead, under a name of its own, which still tells this key from any other.

use std::collections::HashMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::routes::sha256_hex;
use crate::store::{DeleteCondition, ObjectInfo};

const SOURCE_KEY: &str = "source-key";
const SOURCE_KEY_SHA256: &str = "source-key-sha256";
const SOURCE_VERSION_ID: &str = "source-version-id";
const SOURCE_ETAG: &str = "source-etag";
const SOURCE_SIZE: &str = "source-size";
const WORKER_VERSION: &str = "worker-version";
const CONFIG_HASH: &str = "config-hash";
const RULE_PREFIX: &str = "rule-prefix";
const RULE_PREFIX_SHA256: &str = "rule-prefix-sha256";

/// S3's limit on an object's user metadata: the bytes of every name and value. Counted here
/// with each name's `x-amz-meta-` as sent, which S3 may not count: a margin, not a loss.
const MAX_METADATA_BYTES: usize = 2048;
const NAME_PREFIX: &str = "x-amz-meta-";

/// The longest version id S3 gives (its documented limit), and an ETag longer than S3's
/// longest (a quoted MD5 with a part count): what a key's metadata must leave room for
/// before the source has been read.
const MAX_VERSION_ID_BYTES: usize = 1024;
const MAX_ETAG_BYTES: usize = 64;

/// The version id of an object written while versioning was off or suspended.
const NULL_VERSION: &str = "null";

/// S3 metadata travels in HTTP headers, which carry ASCII only and lose leading and trailing
/// spaces: keys are percent-encoded, spaces included.
const METADATA_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// The metadata would pass S3's limit even with the key and rule prefix recorded as hashes:
/// only a version id or ETag longer than S3 gives can do that.
#[derive(Debug, thiserror::Error)]
#[error(
    "the output's metadata would be {bytes} bytes, over S3's limit of {MAX_METADATA_BYTES} \
     even with the key and rule prefix recorded as SHA-256 (for a version id of \
     {version_id_bytes} bytes and an ETag of {etag_bytes}); the source is kept"
)]
pub(crate) struct MetadataTooLarge {
    bytes: usize,
    version_id_bytes: usize,
    etag_bytes: usize,
}

/// The object that was read, as far as later deliveries need to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceIdentity {
    key: String,
    version_id: Option<String>,
    etag: Option<String>,
    size: u64,
}

impl SourceIdentity {
    /// The object a GET of `requested` (the version asked for, if any) returned. A version
    /// asked for by name stays a version even where the answer carries no id: the `null`
    /// version of an object written before versioning was enabled, which S3 reports as
    /// `null` and moto not at all, is then told from newer versions like any other.
    pub(crate) fn read(key: &str, info: &ObjectInfo, requested: Option<&str>) -> Self {
        Self {
            key: key.to_owned(),
            version_id: info
                .version_id
                .clone()
                .or_else(|| requested.map(str::to_owned)),
            etag: info.etag.clone(),
            size: info.size,
        }
    }

    /// Whether `current` (a HEAD of the key) is still the object that was read: the same ETag,
    /// and in a versioned bucket the same version. The ETag counts for the `null` version too,
    /// which an upload to a bucket with versioning suspended replaces under the same id.
    pub(crate) fn is(&self, current: &ObjectInfo) -> bool {
        let same_version = match &self.version_id {
            Some(version_id) => current.version_id.as_deref().unwrap_or(NULL_VERSION) == version_id,
            None => true,
        };
        same_version && self.etag.is_some() && current.etag == self.etag
    }

    /// The object as it was read, as far as this identity tells: what a hand-off records and
    /// the memory budget sizes, where the GET's own answer is gone.
    pub(crate) fn as_read(&self) -> ObjectInfo {
        ObjectInfo {
            size: self.size,
            etag: self.etag.clone(),
            version_id: self.version_id.clone(),
            ..ObjectInfo::default()
        }
    }

    /// What an output carries so any later run can recognise its source, and which worker
    /// (version and commit), config (its hash) and rule (its source prefix) made it, so
    /// whoever finds the output can tell which deployment to look at. Within S3's limit:
    /// the key, then the rule prefix too, recorded as SHA-256 when they would not fit.
    pub(crate) fn output_metadata(
        &self,
        rule_prefix: &str,
        config_hash: &str,
    ) -> Result<HashMap<String, String>, MetadataTooLarge> {
        let mut fixed = vec![
            (SOURCE_SIZE, self.size.to_string()),
            (WORKER_VERSION, crate::VERSION.to_owned()),
            (CONFIG_HASH, config_hash.to_owned()),
        ];
        fixed.extend(self.version_id.clone().map(|id| (SOURCE_VERSION_ID, id)));
        fixed.extend(self.etag.clone().map(|etag| (SOURCE_ETAG, etag)));
        let key = Recorded::new(SOURCE_KEY, SOURCE_KEY_SHA256, &self.key);
        let prefix = Recorded::new(RULE_PREFIX, RULE_PREFIX_SHA256, rule_prefix);
        let choices = [
            [key.plain(), prefix.plain()],
            [key.digest(), prefix.plain()],
            [key.digest(), prefix.digest()],
        ];
        let mut bytes = 0;
        for choice in choices {
            let metadata: HashMap<String, String> = fixed
                .iter()
                .cloned()
                .chain(choice)
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            bytes = metadata_bytes(&metadata);
            if bytes <= MAX_METADATA_BYTES {
                return Ok(metadata);
            }
        }
        Err(MetadataTooLarge {
            bytes,
            version_id_bytes: self.version_id.as_ref().map_or(0, String::len),
            etag_bytes: self.etag.as_ref().map_or(0, String::len),
        })
    }

    /// [`SourceIdentity::output_metadata`] for `key` under `rule_prefix` before the source is
    /// read: with the longest version id and ETag S3 gives, and the largest size.
    pub(crate) fn check_fits(
        key: &str,
        rule_prefix: &str,
        config_hash: &str,
    ) -> Result<(), MetadataTooLarge> {
        let longest = Self {
            key: key.to_owned(),
            version_id: Some("v".repeat(MAX_VERSION_ID_BYTES)),
            etag: Some("e".repeat(MAX_ETAG_BYTES)),
            size: u64::MAX,
        };
        longest.output_metadata(rule_prefix, config_hash).map(drop)
    }

    /// Whether `output` was made from this key (any version).
    pub(crate) fn same_key(&self, output: &ObjectInfo) -> bool {
        made_from_key(output, &self.key)
    }

    /// Whether `output` was made from exactly this object: same key, and the same version
    /// (versioned buckets) or the same content (ETag) otherwise.
    pub(crate) fn made(&self, output: &ObjectInfo) -> bool {
        let recorded = |name: &str| output.metadata.get(name);
        let same_etag = self.etag.is_some() && recorded(SOURCE_ETAG) == self.etag.as_ref();
        self.same_key(output)
            && match self.version_id.as_deref() {
                // Reused by every upload while versioning is suspended: the ETag tells.
                Some(NULL_VERSION) => {
                    recorded(SOURCE_VERSION_ID).map(String::as_str) == Some(NULL_VERSION)
                        && same_etag
                }
                Some(version_id) => {
                    recorded(SOURCE_VERSION_ID).map(String::as_str) == Some(version_id)
                }
                None => same_etag,
            }
    }

    /// Deletes only what was read, recoverably: the current object while it still has the
    /// ETag that was read. In a versioned bucket that leaves a delete marker, so the version
    /// stays restorable until the lifecycle rule expires it; a newer upload fails the
    /// condition and stays.
    pub(crate) fn delete_condition(&self) -> Option<DeleteCondition> {
        self.etag.clone().map(DeleteCondition::Matches)
    }

    /// Whether this is a versioned source (whose versions can be told apart by id).
    pub(crate) fn version_id(&self) -> Option<&str> {
        self.version_id.as_deref()
    }
}

/// A name and value for the metadata, as it is or as its SHA-256.
struct Recorded<'a> {
    name: &'static str,
    digest_name: &'static str,
    value: &'a str,
}

impl<'a> Recorded<'a> {
    fn new(name: &'static str, digest_name: &'static str, value: &'a str) -> Self {
        Self {
            name,
            digest_name,
            value,
        }
    }

    fn plain(&self) -> (&'static str, String) {
        (
            self.name,
            utf8_percent_encode(self.value, METADATA_UNSAFE).to_string(),
        )
    }

    fn digest(&self) -> (&'static str, String) {
        (self.digest_name, sha256_hex(self.value.as_bytes()))
    }
}

/// What S3 counts against [`MAX_METADATA_BYTES`], and the name's prefix with it.
fn metadata_bytes(metadata: &HashMap<String, String>) -> usize {
    metadata
        .iter()
        .map(|(name, value)| NAME_PREFIX.len() + name.len() + value.len())
        .sum()
}

/// The source key recorded in an output's metadata, if s3-compressor wrote it; a key recorded
/// as its hash is described by it.
pub(crate) fn source_key_of(output: &ObjectInfo) -> Option<String> {
    if let Some(encoded) = output.metadata.get(SOURCE_KEY) {
        return Some(percent_decode_str(encoded).decode_utf8_lossy().into_owned());
    }
    let digest = output.metadata.get(SOURCE_KEY_SHA256)?;
    Some(format!(
        "the key whose SHA-256 is {digest} (too long to record in metadata)"
    ))
}

pub(crate) fn made_from_key(output: &ObjectInfo, key: &str) -> bool {
    if let Some(encoded) = output.metadata.get(SOURCE_KEY) {
        return percent_decode_str(encoded).decode_utf8_lossy() == key;
    }
    output
        .metadata
        .get(SOURCE_KEY_SHA256)
        .is_some_and(|digest| *digest == sha256_hex(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::MAX_KEY_BYTES;

    fn info(version_id: Option<&str>, etag: &str) -> ObjectInfo {
        ObjectInfo {
            size: 10,
            etag: Some(etag.to_owned()),
            version_id: version_id.map(str::to_owned),
            ..ObjectInfo::default()
        }
    }

    fn output_of(identity: &SourceIdentity) -> ObjectInfo {
        output_under(identity, "incoming/")
    }

    fn output_under(identity: &SourceIdentity, rule_prefix: &str) -> ObjectInfo {
        let metadata = identity.output_metadata(rule_prefix, "0123456789ab");
        ObjectInfo {
            metadata: metadata.unwrap_or_else(|error| panic!("{error}")),
            ..ObjectInfo::default()
        }
    }

    /// `prefix`, then `character` until the key is S3's longest, 1,024 bytes.
    fn longest_key(prefix: &str, character: char) -> String {
        let mut key = prefix.to_owned();
        while key.len() + character.len_utf8() <= MAX_KEY_BYTES {
            key.push(character);
        }
        while key.len() < MAX_KEY_BYTES {
            key.push('a');
        }
        key
    }

    /// A version id and ETag as S3 gives them.
    fn s3_info() -> ObjectInfo {
        info(
            Some("3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"),
            "\"b1946ac92492d2347c6235b4d2611184-10000\"",
        )
    }

    /// Every 1,024-byte key, whatever the width of its characters, and whatever the rule's
    /// prefix, fits S3's 2 KB of metadata and is still told from its neighbours.
    #[test]
    fn the_longest_keys_of_any_characters_fit_and_are_recognised() {
        let long_prefix = longest_key("", '日').chars().take(300).collect::<String>() + "/";
        for rule_prefix in ["incoming/", "incoming/ a/", long_prefix.as_str()] {
            for character in ['a', ' ', 'é', '日', '😀'] {
                let key = longest_key(rule_prefix, character);
                assert_eq!(key.len(), MAX_KEY_BYTES);
                let identity = SourceIdentity::read(&key, &s3_info(), None);
                let output = output_under(&identity, rule_prefix);
                let bytes = metadata_bytes(&output.metadata);
                assert!(
                    bytes <= MAX_METADATA_BYTES,
                    "{character:?} under {} bytes of prefix: {bytes} bytes",
                    rule_prefix.len()
                );
                assert!(SourceIdentity::check_fits(&key, rule_prefix, "0123456789ab").is_ok());
                assert!(identity.made(&output) && identity.same_key(&output));
                assert!(made_from_key(&output, &key));
                let mut neighbour = key.clone();
                neighbour.pop();
                neighbour.push('b');
                let other = SourceIdentity::read(&neighbour, &s3_info(), None);
                assert!(!other.same_key(&output) && !other.made(&output));
                assert!(source_key_of(&output).is_some());
            }
        }
    }

    /// A key that fits is recorded as it is, one that does not as its hash, and the rule
    /// prefix too when the hash of the key alone is not enough.
    #[test]
    fn a_key_is_hashed_only_when_it_would_not_fit() {
        let ascii = longest_key("incoming/", 'a');
        let output = output_of(&SourceIdentity::read(&ascii, &s3_info(), None));
        assert_eq!(output.metadata[SOURCE_KEY], ascii);
        assert!(!output.metadata.contains_key(SOURCE_KEY_SHA256));

        let wide = longest_key("incoming/", '😀');
        let output = output_of(&SourceIdentity::read(&wide, &s3_info(), None));
        assert!(!output.metadata.contains_key(SOURCE_KEY));
        assert_eq!(
            output.metadata[SOURCE_KEY_SHA256],
            sha256_hex(wide.as_bytes())
        );
        assert_eq!(output.metadata[RULE_PREFIX], "incoming/");
        assert_eq!(
            source_key_of(&output),
            Some(format!(
                "the key whose SHA-256 is {} (too long to record in metadata)",
                sha256_hex(wide.as_bytes())
            ))
        );

        let prefix = longest_key("", '日').chars().take(300).collect::<String>() + "/";
        let key = longest_key(&prefix, '日');
        let output = output_under(&SourceIdentity::read(&key, &s3_info(), None), &prefix);
        assert_eq!(
            output.metadata[RULE_PREFIX_SHA256],
            sha256_hex(prefix.as_bytes())
        );
        assert!(!output.metadata.contains_key(RULE_PREFIX));
    }

    /// Only a version id longer than S3 gives can pass the limit; the refusal names it.
    #[test]
    fn metadata_over_the_limit_whatever_is_hashed_is_refused() {
        let odd_store = info(Some(&"v".repeat(1_900)), "e1");
        let error = SourceIdentity::read("incoming/a.csv", &odd_store, None)
            .output_metadata("incoming/", "0123456789ab")
            .expect_err("over the limit");
        assert!(
            error.to_string().contains("over S3's limit of 2048")
                && error.to_string().contains("version id of 1900 bytes"),
            "{error}"
        );
    }

    #[test]
    fn unicode_and_percent_keys_survive_the_metadata_round_trip() {
        let identity = SourceIdentity::read("incoming/日本/100% a+b.csv ", &info(None, "e1"), None);
        let output = output_of(&identity);
        let recorded = &output.metadata[SOURCE_KEY];
        assert!(recorded.is_ascii() && !recorded.contains(' '), "{recorded}");
        assert!(identity.made(&output));
        assert_eq!(
            source_key_of(&output).as_deref(),
            Some("incoming/日本/100% a+b.csv ")
        );
    }

    #[test]
    fn an_output_names_the_worker_the_config_and_the_rule_in_ascii() {
        let identity = SourceIdentity::read("incoming/month end/a.csv", &info(None, "e1"), None);
        let metadata = output_under(&identity, "incoming/month end/ 日本/").metadata;
        assert!(
            metadata
                .iter()
                .all(|(name, value)| name.is_ascii() && value.is_ascii() && !value.contains(' ')),
            "{metadata:?}"
        );
        assert_eq!(metadata[CONFIG_HASH], "0123456789ab");
        assert_eq!(
            percent_decode_str(&metadata[RULE_PREFIX]).decode_utf8_lossy(),
            "incoming/month end/ 日本/"
        );
        let version = &metadata[WORKER_VERSION];
        assert!(
            version.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")) && version.len() > 6,
            "{version}"
        );
        // Still recognised as made from its source.
        let output = ObjectInfo {
            metadata,
            ..ObjectInfo::default()
        };
        assert!(identity.made(&output));
    }

    #[test]
    fn another_version_of_the_same_key_is_the_same_key_but_not_the_same_source() {
        let v1 = SourceIdentity::read("incoming/a.csv", &info(Some("v1"), "e1"), None);
        let v2 = SourceIdentity::read("incoming/a.csv", &info(Some("v2"), "e2"), None);
        let output = output_of(&v1);
        assert!(v2.same_key(&output));
        assert!(!v2.made(&output));
        let other = SourceIdentity::read("incoming/a.txt", &info(Some("v1"), "e1"), None);
        assert!(!other.same_key(&output));
    }

    #[test]
    fn unversioned_sources_are_told_apart_by_etag() {
        let old = SourceIdentity::read("incoming/a.csv", &info(None, "e1"), None);
        let new = SourceIdentity::read("incoming/a.csv", &info(None, "e2"), None);
        assert!(old.made(&output_of(&old)));
        assert!(!new.made(&output_of(&old)));
        assert_eq!(
            new.delete_condition(),
            Some(DeleteCondition::Matches("e2".to_owned()))
        );
        // Versioned too: a delete marker, never the version itself.
        let versioned = SourceIdentity::read("incoming/a.csv", &info(Some("v9"), "e2"), None);
        assert_eq!(
            versioned.delete_condition(),
            Some(DeleteCondition::Matches("e2".to_owned()))
        );
    }

    #[test]
    fn a_named_null_version_is_a_version_told_apart_by_its_etag_too() {
        // moto answers a GET of `?versionId=null` without a version id; S3 says "null".
        let old = SourceIdentity::read("incoming/a.csv", &info(None, "e1"), Some("null"));
        assert_eq!(old.version_id(), Some("null"));
        assert!(old.made(&output_of(&old)));
        assert!(old.is(&info(None, "e1")));
        assert!(old.is(&info(Some("null"), "e1")));
        // A newer version, and an upload that replaced the null version while versioning was
        // suspended, are not it.
        assert!(!old.is(&info(Some("v2"), "e2")));
        assert!(!old.is(&info(Some("null"), "e2")));
        let replaced = SourceIdentity::read("incoming/a.csv", &info(None, "e2"), Some("null"));
        assert!(!replaced.made(&output_of(&old)));
    }
}
