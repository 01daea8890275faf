//! The architecture text format and the built-in presets.
//!
//! One layer a line, in order, after an `input C H W` line. `#` starts a comment. Options are
//! `key=value` after the positional arguments. Example (the `mnist-ref` preset):
//!
//! ```text
//! input 1 28 28
//! conv 32 3            # conv OUT KERNEL [stride=1] [pad=0] [bias=yes|no]; KERNEL may be 3x5
//! relu
//! conv 64 3
//! relu
//! maxpool 2            # maxpool K [stride=K]; likewise avgpool
//! dropout 0.25
//! flatten
//! dense 128            # dense OUT [bias=yes|no]; OUT may be `classes`
//! relu
//! dropout 0.5
//! dense classes
//! ```
//!
//! Other layers: `batchnorm [momentum=M] [eps=E] [scale=yes|no]`, `gelu`, `scale X` (a
//! constant factor), `global_avgpool`, `avgpool K [stride=S]`, and `whiten K [eps=E] [images=N]
//! [bias_epochs=E]` (a first layer fitted to the data's patches). Convolutions and dense layers
//! take `init=he|uniform|dirac` (how the weight is drawn) and every layer with parameters
//! `lr_scale=X` (a learning-rate multiplier). Layers are named by kind and position among that
//! kind (`conv1`, `conv2`, `bn1`, `dense1`), and parameters by layer (`conv1.weight`,
//! `bn1.running_mean`).

use crate::layers::WeightInit;
use crate::layers::batchnorm::BatchNormConfig;
use crate::layers::conv::Conv2dConfig;
use crate::layers::whiten::WhitenConfig;

use std::fmt;

/// What a dense layer's width is: a number, or the dataset's class count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Fixed(usize),
    Classes,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    Conv(Conv2dConfig),
    MaxPool {
        k: usize,
        stride: usize,
    },
    AvgPool {
        k: usize,
        stride: usize,
    },
    GlobalAvgPool,
    Dense {
        out: Width,
        bias: bool,
        init: WeightInit,
        lr_scale: f32,
    },
    Relu,
    Gelu,
    Dropout(f32),
    BatchNorm(BatchNormConfig),
    Flatten,
    Scale(f32),
    Whiten(WhitenConfig),
}

impl LayerSpec {
    /// The largest of the layer's kernel sides, stride and padding, with its name (`("padding",
    /// 2)`), or `("", 0)` for a layer without a window: what the build limits bound.
    pub fn largest_window(&self) -> (&'static str, usize) {
        let sides = match self {
            LayerSpec::Conv(c) => vec![
                ("kernel height", c.kernel.0),
                ("kernel width", c.kernel.1),
                ("stride", c.stride),
                ("padding", c.pad),
            ],
            LayerSpec::MaxPool { k, stride } | LayerSpec::AvgPool { k, stride } => {
                vec![("window", *k), ("stride", *stride)]
            }
            LayerSpec::Whiten(w) => vec![("window", w.k)],
            _ => vec![],
        };
        sides
            .into_iter()
            .fold(("", 0), |best, s| if s.1 > best.1 { s } else { best })
    }

    /// The prefix of the layer's name (`conv` → `conv1`).
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv(_) => "conv",
            LayerSpec::MaxPool { .. } => "maxpool",
            LayerSpec::AvgPool { .. } => "avgpool",
            LayerSpec::GlobalAvgPool => "gap",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Relu => "relu",
            LayerSpec::Gelu => "gelu",
            LayerSpec::Dropout(_) => "dropout",
            LayerSpec::BatchNorm(_) => "bn",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Scale(_) => "scale",
            LayerSpec::Whiten(_) => "whiten",
        }
    }
}

