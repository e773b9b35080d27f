//! The hand-off record against the in-memory store: what a later or concurrent delivery finds.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3_compressor_events::ObjectRef;
use s3_compressor_formats::Registry;

use super::{
    check_records_prefix, release, Handoff, HandoffError, RecordedHandoff, RecordingTasks, AT,
    CLAIM_LIFETIME, TASK, TASK_RECORD_LIFETIME,
};
use crate::store::memory::MemoryStore;
use crate::store::{Listed, Location, ObjectInfo};
use crate::Routes;

const BUCKET: &str = "files";
const PREFIX: &str = "handoffs/";

fn object(key: &str) -> ObjectRef {
    let listed = Listed {
        key: key.to_owned(),
        size: None,
        storage_class: None,
    };
    listed.in_bucket(BUCKET)
}

fn recorded(store: &Arc<MemoryStore>) -> (RecordedHandoff, Arc<RecordingTasks>) {
    let tasks = Arc::new(RecordingTasks::default());
    let handoff = RecordedHandoff::new(store.clone(), PREFIX.to_owned(), tasks.clone());
    (handoff, tasks)
}

/// A record as an earlier delivery left it, `age` ago, naming `task` if it had started one.
fn leave_record(
    store: &MemoryStore,
    handoff: &RecordedHandoff,
    source: &ObjectRef,
    read: &ObjectInfo,
    age: Duration,
    task: Option<&str>,
) {
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - age;
    let mut metadata = HashMap::from([(AT.to_owned(), at.as_secs().to_string())]);
    if let Some(task) = task {
        metadata.insert(TASK.to_owned(), task.to_owned());
    }
    let record = handoff.record_of(source, read);
    store.insert_with_metadata(BUCKET, &record.key, b"earlier", metadata);
}

fn task_of(store: &MemoryStore, key: &str) -> Option<String> {
    store.current(BUCKET, key)?.info.metadata.get(TASK).cloned()
}

/// RunTask refused: the record is taken back, so the retry of that failure starts the task
/// instead of finding a record of one that never ran.
#[tokio::test]
async fn a_task_that_did_not_start_leaves_no_record_and_the_retry_starts_it() {
    let store = Arc::new(MemoryStore::default());
    let read = store.insert(BUCKET, "incoming/big.csv", b"big");
    let (handoff, tasks) = recorded(&store);
    tasks.refuse.store(true, Ordering::SeqCst);
    let refused = handoff.hand_off(&object("incoming/big.csv"), &read).await;
    assert!(
        matches!(refused, Err(HandoffError::RunTask(_))),
        "{refused:?}"
    );
    assert!(store.keys_under(BUCKET, PREFIX).is_empty());

    tasks.refuse.store(false, Ordering::SeqCst);
    let task = handoff
        .hand_off(&object("incoming/big.csv"), &read)
        .await
        .unwrap();
    let records = store.keys_under(BUCKET, PREFIX);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(task_of(&store, &records[0]), Some(task));
    // The task is told which record to remove.
    assert_eq!(tasks.started.lock().unwrap()[0].1, records[0]);
}

/// What a later delivery does with the record it finds, by its age and whether it names a task.
#[tokio::test]
async fn a_record_holds_back_other_deliveries_only_while_its_task_can_be_running() {
    let store = Arc::new(MemoryStore::default());
    let source = object("incoming/big.csv");
    let read = store.insert(BUCKET, &source.key, b"big");
    let (handoff, tasks) = recorded(&store);

    // A task started an hour ago: that task is the answer, none is started.
    let running = "arn:aws:ecs:us-east-1:123456789012:task/cluster/earlier";
    let hour = Duration::from_secs(3600);
    leave_record(&store, &handoff, &source, &read, hour, Some(running));
    assert_eq!(handoff.hand_off(&source, &read).await.unwrap(), running);
    assert_eq!(tasks.count(), 0);

    // Another delivery is starting one: try again later, not `handed_off` with no task.
    leave_record(&store, &handoff, &source, &read, Duration::ZERO, None);
    let starting = handoff.hand_off(&source, &read).await;
    assert!(
        matches!(starting, Err(HandoffError::Starting { .. })),
        "{starting:?}"
    );
    assert_eq!(tasks.count(), 0);

    // Older than any task runs, or a start that died midway: replaced, and a task started.
    for (age, task) in [
        (TASK_RECORD_LIFETIME + hour, Some(running)),
        (CLAIM_LIFETIME + Duration::from_secs(60), None),
    ] {
        leave_record(&store, &handoff, &source, &read, age, task);
        let started = handoff.hand_off(&source, &read).await.unwrap();
        assert_ne!(started, running);
        let record = handoff.record_of(&source, &read);
        assert_eq!(task_of(&store, &record.key), Some(started));
    }
    assert_eq!(tasks.count(), 2);
}

/// A newer upload of the key is another object: its own record, its own task.
#[tokio::test]
async fn each_version_read_has_its_own_record() {
    let store = Arc::new(MemoryStore::default());
    let source = object("incoming/big.csv");
    let (handoff, tasks) = recorded(&store);
    let first = store.insert(BUCKET, &source.key, b"first");
    handoff.hand_off(&source, &first).await.unwrap();
    let second = store.insert(BUCKET, &source.key, b"second upload");
    handoff.hand_off(&source, &second).await.unwrap();
    assert_eq!(tasks.count(), 2);
    assert_eq!(store.keys_under(BUCKET, PREFIX).len(), 2);
}

/// The task's last step removes the record for good, also in a versioned bucket.
#[tokio::test]
async fn release_removes_the_record_for_good() {
    let store = Arc::new(MemoryStore::versioned());
    let source = object("incoming/big.csv");
    let read = store.insert(BUCKET, &source.key, b"big");
    let (handoff, _tasks) = recorded(&store);
    handoff.hand_off(&source, &read).await.unwrap();
    let record = handoff.record_of(&source, &read);
    release(&*store, &record).await.unwrap();
    assert_eq!(store.versions(BUCKET, &record.key), 0);
    // A record already gone is no error.
    let gone = Location {
        bucket: BUCKET.to_owned(),
        key: format!("{PREFIX}none"),
    };
    release(&*store, &gone).await.unwrap();
}

/// Records under a source prefix would be compressed as uploads; the function refuses to start.
#[test]
fn a_records_prefix_overlapping_a_source_prefix_is_refused() {
    let registry = Registry::from_inventory().unwrap();
    let routes = Routes::load(None, &registry).unwrap();
    check_records_prefix("s3-compressor/handoffs/", &routes).unwrap();
    for overlapping in ["incoming/handoffs/", "incoming/", "in", ""] {
        let refused = check_records_prefix(overlapping, &routes);
        assert!(
            matches!(refused, Err(HandoffError::RecordsUnderSource { .. })),
            "{overlapping:?}: {refused:?}"
        );
    }
}
