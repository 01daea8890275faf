//! `cnn train`: resolve the settings, load the data, run the epochs; progress, per-epoch lines,
//! CSV log, checkpoints, best-model keeping and exact resume.

use super::{load_arch, with_threads};
use crate::commands::cli::{AugmentArg, KeepArg, LossArg, OptimizerArg, ScheduleArg, TrainArgs};
use crate::data::{self, Augment, Dataset, LoadOptions, Normalization};
use crate::infer::evaluate::evaluate;
use crate::infer::metrics::{Report, argmax};
use crate::layers::Mode;
use crate::net::graph::Network;
use crate::net::loss::{Loss, LossKind};
use crate::net::spec;
use crate::rng::derive;
use crate::store::{Model, Provenance};
use crate::tensor::{Tensor, data};
use crate::train::checkpoint::{self, EpochRecord, TrainConfig, TrainState};
use crate::train::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::usage;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Label mixed into the seed for each kind of random choice, so they never share a stream.
const DROPOUT_STREAM: u64 = 0xD0;

/// With `--time-budget`, the first plan is made after this many steps of the first epoch.
const PLAN_AFTER_STEPS: u64 = 20;
/// Allowance for validation and checkpointing on top of an epoch's training steps (first plan).
const VALIDATION_MARGIN: f64 = 1.08;

/// Validation fraction when the dataset has none and `--val-split` is not given.
const DEFAULT_VAL_SPLIT: f32 = 0.1;

/// Set by Ctrl-C; the loop saves a checkpoint at the next batch boundary and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Training stopped by Ctrl-C after saving a checkpoint (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: checkpoint saved to {0}; continue with `cnn train --resume {0}`")]
pub struct Interrupted(pub String);

pub fn run(args: TrainArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: TrainArgs) -> Result<()> {
    let quiet = args.quiet;
    let (config, resumed) = match &args.resume {
        Some(path) => {
            let (model, mut config, state, opt) = checkpoint::load(path)?;
            if args.plots.is_some() {
                config.plots = args.plots.clone();
            }
            (config, Some((path.clone(), model, state, opt)))
        }
        None => (resolve(&args)?, None),
    };
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    Trainer::new(config, resumed, quiet)?.run()
}

/// Settings from flags and per-dataset defaults.
fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let dataset = a.dataset.clone().unwrap_or_else(|| "mnist".into());
    let data_dir = match (&a.data_dir, a.dataset.is_none()) {
        // `cnn train` alone: full MNIST when fetched, else the shipped subset.
        (None, true) if !Path::new("data/mnist").exists() => Some(PathBuf::from("data/mnist-mini")),
        (d, _) => d.clone(),
    };
    let colour = dataset == "cifar10" || !matches!(dataset.as_str(), "mnist" | "fashion-mnist");
    let arch_name = a
        .arch
        .clone()
        .unwrap_or_else(|| if colour { "cifar-ref" } else { "mnist-ref" }.into());
    let arch = load_arch(&arch_name)?;
    let optimizer = match a.optimizer.unwrap_or(OptimizerArg::Sgd) {
        OptimizerArg::Sgd => OptimizerKind::Sgd,
        OptimizerArg::Adam => OptimizerKind::Adam,
        OptimizerArg::Adamw => OptimizerKind::AdamW,
    };
    let sgd = optimizer == OptimizerKind::Sgd;
    // Batch norm tolerates (and profits from) a larger step; plain nets diverge with it early on.
    let has_bn = arch
        .layers
        .iter()
        .any(|l| l.1 == spec::LayerSpec::BatchNorm);
    let lr = a.lr.unwrap_or(match (sgd, has_bn) {
        (true, true) => 0.05,
        (true, false) => 0.01,
        (false, _) => 1e-3,
    });
    let weight_decay = a
        .weight_decay
        .unwrap_or(if optimizer == OptimizerKind::AdamW {
            0.01
        } else {
            5e-4
        });
    let momentum = a.momentum.unwrap_or(if sgd { 0.9 } else { 0.0 });
    for (name, v, lo, hi) in [
        ("--lr", lr, 0.0, 100.0),
        ("--momentum", momentum, 0.0, 1.0),
        ("--weight-decay", weight_decay, 0.0, 1.0),
        ("--label-smoothing", a.label_smoothing, 0.0, 1.0),
    ] {
        if !(v >= lo && v < hi) || (name == "--lr" && v == 0.0) {
            usage!("{name} must be in ({lo}, {hi}), got {v}");
        }
    }
    let val_split = a.val_split.unwrap_or(-1.0);
    if a.val_split.is_some_and(|v| !(0.0..0.9).contains(&v)) {
        usage!("--val-split must be in [0, 0.9), got {val_split}");
    }
    let batch_size = a.batch_size.unwrap_or(if colour { 128 } else { 64 });
    if batch_size == 0 {
        usage!("--batch-size must be at least 1");
    }
    let default_epochs = if a.time_budget.is_some() {
        1000
    } else if colour {
        30
    } else {
        10
    };
    let epochs = a.epochs.unwrap_or(default_epochs);
    if epochs == 0 {
        usage!("--epochs must be at least 1");
    }
    let schedule = match a.schedule.unwrap_or(ScheduleArg::Cosine) {
        ScheduleArg::Constant => ScheduleKind::Constant,
        ScheduleArg::Step => ScheduleKind::Step {
            every: a.step_every,
            gamma: a.step_gamma,
        },
        ScheduleArg::Cosine => ScheduleKind::Cosine,
        ScheduleArg::Onecycle => ScheduleKind::OneCycle,
    };
    let kind = data::DatasetKind::parse(&dataset)?;
    let augment = match a.augment {
        AugmentArg::Auto => Augment::for_dataset(&kind, arch.input[0]),
        AugmentArg::None => Augment::none(),
        AugmentArg::Crop => Augment {
            pad_crop: 4,
            flip: true,
            ..Augment::none()
        },
        AugmentArg::Shift => Augment {
            shift: 2,
            ..Augment::none()
        },
    };
    Ok(TrainConfig {
        dataset,
        data_dir,
        arch_name,
        arch: arch.to_string(),
        epochs,
        batch_size,
        optimizer: OptimizerConfig {
            kind: optimizer,
            momentum,
            nesterov: a.nesterov.unwrap_or(sgd),
            weight_decay,
            ..Default::default()
        },
        lr,
        schedule,
        warmup_epochs: a.warmup.unwrap_or(0.0).max(0.0),
        label_smoothing: a.label_smoothing,
        loss: match a.loss {
            LossArg::CrossEntropy => LossKind::CrossEntropy,
            LossArg::Mse => LossKind::Mse,
        },
        augment,
        val_split,
        seed: a.seed,
        out: a.out.clone(),
        log: a.log.clone(),
        plots: a.plots.clone(),
        keep_best: a.keep == KeepArg::Best,
        skip_bad: a.skip_bad,
        time_budget_secs: a.time_budget,
        max_epochs: epochs,
    })
}