impl fmt::Display for LayerSpec {
    /// The layer as a line of the text format (defaults left out).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LayerSpec::Conv(c) => {
                write!(f, "conv {} ", c.out_channels)?;
                if c.kernel.0 == c.kernel.1 {
                    write!(f, "{}", c.kernel.0)?;
                } else {
                    write!(f, "{}x{}", c.kernel.0, c.kernel.1)?;
                }
                if c.stride != 1 {
                    write!(f, " stride={}", c.stride)?;
                }
                if c.pad != 0 {
                    write!(f, " pad={}", c.pad)?;
                }
                if !c.bias {
                    write!(f, " bias=no")?;
                }
                write_init(f, c.init, c.lr_scale)
            }
            LayerSpec::MaxPool { k, stride } | LayerSpec::AvgPool { k, stride } => {
                let name = if matches!(self, LayerSpec::MaxPool { .. }) {
                    "maxpool"
                } else {
                    "avgpool"
                };
                write!(f, "{name} {k}")?;
                if stride != k {
                    write!(f, " stride={stride}")?;
                }
                Ok(())
            }
            LayerSpec::GlobalAvgPool => write!(f, "global_avgpool"),
            LayerSpec::Dense {
                out,
                bias,
                init,
                lr_scale,
            } => {
                match out {
                    Width::Fixed(n) => write!(f, "dense {n}")?,
                    Width::Classes => write!(f, "dense classes")?,
                }
                if !bias {
                    write!(f, " bias=no")?;
                }
                write_init(f, *init, *lr_scale)
            }
            LayerSpec::Relu => write!(f, "relu"),
            LayerSpec::Gelu => write!(f, "gelu"),
            LayerSpec::Dropout(p) => write!(f, "dropout {p}"),
            LayerSpec::BatchNorm(b) => {
                let d = BatchNormConfig::default();
                write!(f, "batchnorm")?;
                if b.momentum != d.momentum {
                    write!(f, " momentum={}", real_text(b.momentum))?;
                }
                if b.eps != d.eps {
                    write!(f, " eps={}", real_text(b.eps))?;
                }
                if !b.scale {
                    write!(f, " scale=no")?;
                }
                write_init(f, WeightInit::default(), b.lr_scale)
            }
            LayerSpec::Flatten => write!(f, "flatten"),
            LayerSpec::Scale(s) => write!(f, "scale {}", real_text(*s)),
            LayerSpec::Whiten(w) => {
                let d = WhitenConfig::default();
                write!(f, "whiten {}", w.k)?;
                if w.eps != d.eps {
                    write!(f, " eps={}", real_text(w.eps))?;
                }
                if w.images != d.images {
                    write!(f, " images={}", w.images)?;
                }
                if let Some(e) = w.bias_epochs {
                    write!(f, " bias_epochs={e}")?;
                }
                Ok(())
            }
        }
    }
}

/// `x` in the shorter of plain and exponent notation (`0.4`, `1e-12`); both read back exactly.
fn real_text(x: f32) -> String {
    let (plain, exp) = (x.to_string(), format!("{x:e}"));
    if exp.len() < plain.len() { exp } else { plain }
}

/// The ` init=` and ` lr_scale=` options, when they are not the defaults.
fn write_init(f: &mut fmt::Formatter, init: WeightInit, lr_scale: f32) -> fmt::Result {
    match init {
        WeightInit::Auto => {}
        WeightInit::He => write!(f, " init=he")?,
        WeightInit::Uniform => write!(f, " init=uniform")?,
        WeightInit::Dirac => write!(f, " init=dirac")?,
    }
    if lr_scale != 1.0 {
        write!(f, " lr_scale={}", real_text(lr_scale))?;
    }
    Ok(())
}

/// A parsed architecture: the input shape of one image and the layers with their source lines.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchSpec {
    /// `C×H×W` of one input image.
    pub input: [usize; 3],
    /// Each layer with the line it came from (1-based), for error messages.
    pub layers: Vec<(usize, LayerSpec)>,
}

impl fmt::Display for ArchSpec {
    /// The canonical text of the architecture; parsing it gives back the same spec.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let [c, h, w] = self.input;
        writeln!(f, "input {c} {h} {w}")?;
        for (_, l) in &self.layers {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// An error in an architecture file, with its line.
#[derive(Debug, PartialEq)]
pub struct SpecError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what} must be a number, got `{s}`"))
}

/// A number, or a fraction `A/B` of two (`1/9`).
fn real(s: &str, what: &str) -> Result<f32, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => number::<f64>(a, what)? / number::<f64>(b, what)?,
        None => number::<f64>(s, what)?,
    };
    if v.is_finite() {
        Ok(v as f32)
    } else {
        Err(format!("{what} must be a finite number, got `{s}`"))
    }
}

