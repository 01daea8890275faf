//! The layer graph: builds a network from an [`ArchSpec`], infers every shape, runs forward and
//! backward through the layers in order, and names every parameter.
//!
//! The graph is a chain (each layer feeds the next), which covers every network the spec format
//! describes; keeping it a chain keeps shape inference and backward trivially correct.

use crate::layers::conv::Conv2dConfig;
use crate::layers::{
    Activation, AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, Gelu, GlobalAvgPool, Layer,
    MaxPool2d, Mode, Param, ParamKind, Relu, Scale, WeightInit, Whiten,
};
use crate::net::spec::{ArchSpec, LayerSpec, Width};
use crate::rng::{Rng, derive};
use crate::tensor::fmt_shape;
use crate::tensor::{Tensor, data_mut};
use rayon::prelude::*;
use std::time::{Duration, Instant};

struct Node {
    name: String,
    spec: LayerSpec,
    /// Shapes of one input and one output item, without the batch axis, as the spec defines
    /// them (a layer that took over the pooling after it outputs the pooled shape).
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    layer: Box<dyn Layer>,
    /// Skipped: an activation the layer before applies itself ([`Layer::fuse_activation`]), a
    /// max pooling likewise ([`Layer::fuse_max_pool`]), or a flatten whose next layer reads its
    /// input flat ([`Layer::reads_input_flat`]).
    fused: bool,
    /// Time spent in forward and backward since profiling was switched on.
    times: Option<(Duration, Duration)>,
}

pub struct Network {
    pub spec: ArchSpec,
    pub classes: usize,
    nodes: Vec<Node>,
}

/// Sizes [`Network::build`] refuses, so that no architecture (from a file, a model file
/// or a fuzzer) can make building allocate without bound, or overflow a size computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildLimits {
    /// Trainable values and buffers of the whole network.
    pub max_params: u64,
    /// Values of one image's activation at any layer, and of one image's column buffer.
    pub max_item_values: u64,
    /// Kernel sides, padding and strides.
    pub max_window: u64,
}

impl Default for BuildLimits {
    /// 2^28 parameters (1 GiB of f32, about twice VGG-16), 2^28 values per image and layer
    /// (1 GiB: e.g. 64 channels of 2048×2048), windows up to 4096.
    fn default() -> Self {
        BuildLimits {
            max_params: 1 << 28,
            max_item_values: 1 << 28,
            max_window: 4096,
        }
    }
}

/// How to build a network: options that change how it computes, never what (every choice gives
/// the same results to rounding, fusion bit for bit), and the sizes it refuses. The defaults are
/// the fast choices; the command line may turn them off to compare (`CNN_FUSE=off`,
/// `CNN_CONV=im2col`, read there and nowhere else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Layers take over the ReLU after them, and a dense layer the flatten before it.
    pub fuse: bool,
    /// 3×3 stride-1 convolutions by Winograd's algorithm where it pays, else im2col + GEMM.
    pub winograd: bool,
    /// How weights whose layer does not say (`init=`) are drawn: a training choice, matched to
    /// the optimizer (see `train::recipe`); nothing else in the options changes results.
    pub init: WeightInit,
    pub limits: BuildLimits,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            fuse: true,
            winograd: true,
            init: WeightInit::He,
            limits: BuildLimits::default(),
        }
    }
}

/// One row of `cnn summary`.
pub struct LayerSummary {
    pub name: String,
    pub spec: String,
    pub out_shape: Vec<usize>,
    pub params: usize,
    pub macs: u64,
    /// A ReLU computed inside the layer before it, or a flatten the layer after it does without.
    pub fused: bool,
}

