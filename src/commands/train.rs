//! `cnn train`: the flags resolved into a run's settings, then the training loop
//! ([`crate::train::trainer`]) with its reports drawn here: the progress bar, one line per epoch,
//! the CSV log, the plots; Ctrl-C asks the loop to checkpoint and stop.

use super::cli::{
    AugmentArg, InitArg, KeepArg, LossArg, OptimizerArg, RecipeArg, ScheduleArg, TrainArgs,
};
use super::{build_options, format::group, load_arch, plot, with_threads};
use crate::data::{self, Augment};
use crate::infer::tta::Tta;
use crate::layers::WeightInit;
use crate::net::loss::LossKind;
use crate::net::spec;
use crate::train::checkpoint;
use crate::train::config::{EpochRecord, TrainConfig};
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::recipe::{self, Recipe};
use crate::train::schedule::ScheduleKind;
use crate::train::trainer::{
    BatchProgress, DataSummary, Events, Outcome, Resumed, RunSummary, Trainer,
};
use crate::usage;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    let (config, resumed) = match &args.resume {
        Some(path) => {
            let c = checkpoint::load(path)?;
            let mut config = c.config;
            if args.plots.is_some() {
                config.plots = args.plots.clone();
            }
            let resumed = Resumed {
                path: path.clone(),
                model: c.model,
                state: c.state,
                opt: c.opt,
                lookahead: c.lookahead,
            };
            (config, Some(resumed))
        }
        None => (resolve(&args)?, None),
    };
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    if let Some(dir) = &config.plots {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    let mut report = Report {
        quiet: args.quiet,
        bar: None,
        log: config.log.clone(),
        plots: config.plots.clone(),
    };
    let out = config.out.clone();
    let outcome = Trainer::new(config, resumed, &build_options(), &mut report)?.run()?;
    match outcome {
        Outcome::Interrupted { checkpoint } => {
            Err(Interrupted(checkpoint.display().to_string()).into())
        }
        Outcome::Finished { .. } if args.quiet => Ok(()),
        Outcome::Finished { test: None, .. } => {
            println!("model saved to {} (no test split to report)", out.display());
            Ok(())
        }
        Outcome::Finished {
            test: Some(r),
            tta,
            seconds,
        } => {
            let views = match tta {
                Tta::None => String::new(),
                t => format!(" with --tta {}", t.name()),
            };
            println!(
                "test: accuracy {:.4}, loss {:.4} on {} images{views}; model saved to {} ({seconds:.0}s of training)",
                r.accuracy,
                r.loss,
                r.images,
                out.display(),
            );
            Ok(())
        }
    }
}

