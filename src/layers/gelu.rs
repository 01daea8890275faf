//! The Gaussian error linear unit, `y = x·Φ(x)` (exact, through erf; see `kernels::math`), for
//! any shape. Forward keeps nothing: backward is handed its input again.

use super::{Layer, Mode};
use crate::kernels::math::{gelu, gelu_grad};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to share.
const CHUNK: usize = 1 << 14;

pub struct Gelu {
    shape: Vec<usize>,
    y: Tensor,
    dx: Tensor,
}

impl Gelu {
    /// Shapes: unchanged.
    pub fn new(input: &[usize]) -> Self {
        Gelu {
            shape: input.to_vec(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        }
    }
}

impl Layer for Gelu {
    fn out_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        reuse(&mut self.y, x.shape());
        data_mut(&mut self.y)
            .par_chunks_mut(CHUNK)
            .zip(data(x).par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &v)| *y = gelu(v)));
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        reuse(&mut self.dx, dy.shape());
        data_mut(&mut self.dx)
            .par_chunks_mut(CHUNK)
            .zip(data(dy).par_chunks(CHUNK))
            .zip(data(x).par_chunks(CHUNK))
            .for_each(|((dx, dy), x)| {
                for ((dx, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                    *dx = g * gelu_grad(v);
                }
            });
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, seeded};

    #[test]
    fn gelu_grad_on_awkward_shapes() {
        check_layer(&mut Gelu::new(&[2, 3, 5]), &[3, 2, 3, 5], Mode::Eval);
        check_layer(&mut Gelu::new(&[7]), &[1, 7], Mode::Train { seed: 0 });
    }

    /// Hand-worked (Φ(1) = 0.8413447, Φ(−2) = 0.0227501): gelu(1), gelu(−2), gelu(0).
    #[test]
    fn gelu_hand_worked() {
        let x = Tensor::from_shape_vec(vec![1, 3], vec![1.0, -2.0, 0.0]).unwrap();
        let mut g = Gelu::new(&[3]);
        let y = data(g.forward(&x, Mode::Eval)).to_vec();
        for (got, want) in y.iter().zip([0.841_344_7, -0.045_500_26, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let x = seeded(&[2, 70_000], 3);
        let y = g.forward(&x, Mode::Eval).clone();
        assert!(
            y.iter().zip(x.iter()).all(|(y, x)| *y == gelu(*x)),
            "chunks all written"
        );
    }
}
