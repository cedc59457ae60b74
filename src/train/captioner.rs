//! `skyscribe train captioner`: ClipCap training on captioned images.
//!
//! CLIP embeddings of every image are computed once (through the embedding cache); each step
//! maps a batch of them to prefixes, appends the caption tokens and asks GPT-2 to predict every
//! caption token from the prefix and the tokens before it (the reference's loss: logits at
//! positions K-1 … K+T-2 against the T tokens, padding ignored). GPT-2 is either frozen (only
//! the mapping network learns; its weights get no gradients at all) or trained with the
//! mapper; a GPT-2 trained from scratch (`--gpt2-config mini`) always learns.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use super::run::{Plan, RunOptions, Start, TrainSummary, Trainer, train};
use super::{Decay, head_cross_entropy, snapshot, validation_split};
use crate::cache::{EmbeddingCache, embed_images};
use crate::caption::{CaptionerConfig, GPT2_SCOPE, MAPPER_SCOPE};
use crate::data::{open_captions, training_sentence};
use crate::encoder::ClipEncoder;
use crate::imagery::DecodeOptions;
use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::models::layers::Activation;
use crate::models::mapper::{Mapper, MapperConfig, MappingType};
use crate::models::weights::Weights;

/// What `train captioner` was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionerTrainOptions {
    #[serde(flatten)]
    pub run: RunOptions,
    /// The CLIP whose image embeddings are the prefix (directory, hub id or built-in name).
    pub clip: String,
    /// A pretrained GPT-2 (directory or hub id)…
    pub gpt2: Option<String>,
    /// …or the shapes of one to train from scratch: `mini` or a GPT-2 `config.json`.
    pub gpt2_config: Option<String>,
    pub mapping: MappingType,
    /// K: the GPT-2 embeddings the mapper writes.
    pub prefix_length: usize,
    /// Tokens the CLIP embedding is spread over (transformer mapper).
    pub clip_length: usize,
    /// Transformer mapper layers.
    pub num_layers: usize,
    /// L2-normalise CLIP embeddings before the mapper.
    pub normalize_prefix: bool,
    /// Train GPT-2 together with the mapper (always, from scratch).
    pub train_gpt2: bool,
    /// The embedding cache folder (none: embed every image again).
    #[serde(skip)]
    pub cache: Option<std::path::PathBuf>,
}

/// The reference ClipCap recipe: MLP mapper, K = 10, batch 40, lr 2e-5 after 5,000 warm-up
/// steps, weight decay 0.01, 10 epochs, on the built-in CLIP unless told otherwise.
impl Default for CaptionerTrainOptions {
    fn default() -> Self {
        Self {
            run: RunOptions {
                batch_size: 40,
                lr: 2e-5,
                warmup: 5000,
                weight_decay: 0.01,
                ..RunOptions::default()
            },
            clip: crate::builtin::MINI_CLIP.to_string(),
            gpt2: None,
            gpt2_config: None,
            mapping: MappingType::Mlp,
            prefix_length: 10,
            clip_length: 10,
            num_layers: 8,
            normalize_prefix: false,
            train_gpt2: false,
            cache: Some(crate::cache::default_dir()),
        }
    }
}

impl CaptionerTrainOptions {
    /// Defaults for a GPT-2 trained from scratch (`--gpt2-config`), the mini captioner's
    /// recipe: lr 1e-3 after 300 warm-up steps. The reference's fine-tuning rate (2e-5 after
    /// 5,000 steps) barely moves new weights.
    pub fn from_scratch() -> Self {
        let mut o = Self::default();
        o.run.lr = 1e-3;
        o.run.warmup = 300;
        o
    }
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
                .map(|e| crate::encoder::normalized(e))
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
        let ids_t = Tensor::from_vec(ids.clone(), (b, t), device)?;
        let x = Tensor::cat(&[&prefix, &self.gpt2.embed_tokens(&ids_t)?], 1)?;
        let hidden = self.gpt2.hidden_states(&x, &mut self.gpt2.new_cache())?;
        // Position K-1+j predicts token j.
        let hidden = hidden.narrow(1, k - 1, t)?.contiguous()?;
        let d = hidden.dim(2)?;
        head_cross_entropy(
            &hidden.reshape((b * t, d))?,
            self.gpt2.head_weight(),
            &ids,
            &mask,
        )
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
    let (mapper, gpt2, vars, frozen) = match from {
        ModelSource::Checkpoint(file) => {
            let trainable: &[&str] = if train_gpt2 { &[] } else { &["clip_project."] };
            let w = Weights::from_file(file, device)?.trainable_under(trainable);
            let mapper = Mapper::load(&w.pp(MAPPER_SCOPE), config.mapping.clone())?;
            let gpt2 = Gpt2::load(config.gpt2_config.clone(), &w.pp(GPT2_SCOPE))?;
            let vars = w.vars();
            let frozen = frozen_rest(&w, &vars)?;
            (mapper, gpt2, vars, frozen)
        }
        ModelSource::Fresh { gpt2_dir } => {
            let mw = Weights::init(seed, device).trainable();
            let mapper = Mapper::load(&mw.pp(MAPPER_SCOPE), config.mapping.clone())?;
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
                        map.insert(format!("{GPT2_SCOPE}.{bare}"), src.get_any(&name)?);
                    }
                    let w = Weights::from_tensors(map, device);
                    if train_gpt2 { w.trainable() } else { w }
                }
                None => Weights::init(seed.wrapping_add(1), device).trainable(),
            };
            let gpt2 = Gpt2::load(config.gpt2_config.clone(), &gw.pp(GPT2_SCOPE))?;
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
    let mapper = Mapper::load(&mapper_weights.pp(MAPPER_SCOPE), config.mapping.clone())?;
    let gpt2 = Gpt2::load(config.gpt2_config.clone(), &gpt2_weights.pp(GPT2_SCOPE))?;
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

