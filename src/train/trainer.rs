//! The training loop: epochs of shuffled, augmented batches through forward, loss, backward and
//! the optimizer; validation after every epoch, the best (or last) model saved, a checkpoint
//! after every epoch and on request, the number of epochs fitted to a time budget, and the test
//! figures of the kept model at the end.
//!
//! It prints nothing: what happens is reported to an [`Events`] implementation (the command
//! line draws a progress bar, prints a line per epoch, appends to a CSV log and draws plots).
//! Every random choice is a function of the seed and the cursor, so a run stopped at a batch
//! boundary and resumed from its checkpoint ends with exactly the weights of an uninterrupted
//! one.

use super::adapt;
use super::checkpoint;
use super::config::{EpochRecord, TrainConfig, TrainState};
use super::lookahead::Lookahead;
use super::memory;
use super::optim::Optimizer;
use super::schedule::{Schedule, ScheduleKind};
use crate::data::{self, Augment, Dataset, LoadOptions, Normalization};
use crate::error::UsageError;
use crate::infer::evaluate::evaluate;
use crate::infer::metrics::{Report, argmax};
use crate::infer::tta::{self, Tta};
use crate::layers::{Mode, WeightInit};
use crate::net::graph::{BuildOptions, Network};
use crate::net::loss::Loss;
use crate::net::spec;
use crate::rng::{self, Rng, derive};
use crate::store::{Model, Provenance};
use crate::tensor::{Tensor, data};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Label mixed into the seed for each kind of random choice, so they never share a stream.
const DROPOUT_STREAM: u64 = 0xD0;
const FIT_STREAM: u64 = 0x0046_4954; // "FIT"

/// With a time budget, the first plan is made after this many steps of the first epoch.
const PLAN_AFTER_STEPS: u64 = 20;
/// Allowance for validation and checkpointing on top of an epoch's training steps (first plan).
const VALIDATION_MARGIN: f64 = 1.08;

/// Validation fraction when the dataset has none and the run does not say.
pub const DEFAULT_VAL_SPLIT: f32 = 0.1;

/// Images per batch when validating and testing (no gradients, so larger than training's).
const EVAL_BATCH: usize = 500;

/// What the loop tells the outside world. Every method has an empty default.
pub trait Events {
    /// The data is loaded (before the network is built).
    fn loaded(&mut self, _data: &DataSummary) {}
    /// The network is ready and the first (or resumed) epoch is about to start.
    fn starting(&mut self, _run: &RunSummary) {}
    /// An epoch starts (0-based), at batch `first_batch` of `batches` when resuming.
    fn epoch_started(&mut self, _epoch: u64, _epochs: u64, _first_batch: u64, _batches: u64) {}
    /// A batch is done.
    fn batch_done(&mut self, _progress: &BatchProgress) {}
    /// An epoch is done and validated (before its model and checkpoint are written); an error
    /// stops the run.
    fn epoch_done(
        &mut self,
        _record: &EpochRecord,
        _epochs: u64,
        _history: &[EpochRecord],
    ) -> Result<()> {
        Ok(())
    }
    /// A time budget re-planned the run to `epochs` epochs of `epoch_secs` each.
    fn replanned(&mut self, _epochs: u64, _epoch_secs: f64) {}
    /// Polled at every batch boundary: `true` saves a checkpoint and stops the run.
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// The data a run trains on.
pub struct DataSummary<'a> {
    pub name: &'a str,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub classes: usize,
    pub skipped: usize,
    pub seconds: f64,
}

/// What is about to train.
pub struct RunSummary<'a> {
    pub cfg: &'a TrainConfig,
    pub params: usize,
    pub steps_per_epoch: u64,
    /// Why the configured augmentation was dropped, when it was (too few planned steps).
    pub augment_dropped: Option<&'a str>,
    /// Why the batch is smaller than the recipe's, when it is (a small training set).
    pub batch_reduced: Option<&'a str>,
}

/// The running figures of the current epoch.
pub struct BatchProgress {
    /// Batches done in this epoch, and since this process started it.
    pub batch: u64,
    pub batches_this_run: u64,
    pub batch_size: usize,
    pub mean_loss: f64,
    pub accuracy: f64,
    pub seconds: f64,
}

/// How a run ended.
pub enum Outcome {
    /// Every epoch ran; the kept model's test figures (with the run's test-time augmentation),
    /// if the dataset has a test split.
    Finished {
        test: Option<Report>,
        tta: Tta,
        seconds: f64,
    },
    /// Stopped on request at a batch boundary, after writing this checkpoint.
    Interrupted { checkpoint: PathBuf },
}

