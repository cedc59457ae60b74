//! Zero-shot evaluation on labelled data: embed every image once (through the cache), score it
//! against each label set × template variant of a grid, and measure how often CLIP is right and
//! how much the wording matters. Submodules: [`metrics`] (classification measures), [`report`]
//! (report.md/html, CSV, JSON) and [`plot`] (its pictures), [`captions`] and [`meteor`] (caption
//! metrics, the nearest-neighbour baseline), [`retrieval`] (image–text recall@k), [`benchmark`]
//! (suites of all three over several models, merged into published-table layouts).

pub mod benchmark;
pub mod captions;
pub mod meteor;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod retrieval;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cache::EncodeStats;
use crate::data::Dataset;
use crate::encoder::ClipEncoder;
use crate::labels::{LabelSet, Templates};
use crate::zeroshot::ZeroShotClassifier;
use metrics::{MultiLabelMetrics, SingleLabelMetrics};

pub use crate::labels::map_classes;

/// Fails early, before any image is encoded, when a label set leaves classes of single-label
/// data without a label.
pub fn check_label_sets(dataset: &dyn Dataset, label_sets: &[LabelSet]) -> Result<()> {
    if dataset.multi_label() {
        return Ok(());
    }
    for set in label_sets {
        let (_, unmapped) = map_classes(set, dataset.classes())?;
        let used: Vec<&String> = unmapped
            .iter()
            .filter(|c| dataset.samples().iter().any(|s| s.labels.contains(c)))
            .collect();
        if !used.is_empty() {
            let names: Vec<&str> = used.iter().map(|s| s.as_str()).collect();
            bail!(
                "label set {}: no label stands for the dataset class(es) {}; add them, or map them with `label: wording => Class`",
                set.source,
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// One cell of the grid: a label set with one template variant (or the ensemble of all).
#[derive(Debug, Clone, Serialize)]
pub struct GridResult {
    pub labels: String,
    /// The variant's name: a template, a template set's name, or `ensemble of all`.
    pub templates: String,
    /// The templates behind the variant, each with its `{}`.
    pub template_list: Vec<String>,
    /// Labels in the set (chance level of top-1 is one over this).
    pub label_count: usize,
    pub single: Option<SingleLabelMetrics>,
    pub multi: Option<MultiLabelMetrics>,
    /// Per evaluated image: every label's probability, in label-set order.
    #[serde(skip)]
    pub probabilities: Vec<Vec<f32>>,
}

impl GridResult {
    /// The headline number: top-1 accuracy, or mAP for multi-label data.
    pub fn headline(&self) -> f64 {
        match (&self.single, &self.multi) {
            (Some(s), _) => s.top1,
            (_, Some(m)) => m.mean_average_precision,
            _ => 0.0,
        }
    }
}

/// An evaluated image of the main configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub input: String,
    #[serde(rename = "true")]
    pub truth: Vec<String>,
    pub predicted: Vec<crate::zeroshot::LabelScore>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub dataset: String,
    pub model: String,
    pub multi_label: bool,
    pub images: usize,
    pub evaluated: usize,
    /// Images whose classes no label of the main set stands for (multi-label data keeps the
    /// image and drops those classes; this counts dropped class names).
    pub unmapped_classes: Vec<String>,
    pub encode: EncodeStats,
    pub k: usize,
    /// The main configuration: first label set, all templates together.
    pub main: GridResult,
    pub grid: Vec<GridResult>,
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
    #[serde(skip)]
    pub label_names: Vec<String>,
}

/// Adds a grid file's `labels: SPEC` and `template: SPEC` lines (`#` comments, blank lines
/// skipped) to `labels` and `templates`; label files are found relative to the grid file.
pub fn read_grid(
    path: &std::path::Path,
    labels: &mut Vec<String>,
    templates: &mut Vec<String>,
) -> Result<()> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read grid file", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some(("labels", spec)) => {
                let spec = spec.trim();
                let relative = base.join(spec);
                labels.push(if relative.is_file() {
                    relative.display().to_string()
                } else {
                    spec.to_string()
                });
            }
            Some(("template", spec)) => templates.push(spec.trim().to_string()),
            _ => bail!(
                "{}:{}: expected `labels: SPEC` or `template: SPEC`, got {line:?}",
                path.display(),
                i + 1
            ),
        }
    }
    if labels.is_empty() {
        bail!("{}: the grid names no label set", path.display());
    }
    Ok(())
}

