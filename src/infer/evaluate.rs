//! A network over a whole dataset: its logits, in order, and the metrics they give.

use super::metrics::Report;
use super::tta::{self, Tta};
use crate::data::{self, Augment, Dataset, Normalization};
use crate::net::Network;
use crate::tensor::Tensor;

/// Runs the network over a dataset in eval mode, with the views of `tta`, and reports the
/// metrics.
pub fn evaluate(
    net: &mut Network,
    ds: &Dataset,
    norm: &Normalization,
    batch: usize,
    top_k: usize,
    tta: Tta,
) -> Report {
    let logits = infer_logits(net, ds, norm, batch, tta);
    let labels: Vec<usize> = ds.labels.iter().map(|&l| l as usize).collect();
    Report::from_logits(&logits, &labels, &ds.classes, top_k)
}

/// The logits of every image of a dataset, in order, in batches of `batch` images.
/// Shapes: → `N×K` (flat).
pub fn infer_logits(
    net: &mut Network,
    ds: &Dataset,
    norm: &Normalization,
    batch: usize,
    tta: Tta,
) -> Vec<f32> {
    let (mut x, mut labels) = (Tensor::zeros(vec![0]), Vec::new());
    let mut scratch = Tensor::zeros(vec![0]);
    let mut out = Vec::with_capacity(ds.len() * net.classes);
    let idx: Vec<usize> = (0..ds.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        data::fill_batch(ds, chunk, norm, &Augment::none(), 0, 0, &mut x, &mut labels);
        tta::logits(net, &x, tta, &mut scratch, &mut out);
    }
    out
}
