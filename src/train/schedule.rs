//! Learning-rate schedules, evaluated per optimizer step.
//!
//! `lr(t)` for step `t` of `T` total steps, base rate `lr0`, after an optional linear warm-up
//! over the first `W` steps (from `lr0/W`... up to `lr0`):
//! - constant: `lr0`;
//! - step: `lr0 · γ^⌊t / S⌋` (S steps, usually a whole number of epochs);
//! - cosine: `lr0 · ½(1 + cos(π·t'/T'))`, with `t'`, `T'` counted after warm-up, down to 0;
//! - one-cycle (Smith & Topin 2017, as PyTorch's `OneCycleLR` with cosine annealing): up from
//!   `lr0/25` to `lr0` over the first 30% of steps, then down to `lr0/10⁴`;
//! - linear (airbench's, Jordan 2024): from `start·lr0` up to `lr0` in a straight line over the
//!   first `peak` fraction of the steps (`P = ⌊peak·T⌋`), then down in a straight line towards
//!   `end·lr0` at step `T`.
//!
//! One-cycle and linear have their own warm-up, so `W` is ignored for them.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScheduleKind {
    Constant,
    Step { every: u64, gamma: f32 },
    Cosine,
    OneCycle,
    Linear { peak: f32, start: f32, end: f32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl ScheduleKind {
    /// The name `--schedule` takes.
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Step { .. } => "step",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::OneCycle => "onecycle",
            ScheduleKind::Linear { .. } => "linear",
        }
    }
}

impl Schedule {
    /// The learning rate for step `t` (0-based).
    pub fn lr(&self, t: u64) -> f32 {
        let lr0 = self.base_lr as f64;
        let w = self.warmup_steps;
        let own_warmup = matches!(
            self.kind,
            ScheduleKind::OneCycle | ScheduleKind::Linear { .. }
        );
        if !own_warmup && t < w {
            return (lr0 * (t + 1) as f64 / w as f64) as f32;
        }
        let rate = match self.kind {
            ScheduleKind::Constant => lr0,
            ScheduleKind::Step { every, gamma } => {
                lr0 * (gamma as f64).powi((t / every.max(1)) as i32)
            }
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(w).max(1) as f64;
                let pos = (t - w) as f64 / span;
                lr0 * 0.5 * (1.0 + (PI * pos.min(1.0)).cos())
            }
            ScheduleKind::OneCycle => {
                // PyTorch OneCycleLR defaults: pct_start 0.3, div_factor 25, final_div_factor 1e4.
                let total = self.total_steps.max(2) as f64;
                let up = (0.3 * total).max(1.0);
                let (lo, hi, end) = (lr0 / 25.0, lr0, lr0 / 25.0 / 1e4);
                let t = t as f64;
                let cos = |from: f64, to: f64, pos: f64| {
                    to + (from - to) * 0.5 * (1.0 + (PI * pos.min(1.0)).cos())
                };
                if t < up {
                    cos(lo, hi, t / up)
                } else {
                    cos(hi, end, (t - up) / (total - up).max(1.0))
                }
            }
            ScheduleKind::Linear { peak, start, end } => {
                let total = self.total_steps.max(1);
                let up = (peak as f64 * total as f64) as u64;
                let (start, end) = (start as f64, end as f64);
                let f = if t < up {
                    let a = t as f64 / up as f64;
                    start * (1.0 - a) + a
                } else {
                    let a = ((t - up) as f64 / (total - up).max(1) as f64).min(1.0);
                    (1.0 - a) + end * a
                };
                lr0 * f
            }
        };
        rate as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup: u64) -> Schedule {
        Schedule {
            kind,
            base_lr: 0.1,
            warmup_steps: warmup,
            total_steps: 100,
        }
    }

    #[test]
    fn schedules_hand_worked() {
        let c = sched(ScheduleKind::Constant, 0);
        assert_eq!(c.lr(0), 0.1);
        assert_eq!(c.lr(99), 0.1);
        let s = sched(
            ScheduleKind::Step {
                every: 30,
                gamma: 0.5,
            },
            0,
        );
        assert_eq!((s.lr(29), s.lr(30), s.lr(60)), (0.1, 0.05, 0.025));
        let cos = sched(ScheduleKind::Cosine, 0);
        assert_eq!(cos.lr(0), 0.1);
        assert!((cos.lr(50) - 0.05).abs() < 1e-7);
        assert!(cos.lr(100) < 1e-9);
        let oc = sched(ScheduleKind::OneCycle, 0);
        assert!((oc.lr(0) - 0.004).abs() < 1e-7);
        assert!((oc.lr(30) - 0.1).abs() < 1e-7);
        assert!(oc.lr(99) < 0.001);
        // Warm-up: linear from lr0/W to lr0 over W steps, then the schedule from its start.
        let wc = sched(ScheduleKind::Cosine, 10);
        assert!((wc.lr(0) - 0.01).abs() < 1e-7 && (wc.lr(9) - 0.1).abs() < 1e-7);
        assert!((wc.lr(10) - 0.1).abs() < 1e-7 && (wc.lr(55) - 0.05).abs() < 1e-7);
    }

    /// airbench94's numbers (T = 476, peak 0.23, 0.2 → 1 → 0.07): the rise ends at step 109;
    /// the last step's factor is 0.072534.
    #[test]
    fn linear_schedule_hand_worked() {
        let kind = ScheduleKind::Linear {
            peak: 0.23,
            start: 0.2,
            end: 0.07,
        };
        let s = Schedule {
            total_steps: 476,
            base_lr: 1.0,
            ..sched(kind, 5)
        };
        assert!((s.lr(0) - 0.2).abs() < 1e-7, "its own warm-up, not `W`'s");
        assert!((s.lr(109) - 1.0).abs() < 1e-7);
        assert!((s.lr(54) - (0.2 * (1.0 - 54.0 / 109.0) + 54.0 / 109.0)).abs() < 1e-6);
        assert!((s.lr(475) - 0.072_534).abs() < 1e-6, "{}", s.lr(475));
        assert!((s.lr(476) - 0.07).abs() < 1e-7);
    }
}
