//! Classification metrics over ranked label scores, single-label and multi-label.
//!
//! Conventions (stated in docs/src/evaluation.md and the report): ties in a ranking keep label-set order;
//! a class with no examples has no recall and is left out of macro averages; a class never
//! predicted has precision 0; images with no true label are left out of multi-label
//! per-image measures and counted.

use serde::Serialize;

/// Indices of `scores` from best to worst; ties keep index order.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub class: String,
    pub support: usize,
    pub predicted: usize,
    pub precision: f64,
    /// `None` when the class has no examples.
    pub recall: Option<f64>,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SingleLabelMetrics {
    pub n: usize,
    pub k: usize,
    pub top1: f64,
    pub topk: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Micro-averaged precision = recall = F1 = top-1 accuracy when each image has one label.
    pub micro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// `truth[i]`: index of image i's label; `scores[i]`: its score for every label.
pub fn single_label(
    labels: &[String],
    truth: &[usize],
    scores: &[Vec<f32>],
    k: usize,
) -> SingleLabelMetrics {
    let n_labels = labels.len();
    let n = truth.len();
    let k = k.clamp(1, n_labels.max(1));
    let mut confusion = vec![vec![0usize; n_labels]; n_labels];
    let mut top1 = 0usize;
    let mut topk = 0usize;
    for (t, s) in truth.iter().zip(scores) {
        let r = ranking(s);
        confusion[*t][r[0]] += 1;
        top1 += (r[0] == *t) as usize;
        topk += r[..k].contains(t) as usize;
    }
    let mut per_class = Vec::with_capacity(n_labels);
    for c in 0..n_labels {
        let tp = confusion[c][c];
        let support: usize = confusion[c].iter().sum();
        let predicted: usize = confusion.iter().map(|row| row[c]).sum();
        let precision = if predicted > 0 {
            tp as f64 / predicted as f64
        } else {
            0.0
        };
        let recall = (support > 0).then(|| tp as f64 / support as f64);
        let r = recall.unwrap_or(0.0);
        let f1 = if precision + r > 0.0 {
            2.0 * precision * r / (precision + r)
        } else {
            0.0
        };
        per_class.push(ClassMetrics {
            class: labels[c].clone(),
            support,
            predicted,
            precision,
            recall,
            f1,
        });
    }
    let with_support: Vec<&ClassMetrics> = per_class.iter().filter(|c| c.support > 0).collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
        if with_support.is_empty() {
            0.0
        } else {
            with_support.iter().map(|c| f(c)).sum::<f64>() / with_support.len() as f64
        }
    };
    let frac = |x: usize| if n > 0 { x as f64 / n as f64 } else { 0.0 };
    SingleLabelMetrics {
        n,
        k,
        top1: frac(top1),
        topk: frac(topk),
        macro_precision: mean(&|c| c.precision),
        macro_recall: mean(&|c| c.recall.unwrap_or(0.0)),
        macro_f1: mean(&|c| c.f1),
        micro_f1: frac(top1),
        per_class,
        confusion,
    }
}

