//! The pipeline's decisions against an in-memory store. The same paths run against real S3
//! servers in the end-to-end tests; these stage what a server cannot be made to do on cue.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use s3_compressor_events::ObjectRef;
use s3_compressor_formats::Registry;

use super::{Deadline, Pace, Tuning, Worker};
use crate::store::memory::{MemoryStore, ReadDamage};
use crate::store::ErrorClass;
use crate::{Outcome, OutputProof, Proof, Routes, SourceFate, SourceProof};

const BUCKET: &str = "files";

fn worker(store: &Arc<MemoryStore>, tuning: Tuning) -> Worker {
    let registry = Registry::from_inventory().unwrap();
    let routes = Arc::new(Routes::load(None, &registry).unwrap());
    Worker::new(store.clone(), routes, tuning)
}

/// A worker whose config is `toml`.
fn worker_with_config(store: &Arc<MemoryStore>, toml: &str) -> Worker {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let registry = Registry::from_inventory().unwrap();
    let routes = Arc::new(Routes::load(Some(file.path()), &registry).unwrap());
    Worker::new(store.clone(), routes, Tuning::default())
}

/// `worker` once it has found out whether the store honours `If-Match` on DeleteObject (with a
/// DeleteObject of its own), so that a failure a test injects into the next DeleteObject hits
/// the source's.
async fn probed(worker: Worker, store: &MemoryStore) -> Worker {
    store.insert(BUCKET, "incoming/probe-first.csv", b"p");
    let first = worker
        .process(&object("incoming/probe-first.csv"), None)
        .await;
    assert!(matches!(first, Outcome::Compressed { .. }), "{first}");
    worker
}

fn location(key: &str) -> crate::store::Location {
    crate::store::Location {
        bucket: BUCKET.to_owned(),
        key: key.to_owned(),
    }
}

/// Tiny parts, so a few hundred KiB already take the multipart path.
fn small_parts() -> Tuning {
    Tuning {
        min_part_size: 64 * 1024,
        parts_in_flight: 2,
        read_ahead_bytes: 64 * 1024,
        ..Tuning::default()
    }
}

fn object(key: &str) -> ObjectRef {
    ObjectRef {
        bucket: BUCKET.to_owned(),
        key: key.to_owned(),
        version_id: None,
        size: None,
        etag: None,
        sequencer: None,
    }
}

/// The event for one version of a key.
fn version_event(key: &str, stored: &crate::store::ObjectInfo) -> ObjectRef {
    ObjectRef {
        version_id: stored.version_id.clone(),
        ..object(key)
    }
}

/// The output exists and was made from this version of its source.
fn assert_output_made_from(
    store: &MemoryStore,
    output_key: &str,
    source: &crate::store::ObjectInfo,
) {
    let output = store.current(BUCKET, output_key).unwrap();
    assert_eq!(
        output.info.metadata.get("source-version-id"),
        source.version_id.as_ref(),
        "{output_key}"
    );
}

/// Bytes deflate cannot shrink, so the output spans several parts.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn a_small_object_is_compressed_verified_and_its_source_deleted() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/a/report.csv", b"a,b,c\n1,2,3\n");
    let outcome = worker(&store, Tuning::default())
        .process(&object("incoming/a/report.csv"), None)
        .await;
    let Outcome::Compressed {
        output_key,
        bytes_in,
        source,
        ..
    } = &outcome
    else {
        panic!("{outcome}");
    };
    assert_eq!(output_key, "processed/a/report.zip");
    assert_eq!(*bytes_in, 12);
    assert_eq!(*source, SourceFate::Deleted);
    let output = store.current(BUCKET, "processed/a/report.zip").unwrap();
    assert_eq!(&output.body[..2], b"PK");
    assert_eq!(output.info.metadata["source-key"], "incoming/a/report.csv");
    assert!(store.current(BUCKET, "incoming/a/report.csv").is_none());
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_leaves_no_upload_open() {
    let store = Arc::new(MemoryStore::default());
    let body = noise(700 * 1024);
    store.insert(BUCKET, "incoming/noise.bin", &body);
    let outcome = worker(&store, small_parts())
        .process(&object("incoming/noise.bin"), None)
        .await;
    let Outcome::Compressed {
        bytes_in,
        bytes_out,
        stored,
        ..
    } = outcome
    else {
        panic!("{outcome}");
    };
    assert_eq!(stored, bytes_in, "noise is stored, not deflated: {outcome}");
    assert!(
        outcome.to_string().contains("stored: it would not shrink"),
        "{outcome}"
    );
    assert!(bytes_out > 10 * 64 * 1024, "several parts: {bytes_out}");
    assert_eq!(store.completed_multipart(), 1);
    let output = store.current(BUCKET, "processed/noise.zip").unwrap();
    assert_eq!(output.body.len() as u64, bytes_out);
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn a_repeated_delivery_is_already_done_and_so_is_one_whose_source_is_gone() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/r.csv", b"x");
    let worker = worker(&store, Tuning::default());
    let first = worker.process(&object("incoming/r.csv"), None).await;
    assert!(matches!(first, Outcome::Compressed { .. }), "{first}");
    let second = worker.process(&object("incoming/r.csv"), None).await;
    assert_eq!(
        second,
        Outcome::AlreadyDone {
            output_key: "processed/r.zip".to_owned(),
            source: SourceFate::AlreadyGone
        }
    );
}

#[tokio::test]
async fn a_duplicate_that_finds_the_output_but_not_the_delete_finishes_the_delete() {
    a_retry_finishes_a_source_delete_that_failed_with(ErrorClass::Transient).await;
}

