//! A model's whole inference path as one ONNX graph (opset [`OPSET`]), for onnxruntime and the
//! other ONNX tools.
//!
//! The graph takes `pixels`, `N×C×H×W` `f32` in [0, 1] with a dynamic batch `N` (an image as
//! `cnn predict --no-preprocess` reads it, before normalisation), and gives `probabilities`
//! (`N×K`, the softmax of the logits over the temperature) and `logits` (`N×K`, before the
//! temperature). In between: the normalisation `(x − mean) / std`, the test-time augmentation's
//! views (each view a slice of one batch, their logits averaged with their weights), then each
//! layer as the standard operators that compute it:
//!
//! | layer | operators |
//! |---|---|
//! | `conv`, `whiten` | `Conv` (weights and bias as initialisers) |
//! | `dense` | `Gemm` with `transB` (the weight is `OUT×IN`) |
//! | `maxpool`, `avgpool` | `MaxPool`, `AveragePool` (no padding, floor) |
//! | `global_avgpool` | `GlobalAveragePool`, `Flatten` |
//! | `batchnorm` | `BatchNormalization` (a scale of ones when `scale=no`) |
//! | `relu` | `Relu` |
//! | `gelu` | `0.5·x·(1 + Erf(x/√2))`: `Div`, `Erf`, `Add`, `Mul`, `Mul` (`Gelu` is opset 20) |
//! | `scale` | `Mul` by a constant |
//! | `flatten` | `Flatten` |
//! | `dropout` | nothing (the identity at inference) |
//!
//! Layer fusion is an engine detail: the graph always has the separate operators, which
//! compute the same function. Initialisers keep the model file's tensor names (`conv1.weight`).
//!
//! May use: `net` (parse and build the architecture, for its layers' names and shapes), the
//! model. Prints nothing.

mod proto;

use super::Model;
use crate::net::graph::BuildOptions;
use crate::net::spec::{LayerSpec, parse};
use anyhow::{Result, anyhow, bail};
use prost::Message;
use proto::{
    AttributeProto, AttributeType, DimValue, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    TypeProtoTensor, ValueInfoProto,
};
use std::collections::HashMap;

/// The ONNX operator set the graph uses: the oldest with every operator and attribute form it
/// needs (axes of `ReduceSum` as an input), for the widest range of runtimes.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13 (ONNX 1.8).
const IR_VERSION: i64 = 7;
/// The graph's input and outputs.
pub const INPUT: &str = "pixels";
pub const PROBABILITIES: &str = "probabilities";
pub const LOGITS: &str = "logits";

/// One test-time view: the image moved `(dy, dx)` pixels with its edges mirrored in, then
/// mirrored left to right if `flip`; its logits count with `weight`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub dy: isize,
    pub dx: isize,
    pub flip: bool,
    pub weight: f32,
}

