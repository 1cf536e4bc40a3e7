//! Giving the C heap's free memory back to the kernel.
//!
//! Memory freed by `free` stays in the process: glibc keeps it in its heaps
//! for the next allocation and returns only a free stretch at the very top
//! of the main heap, and only above a threshold. After a storm of records
//! has been delivered and its buffers freed, most of that memory is free
//! but resident. [`release_free_heap`] asks glibc to give every whole free
//! page back (`malloc_trim(0)`: each arena's top, and `MADV_DONTNEED` on
//! free pages inside the heaps).

/// Returns the C heap's free pages to the kernel; true when some were
/// released. Does nothing (false) with a C library other than glibc.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own allocator state, under
        // its locks; it takes no pointer and may be called from any thread
        // at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident set of this process, in KiB.
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    #[test]
    fn freed_small_blocks_are_given_back() {
        // 64 MiB in 4 KiB blocks (below glibc's mmap threshold, so they
        // come from the heap), written so they are resident; then all but
        // the last freed, which keeps the heap's top from shrinking on its
        // own.
        let mut blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|i| vec![i as u8; 4096]).collect();
        let keep = blocks.pop();
        let full = rss_kib();
        drop(blocks);
        let before = rss_kib();
        release_free_heap();
        let after = rss_kib();
        drop(keep);
        assert!(full > 60 * 1024, "the blocks were not resident: {full} KiB");
        assert!(
            after + 32 * 1024 < before,
            "RSS {before} KiB after free, {after} KiB after release_free_heap"
        );
    }
}
