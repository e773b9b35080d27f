//! One memory budget for every object a worker processes at once.
//!
//! A batch of 10,000 small objects should run many at a time and a 5 GiB one alone, within
//! bounded memory, and the small ones should not wait for the large one. Each object reserves
//! what it can hold at most ([`MemoryBudget::cost`]: its buffers at the part size its size
//! needs, and its codec's state for its format, level and size) before its download starts,
//! and gives it back once those are gone: when the compressor's thread ends, not when the
//! deadline gives up on it.
//!
//! The shared budget is what an object with 8 MiB parts (up to about 80 GiB) and a deflate
//! codec holds. Objects that cost at most half of it share it. A larger one would hold most
//! of it alone and keep every small object behind it waiting, so it runs in a lane of its own
//! beside the shared budget instead, one such object at a time: the process holds at most the
//! shared budget plus the largest object's cost, and that is what the machine must have
//! (docs/how-it-works.md, "Memory").

use std::sync::Arc;

use s3_compressor_formats::Compressor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{transfer, Tuning};

/// The HTTP requests of an object in flight, beyond the bodies the buffers count.
const REQUESTS: u64 = MIB;
/// The codec state the base budget allows for: deflate's blocks in flight and a libdeflate
/// compressor on each of two threads, with the inflater that proves the output.
const BASE_CODEC: u64 = 8 * MIB;
const MIB: u64 = 1024 * 1024;
/// Permits are KiB, so that a 100-byte object does not weigh as much as a 1 MiB one while the
/// count of permits stays far below the semaphore's limit.
const KIB: u64 = 1024;
/// A wait for memory shorter than this is not logged: in a batch of small objects most wait a
/// little, and a line each would bury the one that waited behind a large object.
const WAIT_WORTH_LOGGING: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct MemoryBudget {
    /// KiB of the shared budget, for the objects that fit beside others.
    shared: Arc<Semaphore>,
    /// The one place for an object that does not fit beside others.
    lane: Arc<Semaphore>,
    /// The most KiB an object may cost and still share the budget: half of it.
    beside_kib: u32,
    /// What the shared budget holds.
    base: u64,
    tuning: Tuning,
}

/// An object's place in the budget, given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// KiB of the shared budget, or the lane. `None` only if a semaphore were closed, which
    /// they never are.
    permit: Option<OwnedSemaphorePermit>,
    /// In the lane: the KiB the object costs, which the lane's one permit stands for.
    lane_kib: Option<u32>,
}

impl Reservation {
    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        let kib = match self.lane_kib {
            Some(kib) => kib as usize,
            None => self
                .permit
                .as_ref()
                .map_or(0, |permit| permit.num_permits()),
        };
        kib as u64 * KIB
    }

    /// Whether it holds the lane rather than a share of the budget.
    #[cfg(test)]
    pub(crate) fn in_lane(&self) -> bool {
        self.lane_kib.is_some()
    }
}

impl MemoryBudget {
    pub(crate) fn new(tuning: Tuning) -> Self {
        let parts = (tuning.parts_in_flight as u64 + 2) * tuning.min_part_size as u64;
        let base = tuning.read_ahead_bytes as u64 + parts + BASE_CODEC + REQUESTS;
        let base_kib = kib(base);
        Self {
            shared: Arc::new(Semaphore::new(base_kib as usize)),
            lane: Arc::new(Semaphore::new(1)),
            beside_kib: base_kib / 2,
            base,
            tuning,
        }
    }

    /// Bytes an object of `size` bytes can make the pipeline hold with `compressor`: its
    /// buffers, its codec's state and its requests. A size not known yet (nothing is read
    /// before the GET tells it) counts as the whole base budget.
    pub(crate) fn cost(&self, size: Option<u64>, compressor: &Compressor) -> u64 {
        let Some(size) = size else {
            return self.base;
        };
        self.buffers(size) + compressor.memory(Some(size)) + REQUESTS
    }

    /// The read-ahead, every part uploading, the one filling and the one the proof decodes,
    /// at the part size an object of `size` bytes needs; none larger than the output can be.
    fn buffers(&self, size: u64) -> u64 {
        let tuning = &self.tuning;
        let parts_held = tuning.parts_in_flight as u64 + 2;
        let read_ahead = tuning.read_ahead_bytes as u64;
        let part_size = transfer::part_size(size, tuning.min_part_size) as u64;
        let output = transfer::worst_output(size);
        let part = output.min(part_size);
        let parts_held = output.div_ceil(part_size).min(parts_held);
        size.min(read_ahead) + parts_held * part
    }

    /// Bytes of the shared budget no object holds now.
    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> u64 {
        self.shared.available_permits() as u64 * KIB
    }

