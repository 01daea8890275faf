//! Per-thread scratch: the memory a parallel task works in and gives back when it returns. Each
//! thread keeps one buffer, shared by every layer and grown to the largest request, so a batch
//! allocates nothing once the largest task has run, and a thread that runs no task holds none.

use std::cell::Cell;

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch. Their contents are unspecified (whatever
/// the last task left; NaN in debug builds, so that a read before a write shows in the tests).
///
/// The buffer is taken out of the thread's slot for the call, not borrowed: if `f` waits on
/// rayon and the thread runs another task that asks for scratch meanwhile, that task gets a
/// buffer of its own (and the larger of the two stays) instead of aliasing this one.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|slot| {
        let mut buf = slot.take();
        if buf.len() < len {
            // Freed before the larger one is allocated: the peak is the new size, not both.
            drop(std::mem::take(&mut buf));
            // Zeroed from the allocator: fresh pages stay unmapped until the task writes them.
            buf = vec![0.0; len];
        }
        let s = &mut buf[..len];
        if cfg!(debug_assertions) {
            s.fill(f32::NAN);
        }
        let r = f(s);
        let other = slot.take();
        slot.set(if other.len() > buf.len() { other } else { buf });
        r
    })
}

/// Makes `buf` at least `len` floats long, for a buffer a layer keeps between calls. New space
/// comes zeroed from the allocator, which leaves fresh pages unmapped until written (where
/// `Vec::resize` would write every float).
pub fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_reused_and_a_nested_call_gets_its_own() {
        let first = with_scratch(100, |s| {
            s.fill(1.0);
            s.as_ptr() as usize
        });
        // The same memory again for a request it covers.
        assert_eq!(with_scratch(50, |s| s.as_ptr() as usize), first);
        with_scratch(10, |outer| {
            outer.fill(2.0);
            with_scratch(10, |inner| {
                assert_ne!(inner.as_ptr(), outer.as_ptr());
                inner.fill(3.0);
            });
            assert!(outer.iter().all(|&v| v == 2.0));
        });
        // Growing gives at least the length asked.
        assert_eq!(with_scratch(1000, |s| s.len()), 1000);
        // Each thread has its own.
        let here = with_scratch(8, |s| s.as_ptr() as usize);
        let there = std::thread::spawn(|| with_scratch(8, |s| s.as_ptr() as usize))
            .join()
            .unwrap();
        assert_ne!(here, there);
    }
}