/// The source's delete fails once with `class`: the object fails transiently with the source
/// kept beside its proven output, and the retry deletes it.
async fn a_retry_finishes_a_source_delete_that_failed_with(class: ErrorClass) {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/r.csv", b"x");
    let worker = probed(worker(&store, Tuning::default()), &store).await;
    store.fail_once("DeleteObject", class);
    let first = worker.process(&object("incoming/r.csv"), None).await;
    assert!(first.should_retry(), "{first}");
    assert!(store.current(BUCKET, "incoming/r.csv").is_some());
    let retry = worker.process(&object("incoming/r.csv"), None).await;
    assert!(
        matches!(
            retry,
            Outcome::AlreadyDone {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{retry}"
    );
    assert!(store.current(BUCKET, "incoming/r.csv").is_none());
}

#[tokio::test]
async fn a_missing_source_without_output_is_missing_not_retried() {
    let store = Arc::new(MemoryStore::default());
    let outcome = worker(&store, Tuning::default())
        .process(&object("incoming/never.csv"), None)
        .await;
    assert_eq!(outcome, Outcome::SourceMissing, "{outcome}");
    assert_eq!(outcome.label(), "missing");
}

#[tokio::test]
async fn an_output_from_another_source_is_never_overwritten() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/report.csv", b"csv");
    store.insert(BUCKET, "incoming/report.txt", b"txt");
    let worker = worker(&store, Tuning::default());
    let first = worker.process(&object("incoming/report.csv"), None).await;
    assert!(matches!(first, Outcome::Compressed { .. }), "{first}");
    let second = worker.process(&object("incoming/report.txt"), None).await;
    let Outcome::Failed {
        retry: false,
        error,
    } = &second
    else {
        panic!("{second}");
    };
    assert!(error.contains("incoming/report.csv"), "{error}");
    assert!(
        store.current(BUCKET, "incoming/report.txt").is_some(),
        "source kept"
    );
    let output = store.current(BUCKET, "processed/report.zip").unwrap();
    assert_eq!(output.info.metadata["source-key"], "incoming/report.csv");
}

#[tokio::test]
async fn a_newer_upload_during_processing_survives_without_versioning() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/live.csv", b"old");
    store.replace_after_get("incoming/live.csv", b"new");
    let outcome = worker(&store, Tuning::default())
        .process(&object("incoming/live.csv"), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::KeptNewerUpload,
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(
        &store.current(BUCKET, "incoming/live.csv").unwrap().body[..],
        b"new"
    );
}

#[tokio::test]
async fn a_versioned_source_replaced_meanwhile_stays_noncurrent_under_the_newer_upload() {
    let store = Arc::new(MemoryStore::versioned());
    let first = store.insert(BUCKET, "incoming/live.csv", b"old");
    store.replace_after_get("incoming/live.csv", b"new");
    let outcome = worker(&store, Tuning::default())
        .process(&version_event("incoming/live.csv", &first), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::KeptNewerUpload,
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(store.versions(BUCKET, "incoming/live.csv"), 2);
    let current = store.current(BUCKET, "incoming/live.csv").unwrap();
    assert_eq!(&current.body[..], b"new");
    assert_output_made_from(&store, "processed/live.zip", &first);
}

#[tokio::test]
async fn a_versioned_source_is_deleted_recoverably_and_restored_by_removing_the_marker() {
    let store = Arc::new(MemoryStore::versioned());
    let source = store.insert(BUCKET, "incoming/kept.csv", b"a,b\n1,2\n");
    let outcome = worker(&store, Tuning::default())
        .process(&version_event("incoming/kept.csv", &source), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{outcome}"
    );
    assert!(store.current(BUCKET, "incoming/kept.csv").is_none());
    assert_eq!(
        store.versions(BUCKET, "incoming/kept.csv"),
        1,
        "the version stays"
    );
    assert!(store.remove_delete_marker(BUCKET, "incoming/kept.csv"));
    assert_eq!(
        &store.current(BUCKET, "incoming/kept.csv").unwrap().body[..],
        b"a,b\n1,2\n"
    );
}

/// S3 does not order deliveries: v2's event may come first, v1's long after.
#[tokio::test]
async fn a_late_event_for_an_older_version_is_superseded_and_the_output_keeps_the_newer() {
    let store = Arc::new(MemoryStore::versioned());
    let v1 = store.insert(BUCKET, "incoming/order.csv", b"version one");
    let v2 = store.insert(BUCKET, "incoming/order.csv", b"version two");
    let worker = worker(&store, Tuning::default());
    let event = |info| version_event("incoming/order.csv", info);
    let newer = worker.process(&event(&v2), None).await;
    assert!(matches!(newer, Outcome::Compressed { .. }), "{newer}");
    let older = worker.process(&event(&v1), None).await;
    assert_eq!(
        older,
        Outcome::Superseded {
            output_key: "processed/order.zip".to_owned()
        }
    );
    assert_eq!(older.label(), "superseded");
    assert_output_made_from(&store, "processed/order.zip", &v2);
    // Neither version is visible, and both can still be restored.
    assert!(store.current(BUCKET, "incoming/order.csv").is_none());
    assert_eq!(store.versions(BUCKET, "incoming/order.csv"), 2);

    // The older one's event first, once the newer one is uploaded: no output exists yet, and
    // none is written from the older content (the newer one may never finish: too large,
    // archived), which stays as a noncurrent version.
    let store = Arc::new(MemoryStore::versioned());
    let v1 = store.insert(BUCKET, "incoming/order.csv", b"version one");
    let v2 = store.insert(BUCKET, "incoming/order.csv", b"version two");
    let worker = self::worker(&store, Tuning::default());
    let older = worker.process(&event(&v1), None).await;
    assert_eq!(
        older,
        Outcome::Superseded {
            output_key: "processed/order.zip".to_owned()
        }
    );
    assert!(store.current(BUCKET, "processed/order.zip").is_none());
    assert_eq!(store.versions(BUCKET, "incoming/order.csv"), 2);
    let newer = worker.process(&event(&v2), None).await;
    assert!(
        matches!(
            newer,
            Outcome::Compressed {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{newer}"
    );
    assert_output_made_from(&store, "processed/order.zip", &v2);
}

/// On a store that ignores `If-Match` on DeleteObject, the delete that would have kept a newer
/// upload deletes it instead: the probe finds the store out, and the source is kept.
#[tokio::test]
async fn a_store_ignoring_if_match_keeps_sources_unless_the_rule_says_delete_anyway() {
    let store = Arc::new(MemoryStore::default());
    store.ignore_delete_conditions();
    store.insert(BUCKET, "incoming/live.csv", b"old");
    store.replace_after_get("incoming/live.csv", b"new");
    let outcome = worker(&store, Tuning::default())
        .process(&object("incoming/live.csv"), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::KeptStoreIgnoresIfMatch,
                ..
            }
        ),
        "{outcome}"
    );
    assert!(
        outcome
            .to_string()
            .contains("set delete_without_if_match = true"),
        "says what to set: {outcome}"
    );
    assert_eq!(
        &store.current(BUCKET, "incoming/live.csv").unwrap().body[..],
        b"new",
        "the newer upload is current and untouched"
    );

    // Told to, it deletes on such a store.
    let store = Arc::new(MemoryStore::default());
    store.ignore_delete_conditions();
    store.insert(BUCKET, "incoming/r.csv", b"x");
    let config = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
                  delete_without_if_match = true\n";
    let outcome = worker_with_config(&store, config)
        .process(&object("incoming/r.csv"), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{outcome}"
    );
    assert!(store.current(BUCKET, "incoming/r.csv").is_none());
}

/// A newer version hidden behind a delete marker (by a delete that could not be limited to
/// what it read, or by a person) is not superseded: its own event still compresses it.
#[tokio::test]
async fn a_version_only_hidden_by_a_delete_marker_is_still_compressed_by_its_event() {
    use crate::store::{DeleteCondition, ObjectStore};
    let store = Arc::new(MemoryStore::versioned());
    let key = "incoming/hidden.csv";
    let v1 = store.insert(BUCKET, key, b"version one");
    let worker = worker(&store, Tuning::default());
    let first = worker.process(&version_event(key, &v1), None).await;
    assert!(matches!(first, Outcome::Compressed { .. }), "{first}");
    let v2 = store.insert(BUCKET, key, b"version two");
    let hidden = DeleteCondition::Matches(v2.etag.clone().unwrap());
    store.delete(&location(key), &hidden).await.unwrap();
    let newer = worker.process(&version_event(key, &v2), None).await;
    assert!(
        matches!(
            newer,
            Outcome::Compressed {
                source: SourceFate::AlreadyGone,
                ..
            }
        ),
        "{newer}"
    );
    assert_output_made_from(&store, "processed/hidden.zip", &v2);
    assert_eq!(store.versions(BUCKET, key), 2, "both versions stay");
    // The older version's late event is superseded by content, not by the marker.
    let older = worker.process(&version_event(key, &v1), None).await;
    assert_eq!(older.label(), "superseded", "{older}");
    assert_output_made_from(&store, "processed/hidden.zip", &v2);
}

/// A 412 or 409 on the source's delete while the object read is still current: the
/// conflicting operation failed, and the delete is retried rather than given up.
#[tokio::test]
async fn a_refused_delete_of_a_source_still_current_is_retried_not_taken_for_a_newer_upload() {
    a_retry_finishes_a_source_delete_that_failed_with(ErrorClass::PreconditionFailed).await;
}

/// An output with this source's identity proves nothing by itself: a duplicate delivery
/// decodes it before it deletes anything, and removes it if it is wrong.
#[tokio::test]
async fn a_duplicate_finding_an_output_that_fails_its_proof_removes_it_and_keeps_the_source() {
    let store = Arc::new(MemoryStore::default());
    let source = store.insert(BUCKET, "incoming/r.csv", b"the real content");
    let identity = super::identity::SourceIdentity::read("incoming/r.csv", &source, None);
    // A zip of other content, labelled as made from this source.
    let registry = Registry::from_inventory().unwrap();
    let zip = registry
        .get("zip")
        .unwrap()
        .compressor(&Default::default())
        .unwrap();
    let mut wrong = Vec::new();
    zip.compress(
        &mut &b"other content"[..],
        &mut wrong,
        &s3_compressor_formats::Entry::new("r.csv"),
    )
    .unwrap();
    store.insert_with_metadata(
        BUCKET,
        "processed/r.zip",
        &wrong,
        identity
            .output_metadata("incoming/", "0123456789ab")
            .unwrap(),
    );

    let worker = worker(&store, Tuning::default());
    let outcome = worker.process(&object("incoming/r.csv"), None).await;
    assert!(
        matches!(&outcome, Outcome::Failed { retry: true, error } if error.contains("failed its proof")),
        "{outcome}"
    );
    assert!(
        store.current(BUCKET, "incoming/r.csv").is_some(),
        "source kept"
    );
    assert!(
        store.current(BUCKET, "processed/r.zip").is_none(),
        "bad output removed"
    );
    // The next attempt compresses again, proves it, and only then deletes.
    let retry = worker.process(&object("incoming/r.csv"), None).await;
    assert!(
        matches!(
            retry,
            Outcome::Compressed {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{retry}"
    );
}

#[tokio::test]
async fn a_duplicate_finding_a_good_output_proves_it_then_deletes() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/r.csv", b"x,y\n");
    let worker = probed(worker(&store, Tuning::default()), &store).await;
    store.fail_once("DeleteObject", ErrorClass::Transient);
    let first = worker.process(&object("incoming/r.csv"), None).await;
    assert!(first.should_retry(), "{first}");
    let second = worker.process(&object("incoming/r.csv"), None).await;
    assert!(
        matches!(
            second,
            Outcome::AlreadyDone {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{second}"
    );
}

/// A store that keeps something other than what it was sent: the read-back check catches it,
/// and the output goes so no later delivery trusts it.
#[tokio::test]
async fn an_output_stored_damaged_is_removed_and_the_source_kept() {
    for (key, body, tuning) in [
        (
            "incoming/small.csv",
            b"a,b\n1,2\n".to_vec(),
            Tuning::default(),
        ),
        ("incoming/big.bin", noise(300 * 1024), small_parts()),
    ] {
        let store = Arc::new(MemoryStore::default());
        store.insert(BUCKET, key, &body);
        store.damage_next_write();
        let outcome = worker(&store, tuning).process(&object(key), None).await;
        assert!(
            matches!(&outcome, Outcome::Failed { retry: false, error }
                if error.contains("verification failed") && error.contains("it was removed")),
            "{key}: {outcome}"
        );
        let output = format!(
            "{}.zip",
            key.replace("incoming/", "processed/")
                .rsplit_once('.')
                .unwrap()
                .0
        );
        assert!(
            store.current(BUCKET, &output).is_none(),
            "{key}: output removed"
        );
        assert_eq!(
            store.current(BUCKET, key).unwrap().body,
            body,
            "{key}: source kept"
        );
    }
}

/// Every kind of value a store may keep of a source's content, and none.
const EVERY_SOURCE_PROOF: [SourceProof; 12] = [
    SourceProof::Crc64Nvme,
    SourceProof::Crc32c,
    SourceProof::Crc32,
    SourceProof::Sha1,
    SourceProof::Sha256,
    SourceProof::EtagMd5,
    SourceProof::Crc32cParts,
    SourceProof::Crc32Parts,
    SourceProof::Sha1Parts,
    SourceProof::Sha256Parts,
    SourceProof::EtagMd5Parts,
    SourceProof::SizeOnly,
];

/// The output key `processed/...zip` of an `incoming/` key.
fn zip_output(key: &str) -> String {
    let output = key.replace("incoming/", "processed/");
    format!("{}.zip", output.rsplit_once('.').unwrap().0)
}

/// One small object (a single PutObject) and one in several parts.
fn small_and_multipart() -> [(&'static str, Vec<u8>); 2] {
    [
        ("incoming/small.csv", b"a,b\n1,2\n3,4\n".to_vec()),
        ("incoming/big.bin", noise(300 * 1024)),
    ]
}

/// On a store that keeps no checksum, the HEAD after the write shows only size and metadata:
/// the output is read back, and a damaged one is caught before the source is deleted.
#[tokio::test]
async fn an_output_stored_damaged_where_no_checksum_is_kept_is_caught_by_reading_it_back() {
    for (key, body) in small_and_multipart() {
        let store = Arc::new(MemoryStore::without_checksums());
        store.insert(BUCKET, key, &body);
        store.damage_next_write();
        let outcome = worker(&store, small_parts())
            .process(&object(key), None)
            .await;
        assert!(
            matches!(&outcome, Outcome::Failed { retry: false, error }
                if error.contains("verification failed") && error.contains("read back")
                    && error.contains("it was removed")),
            "{key}: {outcome}"
        );
        assert!(
            store.current(BUCKET, &zip_output(key)).is_none(),
            "{key}: output removed"
        );
        assert_eq!(
            store.current(BUCKET, key).unwrap().body,
            body,
            "{key}: source kept"
        );
    }
}

/// What a delete rested on is part of the outcome (and so of the log line): the source's own
/// stored value, and the store's checksum of the output or, without one, the read-back.
#[tokio::test]
async fn the_outcome_names_the_proofs_a_delete_rested_on() {
    for source_proof in EVERY_SOURCE_PROOF {
        let store = Arc::new(MemoryStore::default());
        store.insert_keeping(BUCKET, "incoming/r.csv", b"x,y\n1,2\n", source_proof);
        let outcome = worker(&store, Tuning::default())
            .process(&object("incoming/r.csv"), None)
            .await;
        let expected = Proof {
            source: source_proof,
            output: OutputProof::StoredChecksum,
        };
        assert!(
            matches!(outcome, Outcome::Compressed { proof, source: SourceFate::Deleted, .. } if proof == expected),
            "{source_proof:?}: {outcome:?}"
        );
        // What a multipart source's proof costs: one request; a single-part source's, none.
        assert_eq!(
            store.part_sizes_asked(),
            usize::from(source_proof.of_each_part().is_some()),
            "{source_proof:?}"
        );
    }
    for (key, body) in small_and_multipart() {
        let store = Arc::new(MemoryStore::without_checksums());
        store.insert(BUCKET, key, &body);
        let outcome = worker(&store, small_parts())
            .process(&object(key), None)
            .await;
        let expected = Proof {
            source: SourceProof::SizeOnly,
            output: OutputProof::ReadBack,
        };
        assert!(
            matches!(outcome, Outcome::Compressed { proof, source: SourceFate::Deleted, .. } if proof == expected),
            "{key}: {outcome:?}"
        );
    }
}

/// A multipart source whose part sizes the store does not tell is proven by its size alone,
/// as before, and compressed: an unknown boundary never makes a good read look bad.
#[tokio::test]
async fn a_multipart_source_whose_parts_the_store_does_not_tell_is_held_against_its_size() {
    let store = Arc::new(MemoryStore::default());
    let body = noise(300 * 1024);
    store.insert_keeping(BUCKET, "incoming/big.bin", &body, SourceProof::EtagMd5Parts);
    store.fail_once("PartSizes", ErrorClass::Permanent);
    let outcome = worker(&store, small_parts())
        .process(&object("incoming/big.bin"), None)
        .await;
    assert!(
        matches!(outcome, Outcome::Compressed { proof, source: SourceFate::Deleted, .. }
            if proof.source == SourceProof::SizeOnly),
        "{outcome:?}"
    );
}

/// The bad-read row of docs/how-it-works.md's Guarantees through the whole pipeline: a
/// download that ends short, or whose resumed range brings other bytes than the source's,
/// against every kind of stored value a source may have. The source stays, nothing is
/// written, and the failure is transient (the next attempt reads again). Only a store keeping
/// nothing cannot tell altered bytes.
#[tokio::test]
async fn a_read_cut_short_or_altered_in_its_resumed_range_keeps_the_source_and_writes_nothing() {
    for source_proof in EVERY_SOURCE_PROOF {
        for damage in [ReadDamage::Short, ReadDamage::ResumedAltered] {
            if (source_proof, damage) == (SourceProof::SizeOnly, ReadDamage::ResumedAltered) {
                continue;
            }
            for (key, body) in small_and_multipart() {
                let case = format!("{source_proof:?}, {damage:?}, {key}");
                let store = Arc::new(MemoryStore::default());
                store.insert_keeping(BUCKET, key, &body, source_proof);
                store.damage_next_read(key, damage);
                let outcome = worker(&store, small_parts())
                    .process(&object(key), None)
                    .await;
                assert!(
                    matches!(&outcome, Outcome::Failed { retry: true, error }
                        if error.contains("the source was not read whole")),
                    "{case}: {outcome}"
                );
                assert_eq!(store.current(BUCKET, key).unwrap().body, body, "{case}");
                assert!(
                    store.current(BUCKET, &zip_output(key)).is_none(),
                    "{case}: an output was written"
                );
                assert_eq!(store.completed_multipart(), 0, "{case}");
                assert_eq!(store.open_uploads(), 0, "{case}");
            }
        }
    }
}

/// CompleteMultipartUpload succeeded, its answer was lost, and the SDK's retry got
/// NoSuchUpload: the output is there, ours, and the object is done.
#[tokio::test]
async fn a_completed_upload_whose_answer_was_lost_is_recognised() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/noise.bin", &noise(300 * 1024));
    store.lose_complete_answer();
    let outcome = worker(&store, small_parts())
        .process(&object("incoming/noise.bin"), None)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Compressed {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(store.completed_multipart(), 1);
    assert!(store.current(BUCKET, "incoming/noise.bin").is_none());
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_keeps_the_source() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/noise.bin", &noise(700 * 1024));
    store.fail_once("UploadPart", ErrorClass::Transient);
    let outcome = worker(&store, small_parts())
        .process(&object("incoming/noise.bin"), None)
        .await;
    assert!(outcome.should_retry(), "{outcome}");
    assert_eq!(store.open_uploads(), 0);
    assert_eq!(store.aborted(), 1);
    assert!(store.current(BUCKET, "incoming/noise.bin").is_some());
    assert!(store.current(BUCKET, "processed/noise.zip").is_none());
}

#[tokio::test]
async fn access_denied_is_permanent() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/secret.csv", b"x");
    store.fail_once("GetObject", ErrorClass::Permanent);
    let outcome = worker(&store, Tuning::default())
        .process(&object("incoming/secret.csv"), None)
        .await;
    assert!(
        matches!(outcome, Outcome::Failed { retry: false, .. }),
        "{outcome}"
    );
}

#[tokio::test]
async fn the_deadline_stops_the_work_aborts_the_upload_and_keeps_the_source() {
    // Parts slower than the deadline, so it comes mid-upload however loaded the machine is.
    let store = Arc::new(MemoryStore::with_part_latency(Duration::from_secs(30)));
    store.insert(BUCKET, "incoming/noise.bin", &noise(4 * 1024 * 1024));
    // Judged able to finish in time, so it starts, and is stopped by the deadline.
    let deadline = Deadline::after(Duration::from_secs(1), Duration::ZERO);
    let worker = worker(&store, small_parts()).with_pace(Pace::instant_requests(1e6));
    let outcome = worker
        .process(&object("incoming/noise.bin"), Some(deadline))
        .await;
    let Outcome::Failed { retry: true, error } = &outcome else {
        panic!("{outcome}");
    };
    assert!(error.contains("deadline"), "{error}");
    // The abort runs on its own task once the upload's future is dropped; entry points wait
    // for it before they answer.
    assert!(worker.settle(Duration::from_secs(10)).await);
    assert_eq!(store.open_uploads(), 0);
    assert_eq!(store.aborted(), 1);
    assert!(store.current(BUCKET, "incoming/noise.bin").is_some());
}

#[tokio::test]
async fn keys_under_an_output_prefix_are_skipped() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "processed/x.zip", b"PK");
    let outcome = worker(&store, Tuning::default())
        .process(&object("processed/x.zip"), None)
        .await;
    assert!(matches!(outcome, Outcome::Skipped(_)), "{outcome}");
    assert!(store.current(BUCKET, "processed/x.zip").is_some());
}

/// A "zip" that stores its input as is, and whose decoder gives back one byte too few, or the
/// input with a byte changed: what a codec bug looks like from outside.
#[derive(Debug)]
struct Lying {
    decodes_short: bool,
}

impl s3_compressor_formats::Format for Lying {
    fn write_compressed(
        &self,
        src: &mut dyn std::io::Read,
        dst: &mut dyn std::io::Write,
        _: &s3_compressor_formats::Entry,
    ) -> std::io::Result<s3_compressor_formats::Written> {
        std::io::copy(src, dst).map(|_| s3_compressor_formats::Written::default())
    }

    fn write_decompressed(
        &self,
        src: &mut dyn std::io::Read,
        dst: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        let mut all = Vec::new();
        src.read_to_end(&mut all)?;
        if self.decodes_short {
            all.pop();
        } else if let Some(first) = all.first_mut() {
            *first ^= 1;
        }
        dst.write_all(&all)
    }
}

fn lying_zip(decodes_short: bool) -> s3_compressor_formats::Registration {
    s3_compressor_formats::Registration {
        name: "zip",
        extension: "zip",
        content_type: "application/zip",
        kind: s3_compressor_formats::Kind::Archive,
        levels: None,
        crate_name: "pipeline-tests",
        build: if decodes_short {
            |_| {
                Box::new(Lying {
                    decodes_short: true,
                })
            }
        } else {
            |_| {
                Box::new(Lying {
                    decodes_short: false,
                })
            }
        },
    }
}

#[tokio::test]
async fn an_output_that_does_not_decode_to_its_source_is_never_completed_and_the_source_stays() {
    for decodes_short in [true, false] {
        let registration: &'static _ = Box::leak(Box::new(lying_zip(decodes_short)));
        let registry = Registry::from_registrations([registration]).unwrap();
        let routes = Arc::new(Routes::load(None, &registry).unwrap());
        // One small object (a single PutObject) and one in several parts.
        for (key, body) in [
            ("incoming/small.csv", b"a,b\n1,2\n".to_vec()),
            ("incoming/big.bin", noise(300 * 1024)),
        ] {
            let store = Arc::new(MemoryStore::default());
            store.insert(BUCKET, key, &body);
            let outcome = Worker::new(store.clone(), Arc::clone(&routes), small_parts())
                .process(&object(key), None)
                .await;
            let case = format!("{key}, decodes short: {decodes_short}");
            assert!(
                matches!(&outcome, Outcome::Failed { retry: false, error } if error.contains("verification failed")),
                "{case}: {outcome}"
            );
            assert_eq!(store.current(BUCKET, key).unwrap().body, body, "{case}");
            let output = key.replace("incoming/", "processed/");
            let output = format!("{}.zip", output.rsplit_once('.').unwrap().0);
            assert!(store.current(BUCKET, &output).is_none(), "{case}: {output}");
            assert_eq!(store.completed_multipart(), 0, "{case}");
            assert_eq!(store.open_uploads(), 0, "{case}");
        }
    }
}

/// A CreateMultipartUpload whose answer was lost left an upload nobody knows the id of: once
/// the output is complete it is aborted, not left to cost storage.
#[tokio::test]
async fn an_upload_started_by_a_lost_create_answer_is_aborted() {
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/noise.bin", &noise(300 * 1024));
    store.lose_create_answer();
    let outcome = worker(&store, small_parts())
        .process(&object("incoming/noise.bin"), None)
        .await;
    assert!(matches!(outcome, Outcome::Compressed { .. }), "{outcome}");
    assert_eq!(store.open_uploads(), 0);
    assert_eq!(store.aborted(), 1);
}

/// The handoff of a deployed function, its records in `store`, its tasks only recorded.
fn recorded_handoff(
    store: &Arc<MemoryStore>,
) -> (
    Option<Arc<dyn crate::handoff::Handoff>>,
    Arc<crate::handoff::RecordingTasks>,
) {
    let tasks = Arc::new(crate::handoff::RecordingTasks::default());
    let handoff =
        crate::handoff::RecordedHandoff::new(store.clone(), "handoffs/".to_owned(), tasks.clone());
    (Some(Arc::new(handoff)), tasks)
}

/// The size of an object [`SLOW`] cannot compress in a whole invocation of 1 s: 1 MB of zip at
/// 0.01 vCPU takes 4 s, with the requests.
const LARGE: usize = 1_000_000;
const SLOW: Pace = Pace::instant_requests(0.01);

/// `key`, of [`LARGE`] bytes, is refused at [`SLOW`] pace in an invocation of 1 s, at once and
/// permanently, saying what would work, and is handed off where there is a handoff, which is
/// returned.
async fn refused_then_handed_off(
    store: &Arc<MemoryStore>,
    key: &str,
) -> (
    Option<Arc<dyn crate::handoff::Handoff>>,
    Arc<crate::handoff::RecordingTasks>,
) {
    let whole = || Deadline::after(Duration::from_secs(1), Duration::ZERO);
    let refused = worker(store, Tuning::default())
        .with_pace(SLOW)
        .process(&object(key), Some(whole()))
        .await;
    let Outcome::Failed {
        retry: false,
        error,
    } = &refused
    else {
        panic!("{refused}");
    };
    assert!(
        error.contains(&format!("is {LARGE} bytes"))
            && error.contains("an invocation has 1 s")
            && error.contains(&format!("s3-compressor compress s3://{BUCKET}/{key}"))
            && error.contains("--large-objects fargate"),
        "{error}"
    );

    let (handoff, tasks) = recorded_handoff(store);
    let handed = worker(store, Tuning::default())
        .with_pace(SLOW)
        .with_handoff(handoff.clone())
        .process(&object(key), Some(whole()))
        .await;
    assert!(
        matches!(&handed, Outcome::HandedOff { task } if task.ends_with("task/cluster/1")),
        "{handed}"
    );
    assert_eq!(tasks.started.lock().unwrap()[0].0, object(key));
    (handoff, tasks)
}

/// An object that cannot finish in a whole invocation is not started: it goes to the handoff
/// when there is one, else fails permanently saying what would work; one that only lacks the
/// time left fails transiently, for a fresh invocation. The source stays every time.
#[tokio::test]
async fn an_object_too_large_for_the_invocation_is_handed_off_or_refused_not_started() {
    let store = Arc::new(MemoryStore::default());
    let key = "incoming/large.csv";
    store.insert(BUCKET, key, &vec![b'x'; LARGE]);
    let (handoff, tasks) = refused_then_handed_off(&store, key).await;

    // Enough for a whole invocation, not for what is left of this one.
    let late = Deadline {
        at: Instant::now() + Duration::from_secs(1),
        granted: Duration::from_secs(60),
        margin: Duration::ZERO,
    };
    let retried = worker(&store, Tuning::default())
        .with_pace(SLOW)
        .with_handoff(handoff)
        .process(&object(key), Some(late))
        .await;
    let Outcome::Failed { retry: true, error } = &retried else {
        panic!("{retried}");
    };
    assert!(error.contains("a fresh invocation has the time"), "{error}");
    assert_eq!(tasks.count(), 1, "not handed off");

    assert_eq!(
        store.current(BUCKET, key).unwrap().body.len(),
        LARGE,
        "the source stays"
    );
    assert!(store.current(BUCKET, "processed/large.zip").is_none());
}

/// A redelivery that finds the output of an object too large for an invocation, its source not
/// yet deleted, would prove it by reading both whole: it is handed off or refused at once,
/// saying what would work, like the object's first delivery, instead of running into the
/// deadline on every retry.
#[tokio::test]
async fn a_redelivery_of_an_object_too_large_to_prove_in_time_is_handed_off_or_refused() {
    let store = Arc::new(MemoryStore::default());
    let key = "incoming/large.csv";
    store.insert(BUCKET, key, &vec![b'x'; LARGE]);
    store.fail_once("DeleteObject", ErrorClass::Transient);
    let first = worker(&store, Tuning::default())
        .process(&object(key), None)
        .await;
    assert!(first.should_retry(), "{first}");
    assert!(store.current(BUCKET, "processed/large.zip").is_some());

    refused_then_handed_off(&store, key).await;
    assert!(store.current(BUCKET, key).is_some(), "the source stays");
}

/// Lambda redelivers a whole invocation when any record in it fails, and may run two
/// deliveries of one event at once: however often a too-large object is delivered, one task is
/// started for it, and every delivery answers with that task (or, while it is being started,
/// fails transiently, to find it on the retry). The source stays.
#[tokio::test]
async fn deliveries_of_one_object_too_large_for_the_invocation_start_one_task() {
    let store = Arc::new(MemoryStore::default());
    let slow = Pace::instant_requests(0.01);
    let whole = || Deadline::after(Duration::from_secs(1), Duration::ZERO);
    let (handoff, tasks) = recorded_handoff(&store);
    let worker = worker(&store, Tuning::default())
        .with_pace(slow)
        .with_handoff(handoff);

    // One after the other: the retry of an invocation whose other record failed.
    let key = "incoming/large.csv";
    store.insert(BUCKET, key, &vec![b'x'; 1_000_000]);
    let first = worker.process(&object(key), Some(whole())).await;
    let again = worker.process(&object(key), Some(whole())).await;
    let Outcome::HandedOff { task } = &first else {
        panic!("{first}");
    };
    assert_eq!(again, first, "the retry names the same task");
    assert_eq!(tasks.count(), 1);
    let records = store.keys_under(BUCKET, "handoffs/");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        store.current(BUCKET, &records[0]).unwrap().info.metadata["handoff-task"],
        *task
    );

    // At once: two deliveries of the same event.
    let key = "incoming/other.csv";
    store.insert(BUCKET, key, &vec![b'y'; 1_000_000]);
    let delivery = object(key);
    let (one, two) = tokio::join!(
        worker.process(&delivery, Some(whole())),
        worker.process(&delivery, Some(whole()))
    );
    assert_eq!(tasks.count(), 2, "one more task: {one}; {two}");
    for outcome in [&one, &two] {
        assert!(
            matches!(outcome, Outcome::HandedOff { .. })
                || matches!(outcome, Outcome::Failed { retry: true, error } if error.contains("another delivery is starting")),
            "{outcome}"
        );
    }
    assert!(store.current(BUCKET, "incoming/large.csv").is_some());
    assert!(store.current(BUCKET, key).is_some());
}

/// Opened by the test that closes it: until then [`Gated`] does not start compressing.
static GATE: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// A "zip" that stores its input once [`GATE`] is open: a compressor still busy when the
/// deadline passes.
#[derive(Debug)]
struct Gated;

impl s3_compressor_formats::Format for Gated {
    fn write_compressed(
        &self,
        src: &mut dyn std::io::Read,
        dst: &mut dyn std::io::Write,
        _: &s3_compressor_formats::Entry,
    ) -> std::io::Result<s3_compressor_formats::Written> {
        let (open, opened) = &GATE;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        drop(open);
        std::io::copy(src, dst).map(|_| s3_compressor_formats::Written::default())
    }

    fn write_decompressed(
        &self,
        src: &mut dyn std::io::Read,
        dst: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        std::io::copy(src, dst).map(drop)
    }
}

/// The deadline gives up on an object whose compressor is still at work; its place in the
/// memory budget goes back only when that thread has stopped and freed what it holds, so the
/// next objects do not start on memory still in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_gives_the_memory_back_only_once_the_compressor_has_stopped() {
    let registration: &'static _ = Box::leak(Box::new(s3_compressor_formats::Registration {
        name: "zip",
        extension: "zip",
        content_type: "application/zip",
        kind: s3_compressor_formats::Kind::Archive,
        levels: None,
        crate_name: "pipeline-tests",
        build: |_| Box::new(Gated),
    }));
    let registry = Registry::from_registrations([registration]).unwrap();
    let routes = Arc::new(Routes::load(None, &registry).unwrap());
    let store = Arc::new(MemoryStore::default());
    store.insert(BUCKET, "incoming/slow.csv", b"a,b\n1,2\n");
    let worker = Worker::new(store.clone(), routes, Tuning::default())
        .with_pace(Pace::instant_requests(1e6));
    let deadline = Deadline::after(Duration::from_secs(1), Duration::ZERO);

    let outcome = worker
        .process(&object("incoming/slow.csv"), Some(deadline))
        .await;
    assert!(
        matches!(&outcome, Outcome::Failed { retry: true, error } if error.contains("deadline")),
        "{outcome}"
    );
    let total = worker.memory.total_bytes();
    let held_while_running = worker.memory.free_bytes() < total;
    // Opened before asserting: a thread left waiting would keep the runtime from shutting down.
    *GATE.0.lock().unwrap() = true;
    GATE.1.notify_all();
    assert!(
        held_while_running,
        "the compressor still runs, yet its memory was given back"
    );
    let stopped = Instant::now();
    while worker.memory.free_bytes() < total && stopped.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        worker.memory.free_bytes(),
        total,
        "given back once it stopped"
    );
    assert!(store.current(BUCKET, "incoming/slow.csv").is_some());
}

