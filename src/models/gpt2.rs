//! GPT-2 as transformers' `GPT2LMHeadModel` computes it, for ClipCap captioning: it takes input
//! embeddings (so an image prefix can be prepended to token embeddings) and keeps a KV cache for
//! generation. The language-model head is tied to the token embeddings, as in every GPT-2.
//!
//! Checkpoint keys are those of the Hugging Face `gpt2` layout, with or without the
//! `transformer.` prefix. GPT-2's `Conv1D` layers store weights as `(in, out)`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use super::cpu_kernels;
use super::layers::{Activation, LayerNorm, Linear, softmax_last};
use super::weights::{Scope, Weights};

/// A Hugging Face GPT-2 `config.json`; defaults are `gpt2`'s (124M).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    pub activation_function: Activation,
    pub layer_norm_epsilon: f64,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: Activation::GeluTanh,
            layer_norm_epsilon: 1e-5,
        }
    }
}

impl Gpt2Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read GPT-2 config", path.display()))?;
        let c: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid GPT-2 config.json", path.display()))?;
        if c.n_head == 0 || !c.n_embd.is_multiple_of(c.n_head) {
            bail!(
                "{}: n_embd {} is not a multiple of n_head {}",
                path.display(),
                c.n_embd,
                c.n_head
            );
        }
        Ok(c)
    }

    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    heads: usize,
    act: Activation,
}

/// Keys and values of the positions seen so far, per layer: `(B, H, T, head_dim)`.
#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
        }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the batch rows in `rows` (beam search reorders hypotheses).
    pub fn select(&self, rows: &Tensor) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.index_select(rows, 0)?, v.index_select(rows, 0)?))),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }
}

fn conv1d(w: &Scope, n_in: usize, n_out: usize) -> Result<Linear> {
    let weight = w.get("weight", &[n_in, n_out])?;
    let bias = w.get("bias", &[n_out])?;
    // Conv1D stores (in, out): the transpose of a linear layer's (out, in) weight.
    Linear::from_transposed(weight, Some(bias))
}

impl Block {
    fn load(w: &Scope, c: &Gpt2Config) -> Result<Self> {
        let d = c.n_embd;
        let (attn, mlp) = (w.pp("attn"), w.pp("mlp"));
        Ok(Self {
            ln_1: LayerNorm::load(&w.pp("ln_1"), d, c.layer_norm_epsilon)?,
            c_attn: conv1d(&attn.pp("c_attn"), d, 3 * d)?,
            c_proj: conv1d(&attn.pp("c_proj"), d, d)?,
            ln_2: LayerNorm::load(&w.pp("ln_2"), d, c.layer_norm_epsilon)?,
            c_fc: conv1d(&mlp.pp("c_fc"), d, c.inner())?,
            mlp_proj: conv1d(&mlp.pp("c_proj"), c.inner(), d)?,
            heads: c.n_head,
            act: c.activation_function,
        })
    }

    fn attention(&self, xs: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let h = self.heads;
        let hd = d / h;
        let qkv = self.c_attn.forward(xs)?;
        if cache.is_none() && xs.device().is_cpu() && xs.dtype() == DType::F32 {
            // The whole sequence at once (training, or a prompt): the fused kernel, with the
            // keys and values kept for the positions that follow.
            let out = cpu_kernels::attention(&qkv, h, true)?;
            let kv = qkv
                .detach()
                .reshape((b, t, 3, h, hd))?
                .permute((2, 0, 3, 1, 4))?;
            *cache = Some((kv.get(1)?.contiguous()?, kv.get(2)?.contiguous()?));
            return self.c_proj.forward(&out);
        }
        let qkv = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let mut k = qkv.get(1)?.contiguous()?;
        let mut v = qkv.get(2)?.contiguous()?;
        let past = match cache {
            Some((pk, pv)) => {
                let p = pk.dim(2)?;
                k = Tensor::cat(&[&*pk, &k], 2)?.contiguous()?;
                v = Tensor::cat(&[&*pv, &v], 2)?.contiguous()?;
                p
            }
            None => 0,
        };
        *cache = Some((k.clone(), v.clone()));
        let total = past + t;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        // Query i sits at absolute position past + i and sees keys up to it.
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, total), xs.device())?;
        let probs = softmax_last(&scores.broadcast_add(&mask)?)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        self.c_proj.forward(&out)
    }

    fn forward(&self, xs: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let a = self.attention(&self.ln_1.forward(xs)?, cache)?;
        let xs = (xs + a)?;
        let m = self.mlp_proj.forward(
            &self
                .act
                .forward(&self.c_fc.forward(&self.ln_2.forward(&xs)?)?)?,
        )?;
        Ok((xs + m)?)
    }
}