/// A captioner being trained: what [`super::run::train`] needs.
struct CaptionerRun<'a> {
    model: CaptionerModel,
    opts: &'a CaptionerTrainOptions,
    /// CLIP embeddings of the images, and every (image, caption) example.
    embeds: Vec<Vec<f32>>,
    examples: Vec<Example>,
    /// Indices into `examples` of the training and validation captions.
    train_ex: Vec<usize>,
    val_ex: Vec<usize>,
}

impl CaptionerRun<'_> {
    fn batch_of(&self, ids: &[usize]) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
        ids.iter()
            .map(|&e| {
                let ex = &self.examples[e];
                (self.embeds[ex.image].clone(), ex.tokens.clone())
            })
            .unzip()
    }
}

impl Trainer for CaptionerRun<'_> {
    fn vars(&self) -> &[(String, Var)] {
        &self.model.vars
    }

    fn loss(&self, batch: &[usize], _step: usize) -> Result<Tensor> {
        let ids: Vec<usize> = batch.iter().map(|&p| self.train_ex[p]).collect();
        let (e, t) = self.batch_of(&ids);
        self.model.loss(&e, &t)
    }

    fn validate(&self) -> Result<(Option<f64>, BTreeMap<String, f64>)> {
        if self.val_ex.is_empty() {
            return Ok((None, BTreeMap::new()));
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for chunk in self.val_ex.chunks(self.opts.run.batch_size.max(32)) {
            let (e, t) = self.batch_of(chunk);
            sum += self.model.loss(&e, &t)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok((Some(sum / n as f64), BTreeMap::new()))
    }

    fn weights(&self) -> HashMap<String, Tensor> {
        self.model.weights()
    }
}

/// Trains (or resumes training) a captioner into `opts.run.out`.
pub fn train_captioner(opts: &CaptionerTrainOptions, device: &Device) -> Result<TrainSummary> {
    opts.run.check()?;
    let gpt2_dir = match (&opts.gpt2, &opts.gpt2_config) {
        (Some(spec), None) => Some(crate::hub::resolve(
            spec,
            &["config.json", "tokenizer.json"],
            &["model.safetensors", "pytorch_model.bin"],
        )?),
        (None, Some(_)) => None,
        _ => bail!("give exactly one of --gpt2 (pretrained) and --gpt2-config (from scratch)"),
    };
    let start = Start::new(&opts.run, serde_json::to_value(opts)?, device)?;
    let out = &opts.run.out;

    // Data and CLIP embeddings.
    let data = open_captions(&opts.run.data)?;
    let clip = ClipEncoder::load(&opts.clip, device)?;
    let cache = match &opts.cache {
        Some(dir) => Some(EmbeddingCache::open(dir, &clip, &DecodeOptions::default())?),
        None => None,
    };
    let paths: Vec<_> = data.items.iter().map(|i| i.path.clone()).collect();
    let embeds = embed_images(&clip, &paths, cache.as_ref(), opts.run.quiet)?;
    let prefix_size = clip.model.config().projection_dim;
    drop(clip);

    // Tokenizer and GPT-2 shapes.
    let sentences: Vec<String> = data
        .items
        .iter()
        .flat_map(|i| i.captions.iter().map(|c| training_sentence(c)))
        .collect();
    let load = crate::tokenizer::load_json;
    let tokenizer = if start.is_resumed() {
        load(&out.join("tokenizer.json"))?
    } else if let Some(dir) = &gpt2_dir {
        load(&dir.file("tokenizer.json"))?
    } else if let Some(path) = &opts.run.tokenizer {
        load(path)?
    } else {
        super::bpe::train_bpe(&sentences, opts.run.vocab_size)?
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
                    opts.run.data,
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
        validation_split(opts.run.seed, data.items.len(), opts.run.val_fraction);
    let train_ex: Vec<usize> = train_images
        .iter()
        .flat_map(|&i| per_image[i].clone())
        .collect();
    let val_ex: Vec<usize> = val_images
        .iter()
        .flat_map(|&i| per_image[i].clone())
        .collect();

    let source = match start.resumed_weights() {
        Some(file) => ModelSource::Checkpoint(file),
        None => ModelSource::Fresh {
            gpt2_dir: gpt2_dir.as_ref().map(|d| d.dir.as_path()),
        },
    };
    let model = build_model(&config, source, train_gpt2, opts.run.seed, device)?;
    // The folder is a loadable captioner from the start.
    crate::atomic::write_file(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    if !start.is_resumed() {
        super::bpe::save(&tokenizer, &out.join("tokenizer.json"))?;
    }

    let plan = Plan {
        examples: train_ex.len(),
        drop_last: false,
        decay: Decay::Linear,
    };
    let run = CaptionerRun {
        model,
        opts,
        embeds,
        examples,
        train_ex,
        val_ex,
    };
    train(&run, start, plan, &opts.run, "train captioner")
}

/// Time of ClipCap training steps (measured here, never asserted in tests) with `gpt2`'s shapes (124M, random weights).
#[derive(Debug, Serialize)]
pub struct CaptionerStepReport {
    pub what: String,
    pub batch_size: usize,
    pub caption_tokens: usize,
    pub prefix_length: usize,
    pub train_gpt2: bool,
    pub threads: usize,
    /// Medians over `steps` timed steps.
    #[serde(flatten)]
    pub times: super::StepTimes,
    pub steps: usize,
    pub device: String,
}

/// Training steps of an MLP-mapper ClipCap on a random `gpt2` (frozen unless `train_gpt2`),
/// batches of random 512-wide CLIP embeddings and `caption_tokens`-token captions.
pub fn step_time(
    device: &Device,
    batch_size: usize,
    caption_tokens: usize,
    steps: usize,
    train_gpt2: bool,
) -> Result<CaptionerStepReport> {
    use rand::{Rng, SeedableRng};
    if steps == 0 || batch_size == 0 || caption_tokens == 0 {
        bail!("--steps, --batch-size and --caption-tokens must be positive");
    }

    let gpt2_config = Gpt2Config::default();
    let config = CaptionerConfig {
        mapping: MapperConfig {
            mapping_type: MappingType::Mlp,
            prefix_size: 512,
            prefix_length: 10,
            clip_length: 10,
            num_layers: 8,
            gpt_width: gpt2_config.n_embd,
        },
        normalize_prefix: false,
        clip_model: "random".into(),
        gpt2_model: "random gpt2".into(),
        gpt2_config,
    };
    let gpt_weights = Weights::random(device);
    let gpt_weights = if train_gpt2 {
        gpt_weights.trainable()
    } else {
        gpt_weights
    };
    let model: CaptionerModel =
        build_model_from_weights(&config, &Weights::init(0, device).trainable(), &gpt_weights)?;
    let mut optimizer = super::AdamW::new(&model.vars, 0.01)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut times = Vec::new();
    for step in 1..=steps + 1 {
        let embeds: Vec<Vec<f32>> = (0..batch_size)
            .map(|_| (0..512).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let tokens: Vec<Vec<u32>> = (0..batch_size)
            .map(|_| {
                (0..caption_tokens)
                    .map(|_| rng.random_range(0..50257))
                    .collect()
            })
            .collect();
        let t = super::timed_step(&mut optimizer, step, || model.loss(&embeds, &tokens))?;
        if step > 1 {
            // The first step warms up allocations and threads.
            times.push(t);
        }
    }
    Ok(CaptionerStepReport {
        what: format!(
            "ClipCap step, MLP mapper, gpt2 124M {}",
            if train_gpt2 { "trained" } else { "frozen" }
        ),
        batch_size,
        caption_tokens,
        prefix_length: 10,
        train_gpt2,
        threads: rayon::current_num_threads(),
        times: super::StepTimes::median_of(&times),
        steps,
        device: crate::models::device_label(device),
    })
}