/// The ONNX file (serialised `ModelProto`) of `model`, classifying each image by the weighted
/// average of the logits of `views` (one view `(0, 0, false, 1.0)` for none). Errors do not
/// name the model file; the caller adds it.
pub fn export(model: &Model, views: &[View]) -> Result<Vec<u8>> {
    let spec = parse(&model.arch).map_err(|e| anyhow!("architecture {e}"))?;
    let mut net = model.build_network(&BuildOptions::default())?;
    let rows = net.summary();
    let params: HashMap<&str, &super::container::NamedTensor> =
        model.params.iter().map(|t| (t.name.as_str(), t)).collect();
    let [c, h, w] = model.input;
    let classes = model.classes.len();
    if views.is_empty() {
        bail!("no test-time view to export");
    }
    for v in views {
        if v.dy.unsigned_abs() >= h || v.dx.unsigned_abs() >= w {
            bail!(
                "a test-time view moves the image by ({}, {}), beyond its {h}×{w} pixels",
                v.dy,
                v.dx
            );
        }
    }

    let mut g = Graph::default();
    let channel = |v: &[f32]| (vec![1, c as i64, 1, 1], v.to_vec());
    let (dims, mean) = channel(&model.norm_mean);
    let mean = g.constant("norm.mean", dims.clone(), &mean);
    let std = g.constant("norm.std", dims, &channel(&model.norm_std).1);
    let centred = g.node("Sub", "normalise/sub", &[INPUT, &mean], vec![]);
    let mut x = g.node("Div", "normalise", &[&centred, &std], vec![]);

    if views.len() > 1 {
        let mut outs = Vec::new();
        for (i, v) in views.iter().enumerate() {
            outs.push(g.view(&x, v, i, [h, w]));
        }
        let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
        x = g.node("Concat", "views", &outs, vec![int("axis", -4)]);
    }

    for ((_, layer), row) in spec.layers.iter().zip(&rows) {
        let name = row.name.as_str();
        let param = |p: &str| {
            let full = format!("{name}.{p}");
            params
                .get(full.as_str())
                .map(|t| (full.clone(), *t))
                .ok_or_else(|| anyhow!("parameter `{full}` is missing"))
        };
        x = match layer {
            LayerSpec::Conv(cfg) => {
                let (k, s, p) = (cfg.kernel, cfg.stride as i64, cfg.pad as i64);
                let mut inputs = vec![x.clone(), g.weight(param("weight")?)];
                if cfg.bias {
                    inputs.push(g.weight(param("bias")?));
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.node(
                    "Conv",
                    name,
                    &inputs,
                    vec![
                        ints("kernel_shape", &[k.0 as i64, k.1 as i64]),
                        ints("strides", &[s, s]),
                        ints("pads", &[p, p, p, p]),
                    ],
                )
            }
            LayerSpec::Whiten(cfg) => {
                let k = cfg.k as i64;
                let weight = g.weight(param("weight")?);
                let bias = g.weight(param("bias")?);
                g.node(
                    "Conv",
                    name,
                    &[&x, &weight, &bias],
                    vec![ints("kernel_shape", &[k, k]), ints("strides", &[1, 1])],
                )
            }
            LayerSpec::Dense { bias, .. } => {
                let mut inputs = vec![x.clone(), g.weight(param("weight")?)];
                if *bias {
                    inputs.push(g.weight(param("bias")?));
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.node("Gemm", name, &inputs, vec![int("transB", 1)])
            }
            LayerSpec::MaxPool { k, stride } | LayerSpec::AvgPool { k, stride } => {
                let op = if matches!(layer, LayerSpec::MaxPool { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let (k, s) = (*k as i64, *stride as i64);
                g.node(
                    op,
                    name,
                    &[&x],
                    vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s])],
                )
            }
            LayerSpec::GlobalAvgPool => {
                let pooled = g.node("GlobalAveragePool", &format!("{name}/pool"), &[&x], vec![]);
                g.node("Flatten", name, &[&pooled], vec![int("axis", 1)])
            }
            LayerSpec::BatchNorm(cfg) => {
                let scale = if cfg.scale {
                    g.weight(param("weight")?)
                } else {
                    let (_, beta) = param("bias")?;
                    let ones = vec![1.0; beta.data.len()];
                    g.constant(&format!("{name}.scale"), vec![ones.len() as i64], &ones)
                };
                let bias = g.weight(param("bias")?);
                let mean = g.weight(param("running_mean")?);
                let var = g.weight(param("running_var")?);
                g.node(
                    "BatchNormalization",
                    name,
                    &[&x, &scale, &bias, &mean, &var],
                    vec![float("epsilon", cfg.eps)],
                )
            }
            LayerSpec::Relu => g.node("Relu", name, &[&x], vec![]),
            LayerSpec::Gelu => {
                let root2 = g.constant(&format!("{name}.sqrt2"), vec![], &[2f32.sqrt()]);
                let one = g.constant(&format!("{name}.one"), vec![], &[1.0]);
                let half = g.constant(&format!("{name}.half"), vec![], &[0.5]);
                let scaled = g.node("Div", &format!("{name}/div"), &[&x, &root2], vec![]);
                let erf = g.node("Erf", &format!("{name}/erf"), &[&scaled], vec![]);
                let plus = g.node("Add", &format!("{name}/add"), &[&erf, &one], vec![]);
                let times = g.node("Mul", &format!("{name}/mul"), &[&x, &plus], vec![]);
                g.node("Mul", name, &[&times, &half], vec![])
            }
            LayerSpec::Scale(factor) => {
                let f = g.constant(&format!("{name}.factor"), vec![], &[*factor]);
                g.node("Mul", name, &[&x, &f], vec![])
            }
            LayerSpec::Flatten => g.node("Flatten", name, &[&x], vec![int("axis", 1)]),
            LayerSpec::Dropout(_) => x,
        };
    }

    if views.len() > 1 {
        let v = views.len() as i64;
        let k = classes as i64;
        let by_view = g.shape("views.shape", &[v, -1, k]);
        let split = g.node("Reshape", "views/split", &[&x, &by_view], vec![]);
        let weights: Vec<f32> = views.iter().map(|v| v.weight).collect();
        let weights = g.constant("views.weight", vec![v, 1, 1], &weights);
        let weighted = g.node("Mul", "views/weigh", &[&split, &weights], vec![]);
        let axes = g.shape("views.axes", &[0]);
        let sum = g.node("ReduceSum", "views/sum", &[&weighted, &axes], vec![]);
        let flat = g.shape("logits.shape", &[-1, k]);
        x = g.node("Reshape", "views/average", &[&sum, &flat], vec![]);
    }
    g.nodes.push(NodeProto {
        input: vec![x],
        output: vec![LOGITS.into()],
        name: LOGITS.into(),
        op_type: "Identity".into(),
        attribute: vec![],
    });
    let t = g.constant("temperature.value", vec![], &[model.temperature]);
    let cooled = g.node("Div", "temperature", &[LOGITS, &t], vec![]);
    g.nodes.push(NodeProto {
        input: vec![cooled],
        output: vec![PROBABILITIES.into()],
        name: "softmax".into(),
        op_type: "Softmax".into(),
        attribute: vec![int("axis", 1)],
    });

    let batch = || Dimension {
        value: Some(DimValue::DimParam("N".into())),
    };
    let fixed = |n: usize| Dimension {
        value: Some(DimValue::DimValue(n as i64)),
    };
    let value = |name: &str, dims: Vec<Dimension>| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: proto::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    };
    let graph = GraphProto {
        node: g.nodes,
        name: "cnn".into(),
        initializer: g.inits,
        doc_string: model.arch.clone(),
        input: vec![value(INPUT, vec![batch(), fixed(c), fixed(h), fixed(w)])],
        output: vec![
            value(PROBABILITIES, vec![batch(), fixed(classes)]),
            value(LOGITS, vec![batch(), fixed(classes)]),
        ],
    };
    let mut metadata_props: Vec<StringStringEntryProto> = model
        .meta()
        .into_iter()
        .map(|(key, value)| StringStringEntryProto { key, value })
        .collect();
    metadata_props.push(StringStringEntryProto {
        key: "tta_views".into(),
        value: views.len().to_string(),
    });
    let file = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "cnn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "A cnn classifier of {} classes; input `{INPUT}`: N×{c}×{h}×{w} pixels in [0, 1]",
            classes
        ),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props,
    };
    Ok(file.encode_to_vec())
}

