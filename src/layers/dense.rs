//! Fully-connected layer: `y = x·Wᵀ + b`, weight `O×F` (PyTorch's layout), bias `O`.

use super::{Init, Layer, Mode, Param, WeightInit};
use crate::kernels::gemm::par_sgemm;
use crate::kernels::transpose::{par_transpose, transpose};
use crate::tensor::{Tensor, data, data_mut, reuse};

pub struct Dense {
    inputs: usize,
    out: [usize; 1],
    weight: Param,
    bias: Option<Param>,
    needs_dx: bool,
    /// Whether the last forward was in training mode (backward needs one).
    trained: bool,
    /// Forward on 8 images or more: the weight transposed (`F×O`), or the input transposed
    /// (`F×N`) and the output before its transposition (`O×N`); see `forward`.
    scratch: Vec<f32>,
    y: Tensor,
    dx: Tensor,
}

impl Dense {
    /// Shapes: `F` → `O`.
    pub fn new(input: &[usize], outputs: usize, bias: bool) -> Result<Self, String> {
        let &[f] = input else {
            return Err(format!(
                "needs a flat input, got {}; put `flatten` (or `global_avgpool`) before it",
                crate::tensor::fmt_shape(input)
            ));
        };
        if outputs == 0 {
            return Err("needs at least 1 output".into());
        }
        Ok(Dense {
            inputs: f,
            out: [outputs],
            weight: Param::trainable("weight", &[outputs, f], Init::HeNormal { fan_in: f }),
            bias: bias.then(|| Param::trainable("bias", &[outputs], Init::Zeros)),
            needs_dx: true,
            trained: false,
            scratch: Vec::new(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Dense {
    /// The weight drawn by `init` instead of He's rule, and both parameters' learning rate
    /// multiplied by `lr_scale` (before the parameters are drawn).
    pub fn with_init(mut self, init: WeightInit, lr_scale: f32) -> Self {
        self.weight.init = init.rule(self.inputs);
        self.weight.lr_scale = lr_scale;
        if let Some(b) = &mut self.bias {
            b.lr_scale = lr_scale;
        }
        self
    }
}

impl Layer for Dense {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        let n = x.shape()[0];
        let (f, o) = (self.inputs, self.out[0]);
        assert_eq!(x.len(), n * f, "dense input size");
        self.trained = matches!(mode, Mode::Train { .. });
        reuse(&mut self.y, &[n, o]);
        let y = data_mut(&mut self.y);
        // The GEMM crate is several times slower when its right operand has the reduction
        // dimension contiguous, as `Wᵀ` has (see `kernels::transpose`). From 8 images it pays
        // to transpose the smaller of the two operands first: the weight (`y = x · (Wᵀ
        // copied)`) or, with fewer images than outputs, the input (`yᵀ = W · (xᵀ copied)`, then
        // `yᵀ` transposed back). Below 8 images the crate runs a matrix-vector kernel that reads
        // the weight as stored at full speed, and a copy would only add to it.
        let weight = &*self.weight.value;
        if n >= 8 && n < o {
            self.scratch.resize(f * n + o * n, 0.0);
            let (xt, yt) = self.scratch.split_at_mut(f * n);
            par_transpose(data(x), n, f, xt);
            par_sgemm(o, n, f, weight, false, xt, false, yt, false);
            transpose(yt, o, n, y);
        } else if n >= 8 {
            self.scratch.resize(f * o, 0.0);
            par_transpose(weight, o, f, &mut self.scratch);
            par_sgemm(n, o, f, data(x), false, &self.scratch, false, y, false);
        } else {
            par_sgemm(n, o, f, data(x), false, weight, true, y, false);
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_mut(o) {
                row.iter_mut()
                    .zip(b.value.iter())
                    .for_each(|(v, b)| *v += b);
            }
        }
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        assert!(self.trained, "dense backward needs a training-mode forward");
        let n = dy.shape()[0];
        let (f, o) = (self.inputs, self.out[0]);
        assert_eq!(x.len(), n * f, "dense backward: input size");
        let dy = data(dy);
        // dW (O×F) += dyᵀ (O×N) · x (N×F)
        par_sgemm(
            o,
            f,
            n,
            dy,
            true,
            data(x),
            false,
            self.weight.grad_mut(),
            true,
        );
        if let Some(b) = &mut self.bias {
            let db = b.grad_mut();
            for row in dy.chunks(o) {
                db.iter_mut().zip(row).for_each(|(g, v)| *g += v);
            }
        }
        reuse(&mut self.dx, x.shape());
        if self.needs_dx {
            // dx (N×F) = dy (N×O) · W (O×F)
            par_sgemm(
                n,
                f,
                o,
                dy,
                false,
                &self.weight.value,
                false,
                data_mut(&mut self.dx),
                false,
            );
        }
        &self.dx
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }

    fn macs(&self) -> u64 {
        (self.inputs * self.out[0]) as u64
    }

    fn set_needs_input_grad(&mut self, needed: bool) {
        self.needs_dx = needed;
    }

    /// `x` is only ever read as `N×F` (and `dx` takes `x`'s shape).
    fn reads_input_flat(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, initialised};

    #[test]
    fn dense_grad_batch1_and_batch3() {
        let mut d = initialised(Dense::new(&[7], 5, true).unwrap(), 1);
        d.bias.as_mut().unwrap().value.to_mut().fill(0.3);
        check_layer(&mut d, &[1, 7], Mode::Train { seed: 0 });
        check_layer(
            &mut initialised(Dense::new(&[9], 3, false).unwrap(), 2),
            &[3, 9],
            Mode::Train { seed: 0 },
        );
        // 8 images or more: forward multiplies by the transposed copy of the weight...
        check_layer(
            &mut initialised(Dense::new(&[37], 5, true).unwrap(), 3),
            &[9, 37],
            Mode::Train { seed: 0 },
        );
        // ...or, with fewer images than outputs, by that of the input.
        check_layer(
            &mut initialised(Dense::new(&[37], 11, true).unwrap(), 3),
            &[9, 37],
            Mode::Train { seed: 0 },
        );
    }

    /// All three forward paths (one image; 9 images and 5 outputs; 9 images and 11 outputs) give
    /// each image the same output as a batch of one does.
    #[test]
    fn dense_batches_of_any_size_agree_with_one_image_at_a_time() {
        for o in [5, 11] {
            let mut d = initialised(Dense::new(&[37], o, true).unwrap(), 4);
            let x = crate::layers::gradcheck::seeded(&[9, 37], 5);
            let batch = d.forward(&x, Mode::Eval).clone();
            for (i, row) in data(&x).chunks(37).enumerate() {
                let one = Tensor::from_shape_vec(vec![1, 37], row.to_vec()).unwrap();
                for (a, b) in data(d.forward(&one, Mode::Eval))
                    .iter()
                    .zip(&data(&batch)[i * o..][..o])
                {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{o} outputs, image {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Hand-worked: W = [[1, 2], [0, -1], [3, 0]], b = [0.5, 0, -1], x = [2, 3]
    /// gives y = [2+6+0.5, -3, 6-1] = [8.5, -3, 5].
    #[test]
    fn dense_hand_worked() {
        let mut d = initialised(Dense::new(&[2], 3, true).unwrap(), 1);
        d.weight.value = vec![1., 2., 0., -1., 3., 0.].into();
        d.bias.as_mut().unwrap().value = vec![0.5, 0., -1.].into();
        let x = Tensor::from_shape_vec(vec![1, 2], vec![2., 3.]).unwrap();
        assert_eq!(data(d.forward(&x, Mode::Eval)), &[8.5, -3., 5.]);
    }

    #[test]
    fn dense_after_a_conv_shape_asks_for_flatten() {
        let err = Dense::new(&[3, 4, 4], 10, true).err().unwrap();
        assert!(err.contains("flatten"), "{err}");
    }
}