/// A run continued from a checkpoint file.
pub struct Resumed {
    pub path: PathBuf,
    pub model: Model,
    pub state: TrainState,
    pub opt: Optimizer,
    /// Lookahead's slow copy, when the run uses it.
    pub lookahead: Option<std::collections::BTreeMap<String, Tensor>>,
}

pub struct Trainer<'e> {
    cfg: TrainConfig,
    train: Dataset,
    val: Option<Dataset>,
    test: Option<Dataset>,
    norm: Normalization,
    net: Network,
    opts: BuildOptions,
    opt: Optimizer,
    lookahead: Option<Lookahead>,
    state: TrainState,
    schedule: Schedule,
    ckpt_path: PathBuf,
    provenance: Provenance,
    augment_dropped: Option<String>,
    batch_reduced: Option<String>,
    events: &'e mut dyn Events,
}

impl<'e> Trainer<'e> {
    /// Loads the data and builds (or, resuming, restores) the network, optimizer and cursor.
    pub fn new(
        mut cfg: TrainConfig,
        resumed: Option<Resumed>,
        opts: &BuildOptions,
        events: &'e mut dyn Events,
    ) -> Result<Self> {
        let spec = spec::parse(&cfg.arch).map_err(|e| anyhow!("architecture: {e}"))?;
        let t0 = Instant::now();
        let load = LoadOptions {
            skip_bad: cfg.skip_bad,
            val_split: cfg.val_split.max(0.0),
            seed: cfg.seed,
        };
        let mut splits = data::load(&cfg.dataset, cfg.data_dir.as_deref(), spec.input, &load)?;
        if splits.val.is_none() && cfg.val_split < 0.0 {
            let (train, val) = data::split::carve(&splits.train, DEFAULT_VAL_SPLIT, cfg.seed)?;
            splits.train = train;
            splits.val = Some(val);
        }
        let train = splits.train;
        if train.len() < 2 {
            bail!(
                "{}: the training set has {} image(s); need at least 2",
                train.name,
                train.len()
            );
        }
        let batch_reduced = adapt::fit_batch(&mut cfg, train.len());
        if cfg.batch_size > train.len() {
            return Err(UsageError(format!(
                "--batch-size {} is larger than the training set ({} images)",
                cfg.batch_size,
                train.len()
            ))
            .into());
        }
        events.loaded(&DataSummary {
            name: &train.name,
            train: train.len(),
            val: splits.val.as_ref().map_or(0, |d| d.len()),
            test: splits.test.as_ref().map_or(0, |d| d.len()),
            classes: train.classes.len(),
            skipped: splits.skipped,
            seconds: t0.elapsed().as_secs_f64(),
        });
        let ckpt_path = checkpoint_path(&cfg.out);
        let (mut net, norm, opt, state, lookahead) = match resumed {
            Some(r) => {
                r.model.check_classes(&r.path, &train.classes)?;
                let mut net = r.model.build_network(opts)?;
                checkpoint::check_optimizer(&r.path, &mut net, &r.opt)?;
                let la = cfg
                    .lookahead
                    .zip(r.lookahead)
                    .map(|(config, slow)| Lookahead { config, slow });
                (net, r.model.normalization(), r.opt, r.state, la)
            }
            None => {
                let opts = BuildOptions {
                    init: cfg.init.or(WeightInit::He),
                    ..*opts
                };
                let mut net = Network::build(&spec, train.classes.len(), Some(cfg.seed), &opts)
                    .map_err(|e| anyhow!("{}: {e}", cfg.arch_name))?;
                let norm = Normalization::from_dataset(&train);
                fit_to_data(&mut net, &train, &norm, cfg.seed);
                let la = cfg.lookahead.map(|c| Lookahead::new(c, &mut net));
                (
                    net,
                    norm,
                    Optimizer::new(cfg.optimizer),
                    TrainState::default(),
                    la,
                )
            }
        };
        memory::check(&mut net, cfg.batch_size, &cfg.arch_name)?;
        let steps_per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
        let augment_dropped = adapt::augmentation(&mut cfg, steps_per_epoch);
        let schedule = Schedule {
            kind: match cfg.schedule {
                // Step decay counted in epochs on the command line, in steps here.
                ScheduleKind::Step { every, gamma } => ScheduleKind::Step {
                    every: every * steps_per_epoch,
                    gamma,
                },
                k => k,
            },
            base_lr: cfg.lr,
            warmup_steps: (cfg.warmup_epochs as f64 * steps_per_epoch as f64).round() as u64,
            total_steps: cfg.epochs * steps_per_epoch,
        };
        let mut provenance = Provenance::new(cfg.dataset.clone(), cfg.epochs, cfg.seed);
        // For `cnn calibrate`: the fraction held out, so that it fits on the same images.
        let held_out = if cfg.val_split < 0.0 {
            DEFAULT_VAL_SPLIT
        } else {
            cfg.val_split
        };
        provenance
            .extra
            .insert("val_split".into(), held_out.to_string());
        provenance
            .extra
            .insert(rng::STREAMS_KEY.into(), rng::STREAMS.into());
        if cfg.tta != Tta::None {
            provenance
                .extra
                .insert(tta::MODEL_KEY.into(), cfg.tta.name().into());
        }
        Ok(Trainer {
            cfg,
            train,
            val: splits.val,
            test: splits.test,
            norm,
            net,
            opts: *opts,
            opt,
            lookahead,
            state,
            schedule,
            ckpt_path,
            provenance,
            augment_dropped,
            batch_reduced,
            events,
        })
    }