impl Network {
    /// Builds the network for `classes` classes. Weights are drawn from `seed`, or left
    /// unallocated when it is `None`, for weights about to be loaded from a file. Every layer is
    /// checked against `opts.limits` before any value is allocated; an impossible shape is an
    /// error naming the line, the layer and the shapes.
    pub fn build(
        spec: &ArchSpec,
        classes: usize,
        seed: Option<u64>,
        opts: &BuildOptions,
    ) -> Result<Network, String> {
        let limits = &opts.limits;
        if classes < 2 {
            return Err(format!(
                "a classifier needs at least 2 classes, got {classes}"
            ));
        }
        if classes as u64 > limits.max_item_values {
            return Err(format!(
                "{classes} classes are over the limit of {} values per layer",
                limits.max_item_values
            ));
        }
        let input_values = spec.input.iter().map(|&d| d as u128).product::<u128>();
        if input_values > limits.max_item_values as u128 {
            return Err(format!(
                "the input {} has {input_values} values, over the limit of {} per image",
                fmt_shape(&spec.input),
                limits.max_item_values
            ));
        }
        let mut shape = spec.input.to_vec();
        let mut nodes: Vec<Node> = Vec::new();
        let mut counts = std::collections::HashMap::new();
        let mut params: u128 = 0;
        for (line, ls) in &spec.layers {
            let count = counts.entry(ls.kind()).or_insert(0);
            *count += 1;
            let name = format!("{}{}", ls.kind(), count);
            let fail = |e: String| {
                format!(
                    "line {line}: {name} ({ls}) on input {}: {e}",
                    fmt_shape(&shape)
                )
            };
            let (what, side) = ls.largest_window();
            if side as u64 > limits.max_window {
                return Err(fail(format!(
                    "{what} {side} is over the limit of {}",
                    limits.max_window
                )));
            }
            let mut layer = make_layer(ls, &shape, classes, opts).map_err(fail)?;
            check_size(layer.as_mut(), limits, &mut params).map_err(fail)?;
            let in_shape = std::mem::replace(&mut shape, layer.out_shape().to_vec());
            nodes.push(Node {
                name,
                spec: ls.clone(),
                in_shape,
                out_shape: shape.clone(),
                layer,
                fused: false,
                times: None,
            });
        }
        if shape != [classes] {
            return Err(format!(
                "the network ends with shape {}, but the softmax head needs {classes} class scores: \
                 end with `dense classes`",
                fmt_shape(&shape)
            ));
        }
        if let Some(seed) = seed {
            for (i, node) in nodes.iter_mut().enumerate() {
                let mut rng = Rng::new(derive(seed, i as u64));
                crate::layers::initialise(node.layer.as_mut(), &mut rng);
            }
        }
        if opts.fuse {
            fuse_activations(&mut nodes);
            fuse_pools(&mut nodes);
            fuse_flattens(&mut nodes);
        }
        // No one needs the gradient of the image itself (a skipped flatten passes it on).
        if let Some(first) = nodes.iter_mut().find(|n| !n.fused) {
            first.layer.set_needs_input_grad(false);
        }
        Ok(Network {
            spec: spec.clone(),
            classes,
            nodes,
        })
    }

    /// `C×H×W` of one input image.
    pub fn input_shape(&self) -> [usize; 3] {
        self.spec.input
    }

    /// Shapes: x `N×C×H×W` → logits `N×K`.
    pub fn forward<'a>(&'a mut self, x: &'a Tensor, mode: Mode) -> &'a Tensor {
        assert_eq!(x.shape()[1..], self.spec.input, "input shape");
        let mut cur = x;
        // Seeds are derived from each layer's index, fused ones counted, so fusing changes none.
        for (i, node) in self.nodes.iter_mut().enumerate().filter(|(_, n)| !n.fused) {
            let m = match mode {
                Mode::Train { seed } => Mode::Train {
                    seed: derive(seed, i as u64),
                },
                Mode::Eval => Mode::Eval,
            };
            match &mut node.times {
                None => cur = node.layer.forward(cur, m),
                Some((fwd, _)) => {
                    let t = Instant::now();
                    cur = node.layer.forward(cur, m);
                    *fwd += t.elapsed();
                }
            }
        }
        cur
    }

    /// Back-propagates the gradient of the loss with respect to the logits, accumulating every
    /// parameter gradient. `x` is the input of the training forward just run, unchanged; each
    /// layer gets its own input back from the layer before it. Shapes: x `N×C×H×W`, dlogits
    /// `N×K`.
    pub fn backward(&mut self, x: &Tensor, dlogits: &Tensor) {
        assert_eq!(x.shape()[1..], self.spec.input, "input shape");
        let mut g = dlogits;
        let mut rest = &mut self.nodes[..];
        while let Some((node, before)) = rest.split_last_mut() {
            if !node.fused {
                let input = match before.iter().rev().find(|n| !n.fused) {
                    Some(prev) => prev.layer.output(),
                    None => x,
                };
                match &mut node.times {
                    None => g = node.layer.backward(input, g),
                    Some((_, bwd)) => {
                        let t = Instant::now();
                        g = node.layer.backward(input, g);
                        *bwd += t.elapsed();
                    }
                }
            }
            rest = before;
        }
    }

