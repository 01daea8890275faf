//! Layers: one file each (a folder for a layer with two algorithms), all behind the [`Layer`]
//! trait.
//!
//! May use: `kernels`, `tensor`, `rng`. A layer knows nothing of the network around it, the
//! architecture format or files.
//!
//! Contract (shared by every layer):
//! - A layer is made from its input item's shape and its settings, declaring its parameters
//!   ([`Param`]: name, shape, initialisation) without allocating them, and answers the graph's
//!   questions about itself: its output shape, its largest per-image buffer, what it keeps for
//!   backward ([`Layer::kept_values`]), its multiply-accumulates.
//! - `forward` writes the output into a buffer the layer owns and keeps whatever else `backward`
//!   needs; buffers are reused from batch to batch and reallocated only when the batch size
//!   changes.
//! - `backward` is handed the forward's input again, unchanged (the graph passes the previous
//!   layer's [`Layer::output`], or the network's input), so that no layer copies its input (a
//!   pass over megabytes per layer and step that two cores share, and a second batch of
//!   memory). With the gradient of the loss with respect to the layer's output, it *adds* the
//!   parameter gradients into each [`Param::grad`] and returns the gradient with respect to the
//!   input. It never changes a weight: only the optimizer does.
//! - Parameters are reached only through [`Layer::visit_params`], the one path that the
//!   optimizer, gradient zeroing and the model file all use.
//! - A layer may take over the activation that follows it ([`Layer::fuse_activation`]), the max
//!   pooling after that ([`Layer::fuse_max_pool`]), or the flatten before it
//!   ([`Layer::reads_input_flat`]); the results are bit-identical to running the layers one
//!   after the other.

pub mod avgpool;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod flatten;
pub mod gelu;
pub mod global_avgpool;
pub mod maxpool;
pub mod relu;
pub mod scale;
pub mod whiten;

pub use avgpool::AvgPool2d;
pub use batchnorm::BatchNorm;
pub use conv::Conv2d;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use gelu::Gelu;
pub use global_avgpool::GlobalAvgPool;
pub use maxpool::MaxPool2d;
pub use relu::Relu;
pub use scale::Scale;
pub use whiten::Whiten;

use crate::rng::Rng;
use crate::tensor::Tensor;
use std::borrow::Cow;

/// An element-wise activation a layer can apply to its own output ([`Layer::fuse_activation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Gelu,
}

/// Whether a forward pass is for training (batch statistics, dropout on) or evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training; `seed` drives this step's random choices (dropout masks), derived per layer
    /// by the graph so that a resumed run replays them exactly.
    Train {
        seed: u64,
    },
    Eval,
}

/// What a parameter is for: trained by the optimizer, or a statistic kept beside the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Trainable,
    /// Saved in the model file but not trained (batch-norm running statistics).
    Buffer,
}

/// How a parameter's first values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// He/Kaiming normal for a layer with `fan_in` inputs per output: N(0, 2/fan_in), suited to
    /// ReLU networks (He et al., "Delving Deep into Rectifiers", 2015).
    HeNormal {
        fan_in: usize,
    },
    /// PyTorch's default for convolutions and linear layers (`kaiming_uniform_` with
    /// `a = √5`): U(−1/√fan_in, 1/√fan_in).
    Uniform {
        fan_in: usize,
    },
    /// A convolution kernel `O×C×kh×kw` that passes input channel `i` through to output `i`
    /// unchanged, for the first `min(O, C)` outputs (a 1 at the kernel's centre; PyTorch's
    /// `dirac_`); the other outputs drawn as [`Init::Uniform`].
    Dirac {
        fan_in: usize,
    },
}

/// Which initialisation a layer's weight takes (the architecture's `init=` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightInit {
    /// Not said: the build options decide (see `net::graph::BuildOptions::init`).
    #[default]
    Auto,
    /// He normal ([`Init::HeNormal`]).
    He,
    /// PyTorch's default ([`Init::Uniform`]).
    Uniform,
    /// Identity on the first channels ([`Init::Dirac`]; convolutions only).
    Dirac,
}

impl WeightInit {
    /// The name the architecture's `init=` and `--init` take.
    pub fn name(self) -> &'static str {
        match self {
            WeightInit::Auto => "auto",
            WeightInit::He => "he",
            WeightInit::Uniform => "uniform",
            WeightInit::Dirac => "dirac",
        }
    }

    /// `self`, or `fallback` when `self` leaves it open.
    pub fn or(self, fallback: WeightInit) -> WeightInit {
        if self == WeightInit::Auto {
            fallback
        } else {
            self
        }
    }
}

