//! Software prefetch of a slice about to be read.

/// Asks for `v` to be brought into cache ahead of the loop that will read it. For data read in
/// runs scattered through memory (a channel's plane in each image of an N×C×H×W batch), where
/// the hardware prefetcher, which follows a stream within a 4 KB page, starts cold at each jump.
/// A hint only: it changes no result. Nothing on other architectures.
#[inline(always)]
pub fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // One hint per 64-byte line.
        for line in v.chunks((64 / size_of::<T>().max(1)).max(1)) {
            // SAFETY: a prefetch reads nothing and cannot fault; the pointer is in bounds anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
