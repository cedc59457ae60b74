//! Classifiers learned from the user's own labelled examples, on CLIP image embeddings: a
//! linear probe (multinomial logistic regression, the regularisation chosen on held-out
//! examples), class-mean prototypes, or a probe pulled towards the zero-shot text classifier
//! (for a few shots). Every method ends as the same thing — a linear map of the L2-normalised
//! embedding to one logit per class, softmaxed — saved in one safetensors file with what it
//! was trained from ([`ClassifierInfo`]).
//!
//! Submodules: [`logistic`] (the L2-penalised fit, scikit-learn's objective), [`fit`] (methods,
//! shots, the search for the regularisation), [`polygons`] (training areas drawn over a scene).

pub mod fit;
pub mod logistic;
pub mod polygons;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::encoder::{ClipEncoder, normalized};
use crate::zeroshot::{LabelScore, softmax};

/// The `format` a classifier file's metadata names.
pub const FORMAT: &str = "skyscribe-classifier";
/// Its version; a file of a newer version is refused by name.
pub const VERSION: u32 = 1;

/// How the weights were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// `zero-shot-prior` at one shot with `--labels`, else `linear` (see [`fit::resolve`]).
    Auto,
    /// Multinomial logistic regression, L2 penalty towards zero, C searched on held-out data.
    Linear,
    /// Class means of the normalised embeddings, scored like CLIP's text classifier.
    Prototype,
    /// Logistic regression pulled towards the zero-shot text classifier of `--labels` (which
    /// is its limit at small C), C searched by cross-validation.
    ZeroShotPrior,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Linear => "linear",
            Method::Prototype => "prototype",
            Method::ZeroShotPrior => "zero-shot-prior",
        }
    }
}

/// The CLIP model a classifier reads the embeddings of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The spec it was trained with (a built-in name, folder or hub id), for messages.
    pub spec: String,
    /// [`crate::cache::model_fingerprint`] of the model's files.
    pub fingerprint: String,
}

/// How the regularisation was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regularisation {
    /// scikit-learn's C (the inverse of the penalty's strength).
    pub c: f64,
    /// `holdout`, `k-fold`, `leave-one-out`, `fixed` (given by `--c`) or `default`.
    pub chosen_by: String,
    /// Folds, or 1 for a holdout.
    pub folds: usize,
    /// Each C tried with its held-out accuracy.
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub c: f64,
    pub accuracy: f64,
}

/// The zero-shot classifier a `zero-shot-prior` fit was pulled towards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorInfo {
    pub labels: String,
    pub templates: Vec<String>,
    pub logit_scale: f32,
}

/// What a classifier was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The `--data` spec.
    pub data: String,
    pub split: Option<String>,
    pub examples: usize,
    /// Examples of each class, in class order.
    pub per_class: Vec<usize>,
    pub shots: Option<usize>,
    pub seed: u64,
    /// Accuracy on the training examples themselves (optimistic; `eval classify` measures).
    pub training_accuracy: f64,
    pub iterations: usize,
    pub seconds: f64,
    pub skyscribe_version: String,
}

/// Everything in a classifier file besides its two tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub format: String,
    pub version: u32,
    pub classes: Vec<String>,
    pub method: Method,
    pub model: ModelIdentity,
    pub embedding_dim: usize,
    pub regularisation: Option<Regularisation>,
    pub prior: Option<PriorInfo>,
    pub training: TrainingSummary,
}