    /// The most training images any layer wants to fit itself to before training (0: none).
    pub fn data_images(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.layer.data_images())
            .max()
            .unwrap_or(0)
    }

    /// Fits the layers that want it to the training images `x` (`N×C×H×W`, normalised; the
    /// trainer passes a random sample; see [`Layer::fit_to_data`]): each sees its own input,
    /// computed by the layers before it in evaluation mode, already fitted.
    pub fn fit_to_data(&mut self, x: &Tensor) {
        let last = self.nodes.iter().rposition(|n| n.layer.data_images() > 0);
        let Some(last) = last else { return };
        let mut input: Option<Tensor> = None;
        for node in self.nodes[..=last].iter_mut().filter(|n| !n.fused) {
            let cur = input.as_ref().unwrap_or(x);
            let wanted = node.layer.data_images();
            if wanted > 0 {
                let n = wanted.min(cur.shape()[0]);
                let slice = cur.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..n));
                node.layer.fit_to_data(&slice.to_owned());
            }
            input = Some(node.layer.forward(cur, Mode::Eval).clone());
        }
    }

    /// Calls `f(full_name, param)` on every parameter and buffer (`conv1.weight`,
    /// `bn1.running_mean`), in a fixed order: the one path used by the optimizer, gradient
    /// zeroing and the model file.
    pub fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        for node in &mut self.nodes {
            let prefix = &node.name;
            node.layer
                .visit_params(&mut |p| f(&format!("{prefix}.{}", p.name), p));
        }
    }

    pub fn zero_grad(&mut self) {
        self.visit_params(&mut |_, p| {
            if p.kind == ParamKind::Trainable {
                data_mut(&mut p.grad)
                    .par_chunks_mut(1 << 14)
                    .for_each(|g| g.fill(0.0));
            }
        });
    }

    /// Number of trainable values.
    pub fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, p| {
            if p.kind == ParamKind::Trainable {
                n += p.len();
            }
        });
        n as usize
    }

    /// Multiply-accumulates of one forward pass for one image.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.layer.macs()).sum()
    }

    /// Bytes that training with batches of `batch` images needs, estimated from the shapes:
    /// every parameter and buffer, a gradient per trainable value and two optimizer slots (Adam's
    /// moments; SGD with momentum keeps one), the input batch, and per layer that runs the
    /// output and input-gradient buffers plus what the layer itself reports keeping
    /// ([`Layer::kept_values`]). Allocator overhead and the matrix multiply's packing buffers
    /// are not counted.
    pub fn memory_estimate(&mut self, batch: usize) -> u64 {
        let n = batch as u128;
        let mut values: u128 = 0;
        self.visit_params(&mut |_, p| {
            let len = p.len();
            values += match p.kind {
                ParamKind::Trainable => 4 * len,
                ParamKind::Buffer => len,
            };
        });
        let item = |s: &[usize]| s.iter().map(|&d| d as u128).product::<u128>();
        values += n * item(&self.spec.input);
        // A skipped layer allocates nothing.
        for node in self.nodes.iter().filter(|n| !n.fused) {
            let (x, y) = (item(&node.in_shape), item(node.layer.out_shape()));
            values += n * (x + y) + node.layer.kept_values(batch);
        }
        u64::try_from(values * 4).unwrap_or(u64::MAX)
    }

    /// Per layer: name, spec line, output shape, trainable parameters and MACs per image.
    pub fn summary(&mut self) -> Vec<LayerSummary> {
        let mut rows = Vec::new();
        for node in &mut self.nodes {
            let mut params = 0;
            node.layer.visit_params(&mut |p| {
                if p.kind == ParamKind::Trainable {
                    params += p.len() as usize;
                }
            });
            rows.push(LayerSummary {
                name: node.name.clone(),
                spec: node.spec.to_string(),
                out_shape: node.out_shape.clone(),
                params,
                macs: node.layer.macs(),
                fused: node.fused,
            });
        }
        rows
    }

    /// Starts (or restarts from zero) timing every layer's forward and backward.
    pub fn start_profiling(&mut self) {
        for n in &mut self.nodes {
            n.times = Some((Duration::ZERO, Duration::ZERO));
        }
    }

    /// Per layer: name and the forward and backward time accumulated since `start_profiling`.
    pub fn profile(&self) -> Vec<(String, Duration, Duration)> {
        self.nodes
            .iter()
            .map(|n| {
                let (f, b) = n.times.unwrap_or_default();
                (n.name.clone(), f, b)
            })
            .collect()
    }
}

