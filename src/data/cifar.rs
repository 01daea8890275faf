//! The CIFAR-10 binary format (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! Each file is a run of 3073-byte records: 1 label byte, then the 32×32 image as three planes,
//! 1024 bytes of red, 1024 of green, 1024 of blue, each row-major. That is already our `C×H×W`
//! layout, so a record's last 3072 bytes are copied as they are. Training images are in
//! `data_batch_1.bin` … `data_batch_5.bin`, test images in `test_batch.bin`, and the class
//! names in `batches.meta.txt`, one a line.

use super::{Dataset, DatasetKind, Part};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub const SHAPE: [usize; 3] = [3, 32, 32];
pub const IMAGE_LEN: usize = 3 * 32 * 32;
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
pub const CLASS_COUNT: usize = 10;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const META_FILE: &str = "batches.meta.txt";

/// The folder holding the batches: `dir` itself, or `dir/cifar-10-batches-bin` (the name the
/// official archive extracts to).
pub fn batches_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join(TEST_FILE).is_file() || dir.join(TRAIN_FILES[0]).is_file() {
        return Ok(dir.to_path_buf());
    }
    let inner = dir.join("cifar-10-batches-bin");
    if inner.is_dir() {
        return Ok(inner);
    }
    bail!(
        "{}: no CIFAR-10 binary batches here (looked for {} and cifar-10-batches-bin/); download \
         them with `scripts/fetch-data.sh cifar10` or point --data-dir at the folder holding them",
        dir.display(),
        TEST_FILE
    )
}

/// Loads the training part (5 batch files) or the test part of CIFAR-10 from `dir` (see
/// [`batches_dir`]).
///
/// Shapes: files → `N×3×32×32` bytes and `N` labels.
pub fn load(dir: &Path, part: Part) -> Result<Dataset> {
    let bin = batches_dir(dir)?;
    let classes = read_classes(&bin.join(META_FILE))?;
    let files: Vec<PathBuf> = match part {
        Part::Train => TRAIN_FILES.iter().map(|f| bin.join(f)).collect(),
        Part::Test => vec![bin.join(TEST_FILE)],
    };
    // Sizes on disk fix the record counts, so the output is allocated once and each file is
    // copied straight into its own slice of it, in parallel.
    let counts = files
        .iter()
        .map(|f| record_count(f))
        .collect::<Result<Vec<_>>>()?;
    let n: usize = counts.iter().sum();
    let mut images = vec![0u8; n * IMAGE_LEN];
    let mut labels = vec![0u16; n];
    let mut slices = Vec::with_capacity(files.len());
    let (mut im_rest, mut lab_rest) = (images.as_mut_slice(), labels.as_mut_slice());
    for (f, &k) in files.iter().zip(&counts) {
        let (im, im_tail) = im_rest.split_at_mut(k * IMAGE_LEN);
        let (lab, lab_tail) = lab_rest.split_at_mut(k);
        slices.push((f, im, lab));
        (im_rest, lab_rest) = (im_tail, lab_tail);
    }
    slices
        .into_par_iter()
        .try_for_each(|(f, im, lab)| read_batch_into(f, im, lab))?;
    Ok(Dataset {
        name: format!("cifar10 {} ({})", part.name(), bin.display()),
        kind: DatasetKind::Cifar10,
        images,
        labels,
        shape: SHAPE,
        classes,
    })
}

/// Reads `batches.meta.txt`: class names one a line, blank lines ignored, exactly 10.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the CIFAR-10 class names", path.display()))?;
    parse_classes(&text, &path.display().to_string())
}

/// [`read_classes`] on the text of the file, with `name` standing for it in error messages.
pub fn parse_classes(text: &str, name: &str) -> Result<Vec<String>> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != CLASS_COUNT {
        bail!(
            "{name}: holds {} class names, expected {CLASS_COUNT} (one a line)",
            names.len()
        );
    }
    Ok(names)
}

/// The number of records in a batch file, from its size; a size that is not a whole number of
/// records is an error.
pub fn record_count(path: &Path) -> Result<usize> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .len();
    records_in(size, &path.display().to_string())
}

/// The number of records in `size` bytes, which must be a positive multiple of [`RECORD_LEN`].
fn records_in(size: u64, name: &str) -> Result<usize> {
    if size == 0 || !size.is_multiple_of(RECORD_LEN as u64) {
        bail!("{name}: {size} bytes is not a whole number of {RECORD_LEN}-byte CIFAR-10 records");
    }
    Ok((size / RECORD_LEN as u64) as usize)
}

/// Reads one batch file of `labels.len()` records (see [`record_count`]) into `images`
/// (`N×3×32×32`) and `labels`.
pub fn read_batch_into(path: &Path, images: &mut [u8], labels: &mut [u16]) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() != labels.len() * RECORD_LEN {
        bail!("{}: changed size while being read", path.display());
    }
    decode_into(&bytes, &path.display().to_string(), images, labels)
}

/// One batch file's bytes, checked as [`record_count`] and [`read_batch_into`] check a file,
/// with `name` standing for it in error messages. Shapes: bytes → `N×3×32×32` bytes, `N` labels.
pub fn parse_batch(bytes: &[u8], name: &str) -> Result<(Vec<u8>, Vec<u16>)> {
    let n = records_in(bytes.len() as u64, name)?;
    let mut images = vec![0u8; n * IMAGE_LEN];
    let mut labels = vec![0u16; n];
    decode_into(bytes, name, &mut images, &mut labels)?;
    Ok((images, labels))
}

/// Splits whole records into `images` and `labels` (sized by the caller), checking each label.
fn decode_into(bytes: &[u8], name: &str, images: &mut [u8], labels: &mut [u16]) -> Result<()> {
    let records = bytes.chunks_exact(RECORD_LEN);
    for (i, ((rec, im), l)) in records
        .zip(images.chunks_exact_mut(IMAGE_LEN))
        .zip(labels.iter_mut())
        .enumerate()
    {
        if rec[0] as usize >= CLASS_COUNT {
            bail!(
                "{name}: record {i} has label {}, not below the class count {CLASS_COUNT}",
                rec[0]
            );
        }
        *l = rec[0] as u16;
        im.copy_from_slice(&rec[1..]);
    }
    Ok(())
}