/// A trained classifier: `softmax(W x̂ + b)` over its classes, `x̂` the L2-normalised CLIP
/// image embedding.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub info: ClassifierInfo,
    /// `classes × dim`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Classifier {
    pub fn classes(&self) -> &[String] {
        &self.info.classes
    }

    pub fn dim(&self) -> usize {
        self.info.embedding_dim
    }

    /// Logits of one image embedding (normalised here).
    pub fn logits(&self, image_embedding: &[f32]) -> Vec<f32> {
        let x = normalized(image_embedding);
        self.weight
            .chunks_exact(self.dim())
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>() + b)
            .collect()
    }

    /// Probabilities over the classes, in class order.
    pub fn probabilities(&self, image_embedding: &[f32]) -> Vec<f32> {
        softmax(&self.logits(image_embedding))
    }

    /// Classes with their probabilities, highest first; `top_k` keeps the first k.
    pub fn ranked(&self, image_embedding: &[f32], top_k: Option<usize>) -> Vec<LabelScore> {
        let mut out: Vec<LabelScore> = self
            .classes()
            .iter()
            .zip(self.probabilities(image_embedding))
            .map(|(c, score)| LabelScore {
                label: c.clone(),
                score,
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        if let Some(k) = top_k {
            out.truncate(k);
        }
        out
    }

    /// Refuses `clip` unless it is the model the classifier was trained on (same files).
    pub fn check_model(&self, clip: &ClipEncoder, file: &Path) -> Result<()> {
        let fingerprint = crate::cache::model_fingerprint(&clip.source.dir)?.to_hex();
        if fingerprint.as_str() != self.info.model.fingerprint {
            bail!(
                "{}: this classifier reads the embeddings of CLIP model {} (fingerprint {}…), \
                 not of {} (fingerprint {}…); give --model {} or train a classifier on this \
                 model",
                file.display(),
                self.info.model.spec,
                &self.info.model.fingerprint[..12],
                clip.source.spec,
                &fingerprint[..12],
                self.info.model.spec
            );
        }
        Ok(())
    }

    /// Writes the classifier atomically: tensors `weight` and `bias`, the info as JSON in the
    /// safetensors header's metadata (`skyscribe`).
    pub fn save(&self, path: &Path) -> Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let (k, d) = (self.info.classes.len(), self.dim());
        let w: &[u8] = bytemuck::cast_slice(&self.weight);
        let b: &[u8] = bytemuck::cast_slice(&self.bias);
        let tensors = vec![
            ("weight", TensorView::new(Dtype::F32, vec![k, d], w)?),
            ("bias", TensorView::new(Dtype::F32, vec![k], b)?),
        ];
        let meta: HashMap<String, String> = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("skyscribe".to_string(), serde_json::to_string(&self.info)?),
        ]);
        let bytes = safetensors::serialize(tensors, Some(meta))
            .with_context(|| format!("{}: cannot encode the classifier", path.display()))?;
        crate::atomic::write_file(path, &bytes)
    }

    /// Reads a classifier file, checking that its tensors fit its classes and dimension.
    pub fn load(path: &Path) -> Result<Self> {
        use safetensors::SafeTensors;
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read the classifier", path.display()))?;
        let not_one = || {
            format!(
                "{}: not a skyscribe classifier (make one with `skyscribe train classifier`)",
                path.display()
            )
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).with_context(not_one)?;
        let meta = header.metadata().as_ref().with_context(not_one)?;
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            bail!(not_one());
        }
        let info: ClassifierInfo = serde_json::from_str(
            meta.get("skyscribe").with_context(not_one)?,
        )
        .with_context(|| {
            format!(
                "{}: the classifier's description is damaged",
                path.display()
            )
        })?;
        if info.version > VERSION {
            bail!(
                "{}: classifier format version {} is newer than this skyscribe reads ({VERSION}); \
                 update skyscribe",
                path.display(),
                info.version
            );
        }
        let tensors = SafeTensors::deserialize(&bytes).with_context(not_one)?;
        let (k, d) = (info.classes.len(), info.embedding_dim);
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .tensor(name)
                .with_context(|| format!("{}: no tensor '{name}'", path.display()))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                bail!(
                    "{}: tensor '{name}' is {:?} {:?}, expected F32 {shape:?}",
                    path.display(),
                    t.dtype(),
                    t.shape()
                );
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                bail!("{}: tensor '{name}' holds NaN or infinity", path.display());
            }
            Ok(v)
        };
        if k < 2 || d == 0 {
            bail!(
                "{}: a classifier needs two classes or more and embeddings",
                path.display()
            );
        }
        Ok(Self {
            weight: read("weight", &[k, d])?,
            bias: read("bias", &[k])?,
            info,
        })
    }
}