fn positive(s: &str, what: &str) -> Result<usize, String> {
    match number::<usize>(s, what)? {
        0 => Err(format!("{what} must be at least 1, got 0")),
        n => Ok(n),
    }
}

/// Parses the text format; every error names its line.
pub fn parse(text: &str) -> Result<ArchSpec, SpecError> {
    let mut input = None;
    let mut layers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| SpecError { line, message };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let op = words.next().unwrap_or_default();
        let (mut args, mut opts) = (Vec::new(), Vec::new());
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => opts.push((k, v)),
                None => args.push(w),
            }
        }
        if op == "input" {
            if input.is_some() {
                return Err(err("`input` given twice".into()));
            }
            if !layers.is_empty() {
                return Err(err("`input` must come before the first layer".into()));
            }
            let [c, h, w] = args[..] else {
                return Err(err(format!(
                    "`input C H W` takes three sizes, got {}",
                    args.len()
                )));
            };
            let dims = [positive(c, "C"), positive(h, "H"), positive(w, "W")];
            let dims: Result<Vec<usize>, String> = dims.into_iter().collect();
            let dims = dims.map_err(err)?;
            if !opts.is_empty() {
                return Err(err("`input` takes no options".into()));
            }
            input = Some([dims[0], dims[1], dims[2]]);
            continue;
        }
        let layer = parse_layer(op, &args, &opts).map_err(err)?;
        if input.is_none() {
            return Err(err(
                "the file must start with `input C H W` (e.g. `input 1 28 28`)".into(),
            ));
        }
        layers.push((line, layer));
    }
    let Some(input) = input else {
        return Err(SpecError {
            line: 1,
            message: "no `input C H W` line".into(),
        });
    };
    if layers.is_empty() {
        return Err(SpecError {
            line: text.lines().count().max(1),
            message: "no layers".into(),
        });
    }
    Ok(ArchSpec { input, layers })
}

