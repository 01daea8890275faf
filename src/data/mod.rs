//! Datasets: everything between files on disk and a batch tensor.
//!
//! A [`Dataset`] keeps its images as raw bytes, `N×C×H×W` in one `Vec<u8>` (image `i` is the
//! slice `[i·C·H·W, (i+1)·C·H·W)`, channels as planes, rows top to bottom), and one `u16` label per
//! image (image folders may have more than 256 classes). Bytes are 4× smaller than `f32` and
//! are what the files hold; [`batch`] turns a slice of them into a normalised `f32` batch.
//!
//! Sources (`--dataset`):
//! - `mnist`, `fashion-mnist`: IDX files ([`idx`]), under `data/<name>` or `--data-dir`;
//! - `cifar10`: the CIFAR-10 binary batches ([`cifar`]), under `data/cifar10` or `--data-dir`;
//! - anything else is a path to an image folder ([`folder`]).
//!
//! Module map: [`idx`], [`cifar`], [`folder`] read files; [`split`](mod@split) carves a
//! validation set; [`normalize`] holds the per-channel statistics; [`augment`] the random
//! crops, shifts and flips; [`batch`] the epoch shuffle and batch filling; [`image`] decodes
//! single image files (also used by `cnn predict`); [`digits`] prepares a photographed or drawn
//! digit the way MNIST's were.
//!
//! May use: `tensor`, `rng`, `error`. Knows nothing of networks or model files.

pub mod augment;
pub mod batch;
pub mod cifar;
pub mod digits;
pub mod folder;
pub mod idx;
pub mod image;
pub mod normalize;
pub mod split;

use crate::error::UsageError;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub use augment::Augment;
pub use batch::{Batcher, epoch_order, fill_batch};
pub use normalize::Normalization;

/// Where a dataset comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
    /// An image folder at this path.
    Folder(PathBuf),
}

impl DatasetKind {
    /// The named datasets, as `--dataset` spells them.
    pub const NAMES: [&'static str; 3] = ["mnist", "fashion-mnist", "cifar10"];

    /// Parses a `--dataset` value: one of [`Self::NAMES`], or else a path to an image folder
    /// (which must exist).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mnist" => Ok(Self::Mnist),
            "fashion-mnist" => Ok(Self::FashionMnist),
            "cifar10" => Ok(Self::Cifar10),
            _ if Path::new(s).is_dir() => Ok(Self::Folder(PathBuf::from(s))),
            _ => Err(UsageError(format!(
                "unknown dataset '{s}': expected {} or a path to an image folder",
                Self::NAMES.join(", ")
            ))
            .into()),
        }
    }

    /// The `--dataset` spelling (the path for a folder).
    pub fn name(&self) -> String {
        match self {
            Self::Mnist => "mnist".into(),
            Self::FashionMnist => "fashion-mnist".into(),
            Self::Cifar10 => "cifar10".into(),
            Self::Folder(p) => p.display().to_string(),
        }
    }

    /// Where a named dataset lives unless `--data-dir` says otherwise: `data/<name>`.
    pub fn default_dir(&self) -> PathBuf {
        match self {
            Self::Folder(p) => p.clone(),
            _ => Path::new("data").join(self.name()),
        }
    }
}

/// Images and labels of one split.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Describes the source, e.g. `mnist train (data/mnist)`.
    pub name: String,
    pub kind: DatasetKind,
    /// `N×C×H×W` raw pixel bytes.
    pub images: Vec<u8>,
    /// One label per image, each below `classes.len()`.
    pub labels: Vec<u16>,
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image, `C·H·W`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The `C×H×W` bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// A new dataset holding the images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize], name: String) -> Dataset {
        let len = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            name,
            kind: self.kind.clone(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes.clone(),
        }
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Skip (and count) unreadable image files in a folder instead of failing.
    pub skip_bad: bool,
    /// Fraction of the training set held out for validation (0 = none); must be in `[0, 1)`.
    pub val_split: f32,
    /// Seeds the validation split.
    pub seed: u64,
}

/// The splits of a dataset.
#[derive(Debug)]
pub struct Splits {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    /// Unreadable files skipped under `skip_bad`.
    pub skipped: usize,
}

