//! CLIP as transformers' `CLIPModel` computes it: a ViT image tower and a causal text
//! transformer, each followed by a bias-free projection into the shared embedding space.
//!
//! Weight paths are the checkpoint keys of the Hugging Face layout
//! (`vision_model.encoder.layers.0.self_attn.q_proj.weight`, …). Every tensor is fetched through
//! [`Weights::get`] with the shape the config implies, so a missing or mis-shaped tensor is an
//! error naming it — never a silently invented value.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use super::layers::{Activation, Attention, LayerNorm, Linear, Mlp};
use super::reduced_precision::Precision;
use super::weights::{Scope, Weights};

/// `text_config` of a Hugging Face CLIP `config.json`; defaults are transformers' defaults.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// `2` is transformers' legacy marker: pool at the arg-max token id (the end token of the
    /// original vocabulary); otherwise pool at the first occurrence of this id.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }
}

/// `vision_config` of a Hugging Face CLIP `config.json`; defaults are transformers' defaults.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// A Hugging Face CLIP `config.json` (every size: ViT-B/32, B/16, L/14, L/14-336, …).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl ClipConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read CLIP config", path.display()))?;
        let config: ClipConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid CLIP config.json", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}: impossible CLIP configuration", path.display()))?;
        Ok(config)
    }

    /// openai/clip-vit-base-patch32's shapes, for benchmarks with random weights.
    pub fn vit_base_patch32() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.text_config;
        let v = &self.vision_config;
        for (what, hidden, heads) in [
            ("text", t.hidden_size, t.num_attention_heads),
            ("vision", v.hidden_size, v.num_attention_heads),
        ] {
            if hidden == 0 || heads == 0 || hidden % heads != 0 {
                bail!(
                    "{what} hidden_size {hidden} is not a positive multiple of num_attention_heads {heads}"
                );
            }
        }
        if v.num_hidden_layers == 0 || t.num_hidden_layers == 0 {
            bail!("num_hidden_layers must be positive in both towers");
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            bail!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size,
                v.patch_size
            );
        }
        if self.projection_dim == 0 || t.max_position_embeddings == 0 || t.vocab_size == 0 {
            bail!("projection_dim, max_position_embeddings and vocab_size must be positive");
        }
        Ok(())
    }
}

/// The sizes of one tower's encoder layers.
#[derive(Clone, Copy)]
struct LayerShape {
    hidden: usize,
    inter: usize,
    heads: usize,
    act: Activation,
    eps: f64,
}

impl LayerShape {
    fn of_text(c: &ClipTextConfig) -> Self {
        Self {
            hidden: c.hidden_size,
            inter: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        }
    }

    fn of_vision(c: &ClipVisionConfig) -> Self {
        Self {
            hidden: c.hidden_size,
            inter: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        }
    }
}

/// Pre-LayerNorm transformer block shared by both towers.
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn load(w: &Scope, s: LayerShape) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::load(&w.pp("layer_norm1"), s.hidden, s.eps)?,
            self_attn: Attention::load(&w.pp("self_attn"), s.hidden, s.heads)?,
            layer_norm2: LayerNorm::load(&w.pp("layer_norm2"), s.hidden, s.eps)?,
            mlp: Mlp::load(&w.pp("mlp"), s.hidden, s.inter, s.act)?,
        })
    }

    fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        let xs = self
            .self_attn
            .forward_plus(&self.layer_norm1.forward(xs)?, xs, causal)?;
        self.mlp.forward_plus(&self.layer_norm2.forward(&xs)?, &xs)
    }

    /// The output at the pooled positions only, `(N, D)`, `rows` indexing the `B·T` positions
    /// flattened: a tower pools one token a sequence, so its last layer needs nothing else. Skips
    /// the output projection and the MLP of every other position (ViT-B/32's image tower: 6 % of
    /// its work; the text tower: most of its last layer).
    fn forward_rows(&self, xs: &Tensor, rows: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let pooled = xs.reshape((b * t, d))?.index_select(rows, 0)?;
        let xs = self.self_attn.forward_rows_plus(
            &self.layer_norm1.forward(xs)?,
            rows,
            &pooled,
            causal,
        )?;
        self.mlp.forward_plus(&self.layer_norm2.forward(&xs)?, &xs)
    }
}