fn parse_layer(op: &str, args: &[&str], opts: &[(&str, &str)]) -> Result<LayerSpec, String> {
    let want_args = |lo: usize, hi: usize, usage: &str| {
        if args.len() < lo || args.len() > hi {
            Err(format!("usage: {usage}"))
        } else {
            Ok(())
        }
    };
    let mut allowed: &[&str] = &[];
    let flag = |name: &str, default: bool| -> Result<bool, String> {
        match opts.iter().find(|o| o.0 == name).map(|o| o.1) {
            None => Ok(default),
            Some("yes" | "true") => Ok(true),
            Some("no" | "false") => Ok(false),
            Some(v) => Err(format!("{name} must be yes or no, got `{v}`")),
        }
    };
    let opt_num = |name: &str, default: usize| -> Result<usize, String> {
        match opts.iter().find(|o| o.0 == name) {
            None => Ok(default),
            Some(o) if name == "pad" => number(o.1, name),
            Some(o) => positive(o.1, name),
        }
    };
    let opt_real = |name: &str, default: f32| -> Result<f32, String> {
        opts.iter()
            .find(|o| o.0 == name)
            .map_or(Ok(default), |o| real(o.1, name))
    };
    let lr_scale = || -> Result<f32, String> {
        match opt_real("lr_scale", 1.0)? {
            v if v > 0.0 => Ok(v),
            v => Err(format!("lr_scale must be positive, got {v}")),
        }
    };
    let init = |dirac: bool| -> Result<WeightInit, String> {
        match opts.iter().find(|o| o.0 == "init").map(|o| o.1) {
            None => Ok(WeightInit::Auto),
            Some("he") => Ok(WeightInit::He),
            Some("uniform") => Ok(WeightInit::Uniform),
            Some("dirac") if dirac => Ok(WeightInit::Dirac),
            Some(v) => Err(format!(
                "init must be he, uniform{}, got `{v}`",
                if dirac { " or dirac" } else { "" }
            )),
        }
    };
    let spec = match op {
        "conv" => {
            want_args(
                2,
                2,
                "conv OUT KERNEL [stride=S] [pad=P] [bias=yes|no] [init=he|uniform|dirac] [lr_scale=X]",
            )?;
            allowed = &["stride", "pad", "bias", "init", "lr_scale"];
            let kernel = match args[1].split_once(['x', 'X']) {
                Some((a, b)) => (positive(a, "kernel height")?, positive(b, "kernel width")?),
                None => {
                    let k = positive(args[1], "KERNEL")?;
                    (k, k)
                }
            };
            LayerSpec::Conv(Conv2dConfig {
                out_channels: positive(args[0], "OUT")?,
                kernel,
                stride: opt_num("stride", 1)?,
                pad: opt_num("pad", 0)?,
                bias: flag("bias", true)?,
                init: init(true)?,
                lr_scale: lr_scale()?,
            })
        }
        "maxpool" | "avgpool" => {
            want_args(1, 1, &format!("{op} K [stride=S]"))?;
            allowed = &["stride"];
            let k = positive(args[0], "K")?;
            let stride = opt_num("stride", k)?;
            if op == "maxpool" {
                LayerSpec::MaxPool { k, stride }
            } else {
                LayerSpec::AvgPool { k, stride }
            }
        }
        "dense" => {
            want_args(
                1,
                1,
                "dense OUT|classes [bias=yes|no] [init=he|uniform] [lr_scale=X]",
            )?;
            allowed = &["bias", "init", "lr_scale"];
            let out = if args[0] == "classes" {
                Width::Classes
            } else {
                Width::Fixed(positive(args[0], "OUT")?)
            };
            LayerSpec::Dense {
                out,
                bias: flag("bias", true)?,
                init: init(false)?,
                lr_scale: lr_scale()?,
            }
        }
        "dropout" => {
            want_args(1, 1, "dropout P")?;
            let p: f32 = number(args[0], "P")?;
            if !(0.0..1.0).contains(&p) {
                return Err(format!("dropout probability must be in [0, 1), got {p}"));
            }
            LayerSpec::Dropout(p)
        }
        "batchnorm" => {
            want_args(
                0,
                0,
                "batchnorm [momentum=M] [eps=E] [scale=yes|no] [lr_scale=X]",
            )?;
            allowed = &["momentum", "eps", "scale", "lr_scale"];
            let d = BatchNormConfig::default();
            let momentum = opt_real("momentum", d.momentum)?;
            let eps = opt_real("eps", d.eps)?;
            if !((0.0..=1.0).contains(&momentum) && eps > 0.0) {
                return Err(format!(
                    "batchnorm needs momentum in [0, 1] and eps > 0, got {momentum} and {eps}"
                ));
            }
            LayerSpec::BatchNorm(BatchNormConfig {
                momentum,
                eps,
                scale: flag("scale", true)?,
                lr_scale: lr_scale()?,
            })
        }
        "scale" => {
            want_args(1, 1, "scale X")?;
            match real(args[0], "X")? {
                0.0 => return Err("scale X must not be 0".into()),
                x => LayerSpec::Scale(x),
            }
        }
        "whiten" => {
            want_args(1, 1, "whiten K [eps=E] [images=N] [bias_epochs=E]")?;
            allowed = &["eps", "images", "bias_epochs"];
            let d = WhitenConfig::default();
            let eps = opt_real("eps", d.eps)?;
            if eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(format!("whiten needs eps > 0, got {eps}"));
            }
            let bias_epochs = match opts.iter().find(|o| o.0 == "bias_epochs") {
                None => None,
                Some(o) => Some(positive(o.1, "bias_epochs")? as u64),
            };
            LayerSpec::Whiten(WhitenConfig {
                k: positive(args[0], "K")?,
                eps,
                images: opt_num("images", d.images)?,
                bias_epochs,
            })
        }
        "relu" | "gelu" | "flatten" | "global_avgpool" => {
            want_args(0, 0, &format!("{op} (no arguments)"))?;
            match op {
                "relu" => LayerSpec::Relu,
                "gelu" => LayerSpec::Gelu,
                "flatten" => LayerSpec::Flatten,
                _ => LayerSpec::GlobalAvgPool,
            }
        }
        _ => {
            return Err(format!(
                "unknown layer `{op}`; known: input, conv, maxpool, avgpool, global_avgpool, dense, relu, \
                 gelu, dropout, batchnorm, flatten, scale, whiten"
            ));
        }
    };
    if let Some((k, _)) = opts.iter().find(|o| !allowed.contains(&o.0)) {
        return Err(format!("`{op}` has no option `{k}`"));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_print_back_to_the_same_spec() {
        for (name, _, text) in crate::net::presets::PRESETS {
            let spec = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                parse(&spec.to_string())
                    .unwrap()
                    .layers
                    .iter()
                    .map(|l| &l.1)
                    .collect::<Vec<_>>(),
                spec.layers.iter().map(|l| &l.1).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn options_and_kernels_are_read() {
        let s = parse("input 3 9 7\nconv 4 3x5 stride=2 pad=1 bias=no # comment\navgpool 2 stride=1\ndense classes\n").unwrap();
        assert_eq!(s.input, [3, 9, 7]);
        assert_eq!(
            s.layers[0],
            (
                2,
                LayerSpec::Conv(Conv2dConfig {
                    out_channels: 4,
                    kernel: (3, 5),
                    stride: 2,
                    pad: 1,
                    bias: false,
                    ..Conv2dConfig::default()
                })
            )
        );
        assert_eq!(s.layers[1].1, LayerSpec::AvgPool { k: 2, stride: 1 });
        assert_eq!(
            s.layers[2].1,
            LayerSpec::Dense {
                out: Width::Classes,
                bias: true,
                init: WeightInit::Auto,
                lr_scale: 1.0
            }
        );
    }

    /// The options of the fast CIFAR recipe's layers: read, printed back (defaults left out),
    /// and read again to the same spec.
    #[test]
    fn new_layer_options_round_trip() {
        let text = "input 3 32 32\nwhiten 2 eps=0.001 bias_epochs=3\ngelu\n\
                    conv 64 3 pad=1 bias=no init=dirac\nmaxpool 2\n\
                    batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=64\nmaxpool 15\nflatten\n\
                    dense classes bias=no init=uniform\nscale 1/9\n";
        let s = parse(text).unwrap();
        let printed = s.to_string();
        assert!(
            printed.contains("whiten 2 eps=1e-3 bias_epochs=3\n"),
            "{printed}"
        );
        assert!(
            printed.contains("conv 64 3 pad=1 bias=no init=dirac\n"),
            "{printed}"
        );
        assert!(
            printed.contains("batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=64\n"),
            "{printed}"
        );
        assert!(
            printed.contains("dense classes bias=no init=uniform\nscale 0.11111111\n"),
            "{printed}"
        );
        assert_eq!(
            parse(&printed)
                .unwrap()
                .layers
                .iter()
                .map(|l| &l.1)
                .collect::<Vec<_>>(),
            s.layers.iter().map(|l| &l.1).collect::<Vec<_>>()
        );
        for (bad, msg) in [
            (
                "conv 8 3 init=dirac lr_scale=0",
                "lr_scale must be positive",
            ),
            (
                "dense 8 init=dirac",
                "init must be he, uniform, got `dirac`",
            ),
            ("batchnorm momentum=1.5", "momentum in [0, 1]"),
            ("scale 0", "must not be 0"),
            ("scale 1/0", "finite"),
            ("whiten 2 eps=0", "eps > 0"),
        ] {
            let e = parse(&format!("input 3 8 8\n{bad}\n")).unwrap_err();
            assert!(e.line == 2 && e.message.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn mistakes_name_their_line() {
        let cases = [
            ("input 1 28 28\nconv 32\n", 2, "usage: conv"),
            (
                "input 1 28 28\n\nrelu\nconvv 3 3\n",
                4,
                "unknown layer `convv`",
            ),
            ("input 1 28 28\nconv 8 3 strid=2\n", 2, "no option `strid`"),
            ("input 1 28 28\ndropout 1.5\n", 2, "[0, 1)"),
            ("relu\n", 1, "must start with `input"),
            ("input 1 x 28\n", 1, "H must be a number"),
            ("input 1 28 28\nmaxpool 0\n", 2, "at least 1"),
            ("input 1 28 28\nconv 8 3 bias=maybe\n", 2, "yes or no"),
            ("# nothing\n", 1, "no `input"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(msg), "{text:?}: {e}");
        }
    }
}
