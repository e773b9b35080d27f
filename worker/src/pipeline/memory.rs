//! One memory budget for every object a worker processes at once.
//!
//! A batch of 10,000 small objects should run many at a time and a 5 GiB one alone, within
//! the same memory. Each object reserves what its buffers can hold at most (see
//! [`MemoryBudget::cost`]) before its download starts, and gives it back once its output is
//! written; the budget is what one object of any size can hold, so a large object runs alone
//! and small ones share it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{transfer, Tuning};

/// What an object costs beyond its data buffers: the compressor's own state (a zstd context at
/// level 19 is about 1 MiB per thread, libdeflate's less) and the HTTP bodies in flight.
const OVERHEAD: u64 = 2 * MIB;
/// The blocks deflate holds on top: two of 512 KiB per thread waiting or being compressed,
/// each with its output, on the two cores of a Lambda function; an object smaller than that
/// holds itself and its output at most.
const COMPRESSOR_BLOCKS: u64 = 4 * MIB;
const MIB: u64 = 1024 * 1024;
/// Permits are KiB, so that a 100-byte object does not weigh as much as a 1 MiB one while the
/// count of permits stays far below the semaphore's limit.
const KIB: u64 = 1024;

#[derive(Debug)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
    tuning: Tuning,
}

/// An object's place in the budget, given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// `None` only if the semaphore were closed, which it never is.
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    pub(crate) fn new(tuning: Tuning) -> Self {
        let total_kib = kib(Self::largest(&tuning));
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            tuning,
        }
    }

    /// Bytes the buffers of the largest object hold at most: the read-ahead, every part
    /// uploading, the one filling and the one the proof decodes, and the compressor's.
    fn largest(tuning: &Tuning) -> u64 {
        let parts = (tuning.parts_in_flight as u64 + 2) * tuning.min_part_size as u64;
        tuning.read_ahead_bytes as u64 + parts + OVERHEAD + COMPRESSOR_BLOCKS
    }

    /// Bytes an object of `size` bytes can make the pipeline hold: its read-ahead and output
    /// parts are never larger than the object itself (plus the format's worst-case growth);
    /// `None`, a size not known yet, counts as the largest.
    pub(crate) fn cost(&self, size: Option<u64>) -> u64 {
        let Some(size) = size else {
            return Self::largest(&self.tuning);
        };
        let tuning = &self.tuning;
        let part_size = transfer::part_size(size, tuning.min_part_size) as u64;
        let output = transfer::worst_output(size);
        let part = output.min(part_size);
        let parts_held = output
            .div_ceil(part_size)
            .min(tuning.parts_in_flight as u64 + 2);
        let read_ahead = size.min(tuning.read_ahead_bytes as u64);
        let blocks = size.saturating_mul(2).min(COMPRESSOR_BLOCKS);
        (read_ahead + parts_held * part + OVERHEAD + blocks).min(Self::largest(tuning))
    }

    /// Waits until an object of `size` bytes fits.
    pub(crate) async fn reserve(&self, size: Option<u64>) -> Reservation {
        let wanted = kib(self.cost(size)).min(self.total_kib);
        // The semaphore is never closed, so acquiring cannot fail; should it ever, the object
        // runs without a place in the budget rather than not at all.
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(wanted)
            .await
            .ok();
        Reservation { permit }
    }

    /// Makes `reservation` fit an object of `size` bytes, now that the size is known: the
    /// excess goes back at once, so that an object reserved as "size unknown" does not keep
    /// small ones waiting. One that is too small is given back whole before the larger one is
    /// waited for, so two objects never wait for each other's share.
    pub(crate) async fn refit(&self, mut reservation: Reservation, size: u64) -> Reservation {
        let wanted = kib(self.cost(Some(size))).min(self.total_kib) as usize;
        let Some(permit) = &mut reservation.permit else {
            return reservation;
        };
        let held = permit.num_permits();
        if held >= wanted {
            drop(permit.split(held - wanted));
            return reservation;
        }
        drop(reservation);
        self.reserve(Some(size)).await
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX)
}
