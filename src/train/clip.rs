//! `skyscribe train clip`: contrastive training of CLIP on captioned images, from a pretrained
//! model (fine-tuning) or from a configuration (from scratch).
//!
//! Each step takes a batch of images, one random caption of each, augments the images as
//! overhead imagery allows (random resized crop, horizontal and vertical flips, 90° rotations,
//! mild brightness/contrast jitter) and minimises CLIP's symmetric cross-entropy over the
//! batch's image–text similarities, scaled by the learned temperature. Validation (held-out
//! images, no augmentation, their first caption) reports the loss and retrieval recall@1/5/10.
//! The output folder is a CLIP directory in the Hugging Face layout.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{Device, Tensor, Var};
use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::{
    AdamW, AfterStep, Checkpoint, Decay, Schedule, StepLog, TrainState, TrainSummary,
    check_fresh_out, check_same_run, clip_grad_norm, epoch_order, masked_cross_entropy, rng_for,
    save_weights, snapshot, validation_split,
};
use crate::data::{CaptionedImages, open_captions};
use crate::imagery::{self, DecodeOptions, Preprocessor, RgbImage};
use crate::models::clip::{ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig, l2_normalize};
use crate::models::layers::Activation;
use crate::models::weights::Weights;
use crate::tokenizer::TextTokenizer;

/// What `train clip` was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct ClipTrainOptions {
    pub data: String,
    /// A pretrained CLIP to fine-tune (directory or hub id)…
    pub init: Option<String>,
    /// …or the shapes of one to train from scratch: `mini` or a CLIP `config.json`.
    pub config: Option<String>,
    pub tokenizer: Option<PathBuf>,
    pub vocab_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub val_fraction: f64,
    pub augment: bool,
    pub seed: u64,
    #[serde(skip)]
    pub save_every: usize,
    #[serde(skip)]
    pub resume: bool,
    #[serde(skip)]
    pub stop_after: Option<usize>,
    #[serde(skip)]
    pub out: PathBuf,
    #[serde(skip)]
    pub quiet: bool,
}

/// The mini CLIP: 64-pixel images in 16-pixel patches, 4 vision and 3 text layers of width 192,
/// 32-token context; `vocab_size` and the end token come from its tokenizer.
pub fn mini_clip(vocab_size: usize, end_token: u32) -> ClipConfig {
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
            image_size: 64,
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
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": size}
    })
}

/// The images of a run, decoded once and kept at up to twice the model's resolution.
struct ImageBank {
    images: Vec<RgbImage>,
}

impl ImageBank {
    fn load(data: &CaptionedImages, size: usize, quiet: bool) -> Result<Self> {
        let pb = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let pb = indicatif::ProgressBar::new(data.items.len() as u64);
            pb.set_message("decoding images");
            pb
        };
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

#[allow(clippy::excessive_precision)]
const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
const STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// One augmented view of `img` as normalised `(3, size, size)` floats: a random crop of 50–100 %
/// of the area (aspect 3:4 to 4:3) resampled bilinearly, flips, a quarter-turn rotation, and
/// ±10 % brightness and contrast.
pub fn augment(img: &RgbImage, size: usize, rng: &mut impl Rng) -> Vec<f32> {
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
                let value = ((value - 0.5) * contrast + 0.5) * brightness;
                out[c * n + oy * size + ox] = (value - MEAN[c]) / STD[c];
            }
        }
    }
    out
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
        let b = img.dim(0)?;
        let scale = self.logit_scale.as_tensor().exp()?;
        let logits = img.matmul(&txt.t()?)?.broadcast_mul(&scale)?;
        let device = img.device();
        let targets = Tensor::arange(0u32, b as u32, device)?;
        let ones = Tensor::ones(b, candle_core::DType::F32, device)?;
        let l_i = masked_cross_entropy(&logits, &targets, &ones)?;
        let l_t = masked_cross_entropy(&logits.t()?.contiguous()?, &targets, &ones)?;
        Ok(((l_i + l_t)? * 0.5)?)
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

