//! `skyscribe train captioner`: ClipCap training on captioned images.
//!
//! CLIP embeddings of every image are computed once (through the embedding cache); each step
//! maps a batch of them to prefixes, appends the caption tokens and asks GPT-2 to predict every
//! caption token from the prefix and the tokens before it (the reference's loss: logits at
//! positions K-1 … K+T-2 against the T tokens, padding ignored). GPT-2 is either frozen (only
//! the mapping network learns; its weights get no gradients at all) or trained with the
//! mapper; a GPT-2 trained from scratch (`--gpt2-config mini`) always learns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;

pub use super::TrainSummary;
use super::{
    AdamW, AfterStep, Checkpoint, Decay, Schedule, StepLog, TrainState, check_fresh_out,
    check_same_run, clip_grad_norm, epoch_order, masked_cross_entropy, save_weights, snapshot,
    validation_split,
};
use crate::cache::EmbeddingCache;
use crate::caption::CaptionerConfig;
use crate::data::{CaptionedImages, ImageRef, Sample, open_captions, training_sentence};
use crate::encoder::ClipEncoder;
use crate::imagery::DecodeOptions;
use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::models::layers::Activation;
use crate::models::mapper::{Mapper, MapperConfig, MappingType};
use crate::models::weights::Weights;

/// What `train captioner` was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionerTrainOptions {
    pub data: String,
    pub clip: String,
    /// A pretrained GPT-2 (directory or hub id)…
    pub gpt2: Option<String>,
    /// …or the shapes of one to train from scratch: `mini` or a GPT-2 `config.json`.
    pub gpt2_config: Option<String>,
    /// Tokenizer for a GPT-2 trained from scratch (default: a BPE trained on the captions).
    pub tokenizer: Option<PathBuf>,
    pub vocab_size: usize,
    pub mapping: MappingType,
    pub prefix_length: usize,
    pub clip_length: usize,
    pub num_layers: usize,
    pub normalize_prefix: bool,
    /// Train GPT-2 together with the mapper (always, from scratch).
    pub train_gpt2: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub val_fraction: f64,
    pub seed: u64,
    #[serde(skip)]
    pub save_every: usize,
    #[serde(skip)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this step, as if interrupted.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    #[serde(skip)]
    pub cache: Option<PathBuf>,
    #[serde(skip)]
    pub out: PathBuf,
    #[serde(skip)]
    pub quiet: bool,
}

/// The mini GPT-2: 4 layers of width 192, 64 positions.
pub fn mini_gpt2(vocab_size: usize) -> Gpt2Config {
    Gpt2Config {
        vocab_size,
        n_positions: 64,
        n_embd: 192,
        n_layer: 4,
        n_head: 4,
        n_inner: None,
        activation_function: Activation::GeluTanh,
        layer_norm_epsilon: 1e-5,
    }
}

/// One training example: an image embedding and a caption's token ids.
struct Example {
    image: usize,
    tokens: Vec<u32>,
}

/// The model being trained, with its variables and the frozen tensors saved beside them.
pub struct CaptionerModel {
    pub mapper: Mapper,
    pub gpt2: Gpt2,
    pub vars: Vec<(String, Var)>,
    pub frozen: HashMap<String, Tensor>,
    pub normalize_prefix: bool,
}

impl CaptionerModel {
    /// Mean next-token loss of a batch: `embeds[i]` with caption `tokens[i]`.
    pub fn loss(&self, embeds: &[Vec<f32>], tokens: &[Vec<u32>]) -> Result<Tensor> {
        let device = self.gpt2.device();
        let b = embeds.len();
        let t = tokens.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 {
            bail!("empty batch");
        }
        let rows: Vec<Vec<f32>> = if self.normalize_prefix {
            embeds
                .iter()
                .map(|e| crate::zeroshot::normalized(e))
                .collect()
        } else {
            embeds.to_vec()
        };
        let prefix = self.mapper.forward(&Tensor::new(rows, device)?)?;
        let k = prefix.dim(1)?;
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, row) in tokens.iter().enumerate() {
            ids[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (b, t), device)?;
        let mask = Tensor::from_vec(mask, b * t, device)?;
        let x = Tensor::cat(&[&prefix, &self.gpt2.embed_tokens(&ids)?], 1)?;
        let hidden = self.gpt2.hidden_states(&x, &mut self.gpt2.new_cache())?;
        // Position K-1+j predicts token j.
        let hidden = hidden.narrow(1, k - 1, t)?.contiguous()?;
        let d = hidden.dim(2)?;
        let logits = self.gpt2.logits(&hidden.reshape((b * t, d))?)?;
        masked_cross_entropy(&logits, &ids.flatten_all()?, &mask)
    }

