//! Which source an output was made from, recorded in the output's metadata.
//!
//! This is what tells a repeated delivery (same source: nothing to do) from a collision (two
//! sources mapping to one output key: never overwrite) and from a newer upload of the same key
//! (replace the older output).

use std::collections::HashMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::store::{DeleteCondition, ObjectInfo};

const SOURCE_KEY: &str = "source-key";
const SOURCE_VERSION_ID: &str = "source-version-id";
const SOURCE_ETAG: &str = "source-etag";
const SOURCE_SIZE: &str = "source-size";
const WORKER_VERSION: &str = "worker-version";
const CONFIG_HASH: &str = "config-hash";
const RULE_PREFIX: &str = "rule-prefix";

/// S3 metadata travels in HTTP headers, which carry ASCII only and lose leading and trailing
/// spaces: keys are percent-encoded, spaces included.
const METADATA_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// The object that was read, as far as later deliveries need to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceIdentity {
    key: String,
    version_id: Option<String>,
    etag: Option<String>,
    size: u64,
}

impl SourceIdentity {
    pub(crate) fn of(key: &str, info: &ObjectInfo) -> Self {
        Self {
            key: key.to_owned(),
            version_id: info.version_id.clone(),
            etag: info.etag.clone(),
            size: info.size,
        }
    }

    /// The source's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// What the output carries so any later run can recognise its source.
    pub(crate) fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            (
                SOURCE_KEY.to_owned(),
                utf8_percent_encode(&self.key, METADATA_UNSAFE).to_string(),
            ),
            (SOURCE_SIZE.to_owned(), self.size.to_string()),
        ]);
        if let Some(version_id) = &self.version_id {
            metadata.insert(SOURCE_VERSION_ID.to_owned(), version_id.clone());
        }
        if let Some(etag) = &self.etag {
            metadata.insert(SOURCE_ETAG.to_owned(), etag.clone());
        }
        metadata
    }

    /// What an output carries: [`SourceIdentity::metadata`], and which worker (version and
    /// commit), config (its hash) and rule (its source prefix) made it, so whoever finds the
    /// output can tell which deployment to look at.
    pub(crate) fn output_metadata(
        &self,
        rule_prefix: &str,
        config_hash: &str,
    ) -> HashMap<String, String> {
        let mut metadata = self.metadata();
        metadata.extend([
            (WORKER_VERSION.to_owned(), crate::VERSION.to_owned()),
            (CONFIG_HASH.to_owned(), config_hash.to_owned()),
            (
                RULE_PREFIX.to_owned(),
                utf8_percent_encode(rule_prefix, METADATA_UNSAFE).to_string(),
            ),
        ]);
        metadata
    }

    /// Whether `output` was made from this key (any version).
    pub(crate) fn same_key(&self, output: &ObjectInfo) -> bool {
        made_from_key(output, &self.key)
    }

    /// Whether `output` was made from exactly this object: same key, and the same version
    /// (versioned buckets) or the same content (ETag) otherwise.
    pub(crate) fn made(&self, output: &ObjectInfo) -> bool {
        let recorded = |name: &str| output.metadata.get(name);
        self.same_key(output)
            && match &self.version_id {
                Some(version_id) => recorded(SOURCE_VERSION_ID) == Some(version_id),
                None => self.etag.is_some() && recorded(SOURCE_ETAG) == self.etag.as_ref(),
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

/// The source key recorded in an output's metadata, if s3-compressor wrote it.
pub(crate) fn source_key_of(output: &ObjectInfo) -> Option<String> {
    let encoded = output.metadata.get(SOURCE_KEY)?;
    Some(percent_decode_str(encoded).decode_utf8_lossy().into_owned())
}

pub(crate) fn made_from_key(output: &ObjectInfo, key: &str) -> bool {
    source_key_of(output).is_some_and(|recorded| recorded == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version_id: Option<&str>, etag: &str) -> ObjectInfo {
        ObjectInfo {
            size: 10,
            etag: Some(etag.to_owned()),
            version_id: version_id.map(str::to_owned),
            ..ObjectInfo::default()
        }
    }

    fn output_of(identity: &SourceIdentity) -> ObjectInfo {
        ObjectInfo {
            metadata: identity.metadata(),
            ..ObjectInfo::default()
        }
    }

    #[test]
    fn unicode_and_percent_keys_survive_the_metadata_round_trip() {
        let identity = SourceIdentity::of("incoming/日本/100% a+b.csv ", &info(None, "e1"));
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
        let identity = SourceIdentity::of("incoming/month end/a.csv", &info(None, "e1"));
        let metadata = identity.output_metadata("incoming/month end/ 日本/", "0123456789ab");
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
        let v1 = SourceIdentity::of("incoming/a.csv", &info(Some("v1"), "e1"));
        let v2 = SourceIdentity::of("incoming/a.csv", &info(Some("v2"), "e2"));
        let output = output_of(&v1);
        assert!(v2.same_key(&output));
        assert!(!v2.made(&output));
        let other = SourceIdentity::of("incoming/a.txt", &info(Some("v1"), "e1"));
        assert!(!other.same_key(&output));
    }

    #[test]
    fn unversioned_sources_are_told_apart_by_etag() {
        let old = SourceIdentity::of("incoming/a.csv", &info(None, "e1"));
        let new = SourceIdentity::of("incoming/a.csv", &info(None, "e2"));
        assert!(old.made(&output_of(&old)));
        assert!(!new.made(&output_of(&old)));
        assert_eq!(
            new.delete_condition(),
            Some(DeleteCondition::Matches("e2".to_owned()))
        );
        // Versioned too: a delete marker, never the version itself.
        let versioned = SourceIdentity::of("incoming/a.csv", &info(Some("v9"), "e2"));
        assert_eq!(
            versioned.delete_condition(),
            Some(DeleteCondition::Matches("e2".to_owned()))
        );
    }
}
