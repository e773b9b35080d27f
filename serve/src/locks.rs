//! One lock per object key.
//!
//! A precondition (`If-None-Match: *`, `If-Match`) is checked, and then the write or delete done,
//! in separate steps, and an object's bytes and its record are different files. Without a lock
//! a new upload can land between the check and the action: a conditional delete would remove
//! the new object, two create-only writes could both succeed, and a GET could pair the old bytes
//! with the new ETag. Holding the key's lock across every write, delete and read of that key
//! makes each of them atomic, as they are on S3. Different keys never wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Id = (String, String);

#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    /// Only keys someone holds or waits for are present, so this stays as small as the number
    /// of requests in flight. (A waiter whose request is cancelled just after the holder
    /// released can leave its key's entry behind; the next lock of that key removes it.)
    held: Mutex<HashMap<Id, Arc<AsyncMutex<()>>>>,
}

impl KeyLocks {
    /// Waits until no other request holds `bucket`/`key`, then holds it until the guard drops.
    pub(crate) async fn lock(self: &Arc<Self>, bucket: &str, key: &str) -> KeyGuard {
        let id = (bucket.to_owned(), key.to_owned());
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(held.entry(id.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            locks: Arc::clone(self),
            id,
            guard: Some(guard),
        }
    }

    /// Locks several keys of one bucket, always in the same (sorted) order so that two requests
    /// naming the same keys cannot deadlock.
    pub(crate) async fn lock_all<'a>(
        self: &Arc<Self>,
        bucket: &str,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<KeyGuard> {
        let mut keys: Vec<&str> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.lock(bucket, key).await);
        }
        guards
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[derive(Debug)]
pub(crate) struct KeyGuard {
    locks: Arc<KeyLocks>,
    id: Id,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Release first: the owned guard keeps a reference to the mutex, and the count below
        // must only see the map's own reference when nobody else holds or waits.
        self.guard = None;
        if held
            .get(&self.id)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            held.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_second_request_for_the_same_key_waits_for_the_first() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("b", "k").await;
        let waiting = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("b", "k").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second lock must wait");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second lock is granted once the first is released")
            .expect("the task does not panic");
        drop(second);
        assert_eq!(locks.len(), 0, "released keys are forgotten");
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = Arc::new(KeyLocks::default());
        let _a = locks.lock("b", "a").await;
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock("b", "b")).await;
        assert!(b.is_ok());
    }

    #[tokio::test]
    async fn lock_all_takes_each_key_once() {
        let locks = Arc::new(KeyLocks::default());
        let guards = locks.lock_all("b", ["y", "x", "y"]).await;
        assert_eq!(guards.len(), 2);
        drop(guards);
        assert_eq!(locks.len(), 0);
    }
}