    /// Runs the remaining epochs.
    pub fn run(mut self) -> Result<Outcome> {
        let n = self.train.len();
        let bs = self.cfg.batch_size;
        let steps_per_epoch = n.div_ceil(bs) as u64;
        let mut loss = Loss::new(self.cfg.loss, self.cfg.label_smoothing);
        let (mut x, mut labels) = (Tensor::zeros(vec![0]), Vec::new());
        let params = self.net.num_params();
        self.events.starting(&RunSummary {
            cfg: &self.cfg,
            params,
            steps_per_epoch,
            augment_dropped: self.augment_dropped.as_deref(),
            batch_reduced: self.batch_reduced.as_deref(),
        });
        if let Some(parent) = self.cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create folder", parent.display()))?;
        }
        while self.state.epoch < self.cfg.epochs {
            let epoch = self.state.epoch;
            let started = Instant::now();
            let order = data::epoch_order(self.cfg.seed, epoch, n);
            let first_batch = self.state.batch;
            self.events
                .epoch_started(epoch, self.cfg.epochs, first_batch, steps_per_epoch);
            let augment = self.cfg.augment;
            while self.state.batch < steps_per_epoch {
                if self.events.stop_requested() {
                    self.state.seconds += started.elapsed().as_secs_f64();
                    self.save_checkpoint()?;
                    return Ok(Outcome::Interrupted {
                        checkpoint: self.ckpt_path.clone(),
                    });
                }
                let b = self.state.batch as usize;
                let idx = &order[b * bs..((b + 1) * bs).min(n)];
                data::fill_batch(
                    &self.train,
                    idx,
                    &self.norm,
                    &augment,
                    self.cfg.seed,
                    epoch,
                    &mut x,
                    &mut labels,
                );
                let lr = self.schedule.lr(self.state.step);
                self.net.zero_grad();
                let seed = derive(self.cfg.seed ^ DROPOUT_STREAM, self.state.step);
                let k = self.net.classes;
                let logits = self.net.forward(&x, Mode::Train { seed });
                let l = loss.forward(logits, &labels);
                if !l.is_finite() {
                    bail!(
                        "the loss became {l} at epoch {} step {}: training diverged; try a lower --lr (now {}), \
                         --warmup 1, or gradient-friendlier settings{}",
                        epoch + 1,
                        b + 1,
                        self.cfg.lr,
                        self.kept_checkpoint()
                    );
                }
                if let Some((avg, reference)) = self.state.watch.record(l as f64, k) {
                    bail!(
                        "the loss rose to {avg:.2} at epoch {} step {} from {reference:.2} at the start: \
                         training is diverging; try a lower --lr (now {}, e.g. {}) or a longer --warmup{}",
                        epoch + 1,
                        b + 1,
                        self.cfg.lr,
                        self.cfg.lr / 4.0,
                        self.kept_checkpoint()
                    );
                }
                let correct = data(logits)
                    .chunks(k)
                    .zip(&labels)
                    .filter(|(z, y)| argmax(z) == **y)
                    .count();
                self.net.backward(&x, loss.backward());
                self.opt.step(&mut self.net, lr, self.state.epoch);
                self.state.step += 1;
                if let Some(la) = &mut self.lookahead {
                    la.after_step(&mut self.net, self.state.step, self.schedule.total_steps);
                }
                self.state.batch += 1;
                if self.state.epoch == 0
                    && self.state.batch == PLAN_AFTER_STEPS.min(steps_per_epoch)
                {
                    // First plan from the speed of the first steps; refined after every epoch.
                    let per_step = started.elapsed().as_secs_f64() / self.state.batch as f64;
                    self.plan_epochs(per_step * steps_per_epoch as f64 * VALIDATION_MARGIN);
                }
                self.state.loss_sum += l as f64 * idx.len() as f64;
                self.state.correct += correct as u64;
                self.state.seen += idx.len() as u64;
                self.events.batch_done(&BatchProgress {
                    batch: self.state.batch,
                    batches_this_run: self.state.batch - first_batch,
                    batch_size: bs,
                    mean_loss: self.state.loss_sum / self.state.seen as f64,
                    accuracy: self.state.correct as f64 / self.state.seen as f64,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            self.end_epoch(started)?;
            let done = self.state.epoch;
            if done > 0 && done < self.cfg.epochs {
                self.plan_epochs(self.state.seconds / done as f64);
            }
        }
        self.finish()
    }

    fn model(&mut self, epochs_done: u64) -> Model {
        let mut provenance = self.provenance.clone();
        provenance.epochs = epochs_done;
        Model::from_network(
            &mut self.net,
            self.train.classes.clone(),
            self.norm.mean.clone(),
            self.norm.std.clone(),
            provenance,
        )
    }

    /// `; the last checkpoint (PATH) is kept`, when there is one, for the messages that stop a
    /// run.
    fn kept_checkpoint(&self) -> String {
        if self.ckpt_path.exists() {
            format!(
                "; the last checkpoint ({}) is kept",
                self.ckpt_path.display()
            )
        } else {
            String::new()
        }
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        let model = self.model(self.state.epoch);
        let slow = self.lookahead.as_ref().map(|l| &l.slow);
        checkpoint::save(
            &self.ckpt_path,
            &model,
            &self.cfg,
            &self.state,
            &self.opt,
            slow,
        )
    }

    /// With a time budget, sets the number of epochs to what fits in the time left, given
    /// `epoch_secs` per epoch, and stretches or shrinks the schedule to match. Never fewer than
    /// the epochs already done plus the current one, never more than `max_epochs`.
    fn plan_epochs(&mut self, epoch_secs: f64) {
        let Some(budget) = self.cfg.time_budget_secs else {
            return;
        };
        let (done, max) = (self.state.epoch, self.cfg.max_epochs.max(1));
        let fits = if self.state.batch > 0 {
            // Mid-epoch (the first plan): every epoch, this one included, takes `epoch_secs`.
            (budget / epoch_secs.max(1e-9)).floor() as u64
        } else {
            let left = (budget - self.state.seconds).max(0.0);
            done + (left / epoch_secs.max(1e-9)).floor() as u64
        };
        let planned = fits.clamp(done.max(1), max);
        if planned != self.cfg.epochs {
            self.cfg.epochs = planned;
            let steps_per_epoch = self.train.len().div_ceil(self.cfg.batch_size) as u64;
            self.schedule.total_steps = planned * steps_per_epoch;
            self.events.replanned(planned, epoch_secs);
        }
    }

    /// Validation, the epoch's record, the kept model and the checkpoint.
    fn end_epoch(&mut self, started: Instant) -> Result<()> {
        let epoch = self.state.epoch;
        if epoch + 1 == self.cfg.epochs
            && let Some(la) = &self.lookahead
        {
            // The slow copy is the final model: validated and kept as such.
            la.finish(&mut self.net);
        }
        let train_loss = self.state.loss_sum / self.state.seen.max(1) as f64;
        let train_acc = self.state.correct as f64 / self.state.seen.max(1) as f64;
        let val = match &self.val {
            Some(v) => Some(evaluate(
                &mut self.net,
                v,
                &self.norm,
                EVAL_BATCH,
                1,
                Tta::None,
            )),
            None => None,
        };
        self.state.seconds += started.elapsed().as_secs_f64();
        let secs = started.elapsed().as_secs_f64();
        let lr = self.schedule.lr(self.state.step.saturating_sub(1));
        self.state.history.push(EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_accuracy: train_acc,
            val_loss: val.as_ref().map(|r| r.loss),
            val_accuracy: val.as_ref().map(|r| r.accuracy),
            lr: lr as f64,
            seconds: secs,
        });
        if let Some(record) = self.state.history.last() {
            self.events
                .epoch_done(record, self.cfg.epochs, &self.state.history)?;
        }
        let improved = match (&val, self.state.best_val_accuracy) {
            (Some(r), Some(best)) => r.accuracy > best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let Some(r) = &val
            && improved
        {
            self.state.best_val_accuracy = Some(r.accuracy);
        }
        // Keep the best by validation accuracy, or the last (also when there is no validation).
        if improved || !self.cfg.keep_best || val.is_none() {
            let mut model = self.model(epoch + 1);
            let metrics = &mut model.provenance.metrics;
            metrics.insert("train_loss".into(), train_loss);
            metrics.insert("train_accuracy".into(), train_acc);
            if let Some(r) = &val {
                metrics.insert("val_loss".into(), r.loss);
                metrics.insert("val_accuracy".into(), r.accuracy);
            }
            model.save(&self.cfg.out)?;
        }
        self.state.epoch += 1;
        self.state.batch = 0;
        self.state.loss_sum = 0.0;
        self.state.correct = 0;
        self.state.seen = 0;
        self.save_checkpoint()
    }

    /// Measures the kept model on the test split and records that in its provenance.
    fn finish(&mut self) -> Result<Outcome> {
        let seconds = self.state.seconds;
        let Some(test) = &self.test else {
            return Ok(Outcome::Finished {
                test: None,
                tta: self.cfg.tta,
                seconds,
            });
        };
        let out = &self.cfg.out;
        let mut model = Model::load(out)?;
        let mut net = model.build_network(&self.opts)?;
        let r = evaluate(&mut net, test, &self.norm, EVAL_BATCH, 5, self.cfg.tta);
        let metrics = &mut model.provenance.metrics;
        metrics.insert("test_accuracy".into(), r.accuracy);
        metrics.insert("test_loss".into(), r.loss);
        metrics.insert("train_seconds".into(), seconds);
        model.save(out)?;
        Ok(Outcome::Finished {
            test: Some(r),
            tta: self.cfg.tta,
            seconds,
        })
    }
}

/// Fits the layers that want it (see [`Network::fit_to_data`]) to a seeded random sample of
/// the training images, normalised and not augmented. A sample, not the first ones: an image
/// folder is read class by class, so the first 5,000 of CIFAR-10's 50,000 are nearly all
/// aeroplanes, and whitening fitted to their sky would misjudge every other class's patches.
fn fit_to_data(net: &mut Network, train: &Dataset, norm: &Normalization, seed: u64) {
    let n = net.data_images().min(train.len());
    if n == 0 {
        return;
    }
    let (mut x, mut labels) = (Tensor::zeros(vec![0]), Vec::new());
    let idx = fit_sample(train.len(), n, seed);
    data::fill_batch(
        train,
        &idx,
        norm,
        &Augment::none(),
        0,
        0,
        &mut x,
        &mut labels,
    );
    net.fit_to_data(&x);
}

/// `n` distinct indices below `len`, drawn uniformly from the seed's own stream, in increasing
/// order (all of them when `n ≥ len`).
fn fit_sample(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    if n < len {
        Rng::new(derive(seed, FIT_STREAM)).shuffle(&mut idx);
        idx.truncate(n);
        idx.sort_unstable();
    }
    idx
}

/// `<out>.ckpt`, beside the model.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_sample_is_spread_over_a_class_sorted_set() {
        // 10 classes of 5,000 in order, as an image folder reads CIFAR-10.
        let idx = fit_sample(50_000, 5_000, 1);
        assert_eq!(idx.len(), 5_000);
        assert!(idx.windows(2).all(|w| w[0] < w[1]) && idx[4_999] < 50_000);
        let mut per_class = [0; 10];
        idx.iter().for_each(|&i| per_class[i / 5_000] += 1);
        // Binomial(5000, 0.1) per class: mean 500, sd 21; 400..600 is over 4.7 sd.
        assert!(
            per_class.iter().all(|&c| (400..600).contains(&c)),
            "{per_class:?}"
        );
        assert_eq!(fit_sample(50_000, 5_000, 1), idx);
        assert_ne!(fit_sample(50_000, 5_000, 2), idx);
        assert_eq!(fit_sample(7, 10, 1), (0..7).collect::<Vec<_>>());
        assert_eq!(fit_sample(7, 7, 3), (0..7).collect::<Vec<_>>());
    }
}