/// What a classifier is trained with, beyond its examples: the method, a fixed C, the seed of
/// the holdout and folds, and the label set and templates of a text prior.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub method: Method,
    pub c: Option<f64>,
    pub seed: u64,
    /// The classes' wordings (a preset, file or `a,b,c`), for `zero-shot-prior`.
    pub labels: Option<String>,
    pub templates: Vec<String>,
}

impl TrainSettings {
    /// Refuses settings that contradict each other, before any image is embedded.
    pub fn check(&self) -> Result<()> {
        if let Some(c) = self.c {
            if !(c > 0.0 && c.is_finite()) {
                bail!("--c must be a positive number, not {c}");
            }
            if self.method == Method::Prototype {
                bail!(
                    "--c sets the penalty of linear and zero-shot-prior fits; prototype has none"
                );
            }
        }
        if self.method == Method::ZeroShotPrior && self.labels.is_none() {
            bail!("--method zero-shot-prior needs --labels (the classes' wordings)");
        }
        if self.labels.is_some() && matches!(self.method, Method::Linear | Method::Prototype) {
            bail!(
                "--labels is the prior of --method zero-shot-prior; --method {} does not use it",
                self.method.name()
            );
        }
        if !self.templates.is_empty() && self.labels.is_none() {
            bail!("--template words --labels; give --labels too");
        }
        Ok(())
    }
}

/// Where the examples came from, kept in the classifier file.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The `--data` spec (or what stands for it).
    pub data: String,
    pub split: Option<String>,
    pub shots: Option<usize>,
}

/// The zero-shot classifier of `labels` over `classes` as a [`fit::Prior`]: each class must
/// have a label, and each label a class. Also says which templates were used, for the user.
pub fn text_prior(
    clip: &ClipEncoder,
    labels: &str,
    templates: &[String],
    classes: &[String],
) -> Result<(fit::Prior, String)> {
    let set = crate::labels::LabelSet::parse(labels)?;
    let (mapped, unmapped) = crate::labels::map_classes(&set, classes)?;
    if !unmapped.is_empty() {
        bail!(
            "--labels {labels}: no label stands for the class(es) {}; add them, or map them \
             with `label: wording => Class`",
            unmapped.join(", ")
        );
    }
    let used: Vec<usize> = classes.iter().map(|c| mapped[c]).collect();
    let extra: Vec<&str> = (0..set.labels.len())
        .filter(|i| !used.contains(i))
        .map(|i| set.labels[i].name.as_str())
        .collect();
    if !extra.is_empty() {
        bail!(
            "--labels {labels}: label(s) {} stand for no class of the data ({})",
            extra.join(", "),
            classes.join(", ")
        );
    }
    let (templates, origin) = clip.defaults.templates(templates, &clip.source.spec)?;
    let note = format!("templates ({origin}): {}", templates.describe());
    let template_list = templates.0.clone();
    let zs = crate::zeroshot::ZeroShotClassifier::new(clip, set, templates)?;
    let embeddings: Vec<Vec<f32>> = used
        .iter()
        .map(|&i| zs.class_embeddings()[i].clone())
        .collect();
    let info = PriorInfo {
        labels: labels.to_string(),
        templates: template_list,
        logit_scale: clip.model.logit_scale_exp(),
    };
    Ok((fit::Prior::new(&embeddings, info), note))
}

