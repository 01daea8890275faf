//! Classification metrics from logits: accuracy, cross-entropy, top-k, confusion matrix,
//! per-class precision / recall / F1, and calibration (Brier score, expected calibration error).

use crate::net::loss::{log_sum_exp, softmax};
use serde::Serialize;

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassFigures {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Confusion {
    pub actual: String,
    pub predicted: String,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub images: usize,
    /// Fraction correct, 0..1.
    pub accuracy: f64,
    /// Mean cross-entropy (= negative log-likelihood of the true class).
    pub loss: f64,
    pub nll: f64,
    pub top_k: usize,
    pub top_k_accuracy: f64,
    /// Mean over images of Σ_k (p_k − y_k)².
    pub brier: f64,
    /// Expected calibration error over 15 equal-width confidence bins (Guo et al. 2017).
    pub ece: f64,
    pub classes: Vec<String>,
    /// `confusion[actual][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassFigures>,
    pub most_confused: Vec<Confusion>,
    /// Per image: the top probability and whether the top class was right (for reliability
    /// diagrams and coverage figures; not serialised).
    #[serde(skip)]
    pub confidence_correct: Vec<(f32, bool)>,
}

pub const ECE_BINS: usize = 15;

/// One bin of a reliability diagram: the images whose top probability lies in `[lo, hi)` (the
/// last bin includes 1), their mean top probability and the fraction of them that were right.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean top probability of the images in the bin (0 when empty).
    pub confidence: f64,
    /// Fraction right (0 when empty).
    pub accuracy: f64,
}

/// Equal-width bins of the top probability. Inputs: per image, its top probability and whether
/// it was right.
pub fn reliability(confidence_correct: &[(f32, bool)], bins: usize) -> Vec<Bin> {
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut right = vec![0usize; bins];
    for &(c, ok) in confidence_correct {
        let b = ((c as f64 * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += c as f64;
        right[b] += ok as usize;
    }
    (0..bins)
        .map(|b| {
            let nb = count[b].max(1) as f64;
            Bin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                count: count[b],
                confidence: conf[b] / nb,
                accuracy: right[b] as f64 / nb,
            }
        })
        .collect()
}

/// Expected calibration error: Σ_b (n_b/N)·|accuracy_b − confidence_b| over equal-width bins of
/// the top probability. Inputs: per image, its top probability and whether it was right.
pub fn ece(confidence_correct: &[(f32, bool)], bins: usize) -> f64 {
    let n = confidence_correct.len().max(1) as f64;
    reliability(confidence_correct, bins)
        .iter()
        .map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs())
        .sum()
}

/// Selective prediction at one threshold: answer only when the top probability is at least
/// `threshold`, abstain otherwise.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coverage {
    pub threshold: f64,
    /// Fraction of images answered (top probability ≥ threshold).
    pub coverage: f64,
    /// Accuracy on the answered images; `None` when none is answered.
    pub accuracy: Option<f64>,
}

/// The coverage and the accuracy on the covered images at `threshold`. The comparison is made
/// in `f32`, as `cnn predict --min-confidence` makes it.
pub fn coverage(confidence_correct: &[(f32, bool)], threshold: f64) -> Coverage {
    let covered: Vec<bool> = confidence_correct
        .iter()
        .filter(|(c, _)| *c >= threshold as f32)
        .map(|&(_, ok)| ok)
        .collect();
    let n = confidence_correct.len().max(1) as f64;
    Coverage {
        threshold,
        coverage: covered.len() as f64 / n,
        accuracy: (!covered.is_empty())
            .then(|| covered.iter().filter(|&&ok| ok).count() as f64 / covered.len() as f64),
    }
}

