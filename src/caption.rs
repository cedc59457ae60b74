//! Captions without labels (ClipCap): a captioner directory — mapping network + GPT-2 + GPT-2's
//! tokenizer — turns CLIP image embeddings into sentences. Also the import of checkpoints saved
//! by the reference PyTorch code (`clip_project.*` + `gpt.*` state dicts).
//!
//! Captioner directory: `config.json` ([`CaptionerConfig`]), `model.safetensors` (keys
//! `clip_project.*` and `gpt.transformer.*`, as the reference names them), `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::models::mapper::{Mapper, MapperConfig};
use crate::models::weights::Weights;

/// Where a ClipCap checkpoint keeps the mapping network (the reference's `clip_project`).
pub const MAPPER_SCOPE: &str = "clip_project";
/// Where a ClipCap checkpoint keeps GPT-2 (the reference's `gpt` is a `GPT2LMHeadModel`).
pub const GPT2_SCOPE: &str = "gpt.transformer";

/// `config.json` of a captioner directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptionerConfig {
    pub mapping: MapperConfig,
    /// Whether CLIP embeddings are L2-normalised before the mapping network.
    pub normalize_prefix: bool,
    /// The CLIP model (directory or hub id) the captioner was trained with.
    pub clip_model: String,
    /// The GPT-2 it was trained with, and its shapes.
    pub gpt2_model: String,
    pub gpt2_config: Gpt2Config,
}

/// A loaded captioner.
pub struct Captioner {
    pub config: CaptionerConfig,
    pub mapper: Mapper,
    pub gpt2: Gpt2,
    pub tokenizer: tokenizers::Tokenizer,
    stop_token: u32,
    /// The folder it was loaded from (relative `clip_model` paths are resolved against it).
    dir: Option<PathBuf>,
}

/// How captions are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    Greedy,
    Beam {
        size: usize,
    },
    /// Nucleus sampling; image `i` of a run uses `seed + i`.
    Sample {
        top_p: f32,
        seed: u64,
    },
}

/// How captions are decoded.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// At most this many generated tokens (the reference's `entry_length`, 67).
    pub max_tokens: usize,
    /// Logits are divided by this before beam search and sampling; 0 makes
    /// [`Captioner::captions`] decode greedily (the limit as the temperature goes to 0).
    pub temperature: f32,
}

impl DecodeOptions {
    /// The temperature beam search and sampling divide by, which must be positive.
    fn positive_temperature(&self) -> Result<f32> {
        if self.temperature > 0.0 && self.temperature.is_finite() {
            Ok(self.temperature)
        } else {
            bail!(
                "temperature {} must be positive here (0 means greedy decoding)",
                self.temperature
            )
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_tokens: 67,
            temperature: 1.0,
        }
    }
}

/// Which decoding a caller asked for, before its options are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeKind {
    /// The most likely token each step (the reference's generate2).
    Greedy,
    /// Beam search (the reference's generate_beam).
    Beam,
    /// Nucleus sampling.
    Sample,
}

impl DecodeKind {
    /// `greedy`, `beam` or `sample`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "greedy" => Ok(Self::Greedy),
            "beam" => Ok(Self::Beam),
            "sample" => Ok(Self::Sample),
            other => bail!("decode {other:?}: expected greedy, beam or sample"),
        }
    }
}

/// A decoding as asked for (`--decode` and its options, or the Python keywords): options of
/// another decoding are refused, not ignored — `--top-p 0.5` alone would otherwise decode
/// greedily, as if never said.
#[derive(Debug, Clone, Copy)]
pub struct DecodingRequest {
    pub decode: DecodeKind,
    pub beam_size: Option<usize>,
    pub top_p: Option<f32>,
    pub temperature: Option<f32>,
    pub seed: Option<u64>,
    pub max_tokens: usize,
}