impl WeightInit {
    /// The rule for a weight with `fan_in` inputs per output (`Auto` as He's).
    pub fn rule(self, fan_in: usize) -> Init {
        match self {
            WeightInit::Auto | WeightInit::He => Init::HeNormal { fan_in },
            WeightInit::Uniform => Init::Uniform { fan_in },
            WeightInit::Dirac => Init::Dirac { fan_in },
        }
    }
}

/// A named tensor of a layer with its gradient (empty for buffers, and for parameters until a
/// backward pass reaches them).
///
/// A layer declares its parameters (name, shape, initialisation) when it is built, without
/// allocating them: the graph first checks the whole network's size, then has the values drawn
/// ([`Param::initialise`]) or moved in from a model file, so that neither a hostile architecture
/// nor `cnn predict` pays for values it does not need.
#[derive(Clone, Debug)]
pub struct Param {
    /// The name within the layer (`weight`); the graph prefixes the layer name (`conv1.weight`).
    pub name: &'static str,
    pub kind: ParamKind,
    /// The declared shape; `value` holds its product of values (row-major) once initialised or
    /// loaded.
    pub shape: Vec<usize>,
    pub init: Init,
    /// Borrowed when loaded from a model built into the binary, whose weights are used in place
    /// until something writes them (`Cow::to_mut` copies them then): a prediction neither
    /// copies nor page-faults in a second copy of megabytes of weights.
    pub value: Cow<'static, [f32]>,
    pub grad: Tensor,
    /// Multiplies the learning rate for this parameter (a layer's `lr_scale=` option); its weight
    /// decay is divided by the same factor, so that the decay per step stays the base rate's.
    pub lr_scale: f32,
    /// Trained in the first this-many epochs only, then frozen (see the whitening layer).
    pub train_epochs: Option<u64>,
}

impl Param {
    /// A trained parameter. Its gradient is allocated by the first backward pass (see
    /// [`Param::grad_mut`]): a network that only predicts never needs one.
    pub fn trainable(name: &'static str, shape: &[usize], init: Init) -> Self {
        Param::declare(name, ParamKind::Trainable, shape, init)
    }

    /// A statistic saved beside the weights but not trained.
    pub fn buffer(name: &'static str, shape: &[usize], init: Init) -> Self {
        Param::declare(name, ParamKind::Buffer, shape, init)
    }

    fn declare(name: &'static str, kind: ParamKind, shape: &[usize], init: Init) -> Self {
        Param {
            name,
            kind,
            shape: shape.to_vec(),
            init,
            value: Cow::Borrowed(&[]),
            grad: Tensor::zeros(ndarray::IxDyn(&[0])),
            lr_scale: 1.0,
            train_epochs: None,
        }
    }

    /// This parameter with its learning rate multiplied by `scale` (see [`Param::lr_scale`]).
    pub fn with_lr_scale(mut self, scale: f32) -> Self {
        self.lr_scale = scale;
        self
    }

    /// Whether the optimizer updates it in `epoch` (0-based).
    pub fn trains_in(&self, epoch: u64) -> bool {
        self.kind == ParamKind::Trainable && self.train_epochs.is_none_or(|e| epoch < e)
    }