struct Trainer {
    cfg: TrainConfig,
    quiet: bool,
    train: Dataset,
    val: Option<Dataset>,
    test: Option<Dataset>,
    norm: Normalization,
    net: Network,
    opt: Optimizer,
    state: TrainState,
    schedule: Schedule,
    ckpt_path: PathBuf,
    provenance: Provenance,
}

impl Trainer {
    fn new(
        cfg: TrainConfig,
        resumed: Option<(PathBuf, Model, TrainState, Optimizer)>,
        quiet: bool,
    ) -> Result<Self> {
        let spec = spec::parse(&cfg.arch).map_err(|e| anyhow::anyhow!("architecture: {e}"))?;
        let t0 = Instant::now();
        let opts = LoadOptions {
            skip_bad: cfg.skip_bad,
            val_split: cfg.val_split.max(0.0),
            seed: cfg.seed,
        };
        let mut splits = data::load(&cfg.dataset, cfg.data_dir.as_deref(), spec.input, &opts)?;
        if splits.val.is_none() && cfg.val_split < 0.0 {
            // Default: hold out 10% for validation when the dataset has no validation split.
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
        if cfg.batch_size > train.len() {
            usage!(
                "--batch-size {} is larger than the training set ({} images)",
                cfg.batch_size,
                train.len()
            );
        }
        if !quiet {
            let skipped = if splits.skipped > 0 {
                format!(", {} unreadable skipped", splits.skipped)
            } else {
                String::new()
            };
            eprintln!(
                "data: {} — {} train, {} validation, {} test images, {} classes ({:.1}s{skipped})",
                train.name,
                train.len(),
                splits.val.as_ref().map_or(0, |d| d.len()),
                splits.test.as_ref().map_or(0, |d| d.len()),
                train.classes.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        let ckpt_path = ckpt_path(&cfg.out);
        let (mut net, norm, opt, state) = match resumed {
            Some((path, model, state, opt)) => {
                model.check_classes(&path, &train.classes)?;
                let mut net = model.build_network(&super::build_options())?;
                checkpoint::check_optimizer(&path, &mut net, &opt)?;
                let norm = model.normalization();
                (net, norm, opt, state)
            }
            None => {
                let net = Network::build(
                    &spec,
                    train.classes.len(),
                    Some(cfg.seed),
                    &super::build_options(),
                )
                .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.arch_name))?;
                let norm = Normalization::from_dataset(&train);
                (
                    net,
                    norm,
                    Optimizer::new(cfg.optimizer),
                    TrainState::default(),
                )
            }
        };
        super::check_memory(&mut net, cfg.batch_size, &cfg.arch_name)?;
        let steps_per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
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
        Ok(Trainer {
            cfg,
            quiet,
            train,
            val: splits.val,
            test: splits.test,
            norm,
            net,
            opt,
            state,
            schedule,
            ckpt_path,
            provenance,
        })
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

    fn save_checkpoint(&mut self) -> Result<()> {
        let model = self.model(self.state.epoch);
        checkpoint::save(&self.ckpt_path, &model, &self.cfg, &self.state, &self.opt)
    }

    fn run(mut self) -> Result<()> {
        let n = self.train.len();
        let bs = self.cfg.batch_size;
        let steps_per_epoch = n.div_ceil(bs) as u64;
        let mut loss = Loss::new(self.cfg.loss, self.cfg.label_smoothing);
        let (mut x, mut labels) = (Tensor::zeros(vec![0]), Vec::new());
        let show_bar = !self.quiet && std::io::stderr().is_terminal();
        if !self.quiet {
            let params = self.net.num_params();
            eprintln!(
                "model: {} ({} parameters), {} epochs of {} steps, batch {}, {:?} lr {}, {} threads",
                self.cfg.arch_name,
                super::format::group(params as u64),
                self.cfg.epochs,
                steps_per_epoch,
                bs,
                self.cfg.optimizer.kind,
                self.cfg.lr,
                rayon::current_num_threads()
            );
        }
        if let Some(parent) = self.cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create folder", parent.display()))?;
        }
        if let Some(dir) = &self.cfg.plots {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        }
        while self.state.epoch < self.cfg.epochs {
            let epoch = self.state.epoch;
            let started = Instant::now();
            let order = data::epoch_order(self.cfg.seed, epoch, n);
            let bar = if show_bar {
                let b = ProgressBar::with_draw_target(
                    Some(steps_per_epoch),
                    ProgressDrawTarget::stderr(),
                );
                b.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_prefix(format!("{}/{}", epoch + 1, self.cfg.epochs));
                b.set_position(self.state.batch);
                b
            } else {
                ProgressBar::hidden()
            };
            let augment = self.cfg.augment;
            let first_batch = self.state.batch;
            while self.state.batch < steps_per_epoch {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    bar.finish_and_clear();
                    self.state.seconds += started.elapsed().as_secs_f64();
                    self.save_checkpoint()?;
                    return Err(Interrupted(self.ckpt_path.display().to_string()).into());
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
                    bar.finish_and_clear();
                    bail!(
                        "the loss became {l} at epoch {} step {}: training diverged; try a lower --lr (now {}), \
                         --warmup 1, or gradient-friendlier settings; the last checkpoint ({}) is kept",
                        epoch + 1,
                        b + 1,
                        self.cfg.lr,
                        self.ckpt_path.display()
                    );
                }
                let correct = data(logits)
                    .chunks(k)
                    .zip(&labels)
                    .filter(|(z, y)| argmax(z) == **y)
                    .count();
                self.net.backward(&x, loss.backward());
                self.opt.step(&mut self.net, lr);
                self.state.step += 1;
                self.state.batch += 1;
                if self.state.epoch == 0
                    && self.state.batch == PLAN_AFTER_STEPS.min(steps_per_epoch)
                {
                    // First plan from the speed of the first steps; refined after every epoch.
                    let per_step = started.elapsed().as_secs_f64() / self.state.batch as f64;
                    self.plan_epochs(per_step * steps_per_epoch as f64 * VALIDATION_MARGIN);
                    bar.set_prefix(format!("{}/{}", epoch + 1, self.cfg.epochs));
                }
                self.state.loss_sum += l as f64 * idx.len() as f64;
                self.state.correct += correct as u64;
                self.state.seen += idx.len() as u64;
                if show_bar && (b.is_multiple_of(5) || self.state.batch == steps_per_epoch) {
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_position(self.state.batch);
                    bar.set_message(format!(
                        "loss {:.4} acc {:.4} {:.0} img/s",
                        self.state.loss_sum / self.state.seen as f64,
                        self.state.correct as f64 / self.state.seen as f64,
                        (self.state.batch - first_batch) as f64 * bs as f64 / secs
                    ));
                }
            }
            bar.finish_and_clear();
            self.end_epoch(started)?;
            let done = self.state.epoch;
            if done > 0 && done < self.cfg.epochs {
                self.plan_epochs(self.state.seconds / done as f64);
            }
        }
        self.finish()
    }

