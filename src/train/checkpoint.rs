//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is a [`container`](crate::store::container) of kind `Checkpoint` holding:
//! - meta `model`: the model being trained (architecture, classes, normalisation, provenance);
//! - meta `config`: the run's settings ([`TrainConfig`]), so `--resume` needs no other flags;
//! - meta `state`: the cursor ([`TrainState`]): next epoch and batch, global step, best
//!   validation accuracy and the running sums of the current epoch;
//! - tensors: the model's parameters by name, then the optimizer's moments as
//!   `optim/<param>/<slot>`.
//!
//! Randomness needs no state of its own: shuffles, augmentation and dropout are functions of the
//! seed and the cursor (see [`crate::rng`]).

use crate::net::graph::Network;
use crate::net::loss::LossKind;
use crate::store::Model;
use crate::store::container::{self, Container, Kind, NamedTensor};
use crate::tensor::Tensor;
use crate::train::optim::{Optimizer, OptimizerConfig};
use crate::train::schedule::ScheduleKind;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    /// The architecture's name as given (preset or file) and its canonical text.
    pub arch_name: String,
    pub arch: String,
    pub epochs: u64,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub lr: f32,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f32,
    pub label_smoothing: f32,
    pub loss: LossKind,
    pub augment: crate::data::Augment,
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

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    model: &Model,
    config: &TrainConfig,
    state: &TrainState,
    opt: &Optimizer,
) -> Result<()> {
    let mut tensors = model.params.clone();
    for (name, slots) in &opt.state {
        for (i, t) in slots.iter().enumerate() {
            tensors.push(NamedTensor {
                name: format!("optim/{name}/{i}"),
                shape: t.shape().to_vec(),
                data: t.iter().copied().collect(),
            });
        }
    }
    let meta = serde_json::json!({
        "model": model.meta(),
        "config": config,
        "state": state,
        "optimizer_steps": opt.steps,
    });
    container::write(
        path,
        &Container {
            kind: Kind::Checkpoint,
            meta,
            tensors,
        },
    )
}

/// Reads a checkpoint: the model, settings, cursor and optimizer state.
pub fn load(path: &Path) -> Result<(Model, TrainConfig, TrainState, Optimizer)> {
    from_container(container::read(path, Kind::Checkpoint)?, path)
}

/// [`load`] on a container already read from `path` (named in errors).
pub fn from_container(
    c: Container,
    path: &Path,
) -> Result<(Model, TrainConfig, TrainState, Optimizer)> {
    let field = |k: &str| {
        c.meta
            .get(k)
            .cloned()
            .with_context(|| format!("{}: checkpoint lacks `{k}`", path.display()))
    };
    let config: TrainConfig = serde_json::from_value(field("config")?)
        .with_context(|| format!("{}: bad checkpoint settings", path.display()))?;
    let state: TrainState = serde_json::from_value(field("state")?)
        .with_context(|| format!("{}: bad checkpoint state", path.display()))?;
    let steps: u64 = serde_json::from_value(field("optimizer_steps")?)
        .with_context(|| format!("{}: bad optimizer step count", path.display()))?;
    let (params, optim): (Vec<_>, Vec<_>) = c
        .tensors
        .into_iter()
        .partition(|t| !t.name.starts_with("optim/"));
    let model = Model::from_parts(field("model")?, params)
        .with_context(|| format!("{}: bad model", path.display()))?;
    let mut opt = Optimizer::new(config.optimizer);
    opt.steps = steps;
    for t in optim {
        let rest = &t.name["optim/".len()..];
        let Some((name, slot)) = rest.rsplit_once('/') else {
            bail!("{}: bad optimizer tensor name `{}`", path.display(), t.name);
        };
        let slot: usize = slot
            .parse()
            .with_context(|| format!("{}: bad optimizer slot in `{}`", path.display(), t.name))?;
        let slots = opt.state.entry(name.to_string()).or_default();
        if slot != slots.len() || slot > 1 {
            bail!(
                "{}: optimizer slots of `{name}` out of order",
                path.display()
            );
        }
        slots.push(
            Tensor::from_shape_vec(t.shape, t.data)
                .with_context(|| format!("{}: bad shape of `{}`", path.display(), t.name))?,
        );
    }
    Ok((model, config, state, opt))
}

/// Checks that the optimizer state matches the network's parameters (names and shapes).
pub fn check_optimizer(path: &Path, net: &mut Network, opt: &Optimizer) -> Result<()> {
    let mut problem = None;
    net.visit_params(&mut |name, p| {
        if let Some(slots) = opt.state.get(name)
            && slots.iter().any(|s| s.shape() != p.value.shape())
        {
            problem.get_or_insert(format!("optimizer state of `{name}` has the wrong shape"));
        }
    });
    match problem {
        Some(p) => bail!("{}: {p}", path.display()),
        None => Ok(()),
    }
}
