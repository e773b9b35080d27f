//! Memory the process frees goes back to the system, on glibc as elsewhere.
//!
//! glibc maps each allocation of 128 KiB or more on its own, so that freeing it returns the
//! memory, but only until the first such allocation is freed: it then raises that threshold to
//! the freed size, up to 32 MiB. From then on the worker's 4 MiB blocks and 8 MiB parts come
//! from the heaps of the threads that allocate them, and what is freed there stays resident.
//! Under eight clients `serve` peaked at 139 MiB of RSS while its heap held 56 MiB at most
//! (heaptrack); with the threshold fixed at 1 MiB, the same run peaks at 75 MiB. The static
//! musl binary of the Lambda image does not use glibc's allocator, and this does nothing there.

/// Allocations from this size up are mapped on their own, and unmapped when freed: the
/// worker's buffers (read-ahead, blocks, parts) all are, its small allocations are not.
pub const MAPPED_FROM_BYTES: usize = 1024 * 1024;

/// Fixes glibc's mmap threshold at [`MAPPED_FROM_BYTES`]; returns whether glibc took it.
/// Elsewhere there is nothing to fix, and it returns `true`.
pub fn return_large_allocations_when_freed() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(MAPPED_FROM_BYTES).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator tunable, which glibc allows at any time and
        // from any thread; it reports a value it refuses by returning 0.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_threshold() {
        assert!(return_large_allocations_when_freed());
    }
}
