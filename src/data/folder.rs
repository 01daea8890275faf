//! Image-folder datasets: one folder per class.
//!
//! ```text
//! ROOT/train/<class>/*.{png,jpg,bmp,gif,webp}
//! ROOT/val/<class>/*     (optional)
//! ROOT/test/<class>/*    (optional)
//! ```
//! or, with no `train/`, `ROOT/<class>/*` as the training set. Class names are train's folder
//! names, sorted, so label `k` is the `k`-th name; `val/` and `test/` must have the same class
//! folders. Names starting with `.` are ignored, as are loose files beside the class folders.
//! Formats are recognised from file contents, not names. Each image is converted to the
//! network's input shape by [`image::to_input`] (the rule is in that module's docs), decoding in
//! parallel.

use super::image;
use super::{Dataset, DatasetKind, Splits};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Where an image folder's splits are, and its classes.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub train: PathBuf,
    pub val: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub classes: Vec<String>,
}

/// Finds the splits of the image folder at `root` and checks their class folders agree.
pub fn layout(root: &Path) -> Result<Layout> {
    if !root.is_dir() {
        bail!("{}: not a folder", root.display());
    }
    let sub = |name: &str| Some(root.join(name)).filter(|p| p.is_dir());
    let train = match sub("train") {
        Some(t) => t,
        None if !class_folders(root)?.is_empty() && sub("test").is_none() => root.to_path_buf(),
        None => {
            let has = |f: &str| root.join(f).exists();
            let hint = if has("train-images-idx3-ubyte.gz") || has("train-images-idx3-ubyte") {
                "; it holds IDX files: use --dataset mnist (or fashion-mnist) --data-dir ROOT"
            } else if has("data_batch_1.bin") || has("cifar-10-batches-bin") {
                "; it holds CIFAR-10 batches: use --dataset cifar10 --data-dir ROOT"
            } else {
                ""
            };
            bail!(
                "{}: no train/ folder (expected ROOT/train/<class>/<image files>){hint}",
                root.display()
            )
        }
    };
    let classes = class_folders(&train)?;
    if classes.is_empty() {
        bail!(
            "{}: no class folders (expected one folder per class)",
            train.display()
        );
    }
    let (val, test) = if train == root {
        (None, None)
    } else {
        (sub("val"), sub("test"))
    };
    for dir in val.iter().chain(test.iter()) {
        let theirs = class_folders(dir)?;
        if theirs != classes {
            let missing: Vec<&str> = classes
                .iter()
                .filter(|c| !theirs.contains(c))
                .map(|s| s.as_str())
                .collect();
            let extra: Vec<&str> = theirs
                .iter()
                .filter(|c| !classes.contains(c))
                .map(|s| s.as_str())
                .collect();
            bail!(
                "{}: class folders differ from {}: missing [{}], not in train [{}]",
                dir.display(),
                train.display(),
                missing.join(", "),
                extra.join(", ")
            );
        }
    }
    Ok(Layout {
        root: root.to_path_buf(),
        train,
        val,
        test,
        classes,
    })
}

/// Sorted names of the non-hidden sub-folders of `dir`.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Sorted non-hidden files of a class folder; an empty folder is an error.
fn class_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{}: empty class folder (no image files)", dir.display());
    }
    files.sort();
    Ok(files)
}

/// Loads the splits of the image folder at `root`: train, and val and test when present.
pub fn load(root: &Path, input: [usize; 3], skip_bad: bool) -> Result<Splits> {
    let lay = layout(root)?;
    let kind = DatasetKind::Folder(root.to_path_buf());
    let part = |dir: &Path, split: &str| {
        let name = format!("{} {split} ({})", root.display(), dir.display());
        load_dir(dir, &lay.classes, input, skip_bad, &kind, name)
    };
    let (train, train_skipped) = part(&lay.train, "train")?;
    let mut skipped = train_skipped;
    let mut other = |dir: &Option<PathBuf>, split: &str| -> Result<Option<Dataset>> {
        match dir {
            Some(d) => {
                let (ds, s) = part(d, split)?;
                skipped += s;
                Ok(Some(ds))
            }
            None => Ok(None),
        }
    };
    let val = other(&lay.val, "val")?;
    let test = other(&lay.test, "test")?;
    Ok(Splits {
        train,
        val,
        test,
        skipped,
    })
}

