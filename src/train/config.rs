//! A training run's settings and its cursor: what a checkpoint stores so that `--resume` needs
//! no other flag and continues exactly where the run stopped.

use super::lookahead::LookaheadConfig;
use super::optim::OptimizerConfig;
use super::schedule::ScheduleKind;
use crate::data::Augment;
use crate::infer::tta::Tta;
use crate::layers::WeightInit;
use crate::net::loss::LossKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every setting of a run, resolved (no defaults left to apply).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    /// The architecture's name as given (preset or file) and its canonical text.
    pub arch_name: String,
    pub arch: String,
    /// Why this architecture, when cnn chose it (no `--arch`).
    #[serde(default)]
    pub arch_reason: Option<String>,
    pub epochs: u64,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub lr: f32,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f32,
    pub label_smoothing: f32,
    pub loss: LossKind,
    pub augment: Augment,
    /// Augmentation is dropped before training when the run plans fewer steps than this (0:
    /// kept); the decision is written back (0) so that a resumed run keeps it.
    #[serde(default)]
    pub augment_from_steps: u64,
    /// The batch halves (down to 16) before training until an epoch has at least this many
    /// steps (0: kept), the learning rate scaled with it by `lr_batch_exponent` unless `--lr`
    /// set it; written back (0) once decided.
    #[serde(default)]
    pub min_epoch_steps: u64,
    #[serde(default)]
    pub lr_batch_exponent: Option<f64>,
    pub val_split: f32,
    pub seed: u64,
    pub out: PathBuf,
    pub log: Option<PathBuf>,
    pub keep_best: bool,
    pub skip_bad: bool,
    /// With `--plots`: the folder that receives `loss.png` and `accuracy.png` after every epoch.
    #[serde(default)]
    pub plots: Option<PathBuf>,
    /// With `--time-budget`: the wall-clock seconds the whole run may take; `epochs` is then
    /// re-planned as training goes so that the schedule ends inside the budget.
    #[serde(default)]
    pub time_budget_secs: Option<f64>,
    /// The most epochs a time budget may plan (`--epochs`).
    #[serde(default)]
    pub max_epochs: u64,
    /// Lookahead toward a slow copy of the weights, which becomes the final model.
    #[serde(default)]
    pub lookahead: Option<LookaheadConfig>,
    /// How weights are drawn where the architecture does not say (`Auto` in an older
    /// checkpoint: He's).
    #[serde(default)]
    pub init: WeightInit,
    /// The test-time augmentation eval and predict apply to the model by default.
    #[serde(default)]
    pub tta: Tta,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// The next epoch to run (0-based) and the next batch within it.
    pub epoch: u64,
    pub batch: u64,
    /// Optimizer steps taken so far.
    pub step: u64,
    pub best_val_accuracy: Option<f64>,
    /// Running sums of the current epoch: loss × images, correct, images.
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    /// Wall-clock seconds spent training so far, across resumes.
    pub seconds: f64,
    /// One record per finished epoch, for the training curves (kept across resumes).
    #[serde(default)]
    pub history: Vec<EpochRecord>,
    /// The loss watch that stops a diverging run (see `train::diverge`).
    #[serde(default)]
    pub watch: super::diverge::LossWatch,
}

/// The figures of one finished epoch (the same as a line of the CSV log).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u64,
    /// Running mean over the epoch's batches, in training mode (augmentation, dropout).
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// `None` without a validation set.
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
}
