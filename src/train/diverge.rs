//! Catching a run that diverges before it wastes its epochs: not only a loss that turns NaN or
//! infinite, but one that climbs far above where it started, as a batch-normalised network
//! does in its first steps at too high a learning rate (a finite loss of 10 where chance is 2.3).
//!
//! The reference is the larger of the first step's loss (the initial weights', before any
//! update) and `ln K` (a uniform guess over `K` classes); the watched value is an exponential
//! moving average of the step losses, so that a single bad batch is forgiven. The run stops when
//! the average exceeds [`RISE`] times the reference.

use serde::{Deserialize, Serialize};

/// The moving average's weight on each new step.
const SMOOTHING: f64 = 0.1;
/// How far above the reference the average may go.
pub const RISE: f64 = 3.0;

/// The watch's state, kept in checkpoints so that a resumed run watches the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossWatch {
    steps: u64,
    first: f64,
    average: f64,
}

impl LossWatch {
    /// Records the loss of one step on a `classes`-way problem; returns the average and the
    /// reference when the run has diverged.
    pub fn record(&mut self, loss: f64, classes: usize) -> Option<(f64, f64)> {
        self.steps += 1;
        if self.steps == 1 {
            self.first = loss;
            self.average = loss;
        } else {
            self.average = (1.0 - SMOOTHING) * self.average + SMOOTHING * loss;
        }
        let reference = self.first.max((classes.max(2) as f64).ln());
        (self.average > RISE * reference).then_some((self.average, reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_climbing_loss_is_caught_and_a_noisy_one_is_not() {
        // From chance (ln 10 = 2.30) to 12 after a few steps: caught once the average passes 6.9.
        let mut w = LossWatch::default();
        let caught = (0..40).find_map(|i| {
            let loss = if i < 5 { 2.3 } else { 12.0 };
            w.record(loss, 10).map(|r| (i, r))
        });
        let (step, (avg, reference)) = caught.expect("caught");
        assert!((10..20).contains(&step), "{step}");
        // A blow-up in the very first steps is measured against the initial loss.
        let mut w = LossWatch::default();
        let losses = [2.4, 40.0, 45.0, 30.0, 10.0, 5.0];
        assert!(losses.iter().any(|&l| w.record(l, 10).is_some()));
        assert!(
            avg > 6.9 && (reference - std::f64::consts::LN_10).abs() < 1e-9,
            "{avg} {reference}"
        );
        // Falling with spikes of 3× its level, never caught.
        let mut w = LossWatch::default();
        for i in 0..500 {
            let base = 2.3 * (-(i as f64) / 100.0).exp();
            let loss = if i % 17 == 0 { 3.0 * base + 2.0 } else { base };
            assert_eq!(w.record(loss, 10), None, "step {i}");
        }
        // A network that starts far above chance (large initial logits) is measured from there.
        let mut w = LossWatch::default();
        for i in 0..50 {
            let loss = if i < 5 { 20.0 } else { 25.0 };
            assert_eq!(w.record(loss, 10), None);
        }
    }
}