/// Settings from flags, and where they are silent from the recipe for the network and data.
fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let dataset = a.dataset.clone().unwrap_or_else(|| "mnist".into());
    let data_dir = match (&a.data_dir, a.dataset.is_none()) {
        // `cnn train` alone: full MNIST when fetched, else the shipped subset.
        (None, true) if !Path::new("data/mnist").exists() => Some(PathBuf::from("data/mnist-mini")),
        (d, _) => d.clone(),
    };
    let kind = data::DatasetKind::parse(&dataset)?;
    let (arch_name, arch, arch_reason) = match (&a.arch, &kind) {
        (Some(name), _) => (name.clone(), load_arch(name)?, None),
        (None, data::DatasetKind::Folder(root)) => {
            let c = recipe::arch_for_folder(&data::folder::survey(root)?);
            let spec = spec::parse(&c.text).map_err(|e| anyhow::anyhow!("{}: {e}", c.name))?;
            (c.name, spec, Some(c.reason))
        }
        (None, data::DatasetKind::Cifar10) => ("cifar-ref".into(), load_arch("cifar-ref")?, None),
        (None, _) => ("mnist-ref".into(), load_arch("mnist-ref")?, None),
    };
    let colour = arch.input[0] == 3;
    let optimizer = a.optimizer.map(|o| match o {
        OptimizerArg::Sgd => OptimizerKind::Sgd,
        OptimizerArg::Adam => OptimizerKind::Adam,
        OptimizerArg::Adamw => OptimizerKind::AdamW,
    });
    let recipe_name = match a.recipe {
        None => &arch_name,
        Some(RecipeArg::General) => "general",
        Some(RecipeArg::CifarFast) => "cifar-fast",
        Some(RecipeArg::CifarFastWide) => "cifar-fast-wide",
    };
    let r = Recipe::for_run(recipe_name, &arch, &kind, colour, optimizer);
    let batch_size = a.batch_size.unwrap_or(r.batch_size);
    if batch_size == 0 {
        usage!("--batch-size must be at least 1");
    }
    let lr = a.lr.unwrap_or(r.lr_for_batch(batch_size));
    let weight_decay = a.weight_decay.unwrap_or(r.weight_decay);
    let momentum = a.momentum.unwrap_or(r.momentum);
    let label_smoothing = a.label_smoothing.unwrap_or(r.label_smoothing);
    for (name, v, lo, hi) in [
        ("--lr", lr, 0.0, 100.0),
        ("--momentum", momentum, 0.0, 1.0),
        ("--weight-decay", weight_decay, 0.0, 1.0),
        ("--label-smoothing", label_smoothing, 0.0, 1.0),
    ] {
        if !(v >= lo && v < hi) || (name == "--lr" && v == 0.0) {
            usage!("{name} must be in ({lo}, {hi}), got {v}");
        }
    }
    if a.val_split.is_some_and(|v| !(0.0..0.9).contains(&v)) {
        usage!(
            "--val-split must be in [0, 0.9), got {}",
            a.val_split.unwrap_or(0.0)
        );
    }
    let val_split = a.val_split.or(r.val_split).unwrap_or(-1.0);
    let default_epochs = if a.time_budget.is_some() {
        1000
    } else {
        r.epochs
    };
    let epochs = a.epochs.unwrap_or(default_epochs);
    if epochs == 0 {
        usage!("--epochs must be at least 1");
    }
    let schedule = match a.schedule {
        None => r.schedule,
        Some(ScheduleArg::Constant) => ScheduleKind::Constant,
        Some(ScheduleArg::Step) => ScheduleKind::Step {
            every: a.step_every,
            gamma: a.step_gamma,
        },
        Some(ScheduleArg::Cosine) => ScheduleKind::Cosine,
        Some(ScheduleArg::Onecycle) => ScheduleKind::OneCycle,
        Some(ScheduleArg::Linear) => ScheduleKind::Linear {
            peak: 0.23,
            start: 0.2,
            end: 0.07,
        },
    };
    let augment = match a.augment {
        None => r.augment,
        Some(AugmentArg::Auto) => Augment::for_dataset(&kind, arch.input[0]),
        Some(AugmentArg::None) => Augment::none(),
        Some(AugmentArg::Crop) => Augment {
            pad_crop: 4,
            flip: true,
            ..Augment::none()
        },
        Some(AugmentArg::Shift) => Augment {
            shift: 2,
            ..Augment::none()
        },
        Some(AugmentArg::ReflectCrop) => Augment {
            pad_crop: 2,
            reflect: true,
            flip: true,
            alternate_flip: true,
            ..Augment::none()
        },
    };
    let lookahead = match a.lookahead {
        None => r.lookahead,
        Some(true) => Some(r.lookahead.unwrap_or_default()),
        Some(false) => None,
    };
    Ok(TrainConfig {
        dataset,
        data_dir,
        arch_name,
        arch: arch.to_string(),
        arch_reason,
        epochs,
        batch_size,
        optimizer: OptimizerConfig {
            kind: r.optimizer,
            momentum,
            nesterov: a.nesterov.unwrap_or(r.nesterov),
            weight_decay,
            ..Default::default()
        },
        lr,
        schedule,
        warmup_epochs: a
            .warmup
            .unwrap_or((r.warmup_fraction * epochs as f32).min(1.0))
            .max(0.0),
        label_smoothing,
        loss: match a.loss {
            LossArg::CrossEntropy => LossKind::CrossEntropy,
            LossArg::Mse => LossKind::Mse,
        },
        augment,
        augment_from_steps: if a.augment.is_none() {
            r.augment_from_steps
        } else {
            0
        },
        min_epoch_steps: if a.batch_size.is_none() {
            r.min_epoch_steps
        } else {
            0
        },
        lr_batch_exponent: a.lr.is_none().then(|| r.lr_batch_exponent()),
        val_split,
        seed: a.seed,
        out: a.out.clone(),
        log: a.log.clone(),
        plots: a.plots.clone(),
        keep_best: a.keep.map_or(r.keep_best, |k| k == KeepArg::Best),
        skip_bad: a.skip_bad,
        time_budget_secs: a.time_budget,
        max_epochs: epochs,
        lookahead,
        tta: a.tta.unwrap_or(r.tta),
        init: match a.init {
            None => r.init,
            Some(InitArg::He) => WeightInit::He,
            Some(InitArg::Uniform) => WeightInit::Uniform,
        },
    })
}

