//! Lookahead (Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back", 2019) with the
//! decay schedule of airbench (Jordan 2024): every `every` steps the weights are pulled toward a
//! slow copy, `slow ← slow + (1 − d)·(w − slow)`, then `w ← slow`, with `d = base·(s/T)^power`
//! at step `s` of `T`: near 0 early (the slow copy follows the weights), rising to `base` at the
//! end (each pull keeps most of the last synchronised state). The slow copy covers every
//! parameter and buffer (batch norm's running statistics too), and it is the final model.

use crate::net::Network;
use crate::tensor::{Tensor, data, data_mut};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LookaheadConfig {
    /// Steps between synchronisations.
    pub every: u64,
    /// The decay at the last step.
    pub base: f32,
    /// How fast the decay rises with the fraction of steps done.
    pub power: f32,
}

impl Default for LookaheadConfig {
    /// airbench94's: every 5 steps, `d = 0.95⁵·(s/T)³`.
    fn default() -> Self {
        LookaheadConfig {
            every: 5,
            base: 0.95f32.powi(5),
            power: 3.0,
        }
    }
}

/// The slow copy of every parameter and buffer, by name.
pub struct Lookahead {
    pub config: LookaheadConfig,
    pub slow: BTreeMap<String, Tensor>,
}

impl Lookahead {
    /// Starts from the network's current weights.
    pub fn new(config: LookaheadConfig, net: &mut Network) -> Self {
        let mut slow = BTreeMap::new();
        net.visit_params(&mut |name, p| {
            slow.insert(name.to_string(), p.value_tensor());
        });
        Lookahead { config, slow }
    }

    /// After optimizer step number `step` (1-based) of `total`: synchronises on every
    /// `every`-th step. Returns whether it did.
    pub fn after_step(&mut self, net: &mut Network, step: u64, total: u64) -> bool {
        if self.config.every == 0 || !step.is_multiple_of(self.config.every) {
            return false;
        }
        let frac = (step as f64 / total.max(1) as f64).min(1.0);
        let d = (self.config.base as f64 * frac.powf(self.config.power as f64)) as f32;
        let slow = &mut self.slow;
        net.visit_params(&mut |name, p| {
            let Some(s) = slow.get_mut(name) else {
                return;
            };
            for (s, w) in data_mut(s).iter_mut().zip(p.value.to_mut()) {
                *s += (1.0 - d) * (*w - *s);
                *w = *s;
            }
        });
        true
    }

    /// Puts the slow copy into the network: the final model (the steps since the last
    /// synchronisation are dropped, as airbench does).
    pub fn finish(&self, net: &mut Network) {
        net.visit_params(&mut |name, p| {
            if let Some(s) = self.slow.get(name) {
                p.value.to_mut().copy_from_slice(data(s));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::BuildOptions;
    use crate::net::spec::parse;

    fn net() -> Network {
        let spec = parse("input 1 1 2\nflatten\ndense 2 bias=no\n").unwrap();
        let mut n = Network::build(&spec, 2, Some(1), &BuildOptions::default()).unwrap();
        n.visit_params(&mut |_, p| p.value.to_mut().fill(1.0));
        n
    }

    fn weight(n: &mut Network) -> f32 {
        let mut w = 0.0;
        n.visit_params(&mut |_, p| w = p.value[0]);
        w
    }

    /// Hand-worked with `every` 2, base 0.5, power 1, T = 4: the weight moves to 3 and 5 by
    /// other means before each synchronisation.
    #[test]
    fn synchronisation_hand_worked() {
        let cfg = LookaheadConfig {
            every: 2,
            base: 0.5,
            power: 1.0,
        };
        let mut n = net();
        let mut la = Lookahead::new(cfg, &mut n);
        n.visit_params(&mut |_, p| p.value.to_mut().fill(3.0));
        assert!(!la.after_step(&mut n, 1, 4));
        assert_eq!(weight(&mut n), 3.0);
        // Step 2: d = 0.5·(2/4) = 0.25; slow = 1 + 0.75·(3 − 1) = 2.5; w = 2.5.
        assert!(la.after_step(&mut n, 2, 4));
        assert_eq!(weight(&mut n), 2.5);
        n.visit_params(&mut |_, p| p.value.to_mut().fill(5.0));
        // Step 4: d = 0.5; slow = 2.5 + 0.5·2.5 = 3.75.
        assert!(la.after_step(&mut n, 4, 4));
        assert_eq!(weight(&mut n), 3.75);
        n.visit_params(&mut |_, p| p.value.to_mut().fill(9.0));
        la.finish(&mut n);
        assert_eq!(weight(&mut n), 3.75);
    }
}
