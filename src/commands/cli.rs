//! Command-line definitions: one `Args` struct per subcommand; doc comments are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cnn",
    version,
    about = "Train, evaluate and run convolutional neural network image classifiers on the CPU.",
    long_about = "Train, evaluate and run convolutional neural network image classifiers on the CPU.\n\n\
        cnn trains small CNNs on MNIST, Fashion-MNIST, CIFAR-10 or any folder of images, and predicts \
        with them, printing the probability of every class.",
    after_help = "Examples:\n  \
        cnn predict data/samples/*.png              read digits with the shipped model\n  \
        cnn train --epochs 2                         a quick MNIST run on data/mnist-mini\n  \
        cnn train --dataset cifar10 --epochs 30      after scripts/fetch-data.sh cifar10\n  \
        cnn eval --model models/mnist.cnn --dataset mnist\n  \
        cnn summary --arch cifar-ref"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network and save the best model.
    Train(TrainArgs),
    /// Measure a saved model on a dataset: accuracy, loss, confusion matrix, per-class figures.
    Eval(EvalArgs),
    /// Print the class probabilities of image files.
    Predict(PredictArgs),
    /// Fit a softmax temperature on held-out images so that probabilities match accuracy.
    Calibrate(CalibrateArgs),
    /// Show an architecture layer by layer, or a saved model's details.
    Summary(SummaryArgs),
    /// Measure training and inference speed on synthetic data.
    Bench(BenchArgs),
    /// Write a model for other tools: an ONNX graph of its whole inference path, or the model
    /// file again in the current (safetensors) format.
    Export(ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An ONNX graph (opset 13): input `pixels` N×C×H×W in [0, 1], outputs `probabilities` and
    /// `logits`; normalisation, test-time views, every layer, temperature and softmax inside
    Onnx,
    /// The model file in the current format, safetensors with cnn's metadata (re-saves a model
    /// of the older format 1; the weights do not change)
    Safetensors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Step,
    Cosine,
    Onecycle,
    /// Linear up from 0.2·lr over the first 23% of steps, then linear down to 0.07·lr
    Linear,
}

