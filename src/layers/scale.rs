//! A constant factor, `y = s·x`, for any shape (e.g. the `1/9` on fast CIFAR recipes' logits,
//! which keeps the softmax from saturating early).

use super::{Layer, Mode};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

pub struct Scale {
    factor: f32,
    shape: Vec<usize>,
    y: Tensor,
    dx: Tensor,
}

impl Scale {
    /// Shapes: unchanged.
    pub fn new(input: &[usize], factor: f32) -> Result<Self, String> {
        if !factor.is_finite() || factor == 0.0 {
            return Err(format!(
                "the factor must be finite and non-zero, got {factor}"
            ));
        }
        Ok(Scale {
            factor,
            shape: input.to_vec(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for Scale {
    fn out_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        reuse(&mut self.y, x.shape());
        let s = self.factor;
        data_mut(&mut self.y)
            .par_chunks_mut(CHUNK)
            .zip(data(x).par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &v)| *y = s * v));
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        reuse(&mut self.dx, dy.shape());
        let s = self.factor;
        data_mut(&mut self.dx)
            .par_chunks_mut(CHUNK)
            .zip(data(dy).par_chunks(CHUNK))
            .for_each(|(dx, dy)| dx.iter_mut().zip(dy).for_each(|(dx, &g)| *dx = s * g));
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::check_layer;

    #[test]
    fn scale_grad_and_hand_worked() {
        check_layer(
            &mut Scale::new(&[5], 1.0 / 9.0).unwrap(),
            &[3, 5],
            Mode::Eval,
        );
        let x = Tensor::from_shape_vec(vec![1, 2], vec![9.0, -4.5]).unwrap();
        let mut s = Scale::new(&[2], 1.0 / 9.0).unwrap();
        assert_eq!(data(s.forward(&x, Mode::Eval)), &[1.0, -0.5]);
        assert!(Scale::new(&[2], 0.0).is_err() && Scale::new(&[2], f32::NAN).is_err());
    }
}
