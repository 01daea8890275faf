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

use super::config::{TrainConfig, TrainState};
use super::optim::Optimizer;
use crate::net::graph::Network;
use crate::store::Model;
use crate::store::container::{self, Container, Kind, NamedTensor};
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};
use std::path::Path;

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