/// Trains (or resumes training) a CLIP into `opts.out`.
pub fn train_clip(opts: &ClipTrainOptions, device: &Device) -> Result<TrainSummary> {
    let started = Instant::now();
    let out = &opts.out;
    let checkpoint = Checkpoint::new(out);
    let resumed = if opts.resume {
        Some(checkpoint.load(device)?)
    } else {
        check_fresh_out(out)?;
        None
    };
    if opts.batch_size < 2 || opts.epochs == 0 {
        bail!("--batch-size must be at least 2 (contrastive) and --epochs positive");
    }
    let data = open_captions(&opts.data)?;

    // Tokenizer, shapes and starting weights.
    let init_dir = match (&opts.init, &opts.config) {
        (Some(spec), None) => Some(crate::hub::resolve_clip(spec)?),
        (None, Some(_)) => None,
        _ => bail!("give exactly one of --init (fine-tune) and --config (from scratch)"),
    };
    let tokenizer_path = out.join("tokenizer.json");
    if resumed.is_none() {
        match (&init_dir, &opts.tokenizer) {
            (Some(dir), _) => copy_atomic(&dir.file("tokenizer.json"), &tokenizer_path)?,
            (None, Some(path)) => copy_atomic(path, &tokenizer_path)?,
            (None, None) => {
                let texts: Vec<String> = data
                    .items
                    .iter()
                    .flat_map(|i| i.captions.iter().cloned())
                    .collect();
                let tok = super::bpe::train_bpe(&texts, opts.vocab_size)?;
                super::bpe::save(&tok, &tokenizer_path)?;
            }
        }
    }
    let raw_tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
        anyhow!(
            "{}: not a valid tokenizer.json: {e}",
            tokenizer_path.display()
        )
    })?;
    let config = match (&init_dir, opts.config.as_deref()) {
        (Some(dir), _) => ClipConfig::from_file(&dir.file("config.json"))?,
        (None, Some("mini")) => mini_clip(
            raw_tokenizer.get_vocab_size(true),
            raw_tokenizer
                .token_to_id(super::bpe::END)
                .ok_or_else(|| anyhow!("{}: no end token", tokenizer_path.display()))?,
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
    let tokenizer =
        TextTokenizer::from_file(&tokenizer_path, config.text_config.max_position_embeddings)?;
    let preprocessor_path = out.join("preprocessor_config.json");
    if resumed.is_none() {
        match &init_dir {
            Some(dir) => copy_atomic(&dir.file("preprocessor_config.json"), &preprocessor_path)?,
            None => crate::eval::report::write_atomic(
                &preprocessor_path,
                serde_json::to_string_pretty(&preprocessor_json(size))?.as_bytes(),
            )?,
        }
    }
    let preprocessor = Preprocessor::from_file(&preprocessor_path)?;
    crate::eval::report::write_atomic(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;

    let options_json = serde_json::to_value(opts)?;
    let (weights, mut state) = match &resumed {
        Some((state, file, _)) => {
            check_same_run(&state.options, &options_json, out)?;
            (Weights::from_file(file, device)?, state.clone())
        }
        None => {
            let w = match &init_dir {
                Some(dir) => Weights::from_model_dir(&dir.dir, device)?,
                None => Weights::init(opts.seed, device),
            };
            (
                w,
                TrainState {
                    step: 0,
                    total_steps: 0,
                    steps_per_epoch: 0,
                    options: options_json,
                    history: vec![],
                    epoch_loss_sum: 0.0,
                    epoch_loss_count: 0,
                },
            )
        }
    };
    let trainee = ClipTrainee::new(config.clone(), weights)?;
    let mut optimizer = AdamW::new(&trainee.vars, opts.weight_decay)?;
    if let Some((_, _, moments)) = &resumed {
        optimizer.load_state(&out.join("checkpoint/optimizer.safetensors"), moments)?;
    }

    // Images in memory; validation images held out whole.
    let bank = ImageBank::load(&data, size, opts.quiet)?;
    let (train_images, val_images) =
        validation_split(opts.seed, data.items.len(), opts.val_fraction);
    if train_images.len() < 2 {
        bail!("{}: too few images to train on", opts.data);
    }
    // A batch larger than the training set is the whole set.
    let batch_size = opts.batch_size.min(train_images.len());
    if resumed.is_none() {
        state.steps_per_epoch = train_images.len() / batch_size;
        state.total_steps = state.steps_per_epoch * opts.epochs;
    }
    let val_pixels: Vec<Vec<f32>> = val_images
        .par_iter()
        .map(|&i| preprocessor.preprocess(&bank.images[i]))
        .collect::<Result<_>>()?;
    let val_texts: Vec<String> = val_images
        .iter()
        .map(|&i| data.items[i].captions[0].clone())
        .collect();

    let schedule = Schedule {
        peak: opts.lr,
        warmup: opts.warmup,
        total: state.total_steps,
        decay: Decay::Cosine,
    };
    let validate = |t: &ClipTrainee| -> Result<(Option<f64>, BTreeMap<String, f64>)> {
        if val_images.len() < 2 {
            return Ok((None, BTreeMap::new()));
        }
        let (mut imgs, mut txts) = (Vec::new(), Vec::new());
        for (p, s) in val_pixels.chunks(128).zip(val_texts.chunks(128)) {
            let flat: Vec<f32> = p.iter().flatten().copied().collect();
            let px = Tensor::from_vec(flat, (p.len(), 3, size, size), device)?;
            let ids = tokenizer.encode_batch_padded(s)?;
            let (i, t) = t.embed(&px, &ids)?;
            imgs.extend(i.detach().to_vec2::<f32>()?);
            txts.extend(t.detach().to_vec2::<f32>()?);
        }
        // The loss over fixed batches of the batch size, so it compares across epochs.
        let mut sum = 0.0;
        let mut n = 0;
        for (a, b) in imgs
            .chunks(opts.batch_size)
            .zip(txts.chunks(opts.batch_size))
        {
            if a.len() < 2 {
                continue;
            }
            let ia = Tensor::new(a.to_vec(), device)?;
            let tb = Tensor::new(b.to_vec(), device)?;
            sum += t.loss(&ia, &tb)?.to_scalar::<f32>()? as f64;
            n += 1;
        }
        Ok((
            (n > 0).then(|| sum / n as f64),
            retrieval_recalls(&imgs, &txts),
        ))
    };

    let mut log = StepLog::new(&state, opts.quiet, opts.save_every, opts.stop_after);
    let mut order: Option<(usize, Vec<usize>)> = None;
    while state.step < state.total_steps {
        let step = state.step + 1;
        let epoch = (step - 1) / state.steps_per_epoch;
        let index = (step - 1) % state.steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(opts.seed, epoch, train_images.len())));
        }
        let (_, perm) = order.as_ref().expect("set above");
        let batch: Vec<usize> = perm[index * batch_size..(index + 1) * batch_size]
            .iter()
            .map(|&p| train_images[p])
            .collect();
        // Every random choice of this step comes from (seed, step): resumable exactly.
        let mut rng = rng_for(opts.seed, "clip-step", step as u64);
        let seeds: Vec<u64> = batch.iter().map(|_| rng.random()).collect();
        let texts: Vec<String> = batch
            .iter()
            .map(|&i| {
                let caps = &data.items[i].captions;
                caps[rng.random_range(0..caps.len())].clone()
            })
            .collect();
        let pixels: Vec<Vec<f32>> = batch
            .par_iter()
            .zip(&seeds)
            .map(|(&i, &s)| {
                if opts.augment {
                    Ok(augment(
                        &bank.images[i],
                        size,
                        &mut rng_for(s, "augment", 0),
                    ))
                } else {
                    preprocessor.preprocess(&bank.images[i])
                }
            })
            .collect::<Result<_>>()?;
        let flat: Vec<f32> = pixels.into_iter().flatten().collect();
        let px = Tensor::from_vec(flat, (batch.len(), 3, size, size), device)?;
        let ids = tokenizer.encode_batch_padded(&texts)?;

        let (img, txt) = trainee.embed(&px, &ids)?;
        let loss = trainee.loss(&img, &txt)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &trainee.vars, opts.grad_clip)?;
        let lr = schedule.lr(step);
        optimizer.step(&grads, lr, step)?;
        trainee.clamp_temperature()?;

        let loss = loss.to_scalar::<f32>()? as f64;
        let after = log.record(&mut state, loss, lr, batch.len(), || validate(&trainee))?;
        if after != AfterStep::Continue {
            let weights = snapshot(&trainee.vars, &HashMap::new());
            checkpoint.save(&weights, &optimizer, &state)?;
            save_weights(out, &weights)?;
        }
        if after == AfterStep::SaveAndStop {
            break;
        }
    }
    if state.step >= state.total_steps {
        let weights = snapshot(&trainee.vars, &HashMap::new());
        checkpoint.save(&weights, &optimizer, &state)?;
        save_weights(out, &weights)?;
    }
    Ok(log.summary(&state, started))
}

fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
    crate::eval::report::write_atomic(to, &bytes)
}