/// A gzip header, then `len` bytes of noise: what the first bytes show is all that counts.
fn gzip_like(len: usize) -> Vec<u8> {
    [
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".as_slice(),
        &noise(len),
    ]
    .concat()
}

const KEEPING: &str = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
                       if_not_worth_it = \"keep\"\nmin_size = 100\n";

/// A rule that keeps what does not pay leaves compressed content and small objects untouched,
/// writes nothing for them, and still compresses the rest whole.
#[tokio::test]
async fn a_keeping_rule_leaves_what_does_not_pay_untouched() {
    let store = Arc::new(MemoryStore::versioned());
    let gzip = gzip_like(3000);
    let png = [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".as_slice(),
        &noise(500),
    ]
    .concat();
    // Past the sample, so the bytes read ahead to judge it span many chunks.
    let text = b"date,amount\n2024-01-01,3\n".repeat(4000);
    let random = noise(100_000);
    store.insert(BUCKET, "incoming/sealed.bin", &random);
    store.insert(BUCKET, "incoming/logs.gz", &gzip);
    store.insert(BUCKET, "incoming/photo.dat", &png);
    store.insert(BUCKET, "incoming/tiny.csv", b"a,b\n1,2\n");
    store.insert(BUCKET, "incoming/report.csv", &text);
    let worker = worker_with_config(&store, KEEPING);

    let kept = [
        ("incoming/logs.gz", "kept: already compressed (gzip); "),
        ("incoming/photo.dat", "kept: already compressed (png); "),
        ("incoming/tiny.csv", "kept: below min_size 100 (8 bytes); "),
        (
            "incoming/sealed.bin",
            "kept: does not shrink (its first 65536 bytes compress to ",
        ),
    ];
    for (key, said) in kept {
        let outcome = worker.process(&object(key), None).await;
        assert!(matches!(outcome, Outcome::Kept(_)), "{key}: {outcome}");
        assert_eq!(outcome.label(), "kept");
        assert!(outcome.to_string().starts_with(said), "{outcome}");
        assert!(!outcome.should_retry() && !outcome.is_failure());
    }
    // A size the event gives is judged before anything is read: an object not there to read
    // is kept all the same.
    let sized = ObjectRef {
        size: Some(4),
        ..object("incoming/never-read.csv")
    };
    let outcome = worker.process(&sized, None).await;
    assert!(matches!(outcome, Outcome::Kept(_)), "{outcome}");

    for (key, body) in [
        ("incoming/logs.gz", &gzip[..]),
        ("incoming/photo.dat", &png[..]),
        ("incoming/tiny.csv", b"a,b\n1,2\n"),
        ("incoming/sealed.bin", &random[..]),
    ] {
        assert_eq!(&store.current(BUCKET, key).unwrap().body[..], body, "{key}");
        assert_eq!(store.versions(BUCKET, key), 1, "{key} has no delete marker");
    }

    // The rest is compressed whole: the bytes read ahead to judge it are not lost.
    let outcome = worker.process(&object("incoming/report.csv"), None).await;
    let Outcome::Compressed {
        output_key,
        bytes_in,
        source,
        ..
    } = &outcome
    else {
        panic!("{outcome}");
    };
    assert_eq!(*bytes_in, text.len() as u64);
    assert_eq!(*source, SourceFate::Deleted);
    assert_eq!(
        store.keys_under(BUCKET, "processed/"),
        [output_key.as_str()]
    );
}

