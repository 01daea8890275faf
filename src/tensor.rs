//! The tensor type and the buffer helpers that keep the hot loop free of allocations.

/// An `f32` tensor in standard layout; see the shape legend in the crate docs.
pub type Tensor = ndarray::ArrayD<f32>;

/// Makes `buf` hold `shape`, reallocating only when the shape changes (e.g. the last, smaller
/// batch of an epoch). The contents are unspecified afterwards: callers overwrite every element.
pub fn reuse(buf: &mut Tensor, shape: &[usize]) {
    if buf.shape() != shape {
        *buf = Tensor::zeros(shape);
    }
}

/// `dst = src` (equal lengths), in parallel chunks: activations are megabytes, which one thread
/// would copy while the others wait.
pub fn par_copy(src: &[f32], dst: &mut [f32]) {
    use rayon::prelude::*;
    assert_eq!(src.len(), dst.len(), "par_copy: lengths differ");
    const CHUNK: usize = 1 << 15;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// The contiguous data of a tensor produced by this crate (always standard layout).
pub fn data(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tensors in cnn are contiguous")
}

/// Mutable access to the contiguous data of a tensor.
pub fn data_mut(t: &mut Tensor) -> &mut [f32] {
    t.as_slice_mut().expect("tensors in cnn are contiguous")
}

/// Number of elements of one item (everything but the batch axis).
pub fn item_len(shape: &[usize]) -> usize {
    shape[1..].iter().product()
}

/// `2×3×4` style.
pub fn fmt_shape(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}
