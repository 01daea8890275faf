//! Plain, obviously-correct kernels: the oracle the fast paths are tested against.

/// `c += a·b` by the triple loop; same operand conventions as [`super::gemm::sgemm`].
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                s += av * bv;
            }
            c[i * n + j] += s;
        }
    }
}

/// Geometry of a 2-D convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// Output size along one axis, or `None` when the window does not fit.
    pub fn out_len(&self, len: usize, k: usize) -> Option<usize> {
        let padded = self.pad.checked_mul(2)?.checked_add(len)?;
        if padded < k || self.stride == 0 {
            None
        } else {
            Some((padded - k) / self.stride + 1)
        }
    }
}

/// Direct convolution of one image, the definition itself.
///
/// Shapes: x `C×H×W`, w `O×C×kh×kw`, bias `O` → y `O×OH×OW`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    weight: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    win: Window,
    y: &mut [f32],
) {
    let oh = win.out_len(h, win.kh).unwrap();
    let ow = win.out_len(w, win.kw).unwrap();
    for oc in 0..o {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = bias.map_or(0.0, |b| b[oc]);
                for ic in 0..c {
                    for ki in 0..win.kh {
                        for kj in 0..win.kw {
                            let yy = (i * win.stride + ki) as isize - win.pad as isize;
                            let xx = (j * win.stride + kj) as isize - win.pad as isize;
                            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let wv = weight[((oc * c + ic) * win.kh + ki) * win.kw + kj];
                            s += wv * x[(ic * h + yy as usize) * w + xx as usize];
                        }
                    }
                }
                y[(oc * oh + i) * ow + j] = s;
            }
        }
    }
}
