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
