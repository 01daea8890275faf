//! Recipes: the settings a network trains with where the command line says nothing.
//!
//! A preset may bring its own recipe, tuned with it (`cifar-fast`: airbench94's, Jordan 2024);
//! every other network gets the general defaults, which depend on the data and the
//! architecture. The command line's flags override any field.

use super::lookahead::LookaheadConfig;
use super::optim::OptimizerKind;
use super::schedule::ScheduleKind;
use crate::data::{Augment, DatasetKind};
use crate::infer::tta::Tta;
use crate::layers::WeightInit;
use crate::net::spec::{ArchSpec, LayerSpec};

/// Every default-able setting of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub optimizer: OptimizerKind,
    /// How weights are drawn where the architecture does not say.
    pub init: WeightInit,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub batch_size: usize,
    pub epochs: u64,
    pub schedule: ScheduleKind,
    /// Linear warm-up, in epochs (schedules without their own).
    pub warmup_epochs: f32,
    pub label_smoothing: f32,
    pub augment: Augment,
    /// Fraction of the training set held out for validation; `None`: the general default (10%
    /// unless the dataset has its own validation split).
    pub val_split: Option<f32>,
    /// Keep the epoch with the best validation accuracy (else the last).
    pub keep_best: bool,
    pub lookahead: Option<LookaheadConfig>,
    /// The test-time augmentation eval and predict apply by default.
    pub tta: Tta,
}

impl Recipe {
    /// The learning rate for batches of `batch` images: the recipe's, scaled from its own batch
    /// size linearly for SGD (Goyal et al., "Accurate, Large Minibatch SGD", 2017: the step's
    /// gradient noise falls as the batch grows) and by the square root for Adam and AdamW, whose
    /// steps are normalised by the gradient's scale already.
    pub fn lr_for_batch(&self, batch: usize) -> f32 {
        let ratio = batch as f64 / self.batch_size as f64;
        let scale = match self.optimizer {
            OptimizerKind::Sgd => ratio,
            OptimizerKind::Adam | OptimizerKind::AdamW => ratio.sqrt(),
        };
        (self.lr as f64 * scale) as f32
    }

    /// The recipe for `arch` (the preset or file named `arch_name`) on a dataset of `kind`
    /// (photographs when `colour`), with the optimizer the command line chose, if it did.
    pub fn for_run(
        arch_name: &str,
        arch: &ArchSpec,
        kind: &DatasetKind,
        colour: bool,
        optimizer: Option<OptimizerKind>,
    ) -> Recipe {
        match arch_name {
            "cifar-fast" if optimizer.is_none_or(|o| o == OptimizerKind::Sgd) => cifar_fast(),
            _ => general(arch, kind, colour, optimizer.unwrap_or(OptimizerKind::Sgd)),
        }
    }
}

/// airbench94's recipe (Jordan 2024, `legacy/airbench94.py` of KellerJordan/cifar10-airbench),
/// in the form of a mean loss: its summed loss at learning rate `11.5 / (1024 · 7.667)` per
/// image is a mean loss at 1.5; its decay per step, `lr·wd = 0.0153 / 7.667`, is 1.5 × 1.3304e-3
/// (and the same for batch norm's shifts, whose 64× rate the architecture's `lr_scale` gives).
/// Ten epochs of 49 batches of 1024 (theirs: 9.9 epochs of 48, the last partial batch dropped).
fn cifar_fast() -> Recipe {
    Recipe {
        optimizer: OptimizerKind::Sgd,
        init: WeightInit::Uniform,
        lr: 1.5,
        momentum: 0.85,
        nesterov: true,
        weight_decay: 0.0153 / 11.5,
        batch_size: 1024,
        epochs: 10,
        schedule: ScheduleKind::Linear {
            peak: 0.23,
            start: 0.2,
            end: 0.07,
        },
        warmup_epochs: 0.0,
        label_smoothing: 0.2,
        augment: Augment {
            pad_crop: 2,
            reflect: true,
            flip: true,
            alternate_flip: true,
            shift: 0,
        },
        val_split: Some(0.0),
        keep_best: false,
        lookahead: Some(LookaheadConfig::default()),
        tta: Tta::FlipShift,
    }
}

