//! 2-D average pooling (no padding): each output is the mean of its `k×k` window.

use super::maxpool::pool_geometry;
use super::{Layer, Mode};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

pub struct AvgPool2d {
    k: usize,
    stride: usize,
    input: [usize; 3],
    out: [usize; 3],
    y: Tensor,
    dx: Tensor,
}

impl AvgPool2d {
    /// Shapes: `C×H×W` → `C×OH×OW`, `OH = (H − k) / stride + 1`.
    pub fn new(input: &[usize], k: usize, stride: usize) -> Result<Self, String> {
        let (c, h, w, oh, ow) = pool_geometry(input, k, stride)?;
        Ok(AvgPool2d {
            k,
            stride,
            input: [c, h, w],
            out: [c, oh, ow],
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for AvgPool2d {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        let n = x.shape()[0];
        let [c, h, w] = self.input;
        let [_, oh, ow] = self.out;
        let (k, s) = (self.k, self.stride);
        let scale = 1.0 / (k * k) as f32;
        reuse(&mut self.y, &[n, c, oh, ow]);
        data_mut(&mut self.y)
            .par_chunks_mut(oh * ow)
            .zip(data(x).par_chunks(h * w))
            .for_each(|(y, x)| {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut sum = 0.0;
                        for di in 0..k {
                            let row = (i * s + di) * w + j * s;
                            sum += x[row..row + k].iter().sum::<f32>();
                        }
                        y[i * ow + j] = sum * scale;
                    }
                }
            });
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        let n = dy.shape()[0];
        let [c, h, w] = self.input;
        let [_, oh, ow] = self.out;
        let (k, s) = (self.k, self.stride);
        let scale = 1.0 / (k * k) as f32;
        reuse(&mut self.dx, &[n, c, h, w]);
        data_mut(&mut self.dx)
            .par_chunks_mut(h * w)
            .zip(data(dy).par_chunks(oh * ow))
            .for_each(|(dx, dy)| {
                dx.fill(0.0);
                for i in 0..oh {
                    for j in 0..ow {
                        let g = dy[i * ow + j] * scale;
                        for di in 0..k {
                            let row = (i * s + di) * w + j * s;
                            dx[row..row + k].iter_mut().for_each(|v| *v += g);
                        }
                    }
                }
            });
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::check_layer;

    #[test]
    fn avgpool_grad_batch1_odd_nonsquare() {
        check_layer(
            &mut AvgPool2d::new(&[2, 5, 7], 2, 2).unwrap(),
            &[1, 2, 5, 7],
            Mode::Eval,
        );
    }

    #[test]
    fn avgpool_grad_batch3_overlapping() {
        check_layer(
            &mut AvgPool2d::new(&[3, 7, 6], 3, 2).unwrap(),
            &[3, 3, 7, 6],
            Mode::Eval,
        );
    }

    /// Hand-worked: the 4×4 input 0..15 pooled 2×2 gives the window means 2.5, 4.5, 10.5, 12.5;
    /// backward spreads each gradient as a quarter over its window.
    #[test]
    fn avgpool_hand_worked() {
        let x =
            Tensor::from_shape_vec(vec![1, 1, 4, 4], (0..16).map(|v| v as f32).collect()).unwrap();
        let mut p = AvgPool2d::new(&[1, 4, 4], 2, 2).unwrap();
        assert_eq!(data(p.forward(&x, Mode::Eval)), &[2.5, 4.5, 10.5, 12.5]);
        let dy = Tensor::from_shape_vec(vec![1, 1, 2, 2], vec![4., 8., 12., 16.]).unwrap();
        let dx = p.backward(&x, &dy);
        assert_eq!(data(dx)[..4], [1., 1., 2., 2.]);
        assert_eq!(data(dx)[12..], [3., 3., 4., 4.]);
    }
}