/// The most frequent off-diagonal cells of a confusion matrix: `(true, predicted, count)`.
pub fn most_confused(
    labels: &[String],
    confusion: &[Vec<usize>],
    n: usize,
) -> Vec<(String, String, usize)> {
    let mut cells: Vec<(usize, usize, usize)> = Vec::new();
    for (t, row) in confusion.iter().enumerate() {
        for (p, &c) in row.iter().enumerate() {
            if t != p && c > 0 {
                cells.push((t, p, c));
            }
        }
    }
    cells.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    cells
        .into_iter()
        .take(n)
        .map(|(t, p, c)| (labels[t].clone(), labels[p].clone(), c))
        .collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MultiLabelMetrics {
    /// Images with at least one true label (the others are left out and counted below).
    pub n: usize,
    pub without_labels: usize,
    pub k: usize,
    /// Share of images with at least one true label among the top k.
    pub at_least_one_in_top_k: f64,
    /// Share of images whose true labels are all among the top k.
    pub all_in_top_k: f64,
    pub precision_at_k: f64,
    pub recall_at_k: f64,
    /// Mean over labels with at least one positive image of the average precision of ranking
    /// the images by that label's score.
    pub mean_average_precision: f64,
    /// Average precision of each label (`None` for labels with no positive image).
    pub average_precision: Vec<(String, Option<f64>)>,
}

/// `truth[i]`: indices of image i's labels (possibly empty); `scores[i]`: every label's score.
pub fn multi_label(
    labels: &[String],
    truth: &[Vec<usize>],
    scores: &[Vec<f32>],
    k: usize,
) -> MultiLabelMetrics {
    let k = k.clamp(1, labels.len().max(1));
    let (mut n, mut without) = (0usize, 0usize);
    let (mut one, mut all, mut prec, mut rec) = (0f64, 0f64, 0f64, 0f64);
    for (t, s) in truth.iter().zip(scores) {
        if t.is_empty() {
            without += 1;
            continue;
        }
        n += 1;
        let r = ranking(s);
        let top = &r[..k];
        let hits = t.iter().filter(|c| top.contains(c)).count();
        one += (hits > 0) as u8 as f64;
        all += (hits == t.len()) as u8 as f64;
        prec += hits as f64 / k as f64;
        rec += hits as f64 / t.len() as f64;
    }
    let frac = |x: f64| if n > 0 { x / n as f64 } else { 0.0 };
    let mut aps = Vec::with_capacity(labels.len());
    for (c, name) in labels.iter().enumerate() {
        let column: Vec<f32> = scores.iter().map(|s| s[c]).collect();
        let positives = truth.iter().filter(|t| t.contains(&c)).count();
        if positives == 0 {
            aps.push((name.clone(), None));
            continue;
        }
        let order = ranking(&column);
        let (mut hits, mut sum) = (0usize, 0f64);
        for (rank, &i) in order.iter().enumerate() {
            if truth[i].contains(&c) {
                hits += 1;
                sum += hits as f64 / (rank + 1) as f64;
            }
        }
        aps.push((name.clone(), Some(sum / positives as f64)));
    }
    let defined: Vec<f64> = aps.iter().filter_map(|(_, a)| *a).collect();
    MultiLabelMetrics {
        n,
        without_labels: without,
        k,
        at_least_one_in_top_k: frac(one),
        all_in_top_k: frac(all),
        precision_at_k: frac(prec),
        recall_at_k: frac(rec),
        mean_average_precision: if defined.is_empty() {
            0.0
        } else {
            defined.iter().sum::<f64>() / defined.len() as f64
        },
        average_precision: aps,
    }
}

/// `(min, max, population standard deviation)` of values.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (min, max, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        ["a", "b", "c", "d"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn ties_keep_label_order() {
        assert_eq!(ranking(&[0.2, 0.4, 0.4, 0.0]), vec![1, 2, 0, 3]);
    }

    #[test]
    fn single_label_hand_worked() {
        // 4 images over labels a, b, c (c has no examples).
        let truth = vec![0, 0, 1, 1];
        let scores = vec![
            vec![0.7, 0.2, 0.1], // a -> a
            vec![0.2, 0.5, 0.3], // a -> b (a is 3rd? no: b .5, c .3, a .2 -> a is 3rd)
            vec![0.1, 0.6, 0.3], // b -> b
            vec![0.3, 0.3, 0.4], // b -> c (tie a/b at 2nd; a comes first)
        ];
        let m = single_label(&names(3), &truth, &scores, 2);
        assert_eq!(m.top1, 0.5);
        // top-2: img0 yes, img1 no (b, c), img2 yes, img3 (c, a) no.
        assert_eq!(m.topk, 0.5);
        assert_eq!(
            m.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]
        );
        let a = &m.per_class[0];
        assert_eq!((a.precision, a.recall, a.f1), (1.0, Some(0.5), 2.0 / 3.0));
        let b = &m.per_class[1];
        assert_eq!((b.precision, b.recall), (0.5, Some(0.5)));
        let c = &m.per_class[2];
        assert_eq!(
            (c.support, c.precision, c.recall, c.f1),
            (0, 0.0, None, 0.0)
        );
        // Macro over a and b only (c has no examples).
        assert!((m.macro_precision - 0.75).abs() < 1e-12);
        assert!((m.macro_recall - 0.5).abs() < 1e-12);
        assert!((m.macro_f1 - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(
            most_confused(&names(3), &m.confusion, 5),
            vec![("a".into(), "b".into(), 1), ("b".into(), "c".into(), 1)]
        );
    }

    #[test]
    fn multi_label_hand_worked() {
        let truth = vec![vec![0, 2], vec![1], vec![]];
        let scores = vec![
            vec![0.5, 0.3, 0.1, 0.05],  // top2 = a, b: one of {a, c}
            vec![0.4, 0.35, 0.2, 0.05], // top2 = a, b: has b
            vec![0.9, 0.0, 0.0, 0.1],
        ];
        let m = multi_label(&names(4), &truth, &scores, 2);
        assert_eq!((m.n, m.without_labels), (2, 1));
        assert_eq!(m.at_least_one_in_top_k, 1.0);
        assert_eq!(m.all_in_top_k, 0.5);
        assert_eq!(m.precision_at_k, (0.5 + 0.5) / 2.0);
        assert_eq!(m.recall_at_k, (0.5 + 1.0) / 2.0);
        // AP(a): ranking by a: img2 .9, img0 .5, img1 .4; positive img0 at rank 2 -> 1/2.
        // AP(b): img1 .35 first -> 1. AP(c): img1 .2, img0 .1 -> positive at rank 2 -> 1/2.
        // d has no positive.
        assert_eq!(m.average_precision[3], ("d".into(), None));
        assert!((m.mean_average_precision - (0.5 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn empty_inputs_do_not_divide_by_zero() {
        let m = single_label(&names(2), &[], &[], 5);
        assert_eq!((m.n, m.top1, m.macro_f1), (0, 0.0, 0.0));
        let m = multi_label(&names(2), &[vec![]], &[vec![0.5, 0.5]], 10);
        assert_eq!((m.n, m.mean_average_precision), (0, 0.0));
        assert!((spread(&[0.5, 0.7]).2 - 0.1).abs() < 1e-12);
    }
}