/// Without the policy, compressed content is compressed as before: every upload becomes an
/// output.
#[tokio::test]
async fn by_default_compressed_content_is_compressed_as_before() {
    let store = Arc::new(MemoryStore::default());
    let gzip = gzip_like(300);
    store.insert(BUCKET, "incoming/logs.gz", &gzip);
    store.insert(BUCKET, "incoming/t.csv", b"x");
    let worker = worker(&store, Tuning::default());
    for key in ["incoming/logs.gz", "incoming/t.csv"] {
        let outcome = worker.process(&object(key), None).await;
        assert!(matches!(outcome, Outcome::Compressed { .. }), "{outcome}");
    }
    assert_eq!(
        store.keys_under(BUCKET, "processed/"),
        ["processed/logs.zip", "processed/t.zip"]
    );
}

/// tar only bundles: a sample never shrinks in it, so it judges no sample, and text under a
/// keeping tar rule is bundled as before.
#[tokio::test]
async fn a_keeping_rule_of_a_format_that_does_not_compress_judges_no_sample() {
    let store = Arc::new(MemoryStore::default());
    store.insert(
        BUCKET,
        "incoming/notes.txt",
        &b"meeting notes\n".repeat(100),
    );
    let config = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
                  format = \"tar\"\nif_not_worth_it = \"keep\"\n";
    let outcome = worker_with_config(&store, config)
        .process(&object("incoming/notes.txt"), None)
        .await;
    assert!(matches!(outcome, Outcome::Compressed { .. }), "{outcome}");
    assert_eq!(
        store.keys_under(BUCKET, "processed/"),
        ["processed/notes.tar"]
    );
}

