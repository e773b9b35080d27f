//! What is kept of an object besides its bytes: one small JSON file per object.
//!
//! The record is the object's name as well as its description: the file it lives in is named
//! after a hash of the key (see [`crate::disk`]), so the real key, whatever its length, is only
//! here. It also names the data file holding the bytes, which lets a new upload switch the key
//! to new bytes with one rename of the record.

use std::time::{Duration, SystemTime};

use s3s::dto::{self, Metadata, Timestamp, TimestampFormat};
use serde::{Deserialize, Serialize};

/// The headers an object keeps from its upload. The field names are those of `s3s-fs` 0.14.1's
/// `.metadata.json`, so its files read as they are (see [`crate::migrate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// An HTTP date as S3 formats it; kept as text so a date that does not parse back is
    /// simply not answered, as `s3s-fs` did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
}

impl Attributes {
    pub(crate) fn set_expires(&mut self, expires: Option<Timestamp>) {
        self.expires = expires.and_then(|ts| {
            let mut buf = Vec::new();
            ts.format(TimestampFormat::DateTime, &mut buf).ok()?;
            String::from_utf8(buf).ok()
        });
    }

    pub(crate) fn expires(&self) -> Option<Timestamp> {
        self.expires
            .as_deref()
            .and_then(|s| Timestamp::parse(TimestampFormat::DateTime, s).ok())
    }
}

/// The checksums an upload asked for, base64 as S3 answers them. The field names are those of
/// `s3s-fs` 0.14.1's `.internal.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checksums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_crc64nvme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<String>,
}

impl From<dto::Checksum> for Checksums {
    fn from(c: dto::Checksum) -> Self {
        Self {
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
        }
    }
}

/// One object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub key: String,
    /// The name of the data file, in the record's own folder.
    pub data: String,
    pub size: u64,
    /// Without quotes: an MD5 in hex, or `MD5-OF-PART-MD5S-PARTCOUNT`.
    pub e_tag: String,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default)]
    pub attributes: Attributes,
    /// Seconds and nanoseconds since the Unix epoch.
    pub modified_secs: u64,
    #[serde(default)]
    pub modified_nanos: u32,
}

impl Record {
    pub(crate) fn last_modified(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(self.modified_secs, self.modified_nanos)
    }

    pub(crate) fn set_last_modified(&mut self, when: SystemTime) {
        let since = when
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.modified_secs = since.as_secs();
        self.modified_nanos = since.subsec_nanos();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3s_fs_metadata_file_reads_as_attributes() {
        let json = r#"{"user_metadata":{"note":"x"},"content_type":"text/csv"}"#;
        let attributes: Attributes = serde_json::from_str(json).expect("parses");
        assert_eq!(attributes.content_type.as_deref(), Some("text/csv"));
        assert_eq!(
            attributes
                .user_metadata
                .as_ref()
                .and_then(|m| m.get("note"))
                .map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn a_record_round_trips_with_its_time() {
        let mut record = Record {
            key: "k".repeat(1024),
            data: "d".to_owned(),
            size: 3,
            e_tag: "abc-2".to_owned(),
            checksums: Checksums::default(),
            attributes: Attributes::default(),
            modified_secs: 0,
            modified_nanos: 0,
        };
        let when = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        record.set_last_modified(when);
        let json = serde_json::to_vec(&record).expect("serializes");
        let back: Record = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, record);
        assert_eq!(back.last_modified(), when);
    }
}
