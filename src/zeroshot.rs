//! Zero-shot labelling: a label set's text embeddings (computed once; template and synonym
//! ensembles averaged as CLIP's paper does), and the softmax of `exp(logit_scale) · cosine`
//! over the labels, as `CLIPModel`'s `logits_per_image`.

use anyhow::Result;
use serde::Serialize;

use crate::encoder::ClipEncoder;
pub use crate::encoder::normalized;
use crate::labels::{LabelSet, Templates};

/// One label's score for one image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// A label set turned into unit-length text embeddings, ready to score images.
#[derive(Clone)]
pub struct ZeroShotClassifier {
    pub labels: LabelSet,
    pub templates: Templates,
    /// One unit vector per label.
    class_embeddings: Vec<Vec<f32>>,
    logit_scale: f32,
}

impl ZeroShotClassifier {
    /// Embeds every prompt of every label once. A label's embedding is the mean of its
    /// L2-normalised prompt embeddings (all wordings × all templates), normalised again; with a
    /// single prompt this is exactly CLIP's normalised text embedding.
    pub fn new(clip: &ClipEncoder, labels: LabelSet, templates: Templates) -> Result<Self> {
        let prompts: Vec<Vec<String>> =
            labels.labels.iter().map(|l| templates.prompts(l)).collect();
        let flat: Vec<String> = prompts.iter().flatten().cloned().collect();
        let embeds = clip.embed_texts(&flat, 64)?;
        let mut class_embeddings = Vec::with_capacity(prompts.len());
        let mut it = embeds.into_iter();
        for p in &prompts {
            let dim = clip.model.config().projection_dim;
            let mut mean = vec![0f32; dim];
            for _ in 0..p.len() {
                let e = normalized(&it.next().expect("one embedding per prompt"));
                for (m, x) in mean.iter_mut().zip(e) {
                    *m += x / p.len() as f32;
                }
            }
            class_embeddings.push(normalized(&mean));
        }
        Ok(Self {
            labels,
            templates,
            class_embeddings,
            logit_scale: clip.model.logit_scale_exp(),
        })
    }

    pub fn class_embeddings(&self) -> &[Vec<f32>] {
        &self.class_embeddings
    }

    /// Probabilities over the labels (in label-set order) for one image embedding.
    pub fn probabilities(&self, image_embedding: &[f32]) -> Vec<f32> {
        let img = normalized(image_embedding);
        let logits: Vec<f32> = self
            .class_embeddings
            .iter()
            .map(|c| self.logit_scale * c.iter().zip(&img).map(|(a, b)| a * b).sum::<f32>())
            .collect();
        softmax(&logits)
    }

    /// The cosine similarity of one image embedding to each label's text embedding (in
    /// label-set order): each label on its own, where [`Self::probabilities`] are the labels'
    /// shares of one softmax (a label scores low there when another wins).
    pub fn similarities(&self, image_embedding: &[f32]) -> Vec<f32> {
        let img = normalized(image_embedding);
        self.class_embeddings
            .iter()
            .map(|c| c.iter().zip(&img).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    }

    /// Labels with their scores, highest first; `top_k` keeps the first k.
    pub fn ranked(&self, image_embedding: &[f32], top_k: Option<usize>) -> Vec<LabelScore> {
        let probs = self.probabilities(image_embedding);
        let mut out: Vec<LabelScore> = self
            .labels
            .labels
            .iter()
            .zip(probs)
            .map(|(l, score)| LabelScore {
                label: l.name.clone(),
                score,
            })
            .collect();
        // Stable sort: ties keep label-set order.
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        if let Some(k) = top_k {
            out.truncate(k);
        }
        out
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
        let big = softmax(&[1000.0, 1000.0]);
        assert_eq!(big, vec![0.5, 0.5]);
    }

    #[test]
    fn cosine_and_normalize() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(normalized(&[3.0, 4.0]), vec![0.6, 0.8]);
    }
}