const MOVING: &str = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
                      if_not_worth_it = \"move\"\nmin_size = 100\n";

/// A worker with the moving rule and `tuning`.
fn moving_worker(store: &Arc<MemoryStore>, tuning: Tuning) -> Worker {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), MOVING).unwrap();
    let registry = Registry::from_inventory().unwrap();
    let routes = Arc::new(Routes::load(Some(file.path()), &registry).unwrap());
    Worker::new(store.clone(), routes, tuning)
}

/// A JPEG's first bytes, then noise.
fn jpeg_like(len: usize) -> Vec<u8> {
    [b"\xff\xd8\xff\xe0\x00\x10JFIF\x00".as_slice(), &noise(len)].concat()
}

/// What a move must end with: the output byte-identical under its own name, the source gone
/// behind a delete marker that restores it.
fn assert_moved(store: &MemoryStore, key: &str, body: &[u8]) {
    let output_key = key.replacen("incoming/", "processed/", 1);
    let output = store.current(BUCKET, &output_key).unwrap();
    assert_eq!(&output.body[..], body, "{output_key}");
    assert_eq!(
        output.info.metadata.get("source-key").map(String::as_str),
        Some(key)
    );
    assert!(store.current(BUCKET, key).is_none(), "{key} is deleted");
    assert_eq!(store.versions(BUCKET, key), 1, "{key} stays as a version");
}