/// What the user sees of a run: a progress bar on stderr when it is a terminal, the data and
/// model lines, one line per epoch on stdout; the CSV log and the plots.
struct Report {
    quiet: bool,
    bar: Option<ProgressBar>,
    log: Option<PathBuf>,
    plots: Option<PathBuf>,
}

impl Events for Report {
    fn loaded(&mut self, d: &DataSummary) {
        if self.quiet {
            return;
        }
        let skipped = if d.skipped > 0 {
            format!(", {} unreadable skipped", d.skipped)
        } else {
            String::new()
        };
        eprintln!(
            "data: {} — {} train, {} validation, {} test images, {} classes ({:.1}s{skipped})",
            d.name, d.train, d.val, d.test, d.classes, d.seconds
        );
    }

    fn starting(&mut self, r: &RunSummary) {
        if self.quiet {
            return;
        }
        let cfg = r.cfg;
        if let Some(why) = &cfg.arch_reason {
            eprintln!("network: {} chosen for {why}", cfg.arch_name);
        }
        let batch = match r.batch_reduced {
            Some(why) => format!("{} ({why})", cfg.batch_size),
            None => cfg.batch_size.to_string(),
        };
        eprintln!(
            "model: {} ({} parameters), {} epochs of {} steps, batch {batch}, {:?} lr {}, {} threads",
            cfg.arch_name,
            group(r.params as u64),
            cfg.epochs,
            r.steps_per_epoch,
            cfg.optimizer.kind,
            cfg.lr,
            rayon::current_num_threads()
        );
        let warmup = if cfg.warmup_epochs > 0.0 {
            format!(", warm-up {} epochs", cfg.warmup_epochs)
        } else {
            String::new()
        };
        let augment = match r.augment_dropped {
            Some(why) => why.to_string(),
            None => cfg.augment.describe(),
        };
        eprintln!(
            "recipe: init {}, {} schedule{warmup}, augmentation {augment}",
            cfg.init.name(),
            cfg.schedule.name()
        );
    }

    fn epoch_started(&mut self, epoch: u64, epochs: u64, first_batch: u64, batches: u64) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let b = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(format!("{}/{epochs}", epoch + 1));
        b.set_position(first_batch);
        self.bar = Some(b);
    }

    fn batch_done(&mut self, p: &BatchProgress) {
        let Some(bar) = &self.bar else { return };
        let last = Some(p.batch) == bar.length();
        if (p.batch - 1).is_multiple_of(5) || last {
            bar.set_position(p.batch);
            bar.set_message(format!(
                "loss {:.4} acc {:.4} {:.0} img/s",
                p.mean_loss,
                p.accuracy,
                p.batches_this_run as f64 * p.batch_size as f64 / p.seconds.max(1e-9)
            ));
        }
    }

    fn epoch_done(&mut self, r: &EpochRecord, epochs: u64, history: &[EpochRecord]) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            let v = match (r.val_loss, r.val_accuracy) {
                (Some(l), Some(a)) => format!("val loss {l:.4} acc {a:.4}"),
                _ => "no validation set".to_string(),
            };
            println!(
                "epoch {:>3}/{epochs}  train loss {:.4} acc {:.4}  {v}  lr {:.5}  {:.1}s",
                r.epoch, r.train_loss, r.train_accuracy, r.lr, r.seconds
            );
        }
        if let Some(log) = &self.log {
            append_log(log, r)?;
        }
        if let Some(dir) = &self.plots
            && let Err(e) = plot::training_curves(dir, history)
        {
            // A plot is not worth losing a run for.
            eprintln!("warning: {}", crate::error::one_line(&e));
        }
        Ok(())
    }

    fn replanned(&mut self, epochs: u64, epoch_secs: f64) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("1/{epochs}"));
        }
        if !self.quiet {
            eprintln!("time budget: planning {epochs} epochs ({epoch_secs:.1}s each)");
        }
    }

    fn stop_requested(&mut self) -> bool {
        let stop = INTERRUPTED.load(Ordering::SeqCst);
        if stop && let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        stop
    }
}

/// Appends the epoch's figures to the CSV file at `path`, with a header if it is new.
fn append_log(path: &Path, r: &EpochRecord) -> Result<()> {
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
    let figure = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    line.push_str(&format!(
        "{},{:.6},{:.6},{},{},{:.6},{:.3}\n",
        r.epoch,
        r.train_loss,
        r.train_accuracy,
        figure(r.val_loss),
        figure(r.val_accuracy),
        r.lr,
        r.seconds
    ));
    f.write_all(line.as_bytes())
        .with_context(|| format!("{}: cannot write log", path.display()))
}
