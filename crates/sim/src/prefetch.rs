//! Cache prefetch hints. At 10 000 nodes and more, most of an event's time is cache misses on
//! its node and connection, whose addresses the queue knows a few events ahead; asking the CPU
//! to fetch them while earlier events run is most of why `tree-10k` got 1.5× faster (see
//! docs/SIMULATOR.md). See docs/ARCHITECTURE.md for why this is the simulator's only `unsafe`.
#![allow(unsafe_code)]

/// Ask the CPU to fetch the memory of `value` into its caches (x86-64; elsewhere nothing).
/// Changes nothing the program can observe but time.
pub fn prefetch<T: ?Sized>(value: &T) {
    prefetch_bytes(std::ptr::from_ref(value).cast(), size_of_val(value));
}

/// The same for `len` bytes from `start`, which need not be readable (a prefetch of an address
/// that is not mapped is dropped).
pub fn prefetch_bytes(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for offset in (0..len).step_by(64) {
            // SAFETY: a prefetch never faults, reads nothing into the program and writes
            // nothing, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}
