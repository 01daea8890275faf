//! Optimizers: SGD (with momentum and Nesterov), Adam and AdamW, with weight decay.
//!
//! The optimizer is the only code that changes weights. It reaches them through
//! [`Network::visit_params`] and keeps its state per parameter name, so checkpoints can store and
//! restore it by name. Update rules follow PyTorch's `torch.optim` documentation:
//! - SGD: `g += wd·w; v = μ·v + g; w −= lr·(nesterov ? g + μ·v : v)`.
//!
//! Per parameter, the learning rate is multiplied by its `lr_scale` and the weight decay divided
//! by it, so that a group of parameters can learn faster (batch norm's shifts in fast CIFAR
//! recipes) while the decay per step, `lr·wd·w`, stays that of the base rate: the decay is
//! decoupled from the group's rate. A parameter whose `train_epochs` have passed is skipped:
//! no update, no momentum, no decay.
//! - Adam: `g += wd·w; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//!   w −= lr · m̂ / (√v̂ + ε)` with `m̂ = m/(1−β1^t)`, `v̂ = v/(1−β2^t)`.
//! - AdamW: Adam without the `wd·w` term in `g`, and `w −= lr·wd·w` first (decoupled decay).

use crate::net::graph::Network;
use crate::tensor::{Tensor, data, data_mut};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Elements per parallel task of an update.
const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        // PyTorch's defaults for Adam (β1 0.9, β2 0.999, ε 1e-8).
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Optimizer state: the config, the step count, and per parameter its moment buffers
/// (SGD: velocity; Adam: first and second moments).
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub steps: u64,
    pub state: BTreeMap<String, Vec<Tensor>>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            steps: 0,
            state: BTreeMap::new(),
        }
    }

    /// Applies one update with learning rate `lr` from the gradients accumulated in `net`, in
    /// epoch `epoch` (0-based; see [`crate::layers::Param::trains_in`]).
    pub fn step(&mut self, net: &mut Network, lr: f32, epoch: u64) {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let state = &mut self.state;
        net.visit_params(&mut |name, p| {
            // Buffers are not trained; a parameter no backward pass has reached has no gradient.
            if !p.trains_in(epoch) || p.grad.len() != p.value.len() {
                return;
            }
            let (lr, wd) = (lr * p.lr_scale, c.weight_decay / p.lr_scale);
            let slots = match c.kind {
                OptimizerKind::Sgd if c.momentum == 0.0 => 0,
                OptimizerKind::Sgd => 1,
                OptimizerKind::Adam | OptimizerKind::AdamW => 2,
            };
            // New parameters (and state restored for another rule) start from zero moments.
            if state.get(name).is_none_or(|st| st.len() != slots) {
                let moments = (0..slots)
                    .map(|_| Tensor::zeros(p.shape.as_slice()))
                    .collect();
                state.insert(name.to_string(), moments);
            }
            let st = state
                .get_mut(name)
                .expect("inserted above with `slots` moments");
            let (w, g) = (p.value.to_mut(), data(&p.grad));
            // Element-wise rules: chunks run in parallel with the same result for any thread
            // count (a large layer's update is a few milliseconds of memory traffic).
            let w = w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
            match (c.kind, &mut st[..]) {
                (OptimizerKind::Sgd, []) => w.for_each(|(w, g)| {
                    for (w, &g) in w.iter_mut().zip(g) {
                        *w -= lr * (g + wd * *w);
                    }
                }),
                (OptimizerKind::Sgd, [v]) => {
                    w.zip(data_mut(v).par_chunks_mut(CHUNK))
                        .for_each(|((w, g), v)| {
                            for ((w, &g), v) in w.iter_mut().zip(g).zip(v) {
                                let g = g + wd * *w;
                                *v = c.momentum * *v + g;
                                *w -= lr * if c.nesterov { g + c.momentum * *v } else { *v };
                            }
                        })
                }
                (OptimizerKind::Adam | OptimizerKind::AdamW, [m, v]) => {
                    let decoupled = c.kind == OptimizerKind::AdamW;
                    let mv = data_mut(m)
                        .par_chunks_mut(CHUNK)
                        .zip(data_mut(v).par_chunks_mut(CHUNK));
                    w.zip(mv).for_each(|((w, g), (m, v))| {
                        for ((w, &g), (m, v)) in w.iter_mut().zip(g).zip(m.iter_mut().zip(v)) {
                            let g = if decoupled {
                                *w -= lr * wd * *w;
                                g
                            } else {
                                g + wd * *w
                            };
                            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                            *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                            *w -= lr * (*m / bc1) / ((*v / bc2).sqrt() + c.eps);
                        }
                    })
                }
                _ => unreachable!("the state has `slots` moments"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::spec::parse;

    /// A one-weight network (`dense 1→2` without bias, only weight[0][0] matters here) lets us
    /// follow each rule by hand.
    fn tiny() -> Network {
        let mut net = Network::build(
            &parse("input 1 1 1\nflatten\ndense 2 bias=no\n").unwrap(),
            2,
            Some(1),
            &crate::net::BuildOptions::default(),
        )
        .unwrap();
        net.visit_params(&mut |_, p| p.value.to_mut().fill(1.0));
        net
    }

    fn run(cfg: OptimizerConfig, grads: &[f32], lr: f32) -> f32 {
        let mut net = tiny();
        let mut opt = Optimizer::new(cfg);
        for &g in grads {
            net.visit_params(&mut |_, p| p.grad_mut().fill(g));
            opt.step(&mut net, lr, 0);
        }
        let mut w = 0.0;
        net.visit_params(&mut |_, p| w = p.value[0]);
        w
    }

    #[test]
    fn sgd_momentum_and_nesterov_hand_worked() {
        let sgd = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            ..Default::default()
        };
        // Plain: w = 1 − 0.1·0.5 − 0.1·0.5 = 0.9.
        assert!((run(sgd, &[0.5, 0.5], 0.1) - 0.9).abs() < 1e-6);
        // Momentum 0.9: v1 = 0.5, w = 0.95; v2 = 0.45 + 0.5 = 0.95, w = 0.855.
        let mom = OptimizerConfig {
            momentum: 0.9,
            ..sgd
        };
        assert!((run(mom, &[0.5, 0.5], 0.1) - 0.855).abs() < 1e-6);
        // Nesterov: step 1 uses g + μ·v1 = 0.5 + 0.45 = 0.95 → w = 0.905;
        // step 2: v2 = 0.95, g + μ·v2 = 0.5 + 0.855 = 1.355 → w = 0.7695.
        let nes = OptimizerConfig {
            nesterov: true,
            ..mom
        };
        assert!((run(nes, &[0.5, 0.5], 0.1) - 0.7695).abs() < 1e-6);
        // Weight decay 0.1 adds 0.1·w to the gradient: w = 1 − 0.1·(0 + 0.1) = 0.99.
        let wd = OptimizerConfig {
            weight_decay: 0.1,
            ..sgd
        };
        assert!((run(wd, &[0.0], 0.1) - 0.99).abs() < 1e-6);
    }

    #[test]
    fn adam_and_adamw_hand_worked() {
        // Adam's first step moves every weight by lr·sign(g) (m̂ = g, v̂ = g²), whatever |g|.
        let adam = OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..Default::default()
        };
        assert!((run(adam, &[0.25], 0.01) - 0.99).abs() < 1e-6);
        assert!((run(adam, &[-3.0], 0.01) - 1.01).abs() < 1e-6);
        // AdamW with decay 0.5 first shrinks w by lr·0.5·w = 0.005, then takes the Adam step.
        let adamw = OptimizerConfig {
            kind: OptimizerKind::AdamW,
            weight_decay: 0.5,
            ..adam
        };
        assert!((run(adamw, &[0.25], 0.01) - (0.995 - 0.01)).abs() < 1e-6);
        // Adam (L2) with the same decay: g = 0.25 + 0.5 = 0.75, still a step of exactly lr.
        let adam_l2 = OptimizerConfig {
            weight_decay: 0.5,
            ..adam
        };
        assert!((run(adam_l2, &[0.25], 0.01) - 0.99).abs() < 1e-6);
    }

    /// A parameter's `lr_scale` multiplies its rate and divides its decay; one past its
    /// `train_epochs` is left alone (no update, no momentum).
    #[test]
    fn learning_rate_scale_and_training_epochs() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.5,
            weight_decay: 0.2,
            ..Default::default()
        };
        let mut net = tiny();
        net.visit_params(&mut |_, p| {
            p.lr_scale = 4.0;
            p.train_epochs = Some(1);
        });
        let mut opt = Optimizer::new(cfg);
        let w = |net: &mut Network| {
            let mut w = 0.0;
            net.visit_params(&mut |_, p| w = p.value[0]);
            w
        };
        // Epoch 0: g = 0.5 + (0.2 / 4)·1 = 0.55, v = 0.55, w = 1 − (0.1·4)·0.55 = 0.78.
        net.visit_params(&mut |_, p| p.grad_mut().fill(0.5));
        opt.step(&mut net, 0.1, 0);
        assert!((w(&mut net) - 0.78).abs() < 1e-6, "{}", w(&mut net));
        // Epoch 1: frozen.
        opt.step(&mut net, 0.1, 1);
        assert!((w(&mut net) - 0.78).abs() < 1e-6);
        assert_eq!(
            opt.state.values().next().unwrap()[0].as_slice().unwrap()[0],
            0.55
        );
    }
}
