//! `serve`'s failure reports: one small JSON object per source key that failed, in the bucket
//! itself, so that the person who uploaded it can see what went wrong, and why, with the S3
//! client they uploaded with (`aws s3 ls --recursive s3://BUCKET/s3-compressor/failures/`).
//!
//! Only `serve` writes them: on Lambda the failure queue, the dead-letter queue and the batch
//! job's completion report already say it, and a report object there would be one more write
//! per failed delivery into a customer's bucket. A report never takes part in what is done to
//! its source: it is written or removed only after the object's outcome is settled, and a
//! failure to write it is logged and otherwise ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use bytes::Bytes;
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::handler::ObjectResult;
use crate::store::{
    ContentHeaders, DeleteCondition, Location, ObjectStore, OutputSpec, S3Store, StoreError,
    WriteCondition,
};
use crate::{Outcome, Routes};

/// Where the reports go: `PREFIX` + the source key + `.json`. No rule may take keys under it,
/// so a report is never announced, routed or compressed.
pub(crate) const PREFIX: &str = "s3-compressor/failures/";

/// The largest report read back at start-up; anything larger was not written here.
const LARGEST_REPORT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FailuresError {
    #[error(
        "a rule takes keys under {source_prefix:?}, which overlaps {PREFIX:?}, where serve \
         reports failures; give the rule another prefix"
    )]
    ReportsUnderSource { source_prefix: String },
}

/// One report, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Report {
    bucket: String,
    key: String,
    /// The source's ETag when it failed: which upload this is about.
    etag: Option<String>,
    /// [`Outcome::label`]: `failed_permanent` or `failed_transient`.
    outcome: String,
    message: String,
    /// RFC 3339, UTC.
    first_failed: String,
    last_failed: String,
    /// Failures in a row of this upload (this ETag): a restart tries it again.
    attempts: u32,
}

/// A report this process knows is stored, with the ETag it has, so that it is replaced or
/// removed only as it was written.
#[derive(Debug)]
struct Stored {
    report: Report,
    etag: Option<String>,
}

/// What [`FailureReports::record`] did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// A new report, or one that says something else than before.
    New,
    /// The same upload failed the same way as its report already says (a restart trying it
    /// again); only its count and time were updated.
    Unchanged,
}

#[derive(Debug)]
pub(crate) struct FailureReports {
    store: Arc<S3Store>,
    bucket: String,
    /// Every report stored, by its source (`serve` compresses uploads to any of its buckets,
    /// and a report lies in its source's bucket). One lock for all: reports are written only
    /// on failures, and every operation on one source must see the one before it.
    known: Mutex<HashMap<Location, Stored>>,
}

/// Refuses a config whose rules would take the reports in.
pub(crate) fn check_routes(routes: &Routes) -> Result<(), FailuresError> {
    match routes.source_prefix_overlapping(PREFIX) {
        Some(source_prefix) => Err(FailuresError::ReportsUnderSource { source_prefix }),
        None => Ok(()),
    }
}

fn report_location(bucket: &str, key: &str) -> Location {
    Location {
        bucket: bucket.to_owned(),
        key: format!("{PREFIX}{key}.json"),
    }
}

fn now() -> String {
    DateTime::from(SystemTime::now())
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
}

