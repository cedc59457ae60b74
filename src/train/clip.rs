//! `skyscribe train clip`: contrastive training of CLIP on captioned images, from a pretrained
//! model (fine-tuning) or from a configuration (from scratch).
//!
//! Each step takes a batch of images, one random caption of each, augments the images as
//! overhead imagery allows (random resized crop, horizontal and vertical flips, 90° rotations,
//! mild brightness/contrast jitter) and minimises CLIP's symmetric cross-entropy over the
//! batch's image–text similarities, scaled by the learned temperature. Validation (held-out
//! images, no augmentation, their first caption) reports the loss and retrieval recall@1/5/10.
//! The output folder is a CLIP directory in the Hugging Face layout. The loop itself is
//! [`super::run`]'s.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{Device, Tensor, Var};
use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::run::{Plan, RunOptions, Start, TrainSummary, Trainer, train};
use super::{Decay, masked_cross_entropy, rng_for, snapshot, validation_split};
use crate::data::{CaptionedImages, open_captions};
use crate::imagery::{self, DecodeOptions, Preprocessor, RgbImage};
use crate::models::clip::{ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig, l2_normalize};
use crate::models::layers::Activation;
use crate::models::weights::Weights;
use crate::tokenizer::TextTokenizer;

/// What `train clip` was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct ClipTrainOptions {
    #[serde(flatten)]
    pub run: RunOptions,
    /// A pretrained CLIP to fine-tune (directory or hub id)…
    pub init: Option<String>,
    /// …or the shapes of one to train from scratch: `mini`, `mini-128` or a CLIP `config.json`.
    pub config: Option<String>,
    /// Random crops, flips, rotations and colour jitter of the training images.
    pub augment: bool,
    /// The sentences a training image is paired with. (This and `label_smoothing` are left
    /// out of the recorded options at their defaults, so earlier checkpoints resume.)
    #[serde(skip_serializing_if = "CaptionPool::is_original")]
    pub captions: CaptionPool,
    /// Label smoothing of the contrastive targets (training loss only; validation reports the
    /// plain loss, comparable across runs).
    #[serde(skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// The share of augmented views rendered at a coarser ground resolution (see [`augment`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub low_res_views: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Which sentences of an image CLIP trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionPool {
    /// The image's captions (the references).
    #[default]
    Original,
    /// RSICD's `augmented` sentences: five per image, where the originals' repeats were
    /// replaced by back-translated paraphrases.
    Augmented,
    /// Both, without duplicates.
    Both,
}

impl CaptionPool {
    fn is_original(&self) -> bool {
        *self == Self::Original
    }

    /// The sentences of `item` in this pool; `None` when the data has no augmented ones.
    pub fn sentences(&self, item: &crate::data::CaptionedImage) -> Option<Vec<String>> {
        let mut out = match self {
            Self::Original => return Some(item.captions.clone()),
            Self::Augmented => item.augmented.clone(),
            Self::Both => item
                .captions
                .iter()
                .chain(&item.augmented)
                .cloned()
                .collect(),
        };
        if item.augmented.is_empty() {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|s| seen.insert(s.clone()));
        Some(out)
    }
}

/// Fine-tuning defaults (roughly CLIP-rsicd's): batch 128, lr 1e-5 after 100 warm-up steps,
/// weight decay 0.1, 10 epochs.
impl Default for ClipTrainOptions {
    fn default() -> Self {
        Self {
            run: RunOptions {
                batch_size: 128,
                lr: 1e-5,
                warmup: 100,
                weight_decay: 0.1,
                ..RunOptions::default()
            },
            init: None,
            config: None,
            augment: true,
            captions: CaptionPool::Original,
            label_smoothing: 0.0,
            low_res_views: 0.0,
        }
    }
}

impl ClipTrainOptions {
    /// Defaults for a model trained from scratch: lr 5e-4 after 200 warm-up steps.
    pub fn from_scratch() -> Self {
        let mut o = Self::default();
        o.run.lr = 5e-4;
        o.run.warmup = 200;
        o
    }
}