/// `encoder.layers.{0..n}` of a tower.
fn load_layers(w: &Scope, n: usize, shape: LayerShape) -> Result<Vec<EncoderLayer>> {
    let layers = w.pp("encoder").pp("layers");
    (0..n)
        .map(|i| EncoderLayer::load(&layers.pp(i), shape))
        .collect()
}

/// `text_model.*`: token + position embeddings, causal encoder, final LayerNorm.
struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    eos_token_id: u32,
    vocab_size: usize,
}

impl TextTransformer {
    /// `w`: the `text_model` scope.
    fn load(w: &Scope, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let embeddings = w.pp("embeddings");
        Ok(Self {
            token_embedding: embeddings
                .pp("token_embedding")
                .get("weight", &[c.vocab_size, d])?,
            position_embedding: embeddings
                .pp("position_embedding")
                .get("weight", &[c.max_position_embeddings, d])?,
            layers: load_layers(w, c.num_hidden_layers, LayerShape::of_text(c))?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), d, c.layer_norm_eps)?,
            eos_token_id: c.eos_token_id,
            vocab_size: c.vocab_size,
        })
    }

    /// Index of the pooled token of one sequence, exactly as transformers chooses it.
    fn pooled_index(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            // torch.argmax returns the first maximal element.
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&i| i == max).unwrap_or(0)
        } else {
            ids.iter()
                .position(|&i| i == self.eos_token_id)
                .unwrap_or(0)
        }
    }

    /// `ids`: equal-length rows. Returns the pooled (final-LayerNorm'd) states, `(B, hidden)`.
    fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.first().map(|r| r.len()).unwrap_or(0);
        let max_t = self.position_embedding.dim(0)?;
        if t == 0 || t > max_t {
            bail!("token sequence length {t} is outside 1..={max_t}");
        }
        let mut flat = Vec::with_capacity(b * t);
        for row in ids {
            if row.len() != t {
                bail!("token rows of a batch must have equal length");
            }
            if let Some(&bad) = row.iter().find(|&&i| i as usize >= self.vocab_size) {
                bail!(
                    "token id {bad} is outside the model's vocabulary ({})",
                    self.vocab_size
                );
            }
            flat.extend_from_slice(row);
        }
        let d = self.token_embedding.dim(1)?;
        let flat = Tensor::from_vec(flat, b * t, device)?;
        let tokens = self
            .token_embedding
            .index_select(&flat, 0)?
            .reshape((b, t, d))?;
        let positions = self.position_embedding.narrow(0, 0, t)?;
        let mut xs = tokens.broadcast_add(&positions)?;
        // Only the pooled row of each sequence is read: because attention is causal, padding
        // after it never changes it, so batches may be padded to their own longest row.
        let rows: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, r)| (i * t + self.pooled_index(r)) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, device)?;
        let Some((last, rest)) = self.layers.split_last() else {
            bail!("the text tower has no layers");
        };
        for layer in rest {
            xs = layer.forward(&xs, true)?;
        }
        self.final_layer_norm
            .forward(&last.forward_rows(&xs, &rows, true)?)
    }
}

/// `vision_model.*`: patch + class + position embeddings, `pre_layrnorm` (sic, the checkpoint
/// key), encoder, `post_layernorm` on the class token.
struct VisionTransformer {
    /// The bias-free patch convolution as one linear layer `(C·p·p → D)`, so that it computes
    /// in the model's precision like the others.
    patch_embedding: Linear,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    image_size: usize,
    patch_size: usize,
    channels: usize,
}

