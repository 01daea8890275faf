//! Flatten: `N×C×H×W` → `N×(C·H·W)`, in row-major order (as PyTorch's `flatten(1)`).

use super::{Layer, Mode};
use crate::tensor::{Tensor, data, data_mut, par_copy, reuse};

pub struct Flatten {
    out: [usize; 1],
    y: Tensor,
    dx: Tensor,
}

impl Flatten {
    /// Shapes: any item shape → `F` = the product of its sizes.
    pub fn new(input: &[usize]) -> Self {
        Flatten {
            out: [input.iter().product()],
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        }
    }
}

impl Layer for Flatten {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        reuse(&mut self.y, &[x.shape()[0], self.out[0]]);
        par_copy(data(x), data_mut(&mut self.y));
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        reuse(&mut self.dx, x.shape());
        par_copy(data(dy), data_mut(&mut self.dx));
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::check_layer;

    #[test]
    fn flatten_grad_and_order() {
        check_layer(&mut Flatten::new(&[2, 3, 5]), &[3, 2, 3, 5], Mode::Eval);
        let x = Tensor::from_shape_vec(vec![1, 2, 1, 2], vec![1., 2., 3., 4.]).unwrap();
        let mut f = Flatten::new(&[2, 1, 2]);
        assert_eq!(f.forward(&x, Mode::Eval).shape(), &[1, 4]);
        assert_eq!(data(&f.y), &[1., 2., 3., 4.]);
    }
}