/// The recipes `--recipe` names: the settings a run takes where the flags are silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecipeArg {
    /// The general defaults, chosen from the data and the network
    General,
    /// airbench94's, which the cifar-fast preset brings
    CifarFast,
    /// airbench95's, which the cifar-fast-wide preset brings
    CifarFastWide,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    He,
    Uniform,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    CrossEntropy,
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AugmentArg {
    /// Flips and crops for colour datasets, small shifts for digits.
    Auto,
    /// No augmentation.
    None,
    /// Random crop with 4 pixels of padding, horizontal flip.
    Crop,
    /// Small random shifts (up to 2 pixels), for digits.
    Shift,
    /// Random crop of the image reflect-padded by 2 pixels, alternating flips (cifar-fast's).
    ReflectCrop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// The answer, then a line per class with a bar as long as its probability.
    Full,
    /// One line per image: the answer, its bar and the next two classes.
    Compact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeepArg {
    /// The epoch with the best validation accuracy.
    Best,
    /// The last epoch.
    Last,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn train                                    MNIST (data/mnist if fetched, else data/mnist-mini)\n  \
    cnn train --dataset fashion-mnist --epochs 15 --out models/fashion.cnn\n  \
    cnn train --dataset cifar10 --arch cifar-ref --epochs 30 --batch-size 128\n  \
    cnn train --dataset photos/ --arch my-net.arch --val-split 0.2\n  \
    cnn train --resume models/model.cnn.ckpt       continue an interrupted run")]
pub struct TrainArgs {
    /// mnist, fashion-mnist, cifar10, or a folder with train/<class>/ images (default mnist)
    #[arg(long, short)]
    pub dataset: Option<String>,
    /// Where the named dataset lives (default data/<name>)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A preset (mnist-ref, mnist-fast, lenet5, cifar-ref, cifar-fast, cifar-fast-wide) or an
    /// architecture file
    /// (default: mnist-ref for MNIST and Fashion-MNIST, cifar-ref for CIFAR-10, for a folder a
    /// network that fits its images, named in the run's header)
    #[arg(long, short)]
    pub arch: Option<String>,
    /// Passes over the training set (default 10, 30 for colour images; cifar-fast 10,
    /// cifar-fast-wide 15)
    #[arg(long, short)]
    pub epochs: Option<u64>,
    /// Images per step (default 64 for grey images, 128 for colour, halved down to 16 while an
    /// epoch would have fewer than 50 steps; cifar-fast 1024)
    #[arg(long, short)]
    pub batch_size: Option<usize>,
    /// The optimizer (default sgd for a network with batch norm, adam without)
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Base learning rate (default: SGD 0.05 with batch norm, 0.1 without, Adam and AdamW 0.002,
    /// for the default batch; scaled linearly (SGD) or by the square root (Adam) with another
    /// --batch-size; cifar-fast 1.5, cifar-fast-wide 1.3)
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum (default 0.9; cifar-fast 0.85)
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (SGD; default true)
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// L2 weight decay (default 5e-4; AdamW 0.01, decoupled; cifar-fast 1.33e-3, cifar-fast-wide
    /// 1.53e-3)
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule, per step (default cosine; cifar-fast linear)
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// For --schedule step: epochs between decays
    #[arg(long, default_value_t = 1)]
    pub step_every: u64,
    /// For --schedule step: decay factor
    #[arg(long, default_value_t = 0.7)]
    pub step_gamma: f32,
    /// Linear warm-up, in epochs, may be fractional (default: 5% of the epochs, at most one, for
    /// SGD on a network with batch norm; else 0)
    #[arg(long)]
    pub warmup: Option<f32>,
    /// How weights are drawn where the architecture does not say: he (normal, √(2/fan-in)) or
    /// uniform (PyTorch's default, ±1/√fan-in; the default)
    #[arg(long, value_enum)]
    pub init: Option<InitArg>,
    /// Label smoothing for cross-entropy, 0 to 1 (default 0; cifar-fast 0.2)
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// Training-time augmentation (default auto, left out of runs of fewer than 500 steps;
    /// cifar-fast reflect-crop)
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    /// The recipe for every setting the flags leave out, in place of the network's own (the
    /// preset's, else the general one): `--recipe cifar-fast` trains a network written in a
    /// file as the preset trains
    #[arg(long, value_enum)]
    pub recipe: Option<RecipeArg>,
    /// Lookahead: every 5 steps pull the weights toward a slow copy, which becomes the final
    /// model (default no; cifar-fast yes)
    #[arg(long)]
    pub lookahead: Option<bool>,
    /// The test-time augmentation that eval and predict apply to this model unless told
    /// otherwise (default none; cifar-fast flip-shift)
    #[arg(long, value_enum)]
    pub tta: Option<crate::infer::tta::Tta>,
    /// Fraction of the training set held out for validation (default 0.1 when the dataset has
    /// no validation split; 0 trains on everything and keeps the last epoch)
    #[arg(long)]
    pub val_split: Option<f32>,
    #[arg(long, value_enum, default_value_t = LossArg::CrossEntropy)]
    pub loss: LossArg,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to write the model; the checkpoint goes to <out>.ckpt
    #[arg(long, short, default_value = "models/model.cnn")]
    pub out: PathBuf,
    /// Append per-epoch metrics to this CSV file
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Write loss.png and accuracy.png (training and validation curves) to this folder after
    /// every epoch
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Which model to keep at --out (default best; cifar-fast last)
    #[arg(long, value_enum)]
    pub keep: Option<KeepArg>,
    /// Continue from a checkpoint with the settings stored in it
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Skip unreadable images in folder datasets (and count them) instead of failing
    #[arg(long)]
    pub skip_bad: bool,
    /// Fit the run into this much wall-clock time (e.g. 15m, 1h30m, 900s): the number of epochs
    /// (at most --epochs, default 1000 here) is planned from measured speed, so the learning-rate
    /// schedule ends on time
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<f64>,
    /// No progress bar and no per-epoch lines
    #[arg(long, short)]
    pub quiet: bool,
}

/// `90s`, `15m`, `1h30m`, `2h`, or plain seconds → seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("`{s}` is not a duration like 900s, 15m or 1h30m");
    if let Ok(secs) = s.parse::<f64>() {
        return if secs > 0.0 && secs.is_finite() {
            Ok(secs)
        } else {
            Err(bad())
        };
    }
    let (mut total, mut num) = (0.0, String::new());
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
        total += num.parse::<f64>().map_err(|_| bad())? * unit;
        num.clear();
    }
    if !num.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse() {
        use super::parse_duration as p;
        assert_eq!(p("900"), Ok(900.0));
        assert_eq!(p("15m"), Ok(900.0));
        assert_eq!(p("1h30m"), Ok(5400.0));
        assert_eq!(p("2h"), Ok(7200.0));
        assert_eq!(p("45s"), Ok(45.0));
        for bad in ["", "m", "15x", "-5", "1h30", "0"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}

/// The dataset a command measures a saved model on (eval, calibrate).
#[derive(Args, Debug)]
pub struct ModelDataArgs {
    /// mnist, fashion-mnist, cifar10, or an image folder (default: the model's training set)
    #[arg(long, short)]
    pub dataset: Option<String>,
    /// Where the named dataset lives (default data/<name>)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Skip unreadable images in folder datasets instead of failing
    #[arg(long)]
    pub skip_bad: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn eval --model models/mnist.cnn --dataset mnist\n  \
    cnn eval --model models/mnist.cnn --dataset mnist --data-dir data/mnist-mini --json")]
pub struct EvalArgs {
    /// The model file (default: the digit model built into cnn, models/mnist.cnn when it was
    /// built)
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub data: ModelDataArgs,
    /// Also report top-k accuracy for this k
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also report coverage (share of images whose top probability is at least P) and the
    /// accuracy on those images
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub min_confidence: Option<f32>,
    /// Write confusion.png and reliability.png to this folder
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Test-time augmentation: `flip` averages the logits of each image and its mirror image,
    /// `flip-shift` six views (for models trained with flips and crops, e.g. CIFAR-10; never for
    /// digits). Default: the one the model was trained for (none unless it says)
    #[arg(long, value_enum)]
    pub tta: Option<crate::infer::tta::Tta>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn calibrate --model models/mnist.cnn\n  \
    cnn calibrate --model models/model.cnn --dataset photos/ --out models/calibrated.cnn\n\n\
    The temperature is fitted on validation images: the split a training run holds out (same \
    --val-split and seed as the run, recorded in the model) or a folder's val/. Never the test \
    set: it must stay unseen to measure the calibrated model honestly. A training run may have \
    used the same validation images to pick its best epoch; that is fine.")]
pub struct CalibrateArgs {
    /// The model to calibrate; rewritten in place unless --out is given
    #[arg(long, short)]
    pub model: PathBuf,
    /// Where to write the calibrated model (default: over --model)
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: ModelDataArgs,
    /// Fraction of the training set held out as validation (default: the training run's, as
    /// recorded in the model, else 0.1); ignored for a folder with val/
    #[arg(long)]
    pub val_split: Option<f32>,
    /// Seed of the validation split (default: the training run's seed)
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// A probability in [0, 1].
fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a probability between 0 and 1")),
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn predict data/samples/*.png\n  \
    cnn predict --model models/cifar.cnn photos/ --top-k 3\n  \
    cnn predict my-digit.jpg --json\n  \
    cnn predict photo.jpg --min-confidence 0.9     say `uncertain` below 90%\n  \
    cnn predict my-digit.jpg --explain             writes my-digit.explain.png")]
pub struct PredictArgs {
    /// Image files, or folders of images
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The model file (default: the digit model built into cnn, models/mnist.cnn when it was
    /// built)
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Show only the k most likely classes
    #[arg(long)]
    pub top_k: Option<usize>,
    /// One JSON object per line: file, class, probabilities
    #[arg(long)]
    pub json: bool,
    /// Text layout: full (a line per class, with bars) or compact (a line per image); default
    /// full for up to 10 images, compact beyond
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Feed the image as is (resized), without MNIST-style digit preparation
    #[arg(long)]
    pub no_preprocess: bool,
    /// Answer `uncertain` (JSON: class null) when the top probability is below P
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub min_confidence: Option<f32>,
    /// Write an occlusion map, <image name>.explain.png: which pixels the prediction rests on
    #[arg(long)]
    pub explain: bool,
    /// Folder for the --explain images (default: the current folder); implies --explain
    #[arg(long, value_name = "DIR")]
    pub explain_dir: Option<PathBuf>,
    /// Test-time augmentation: `flip` averages the logits of each image and its mirror image,
    /// `flip-shift` six views (for models trained with flips and crops, e.g. CIFAR-10; never for
    /// digits). Default: the one the model was trained for (none unless it says)
    #[arg(long, value_enum)]
    pub tta: Option<crate::infer::tta::Tta>,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn export models/mnist.cnn --format onnx -o mnist.onnx\n  \
    cnn export models/cifar10.cnn --format onnx --tta none -o cifar10.onnx\n  \
    cnn export models/mnist.cnn --format safetensors -o models/mnist.cnn     re-save in place")]
pub struct ExportArgs {
    /// The model file
    pub model: PathBuf,
    /// What to write
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Where to write it (may be the model itself with --format safetensors)
    #[arg(long, short)]
    pub out: PathBuf,
    /// Test-time augmentation built into the ONNX graph (see `cnn predict --help`). Default: the
    /// one the model was trained for, as `cnn predict` applies it
    #[arg(long, value_enum)]
    pub tta: Option<crate::infer::tta::Tta>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn summary --arch mnist-ref\n  \
    cnn summary --arch my-net.arch --classes 3\n  \
    cnn summary --model models/mnist.cnn")]
pub struct SummaryArgs {
    /// A preset or an architecture file
    #[arg(
        long,
        short,
        conflicts_with = "model",
        required_unless_present = "model"
    )]
    pub arch: Option<String>,
    /// A saved model
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Number of classes for `dense classes` (with --arch)
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cnn bench --arch mnist-ref --batch-size 64 --threads 2\n  \
    cnn bench --arch cifar-ref --batch-size 128 --json")]
pub struct BenchArgs {
    /// A preset or an architecture file
    #[arg(long, short, default_value = "mnist-ref")]
    pub arch: String,
    #[arg(long, short, default_value_t = 64)]
    pub batch_size: usize,
    /// Batch size for the inference measurement
    #[arg(long, default_value_t = 1000)]
    pub infer_batch_size: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed training steps per repetition
    #[arg(long, default_value_t = 50)]
    pub iters: u64,
    /// Untimed steps first
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Timed inference batches per repetition
    #[arg(long, default_value_t = 3)]
    pub infer_iters: u64,
    /// Repetitions; the median is reported
    #[arg(long, default_value_t = 3)]
    pub reps: u64,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    #[arg(long)]
    pub json: bool,
}