/// A moving rule copies what does not pay, unchanged and server-side, to the output prefix
/// under its own name; proves the copy by the stored CRC-64/NVME without reading the source;
/// and deletes the source recoverably. What pays is still compressed.
#[tokio::test]
async fn a_moving_rule_copies_what_does_not_pay_and_deletes_the_source_recoverably() {
    let store = Arc::new(MemoryStore::versioned());
    let photo = jpeg_like(200_000);
    let gzip = gzip_like(3000);
    let sealed = noise(100_000);
    store.insert(BUCKET, "incoming/a/photo.jpg", &photo);
    store.insert(BUCKET, "incoming/logs.gz", &gzip);
    store.insert(BUCKET, "incoming/sealed.bin", &sealed);
    store.insert(BUCKET, "incoming/tiny.csv", b"a,b\n1,2\n");
    let worker = moving_worker(&store, Tuning::default());

    for (key, body, said) in [
        ("incoming/a/photo.jpg", &photo[..], "moved: already compressed (jpeg); copied unchanged to processed/a/photo.jpg (200011 bytes, nothing saved); source deleted"),
        ("incoming/logs.gz", &gzip[..], "moved: already compressed (gzip); "),
        ("incoming/sealed.bin", &sealed[..], "moved: does not shrink (its first 65536 bytes compress to "),
        ("incoming/tiny.csv", b"a,b\n1,2\n", "moved: below min_size 100 (8 bytes); "),
    ] {
        let read_before = store.bytes_read();
        let outcome = worker.process(&object(key), None).await;
        let Outcome::Moved { source, proof, .. } = &outcome else {
            panic!("{key}: {outcome}");
        };
        assert!(outcome.to_string().starts_with(said), "{outcome}");
        assert_eq!(*source, SourceFate::Deleted);
        assert_eq!(
            *proof,
            Proof {
                source: SourceProof::Crc64Nvme,
                output: OutputProof::StoredChecksum,
            }
        );
        // Only the GET that judged the first bytes: no download of the body for the copy.
        let read = store.bytes_read() - read_before;
        assert!(read <= body.len().min(2 * 65536) as u64, "{key}: {read} bytes read");
        assert_moved(&store, key, body);
    }
    assert_eq!(store.copies(), 4);
    assert!(store.remove_delete_marker(BUCKET, "incoming/a/photo.jpg"));
    assert_eq!(
        &store.current(BUCKET, "incoming/a/photo.jpg").unwrap().body[..],
        &photo[..]
    );

    // An object its event says is small is moved with no GET at all.
    store.insert(BUCKET, "incoming/b/small.txt", b"hello");
    let sized = ObjectRef {
        size: Some(5),
        ..object("incoming/b/small.txt")
    };
    let read_before = store.bytes_read();
    let outcome = worker.process(&sized, None).await;
    assert!(matches!(outcome, Outcome::Moved { .. }), "{outcome}");
    assert_eq!(store.bytes_read(), read_before, "nothing was downloaded");
    assert_moved(&store, "incoming/b/small.txt", b"hello");

    // What pays is compressed as ever.
    let text = b"date,amount\n2024-01-01,3\n".repeat(4000);
    store.insert(BUCKET, "incoming/report.csv", &text);
    let outcome = worker.process(&object("incoming/report.csv"), None).await;
    assert!(matches!(outcome, Outcome::Compressed { .. }), "{outcome}");
}