impl VisionTransformer {
    /// `w`: the `vision_model` scope.
    fn load(w: &Scope, c: &ClipVisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let p = c.patch_size;
        let n_pos = (c.image_size / p).pow(2) + 1;
        let embeddings = w.pp("embeddings");
        let patch = embeddings
            .pp("patch_embedding")
            .get("weight", &[d, c.num_channels, p, p])?;
        Ok(Self {
            patch_embedding: Linear::from_weights(
                patch.reshape((d, c.num_channels * p * p))?,
                None,
            )?
            .in_precision(w.precision())?,
            class_embedding: embeddings.get("class_embedding", &[d])?,
            position_embedding: embeddings
                .pp("position_embedding")
                .get("weight", &[n_pos, d])?,
            // (sic: transformers' name)
            pre_layrnorm: LayerNorm::load(&w.pp("pre_layrnorm"), d, c.layer_norm_eps)?,
            layers: load_layers(w, c.num_hidden_layers, LayerShape::of_vision(c))?,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), d, c.layer_norm_eps)?,
            image_size: c.image_size,
            patch_size: p,
            channels: c.num_channels,
        })
    }

    /// `pixel_values`: `(B, C, S, S)`. Returns the pooled, post-LayerNorm'd class token `(B, D)`.
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4()?;
        let s = self.image_size;
        if c != self.channels || h != s || w != s {
            bail!(
                "pixel values have shape ({b}, {c}, {h}, {w}); the model expects (B, {}, {s}, {s})",
                self.channels
            );
        }
        let p = self.patch_size;
        let g = s / p;
        let d = self.class_embedding.dim(0)?;
        // Non-overlapping patches, flattened in (channel, row, column) order like the conv kernel.
        let patches = pixel_values
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let patches = self
            .patch_embedding
            .forward(&patches)?
            .reshape((b, g * g, d))?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?;
        let xs = xs.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut xs = self.pre_layrnorm.forward(&xs)?;
        let Some((last, rest)) = self.layers.split_last() else {
            bail!("the image tower has no layers");
        };
        for layer in rest {
            xs = layer.forward(&xs, false)?;
        }
        let (_, t, _) = xs.dims3()?;
        let class_rows: Vec<u32> = (0..b).map(|i| (i * t) as u32).collect();
        let class_rows = Tensor::from_vec(class_rows, b, xs.device())?;
        let pooled = last.forward_rows(&xs, &class_rows, false)?;
        self.post_layernorm.forward(&pooled)
    }
}

/// The whole CLIP model: both towers, both projections and the learned temperature.
pub struct ClipModel {
    text: TextTransformer,
    vision: VisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: f32,
    config: ClipConfig,
    device: Device,
    precision: Precision,
    /// What the weights and activations are held in (f32 but on a GPU in reduced precision).
    dtype: DType,
}

impl ClipModel {
    /// Builds the model from checked weights (see [`Weights`]).
    pub fn new(config: ClipConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        let p = config.projection_dim;
        let text = TextTransformer::load(&weights.pp("text_model"), &config.text_config)?;
        let vision = VisionTransformer::load(&weights.pp("vision_model"), &config.vision_config)?;
        let visual_projection = Linear::load_no_bias(
            &weights.pp("visual_projection"),
            config.vision_config.hidden_size,
            p,
        )?;
        let text_projection = Linear::load_no_bias(
            &weights.pp("text_projection"),
            config.text_config.hidden_size,
            p,
        )?;
        let logit_scale = weights
            .get("logit_scale", &[])?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        Ok(Self {
            text,
            vision,
            visual_projection,
            text_projection,
            logit_scale,
            config,
            device: weights.device().clone(),
            precision: weights.precision(),
            dtype: weights.dtype(),
        })
    }

    /// Loads `config.json` and `model.safetensors` (or `pytorch_model.bin`) from a directory.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_dir_in(dir, device, Precision::F32)
    }

    /// [`Self::load_dir`] with the linear layers computing in `precision` (refused where the
    /// device cannot).
    pub fn load_dir_in(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::from_model_dir(dir, device)?.with_precision(precision)?;
        Self::new(config, &weights)
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the model computes in (as asked for; see [`Self::dtype`] for the tensors' type).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The type the weights and activations are held in: f32, or f16 / bf16 for a model loaded
    /// in reduced precision on a GPU (or with [`Weights::with_dtype`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The side length of the square images the vision tower takes.
    pub fn image_size(&self) -> usize {
        self.config.vision_config.image_size
    }

    /// The longest token sequence the text tower takes (77 for every OpenAI CLIP).
    pub fn context_length(&self) -> usize {
        self.config.text_config.max_position_embeddings
    }

    /// `exp(logit_scale)`: the factor on cosine similarities in `logits_per_image`.
    pub fn logit_scale_exp(&self) -> f32 {
        self.logit_scale.exp()
    }

    /// Projected image embeddings before L2 normalisation, as `get_image_features`, in f32
    /// whatever the model computes in (`pixel_values` too may be f32 for any model).
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision.forward(&pixel_values.to_dtype(self.dtype)?)?;
        Ok(self
            .visual_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }

    /// Projected text embeddings before L2 normalisation, as `get_text_features`, in f32. Rows
    /// must have equal length (pad with any id after the end token).
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let pooled = self.text.forward(ids, &self.device)?;
        Ok(self
            .text_projection
            .forward(&pooled)?
            .to_dtype(DType::F32)?)
    }
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(xs.broadcast_div(&norm)?)
}
