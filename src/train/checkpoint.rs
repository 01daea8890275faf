//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is a [`container`](crate::store::container) of kind `Checkpoint` holding:
//! - metadata: the model being trained, as a model file has it (architecture, classes,
//!   normalisation, provenance), and as JSON text beside it:
//! - `config`: the run's settings ([`TrainConfig`]), so `--resume` needs no other flags;
//! - `state`: the cursor ([`TrainState`]): next epoch and batch, global step, best
//!   validation accuracy and the running sums of the current epoch;
//! - `optimizer_steps`: the optimizer's step count;
//! - tensors: the model's parameters by name, then the optimizer's moments as
//!   `optim/<param>/<slot>`, and with lookahead its slow copy as `lookahead/<param>`.
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
use std::collections::BTreeMap;
use std::path::Path;

/// Metadata keys of a checkpoint's own, beside the model's.
const CONFIG_KEY: &str = "config";
const STATE_KEY: &str = "state";
const STEPS_KEY: &str = "optimizer_steps";

/// What a checkpoint holds.
pub struct Checkpoint {
    pub model: Model,
    pub config: TrainConfig,
    pub state: TrainState,
    pub opt: Optimizer,
    /// Lookahead's slow copy of every parameter and buffer, by name, when the run uses it.
    pub lookahead: Option<BTreeMap<String, Tensor>>,
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    model: &Model,
    config: &TrainConfig,
    state: &TrainState,
    opt: &Optimizer,
    lookahead: Option<&BTreeMap<String, Tensor>>,
) -> Result<()> {
    let mut tensors = model.params.clone();
    for (name, t) in lookahead.into_iter().flatten() {
        tensors.push(NamedTensor {
            name: format!("lookahead/{name}"),
            shape: t.shape().to_vec(),
            data: t.iter().copied().collect::<Vec<_>>().into(),
        });
    }
    for (name, slots) in &opt.state {
        for (i, t) in slots.iter().enumerate() {
            tensors.push(NamedTensor {
                name: format!("optim/{name}/{i}"),
                shape: t.shape().to_vec(),
                data: t.iter().copied().collect::<Vec<_>>().into(),
            });
        }
    }
    let mut meta = model.meta();
    let json = |v: serde_json::Result<String>| v.context("cannot encode the checkpoint's state");
    meta.insert(CONFIG_KEY.into(), json(serde_json::to_string(config))?);
    meta.insert(STATE_KEY.into(), json(serde_json::to_string(state))?);
    meta.insert(STEPS_KEY.into(), opt.steps.to_string());
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
pub fn load(path: &Path) -> Result<Checkpoint> {
    from_container(container::read(path, Kind::Checkpoint)?, path)
}

/// [`load`] on a container already read from `path` (named in errors).
pub fn from_container(c: Container, path: &Path) -> Result<Checkpoint> {
    let field = |k: &str| {
        c.meta
            .get(k)
            .with_context(|| format!("{}: checkpoint lacks `{k}`", path.display()))
    };
    let config: TrainConfig = serde_json::from_str(field(CONFIG_KEY)?)
        .with_context(|| format!("{}: bad checkpoint settings", path.display()))?;
    let state: TrainState = serde_json::from_str(field(STATE_KEY)?)
        .with_context(|| format!("{}: bad checkpoint state", path.display()))?;
    let steps: u64 = serde_json::from_str(field(STEPS_KEY)?)
        .with_context(|| format!("{}: bad optimizer step count", path.display()))?;
    let (slow, rest): (Vec<_>, Vec<_>) = c
        .tensors
        .into_iter()
        .partition(|t| t.name.starts_with("lookahead/"));
    let (params, optim): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|t| !t.name.starts_with("optim/"));
    let model = Model::from_parts(c.meta, params)
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
            Tensor::from_shape_vec(t.shape, t.data.into_owned())
                .with_context(|| format!("{}: bad shape of `{}`", path.display(), t.name))?,
        );
    }
    let lookahead = match (config.lookahead.is_some(), slow.is_empty()) {
        (false, true) => None,
        (true, false) => {
            let mut map = BTreeMap::new();
            for t in slow {
                let name = t.name["lookahead/".len()..].to_string();
                let shape_ok = model
                    .params
                    .iter()
                    .any(|p| p.name == name && p.shape == t.shape);
                if !shape_ok {
                    bail!(
                        "{}: lookahead tensor `{}` matches no parameter of the model",
                        path.display(),
                        t.name.escape_debug()
                    );
                }
                let value = Tensor::from_shape_vec(t.shape, t.data.into_owned())
                    .with_context(|| format!("{}: bad shape of `{}`", path.display(), t.name))?;
                map.insert(name, value);
            }
            if map.len() != model.params.len() {
                bail!(
                    "{}: lookahead holds {} of the model's {} tensors",
                    path.display(),
                    map.len(),
                    model.params.len()
                );
            }
            Some(map)
        }
        (true, true) => bail!(
            "{}: the run uses lookahead but its state is missing",
            path.display()
        ),
        (false, false) => bail!(
            "{}: lookahead state in a run without lookahead",
            path.display()
        ),
    };
    Ok(Checkpoint {
        model,
        config,
        state,
        opt,
        lookahead,
    })
}

/// Checks that the optimizer state matches the network's parameters (names and shapes).
pub fn check_optimizer(path: &Path, net: &mut Network, opt: &Optimizer) -> Result<()> {
    let mut problem = None;
    net.visit_params(&mut |name, p| {
        if let Some(slots) = opt.state.get(name)
            && slots.iter().any(|s| s.shape() != p.shape.as_slice())
        {
            problem.get_or_insert(format!("optimizer state of `{name}` has the wrong shape"));
        }
    });
    match problem {
        Some(p) => bail!("{}: {p}", path.display()),
        None => Ok(()),
    }
}