/// The nodes and initialisers of a graph being written.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Graph {
    /// Adds a node named `name` whose one output is also called `name`; returns it.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            name: name.into(),
            op_type: op.into(),
            attribute,
        });
        name.into()
    }

    /// An `f32` initialiser; returns its name.
    fn constant(&mut self, name: &str, dims: Vec<i64>, values: &[f32]) -> String {
        self.inits.push(TensorProto {
            dims,
            data_type: proto::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// A model tensor as an initialiser of the same name and shape.
    fn weight(&mut self, (name, t): (String, &super::container::NamedTensor)) -> String {
        let dims = t.shape.iter().map(|&d| d as i64).collect();
        self.constant(&name, dims, &t.data)
    }

    /// A one-dimensional `i64` initialiser (a shape, axes, slice bounds).
    fn shape(&mut self, name: &str, values: &[i64]) -> String {
        self.inits.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: proto::INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// View `i` of the `N×C×H×W` batch `x`: moved with mirrored edges (`Pad` in reflect mode,
    /// then a `Slice` back to `H×W`), then mirrored (a `Slice` with step −1).
    fn view(&mut self, x: &str, v: &View, i: usize, [h, w]: [usize; 2]) -> String {
        let prefix = format!("view{i}");
        let mut y = x.to_string();
        if v.dy != 0 || v.dx != 0 {
            let (dy, dx) = (v.dy as i64, v.dx as i64);
            let pads = self.shape(
                &format!("{prefix}.pads"),
                &[0, 0, dy.max(0), dx.max(0), 0, 0, (-dy).max(0), (-dx).max(0)],
            );
            let padded = self.node(
                "Pad",
                &format!("{prefix}/pad"),
                &[&y, &pads],
                vec![string("mode", "reflect")],
            );
            let (top, left) = ((-dy).max(0), (-dx).max(0));
            let starts = self.shape(&format!("{prefix}.starts"), &[top, left]);
            let ends = self.shape(
                &format!("{prefix}.ends"),
                &[top + h as i64, left + w as i64],
            );
            let axes = self.shape(&format!("{prefix}.axes"), &[2, 3]);
            y = self.node(
                "Slice",
                &format!("{prefix}/shift"),
                &[&padded, &starts, &ends, &axes],
                vec![],
            );
        }
        if v.flip {
            let starts = self.shape(&format!("{prefix}.flip_starts"), &[-1]);
            let ends = self.shape(&format!("{prefix}.flip_ends"), &[i64::MIN]);
            let axes = self.shape(&format!("{prefix}.flip_axes"), &[3]);
            let steps = self.shape(&format!("{prefix}.flip_steps"), &[-1]);
            y = self.node(
                "Slice",
                &format!("{prefix}/flip"),
                &[&y, &starts, &ends, &axes, &steps],
                vec![],
            );
        }
        if y == x {
            // The unmoved view: a node of its own keeps every view's name distinct.
            y = self.node("Identity", &prefix, &[x], vec![]);
        }
        y
    }
}

fn attribute(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i,
        ..attribute(name, AttributeType::Int)
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attribute(name, AttributeType::Ints)
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f,
        ..attribute(name, AttributeType::Float)
    }
}

fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attribute(name, AttributeType::String)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::graph::Network;

    fn model(arch: &str) -> Model {
        let spec = parse(arch).unwrap();
        let mut net = Network::build(&spec, 3, Some(1), &BuildOptions::default()).unwrap();
        let c = spec.input[0];
        Model::from_network(
            &mut net,
            vec!["a".into(), "b".into(), "c".into()],
            vec![0.5; c],
            vec![0.25; c],
            crate::store::Provenance::default(),
        )
    }

    #[test]
    fn the_graph_lists_every_layer_weight_and_the_softmax() {
        let m = model(
            "input 1 6 6\nconv 2 3 pad=1\nbatchnorm scale=no\ngelu\nmaxpool 2\ndropout 0.5\nflatten\ndense classes\n",
        );
        let bytes = export(
            &m,
            &[View {
                dy: 0,
                dx: 0,
                flip: false,
                weight: 1.0,
            }],
        )
        .unwrap();
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.opset_import[0].version, OPSET);
        let g = back.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Sub",
                "Div",
                "Conv",
                "BatchNormalization",
                "Div",
                "Erf",
                "Add",
                "Mul",
                "Mul",
                "MaxPool",
                "Flatten",
                "Gemm",
                "Identity",
                "Div",
                "Softmax"
            ]
        );
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        for name in [
            "conv1.weight",
            "conv1.bias",
            "bn1.scale",
            "bn1.running_var",
            "dense1.weight",
        ] {
            assert!(inits.contains(&name), "{name} in {inits:?}");
        }
        let w = g
            .initializer
            .iter()
            .find(|t| t.name == "conv1.weight")
            .unwrap();
        assert_eq!(w.dims, [2, 1, 3, 3]);
        assert_eq!(w.raw_data.len(), 18 * 4);
        assert_eq!(g.input[0].name, INPUT);
    }

    #[test]
    fn views_are_concatenated_and_averaged() {
        let m = model("input 3 4 4\nflatten\ndense classes\n");
        let views = [
            View {
                dy: 0,
                dx: 0,
                flip: false,
                weight: 0.5,
            },
            View {
                dy: 1,
                dx: 1,
                flip: true,
                weight: 0.5,
            },
        ];
        let g = ModelProto::decode(export(&m, &views).unwrap().as_slice())
            .unwrap()
            .graph
            .unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops[2..],
            [
                "Identity",
                "Pad",
                "Slice",
                "Slice",
                "Concat",
                "Flatten",
                "Gemm",
                "Reshape",
                "Mul",
                "ReduceSum",
                "Reshape",
                "Identity",
                "Div",
                "Softmax"
            ]
        );
        let moved = [View {
            dy: 4,
            dx: 0,
            flip: false,
            weight: 1.0,
        }];
        let msg = export(&m, &moved).unwrap_err().to_string();
        assert!(msg.contains("beyond its 4×4 pixels"), "{msg}");
    }
}