/// Above the copy threshold the copy goes in parts (UploadPartCopy over byte ranges), and is
/// proven and completed with the source's CRC-64/NVME as any copy.
#[tokio::test]
async fn a_move_above_the_threshold_copies_in_parts() {
    let store = Arc::new(MemoryStore::versioned());
    let photo = jpeg_like(1_100_000);
    store.insert(BUCKET, "incoming/big.jpg", &photo);
    let tuning = Tuning {
        copy_threshold: 512 * 1024,
        copy_part_size: 256 * 1024,
        ..Tuning::default()
    };
    let outcome = moving_worker(&store, tuning)
        .process(&object("incoming/big.jpg"), None)
        .await;
    assert!(matches!(outcome, Outcome::Moved { .. }), "{outcome}");
    assert_eq!(store.completed_multipart(), 1);
    assert_eq!(store.copies(), 5, "five parts of 256 KiB, the last short");
    assert_eq!(store.open_uploads(), 0);
    assert_moved(&store, "incoming/big.jpg", &photo);
}

/// A source that keeps another checksum, or none, is read once for its CRC-64/NVME (held
/// against what it keeps); a store that keeps no checksum of the copy has it read back.
#[tokio::test]
async fn a_source_without_a_crc64nvme_is_read_once_for_it() {
    let store = Arc::new(MemoryStore::versioned());
    let photo = jpeg_like(150_000);
    store.insert_keeping(BUCKET, "incoming/crc32.jpg", &photo, SourceProof::Crc32);
    let outcome = moving_worker(&store, Tuning::default())
        .process(&object("incoming/crc32.jpg"), None)
        .await;
    let Outcome::Moved { proof, .. } = &outcome else {
        panic!("{outcome}");
    };
    assert_eq!(proof.source, SourceProof::Crc32);
    assert_eq!(proof.output, OutputProof::StoredChecksum);
    assert_moved(&store, "incoming/crc32.jpg", &photo);

    let bare = Arc::new(MemoryStore::without_checksums());
    bare.insert(BUCKET, "incoming/bare.jpg", &photo);
    let outcome = moving_worker(&bare, Tuning::default())
        .process(&object("incoming/bare.jpg"), None)
        .await;
    let Outcome::Moved { proof, .. } = &outcome else {
        panic!("{outcome}");
    };
    assert_eq!(
        *proof,
        Proof {
            source: SourceProof::SizeOnly,
            output: OutputProof::ReadBack,
        }
    );
    assert_eq!(
        &bare.current(BUCKET, "processed/bare.jpg").unwrap().body[..],
        &photo[..]
    );
    assert!(bare.current(BUCKET, "incoming/bare.jpg").is_none());
}

