//! The layer graph: builds a network from an [`ArchSpec`], infers every shape, runs forward and
//! backward through the layers in order, and names every parameter.
//!
//! The graph is a chain (each layer feeds the next), which covers every network the spec format
//! describes; keeping it a chain keeps shape inference and backward trivially correct.

use crate::layers::{
    AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, Layer, MaxPool2d, Mode,
    Param, ParamKind, Relu,
};
use crate::rng::{Rng, derive};
use crate::spec::{ArchSpec, LayerSpec, Width, fmt_shape};
use crate::tensor::Tensor;
use std::time::{Duration, Instant};

struct Node {
    name: String,
    spec: LayerSpec,
    layer: Box<dyn Layer>,
    /// Time spent in forward and backward since profiling was switched on.
    times: Option<(Duration, Duration)>,
}

pub struct Network {
    pub spec: ArchSpec,
    pub classes: usize,
    nodes: Vec<Node>,
}

/// One row of `cnn summary`.
pub struct LayerSummary {
    pub name: String,
    pub spec: String,
    pub out_shape: Vec<usize>,
    pub params: usize,
    pub macs: u64,
}

impl Network {
    /// Builds the network for `classes` classes with weights drawn from `seed`.
    /// An impossible shape is an error naming the line, the layer and the shapes.
    pub fn build(spec: &ArchSpec, classes: usize, seed: u64) -> Result<Network, String> {
        if classes < 2 {
            return Err(format!(
                "a classifier needs at least 2 classes, got {classes}"
            ));
        }
        let mut shape = spec.input.to_vec();
        let mut nodes: Vec<Node> = Vec::new();
        let mut counts = std::collections::HashMap::new();
        for (i, (line, ls)) in spec.layers.iter().enumerate() {
            let count = counts.entry(ls.kind()).or_insert(0);
            *count += 1;
            let name = format!("{}{}", ls.kind(), count);
            let mut rng = Rng::new(derive(seed, i as u64));
            let built: Result<Box<dyn Layer>, String> = match ls {
                LayerSpec::Conv(cfg) => {
                    Conv2d::new(&shape, *cfg, &mut rng).map(|l| Box::new(l) as _)
                }
                LayerSpec::MaxPool { k, stride } => {
                    MaxPool2d::new(&shape, *k, *stride).map(|l| Box::new(l) as _)
                }
                LayerSpec::AvgPool { k, stride } => {
                    AvgPool2d::new(&shape, *k, *stride).map(|l| Box::new(l) as _)
                }
                LayerSpec::GlobalAvgPool => GlobalAvgPool::new(&shape).map(|l| Box::new(l) as _),
                LayerSpec::Dense { out, bias } => {
                    let out = match out {
                        Width::Fixed(n) => *n,
                        Width::Classes => classes,
                    };
                    Dense::new(&shape, out, *bias, &mut rng).map(|l| Box::new(l) as _)
                }
                LayerSpec::Relu => Ok(Box::new(Relu::new(&shape))),
                LayerSpec::Dropout(p) => Dropout::new(&shape, *p).map(|l| Box::new(l) as _),
                LayerSpec::BatchNorm => BatchNorm::new(&shape).map(|l| Box::new(l) as _),
                LayerSpec::Flatten => Ok(Box::new(Flatten::new(&shape))),
            };
            let layer = built.map_err(|e| {
                format!(
                    "line {line}: {name} ({ls}) on input {}: {e}",
                    fmt_shape(&shape)
                )
            })?;
            shape = layer.out_shape().to_vec();
            nodes.push(Node {
                name,
                spec: ls.clone(),
                layer,
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
        // No one needs the gradient of the image itself.
        nodes[0].layer.set_needs_input_grad(false);
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
        for (i, node) in self.nodes.iter_mut().enumerate() {
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
    /// parameter gradient. Shapes: dlogits `N×K`.
    pub fn backward(&mut self, dlogits: &Tensor) {
        let mut g = dlogits;
        for node in self.nodes.iter_mut().rev() {
            match &mut node.times {
                None => g = node.layer.backward(g),
                Some((_, bwd)) => {
                    let t = Instant::now();
                    g = node.layer.backward(g);
                    *bwd += t.elapsed();
                }
            }
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
                p.grad.fill(0.0);
            }
        });
    }

    /// Number of trainable values.
    pub fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, p| {
            if p.kind == ParamKind::Trainable {
                n += p.value.len();
            }
        });
        n
    }

    /// Multiply-accumulates of one forward pass for one image.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.layer.macs()).sum()
    }

    /// Per layer: name, spec line, output shape, trainable parameters and MACs per image.
    pub fn summary(&mut self) -> Vec<LayerSummary> {
        let mut rows = Vec::new();
        for node in &mut self.nodes {
            let mut params = 0;
            node.layer.visit_params(&mut |p| {
                if p.kind == ParamKind::Trainable {
                    params += p.value.len();
                }
            });
            rows.push(LayerSummary {
                name: node.name.clone(),
                spec: node.spec.to_string(),
                out_shape: node.layer.out_shape().to_vec(),
                params,
                macs: node.layer.macs(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{Loss, LossKind};
    use crate::spec::{parse, preset};

    fn params_of(name: &str) -> usize {
        Network::build(&parse(preset(name).unwrap()).unwrap(), 10, 1)
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

    #[test]
    fn mnist_ref_macs_match_the_reference_count() {
        let mut net = Network::build(&parse(preset("mnist-ref").unwrap()).unwrap(), 10, 1).unwrap();
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
        let err = Network::build(&spec, 10, 1).err().unwrap();
        assert!(
            err.contains("line 4")
                && err.contains("maxpool2")
                && err.contains("8×1×1")
                && err.contains("2×2"),
            "{err}"
        );
        let spec = parse("input 1 4 4\nconv 8 3\nflatten\ndense 5\n").unwrap();
        let err = Network::build(&spec, 10, 1).err().unwrap();
        assert!(err.contains("dense classes"), "{err}");
    }

    /// Two Gaussian blobs per class in 2-D, lifted into a 1×4×4 image: a small conv net must
    /// separate four classes to near 100%.
    #[test]
    fn a_small_network_learns_a_separable_problem() {
        let spec = parse("input 1 4 4\nconv 8 3 pad=1\nrelu\nmaxpool 2\nflatten\ndense 16\nrelu\ndense classes\n").unwrap();
        let mut net = Network::build(&spec, 4, 7).unwrap();
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
        let mut opt = crate::optim::Optimizer::new(crate::optim::OptimizerConfig {
            kind: crate::optim::OptimizerKind::Sgd,
            momentum: 0.9,
            ..Default::default()
        });
        for step in 0..150 {
            net.zero_grad();
            let logits = net.forward(&x, Mode::Train { seed: step });
            loss.forward(logits, &labels);
            net.backward(loss.backward());
            opt.step(&mut net, 0.05);
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