/// The mini CLIP: `image_size`-pixel images (presets `mini`: 64, `mini-128`: 128) in 16-pixel
/// patches, 4 vision and 3 text layers of width 192, 32-token context; `vocab_size` and the end
/// token come from its tokenizer.
pub fn mini_clip(vocab_size: usize, end_token: u32, image_size: usize) -> ClipConfig {
    ClipConfig {
        text_config: ClipTextConfig {
            vocab_size,
            hidden_size: 192,
            intermediate_size: 768,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            max_position_embeddings: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: end_token,
        },
        vision_config: ClipVisionConfig {
            hidden_size: 192,
            intermediate_size: 768,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_channels: 3,
            image_size,
            patch_size: 16,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        projection_dim: 192,
        logit_scale_init_value: 2.6592,
    }
}

/// `preprocessor_config.json` of a model taking `size`-pixel images, as CLIP's processor.
fn preprocessor_json(size: usize) -> serde_json::Value {
    serde_json::json!({
        "crop_size": {"height": size, "width": size},
        "do_center_crop": true,
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_rescale": true,
        "do_resize": true,
        "image_mean": imagery::CLIP_MEAN,
        "image_std": imagery::CLIP_STD,
        "image_processor_type": "CLIPImageProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255.0,
        "size": {"shortest_edge": size}
    })
}

/// The images of a run, decoded once and kept at up to twice the model's resolution.
struct ImageBank {
    images: Vec<RgbImage>,
}

impl ImageBank {
    fn load(data: &CaptionedImages, size: usize, quiet: bool) -> Result<Self> {
        let pb = crate::progress::items(data.items.len(), "images", "decoding", quiet);
        let keep = (2 * size) as u32;
        let images = data
            .items
            .par_iter()
            .map(|item| {
                let img = imagery::load_rgb(&item.path, &DecodeOptions::default())?;
                pb.inc(1);
                let short = img.width.min(img.height);
                if short <= keep {
                    return Ok(img);
                }
                let (w, h) = (
                    (img.width as u64 * keep as u64 / short as u64) as u32,
                    (img.height as u64 * keep as u64 / short as u64) as u32,
                );
                imagery::resize_rgb(&img, w.max(1), h.max(1), 2)
            })
            .collect::<Result<Vec<_>>>()?;
        pb.finish_and_clear();
        Ok(Self { images })
    }
}

/// One augmented view of `img` as `(3, size, size)` floats, rescaled and normalised as the
/// model's `preprocessor` does: a random crop of 50–100 % of the area (aspect 3:4 to 4:3)
/// resampled bilinearly, flips, a quarter-turn rotation, and ±10 % brightness and contrast.
/// With probability `low_res_views` the view is then coarsened to a random `r × r`,
/// `size / 4 ≤ r < size`, and scaled back up ([`coarsen`]): archives mix sensors whose ground
/// resolution differs by an order of magnitude (RSICD's aerial photos against Sentinel-2's
/// 10 m), and a model that only saw sharp views ties its concepts to the sharp detail.
pub fn augment(
    img: &RgbImage,
    size: usize,
    preprocessor: &Preprocessor,
    low_res_views: f64,
    rng: &mut impl Rng,
) -> Vec<f32> {
    // Jitter works on [0, 1] values; the model's own rescale and mean/std come after.
    let rescale = (255.0 * preprocessor.rescale_factor.unwrap_or(1.0)) as f32;
    let (mean, std) = preprocessor.mean_std.unwrap_or(([0.0; 3], [1.0; 3]));
    let (w, h) = (img.width as f32, img.height as f32);
    let area = w * h * rng.random_range(0.5..=1.0f32);
    let ratio = (rng.random_range((0.75f32).ln()..=(4.0f32 / 3.0).ln())).exp();
    let cw = (area * ratio).sqrt().min(w);
    let ch = (area / ratio).sqrt().min(h);
    let x0 = rng.random_range(0.0..=(w - cw));
    let y0 = rng.random_range(0.0..=(h - ch));
    let flip_x = rng.random_bool(0.5);
    let flip_y = rng.random_bool(0.5);
    let turns = rng.random_range(0..4u8);
    let brightness = rng.random_range(0.9..=1.1f32);
    let contrast = rng.random_range(0.9..=1.1f32);
    let n = size * size;
    let mut out = vec![0f32; 3 * n];
    let sample = |x: f32, y: f32, c: usize| -> f32 {
        let x = (x - 0.5).clamp(0.0, w - 1.0);
        let y = (y - 0.5).clamp(0.0, h - 1.0);
        let (xi, yi) = (x.floor() as u32, y.floor() as u32);
        let (fx, fy) = (x - xi as f32, y - yi as f32);
        let x1 = (xi + 1).min(img.width - 1);
        let y1 = (yi + 1).min(img.height - 1);
        let px = |xx: u32, yy: u32| img.pixels[((yy * img.width + xx) * 3) as usize + c] as f32;
        let top = px(xi, yi) * (1.0 - fx) + px(x1, yi) * fx;
        let bottom = px(xi, y1) * (1.0 - fx) + px(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    let s = size as f32;
    for oy in 0..size {
        for ox in 0..size {
            // Output pixel → unit square (rotated, flipped) → source crop.
            let (mut u, mut v) = ((ox as f32 + 0.5) / s, (oy as f32 + 0.5) / s);
            for _ in 0..turns {
                (u, v) = (v, 1.0 - u);
            }
            if flip_x {
                u = 1.0 - u;
            }
            if flip_y {
                v = 1.0 - v;
            }
            let (sx, sy) = (x0 + u * cw, y0 + v * ch);
            for c in 0..3 {
                let value = sample(sx, sy, c) / 255.0;
                let value = ((value - 0.5) * contrast + 0.5) * brightness * rescale;
                out[c * n + oy * size + ox] = (value - mean[c]) / std[c];
            }
        }
    }
    // Drawn only when asked for, so runs without it keep their random stream.
    if low_res_views > 0.0 && rng.random_bool(low_res_views) {
        let r = rng.random_range((size / 4).max(1)..size.max(2));
        coarsen(&mut out, size, r);
    }
    out
}

/// `planes` (channel planes of `size × size`) as a sensor of `r × r` pixels would have seen
/// them: box-averaged down to `r × r`, then scaled back up bilinearly (half-pixel centres).
/// Both steps are linear with weights summing to one, so they commute with the per-channel
/// normalisation already applied.
pub fn coarsen(planes: &mut [f32], size: usize, r: usize) {
    if r == 0 || r >= size {
        return;
    }
    let n = size * size;
    // Source pixels [lo, hi) of low-resolution pixel i along one axis (never empty).
    let span = |i: usize| {
        let lo = i * size / r;
        (lo, ((i + 1) * size / r).max(lo + 1))
    };
    // Bilinear taps of output pixel o along one axis: (left, right, weight of right).
    let taps = |o: usize| {
        let x = ((o as f32 + 0.5) * r as f32 / size as f32 - 0.5).clamp(0.0, (r - 1) as f32);
        let left = x.floor() as usize;
        (left, (left + 1).min(r - 1), x - left as f32)
    };
    let mut low = vec![0f32; r * r];
    for plane in planes.chunks_mut(n) {
        for ly in 0..r {
            let (y0, y1) = span(ly);
            for lx in 0..r {
                let (x0, x1) = span(lx);
                let mut sum = 0.0;
                for y in y0..y1 {
                    sum += plane[y * size + x0..y * size + x1].iter().sum::<f32>();
                }
                low[ly * r + lx] = sum / ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
        for oy in 0..size {
            let (ya, yb, fy) = taps(oy);
            for ox in 0..size {
                let (xa, xb, fx) = taps(ox);
                let top = low[ya * r + xa] * (1.0 - fx) + low[ya * r + xb] * fx;
                let bottom = low[yb * r + xa] * (1.0 - fx) + low[yb * r + xb] * fx;
                plane[oy * size + ox] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
}

/// The model being trained.
pub struct ClipTrainee {
    pub model: ClipModel,
    pub vars: Vec<(String, Var)>,
    logit_scale: Var,
}

impl ClipTrainee {
    pub fn new(config: ClipConfig, weights: Weights) -> Result<Self> {
        let weights = weights.trainable();
        let model = ClipModel::new(config, &weights)?;
        let vars = weights.vars();
        let logit_scale = vars
            .iter()
            .find(|(n, _)| n == "logit_scale")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("the model has no logit_scale"))?;
        Ok(Self {
            model,
            vars,
            logit_scale,
        })
    }

    /// Normalised image and text embeddings of a batch.
    pub fn embed(&self, pixels: &Tensor, ids: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let img = l2_normalize(&self.model.image_features(pixels)?)?;
        let txt = l2_normalize(&self.model.text_features(ids)?)?;
        Ok((img, txt))
    }

    /// CLIP's symmetric InfoNCE loss of matching rows.
    pub fn loss(&self, img: &Tensor, txt: &Tensor) -> Result<Tensor> {
        self.smoothed_loss(img, txt, 0.0)
    }

    /// The same with label smoothing `epsilon`: each row's target puts `1 − ε` on its match
    /// and spreads `ε` uniformly over the batch (as `torch`'s `label_smoothing`).
    pub fn smoothed_loss(&self, img: &Tensor, txt: &Tensor, epsilon: f64) -> Result<Tensor> {
        contrastive_loss(img, txt, &self.logit_scale.as_tensor().exp()?, epsilon)
    }

    /// CLIP clamps the temperature so that the scale stays at most 100.
    fn clamp_temperature(&self) -> Result<()> {
        let v = self.logit_scale.as_tensor().to_scalar::<f32>()?;
        let max = 100f32.ln();
        if v > max || v < 0.0 {
            self.logit_scale
                .set(&Tensor::new(v.clamp(0.0, max), self.logit_scale.device())?)?;
        }
        Ok(())
    }
}

/// CLIP's symmetric cross-entropy of the `scale`d similarities of matching rows, with label
/// smoothing `epsilon`.
fn contrastive_loss(img: &Tensor, txt: &Tensor, scale: &Tensor, epsilon: f64) -> Result<Tensor> {
    let b = img.dim(0)?;
    let logits = img.matmul(&txt.t()?)?.broadcast_mul(scale)?;
    let device = img.device();
    let targets = Tensor::arange(0u32, b as u32, device)?;
    let ones = Tensor::ones(b, candle_core::DType::F32, device)?;
    let mut total = Tensor::zeros((), candle_core::DType::F32, device)?;
    for l in [logits.clone(), logits.t()?.contiguous()?] {
        let mut term = masked_cross_entropy(&l, &targets, &ones)?;
        if epsilon > 0.0 {
            term = ((term * (1.0 - epsilon))? + (uniform_cross_entropy(&l)? * epsilon)?)?;
        }
        total = (total + term)?;
    }
    Ok((total * 0.5)?)
}

/// The mean over rows of the cross-entropy against a uniform target: `−mean_j log softmax(l)_j`.
fn uniform_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    Ok((logp.mean_all()? * -1.0)?)
}

/// Recall@k of image→text and text→image retrieval where row i of both matches.
pub fn retrieval_recalls(img: &[Vec<f32>], txt: &[Vec<f32>]) -> BTreeMap<String, f64> {
    let n = img.len();
    let sims: Vec<Vec<f32>> = img
        .iter()
        .map(|a| {
            txt.iter()
                .map(|b| a.iter().zip(b).map(|(x, y)| x * y).sum())
                .collect()
        })
        .collect();
    let mut out = BTreeMap::new();
    for k in [1usize, 5, 10] {
        let i2t = (0..n)
            .filter(|&i| sims[i].iter().filter(|&&s| s > sims[i][i]).count() < k)
            .count();
        let t2i = (0..n)
            .filter(|&j| (0..n).filter(|&i| sims[i][j] > sims[j][j]).count() < k)
            .count();
        out.insert(format!("image_to_text_r@{k}"), i2t as f64 / n.max(1) as f64);
        out.insert(format!("text_to_image_r@{k}"), t2i as f64 / n.max(1) as f64);
    }
    out
}

/// A CLIP being trained on a captioned image set: what [`super::run::train`] needs.
struct ClipRun<'a> {
    trainee: ClipTrainee,
    opts: &'a ClipTrainOptions,
    /// The training sentences of every image (`--captions`).
    sentences: Vec<Vec<String>>,
    bank: ImageBank,
    /// Indices into `data` of the training and validation images.
    train_images: Vec<usize>,
    val_images: Vec<usize>,
    /// Validation inputs, prepared once: pixels without augmentation, first captions.
    val_pixels: Vec<Vec<f32>>,
    val_texts: Vec<String>,
    tokenizer: TextTokenizer,
    preprocessor: Preprocessor,
    size: usize,
    device: Device,
}

impl ClipRun<'_> {
    /// `(B, 3, S, S)` pixels of flattened per-image rows.
    fn pixel_tensor(&self, rows: Vec<Vec<f32>>) -> Result<Tensor> {
        let n = rows.len();
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(Tensor::from_vec(
            flat,
            (n, 3, self.size, self.size),
            &self.device,
        )?)
    }
}

impl Trainer for ClipRun<'_> {
    fn vars(&self) -> &[(String, Var)] {
        &self.trainee.vars
    }

    fn loss(&self, batch: &[usize], step: usize) -> Result<Tensor> {
        let images: Vec<usize> = batch.iter().map(|&p| self.train_images[p]).collect();
        // Every random choice of this step comes from (seed, step): resumable exactly.
        let mut rng = rng_for(self.opts.run.seed, "clip-step", step as u64);
        let seeds: Vec<u64> = images.iter().map(|_| rng.random()).collect();
        let texts: Vec<String> = images
            .iter()
            .map(|&i| {
                let caps = &self.sentences[i];
                caps[rng.random_range(0..caps.len())].clone()
            })
            .collect();
        let pixels: Vec<Vec<f32>> = images
            .par_iter()
            .zip(&seeds)
            .map(|(&i, &s)| {
                let img = &self.bank.images[i];
                if self.opts.augment {
                    let mut rng = rng_for(s, "augment", 0);
                    Ok(augment(
                        img,
                        self.size,
                        &self.preprocessor,
                        self.opts.low_res_views,
                        &mut rng,
                    ))
                } else {
                    self.preprocessor.preprocess(img)
                }
            })
            .collect::<Result<_>>()?;
        let ids = self.tokenizer.encode_batch_padded(&texts)?;
        let (img, txt) = self.trainee.embed(&self.pixel_tensor(pixels)?, &ids)?;
        self.trainee
            .smoothed_loss(&img, &txt, self.opts.label_smoothing)
    }

    fn after_update(&self) -> Result<()> {
        self.trainee.clamp_temperature()
    }

    fn validate(&self) -> Result<(Option<f64>, BTreeMap<String, f64>)> {
        if self.val_images.len() < 2 {
            return Ok((None, BTreeMap::new()));
        }
        let (mut imgs, mut txts) = (Vec::new(), Vec::new());
        for (p, s) in self.val_pixels.chunks(128).zip(self.val_texts.chunks(128)) {
            let ids = self.tokenizer.encode_batch_padded(s)?;
            let (i, t) = self.trainee.embed(&self.pixel_tensor(p.to_vec())?, &ids)?;
            imgs.extend(i.detach().to_vec2::<f32>()?);
            txts.extend(t.detach().to_vec2::<f32>()?);
        }
        // The loss over fixed batches of the batch size, so it compares across epochs.
        let batch = self.opts.run.batch_size;
        let (mut sum, mut n) = (0.0, 0);
        for (a, b) in imgs.chunks(batch).zip(txts.chunks(batch)) {
            if a.len() < 2 {
                continue;
            }
            let ia = Tensor::new(a.to_vec(), &self.device)?;
            let tb = Tensor::new(b.to_vec(), &self.device)?;
            sum += self.trainee.loss(&ia, &tb)?.to_scalar::<f32>()? as f64;
            n += 1;
        }
        Ok((
            (n > 0).then(|| sum / n as f64),
            retrieval_recalls(&imgs, &txts),
        ))
    }

    fn weights(&self) -> HashMap<String, Tensor> {
        snapshot(&self.trainee.vars, &HashMap::new())
    }
}

/// Trains (or resumes training) a CLIP into `opts.run.out`.
pub fn train_clip(opts: &ClipTrainOptions, device: &Device) -> Result<TrainSummary> {
    opts.run.check()?;
    if opts.run.batch_size < 2 {
        bail!("--batch-size must be at least 2 (the loss contrasts the images of a batch)");
    }
    if !(0.0..=1.0).contains(&opts.low_res_views) {
        bail!(
            "--low-res-views must be in [0, 1], not {}",
            opts.low_res_views
        );
    }
    if opts.low_res_views > 0.0 && !opts.augment {
        bail!("--low-res-views is an augmentation: it cannot be combined with --no-augment");
    }
    if !(0.0..1.0).contains(&opts.label_smoothing) {
        bail!(
            "--label-smoothing must be in [0, 1), not {}",
            opts.label_smoothing
        );
    }
    let init_dir = match (&opts.init, &opts.config) {
        (Some(spec), None) => Some(crate::hub::resolve_clip(spec)?),
        (None, Some(_)) => None,
        _ => bail!("give exactly one of --init (fine-tune) and --config (from scratch)"),
    };
    let start = Start::new(&opts.run, serde_json::to_value(opts)?, device)?;
    let out = &opts.run.out;
    let data = open_captions(&opts.run.data)?;

    // Tokenizer, shapes and preprocessing: copied or made on a fresh start, read back after.
    let tokenizer_path = out.join("tokenizer.json");
    let preprocessor_path = out.join("preprocessor_config.json");
    if !start.is_resumed() {
        match (&init_dir, &opts.run.tokenizer) {
            (Some(dir), _) => crate::atomic::write_file(
                &tokenizer_path,
                &crate::builtin::clip_tokenizer_json(&dir.dir)?,
            )?,
            (None, Some(path)) => crate::atomic::copy_file(path, &tokenizer_path)?,
            (None, None) => {
                let texts: Vec<String> = data
                    .items
                    .iter()
                    .flat_map(|i| i.captions.iter().cloned())
                    .collect();
                let tok = super::bpe::train_bpe(&texts, opts.run.vocab_size)?;
                super::bpe::save(&tok, &tokenizer_path)?;
            }
        }
    }
    let raw_tokenizer = crate::tokenizer::load_json(&tokenizer_path)?;
    let config = match (&init_dir, opts.config.as_deref()) {
        (Some(dir), _) => ClipConfig::from_file(&dir.file("config.json"))?,
        (None, Some(preset @ ("mini" | "mini-128"))) => mini_clip(
            raw_tokenizer.get_vocab_size(true),
            raw_tokenizer
                .token_to_id(super::bpe::END)
                .ok_or_else(|| anyhow!("{}: no end token", tokenizer_path.display()))?,
            if preset == "mini" { 64 } else { 128 },
        ),
        (None, Some(file)) => ClipConfig::from_file(Path::new(file))?,
        (None, None) => unreachable!("checked above"),
    };
    config.validate().context("impossible CLIP configuration")?;
    if raw_tokenizer.get_vocab_size(true) > config.text_config.vocab_size {
        bail!(
            "the tokenizer has {} tokens but the text tower's vocabulary is {}",
            raw_tokenizer.get_vocab_size(true),
            config.text_config.vocab_size
        );
    }
    let size = config.vision_config.image_size;
    let tokenizer = TextTokenizer::new(raw_tokenizer, config.text_config.max_position_embeddings);
    if !start.is_resumed() {
        match &init_dir {
            Some(dir) => {
                crate::atomic::copy_file(&dir.file("preprocessor_config.json"), &preprocessor_path)?
            }
            None => crate::atomic::write_file(
                &preprocessor_path,
                serde_json::to_string_pretty(&preprocessor_json(size))?.as_bytes(),
            )?,
        }
    }
    let preprocessor = Preprocessor::from_file(&preprocessor_path)?;
    // A fine-tuned model starts with its base's usage defaults (templates, vocabulary).
    if let Some(dir) = init_dir.as_ref().filter(|_| !start.is_resumed()) {
        let defaults = dir.file(crate::hub::DEFAULTS_FILE);
        if defaults.is_file() {
            crate::atomic::copy_file(&defaults, &out.join(crate::hub::DEFAULTS_FILE))?;
        }
    }
    crate::atomic::write_file(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;

    // Starting weights: the checkpoint's, the pretrained model's, or new ones.
    let weights = match (start.resumed_weights(), &init_dir) {
        (Some(file), _) => Weights::from_file(file, device)?,
        (None, Some(dir)) => Weights::from_model_dir(&dir.dir, device)?,
        (None, None) => Weights::init(opts.run.seed, device),
    };
    let trainee = ClipTrainee::new(config, weights)?;

    // Images in memory; validation images held out whole.
    let bank = ImageBank::load(&data, size, opts.run.quiet)?;
    let (train_images, val_images) =
        validation_split(opts.run.seed, data.items.len(), opts.run.val_fraction);
    if train_images.len() < 2 {
        bail!("{}: too few images to train on", opts.run.data);
    }
    if !opts.run.quiet && (2..=10).contains(&val_images.len()) {
        crate::progress::say(
            &indicatif::ProgressBar::hidden(),
            &format!(
                "note: {} validation images: retrieval recall@k is 1 by construction for k ≥ {}",
                val_images.len(),
                val_images.len()
            ),
        );
    }
    let val_pixels: Vec<Vec<f32>> = val_images
        .par_iter()
        .map(|&i| preprocessor.preprocess(&bank.images[i]))
        .collect::<Result<_>>()?;
    let val_texts: Vec<String> = val_images
        .iter()
        .map(|&i| data.items[i].captions[0].clone())
        .collect();
    let sentences = data
        .items
        .iter()
        .map(|item| {
            opts.captions.sentences(item).ok_or_else(|| {
                anyhow!(
                    "{}: image {} has no `augmented` sentences for --captions {:?}; use \
                     --captions original",
                    opts.run.data,
                    item.path.display(),
                    opts.captions
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = Plan {
        examples: train_images.len(),
        drop_last: true,
        decay: Decay::Cosine,
    };
    let run = ClipRun {
        trainee,
        opts,
        sentences,
        bank,
        train_images,
        val_images,
        val_pixels,
        val_texts,
        tokenizer,
        preprocessor,
        size,
        device: device.clone(),
    };
    train(&run, start, plan, &opts.run, "train clip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_pools_pick_and_deduplicate_sentences() {
        let mut item = crate::data::CaptionedImage {
            path: "a.jpg".into(),
            captions: vec!["a b .".into(), "c d .".into()],
            augmented: vec!["a b .".into(), "A b.".into(), "A b.".into()],
        };
        assert_eq!(
            CaptionPool::Original.sentences(&item).unwrap(),
            ["a b .", "c d ."]
        );
        assert_eq!(
            CaptionPool::Augmented.sentences(&item).unwrap(),
            ["a b .", "A b."]
        );
        assert_eq!(
            CaptionPool::Both.sentences(&item).unwrap(),
            ["a b .", "c d .", "A b."]
        );
        item.augmented.clear();
        assert!(CaptionPool::Both.sentences(&item).is_none());
        assert_eq!(CaptionPool::Original.sentences(&item).unwrap().len(), 2);
    }

    #[test]
    fn label_smoothing_mixes_in_the_uniform_target() {
        // Similarities [[1, 0.5], [0, 1]], scale 2: logits [[2, 1], [0, 2]].
        let dev = Device::Cpu;
        let img = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let txt = Tensor::new(&[[1f32, 0.0], [0.5, 1.0]], &dev).unwrap();
        let scale = Tensor::new(2f32, &dev).unwrap();
        let logits = [[2f64, 1.0], [0.0, 2.0]];
        let nll = |row: [f64; 2], k: usize| {
            let lse = (row[0].exp() + row[1].exp()).ln();
            lse - row[k]
        };
        let rows = |t: bool| -> Vec<[f64; 2]> {
            (0..2)
                .map(|i| {
                    if t {
                        [logits[0][i], logits[1][i]]
                    } else {
                        logits[i]
                    }
                })
                .collect()
        };
        let eps = 0.2;
        let mut want = 0.0;
        for t in [false, true] {
            for (i, r) in rows(t).into_iter().enumerate() {
                let smooth = (nll(r, 0) + nll(r, 1)) / 2.0;
                want += ((1.0 - eps) * nll(r, i) + eps * smooth) / 2.0;
            }
        }
        want /= 2.0;
        let got = contrastive_loss(&img, &txt, &scale, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let plain = contrastive_loss(&img, &txt, &scale, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((plain - got).abs() > 1e-3, "smoothing changed nothing");
    }

    #[test]
    fn augmentation_normalises_with_the_models_own_statistics() {
        // A mid-grey image: crops, flips and rotations leave it grey, the jitter moves it by at
        // most 10 %, so every value is (0.5 ± 0.05 − mean) / std of the model's preprocessor.
        let img = RgbImage {
            width: 32,
            height: 32,
            pixels: vec![128; 32 * 32 * 3],
        };
        let mut p = Preprocessor::clip_default(16);
        p.mean_std = Some(([0.9; 3], [0.05; 3]));
        let v = 128.0 / 255.0;
        let (lo, hi) = ((v * 0.9 * 0.9 - 0.9) / 0.05, (v * 1.1 - 0.9) / 0.05);
        for seed in 0..8 {
            let out = augment(&img, 16, &p, 1.0, &mut rng_for(seed, "t", 0));
            assert_eq!(out.len(), 3 * 16 * 16);
            for x in out {
                assert!(x >= lo - 1e-4 && x <= hi + 1e-4, "{x} outside [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn coarsening_keeps_the_mean_and_removes_fine_detail() {
        // A one-pixel checkerboard (±1) over a ramp: at 3 × 3 of 12 × 12 every box holds as
        // many +1 as −1, so only the ramp survives, and every value stays within its range.
        let size = 12;
        let ramp = |x: usize| x as f32 / size as f32;
        let plane: Vec<f32> = (0..size * size)
            .map(|i| {
                let (x, y) = (i % size, i / size);
                ramp(x) + if (x + y) % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        let mut planes = [plane.clone(), vec![0.25; size * size]].concat();
        coarsen(&mut planes, size, 3);
        let (coarse, flat) = planes.split_at(size * size);
        assert!(
            flat.iter().all(|&v| (v - 0.25).abs() < 1e-6),
            "a flat plane changed"
        );
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(coarse) - mean(&plane)).abs() < 1e-3);
        for (i, &v) in coarse.iter().enumerate() {
            // Box averages of the ramp: 0.125, 0.458, 0.792; bilinear between them.
            assert!((0.12..=0.80).contains(&v), "pixel {i}: {v}");
        }
        // Left to right it still rises: the coarse view keeps what a coarse sensor sees.
        assert!(coarse[size / 2 * size] < coarse[size / 2 * size + size - 1]);
        // At full resolution nothing changes.
        let mut same = plane.clone();
        coarsen(&mut same, size, size);
        assert_eq!(same, plane);
    }
}

/// What [`step_time`] measured.
#[derive(Debug, Serialize)]
pub struct ClipStepReport {
    pub what: String,
    pub batch_size: usize,
    pub threads: usize,
    /// Medians over `steps` timed steps.
    #[serde(flatten)]
    pub times: super::StepTimes,
    pub steps: usize,
    pub device: String,
}

/// Contrastive training steps of a ViT-B/32 CLIP (openai/clip-vit-base-patch32's shapes) from
/// fresh weights, on random pixels and random 77-token texts (`scripts/bench/bench_clip_step.py` is
/// the same step in transformers + torch).
pub fn step_time(device: &Device, batch_size: usize, steps: usize) -> Result<ClipStepReport> {
    use rand::SeedableRng;
    if steps == 0 || batch_size < 2 {
        bail!("--steps must be positive and --batch-size at least 2 (a contrastive batch)");
    }
    let config = ClipConfig::vit_base_patch32();
    let (size, context) = (
        config.vision_config.image_size,
        config.text_config.max_position_embeddings,
    );
    let vocab = config.text_config.vocab_size as u32;
    let trainee = ClipTrainee::new(config, Weights::init(0, device))?;
    let mut optimizer = super::AdamW::new(&trainee.vars, 0.1)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut times = Vec::new();
    for step in 1..=steps + 1 {
        let pixels: Vec<f32> = (0..batch_size * 3 * size * size)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let pixels = Tensor::from_vec(pixels, (batch_size, 3, size, size), device)?;
        // Random tokens below the end token, which closes every text (CLIP pools there).
        let ids: Vec<Vec<u32>> = (0..batch_size)
            .map(|_| {
                let mut row: Vec<u32> = (0..context - 1)
                    .map(|_| rng.random_range(0..vocab - 1))
                    .collect();
                row.push(vocab - 1);
                row
            })
            .collect();
        let t = super::timed_step(&mut optimizer, step, || {
            let (img, txt) = trainee.embed(&pixels, &ids)?;
            trainee.loss(&img, &txt)
        })?;
        if step > 1 {
            // The first step warms up allocations and threads.
            times.push(t);
        }
    }
    Ok(ClipStepReport {
        what: "CLIP ViT-B/32 contrastive step, all weights trained".into(),
        batch_size,
        threads: rayon::current_num_threads(),
        times: super::StepTimes::median_of(&times),
        steps,
        device: crate::models::device_label(device),
    })
}