/// A newer upload landing between the judgement and the copy is never copied nor deleted:
/// the copy source's If-Match refuses it; the next delivery moves the newer one.
#[tokio::test]
async fn a_newer_upload_during_a_move_is_never_lost() {
    let store = Arc::new(MemoryStore::default());
    let older = jpeg_like(1000);
    let newer = jpeg_like(2000);
    store.insert(BUCKET, "incoming/x.jpg", &older);
    store.replace_after_get("incoming/x.jpg", &newer);
    let worker = moving_worker(&store, Tuning::default());
    let outcome = worker.process(&object("incoming/x.jpg"), None).await;
    assert!(outcome.should_retry(), "{outcome}");
    assert_eq!(
        &store.current(BUCKET, "incoming/x.jpg").unwrap().body[..],
        &newer[..]
    );
    assert!(store.current(BUCKET, "processed/x.jpg").is_none());

    let outcome = worker.process(&object("incoming/x.jpg"), None).await;
    assert!(matches!(outcome, Outcome::Moved { .. }), "{outcome}");
    assert_eq!(
        &store.current(BUCKET, "processed/x.jpg").unwrap().body[..],
        &newer[..]
    );
}

/// A run stopped after its copy (here, its delete failed) leaves the copy; the next delivery
/// proves it and deletes the source, without copying again.
#[tokio::test]
async fn a_redelivery_proves_an_earlier_copy_and_finishes_the_move() {
    let store = Arc::new(MemoryStore::versioned());
    let photo = jpeg_like(5000);
    store.insert(BUCKET, "incoming/x.jpg", &photo);
    let worker = moving_worker(&store, Tuning::default());
    // The first move finds out that the store honours If-Match, so the failure below hits the
    // source's delete.
    store.insert(BUCKET, "incoming/first.jpg", &photo);
    let first = worker.process(&object("incoming/first.jpg"), None).await;
    assert!(matches!(first, Outcome::Moved { .. }), "{first}");
    store.fail_once("DeleteObject", ErrorClass::Transient);
    let outcome = worker.process(&object("incoming/x.jpg"), None).await;
    assert!(outcome.should_retry(), "{outcome}");
    assert!(store.current(BUCKET, "incoming/x.jpg").is_some());
    let copies = store.copies();

    let outcome = worker.process(&object("incoming/x.jpg"), None).await;
    assert!(
        matches!(
            outcome,
            Outcome::Moved {
                source: SourceFate::Deleted,
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(store.copies(), copies, "no second copy");
    assert_moved(&store, "incoming/x.jpg", &photo);
}

/// A copy the store keeps other than the source (its CRC-64/NVME differs) is removed, and the
/// source kept.
#[tokio::test]
async fn a_copy_stored_damaged_is_removed_and_the_source_kept() {
    let store = Arc::new(MemoryStore::default());
    let photo = jpeg_like(5000);
    store.insert(BUCKET, "incoming/x.jpg", &photo);
    store.damage_next_write();
    let outcome = moving_worker(&store, Tuning::default())
        .process(&object("incoming/x.jpg"), None)
        .await;
    assert!(outcome.is_failure() && !outcome.should_retry(), "{outcome}");
    assert!(
        outcome.to_string().contains("verification failed"),
        "{outcome}"
    );
    assert!(store.current(BUCKET, "processed/x.jpg").is_none());
    assert_eq!(
        &store.current(BUCKET, "incoming/x.jpg").unwrap().body[..],
        &photo[..]
    );
}
