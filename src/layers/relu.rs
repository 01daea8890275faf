//! Rectified linear unit, `y = max(0, x)`, for any shape.

use super::{Layer, Mode};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to share.
const CHUNK: usize = 1 << 15;

pub struct Relu {
    shape: Vec<usize>,
    /// The output doubles as the mask for backward: the gradient passes where `y > 0`.
    y: Tensor,
    dx: Tensor,
}

impl Relu {
    /// Shapes: unchanged.
    pub fn new(input: &[usize]) -> Self {
        Relu {
            shape: input.to_vec(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        }
    }
}

impl Layer for Relu {
    fn out_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        reuse(&mut self.y, x.shape());
        data_mut(&mut self.y)
            .par_chunks_mut(CHUNK)
            .zip(data(x).par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (y, &v) in y.iter_mut().zip(x) {
                    *y = v.max(0.0);
                }
            });
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        reuse(&mut self.dx, dy.shape());
        data_mut(&mut self.dx)
            .par_chunks_mut(CHUNK)
            .zip(data(dy).par_chunks(CHUNK))
            .zip(data(&self.y).par_chunks(CHUNK))
            .for_each(|((dx, dy), y)| {
                for ((dx, &g), &y) in dx.iter_mut().zip(dy).zip(y) {
                    *dx = if y > 0.0 { g } else { 0.0 };
                }
            });
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::check_layer_on;

    #[test]
    fn relu_grad_away_from_the_kink() {
        // Inputs at least 0.1 from zero, so no ±ε probe crosses the kink.
        let x = crate::layers::gradcheck::seeded(&[3, 2, 3, 5], 4)
            .mapv(|v| if v >= 0.0 { v + 0.1 } else { v - 0.1 });
        check_layer_on(&mut Relu::new(&[2, 3, 5]), &x, Mode::Eval);
        let x1 = x.into_shape_with_order(vec![1, 90]).unwrap();
        check_layer_on(&mut Relu::new(&[90]), &x1, Mode::Eval);
    }

    #[test]
    fn relu_hand_worked() {
        let x = Tensor::from_shape_vec(vec![1, 4], vec![-2., 0., 0.5, 3.]).unwrap();
        let mut r = Relu::new(&[4]);
        assert_eq!(data(r.forward(&x, Mode::Eval)), &[0., 0., 0.5, 3.]);
        let dy = Tensor::from_shape_vec(vec![1, 4], vec![1., 1., 1., 1.]).unwrap();
        assert_eq!(data(r.backward(&x, &dy)), &[0., 0., 1., 1.]);
    }
}