impl DecodingRequest {
    /// The decoding and its options, checked.
    pub fn resolve(&self) -> Result<(Decoding, DecodeOptions)> {
        let refuse = |option: &str, decode: &str| {
            bail!(
                "{option} is for --decode {decode}; this decodes {}: add --decode {decode}, or \
                 leave {option} out",
                match self.decode {
                    DecodeKind::Greedy => "greedily (the default)",
                    DecodeKind::Beam => "by beam search",
                    DecodeKind::Sample => "by sampling",
                }
            )
        };
        if self.decode != DecodeKind::Sample {
            if self.top_p.is_some() {
                return refuse("--top-p", "sample");
            }
            if self.seed.is_some() {
                return refuse("--seed", "sample");
            }
        }
        if self.decode != DecodeKind::Beam && self.beam_size.is_some() {
            return refuse("--beam-size", "beam");
        }
        if self.decode == DecodeKind::Greedy && self.temperature.is_some() {
            bail!(
                "--temperature is for --decode beam or sample; greedy decoding takes the most \
                 likely token whatever the temperature"
            );
        }
        if self.beam_size == Some(0) {
            bail!("--beam-size must be at least 1");
        }
        if self.max_tokens == 0 {
            bail!("--max-tokens must be at least 1");
        }
        let top_p = self.top_p.unwrap_or(0.9);
        if !(top_p > 0.0 && top_p <= 1.0) {
            bail!("--top-p {top_p} must be in (0, 1]");
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(temperature >= 0.0 && temperature.is_finite()) {
            bail!("--temperature {temperature} must be 0 (greedy) or more");
        }
        let how = match self.decode {
            DecodeKind::Greedy => Decoding::Greedy,
            DecodeKind::Beam => Decoding::Beam {
                size: self.beam_size.unwrap_or(5),
            },
            DecodeKind::Sample => Decoding::Sample {
                top_p,
                seed: self.seed.unwrap_or(0),
            },
        };
        let opts = DecodeOptions {
            max_tokens: self.max_tokens,
            temperature,
        };
        Ok((how, opts))
    }
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    row.iter().map(|x| x - lse).collect()
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(idx.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        values[b].total_cmp(&values[a]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

impl Captioner {
    /// A captioner folder, or a built-in captioner by name (written out on first use).
    pub fn load_spec(spec: &str, device: &Device) -> Result<Self> {
        match crate::builtin::model_dir(spec) {
            Some(dir) => Self::load(&dir?, device),
            None => Self::load(Path::new(spec), device),
        }
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{}: cannot read captioner config", cfg_path.display()))?;
        let config: CaptionerConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a captioner config.json", cfg_path.display()))?;
        let weights = Weights::from_file(&dir.join("model.safetensors"), device)?;
        let tokenizer = crate::tokenizer::load_json(&dir.join("tokenizer.json"))?;
        let mut captioner = Self::from_weights(config, &weights, tokenizer)?;
        captioner.dir = Some(dir.to_path_buf());
        Ok(captioner)
    }

    /// The CLIP model the captioner was trained with: `clip_model` from its config, resolved
    /// against the captioner's folder when that names a folder (shipped models refer to their
    /// CLIP as `../mini-clip`).
    pub fn clip_model_spec(&self) -> String {
        let spec = &self.config.clip_model;
        if let Some(dir) = &self.dir {
            let p = Path::new(spec);
            if p.is_relative() && dir.join(p).is_dir() {
                return dir.join(p).display().to_string();
            }
        }
        spec.clone()
    }

    /// Refuses a CLIP this captioner was not trained on, whose embeddings would give wrong
    /// captions without any error: another embedding width always (the mapping network cannot
    /// read it), another model unless `force`.
    pub fn check_clip(&self, clip: &crate::encoder::ClipEncoder, force: bool) -> Result<()> {
        let own = self.clip_model_spec();
        let width = clip.model.config().projection_dim;
        if width != self.config.mapping.prefix_size {
            bail!(
                "the captioner reads {}-wide CLIP embeddings (it was trained on {own}), but {} \
                 gives {width}-wide ones",
                self.config.mapping.prefix_size,
                clip.source.spec
            );
        }
        if force || clip.source.spec == own {
            return Ok(());
        }
        let same = match crate::hub::resolve_clip(&own) {
            Ok(dir) => {
                let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
                canonical(&dir.dir) == canonical(&clip.source.dir)
                    || crate::cache::model_fingerprint(&dir.dir)?
                        == crate::cache::model_fingerprint(&clip.source.dir)?
            }
            Err(_) => false,
        };
        if !same {
            bail!(
                "the captioner was trained on the CLIP {own}, not {}: its captions of another \
                 model's embeddings would be wrong. Leave out --model/--clip to use its own, or \
                 pass --force-clip to use this one anyway",
                clip.source.spec
            );
        }
        Ok(())
    }

    /// Captions of any number of embeddings, 32 at a time, with a progress bar (none when
    /// `quiet`); image `i` of the list is numbered `i` for sampling seeds.
    pub fn captions_with_progress(
        &self,
        embeds: &[Vec<f32>],
        how: Decoding,
        opts: &DecodeOptions,
        quiet: bool,
    ) -> Result<Vec<String>> {
        let bar = crate::progress::items(embeds.len(), "images", "captions", quiet);
        let mut out = Vec::with_capacity(embeds.len());
        for chunk in embeds.chunks(32) {
            out.extend(self.captions(chunk, how, opts, out.len() as u64)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Captions (text) of a batch of CLIP embeddings; `first_index` numbers the first image
    /// for sampling seeds.
    pub fn captions(
        &self,
        embeds: &[Vec<f32>],
        how: Decoding,
        opts: &DecodeOptions,
        first_index: u64,
    ) -> Result<Vec<String>> {
        if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
            bail!(
                "temperature {} must be 0 (greedy) or more",
                opts.temperature
            );
        }
        // The limit of sampling (and of beam search's scores) as the temperature goes to 0.
        let how = if opts.temperature == 0.0 {
            Decoding::Greedy
        } else {
            how
        };
        let ids: Vec<Vec<u32>> = match how {
            Decoding::Greedy => self.greedy(embeds, opts)?,
            Decoding::Beam { size } => embeds
                .iter()
                .map(|e| self.beam(e, size, opts))
                .collect::<Result<_>>()?,
            Decoding::Sample { top_p, seed } => embeds
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    self.sample(e, top_p, seed.wrapping_add(first_index + i as u64), opts)
                })
                .collect::<Result<_>>()?,
        };
        ids.iter().map(|i| self.decode_text(i)).collect()
    }

    pub fn from_weights(
        config: CaptionerConfig,
        weights: &Weights,
        tokenizer: tokenizers::Tokenizer,
    ) -> Result<Self> {
        if config.mapping.gpt_width != config.gpt2_config.n_embd {
            bail!(
                "the mapping network writes {}-wide embeddings but GPT-2 is {} wide",
                config.mapping.gpt_width,
                config.gpt2_config.n_embd
            );
        }
        if config.mapping.prefix_length >= config.gpt2_config.n_positions {
            bail!(
                "a prefix of {} leaves no room in GPT-2's context of {}",
                config.mapping.prefix_length,
                config.gpt2_config.n_positions
            );
        }
        let mapper = Mapper::load(&weights.pp(MAPPER_SCOPE), config.mapping.clone())?;
        let gpt2 = Gpt2::load(config.gpt2_config.clone(), &weights.pp(GPT2_SCOPE))?;
        // The reference stops after the first "." token.
        let stop_token = tokenizer
            .token_to_id(".")
            .ok_or_else(|| anyhow!("the GPT-2 tokenizer has no '.' token"))?;
        Ok(Self {
            config,
            mapper,
            gpt2,
            tokenizer,
            stop_token,
            dir: None,
        })
    }

    /// How many tokens decoding may generate: `max_tokens`, or fewer where GPT-2's context
    /// (after the prefix) ends first.
    fn token_budget(&self, opts: &DecodeOptions) -> usize {
        let room = self.gpt2.config().n_positions - self.config.mapping.prefix_length;
        opts.max_tokens.min(room)
    }

    /// The prefix embeddings `(B, K, E)` of CLIP image embeddings (one per row).
    pub fn prefix(&self, clip_embeddings: &[Vec<f32>]) -> Result<Tensor> {
        let rows: Vec<Vec<f32>> = if self.config.normalize_prefix {
            clip_embeddings
                .iter()
                .map(|e| crate::encoder::normalized(e))
                .collect()
        } else {
            clip_embeddings.to_vec()
        };
        let t = Tensor::new(rows, self.gpt2.device())?;
        self.mapper.forward(&t)
    }

    /// Greedy decoding as the reference's `generate2`: the most likely token each step, until the
    /// "." token (kept) or `max_tokens`. All images decode together as one batch.
    pub fn greedy(
        &self,
        clip_embeddings: &[Vec<f32>],
        opts: &DecodeOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let n = clip_embeddings.len();
        if n == 0 {
            return Ok(vec![]);
        }
        let mut cache = self.gpt2.new_cache();
        let mut logits = self
            .gpt2
            .forward_embeds(&self.prefix(clip_embeddings)?, &mut cache)?;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut done = vec![false; n];
        for _ in 0..self.token_budget(opts) {
            let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?;
            let next = crate::models::gpt2::argmax_last(&last)?;
            for (i, &t) in next.iter().enumerate() {
                if !done[i] {
                    out[i].push(t);
                    done[i] = t == self.stop_token;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let ids = Tensor::from_vec(next, (n, 1), self.gpt2.device())?;
            logits = self.gpt2.forward_ids(&ids, &mut cache)?;
        }
        Ok(out)
    }

    /// Beam search as the reference's `generate_beam`: beams ranked by their summed
    /// log-probability divided by their length; a finished beam (ended by ".") is carried
    /// along unchanged. Returns the best beam's tokens.
    pub fn beam(
        &self,
        clip_embedding: &[f32],
        beam_size: usize,
        opts: &DecodeOptions,
    ) -> Result<Vec<u32>> {
        let beam_size = beam_size.max(1);
        let vocab = self.gpt2.config().vocab_size;
        let temperature = opts.positive_temperature()?;
        let mut cache = self.gpt2.new_cache();
        let prefix = self.prefix(&[clip_embedding.to_vec()])?;
        let logits = self.gpt2.forward_embeds(&prefix, &mut cache)?;
        let last: Vec<f32> = logits
            .narrow(1, logits.dim(1)? - 1, 1)?
            .flatten_all()?
            .to_vec1()?;
        let first = log_softmax(&last.iter().map(|x| x / temperature).collect::<Vec<_>>());
        let start = top_k(&first, beam_size);
        let beams = start.len();
        let mut scores: Vec<f32> = start.iter().map(|&t| first[t]).collect();
        let mut tokens: Vec<Vec<u32>> = start.iter().map(|&t| vec![t as u32]).collect();
        let mut lengths = vec![1f32; beams];
        let mut stopped: Vec<bool> = start.iter().map(|&t| t as u32 == self.stop_token).collect();
        cache = cache.select(&Tensor::from_vec(
            vec![0u32; beams],
            beams,
            self.gpt2.device(),
        )?)?;
        let mut next: Vec<u32> = start.iter().map(|&t| t as u32).collect();
        for _ in 1..self.token_budget(opts) {
            if stopped.iter().all(|&s| s) {
                break;
            }
            let ids = Tensor::from_vec(next.clone(), (beams, 1), self.gpt2.device())?;
            let logits = self
                .gpt2
                .forward_ids(&ids, &mut cache)?
                .squeeze(1)?
                .to_vec2::<f32>()?;
            let mut averaged = vec![f32::NEG_INFINITY; beams * vocab];
            for b in 0..beams {
                let lp = if stopped[b] {
                    // A finished beam may only "continue" with token 0 at no cost.
                    let mut v = vec![f32::NEG_INFINITY; vocab];
                    v[0] = 0.0;
                    v
                } else {
                    lengths[b] += 1.0;
                    log_softmax(
                        &logits[b]
                            .iter()
                            .map(|x| x / temperature)
                            .collect::<Vec<_>>(),
                    )
                };
                for (t, l) in lp.iter().enumerate() {
                    averaged[b * vocab + t] = (scores[b] + l) / lengths[b];
                }
            }
            let best = top_k(&averaged, beams);
            let src: Vec<usize> = best.iter().map(|&i| i / vocab).collect();
            next = best.iter().map(|&i| (i % vocab) as u32).collect();
            lengths = src.iter().map(|&s| lengths[s]).collect();
            scores = best
                .iter()
                .zip(&lengths)
                .map(|(&i, &l)| averaged[i] * l)
                .collect();
            tokens = src
                .iter()
                .zip(&next)
                .map(|(&s, &t)| {
                    let mut v = tokens[s].clone();
                    v.push(t);
                    v
                })
                .collect();
            stopped = src
                .iter()
                .zip(&next)
                .map(|(&s, &t)| stopped[s] || t == self.stop_token)
                .collect();
            let rows = Tensor::from_vec(
                src.iter().map(|&s| s as u32).collect::<Vec<_>>(),
                beams,
                self.gpt2.device(),
            )?;
            cache = cache.select(&rows)?;
        }
        let best = (0..beams)
            .max_by(|&a, &b| {
                (scores[a] / lengths[a])
                    .total_cmp(&(scores[b] / lengths[b]))
                    .then(b.cmp(&a))
            })
            .unwrap_or(0);
        let mut out = tokens[best].clone();
        out.truncate(lengths[best] as usize);
        Ok(out)
    }

    /// Nucleus sampling: from the smallest set of most likely tokens whose probability reaches
    /// `top_p`, after dividing logits by the temperature; repeatable with `seed`.
    pub fn sample(
        &self,
        clip_embedding: &[f32],
        top_p: f32,
        seed: u64,
        opts: &DecodeOptions,
    ) -> Result<Vec<u32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let temperature = opts.positive_temperature()?;
        let mut cache = self.gpt2.new_cache();
        let mut logits = self
            .gpt2
            .forward_embeds(&self.prefix(&[clip_embedding.to_vec()])?, &mut cache)?;
        let mut out = Vec::new();
        for _ in 0..self.token_budget(opts) {
            let last: Vec<f32> = logits
                .narrow(1, logits.dim(1)? - 1, 1)?
                .flatten_all()?
                .to_vec1()?;
            let lp = log_softmax(&last.iter().map(|x| x / temperature).collect::<Vec<_>>());
            let order = top_k(&lp, lp.len());
            let mut kept = Vec::new();
            let mut mass = 0.0;
            for &t in &order {
                kept.push(t);
                mass += lp[t].exp();
                if mass >= top_p {
                    break;
                }
            }
            let mut r = rng.random::<f32>() * mass;
            let mut token = kept[kept.len() - 1];
            for &t in &kept {
                r -= lp[t].exp();
                if r <= 0.0 {
                    token = t;
                    break;
                }
            }
            let token = token as u32;
            out.push(token);
            if token == self.stop_token {
                break;
            }
            logits = self.gpt2.forward_ids(
                &Tensor::from_vec(vec![token], (1, 1), self.gpt2.device())?,
                &mut cache,
            )?;
        }
        Ok(out)
    }

    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }
}

/// Options of `import-clipcap`.
pub struct ImportOptions<'a> {
    pub weights: &'a Path,
    pub gpt2_dir: &'a Path,
    pub gpt2_spec: &'a str,
    pub clip_spec: &'a str,
    /// The CLIP embedding width (the CLIP model's `projection_dim`).
    pub prefix_size: usize,
    pub mapping_type: crate::models::mapper::MappingType,
    pub prefix_length: usize,
    pub clip_length: usize,
    pub num_layers: usize,
    pub normalize_prefix: bool,
}

/// Converts a reference ClipCap checkpoint into a captioner directory, checking every tensor
/// by loading it; `out` appears whole or not at all.
pub fn import_clipcap(o: &ImportOptions, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let weights = Weights::from_file(o.weights, &device)?;
    let names = weights.names();
    if !names.iter().any(|n| n.starts_with("clip_project."))
        || !names.iter().any(|n| n.starts_with("gpt."))
    {
        bail!(
            "{}: not a ClipCap state dict (expected clip_project.* and gpt.* tensors)",
            o.weights.display()
        );
    }
    let gpt2_config = Gpt2Config::from_file(&o.gpt2_dir.join("config.json"))?;
    let config = CaptionerConfig {
        mapping: MapperConfig {
            mapping_type: o.mapping_type,
            prefix_size: o.prefix_size,
            prefix_length: o.prefix_length,
            clip_length: o.clip_length,
            num_layers: o.num_layers,
            gpt_width: gpt2_config.n_embd,
        },
        normalize_prefix: o.normalize_prefix,
        clip_model: o.clip_spec.to_string(),
        gpt2_model: o.gpt2_spec.to_string(),
        gpt2_config,
    };
    let tok_path = o.gpt2_dir.join("tokenizer.json");
    let tokenizer = crate::tokenizer::load_json(&tok_path)?;
    // Building the model checks every tensor's name and shape against the options.
    Captioner::from_weights(config.clone(), &weights, tokenizer)
        .with_context(|| format!("{}: does not fit the given options", o.weights.display()))?;
    let tensors: HashMap<String, Tensor> = names
        .iter()
        .filter(|n| n.starts_with("clip_project.") || n.starts_with("gpt.transformer."))
        .map(|n| Ok((n.clone(), weights.get_any(n)?.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let folder = crate::atomic::NewDir::create(out)?;
    folder.write_safetensors("model.safetensors", &tensors)?;
    folder.write(
        "config.json",
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    folder.copy(&tok_path, "tokenizer.json")?;
    folder.commit()?;
    Ok(())
}