    /// Bytes of the shared budget in all.
    #[cfg(test)]
    pub(crate) fn total_bytes(&self) -> u64 {
        self.base.div_ceil(KIB) * KIB
    }

    /// Whether an object holds the lane now.
    #[cfg(test)]
    pub(crate) fn lane_taken(&self) -> bool {
        self.lane.available_permits() == 0
    }

    /// [`Self::reserve`] for the object `key`, saying in the log when it had to wait a while
    /// for others to finish: otherwise an object queued behind a large one shows no sign of
    /// life until it is done.
    pub(crate) async fn reserve_for(&self, key: &str, bytes: u64) -> Reservation {
        let asked = std::time::Instant::now();
        let reservation = self.reserve(bytes).await;
        let waited = asked.elapsed();
        if waited >= WAIT_WORTH_LOGGING {
            tracing::info!(
                %key,
                waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                bytes,
                in_lane = reservation.lane_kib.is_some(),
                "waited for memory while other objects held the budget"
            );
        }
        reservation
    }

    /// Waits until `bytes` fit: in the shared budget if they fit beside others, else in the
    /// lane, once the object before in it has finished.
    pub(crate) async fn reserve(&self, bytes: u64) -> Reservation {
        let wanted = kib(bytes);
        // The semaphores are never closed, so acquiring cannot fail; should it ever, the
        // object runs without a place in the budget rather than not at all.
        if wanted <= self.beside_kib {
            let permit = Arc::clone(&self.shared)
                .acquire_many_owned(wanted)
                .await
                .ok();
            Reservation {
                permit,
                lane_kib: None,
            }
        } else {
            let permit = Arc::clone(&self.lane).acquire_owned().await.ok();
            Reservation {
                permit,
                lane_kib: Some(wanted),
            }
        }
    }

    /// Makes `reservation` hold `bytes`, now that the object's size is known: the excess of a
    /// share goes back at once, so that an object reserved as "size unknown" does not keep
    /// small ones waiting, and an object in the lane that turns out small leaves it. One whose
    /// place no longer fits is given back whole before the new one is waited for, so two
    /// objects never wait for each other's share.
    pub(crate) async fn refit(&self, mut reservation: Reservation, bytes: u64) -> Reservation {
        let wanted = kib(bytes);
        let beside = wanted <= self.beside_kib;
        match (&mut reservation.permit, reservation.lane_kib) {
            (Some(_), Some(_)) if !beside => {
                reservation.lane_kib = Some(wanted);
                return reservation;
            }
            (Some(permit), None) if beside => {
                let held = permit.num_permits();
                let wanted = wanted as usize;
                if held >= wanted {
                    drop(permit.split(held - wanted));
                    return reservation;
                }
            }
            _ => {}
        }
        drop(reservation);
        self.reserve(bytes).await
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use s3_compressor_formats::{Options, Registry};

    use super::*;

    const GIB: u64 = 1024 * MIB;

    fn compressor(format: &str, level: Option<i32>) -> Compressor {
        let registry = Registry::from_inventory().unwrap();
        let options = Options {
            level,
            threads: Some(2),
        };
        registry.get(format).unwrap().compressor(&options).unwrap()
    }

    /// A 1 TiB object needs parts of 106 MiB to stay within 10,000: its reservation holds
    /// four of them (two uploading, one filling, one being decoded), the read-ahead and the
    /// codec, though that is ten times the shared budget: it runs in the lane beside it.
    #[tokio::test]
    async fn a_one_tebibyte_object_reserves_what_its_parts_and_codec_hold() {
        let tuning = Tuning::default();
        let budget = MemoryBudget::new(tuning);
        let size = 1 << 40;
        let zip = compressor("zip", None);
        let part = transfer::part_size(size, tuning.min_part_size) as u64;
        assert_eq!(part, 106 * MIB);
        let held = 4 * part + tuning.read_ahead_bytes as u64 + zip.memory(Some(size));
        let reservation = budget.reserve(budget.cost(Some(size), &zip)).await;
        assert!(
            reservation.bytes() >= held,
            "reserves {} MiB, its buffers hold {} MiB",
            reservation.bytes() / MIB,
            held / MIB
        );
        assert!(reservation.in_lane());
        assert_eq!(
            budget.free_bytes(),
            budget.total_bytes(),
            "the shared budget is whole"
        );
    }

    /// Small objects run beside a large one instead of waiting for it; a second large one
    /// waits for the lane, and an object reserved before its size was known and then found
    /// small leaves the lane to the next.
    #[tokio::test]
    async fn small_objects_run_beside_a_large_one_and_large_ones_take_turns() {
        let budget = MemoryBudget::new(Tuning::default());
        let zstd_19 = compressor("zstd", Some(19));
        let zip = compressor("zip", None);
        let large_cost = budget.cost(Some(30_000_000), &zstd_19);
        assert!(large_cost > budget.total_bytes(), "{large_cost}");
        let large = budget.reserve(large_cost).await;
        assert!(large.in_lane() && budget.lane_taken());

        let soon = |bytes| {
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.reserve(bytes))
        };
        let mut small = Vec::new();
        for size in [35, 100_000, 2_500_000] {
            let cost = budget.cost(Some(size), &zip);
            let reservation = soon(cost).await.expect("a small object fits beside");
            assert!(!reservation.in_lane() && reservation.bytes() >= cost);
            small.push(reservation);
        }
        assert!(
            soon(large_cost).await.is_err(),
            "a second large object waits for the lane"
        );
        drop(large);
        let unknown = soon(budget.cost(None, &zip))
            .await
            .expect("the lane is free");
        assert!(unknown.in_lane());
        let known = budget.refit(unknown, budget.cost(Some(35), &zip)).await;
        assert!(!known.in_lane() && !budget.lane_taken());
        drop((small, known));
        assert_eq!(budget.free_bytes(), budget.total_bytes());
    }