/// Template variants: each `--template` value (a template or a named set) on its own.
pub fn template_variants(values: &[String]) -> Result<Vec<(String, Templates)>> {
    if values.is_empty() {
        return Ok(vec![(
            crate::labels::DEFAULT_TEMPLATE.to_string(),
            Templates::parse(&[])?,
        )]);
    }
    values
        .iter()
        .map(|v| Ok((v.clone(), Templates::parse(std::slice::from_ref(v))?)))
        .collect()
}

/// Indices of the evaluated samples, their truth (label indices), unmapped classes in use.
type EvaluatedTruth = (Vec<usize>, Vec<Vec<usize>>, Vec<String>);

/// The images of `samples` that can be evaluated against label `set` — read (an embedding) and,
/// for single-label data, with a label for their class — with their truth in label space; and
/// the dataset classes no label stands for that images use.
fn truth_in_label_space(
    dataset: &dyn Dataset,
    embeddings: &[Option<Vec<f32>>],
    set: &LabelSet,
) -> Result<EvaluatedTruth> {
    let multi = dataset.multi_label();
    let samples = dataset.samples();
    let (mapped, unmapped) = map_classes(set, dataset.classes())?;
    let mut idx = Vec::new();
    let mut truth: Vec<Vec<usize>> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if embeddings[i].is_none() {
            continue;
        }
        let mut t: Vec<usize> = s
            .labels
            .iter()
            .filter_map(|c| mapped.get(c).copied())
            .collect();
        if !multi && t.len() != s.labels.len() {
            continue; // refused below as unmapped
        }
        t.sort();
        t.dedup();
        idx.push(i);
        truth.push(t);
    }
    let used_unmapped: Vec<String> = unmapped
        .iter()
        .filter(|c| samples.iter().any(|s| s.labels.contains(c)))
        .cloned()
        .collect();
    if !multi && !used_unmapped.is_empty() {
        bail!(
            "label set {}: no label stands for the dataset class(es) {}; add them, or map them with `label: wording => Class`",
            set.source,
            used_unmapped.join(", ")
        );
    }
    Ok((idx, truth, used_unmapped))
}

/// Measures one cell: `probabilities` (per evaluated image, in label order) against `truth`.
fn measure_cell(
    multi: bool,
    names: &[String],
    truth: &[Vec<usize>],
    probabilities: Vec<Vec<f32>>,
    k: usize,
    (labels, templates, template_list): (String, String, Vec<String>),
) -> GridResult {
    let (single, multi_m) = if multi {
        (
            None,
            Some(metrics::multi_label(names, truth, &probabilities, k)),
        )
    } else {
        let t: Vec<usize> = truth.iter().map(|t| t[0]).collect();
        (
            Some(metrics::single_label(names, &t, &probabilities, k)),
            None,
        )
    };
    GridResult {
        labels,
        templates,
        template_list,
        label_count: names.len(),
        single,
        multi: multi_m,
        probabilities,
    }
}

/// Per-image predictions of the main cell.
fn predictions_of(
    dataset: &dyn Dataset,
    names: &[String],
    idx: &[usize],
    truth: &[Vec<usize>],
    main: &GridResult,
) -> Vec<Prediction> {
    let samples = dataset.samples();
    idx.iter()
        .zip(truth)
        .zip(&main.probabilities)
        .map(|((&i, t), p)| {
            let mut predicted: Vec<crate::zeroshot::LabelScore> = names
                .iter()
                .zip(p)
                .map(|(n, &s)| crate::zeroshot::LabelScore {
                    label: n.clone(),
                    score: s,
                })
                .collect();
            predicted.sort_by(|a, b| b.score.total_cmp(&a.score));
            Prediction {
                input: samples[i].image.display(),
                truth: t.iter().map(|&j| names[j].clone()).collect(),
                predicted,
            }
        })
        .collect()
}