    /// With a time budget, sets the number of epochs to what fits in the time left, given
    /// `epoch_secs` per epoch, and stretches or shrinks the schedule to match. Never fewer than
    /// the epochs already done plus the current one, never more than `--epochs`.
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
            if !self.quiet {
                eprintln!("time budget: planning {planned} epochs ({epoch_secs:.1}s each)");
            }
        }
    }

    /// Validation, the epoch line, the CSV log, the kept model and the checkpoint.
    fn end_epoch(&mut self, started: Instant) -> Result<()> {
        let epoch = self.state.epoch;
        let train_loss = self.state.loss_sum / self.state.seen.max(1) as f64;
        let train_acc = self.state.correct as f64 / self.state.seen.max(1) as f64;
        let val = match &self.val {
            Some(v) => Some(evaluate(&mut self.net, v, &self.norm, 500, 1)),
            None => None,
        };
        self.state.seconds += started.elapsed().as_secs_f64();
        let secs = started.elapsed().as_secs_f64();
        let lr = self.schedule.lr(self.state.step.saturating_sub(1));
        if !self.quiet {
            let v = val.as_ref().map_or("no validation set".to_string(), |r| {
                format!("val loss {:.4} acc {:.4}", r.loss, r.accuracy)
            });
            println!(
                "epoch {:>3}/{}  train loss {train_loss:.4} acc {train_acc:.4}  {v}  lr {lr:.5}  {secs:.1}s",
                epoch + 1,
                self.cfg.epochs
            );
        }
        if let Some(log) = &self.cfg.log {
            append_log(
                log,
                epoch + 1,
                train_loss,
                train_acc,
                val.as_ref(),
                lr,
                secs,
            )?;
        }
        self.state.history.push(EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_accuracy: train_acc,
            val_loss: val.as_ref().map(|r| r.loss),
            val_accuracy: val.as_ref().map(|r| r.accuracy),
            lr: lr as f64,
            seconds: secs,
        });
        if let Some(dir) = &self.cfg.plots
            && let Err(e) = crate::commands::plot::training_curves(dir, &self.state.history)
        {
            // A plot is not worth losing a run for.
            eprintln!("warning: {}", crate::error::one_line(&e));
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
            model
                .provenance
                .metrics
                .insert("train_loss".into(), train_loss);
            model
                .provenance
                .metrics
                .insert("train_accuracy".into(), train_acc);
            if let Some(r) = &val {
                model.provenance.metrics.insert("val_loss".into(), r.loss);
                model
                    .provenance
                    .metrics
                    .insert("val_accuracy".into(), r.accuracy);
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

    /// Reports the kept model on the test split and records that in its provenance.
    fn finish(&mut self) -> Result<()> {
        let out = self.cfg.out.clone();
        let Some(test) = &self.test else {
            if !self.quiet {
                println!("model saved to {} (no test split to report)", out.display());
            }
            return Ok(());
        };
        let mut model = Model::load(&out)?;
        let mut net = model.build_network(&super::build_options())?;
        let r = evaluate(&mut net, test, &self.norm, 500, 5);
        model
            .provenance
            .metrics
            .insert("test_accuracy".into(), r.accuracy);
        model.provenance.metrics.insert("test_loss".into(), r.loss);
        model
            .provenance
            .metrics
            .insert("train_seconds".into(), self.state.seconds);
        model.save(&out)?;
        if !self.quiet {
            println!(
                "test: accuracy {:.4}, loss {:.4} on {} images; model saved to {} ({:.0}s of training)",
                r.accuracy,
                r.loss,
                r.images,
                out.display(),
                self.state.seconds
            );
        }
        Ok(())
    }
}

/// `<out>.ckpt`, beside the model.
pub fn ckpt_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

fn append_log(
    path: &Path,
    epoch: u64,
    train_loss: f64,
    train_acc: f64,
    val: Option<&Report>,
    lr: f32,
    secs: f64,
) -> Result<()> {
    let new = !path.exists()
        || std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open log", path.display()))?;
    let mut line = String::new();
    if new {
        line.push_str("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n");
    }
    let (vl, va) = val.map_or((String::new(), String::new()), |r| {
        (format!("{:.6}", r.loss), format!("{:.6}", r.accuracy))
    });
    line.push_str(&format!(
        "{epoch},{train_loss:.6},{train_acc:.6},{vl},{va},{lr:.6},{secs:.3}\n"
    ));
    f.write_all(line.as_bytes())
        .with_context(|| format!("{}: cannot write log", path.display()))
}