/// Trains a classifier of `clip`'s embeddings on `ex` (every class with an example), with the
/// text prior when the method resolves to `zero-shot-prior`. What the user should hear (the
/// templates used, a label set left unused) goes to `note`.
pub fn train_classifier(
    clip: &ClipEncoder,
    ex: &fit::Examples,
    settings: &TrainSettings,
    provenance: &Provenance,
    mut note: impl FnMut(&str),
) -> Result<Classifier> {
    settings.check()?;
    ex.check_every_class_has_examples(&provenance.data)?;
    let smallest = ex.per_class().into_iter().min().unwrap_or(0);
    let has_labels = settings.labels.is_some();
    let prior = if fit::resolve(settings.method, smallest, has_labels)? == Method::ZeroShotPrior {
        match settings.labels.as_deref() {
            Some(l) => {
                let (p, n) = text_prior(clip, l, &settings.templates, &ex.classes)?;
                note(&n);
                Some(p)
            }
            None => None,
        }
    } else {
        if has_labels {
            note(&format!(
                "--method auto is linear with {smallest} or more examples a class (measured \
                 better than the prior from two on): --labels is not used"
            ));
        }
        None
    };
    let started = std::time::Instant::now();
    let opts = fit::Options {
        method: settings.method,
        c: settings.c,
        seed: settings.seed,
        logit_scale: clip.model.logit_scale_exp(),
    };
    let trained = fit::train(ex, prior.as_ref(), &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    let training_accuracy = fit::accuracy(ex, &trained.weight, &trained.bias)?;
    let used_prior = trained.method == Method::ZeroShotPrior;
    Ok(Classifier {
        info: ClassifierInfo {
            format: FORMAT.into(),
            version: VERSION,
            classes: ex.classes.clone(),
            method: trained.method,
            model: ModelIdentity {
                spec: clip.source.spec.clone(),
                fingerprint: crate::cache::model_fingerprint(&clip.source.dir)?
                    .to_hex()
                    .to_string(),
            },
            embedding_dim: ex.dim,
            regularisation: trained.regularisation.clone(),
            prior: prior.filter(|_| used_prior).map(|p| p.info),
            training: TrainingSummary {
                data: provenance.data.clone(),
                split: provenance.split.clone(),
                examples: ex.len(),
                per_class: ex.per_class(),
                shots: provenance.shots,
                seed: settings.seed,
                training_accuracy,
                iterations: trained.iterations,
                seconds,
                skyscribe_version: env!("CARGO_PKG_VERSION").into(),
            },
        },
        weight: trained.weight,
        bias: trained.bias,
    })
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// What labels an image: a label set's zero-shot classifier or a learned one — the same
/// questions asked of either by `labels`, `describe`, `scan` and `serve`.
// One per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Scorer {
    ZeroShot(crate::zeroshot::ZeroShotClassifier),
    Learned(Classifier),
}

impl Scorer {
    /// Label or class names, in score order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Scorer::ZeroShot(z) => z.labels.labels.iter().map(|l| l.name.clone()).collect(),
            Scorer::Learned(c) => c.classes().to_vec(),
        }
    }

    pub fn probabilities(&self, image_embedding: &[f32]) -> Vec<f32> {
        match self {
            Scorer::ZeroShot(z) => z.probabilities(image_embedding),
            Scorer::Learned(c) => c.probabilities(image_embedding),
        }
    }

    pub fn ranked(&self, image_embedding: &[f32], top_k: Option<usize>) -> Vec<LabelScore> {
        match self {
            Scorer::ZeroShot(z) => z.ranked(image_embedding, top_k),
            Scorer::Learned(c) => c.ranked(image_embedding, top_k),
        }
    }

    /// Each label on its own: the cosine similarity to its text for zero-shot; a learned
    /// classifier has no text to compare with, so its class probabilities.
    pub fn similarities(&self, image_embedding: &[f32]) -> Vec<f32> {
        match self {
            Scorer::ZeroShot(z) => z.similarities(image_embedding),
            Scorer::Learned(c) => c.probabilities(image_embedding),
        }
    }
}