impl FailureReports {
    /// Reads the reports a previous run left. One whose source is gone (deleted while `serve`
    /// was stopped) is removed; the others stay until their source is tried again.
    pub(crate) async fn load(store: Arc<S3Store>, bucket: &str) -> Self {
        let (found, mut listed) = tokio::sync::mpsc::channel(64);
        let listing = {
            let (store, bucket) = (Arc::clone(&store), bucket.to_owned());
            tokio::spawn(async move { store.list_into(&bucket, &[PREFIX.to_owned()], found).await })
        };
        let reports = Self {
            store,
            bucket: bucket.to_owned(),
            known: Mutex::default(),
        };
        while let Some(entry) = listed.recv().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::error!(%error, "could not list the failure reports from before");
                    break;
                }
            };
            let location = Location {
                bucket: bucket.to_owned(),
                key: entry.key,
            };
            match reports.read(&location).await {
                Ok(Some(stored)) => reports.take_up(stored).await,
                Ok(None) => {
                    tracing::warn!(report = %location.key, "not a failure report; left as it is")
                }
                Err(error) => {
                    tracing::warn!(report = %location.key, %error, "failure report unreadable; left as it is")
                }
            }
        }
        drop(listed);
        if let Err(error) = listing.await {
            tracing::warn!(%error, "listing the failure reports stopped");
        }
        reports
    }

    /// How many reports are stored.
    pub(crate) async fn count(&self) -> usize {
        self.known.lock().await.len()
    }

    async fn read(&self, location: &Location) -> Result<Option<Stored>, StoreError> {
        let download = self.store.get(location, None).await?;
        let etag = download.info.etag.clone();
        let mut body = Vec::new();
        let mut chunks = download.body;
        while let Some(chunk) = chunks.try_next().await? {
            if body.len() + chunk.len() > LARGEST_REPORT {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        let report = serde_json::from_slice::<Report>(&body)
            .ok()
            .filter(|report| report_location(&report.bucket, &report.key) == *location);
        Ok(report.map(|report| Stored { report, etag }))
    }

    /// Keeps a report read at start-up, unless its source is gone.
    async fn take_up(&self, stored: Stored) {
        let source = Location {
            bucket: self.bucket.clone(),
            key: stored.report.key.clone(),
        };
        match self.store.head(&source, None).await {
            Ok(None) => {
                tracing::info!(key = %source.key, "source gone while stopped; removing its failure report");
                self.remove(&source, stored.etag).await;
            }
            Ok(Some(_)) | Err(_) => {
                self.known.lock().await.insert(source, stored);
            }
        }
    }

    /// Writes (or updates) the report of a failed object, or removes the report of one that no
    /// longer fails or whose source is gone. Never fails: a report that cannot be written is
    /// logged. `None` when no report was written.
    pub(crate) async fn record(&self, result: &ObjectResult) -> Option<Recorded> {
        let source = Location {
            bucket: result.bucket.clone(),
            key: result.key.clone(),
        };
        let Outcome::Failed { error, .. } = &result.outcome else {
            self.clear(&source).await;
            return None;
        };
        let source_etag = match self.store.head(&source, None).await {
            Ok(Some(info)) => info.etag,
            // Deleted meanwhile: nothing is left to fix.
            Ok(None) => {
                self.clear(&source).await;
                return None;
            }
            Err(error) => {
                tracing::debug!(key = %source.key, %error, "source not read for its failure report");
                None
            }
        };
        let time = now();
        let mut known = self.known.lock().await;
        let previous = known
            .get(&source)
            .filter(|stored| stored.report.etag == source_etag);
        let recorded = match previous {
            Some(stored)
                if stored.report.outcome == result.outcome.label()
                    && stored.report.message == *error =>
            {
                Recorded::Unchanged
            }
            _ => Recorded::New,
        };
        let report = Report {
            bucket: result.bucket.clone(),
            key: result.key.clone(),
            etag: source_etag,
            outcome: result.outcome.label().to_owned(),
            message: error.clone(),
            first_failed: previous.map_or_else(|| time.clone(), |p| p.report.first_failed.clone()),
            last_failed: time,
            attempts: previous.map_or(1, |p| p.report.attempts.saturating_add(1)),
        };
        let condition = match known.get(&source).and_then(|p| p.etag.clone()) {
            Some(etag) => WriteCondition::Matches(etag),
            None => WriteCondition::Absent,
        };
        match self.write(&report, condition).await {
            Ok(etag) => {
                known.insert(source, Stored { report, etag });
            }
            Err(error) => {
                tracing::warn!(key = %result.key, %error, "the failure report could not be written");
            }
        }
        Some(recorded)
    }

    async fn write(
        &self,
        report: &Report,
        condition: WriteCondition,
    ) -> Result<Option<String>, StoreError> {
        let location = report_location(&report.bucket, &report.key);
        let mut body = serde_json::to_vec_pretty(report).unwrap_or_default();
        body.push(b'\n');
        let body = Bytes::from(body);
        let crc = crate::pipeline::crc64nvme_of(&body);
        let spec = OutputSpec {
            location,
            headers: ContentHeaders::of_type("application/json"),
            metadata: HashMap::new(),
            condition,
        };
        Ok(self.store.put(&spec, body, &crc).await?.etag)
    }

    /// Removes the report of `source`, if there is one: it succeeded, or is gone.
    pub(crate) async fn clear(&self, source: &Location) {
        // Held while deleting, so that a failure of the same key recorded meanwhile comes after.
        let mut known = self.known.lock().await;
        if let Some(stored) = known.remove(source) {
            tracing::info!(bucket = %source.bucket, key = %source.key, "failure report removed");
            self.remove(source, stored.etag).await;
        }
    }

    /// Deletes the report only as it was written: a report another writer replaced meanwhile
    /// stays.
    async fn remove(&self, source: &Location, etag: Option<String>) {
        let location = report_location(&source.bucket, &source.key);
        let Some(etag) = etag else {
            tracing::warn!(report = %location.key, "the failure report's ETag is unknown; left as it is");
            return;
        };
        if let Err(error) = self
            .store
            .delete(&location, &DeleteCondition::Matches(etag))
            .await
        {
            tracing::warn!(report = %location.key, %error, "the failure report could not be removed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use s3_compressor_formats::Registry;

    use super::*;

    /// A rule taking keys under the reports' prefix would compress the reports themselves.
    #[test]
    fn a_rule_that_would_take_the_reports_in_is_refused() {
        let registry = Registry::from_inventory().unwrap();
        check_routes(&Routes::load(None, &registry).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.toml");
        std::fs::write(
            &config,
            "[[rule]]\nprefix = \"s3-compressor/\"\noutput_prefix = \"processed/\"\n",
        )
        .unwrap();
        let routes = Routes::load(Some(&config), &registry).unwrap();
        let refused = check_routes(&routes);
        assert!(
            matches!(&refused, Err(FailuresError::ReportsUnderSource { source_prefix }) if source_prefix == "s3-compressor/"),
            "{refused:?}"
        );
    }
}