/// Loads train, validation and test splits of `dataset` (see the module docs for the names),
/// checked against the network's input shape `[C, H, W]`.
///
/// Named datasets must already have the input's shape (a mismatch is a [`UsageError`]); image
/// folders are converted to it by [`image::to_input`]. Validation comes from an image folder's
/// `val/` when it has one, else is carved from train by `opts.val_split` (seeded, stratified).
pub fn load(
    dataset: &str,
    data_dir: Option<&Path>,
    input: [usize; 3],
    opts: &LoadOptions,
) -> Result<Splits> {
    check_val_split(opts.val_split)?;
    let kind = DatasetKind::parse(dataset)?;
    let mut splits = match &kind {
        DatasetKind::Folder(root) => {
            no_data_dir(data_dir)?;
            folder::load(root, input, opts.skip_bad)?
        }
        _ => {
            let dir = named_dir(&kind, data_dir);
            let (train, test) = rayon::join(
                || load_part(&kind, &dir, Part::Train, input),
                || load_part(&kind, &dir, Part::Test, input),
            );
            Splits {
                train: train?,
                val: None,
                test: Some(test?),
                skipped: 0,
            }
        }
    };
    if splits.val.is_none() && opts.val_split > 0.0 {
        let (train, val) = split::carve(&splits.train, opts.val_split, opts.seed)?;
        splits.train = train;
        splits.val = Some(val);
    }
    Ok(splits)
}

/// Loads the split `cnn eval` measures: test, or when a folder has no `test/`, its `val/`, or
/// failing that the validation set carved by `opts.val_split` (the same images a training run
/// with the same seed and split held out). Returns the dataset and the count of skipped files.
pub fn load_eval(
    dataset: &str,
    data_dir: Option<&Path>,
    input: [usize; 3],
    opts: &LoadOptions,
) -> Result<(Dataset, usize)> {
    check_val_split(opts.val_split)?;
    let kind = DatasetKind::parse(dataset)?;
    let root = match &kind {
        DatasetKind::Folder(root) => root,
        _ => {
            let test = load_part(&kind, &named_dir(&kind, data_dir), Part::Test, input)?;
            return Ok((test, 0));
        }
    };
    no_data_dir(data_dir)?;
    let lay = folder::layout(root)?;
    let part = |dir: &Path, split: &str| {
        let name = format!("{} {split} ({})", root.display(), dir.display());
        folder::load_dir(dir, &lay.classes, input, opts.skip_bad, &kind, name)
    };
    if let Some(test) = &lay.test {
        return part(test, "test");
    }
    if let Some(val) = &lay.val {
        return part(val, "val");
    }
    if opts.val_split > 0.0 {
        let (train, skipped) = part(&lay.train, "train")?;
        let (_, val) = split::carve(&train, opts.val_split, opts.seed)?;
        return Ok((val, skipped));
    }
    anyhow::bail!(
        "{}: no test/ or val/ folder to evaluate on (give --val-split to evaluate on the \
         validation images a training run held out)",
        kind.name()
    )
}

fn check_val_split(v: f32) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        return Err(UsageError(format!("validation split {v} is not in [0, 1)")).into());
    }
    Ok(())
}

fn no_data_dir(data_dir: Option<&Path>) -> Result<()> {
    if let Some(d) = data_dir {
        return Err(UsageError(format!(
            "--data-dir {} applies to the named datasets ({}), not to an image folder",
            d.display(),
            DatasetKind::NAMES.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// The two parts every named dataset ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "test",
        }
    }
}

fn named_dir(kind: &DatasetKind, data_dir: Option<&Path>) -> PathBuf {
    data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| kind.default_dir())
}

/// Reads one part of a named dataset and checks its shape against the network input.
fn load_part(kind: &DatasetKind, dir: &Path, part: Part, input: [usize; 3]) -> Result<Dataset> {
    let ds = match kind {
        DatasetKind::Cifar10 => cifar::load(dir, part)?,
        _ => idx::load(kind, dir, part)?,
    };
    if ds.is_empty() {
        anyhow::bail!("{}: holds no images", ds.name);
    }
    if ds.shape != input {
        let [c, h, w] = ds.shape;
        let [ic, ih, iw] = input;
        return Err(UsageError(format!(
            "{} images are {c}×{h}×{w} but the network takes {ic}×{ih}×{iw}: choose a network \
             whose input is {c}×{h}×{w}, or a dataset that matches",
            kind.name()
        ))
        .into());
    }
    Ok(ds)
}