/// Evaluates a learned classifier (or any scorer) on `dataset`: `set` names its classes (in
/// the scorer's order, matched to the dataset's classes as label sets are), `probabilities`
/// scores one embedding, `what` names the configuration in reports.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_scorer(
    model: &str,
    dataset: &dyn Dataset,
    embeddings: &[Option<Vec<f32>>],
    set: &LabelSet,
    what: &str,
    probabilities: &dyn Fn(&[f32]) -> Vec<f32>,
    k: Option<usize>,
    encode: EncodeStats,
) -> Result<Evaluation> {
    let multi = dataset.multi_label();
    let k = k.unwrap_or(if multi { 10 } else { 5 });
    let (idx, truth, unmapped) = truth_in_label_space(dataset, embeddings, set)?;
    let names: Vec<String> = set.labels.iter().map(|l| l.name.clone()).collect();
    let probs: Vec<Vec<f32>> = idx
        .iter()
        .map(|&i| probabilities(embeddings[i].as_ref().expect("evaluated images are read")))
        .collect();
    let main = measure_cell(
        multi,
        &names,
        &truth,
        probs,
        k,
        (set.source.clone(), what.to_string(), Vec::new()),
    );
    let predictions = predictions_of(dataset, &names, &idx, &truth, &main);
    Ok(Evaluation {
        dataset: dataset.name().to_string(),
        model: model.to_string(),
        multi_label: multi,
        images: dataset.samples().len(),
        evaluated: idx.len(),
        unmapped_classes: unmapped,
        encode,
        k,
        grid: vec![main.clone()],
        main,
        predictions,
        label_names: names,
    })
}

/// Scores `embeddings` (one per sample, `None` for unreadable images) against the grid.
pub fn evaluate(
    clip: &ClipEncoder,
    dataset: &dyn Dataset,
    embeddings: &[Option<Vec<f32>>],
    label_sets: &[LabelSet],
    template_values: &[String],
    k: Option<usize>,
    encode: EncodeStats,
) -> Result<Evaluation> {
    if label_sets.is_empty() {
        bail!("no label set to evaluate");
    }
    let variants = template_variants(template_values)?;
    let multi = dataset.multi_label();
    let k = k.unwrap_or(if multi { 10 } else { 5 });
    let samples = dataset.samples();
    let mut grid = Vec::new();
    let mut main = None;
    let mut main_truth: Vec<Vec<usize>> = Vec::new();
    let mut main_idx: Vec<usize> = Vec::new();
    let mut unmapped_main = Vec::new();
    for (si, set) in label_sets.iter().enumerate() {
        let (idx, truth, used_unmapped) = truth_in_label_space(dataset, embeddings, set)?;
        let names: Vec<String> = set.labels.iter().map(|l| l.name.clone()).collect();
        let mut cells: Vec<(String, Templates)> = variants.clone();
        if variants.len() > 1 {
            let all: Vec<String> = variants.iter().flat_map(|(_, t)| t.0.clone()).collect();
            cells.push(("ensemble of all".to_string(), Templates(all)));
        }
        let last = cells.len() - 1;
        for (ci, (tname, templates)) in cells.into_iter().enumerate() {
            let template_list = templates.0.clone();
            let classifier = ZeroShotClassifier::new(clip, set.clone(), templates)?;
            let probabilities: Vec<Vec<f32>> = idx
                .iter()
                .map(|&i| {
                    classifier.probabilities(
                        embeddings[i]
                            .as_ref()
                            .expect("evaluated images have embeddings"),
                    )
                })
                .collect();
            let cell = measure_cell(
                multi,
                &names,
                &truth,
                probabilities,
                k,
                (set.source.clone(), tname, template_list),
            );
            if si == 0 && ci == last {
                main = Some(cell.clone());
                main_truth = truth.clone();
                main_idx = idx.clone();
                unmapped_main = used_unmapped.clone();
            }
            grid.push(cell);
        }
    }
    let main = main.expect("the first label set has a main cell");
    let names: Vec<String> = label_sets[0]
        .labels
        .iter()
        .map(|l| l.name.clone())
        .collect();
    let predictions = predictions_of(dataset, &names, &main_idx, &main_truth, &main);
    Ok(Evaluation {
        dataset: dataset.name().to_string(),
        model: clip.source.spec.clone(),
        multi_label: multi,
        images: samples.len(),
        evaluated: main_idx.len(),
        unmapped_classes: unmapped_main,
        encode,
        k,
        main,
        grid,
        predictions,
        label_names: names,
    })
}