/// Decodes every image of one split folder (`dir/<class>/*`) to `input` = `[C, H, W]`.
/// Returns the dataset and how many unreadable files were skipped (always 0 unless `skip_bad`).
///
/// Shapes: image files of any size → `N×C×H×W` bytes.
pub fn load_dir(
    dir: &Path,
    classes: &[String],
    input: [usize; 3],
    skip_bad: bool,
    kind: &DatasetKind,
    name: String,
) -> Result<(Dataset, usize)> {
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for f in class_files(&dir.join(class))? {
            files.push((f, label as u16));
        }
    }
    let len: usize = input.iter().product();
    let mut images = vec![0u8; files.len() * len];
    let results: Vec<Result<()>> = images
        .par_chunks_mut(len)
        .zip(files.par_iter())
        .with_min_len(16)
        .map(|(out, (path, _))| {
            let img = image::decode(path)?;
            out.copy_from_slice(&image::to_input(&img, input));
            Ok(())
        })
        .collect();
    let mut labels = Vec::with_capacity(files.len());
    let mut kept = 0;
    let mut skipped = 0;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                images.copy_within(i * len..(i + 1) * len, kept * len);
                labels.push(files[i].1);
                kept += 1;
            }
            Err(_) if skip_bad => skipped += 1,
            Err(e) => bail!("{e:#} (--skip-bad skips unreadable files)"),
        }
    }
    if kept == 0 {
        bail!(
            "{}: none of the {} files is a readable image",
            dir.display(),
            files.len()
        );
    }
    images.truncate(kept * len);
    let ds = Dataset {
        name,
        kind: kind.clone(),
        images,
        labels,
        shape: input,
        classes: classes.to_vec(),
    };
    Ok((ds, skipped))
}

/// What a folder's training images look like, from a sample of them: enough to choose a
/// network that fits (see `train::recipe`).
#[derive(Clone, Debug, PartialEq)]
pub struct Survey {
    pub classes: usize,
    /// Training images (files) in all.
    pub images: usize,
    /// Median height and width of the sampled images.
    pub median_size: (u32, u32),
    /// Whether every sampled image is grey (one channel, or colour with equal channels).
    pub grey: bool,
}

/// Images decoded by [`survey`] (spread evenly over the classes' files).
const SURVEY_IMAGES: usize = 64;

/// Looks at up to [`SURVEY_IMAGES`] training images of the folder at `root`, spread over its
/// classes; files that cannot be read are passed over (training reports them).
pub fn survey(root: &Path) -> Result<Survey> {
    let lay = layout(root)?;
    let mut files = Vec::new();
    for class in &lay.classes {
        files.push(class_files(&lay.train.join(class))?);
    }
    let images: usize = files.iter().map(|f| f.len()).sum();
    // Round-robin over the classes, so that a few of each are seen.
    let mut sample = Vec::new();
    for i in 0.. {
        let before = sample.len();
        for f in &files {
            if let Some(p) = f.get(i) {
                sample.push(p.clone());
            }
        }
        if sample.len() >= SURVEY_IMAGES || sample.len() == before {
            break;
        }
    }
    sample.truncate(SURVEY_IMAGES);
    let seen: Vec<(u32, u32, bool)> = sample
        .par_iter()
        .filter_map(|p| image::decode(p).ok())
        .map(|img| {
            let (w, h) = (img.width(), img.height());
            (h, w, image::is_grey(&img))
        })
        .collect();
    if seen.is_empty() {
        bail!(
            "{}: none of the sampled images is readable",
            lay.train.display()
        );
    }
    let median = |mut v: Vec<u32>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    Ok(Survey {
        classes: lay.classes.len(),
        images,
        median_size: (
            median(seen.iter().map(|s| s.0).collect()),
            median(seen.iter().map(|s| s.1).collect()),
        ),
        grey: seen.iter().all(|s| s.2),
    })
}