/// GPT-2 with its tied language-model head.
pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// The tied head: `wte` as a bias-free linear layer.
    head: Linear,
    config: Gpt2Config,
    device: Device,
}

impl Gpt2 {
    pub fn new(config: Gpt2Config, w: &Weights) -> Result<Self> {
        // `gpt2` on the hub stores bare keys; GPT2LMHeadModel.save_pretrained adds `transformer.`.
        if w.contains("transformer.wte.weight") {
            Self::load(config, &w.pp("transformer"))
        } else {
            Self::load(config, &w.root())
        }
    }

    /// Loads the weights of scope `w` (`gpt.transformer` in ClipCap checkpoints).
    pub fn load(config: Gpt2Config, w: &Scope) -> Result<Self> {
        let d = config.n_embd;
        let wte = w.pp("wte").get("weight", &[config.vocab_size, d])?;
        let wpe = w.pp("wpe").get("weight", &[config.n_positions, d])?;
        let blocks = (0..config.n_layer)
            .map(|i| Block::load(&w.pp("h").pp(i), &config))
            .collect::<Result<_>>()?;
        let ln_f = LayerNorm::load(&w.pp("ln_f"), d, config.layer_norm_epsilon)?;
        let head = Linear::from_weights(wte.clone(), None)?;
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            config,
            device: w.device().clone(),
        })
    }

    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config = Gpt2Config::from_file(&dir.join("config.json"))?;
        Self::new(config, &Weights::from_model_dir(dir, device)?)
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }

    /// Token embeddings `(B, T, n_embd)` of ids `(B, T)`.
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self
            .wte
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.n_embd))?)
    }

    /// Logits `(B, T, vocab)` for input embeddings `(B, T, n_embd)` that follow the
    /// `cache.len()` positions already in `cache` (which is extended).
    pub fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, cache)?;
        self.logits(&hidden)
    }

    /// The tied head: logits `(…, vocab)` of final hidden states `(…, n_embd)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head.forward(hidden)
    }

    /// The tied head's weight `(vocab, n_embd)` (the token embeddings), for losses that compute
    /// the logits themselves.
    pub fn head_weight(&self) -> &Tensor {
        &self.wte
    }

    /// Final (LayerNorm'd) hidden states `(B, T, n_embd)`, before the head.
    pub fn hidden_states(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_, t, _) = embeds.dims3()?;
        let past = cache.len();
        if past + t > self.config.n_positions {
            bail!(
                "sequence of {} positions exceeds GPT-2's context of {}",
                past + t,
                self.config.n_positions
            );
        }
        let mut xs = embeds.broadcast_add(&self.wpe.narrow(0, past, t)?)?;
        for (block, c) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            xs = block.forward(&xs, c)?;
        }
        self.ln_f.forward(&xs)
    }

    /// Logits for token ids `(B, T)`.
    pub fn forward_ids(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.forward_embeds(&self.embed_tokens(ids)?, cache)
    }
}

/// Index of the largest value of each row of `(B, V)` logits.
pub fn argmax_last(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}
