//! Gives the system back the memory glibc keeps after the program freed it.
//!
//! glibc's allocator returns freed memory only from the top of each arena; freed pages below a
//! live allocation stay resident. A node's allocations come and go with the stream (parts,
//! segments, QUIC buffers, viewers' requests), so without this its RSS creeps up to the
//! high-water mark of its busiest minutes and stays there (docs/RELIABILITY.md, "Soak").
//!
//! This is the crate's one `unsafe` block; docs/ARCHITECTURE.md ("Decisions") argues for it.

use std::time::Duration;

/// How often freed memory is handed back.
const EVERY: Duration = Duration::from_secs(30);

/// Hand freed memory back every [`EVERY`] for as long as the process runs.
pub fn spawn_release() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            // It walks and locks every arena: keep it off the reactor's threads.
            let _ = tokio::task::spawn_blocking(release_freed).await;
        }
    });
}

/// Ask the allocator to return the free pages of every arena; true if it gave any back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and touches only glibc's own free lists, which it
    // locks while it runs; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Restart this process, once, with glibc's heap on transparent huge pages
/// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), unless the environment already sets glibc's
/// tunables (the user's choice, or the restart done). Returns only if it did not restart.
///
/// For the simulator: its nodes are some 200 MB of small allocations reached in random order,
/// and with 4 kB pages most of those reaches miss the TLB too. glibc reads the setting only at
/// start-up, and only asks for huge pages where the system allows them (`madvise` or `always`
/// in /sys/kernel/mm/transparent_hugepage/enabled). tree-10k runs 5-10 % faster with them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_with_huge_pages() {
    use std::os::unix::process::CommandExt;
    const TUNABLES: &str = "GLIBC_TUNABLES";
    if std::env::var_os(TUNABLES).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let args = std::env::args_os().skip(1);
    let error = std::process::Command::new(exe).args(args).env(TUNABLES, "glibc.malloc.hugetlb=1").exec();
    eprintln!("note: running without huge pages (could not restart with them: {error})");
}

/// Other systems: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_with_huge_pages() {}

/// Other allocators (musl, macOS, Windows) hand large blocks back themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_goes_back_to_the_system() {
        // Many small blocks (below the mmap threshold, so they live in the arena), then free all
        // but the last: the pages under it can only go back through the trim.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 * 1024]).collect();
        let keep = blocks.last().cloned();
        drop(blocks);
        assert!(release_freed(), "64 MiB were freed below a live block; the trim returned nothing");
        drop(keep);
    }
}