    /// An object kept waiting behind a large one says so in the log, with its key and how
    /// long it waited; one that did not wait, such as a small one beside it, says nothing.
    #[tokio::test]
    async fn a_wait_for_memory_is_logged_with_the_key_and_how_long() {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let budget = Arc::new(MemoryBudget::new(Tuning::default()));
        let zip = compressor("zip", None);
        let large = budget
            .reserve_for("incoming/large.bin", budget.cost(Some(1 << 40), &zip))
            .await;
        let small = budget
            .reserve_for("incoming/small.csv", budget.cost(Some(1000), &zip))
            .await;
        let second = budget.cost(Some(1 << 40), &zip);
        let waiting = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve_for("incoming/second.bin", second).await })
        };
        tokio::time::sleep(WAIT_WORTH_LOGGING + std::time::Duration::from_millis(100)).await;
        drop(large);
        let reservation = waiting.await.unwrap();
        drop((reservation, small));

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("waited for memory"))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("key=incoming/second.bin"), "{log}");
        let waited_ms: u64 = lines[0]
            .split("waited_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no waited_ms: {log}"));
        assert!(waited_ms >= 1_000, "{log}");
    }

    /// The default of a `deploy.sh` setting, from its `NAME=${NAME:-default}` line.
    fn deploy_default(name: &str) -> u64 {
        let script = include_str!("../../../cloudformation/deploy.sh");
        let prefix = format!("{name}=${{{name}:-");
        let line = script
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()));
        line.and_then(|rest| rest.strip_suffix('}'))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("deploy.sh sets no default {name}"))
    }

    /// The task `--large-objects fargate` starts gets the largest object S3 allows, 5 TiB, in
    /// whatever format and level a rule names: its default memory holds what that costs on
    /// its default CPU, beside the shared budget, with room for the rest of the process.
    #[test]
    fn the_fargate_task_holds_the_largest_object_s3_allows() {
        const PROCESS: u64 = 64 * MIB;
        let memory = deploy_default("TASK_MEMORY") * MIB;
        let threads = usize::try_from(deploy_default("TASK_CPU") / 1024).unwrap();
        let budget = MemoryBudget::new(Tuning::default());
        let registry = Registry::from_inventory().unwrap();
        for registration in registry.iter() {
            let options = Options {
                level: registration.levels.map(|levels| levels.max),
                threads: Some(threads),
            };
            let compressor = registration.compressor(&options).unwrap();
            let cost = budget.cost(Some(5 << 40), &compressor);
            assert!(
                cost + budget.total_bytes() + PROCESS <= memory,
                "{} at level {:?}: {} MiB, the task has {} MiB",
                registration.name,
                options.level,
                cost / MIB,
                memory / MIB
            );
        }
    }

    /// zstd at level 19 keeps about 80 MiB of match tables per worker for a large input, level
    /// 3 about 1 MiB; a small input gets tables sized to it at any level.
    #[test]
    fn zstd_level_19_costs_its_tables_and_a_small_input_does_not() {
        let budget = MemoryBudget::new(Tuning::default());
        let large = Some(10 * GIB);
        let level_3 = budget.cost(large, &compressor("zstd", Some(3)));
        let level_19 = budget.cost(large, &compressor("zstd", Some(19)));
        assert!(level_19 >= level_3 + 160 * MIB, "{level_3} vs {level_19}");
        for format in ["zstd", "tar.zst"] {
            let tiny = budget.cost(Some(20_000), &compressor(format, Some(19)));
            assert!(tiny < 4 * MIB, "{format}: {tiny}");
        }
    }
}