/// Hands every ReLU and GELU to the layer before it when that layer can apply it (conv: ReLU;
/// batch norm: both): one pass over the activations fewer each way, with bit-identical results.
fn fuse_activations(nodes: &mut [Node]) {
    for i in 1..nodes.len() {
        let (before, rest) = nodes.split_at_mut(i);
        let (prev, node) = (&mut before[i - 1], &mut rest[0]);
        let act = match node.spec {
            LayerSpec::Relu => Activation::Relu,
            LayerSpec::Gelu => Activation::Gelu,
            _ => continue,
        };
        if !prev.fused && prev.layer.fuse_activation(act) {
            node.fused = true;
        }
    }
}

/// Hands every max pooling to the layer that computes its input (with the activation before
/// it fused) when that layer can pool as it writes (batch norm): the full-size activation is
/// then never written, read back, nor its gradient; results bit-identical.
fn fuse_pools(nodes: &mut [Node]) {
    for i in 1..nodes.len() {
        let LayerSpec::MaxPool { k, stride } = nodes[i].spec else {
            continue;
        };
        let (before, rest) = nodes.split_at_mut(i);
        let prev = before.iter_mut().rev().find(|n| !n.fused);
        if prev.is_some_and(|p| p.layer.fuse_max_pool(k, stride)) {
            rest[0].fused = true;
        }
    }
}

/// Skips every flatten whose next layer reads its input flat: a copy of the activations fewer
/// each way, with bit-identical results.
fn fuse_flattens(nodes: &mut [Node]) {
    for i in 1..nodes.len() {
        let (before, rest) = nodes.split_at_mut(i);
        let (prev, node) = (&mut before[i - 1], &rest[0]);
        if matches!(prev.spec, LayerSpec::Flatten) && !node.fused && node.layer.reads_input_flat() {
            prev.fused = true;
        }
    }
}

/// The layer for `ls` on input items of `shape`; its parameters are declared, not allocated.
fn make_layer(
    ls: &LayerSpec,
    shape: &[usize],
    classes: usize,
    opts: &BuildOptions,
) -> Result<Box<dyn Layer>, String> {
    Ok(match ls {
        LayerSpec::Conv(cfg) => {
            let cfg = Conv2dConfig {
                init: cfg.init.or(opts.init),
                ..*cfg
            };
            Box::new(Conv2d::new(shape, cfg, opts.winograd)?)
        }
        LayerSpec::MaxPool { k, stride } => Box::new(MaxPool2d::new(shape, *k, *stride)?),
        LayerSpec::AvgPool { k, stride } => Box::new(AvgPool2d::new(shape, *k, *stride)?),
        LayerSpec::GlobalAvgPool => Box::new(GlobalAvgPool::new(shape)?),
        LayerSpec::Dense {
            out,
            bias,
            init,
            lr_scale,
        } => {
            let out = match out {
                Width::Fixed(n) => *n,
                Width::Classes => classes,
            };
            Box::new(Dense::new(shape, out, *bias)?.with_init(init.or(opts.init), *lr_scale))
        }
        LayerSpec::Relu => Box::new(Relu::new(shape)),
        LayerSpec::Gelu => Box::new(Gelu::new(shape)),
        LayerSpec::Dropout(p) => Box::new(Dropout::new(shape, *p)?),
        LayerSpec::BatchNorm(cfg) => Box::new(BatchNorm::new(shape, *cfg)?),
        LayerSpec::Flatten => Box::new(Flatten::new(shape)),
        LayerSpec::Scale(s) => Box::new(Scale::new(shape, *s)?),
        LayerSpec::Whiten(cfg) => Box::new(Whiten::new(shape, *cfg)?),
    })
}

