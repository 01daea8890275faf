//! Recipes: the settings a network trains with where the command line says nothing.
//!
//! A preset may bring its own recipe, tuned with it (`cifar-fast`: airbench94's, Jordan 2024);
//! every other network gets the general defaults, which depend on the data and the
//! architecture. `--recipe` names another recipe for a run (a preset's for a network written
//! in a file, say), and the command line's flags override any field.

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
    /// Linear warm-up as a fraction of the planned epochs, at most one epoch (schedules without
    /// their own).
    pub warmup_fraction: f32,
    pub label_smoothing: f32,
    pub augment: Augment,
    /// Augmentation applies only to runs of at least this many planned steps (0: always): a
    /// short run has not yet fitted the images it sees, and random transforms only slow it.
    pub augment_from_steps: u64,
    /// The batch halves (down to 16) until an epoch has at least this many steps (0: fixed): a
    /// small dataset otherwise gets too few updates.
    pub min_epoch_steps: u64,
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
        scale_lr(self.lr, self.batch_size, batch, self.lr_batch_exponent())
    }

    /// The learning rate goes with the batch size to this power (see [`Recipe::lr_for_batch`]).
    pub fn lr_batch_exponent(&self) -> f64 {
        match self.optimizer {
            OptimizerKind::Sgd => 1.0,
            OptimizerKind::Adam | OptimizerKind::AdamW => 0.5,
        }
    }

    /// The recipe `name`d for `arch` on a dataset of `kind` (photographs when `colour`), with
    /// the optimizer the command line chose, if it did: a preset's own if `name` is one that
    /// brings a recipe, else the general defaults. (`name` is the network's, or `--recipe`'s.)
    pub fn for_run(
        name: &str,
        arch: &ArchSpec,
        kind: &DatasetKind,
        colour: bool,
        optimizer: Option<OptimizerKind>,
    ) -> Recipe {
        // The airbench recipes are SGD's; another optimizer gets the general defaults.
        let sgd = optimizer.is_none_or(|o| o == OptimizerKind::Sgd);
        match name {
            "cifar-fast" if sgd => airbench(11.5, 10),
            // airbench95: the same recipe at a lower rate for longer.
            "cifar-fast-wide" if sgd => airbench(10.0, 15),
            _ => general(arch, kind, colour, optimizer),
        }
    }
}

/// A learning rate tuned at batch `from`, for batch `to`: the batch ratio to `exponent`.
pub fn scale_lr(lr: f32, from: usize, to: usize, exponent: f64) -> f32 {
    (lr as f64 * (to as f64 / from as f64).powf(exponent)) as f32
}

/// airbench's recipe (Jordan 2024, `legacy/airbench94.py` and `legacy/airbench95.py` of
/// KellerJordan/cifar10-airbench) at its learning rate `lr_per_1024` (11.5 for airbench94, 10
/// for airbench95), in the form of a mean loss: its summed loss at learning rate
/// `lr_per_1024 / (1024 · 7.667)` per image is a mean loss at `lr_per_1024 / 7.667` (1.5 for
/// airbench94); its decay per step, `lr·wd = 0.0153 / 7.667`, is that rate times `0.0153 /
/// lr_per_1024` (and the same for batch norm's shifts, whose 64× rate the architecture's
/// `lr_scale` gives). airbench94 trains 9.9 epochs of 48 batches of 1024, the last partial batch
/// dropped: here 10 of 49.
fn airbench(lr_per_1024: f32, epochs: u64) -> Recipe {
    const MOMENTUM: f64 = 0.85;
    // Nesterov momentum takes steps 1 + 1/(1 − momentum) times the rate (airbench's
    // `kilostep_scale`).
    let step_scale = 1.0 + 1.0 / (1.0 - MOMENTUM);
    Recipe {
        optimizer: OptimizerKind::Sgd,
        init: WeightInit::Uniform,
        lr: (lr_per_1024 as f64 / step_scale) as f32,
        momentum: MOMENTUM as f32,
        nesterov: true,
        weight_decay: 0.0153 / lr_per_1024,
        batch_size: 1024,
        epochs,
        schedule: ScheduleKind::Linear {
            peak: 0.23,
            start: 0.2,
            end: 0.07,
        },
        warmup_fraction: 0.0,
        label_smoothing: 0.2,
        augment: Augment {
            pad_crop: 2,
            reflect: true,
            flip: true,
            alternate_flip: true,
            shift: 0,
        },
        augment_from_steps: 0,
        min_epoch_steps: 0,
        val_split: Some(0.0),
        keep_best: false,
        lookahead: Some(LookaheadConfig::default()),
        tta: Tta::FlipShift,
    }
}