/// The general defaults: SGD with Nesterov momentum 0.9, weight decay 5e-4 and a cosine
/// schedule; learning rate 0.05 with batch norm, 0.01 without (0.001 for Adam and AdamW);
/// batch 64 for digits and 128 for colour photographs; 10 epochs (30 for photographs);
/// augmentation that suits the data.
fn general(arch: &ArchSpec, kind: &DatasetKind, colour: bool, optimizer: OptimizerKind) -> Recipe {
    let sgd = optimizer == OptimizerKind::Sgd;
    // Batch norm tolerates (and profits from) a larger step; plain nets diverge with it early on.
    let has_bn = arch
        .layers
        .iter()
        .any(|l| matches!(l.1, LayerSpec::BatchNorm(_)));
    Recipe {
        optimizer,
        init: WeightInit::He,
        lr: match (sgd, has_bn) {
            (true, true) => 0.05,
            (true, false) => 0.01,
            (false, _) => 1e-3,
        },
        momentum: if sgd { 0.9 } else { 0.0 },
        nesterov: sgd,
        weight_decay: if optimizer == OptimizerKind::AdamW {
            0.01
        } else {
            5e-4
        },
        batch_size: if colour { 128 } else { 64 },
        epochs: if colour { 30 } else { 10 },
        schedule: ScheduleKind::Cosine,
        warmup_epochs: 0.0,
        label_smoothing: 0.0,
        augment: Augment::for_dataset(kind, arch.input[0]),
        val_split: None,
        keep_best: true,
        lookahead: None,
        tta: Tta::None,
    }
}

/// The network chosen for an image folder without `--arch`, and why.
pub struct ArchChoice {
    /// A preset's name, or `auto-photo-S` for a generated network.
    pub name: String,
    /// The architecture text.
    pub text: String,
    pub reason: String,
}

/// A network that fits a folder's images: small grey ones (digits, scans) get a batch-normalised
/// 28×28 digit net, small colour ones the 32×32 CIFAR net, larger ones a net of strided stages
/// at 64, 96 or 128 pixels (grey or colour as the images are).
pub fn arch_for_folder(s: &crate::data::folder::Survey) -> ArchChoice {
    let (h, w) = s.median_size;
    let side = h.max(w);
    let (kind, channels) = if s.grey { ("grey", 1) } else { ("colour", 3) };
    let seen = format!("{kind} images, median {h}×{w} px");
    let preset = |name: &str, why: &str| ArchChoice {
        name: name.to_string(),
        text: crate::net::presets::preset(name)
            .expect("a built-in preset")
            .to_string(),
        reason: format!("{seen}: {why}"),
    };
    match (s.grey, side) {
        (true, 0..=40) => preset("mnist-fast", "a 28×28 grey digit net"),
        (false, 0..=48) => preset("cifar-ref", "a 32×32 colour net"),
        _ => {
            let size = match side {
                0..=80 => 64,
                81..=112 => 96,
                _ => 128,
            };
            ArchChoice {
                name: format!("auto-photo-{size}"),
                text: strided_net(channels, size),
                reason: format!("{seen}: a {kind} net of strided stages at {size}×{size}"),
            }
        }
    }
}

/// Four stages that halve the image with a stride-2 convolution (32, 64, 128, 256 channels),
/// each but the last followed by a second convolution, batch norm and ReLU after every one, then
/// global average pooling and the classifier.
fn strided_net(channels: usize, size: usize) -> String {
    let mut t = format!(
        "# Chosen for an image folder: {channels}×{size}×{size}, four strided stages.\n\
         input {channels} {size} {size}\n"
    );
    for (i, width) in [32, 64, 128, 256].into_iter().enumerate() {
        t += &format!("conv {width} 3 stride=2 pad=1 bias=no\nbatchnorm\nrelu\n");
        if i < 3 {
            t += &format!("conv {width} 3 pad=1 bias=no\nbatchnorm\nrelu\n");
        }
    }
    t + "global_avgpool\ndense classes\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::Survey;
    use crate::net::{BuildOptions, Network};

    fn survey(grey: bool, h: u32, w: u32) -> Survey {
        Survey {
            classes: 5,
            images: 1000,
            median_size: (h, w),
            grey,
        }
    }

    /// Small grey scans get the digit net, small photos the CIFAR net, larger images a strided
    /// net at a size near theirs; every choice builds.
    #[test]
    fn the_network_fits_the_images() {
        let cases = [
            (survey(true, 8, 8), "mnist-fast", [1, 28, 28]),
            (survey(false, 32, 32), "cifar-ref", [3, 32, 32]),
            (survey(false, 64, 80), "auto-photo-64", [3, 64, 64]),
            (survey(true, 100, 90), "auto-photo-96", [1, 96, 96]),
            (survey(false, 375, 500), "auto-photo-128", [3, 128, 128]),
        ];
        for (s, name, input) in cases {
            let c = arch_for_folder(&s);
            assert_eq!(c.name, name);
            let spec = crate::net::spec::parse(&c.text).unwrap();
            assert_eq!(spec.input, input);
            assert!(
                c.reason.contains(if s.grey { "grey" } else { "colour" }),
                "{}",
                c.reason
            );
            Network::build(&spec, 7, None, &BuildOptions::default()).unwrap();
        }
    }
}