    /// Values in the declared shape (computed without overflow: shapes come from files).
    pub fn len(&self) -> u128 {
        self.shape.iter().map(|&d| d as u128).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates the value and draws it as declared; random initialisations take their numbers
    /// from `rng`, in the order of the elements.
    pub fn initialise(&mut self, rng: &mut Rng) {
        let n = self.shape.iter().product();
        self.value = Cow::Owned(match self.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::HeNormal { fan_in } => {
                let std = (2.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.normal() * std).collect()
            }
            Init::Uniform { fan_in } | Init::Dirac { fan_in } => {
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..n)
                    .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
                    .collect()
            }
        });
        if let (Init::Dirac { .. }, &[o, c, kh, kw]) = (self.init, self.shape.as_slice()) {
            let w = self.value.to_mut();
            for i in 0..o.min(c) {
                let filter = &mut w[i * c * kh * kw..][..c * kh * kw];
                filter.fill(0.0);
                filter[(i * kh + kh / 2) * kw + kw / 2] = 1.0;
            }
        }
    }

    /// A copy of the value as a tensor of the declared shape.
    pub fn value_tensor(&self) -> Tensor {
        Tensor::from_shape_vec(self.shape.as_slice(), self.value.to_vec())
            .expect("a parameter's value has its declared shape")
    }

    /// The value, and the gradient to accumulate into (as [`Param::grad_mut`]).
    pub fn value_and_grad(&mut self) -> (&[f32], &mut [f32]) {
        self.grad_mut();
        (&self.value, crate::tensor::data_mut(&mut self.grad))
    }

    /// The gradient, to accumulate into; zeros of the value's shape on first use.
    pub fn grad_mut(&mut self) -> &mut [f32] {
        if self.grad.shape() != self.shape.as_slice() {
            self.grad = Tensor::zeros(self.shape.as_slice());
        }
        crate::tensor::data_mut(&mut self.grad)
    }
}

/// Draws every parameter of `layer` as declared, from `rng` (tests build single layers so).
pub fn initialise(layer: &mut dyn Layer, rng: &mut Rng) {
    layer.visit_params(&mut |p| p.initialise(rng));
}

/// A layer of the network. See the module docs for the contract.
pub trait Layer: Send {
    /// The shape of one output item (`C×H×W` or `F`), without the batch axis.
    fn out_shape(&self) -> &[usize];

    /// Shapes: x `N×(input item)` → `N×(out_shape)`.
    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor;

    /// The output of the last `forward`.
    fn output(&self) -> &Tensor;

    /// Shapes: x `N×(input item)`, dy `N×(out_shape)` → dx `N×(input item)`. Must follow a
    /// `forward` on `x`, the same batch in the same buffer contents.
    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor;

    /// Calls `f` on each parameter and buffer, in a fixed order.
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}

    /// Multiply-accumulates of one forward pass for one image.
    fn macs(&self) -> u64 {
        0
    }

    /// Values (`f32`) the layer allocates for a batch of `n` images beyond its output and input
    /// gradient (which the graph counts from the shapes): what forward keeps for backward, and
    /// scratch. For the graph's memory estimate; an upper bound.
    fn kept_values(&self, _n: usize) -> u128 {
        0
    }

    /// Values of the largest buffer one image needs besides its output (a convolution's column
    /// matrix), which the graph checks against its limits before anything is allocated.
    fn item_buffer_values(&self) -> u128 {
        0
    }

    /// How many training images the layer wants to see before training starts (0: none); see
    /// [`Layer::fit_to_data`].
    fn data_images(&self) -> usize {
        0
    }

    /// Sets the layer's parameters from its input on the first [`Layer::data_images`] training
    /// images (`x`: `N×(input item)`), once, before the first step (the whitening layer).
    fn fit_to_data(&mut self, _x: &Tensor) {}

    /// Tells the layer whether anyone needs its input gradient (not the first layer), so that
    /// it may skip that work.
    fn set_needs_input_grad(&mut self, _needed: bool) {}

    /// Asks the layer to apply the activation that follows it as it writes its output, and the
    /// activation's derivative to the incoming gradient, saving the activation's own passes over
    /// memory. Returns whether it will (then the graph skips the activation layer).
    fn fuse_activation(&mut self, _act: Activation) -> bool {
        false
    }

    /// Asks the layer to apply the `k×k` max pooling moved by `stride` that follows it (after
    /// its fused activation, if any) to its output as it writes it, and to route the incoming
    /// gradient through the winners itself: the full-size output is then never written nor read
    /// back, nor is its gradient. Returns whether it will (then the graph skips the pooling
    /// layer, and this layer's output shape is the pooled one).
    fn fuse_max_pool(&mut self, _k: usize, _stride: usize) -> bool {
        false
    }

    /// Whether the layer reads its input flat, as `N×F` whatever the item's shape, so that a
    /// `flatten` before it need not copy anything (then the graph skips the flatten).
    fn reads_input_flat(&self) -> bool {
        false
    }
}

/// The per-image chunking used by layers that reduce over the batch in parallel. Fixed, so that
/// the grouping (and hence the floating-point sum order) never depends on the thread count.
pub(crate) const BATCH_CHUNK: usize = 4;

#[cfg(test)]
pub(crate) mod gradcheck;