    fn weights(&self) -> HashMap<String, Tensor> {
        snapshot(&self.vars, &self.frozen)
    }
}

/// Builds the model from fresh or pretrained weights, or from a checkpoint's weights.
pub fn build_model(
    config: &CaptionerConfig,
    from: ModelSource<'_>,
    train_gpt2: bool,
    seed: u64,
    device: &Device,
) -> Result<CaptionerModel> {
    let gpt_prefix = "gpt.transformer.";
    let (mapper, gpt2, vars, frozen) = match from {
        ModelSource::Checkpoint(file) => {
            let trainable: &[&str] = if train_gpt2 { &[] } else { &["clip_project."] };
            let w = Weights::from_file(file, device)?.trainable_under(trainable);
            let mapper = Mapper::load(&w, "clip_project", config.mapping.clone())?;
            let gpt2 = Gpt2::with_prefix(config.gpt2_config.clone(), &w, gpt_prefix)?;
            let vars = w.vars();
            let frozen = frozen_rest(&w, &vars)?;
            (mapper, gpt2, vars, frozen)
        }
        ModelSource::Fresh { gpt2_dir } => {
            let mw = Weights::init(seed, device).trainable();
            let mapper = Mapper::load(&mw, "clip_project", config.mapping.clone())?;
            let gw = match gpt2_dir {
                Some(dir) => {
                    let src = Weights::from_model_dir(dir, device)?;
                    let mut map = HashMap::new();
                    for name in src.names() {
                        let bare = name.strip_prefix("transformer.").unwrap_or(&name);
                        if name == "lm_head.weight"
                            || bare.ends_with(".attn.bias")
                            || bare.ends_with(".attn.masked_bias")
                        {
                            continue; // tied to wte / a causal-mask buffer
                        }
                        map.insert(format!("{gpt_prefix}{bare}"), src.get_any(&name)?);
                    }
                    let w = Weights::from_tensors(map, device);
                    if train_gpt2 { w.trainable() } else { w }
                }
                None => Weights::init(seed.wrapping_add(1), device).trainable(),
            };
            let gpt2 = Gpt2::with_prefix(config.gpt2_config.clone(), &gw, gpt_prefix)?;
            let mut vars = mw.vars();
            vars.extend(gw.vars());
            let frozen = frozen_rest(&gw, &vars)?;
            (mapper, gpt2, vars, frozen)
        }
    };
    Ok(CaptionerModel {
        mapper,
        gpt2,
        vars,
        frozen,
        normalize_prefix: config.normalize_prefix,
    })
}

/// Builds the model from a mapper source and a GPT-2 source whose keys are under
/// `gpt.transformer.` (either may be trainable; benchmarks use random weights).
pub fn build_model_from_weights(
    config: &CaptionerConfig,
    mapper_weights: &Weights,
    gpt2_weights: &Weights,
) -> Result<CaptionerModel> {
    let mapper = Mapper::load(mapper_weights, "clip_project", config.mapping.clone())?;
    let gpt2 = Gpt2::with_prefix(config.gpt2_config.clone(), gpt2_weights, "gpt.transformer.")?;
    let mut vars = mapper_weights.vars();
    vars.extend(gpt2_weights.vars());
    Ok(CaptionerModel {
        mapper,
        gpt2,
        vars,
        frozen: HashMap::new(),
        normalize_prefix: config.normalize_prefix,
    })
}

/// Where a model's starting weights come from.
pub enum ModelSource<'a> {
    /// Mapper (and GPT-2 when `gpt2_dir` is `None`) new; GPT-2 from `gpt2_dir` otherwise.
    Fresh {
        gpt2_dir: Option<&'a Path>,
    },
    Checkpoint(&'a Path),
}

/// The GPT-2 tensors of `w` that are not variables (saved unchanged with the model).
fn frozen_rest(w: &Weights, vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for name in w.names() {
        if name.starts_with("gpt.transformer.") && !vars.iter().any(|(n, _)| *n == name) {
            out.insert(name.clone(), w.get_any(&name)?);
        }
    }
    Ok(out)
}

/// Embeds every image of `data` with `clip` (through `cache`); an unreadable image is an error.
pub fn embed_images(
    clip: &ClipEncoder,
    data: &CaptionedImages,
    cache: Option<&EmbeddingCache>,
    quiet: bool,
) -> Result<Vec<Vec<f32>>> {
    let samples: Vec<Sample> = data
        .items
        .iter()
        .map(|i| Sample {
            image: ImageRef::file(i.path.clone()),
            labels: vec![],
        })
        .collect();
    let pb = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(samples.len() as u64);
        pb.set_message("CLIP embeddings");
        pb
    };
    let (embeds, _) =
        crate::eval::embed_samples(clip, &samples, cache, 32, &DecodeOptions::default(), &pb)?;
    pb.finish_and_clear();
    embeds
        .into_iter()
        .zip(&data.items)
        .map(|(e, item)| {
            e.ok_or_else(|| anyhow!("{}: cannot read this image", item.path.display()))
        })
        .collect()
}

fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| anyhow!("{}: not a valid tokenizer.json: {e}", path.display()))
}

/// Trains (or resumes training) a captioner into `opts.out`.
pub fn train_captioner(opts: &CaptionerTrainOptions, device: &Device) -> Result<TrainSummary> {
    let started = Instant::now();
    let out = &opts.out;
    let checkpoint = Checkpoint::new(out);
    let resumed = if opts.resume {
        Some(checkpoint.load(device)?)
    } else {
        check_fresh_out(out)?;
        None
    };
    if opts.batch_size == 0 || opts.epochs == 0 {
        bail!("--batch-size and --epochs must be positive");
    }

    // Data and CLIP embeddings.
    let data = open_captions(&opts.data)?;
    let clip = ClipEncoder::load(&opts.clip, device)?;
    let cache = match &opts.cache {
        Some(dir) => Some(EmbeddingCache::open(dir, &clip, &DecodeOptions::default())?),
        None => None,
    };
    let embeds = embed_images(&clip, &data, cache.as_ref(), opts.quiet)?;
    let prefix_size = clip.model.config().projection_dim;
    drop(clip);

    // Tokenizer and GPT-2 shapes.
    let gpt2_dir = match (&opts.gpt2, &opts.gpt2_config) {
        (Some(spec), None) => Some(crate::hub::resolve(
            spec,
            &["config.json", "tokenizer.json"],
            &["model.safetensors", "pytorch_model.bin"],
        )?),
        (None, Some(_)) => None,
        _ => bail!("give exactly one of --gpt2 (pretrained) and --gpt2-config (from scratch)"),
    };
    let sentences: Vec<String> = data
        .items
        .iter()
        .flat_map(|i| i.captions.iter().map(|c| training_sentence(c)))
        .collect();
    let tokenizer = if resumed.is_some() {
        load_tokenizer(&out.join("tokenizer.json"))?
    } else if let Some(dir) = &gpt2_dir {
        load_tokenizer(&dir.file("tokenizer.json"))?
    } else if let Some(path) = &opts.tokenizer {
        load_tokenizer(path)?
    } else {
        super::bpe::train_bpe(&sentences, opts.vocab_size)?
    };
    let gpt2_config = match (&gpt2_dir, opts.gpt2_config.as_deref()) {
        (Some(dir), _) => Gpt2Config::from_file(&dir.file("config.json"))?,
        (None, Some("mini")) => mini_gpt2(tokenizer.get_vocab_size(true)),
        (None, Some(file)) => Gpt2Config::from_file(Path::new(file))?,
        (None, None) => unreachable!("checked above"),
    };
    if (tokenizer.get_vocab_size(true)) > gpt2_config.vocab_size {
        bail!(
            "the tokenizer has {} tokens but GPT-2's vocabulary is {}",
            tokenizer.get_vocab_size(true),
            gpt2_config.vocab_size
        );
    }
    let train_gpt2 = opts.train_gpt2 || gpt2_dir.is_none();
    let config = CaptionerConfig {
        mapping: MapperConfig {
            mapping_type: opts.mapping,
            prefix_size,
            prefix_length: opts.prefix_length,
            clip_length: opts.clip_length,
            num_layers: opts.num_layers,
            gpt_width: gpt2_config.n_embd,
        },
        normalize_prefix: opts.normalize_prefix,
        clip_model: opts.clip.clone(),
        gpt2_model: opts.gpt2.clone().unwrap_or_else(|| {
            format!(
                "trained from scratch ({})",
                opts.gpt2_config.as_deref().unwrap_or("")
            )
        }),
        gpt2_config: gpt2_config.clone(),
    };

    // Captions to token ids; every one must fit GPT-2's context after the prefix.
    let room = gpt2_config.n_positions.saturating_sub(opts.prefix_length);
    let mut examples = Vec::new();
    let mut per_image: Vec<Vec<usize>> = vec![vec![]; data.items.len()];
    for (i, item) in data.items.iter().enumerate() {
        for c in &item.captions {
            let sentence = training_sentence(c);
            let ids = tokenizer
                .encode(sentence.as_str(), false)
                .map_err(|e| anyhow!("cannot tokenize {sentence:?}: {e}"))?
                .get_ids()
                .to_vec();
            if ids.len() > room {
                bail!(
                    "{}: a caption of {} is {} tokens long; with a prefix of {} GPT-2's context \
                     of {} leaves room for {room}: {c:?}",
                    opts.data,
                    item.path.display(),
                    ids.len(),
                    opts.prefix_length,
                    gpt2_config.n_positions
                );
            }
            per_image[i].push(examples.len());
            examples.push(Example {
                image: i,
                tokens: ids,
            });
        }
    }

    // Validation images are held out whole, so their captions are never trained on.
    let (train_images, val_images) =
        validation_split(opts.seed, data.items.len(), opts.val_fraction);
    let train_ex: Vec<usize> = train_images
        .iter()
        .flat_map(|&i| per_image[i].clone())
        .collect();
    let val_ex: Vec<usize> = val_images
        .iter()
        .flat_map(|&i| per_image[i].clone())
        .collect();

    let options_json = serde_json::to_value(opts)?;
    let (model_source, mut state) = match &resumed {
        Some((state, weights_file, _)) => {
            check_same_run(&state.options, &options_json, out)?;
            (weights_file.clone(), state.clone())
        }
        None => {
            let steps_per_epoch = train_ex.len().div_ceil(opts.batch_size);
            let state = TrainState {
                step: 0,
                total_steps: steps_per_epoch * opts.epochs,
                steps_per_epoch,
                options: options_json,
                history: vec![],
                epoch_loss_sum: 0.0,
                epoch_loss_count: 0,
            };
            (PathBuf::new(), state)
        }
    };
    let model = match &resumed {
        Some(_) => build_model(
            &config,
            ModelSource::Checkpoint(&model_source),
            train_gpt2,
            opts.seed,
            device,
        )?,
        None => build_model(
            &config,
            ModelSource::Fresh {
                gpt2_dir: gpt2_dir.as_ref().map(|d| d.dir.as_path()),
            },
            train_gpt2,
            opts.seed,
            device,
        )?,
    };
    let mut optimizer = AdamW::new(&model.vars, opts.weight_decay)?;
    if let Some((_, _, moments)) = &resumed {
        optimizer.load_state(&out.join("checkpoint/optimizer.safetensors"), moments)?;
    }
    // The folder is a loadable captioner from the start.
    std::fs::create_dir_all(out)?;
    crate::eval::report::write_atomic(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    if resumed.is_none() {
        super::bpe::save(&tokenizer, &out.join("tokenizer.json"))?;
    }

    let schedule = Schedule {
        peak: opts.lr,
        warmup: opts.warmup,
        total: state.total_steps,
        decay: Decay::Linear,
    };
    let batch_of = |ids: &[usize]| -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
        ids.iter()
            .map(|&e| {
                (
                    embeds[examples[e].image].clone(),
                    examples[e].tokens.clone(),
                )
            })
            .unzip()
    };
    let val_loss = |model: &CaptionerModel| -> Result<Option<f64>> {
        if val_ex.is_empty() {
            return Ok(None);
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for chunk in val_ex.chunks(opts.batch_size.max(32)) {
            let (e, t) = batch_of(chunk);
            sum += model.loss(&e, &t)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok(Some(sum / n as f64))
    };

    let mut log = StepLog::new(&state, opts.quiet, opts.save_every, opts.stop_after);
    let mut order: Option<(usize, Vec<usize>)> = None;
    while state.step < state.total_steps {
        let step = state.step + 1;
        let epoch = (step - 1) / state.steps_per_epoch;
        let index = (step - 1) % state.steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(opts.seed, epoch, train_ex.len())));
        }
        let (_, perm) = order.as_ref().expect("set above");
        let lo = index * opts.batch_size;
        let hi = (lo + opts.batch_size).min(perm.len());
        let ids: Vec<usize> = perm[lo..hi].iter().map(|&p| train_ex[p]).collect();
        let (e, t) = batch_of(&ids);

        let loss = model.loss(&e, &t)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &model.vars, opts.grad_clip)?;
        let lr = schedule.lr(step);
        optimizer.step(&grads, lr, step)?;

        let loss = loss.to_scalar::<f32>()? as f64;
        let after = log.record(&mut state, loss, lr, ids.len(), || {
            Ok((val_loss(&model)?, Default::default()))
        })?;
        if after != AfterStep::Continue {
            let weights = model.weights();
            checkpoint.save(&weights, &optimizer, &state)?;
            save_weights(out, &weights)
                .with_context(|| format!("{}: saving the model", out.display()))?;
        }
        if after == AfterStep::SaveAndStop {
            break;
        }
    }
    if state.step >= state.total_steps {
        // A resumed finished run (or one whose last step was not a save point) ends saved.
        let weights = model.weights();
        checkpoint.save(&weights, &optimizer, &state)?;
        save_weights(out, &weights)
            .with_context(|| format!("{}: saving the model", out.display()))?;
    }
    Ok(log.summary(&state, started))
}