/// Checks a layer just made (nothing allocated yet) against `limits`: its output and largest
/// per-image buffer, and the network's parameters so far, `params`, to which it adds its own.
fn check_size(
    layer: &mut dyn Layer,
    limits: &BuildLimits,
    params: &mut u128,
) -> Result<(), String> {
    let max_item = limits.max_item_values as u128;
    let out: u128 = layer.out_shape().iter().map(|&d| d as u128).product();
    for (what, v) in [
        ("the output", out),
        ("a buffer", layer.item_buffer_values()),
    ] {
        if v > max_item {
            return Err(format!(
                "{what} would hold {v} values per image, over the limit of {max_item}"
            ));
        }
    }
    layer.visit_params(&mut |p| *params += p.len());
    if *params > limits.max_params as u128 {
        return Err(format!(
            "the network would have {params} parameters, over the limit of {}",
            limits.max_params
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::loss::{Loss, LossKind};
    use crate::net::presets::preset;
    use crate::net::spec::parse;

    fn params_of(name: &str) -> usize {
        Network::build(
            &parse(preset(name).unwrap()).unwrap(),
            10,
            Some(1),
            &BuildOptions::default(),
        )
        .unwrap()
        .num_params()
    }

    #[test]
    fn presets_have_the_published_parameter_counts() {
        // Counts from ../shared/bench/NETWORKS.md (PyTorch's own count of the same networks).
        assert_eq!(params_of("mnist-ref"), 1_199_882);
        assert_eq!(params_of("cifar-ref"), 551_018);
        // LeNet-5 on 28×28 with padding 2 in C1: 156 + 2,416 + 48,120 + 10,164 + 850.
        assert_eq!(params_of("lenet5"), 61_706);
    }

    /// ReLUs run inside the conv and batch-norm layers before them, GELUs inside batch norm,
    /// max pooling inside batch norm and Winograd convolutions (after their activation, or none),
    /// and dense layers read their
    /// input without a flatten (after pooling, or as the first layer), with results
    /// bit-identical to separate layers: logits in training and evaluation, and every parameter
    /// gradient. Covers the Winograd and im2col convolutions, with and without bias, and batch
    /// norm; pooling by 2×2 windows on odd sizes (the last row and column dropped), and by
    /// overlapping 3×3 windows moved by 2.
    #[test]
    fn fused_layers_change_no_result() {
        let cases: [(&str, &[bool]); 5] = [
            (
                "input 8 9 7\nconv 8 3 pad=1\nrelu\nconv 6 3 stride=2 bias=no\nrelu\n\
                 conv 8 3 pad=1 bias=no\nbatchnorm\nrelu\nrelu\nmaxpool 2\nflatten\n\
                 dense 5\nrelu\ndense classes\n",
                &[
                    false, true, false, true, false, false, true, false, false, true, false, false,
                    false,
                ],
            ),
            (
                "input 8 9 7\nflatten\ndense 6\nrelu\ndense classes\n",
                &[true, false, false, false],
            ),
            // GELU: into batch norm (with and without its scale), not into a convolution.
            (
                "input 8 9 7\nconv 8 3 pad=1 bias=no\ngelu\nconv 8 3 pad=1 bias=no\n\
                 batchnorm momentum=0.4 scale=no\ngelu\nmaxpool 2\nbatchnorm\ngelu\nflatten\n\
                 dense classes\n",
                &[
                    false, false, false, false, true, true, false, true, true, false,
                ],
            ),
            // Pooling into batch norm after its ReLU, and after none with overlapping windows.
            (
                "input 8 13 11\nconv 8 3 pad=1 bias=no\nbatchnorm\nrelu\nmaxpool 2\n\
                 conv 6 3 pad=1 bias=no\nbatchnorm\nmaxpool 3 stride=2\nflatten\n\
                 dense classes\n",
                &[false, false, true, true, false, false, true, true, false],
            ),
            // Pooling into a Winograd convolution after its ReLU (F(4×4) on 15×13), and after
            // none with overlapping windows (F(2×2) on 7×6); not into an im2col one.
            (
                "input 8 15 13\nconv 8 3 pad=1\nrelu\nmaxpool 2\nconv 8 3 pad=1 bias=no\n\
                 maxpool 3 stride=2\nconv 6 1\nmaxpool 2\nflatten\ndense classes\n",
                &[false, true, true, false, true, false, false, true, false],
            ),
        ];
        for (text, want) in cases {
            let spec = parse(text).unwrap();
            let options = |fuse| BuildOptions {
                fuse,
                ..BuildOptions::default()
            };
            let mut fused = Network::build(&spec, 4, Some(3), &options(true)).unwrap();
            let mut plain = Network::build(&spec, 4, Some(3), &options(false)).unwrap();
            let skipped: Vec<bool> = fused.summary().iter().map(|r| r.fused).collect();
            assert_eq!(skipped, want);
            let [c, h, w] = spec.input;
            let x = crate::layers::gradcheck::seeded(&[3, c, h, w], 4);
            let labels = [0, 3, 1];
            let mut grads = Vec::new();
            for net in [&mut fused, &mut plain] {
                let eval = net.forward(&x, Mode::Eval).clone();
                let mut loss = Loss::new(LossKind::CrossEntropy, 0.0);
                let logits = net.forward(&x, Mode::Train { seed: 5 }).clone();
                loss.forward(&logits, &labels);
                net.backward(&x, loss.backward());
                let mut g = vec![eval, logits];
                net.visit_params(&mut |_, p| g.push(p.grad.clone()));
                grads.push(g);
            }
            assert_eq!(grads[0], grads[1], "{text}");
        }
    }

    #[test]
    fn mnist_ref_macs_match_the_reference_count() {
        let mut net = Network::build(
            &parse(preset("mnist-ref").unwrap()).unwrap(),
            10,
            Some(1),
            &BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(net.macs(), 11_992_448);
        let names: Vec<String> = net.summary().into_iter().map(|r| r.name).collect();
        assert_eq!(names[..3], ["conv1", "relu1", "conv2"]);
        let mut pnames = Vec::new();
        net.visit_params(&mut |n, _| pnames.push(n.to_string()));
        assert_eq!(
            pnames,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "dense1.weight",
                "dense1.bias",
                "dense2.weight",
                "dense2.bias"
            ]
        );
    }

    #[test]
    fn impossible_shapes_are_refused_naming_layer_and_shapes() {
        let spec =
            parse("input 1 4 4\nconv 8 3\nmaxpool 2\nmaxpool 2\nflatten\ndense classes\n").unwrap();
        let err = Network::build(&spec, 10, Some(1), &BuildOptions::default())
            .err()
            .unwrap();
        assert!(
            err.contains("line 4")
                && err.contains("maxpool2")
                && err.contains("8×1×1")
                && err.contains("2×2"),
            "{err}"
        );
        let spec = parse("input 1 4 4\nconv 8 3\nflatten\ndense 5\n").unwrap();
        let err = Network::build(&spec, 10, Some(1), &BuildOptions::default())
            .err()
            .unwrap();
        assert!(err.contains("dense classes"), "{err}");
    }

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_allocated() {
        let cases = [
            // 784 × 2,000,000 weights: over 2^28.
            (
                "input 1 28 28\nflatten\ndense 2000000\ndense classes\n",
                "line 3",
                "parameters",
            ),
            // Padding that would overflow the output size computation.
            (
                "input 1 4 4\nconv 1 3 pad=18446744073709551615\nflatten\ndense classes\n",
                "line 2",
                "padding",
            ),
            (
                "input 1 4 4\nmaxpool 100000\nflatten\ndense classes\n",
                "line 2",
                "window 100000",
            ),
            (
                "input 65536 65536 65536\nflatten\ndense classes\n",
                "input",
                "per image",
            ),
            // 4096 channels of 8192×8192.
            (
                "input 1 8192 8192\nconv 4096 1\nflatten\ndense classes\n",
                "line 2",
                "the output would hold",
            ),
        ];
        for (text, at, what) in cases {
            let err = Network::build(&parse(text).unwrap(), 10, Some(1), &BuildOptions::default())
                .err()
                .unwrap();
            assert!(
                err.contains(at) && err.contains(what) && err.contains("limit"),
                "{text:?}: {err}"
            );
        }
        let limited = |limits| BuildOptions {
            limits,
            ..BuildOptions::default()
        };
        let small = BuildLimits {
            max_params: 100,
            ..BuildLimits::default()
        };
        let spec = parse("input 1 4 4\nconv 2 3\nflatten\ndense classes\n").unwrap();
        // 20 + 18 = 38 parameters: within 100, but not within 37.
        assert!(Network::build(&spec, 2, Some(1), &limited(small)).is_ok());
        let tight = BuildLimits {
            max_params: 37,
            ..small
        };
        let err = Network::build(&spec, 2, Some(1), &limited(tight))
            .err()
            .unwrap();
        assert!(err.contains("38 parameters, over the limit of 37"), "{err}");
    }

    #[test]
    fn memory_estimate_counts_parameters_and_per_image_buffers() {
        let spec = parse("input 1 4 4\nconv 2 3\nflatten\ndense classes\n").unwrap();
        let mut net = Network::build(&spec, 2, Some(1), &BuildOptions::default()).unwrap();
        // Worked by hand, in f32 values, for a batch of 4:
        // parameters: conv 2·1·3·3 + 2 = 20, dense 2·8 + 2 = 18; ×4 (value, gradient, two
        //   optimizer slots) = 152;
        // input batch: 4 · 16 = 64;
        // conv (1×4×4 → 2×2×2): per image input gradient 16 + output 8 + the larger column
        //   matrix, max(1·9·4, 2·9·16) = 288, so 4 · 312 = 1248; one weight-gradient partial
        //   (4 images a group) and the flipped kernel: 2 · 18 = 36;
        // flatten: skipped, the dense layer reads the convolution's output; dense: 4 · (8 input
        // gradient + 2 out) = 40.
        let values = 152 + 64 + 1248 + 36 + 40;
        assert_eq!(net.memory_estimate(4), 4 * values);
        assert!(net.memory_estimate(8) > net.memory_estimate(4));
    }

    /// Two Gaussian blobs per class in 2-D, lifted into a 1×4×4 image: a small conv net must
    /// separate four classes to near 100%.
    #[test]
    fn a_small_network_learns_a_separable_problem() {
        let spec = parse("input 1 4 4\nconv 8 3 pad=1\nrelu\nmaxpool 2\nflatten\ndense 16\nrelu\ndense classes\n").unwrap();
        let mut net = Network::build(&spec, 4, Some(7), &BuildOptions::default()).unwrap();
        let mut rng = Rng::new(5);
        let n = 256;
        let mut x = Tensor::zeros(vec![n, 1, 4, 4]);
        let mut labels = vec![0; n];
        for i in 0..n {
            let label = i % 4;
            labels[i] = label;
            // Class c lights up quadrant c, plus noise everywhere.
            for r in 0..4 {
                for c in 0..4 {
                    let quadrant = (r / 2) * 2 + c / 2;
                    let signal = if quadrant == label { 1.0 } else { 0.0 };
                    x[[i, 0, r, c]] = signal + 0.3 * rng.normal();
                }
            }
        }
        let mut loss = Loss::new(LossKind::CrossEntropy, 0.0);
        let mut opt = crate::train::optim::Optimizer::new(crate::train::optim::OptimizerConfig {
            kind: crate::train::optim::OptimizerKind::Sgd,
            momentum: 0.9,
            ..Default::default()
        });
        for step in 0..150 {
            net.zero_grad();
            let logits = net.forward(&x, Mode::Train { seed: step });
            loss.forward(logits, &labels);
            net.backward(&x, loss.backward());
            opt.step(&mut net, 0.05, 0);
        }
        let logits = net.forward(&x, Mode::Eval).clone();
        let l = loss.forward(&logits, &labels);
        let correct = (0..n)
            .filter(|&i| {
                let row = logits.row_argmax(i);
                row == labels[i]
            })
            .count();
        assert!(
            correct as f32 / n as f32 > 0.98,
            "accuracy {correct}/{n}, loss {l}"
        );
    }

    trait RowArgmax {
        fn row_argmax(&self, i: usize) -> usize;
    }
    impl RowArgmax for Tensor {
        fn row_argmax(&self, i: usize) -> usize {
            let k = self.shape()[1];
            let row = &self.as_slice().unwrap()[i * k..(i + 1) * k];
            (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
        }
    }
}