impl Report {
    /// Shapes: logits `N×K`, labels `N`.
    pub fn from_logits(
        logits: &[f32],
        labels: &[usize],
        classes: &[String],
        top_k: usize,
    ) -> Report {
        let k = classes.len();
        let n = labels.len();
        assert_eq!(logits.len(), n * k);
        let mut confusion = vec![vec![0usize; k]; k];
        let (mut nll, mut brier, mut top_hits) = (0f64, 0f64, 0usize);
        let mut conf = Vec::with_capacity(n);
        let mut probs = vec![0f32; k];
        for (z, &y) in logits.chunks(k).zip(labels) {
            let pred = argmax(z);
            confusion[y][pred] += 1;
            nll += (log_sum_exp(z) - z[y]) as f64;
            softmax(z, k, &mut probs);
            brier += probs
                .iter()
                .enumerate()
                .map(|(c, &p)| (p as f64 - (c == y) as u8 as f64).powi(2))
                .sum::<f64>();
            // Top-k: the true class is among the k largest (ties counted against us).
            let above = z.iter().filter(|&&v| v > z[y]).count();
            top_hits += (above < top_k) as usize;
            conf.push((probs[pred], pred == y));
        }
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let per_class = (0..k)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let predicted: usize = (0..k).map(|r| confusion[r][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassFigures {
                    class: classes[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let mut pairs: Vec<Confusion> = (0..k)
            .flat_map(|a| (0..k).map(move |p| (a, p)))
            .filter(|&(a, p)| a != p && confusion[a][p] > 0)
            .map(|(a, p)| Confusion {
                actual: classes[a].clone(),
                predicted: classes[p].clone(),
                count: confusion[a][p],
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.count));
        pairs.truncate(5);
        let nf = n.max(1) as f64;
        Report {
            images: n,
            accuracy: correct as f64 / nf,
            loss: nll / nf,
            nll: nll / nf,
            top_k,
            top_k_accuracy: top_hits as f64 / nf,
            brier: brier / nf,
            ece: ece(&conf, ECE_BINS),
            classes: classes.to_vec(),
            confusion,
            per_class,
            most_confused: pairs,
            confidence_correct: conf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    /// Hand-worked: 4 images, 3 classes; predictions 0,1,1,2 for labels 0,1,2,2.
    #[test]
    fn report_hand_worked() {
        let logits = [5., 0., 0., 0., 5., 0., 0., 5., 0., 0., 0., 5.];
        let r = Report::from_logits(&logits, &[0, 1, 2, 2], &names(3), 2);
        assert_eq!(r.accuracy, 0.75);
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 1, 1]]
        );
        // Class 1: predicted twice, right once → precision 0.5; recall 1; F1 2/3.
        let c1 = &r.per_class[1];
        assert_eq!((c1.precision, c1.recall), (0.5, 1.0));
        assert!((c1.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.most_confused[0].actual, "c2");
        assert_eq!(r.most_confused[0].predicted, "c1");
        // The wrong image has the true class second: top-2 accuracy is 1.
        assert_eq!(r.top_k_accuracy, 1.0);
        // Loss of a right image: ln(1 + 2e^-5); of the wrong one: 5 + ln(1 + 2e^-5)... averaged.
        let right = (1.0 + 2.0 * (-5f64).exp()).ln();
        assert!((r.loss - (3.0 * right + 5.0 + right) / 4.0).abs() < 1e-5);
    }

    #[test]
    fn ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_high() {
        let mut rng = crate::rng::Rng::new(3);
        // Calibrated: confidence c, right with probability c.
        let calibrated: Vec<(f32, bool)> = (0..100_000)
            .map(|_| {
                let c = 0.3 + 0.7 * rng.uniform();
                (c, rng.uniform() < c)
            })
            .collect();
        assert!(ece(&calibrated, ECE_BINS) < 0.01);
        // Overconfident: says 0.99, right 60% of the time.
        let over: Vec<(f32, bool)> = (0..10_000).map(|_| (0.99, rng.uniform() < 0.6)).collect();
        assert!((ece(&over, ECE_BINS) - 0.39).abs() < 0.02);
        // Underconfident: says 0.55, right 95% of the time.
        let under: Vec<(f32, bool)> = (0..10_000).map(|_| (0.55, rng.uniform() < 0.95)).collect();
        assert!((ece(&under, ECE_BINS) - 0.40).abs() < 0.02);
    }

    /// Hand-worked: confidences 0.1 (wrong), 0.95 and 0.97 (right), 0.99 (wrong), 4 bins.
    #[test]
    fn reliability_bins_and_coverage_hand_worked() {
        let cc = [(0.1, false), (0.95, true), (0.97, true), (0.99, false)];
        let bins = reliability(&cc, 4);
        assert_eq!(
            bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            [1, 0, 0, 3]
        );
        assert!((bins[3].confidence - (0.95 + 0.97 + 0.99) / 3.0).abs() < 1e-6);
        assert!((bins[3].accuracy - 2.0 / 3.0).abs() < 1e-12);
        // ECE = 1/4·|0 − 0.1| + 3/4·|2/3 − 0.97|.
        let want = 0.25 * 0.1 + 0.75 * (0.97f64 - 2.0 / 3.0);
        assert!((ece(&cc, 4) - want).abs() < 1e-6);
        // Top probability 1 falls in the last bin, not past it.
        assert_eq!(reliability(&[(1.0, true)], 4)[3].count, 1);
        let c = coverage(&cc, 0.96);
        assert_eq!((c.coverage, c.accuracy), (0.5, Some(0.5)));
        // At exactly the threshold the image counts as covered.
        assert_eq!(coverage(&cc, 0.95).coverage, 0.75);
        assert_eq!(coverage(&cc, 0.999).accuracy, None);
    }
}
