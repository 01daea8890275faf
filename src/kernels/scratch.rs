//! Per-thread scratch: one slot per worker thread of a buffer a parallel loop shares, so that
//! each task works in memory of its own without allocating.

use super::SendPtr;

/// Scratch slots a parallel loop needs for [`thread_slot`]: one per worker thread. (Fewer, even
/// when there are fewer tasks than threads, would not do: any worker may pick up a task.)
pub fn slot_count() -> usize {
    rayon::current_num_threads()
}

/// Makes scratch `buf` at least `len` floats long. New space comes zeroed from the allocator,
/// which leaves fresh pages unmapped until written: a slot no thread uses costs nothing
/// (`Vec::resize` would write every float; `cnn predict` on one image uses one slot of two).
pub fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

/// `buf[slot]` of `len` floats, for the worker thread running this task.
///
/// # Safety
/// `buf` holds [`slot_count`]` · len` floats, and the task neither starts parallel work nor
/// yields to rayon while it uses the slot, so no two running tasks share one.
pub(crate) unsafe fn thread_slot<'a>(buf: SendPtr, len: usize) -> &'a mut [f32] {
    let slot = rayon::current_thread_index().unwrap_or(0);
    debug_assert!(slot < slot_count());
    unsafe { std::slice::from_raw_parts_mut(buf.get().add(slot * len), len) }
}
