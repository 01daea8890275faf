//! Hot kernels: matrix multiply (and the small products of Winograd's convolution),
//! im2col/col2im, Winograd convolution, batch norm's passes, transpose and small in-register
//! reshuffles, vectorised sums, per-thread scratch, software prefetch, and the plain reference
//! versions they are tested against; `isa` chooses the instruction set of the hand-written
//! ones, written once over `simd`'s vectors.
//!
//! May use: nothing else of this crate (`rng` in tests only). Kernels work on slices with the
//! layouts their docs state; they know nothing of layers, networks or files.

pub mod batch_norm;
pub mod eigen;
pub mod gemm;
pub mod im2col;
pub mod isa;
pub mod math;
pub mod prefetch;
pub mod reduce;
pub mod reference;
pub mod scratch;
pub mod shuffle;
pub(crate) mod simd;
pub mod small_gemm;
pub mod transpose;
pub mod winograd;

/// A raw pointer that may cross threads. Each parallel task writes a disjoint region of the
/// buffer behind it; the code that creates one states why the regions are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T = f32>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer. (A method, so closures capture the whole `SendPtr`, not its raw field.)
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
