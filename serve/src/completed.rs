//! Multipart uploads completed lately, so that a repeated CompleteMultipartUpload succeeds.
//!
//! S3 answers a CompleteMultipartUpload of an upload it has just completed with the same
//! result: a client that lost the first answer (a timeout, a dropped connection) retries, and
//! must not be told the upload does not exist, though the upload's parts are gone once it is
//! completed. The last [`REMEMBERED`] completions are kept in memory; a repeat after a restart, or
//! after many other completions, is `NoSuchUpload`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Completions remembered; each is three short strings.
const REMEMBERED: usize = 1024;

/// What a completion made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) etag: String,
}

#[derive(Debug, Default)]
pub(crate) struct Completed {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_upload: HashMap<String, Completion>,
    /// Upload IDs, oldest first, to forget the oldest.
    order: VecDeque<String>,
}

impl Completed {
    pub(crate) fn remember(&self, upload_id: &str, completion: Completion) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner
            .by_upload
            .insert(upload_id.to_owned(), completion)
            .is_none()
        {
            inner.order.push_back(upload_id.to_owned());
        }
        while inner.order.len() > REMEMBERED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_upload.remove(&oldest);
            }
        }
    }

    /// The completion of `upload_id`, if it completed lately as an upload of `bucket`/`key`.
    pub(crate) fn find(&self, upload_id: &str, bucket: &str, key: &str) -> Option<Completion> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .by_upload
            .get(upload_id)
            .filter(|done| done.bucket == bucket && done.key == key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(n: usize) -> Completion {
        Completion {
            bucket: "b".to_owned(),
            key: format!("k{n}"),
            etag: format!("e{n}-1"),
        }
    }

    #[test]
    fn a_completion_is_found_for_its_own_key_only_and_the_oldest_are_forgotten() {
        let completed = Completed::default();
        for n in 0..=REMEMBERED {
            completed.remember(&format!("u{n}"), completion(n));
        }
        assert_eq!(
            completed.find("u0", "b", "k0"),
            None,
            "the oldest is forgotten"
        );
        assert_eq!(completed.find("u1", "b", "k1"), Some(completion(1)));
        assert_eq!(completed.find("u1", "b", "k2"), None, "another key");
        assert_eq!(completed.find("u1", "other", "k1"), None, "another bucket");
    }
}
