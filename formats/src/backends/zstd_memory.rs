//! What a zstd encoder and its decoder hold, from the parameters zstd picks for a level and an
//! input size, so the worker can reserve it before it starts an object.
//!
//! zstd's own estimates (`ZSTD_estimateCCtxSize*`) are experimental C functions without a safe
//! binding, and they refuse multithreaded contexts; these are the same sums, made from
//! zstd 1.5's parameter table and its multithreading buffers, and rounded up.

use std::num::NonZeroUsize;

/// How zstd finds matches, as far as memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// `fast`: a hash table only.
    Fast,
    /// `dfast`: two hash tables (the second in the chain table's place).
    DoubleFast,
    /// `greedy`, `lazy`: hash chains, or rows with a tag byte per hash entry.
    Lazy,
    /// `lazy2` and `btlazy2`: as `Lazy` (or a binary tree), jobs overlapping by a quarter
    /// window.
    Lazy2,
    /// `btopt`, `btultra`: binary trees and the optimal parser's tables; half-window overlap.
    Optimal,
    /// `btultra2`: as `Optimal`, jobs overlapping by a whole window.
    Ultra2,
}

/// zstd's parameters for inputs above 256 KiB (`lib/compress/clevels.h`), levels 1 to 22:
/// window log, chain log, hash log, search.
const PARAMETERS: [(u32, u32, u32, Search); 22] = [
    (19, 13, 14, Search::Fast),
    (20, 15, 16, Search::Fast),
    (21, 16, 17, Search::DoubleFast),
    (21, 18, 18, Search::DoubleFast),
    (21, 18, 19, Search::Lazy),
    (21, 18, 19, Search::Lazy),
    (21, 19, 20, Search::Lazy),
    (21, 19, 20, Search::Lazy2),
    (22, 20, 21, Search::Lazy2),
    (22, 21, 22, Search::Lazy2),
    (22, 21, 22, Search::Lazy2),
    (22, 22, 23, Search::Lazy2),
    (22, 22, 22, Search::Lazy2),
    (22, 22, 23, Search::Lazy2),
    (22, 23, 23, Search::Lazy2),
    (22, 22, 22, Search::Optimal),
    (23, 23, 22, Search::Optimal),
    (23, 23, 22, Search::Optimal),
    (23, 24, 22, Search::Ultra2),
    (25, 25, 23, Search::Ultra2),
    (26, 26, 24, Search::Ultra2),
    (27, 27, 25, Search::Ultra2),
];

/// zstd's largest block: the unit its buffers and its decoder work in; never above the window.
const BLOCK: u64 = 128 * 1024;
/// A context's tables beyond match finding and the sequences of a block: entropy tables, the
/// optimal parser's prices and the 3-byte hash table of levels that look for 3-byte matches.
const CONTEXT_FIXED: u64 = 768 * 1024;
/// Bytes of sequence store per byte of block (a sequence per 3 bytes at most, 8 bytes each,
/// and the literals).
const SEQUENCES_PER_BLOCK_BYTE: u64 = 4;

/// Bytes a zstd encoder at `level` on `threads` workers with jobs of `job_size`, and the
/// decoder of its frame, hold at most for an input of `size` bytes (`None`: any size).
pub(crate) fn memory(level: i32, threads: NonZeroUsize, job_size: u64, size: Option<u64>) -> u64 {
    let index = usize::try_from(level.clamp(1, 22) - 1).unwrap_or(0);
    let (window_log, chain_log, hash_log, search) = PARAMETERS[index];
    // zstd shrinks the window to the input, and the tables to the window.
    let window_log = size.map_or(window_log, |size| window_log.min(log2_ceil(size).max(10)));
    let hash_log = hash_log.min(window_log + 1);
    let chain_log = chain_log.min(window_log + 1);
    let window = 1u64 << window_log;
    let block = BLOCK.min(window);
    let chain = if search == Search::Fast {
        0
    } else {
        4 << chain_log
    };
    let tags = if matches!(search, Search::Lazy | Search::Lazy2) {
        1 << hash_log
    } else {
        0
    };
    let context = (4 << hash_log) + chain + tags + CONTEXT_FIXED + SEQUENCES_PER_BLOCK_BYTE * block;
    let decoder = window + 2 * block + 256 * 1024;
    let threads = threads.get() as u64;
    if threads == 1 {
        // One context, with its input buffer of a window and a block and its output block.
        return context + window + 2 * block + decoder;
    }
    // A context per worker; the jobs' input in a round buffer of a section per worker and three
    // spare; an output buffer per job in flight. A section is a job, at least the overlap.
    let overlap = match search {
        Search::Fast | Search::DoubleFast | Search::Lazy => window >> 3,
        Search::Lazy2 => window >> 2,
        Search::Optimal => window >> 1,
        Search::Ultra2 => window,
    };
    let section = job_size.max(overlap);
    let jobs = (threads + 2).next_power_of_two();
    threads * context + (threads + 3) * section + jobs * (section + section / 128) + decoder
}

/// The smallest `log` with `2^log >= size`.
fn log2_ceil(size: u64) -> u32 {
    u64::BITS - size.saturating_sub(1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const TWO: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1);
    const JOB: u64 = 2 * MIB;

    #[test]
    fn level_19_holds_far_more_than_level_3_unless_the_input_is_small() {
        let level_3 = memory(3, TWO, JOB, None);
        let level_19 = memory(19, TWO, JOB, None);
        // Level 19 on two workers: two contexts of 80 MiB of tables, 8 MiB sections.
        assert!(level_19 > 200 * MIB, "{level_19}");
        assert!(level_3 < 40 * MIB, "{level_3}");
        // A 10 KiB input gets a 16 KiB window and tables to match.
        let small = memory(19, NonZeroUsize::MIN, JOB, Some(10 * 1024));
        assert!(small < 4 * MIB, "{small}");
        assert!(memory(19, TWO, JOB, Some(1 << 40)) == level_19);
    }

    #[test]
    fn log2_ceil_rounds_up() {
        assert_eq!(log2_ceil(0), 0);
        assert_eq!(log2_ceil(1), 0);
        assert_eq!(log2_ceil(1024), 10);
        assert_eq!(log2_ceil(1025), 11);
    }
}
