//! Global average pooling: the mean of each channel's plane, giving a flat feature vector.

use super::{Layer, Mode};
use crate::kernels::reduce;
use crate::tensor::{Tensor, data, data_mut, reuse};

pub struct GlobalAvgPool {
    input: [usize; 3],
    out: [usize; 1],
    y: Tensor,
    dx: Tensor,
}

impl GlobalAvgPool {
    /// Shapes: `C×H×W` → `C` (a dense activation).
    pub fn new(input: &[usize]) -> Result<Self, String> {
        let &[c, h, w] = input else {
            return Err(format!(
                "needs a C×H×W input, got {}",
                crate::tensor::fmt_shape(input)
            ));
        };
        Ok(GlobalAvgPool {
            input: [c, h, w],
            out: [c],
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for GlobalAvgPool {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        let n = x.shape()[0];
        let [c, h, w] = self.input;
        let scale = 1.0 / (h * w) as f32;
        reuse(&mut self.y, &[n, c]);
        for (y, plane) in data_mut(&mut self.y).iter_mut().zip(data(x).chunks(h * w)) {
            *y = reduce::sum(plane) * scale;
        }
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        let n = dy.shape()[0];
        let [c, h, w] = self.input;
        let scale = 1.0 / (h * w) as f32;
        reuse(&mut self.dx, &[n, c, h, w]);
        for (plane, &g) in data_mut(&mut self.dx).chunks_mut(h * w).zip(data(dy)) {
            plane.fill(g * scale);
        }
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::check_layer;

    #[test]
    fn global_avgpool_grad_batch1_and_batch3() {
        check_layer(
            &mut GlobalAvgPool::new(&[3, 5, 7]).unwrap(),
            &[1, 3, 5, 7],
            Mode::Eval,
        );
        check_layer(
            &mut GlobalAvgPool::new(&[2, 1, 3]).unwrap(),
            &[3, 2, 1, 3],
            Mode::Eval,
        );
    }

    #[test]
    fn global_avgpool_hand_worked() {
        let x = Tensor::from_shape_vec(vec![1, 2, 2, 2], vec![1., 2., 3., 4., -1., -1., 1., 5.])
            .unwrap();
        let mut p = GlobalAvgPool::new(&[2, 2, 2]).unwrap();
        assert_eq!(data(p.forward(&x, Mode::Eval)), &[2.5, 1.0]);
    }
}