/// The general defaults, chosen by measurement (docs/DEFAULTS.md has the runs):
/// - batch-normalised networks: SGD with Nesterov momentum 0.9 at lr 0.05, warmed up linearly
///   over the first 5% of the run (at most one epoch); networks without batch norm: Adam at
///   lr 2e-3, which reached higher accuracy than SGD at every learning rate tried in one and three
///   epochs of MNIST, where SGD's best rate depends on the network;
/// - PyTorch's default initialisation, U(±1/√fan_in): He's normal draws start a plain network
///   with larger activations, and measured worse with either optimizer;
/// - batch 64 for grey images, 128 for colour, the rate scaled with any other batch size;
/// - weight decay 5e-4 (0.01 decoupled for AdamW), a cosine schedule, 10 epochs (30 for colour);
/// - a smaller batch (down to 16) where an epoch would have fewer than 50 steps: 2,000 CIFAR-10
///   images for 5 epochs reach 50.2% at batch 32, 41.9% at 128; 2,700 digits for one, 90.4% at
///   32, 89.6% at 64;
/// - the dataset's augmentation, from 500 planned steps on: on the 2,700 images of
///   `mnist-mini` (43 steps) shifts cost 10 points of accuracy, on full MNIST (938) they add.
fn general(
    arch: &ArchSpec,
    kind: &DatasetKind,
    colour: bool,
    optimizer: Option<OptimizerKind>,
) -> Recipe {
    let has_bn = arch
        .layers
        .iter()
        .any(|l| matches!(l.1, LayerSpec::BatchNorm(_)));
    let optimizer = optimizer.unwrap_or(if has_bn {
        OptimizerKind::Sgd
    } else {
        OptimizerKind::Adam
    });
    let sgd = optimizer == OptimizerKind::Sgd;
    Recipe {
        optimizer,
        init: WeightInit::Uniform,
        lr: match (sgd, has_bn) {
            (true, true) => 0.05,
            (true, false) => 0.1,
            (false, _) => 2e-3,
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
        warmup_fraction: if sgd && has_bn { 0.05 } else { 0.0 },
        label_smoothing: 0.0,
        augment: Augment::for_dataset(kind, arch.input[0]),
        augment_from_steps: AUGMENT_FROM_STEPS,
        min_epoch_steps: MIN_EPOCH_STEPS,
        val_split: None,
        keep_best: true,
        lookahead: None,
        tta: Tta::None,
    }
}

/// Planned steps from which the general recipe augments (see [`general`]).
pub const AUGMENT_FROM_STEPS: u64 = 500;

/// Steps an epoch of the general recipe has at least, batch allowing (see [`general`]).
pub const MIN_EPOCH_STEPS: u64 = 50;

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

    fn recipe(arch: &str, optimizer: Option<OptimizerKind>) -> Recipe {
        let text = crate::net::presets::preset(arch).unwrap();
        let spec = crate::net::spec::parse(text).unwrap();
        Recipe::for_run(arch, &spec, &DatasetKind::Mnist, false, optimizer)
    }

    /// A plain network trains with Adam, a batch-normalised one with warmed-up Nesterov SGD;
    /// both start from PyTorch's initialisation and augment only runs long enough to profit.
    #[test]
    fn the_general_recipe_follows_batch_norm() {
        let plain = recipe("mnist-ref", None);
        assert_eq!(
            (plain.optimizer, plain.lr, plain.warmup_fraction),
            (OptimizerKind::Adam, 2e-3, 0.0)
        );
        let bn = recipe("mnist-fast", None);
        assert_eq!(
            (bn.optimizer, bn.lr, bn.nesterov, bn.warmup_fraction),
            (OptimizerKind::Sgd, 0.05, true, 0.05)
        );
        for r in [&plain, &bn] {
            assert_eq!(r.init, WeightInit::Uniform);
            assert_eq!(r.augment_from_steps, AUGMENT_FROM_STEPS);
            assert_eq!(r.augment.shift, 2);
        }
        // An explicit optimizer keeps the rest of the recipe and gets its own rate.
        let sgd = recipe("mnist-ref", Some(OptimizerKind::Sgd));
        assert_eq!((sgd.lr, sgd.momentum), (0.1, 0.9));
        assert_eq!(recipe("mnist-fast", Some(OptimizerKind::Adam)).lr, 2e-3);
        // Batch scaling: linear for SGD, square root for Adam.
        assert!((bn.lr_for_batch(128) - 0.1).abs() < 1e-7);
        assert!((plain.lr_for_batch(256) - 4e-3).abs() < 1e-7);
        // cifar-fast brings its own, augmentation always on.
        let fast = recipe("cifar-fast", None);
        assert_eq!((fast.batch_size, fast.augment_from_steps), (1024, 0));
        // airbench94's mean-loss rate and decay per step (see `airbench`).
        assert_eq!(fast.lr, 1.5);
        let step_scale = 1.0 + 1.0 / 0.15;
        assert!((fast.lr * fast.weight_decay - 0.0153 / step_scale).abs() < 1e-9);
        // airbench95: a lower rate, the same decay per step, 15 epochs.
        let wide = recipe("cifar-fast-wide", None);
        assert_eq!(
            (wide.epochs, wide.batch_size, wide.tta),
            (15, 1024, Tta::FlipShift)
        );
        assert!((wide.lr - 10.0 / step_scale).abs() < 1e-6, "{}", wide.lr);
        assert!((wide.lr * wide.weight_decay - fast.lr * fast.weight_decay).abs() < 1e-9);
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
