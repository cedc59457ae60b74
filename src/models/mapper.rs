//! ClipCap's mapping networks (Mokady et al., 2021), which turn one CLIP image embedding into K
//! GPT-2 input embeddings (the prefix), as the reference implementation defines them:
//!
//! - `mlp`: `Linear(prefix_size, E·K/2) → tanh → Linear(E·K/2, E·K)`, viewed as `(K, E)`
//!   (checkpoint keys `clip_project.model.0.*`, `clip_project.model.2.*`);
//! - `transformer`: `Linear(prefix_size, clip_length·E)` viewed as `clip_length` tokens, then K
//!   learned prefix constants appended, N pre-LayerNorm layers of 8-head self-attention (queries
//!   and keys/values without bias) and a ReLU MLP of width 2E; the output is the last K
//!   positions (keys `clip_project.linear.*`, `clip_project.prefix_const`,
//!   `clip_project.transformer.layers.{i}.*`).

use anyhow::{Result, bail};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::layers::{LayerNorm, Linear, softmax_last};
use super::weights::Scope;

/// Which mapping network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingType {
    Mlp,
    Transformer,
}

/// The shapes of a mapping network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapperConfig {
    pub mapping_type: MappingType,
    /// Width of the CLIP embedding it reads.
    pub prefix_size: usize,
    /// K: how many GPT-2 embeddings it writes.
    pub prefix_length: usize,
    /// Tokens the CLIP embedding is spread over (transformer mapper).
    pub clip_length: usize,
    /// Transformer layers (transformer mapper).
    pub num_layers: usize,
    /// E: GPT-2's width.
    pub gpt_width: usize,
}

const HEADS: usize = 8;

/// One pre-LayerNorm self-attention layer of the transformer mapper.
pub struct MapperLayer {
    norm1: LayerNorm,
    to_queries: Linear,
    to_keys_values: Linear,
    project: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl MapperLayer {
    fn load(w: &Scope, e: usize) -> Result<Self> {
        let (attn, mlp) = (w.pp("attn"), w.pp("mlp"));
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), e, 1e-5)?,
            to_queries: Linear::load_no_bias(&attn.pp("to_queries"), e, e)?,
            to_keys_values: Linear::load_no_bias(&attn.pp("to_keys_values"), e, 2 * e)?,
            project: Linear::load(&attn.pp("project"), e, e)?,
            norm2: LayerNorm::load(&w.pp("norm2"), e, 1e-5)?,
            fc1: Linear::load(&mlp.pp("fc1"), e, 2 * e)?,
            fc2: Linear::load(&mlp.pp("fc2"), 2 * e, e)?,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, e) = x.dims3()?;
        let hd = e / HEADS;
        let q = self
            .to_queries
            .forward(x)?
            .reshape((b, n, HEADS, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let kv = self
            .to_keys_values
            .forward(x)?
            .reshape((b, n, 2, HEADS, hd))?;
        let k = kv
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let v = kv
            .narrow(2, 1, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let probs = softmax_last(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, e))?;
        self.project.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?)?)?;
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.relu()?)?;
        Ok((x + h)?)
    }
}

/// A loaded mapping network.
pub enum Mapper {
    Mlp {
        fc1: Linear,
        fc2: Linear,
        config: MapperConfig,
    },
    Transformer {
        linear: Linear,
        prefix_const: Tensor,
        layers: Vec<MapperLayer>,
        config: MapperConfig,
    },
}

impl Mapper {
    /// Loads the weights of scope `w` (`clip_project` in reference checkpoints).
    pub fn load(w: &Scope, config: MapperConfig) -> Result<Self> {
        let (p, k, e) = (config.prefix_size, config.prefix_length, config.gpt_width);
        if k == 0 || e == 0 || p == 0 {
            bail!(
                "mapping network sizes must be positive (prefix_size {p}, prefix_length {k}, GPT-2 width {e})"
            );
        }
        Ok(match config.mapping_type {
            MappingType::Mlp => Mapper::Mlp {
                fc1: Linear::load(&w.pp("model").pp(0), p, e * k / 2)?,
                fc2: Linear::load(&w.pp("model").pp(2), e * k / 2, e * k)?,
                config,
            },
            MappingType::Transformer => {
                if e % HEADS != 0 {
                    bail!(
                        "the transformer mapper needs a GPT-2 width divisible by {HEADS}, got {e}"
                    );
                }
                Mapper::Transformer {
                    linear: Linear::load(&w.pp("linear"), p, config.clip_length * e)?,
                    prefix_const: w.get("prefix_const", &[k, e])?,
                    layers: (0..config.num_layers)
                        .map(|i| MapperLayer::load(&w.pp("transformer").pp("layers").pp(i), e))
                        .collect::<Result<_>>()?,
                    config,
                }
            }
        })
    }

    pub fn config(&self) -> &MapperConfig {
        match self {
            Mapper::Mlp { config, .. } | Mapper::Transformer { config, .. } => config,
        }
    }

    /// `(B, prefix_size)` CLIP embeddings to `(B, K, E)` GPT-2 input embeddings.
    pub fn forward(&self, clip: &Tensor) -> Result<Tensor> {
        let b = clip.dim(0)?;
        match self {
            Mapper::Mlp { fc1, fc2, config } => {
                let h = fc1.forward(clip)?.tanh()?;
                Ok(fc2
                    .forward(&h)?
                    .reshape((b, config.prefix_length, config.gpt_width))?)
            }
            Mapper::Transformer {
                linear,
                prefix_const,
                layers,
                config,
            } => {
                let x = linear
                    .forward(clip)?
                    .reshape((b, config.clip_length, config.gpt_width))?;
                let consts = prefix_const.unsqueeze(0)?.broadcast_as((
                    b,
                    config.prefix_length,
                    config.gpt_width,
                ))?;
                let mut x = Tensor::cat(&[&x, &consts.contiguous()?], 1)?;
                for l in layers {
                    x = l.forward(&x)?;
                }
                Ok(x.narrow(1, config.clip_length, config.prefix_length)?)
            }
        }
    }
}
