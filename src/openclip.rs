//! OpenCLIP checkpoints (RemoteCLIP, GeoRSCLIP, fine-tunes saved by open_clip's training
//! script) turned into the Hugging Face CLIP folder every command loads: `config.json`,
//! `model.safetensors`, `tokenizer.json`, `preprocessor_config.json`.
//!
//! OpenCLIP's ViT-based `CLIP` and transformers' `CLIPModel` compute the same function with
//! differently named and packed tensors, so the import is a renaming plus three reshapes:
//! attention's packed `in_proj_weight` / `in_proj_bias` split into q, k, v (in that order), and
//! the two projections (`visual.proj`, `text_projection`, applied as `x @ P`) transposed into
//! linear weights. What differs in computation is carried by the written configs: OpenCLIP's
//! ViTs use the exact GELU unless `quick_gelu`, heads are `width / head_width`, the MLP is
//! `int(width · mlp_ratio)` wide, the text tower pools at the arg-max token id, and images are
//! preprocessed by torchvision (bicubic resize of the shortest side, centre crop rounded half to
//! even, the config's mean and std).
//!
//! Anything the mapping does not cover is refused by name: configuration options that change the
//! computation (ResNet, timm or Hugging Face towers, layer scale, attentional pooling, …) and
//! checkpoint tensors that are unknown, missing or of the wrong shape.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value, json};

use crate::models::clip::{ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
use crate::models::layers::Activation;
use crate::models::weights::Weights;

/// The architectures `--arch` knows: OpenCLIP's own model configs (`model_configs/*.json` of
/// open_clip 3.3), in its format. `NAME-quickgelu` adds `"quick_gelu": true` to any of them.
pub const ARCHS: &[(&str, &str)] = &[
    (
        "ViT-B-32",
        r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#,
    ),
    (
        "ViT-B-16",
        r#"{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#,
    ),
    (
        "ViT-L-14",
        r#"{"embed_dim": 768, "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}"#,
    ),
    (
        "ViT-L-14-336",
        r#"{"embed_dim": 768, "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}"#,
    ),
    (
        "ViT-H-14",
        r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}"#,
    ),
];

/// Families OpenCLIP names that have no ViT image tower here.
const UNSUPPORTED_FAMILIES: &[(&str, &str)] = &[
    ("RN", "a ResNet image tower"),
    ("convnext", "a ConvNeXt (timm) image tower"),
    ("coca", "a CoCa model"),
    ("ViT-SO400M", "a SigLIP model"),
    ("xlm-roberta", "a Hugging Face text tower"),
    ("mt5", "a Hugging Face text tower"),
    ("EVA", "an EVA (timm) image tower"),
];

/// OpenAI's training mean and std, OpenCLIP's default preprocessing.
#[allow(clippy::excessive_precision)]
const OPENAI_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
const OPENAI_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// One tower's transformer: `layers` blocks of `width`, `heads` heads, an MLP `mlp` wide.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerShape {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
}

/// How OpenCLIP preprocesses images for this model (`preprocess_cfg`).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// Pillow's filter number: 3 bicubic, 2 bilinear.
    pub resample: u32,
    /// `resize_mode: "squash"`: resized to the square, no crop (else shortest side + crop).
    pub squash: bool,
}

/// An OpenCLIP ViT CLIP, read from OpenCLIP's JSON model config.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenClipConfig {
    pub embed_dim: usize,
    pub quick_gelu: bool,
    pub image_size: usize,
    pub patch_size: usize,
    pub vision: TowerShape,
    pub context_length: usize,
    pub vocab_size: usize,
    pub text: TowerShape,
    pub preprocess: Preprocessing,
}

/// The keys of one JSON object, taken one by one; what is left at the end is refused by name.
struct Keys<'a> {
    map: Map<String, Value>,
    path: &'a str,
}

impl<'a> Keys<'a> {
    fn new(value: Value, path: &'a str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => bail!("{path} is not a JSON object but {other}"),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn usize_or(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => size_value(&v).with_context(|| format!("{}: {v}", self.name(key))),
        }
    }

    fn f64_or(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .with_context(|| format!("{} must be a number, not {v}", self.name(key))),
        }
    }

    fn bool_or(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .with_context(|| format!("{} must be true or false, not {v}", self.name(key))),
        }
    }

    /// Options whose value does not change what a trained model computes (dropout rates,
    /// training precision, token outputs): read and set aside.
    fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.map.remove(*k);
        }
    }

    /// An option that is only supported at its default: `what` says what another value means.
    fn require(&mut self, key: &str, default: Value, what: &str) -> Result<()> {
        if let Some(v) = self.take(key)
            && v != default
        {
            bail!(
                "{} = {v}: {what} is not supported (skyscribe's CLIP is OpenAI's ViT layout)",
                self.name(key)
            );
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if let Some(k) = self.map.keys().next() {
            bail!(
                "unknown option {} in the OpenCLIP config; refusing rather than guessing what it \
                 changes",
                self.name(k)
            );
        }
        Ok(())
    }
}

/// An int, or a pair of equal ints (`image_size: [224, 224]`).
fn size_value(v: &Value) -> Result<usize> {
    let one = |v: &Value| v.as_u64().map(|n| n as usize);
    if let Some(n) = one(v) {
        return Ok(n);
    }
    if let Some([a, b]) = v.as_array().map(|a| a.as_slice())
        && let (Some(a), Some(b)) = (one(a), one(b))
    {
        if a == b {
            return Ok(a);
        }
        bail!("non-square sizes ({a}×{b}) are not supported");
    }
    bail!("expected a positive integer")
}

impl OpenClipConfig {
    /// A built-in architecture by OpenCLIP's name (see [`ARCHS`]).
    pub fn builtin(arch: &str) -> Result<Self> {
        let (base, quick) = match arch.strip_suffix("-quickgelu") {
            Some(base) => (base, true),
            None => (arch, false),
        };
        if let Some((_, json)) = ARCHS.iter().find(|(name, _)| *name == base) {
            let mut value: Value = serde_json::from_str(json).expect("built-in configs parse");
            if quick {
                value["quick_gelu"] = Value::Bool(true);
            }
            return Self::from_json(value).with_context(|| format!("--arch {arch}"));
        }
        if let Some((_, what)) = UNSUPPORTED_FAMILIES
            .iter()
            .find(|(prefix, _)| arch.to_lowercase().starts_with(&prefix.to_lowercase()))
        {
            bail!(
                "--arch {arch}: {what}, which skyscribe does not run (its CLIP is a ViT image \
                 tower with OpenAI's text transformer); the supported architectures are {}",
                names()
            );
        }
        bail!(
            "--arch {arch}: not a built-in architecture ({}); give its OpenCLIP config with \
             --arch-config FILE.json",
            names()
        )
    }

    /// A config in OpenCLIP's JSON format (`embed_dim`, `vision_cfg`, `text_cfg`,
    /// `quick_gelu`, `preprocess_cfg`); options that would change the computation are refused.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        Self::from_json(value)
            .with_context(|| format!("{}: not a usable OpenCLIP config", path.display()))
    }

    pub fn from_json(value: Value) -> Result<Self> {
        let mut top = Keys::new(value, "")?;
        let embed_dim = top.usize_or("embed_dim", 0)?;
        let quick_gelu = top.bool_or("quick_gelu", false)?;
        top.ignore(&["cast_dtype", "init_logit_scale", "custom_text"]);
        top.require("init_logit_bias", Value::Null, "a SigLIP logit bias")?;
        top.require(
            "nonscalar_logit_scale",
            Value::Bool(false),
            "a non-scalar logit scale",
        )?;
        if top.take("multimodal_cfg").is_some() {
            bail!("multimodal_cfg: a CoCa model (with a text decoder) is not supported");
        }
        let vision = top.take("vision_cfg").context("no vision_cfg")?;
        let text = top.take("text_cfg").context("no text_cfg")?;
        let preprocess = top.take("preprocess_cfg");
        top.finish()?;
        if embed_dim == 0 {
            bail!("embed_dim must be a positive integer");
        }

        // The image tower: OpenCLIP's `VisionTransformer` at its defaults.
        let mut v = Keys::new(vision, "vision_cfg")?;
        if let Some(layers) = v.map.get("layers")
            && layers.is_array()
        {
            bail!(
                "vision_cfg.layers = {layers}: a ResNet image tower (RN50, RN101, …) — not \
                 supported: skyscribe's CLIP runs ViT image towers only"
            );
        }
        if let Some(name) = v.take("timm_model_name") {
            bail!("vision_cfg.timm_model_name = {name}: timm image towers are not supported");
        }
        let layers = v.usize_or("layers", 12)?;
        let width = v.usize_or("width", 768)?;
        let head_width = v.usize_or("head_width", 64)?;
        let vmlp = v.f64_or("mlp_ratio", 4.0)?;
        let patch_size = v.usize_or("patch_size", 16)?;
        let image_size = v.usize_or("image_size", 224)?;
        v.ignore(&[
            "patch_dropout",
            "output_tokens",
            // Layer norm is per token, so before or after taking the class token is the same.
            "final_ln_after_pool",
            "attn_pooler_queries",
            "attn_pooler_heads",
            "timm_model_pretrained",
            "timm_pool",
            "timm_proj",
            "timm_proj_bias",
            "timm_drop",
            "timm_drop_path",
        ]);
        v.require("ls_init_value", Value::Null, "layer scale")?;
        v.require(
            "attentional_pool",
            Value::Bool(false),
            "attentional pooling",
        )?;
        v.require("no_ln_pre", Value::Bool(false), "a tower without ln_pre")?;
        v.require(
            "pos_embed_type",
            json!("learnable"),
            "a fixed position embedding",
        )?;
        v.require(
            "pool_type",
            json!("tok"),
            "pooling other than the class token",
        )?;
        v.require("global_average_pool", Value::Bool(false), "average pooling")?;
        v.require("input_patchnorm", Value::Bool(false), "patch normalisation")?;
        v.require("act_kwargs", Value::Null, "activation options")?;
        v.require("norm_kwargs", Value::Null, "layer norm options")?;
        custom_blocks(&mut v)?;
        v.finish()?;
        if width == 0 || head_width == 0 || width % head_width != 0 {
            bail!("vision_cfg.width {width} is not a positive multiple of head_width {head_width}");
        }
        if patch_size == 0 || image_size % patch_size != 0 {
            bail!(
                "vision_cfg.image_size {image_size} is not a multiple of patch_size {patch_size}"
            );
        }

        // The text tower: OpenCLIP's `TextTransformer` at its defaults.
        let mut t = Keys::new(text, "text_cfg")?;
        if let Some(name) = t.take("hf_model_name") {
            bail!("text_cfg.hf_model_name = {name}: Hugging Face text towers are not supported");
        }
        let context_length = t.usize_or("context_length", 77)?;
        let vocab_size = t.usize_or("vocab_size", 49408)?;
        let twidth = t.usize_or("width", 512)?;
        let heads = t.usize_or("heads", 8)?;
        let tlayers = t.usize_or("layers", 12)?;
        let tmlp = t.f64_or("mlp_ratio", 4.0)?;
        t.ignore(&[
            "pad_id",
            "eos_id",
            "output_tokens",
            "final_ln_after_pool",
            "hf_model_pretrained",
            "hf_proj_type",
            "hf_pooler_type",
        ]);
        t.require("hf_tokenizer_name", Value::Null, "another tokenizer")?;
        t.require("tokenizer_mode", Value::Null, "another tokenizer mode")?;
        t.require("tokenizer_kwargs", Value::Null, "tokenizer options")?;
        t.require("ls_init_value", Value::Null, "layer scale")?;
        t.require(
            "embed_cls",
            Value::Bool(false),
            "a class token in the text tower",
        )?;
        t.require(
            "no_causal_mask",
            Value::Bool(false),
            "a text tower without causal mask",
        )?;
        t.require(
            "pool_type",
            json!("argmax"),
            "text pooling other than at the arg-max token",
        )?;
        t.require(
            "proj_bias",
            Value::Bool(false),
            "a text projection with bias",
        )?;
        t.require("proj_type", json!("linear"), "a non-linear text projection")?;
        t.require("act_kwargs", Value::Null, "activation options")?;
        t.require("norm_kwargs", Value::Null, "layer norm options")?;
        custom_blocks(&mut t)?;
        t.finish()?;
        if twidth == 0 || heads == 0 || twidth % heads != 0 {
            bail!("text_cfg.width {twidth} is not a positive multiple of heads {heads}");
        }
        if context_length == 0 || vocab_size == 0 {
            bail!("text_cfg.context_length and vocab_size must be positive");
        }

        Ok(Self {
            embed_dim,
            quick_gelu,
            image_size,
            patch_size,
            vision: TowerShape {
                width,
                layers,
                heads: width / head_width,
                mlp: (width as f64 * vmlp) as usize,
            },
            context_length,
            vocab_size,
            text: TowerShape {
                width: twidth,
                layers: tlayers,
                heads,
                mlp: (twidth as f64 * tmlp) as usize,
            },
            preprocess: preprocessing(preprocess, image_size)?,
        })
    }

    /// Every tensor of the model's OpenCLIP state dict and its shape, as `CLIP.state_dict()`
    /// lists them.
    pub fn state_dict_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let mut s = BTreeMap::new();
        let (v, t, e) = (&self.vision, &self.text, self.embed_dim);
        let grid = self.image_size / self.patch_size;
        s.insert("logit_scale".into(), vec![]);
        s.insert(
            "token_embedding.weight".into(),
            vec![self.vocab_size, t.width],
        );
        s.insert(
            "positional_embedding".into(),
            vec![self.context_length, t.width],
        );
        s.insert("ln_final.weight".into(), vec![t.width]);
        s.insert("ln_final.bias".into(), vec![t.width]);
        s.insert("text_projection".into(), vec![t.width, e]);
        blocks(&mut s, "transformer", t);
        s.insert("visual.class_embedding".into(), vec![v.width]);
        s.insert(
            "visual.positional_embedding".into(),
            vec![grid * grid + 1, v.width],
        );
        s.insert("visual.proj".into(), vec![v.width, e]);
        s.insert(
            "visual.conv1.weight".into(),
            vec![v.width, 3, self.patch_size, self.patch_size],
        );
        for ln in ["visual.ln_pre", "visual.ln_post"] {
            s.insert(format!("{ln}.weight"), vec![v.width]);
            s.insert(format!("{ln}.bias"), vec![v.width]);
        }
        blocks(&mut s, "visual.transformer", v);
        s
    }

    /// The same model as transformers' `CLIPConfig`.
    pub fn clip_config(&self) -> ClipConfig {
        let act = if self.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: self.vocab_size,
                hidden_size: self.text.width,
                intermediate_size: self.text.mlp,
                num_hidden_layers: self.text.layers,
                num_attention_heads: self.text.heads,
                max_position_embeddings: self.context_length,
                hidden_act: act,
                layer_norm_eps: 1e-5,
                // transformers' marker for pooling at the arg-max id, as OpenCLIP pools.
                eos_token_id: 2,
            },
            vision_config: ClipVisionConfig {
                hidden_size: self.vision.width,
                intermediate_size: self.vision.mlp,
                num_hidden_layers: self.vision.layers,
                num_attention_heads: self.vision.heads,
                num_channels: 3,
                image_size: self.image_size,
                patch_size: self.patch_size,
                hidden_act: act,
                layer_norm_eps: 1e-5,
            },
            projection_dim: self.embed_dim,
            logit_scale_init_value: 2.6592,
        }
    }

    /// `config.json` in the Hugging Face layout (transformers loads it as a `CLIPModel`).
    pub fn config_json(&self) -> Value {
        let c = self.clip_config();
        let mut text = serde_json::to_value(&c.text_config).expect("serialisable");
        text["bos_token_id"] = json!(49406);
        text["pad_token_id"] = json!(1);
        text["model_type"] = json!("clip_text_model");
        let mut vision = serde_json::to_value(&c.vision_config).expect("serialisable");
        vision["model_type"] = json!("clip_vision_model");
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": c.projection_dim,
            "logit_scale_init_value": c.logit_scale_init_value,
            "text_config": text,
            "vision_config": vision,
        })
    }

    /// `preprocessor_config.json`: OpenCLIP's torchvision pipeline in transformers' terms,
    /// plus skyscribe's `crop_offsets` and `convert_rgb` (see [`crate::imagery::CropOffsets`]
    /// and [`crate::imagery::ConvertRgb`]).
    pub fn preprocessor_json(&self) -> Value {
        let s = self.image_size;
        let p = &self.preprocess;
        let (size, crop) = if p.squash {
            (json!({"height": s, "width": s}), false)
        } else {
            (json!({"shortest_edge": s}), true)
        };
        json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true,
            "size": size,
            "resample": p.resample,
            "do_center_crop": crop,
            "crop_size": {"height": s, "width": s},
            "crop_offsets": "torchvision",
            "convert_rgb": "last",
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": p.mean,
            "image_std": p.std,
            "do_convert_rgb": true,
        })
    }
}

fn names() -> String {
    let n: Vec<&str> = ARCHS.iter().map(|(n, _)| *n).collect();
    format!("{}, each also as NAME-quickgelu", n.join(", "))
}

/// OpenCLIP's optional block variants, all refused but the default.
fn custom_blocks(k: &mut Keys) -> Result<()> {
    if let Some(b) = k.take("block_type")
        && b != json!("default")
    {
        bail!(
            "{} = {b}: custom attention blocks are not supported",
            k.name("block_type")
        );
    }
    for key in [
        "qk_norm",
        "scaled_cosine_attn",
        "scale_heads",
        "scale_attn_inner",
        "scale_attn",
        "scale_fc",
    ] {
        k.require(key, Value::Bool(false), "a custom attention block")?;
    }
    Ok(())
}

/// `preprocess_cfg` of an OpenCLIP config, OpenCLIP's defaults where absent.
fn preprocessing(cfg: Option<Value>, image_size: usize) -> Result<Preprocessing> {
    let mut p = Preprocessing {
        mean: OPENAI_MEAN,
        std: OPENAI_STD,
        resample: 3,
        squash: false,
    };
    let Some(cfg) = cfg else { return Ok(p) };
    let mut k = Keys::new(cfg, "preprocess_cfg")?;
    let three = |v: Value, what: &str| -> Result<[f64; 3]> {
        let xs: Vec<f64> = serde_json::from_value(v.clone())
            .with_context(|| format!("preprocess_cfg.{what} = {v}: expected numbers"))?;
        match xs.as_slice() {
            [a, b, c] => Ok([*a, *b, *c]),
            [a] => Ok([*a; 3]),
            _ => bail!("preprocess_cfg.{what} must have 1 or 3 values"),
        }
    };
    if let Some(v) = k.take("mean") {
        p.mean = three(v, "mean")?;
    }
    if let Some(v) = k.take("std") {
        p.std = three(v, "std")?;
        if p.std.contains(&0.0) {
            bail!("preprocess_cfg.std has a zero");
        }
    }
    if let Some(v) = k.take("interpolation") {
        p.resample = match v.as_str() {
            Some("bicubic") | Some("random") => 3,
            Some("bilinear") => 2,
            _ => bail!("preprocess_cfg.interpolation = {v}: expected bicubic or bilinear"),
        };
    }
    if let Some(v) = k.take("resize_mode") {
        p.squash = match v.as_str() {
            Some("shortest") => false,
            Some("squash") => true,
            _ => bail!(
                "preprocess_cfg.resize_mode = {v}: only shortest (resize + centre crop) and squash \
                 are supported"
            ),
        };
    }
    if let Some(v) = k.take("size")
        && size_value(&v).ok() != Some(image_size)
    {
        bail!("preprocess_cfg.size = {v} differs from vision_cfg.image_size {image_size}");
    }
    k.require("mode", json!("RGB"), "another colour mode")?;
    k.ignore(&["fill_color"]);
    k.finish()?;
    Ok(p)
}

/// The residual blocks of one tower under `prefix`.
fn blocks(s: &mut BTreeMap<String, Vec<usize>>, prefix: &str, t: &TowerShape) {
    let w = t.width;
    for i in 0..t.layers {
        let b = format!("{prefix}.resblocks.{i}");
        for ln in ["ln_1", "ln_2"] {
            s.insert(format!("{b}.{ln}.weight"), vec![w]);
            s.insert(format!("{b}.{ln}.bias"), vec![w]);
        }
        s.insert(format!("{b}.attn.in_proj_weight"), vec![3 * w, w]);
        s.insert(format!("{b}.attn.in_proj_bias"), vec![3 * w]);
        s.insert(format!("{b}.attn.out_proj.weight"), vec![w, w]);
        s.insert(format!("{b}.attn.out_proj.bias"), vec![w]);
        s.insert(format!("{b}.mlp.c_fc.weight"), vec![t.mlp, w]);
        s.insert(format!("{b}.mlp.c_fc.bias"), vec![t.mlp]);
        s.insert(format!("{b}.mlp.c_proj.weight"), vec![w, t.mlp]);
        s.insert(format!("{b}.mlp.c_proj.bias"), vec![w]);
    }
}

/// Buffers some checkpoints carry beside the weights (OpenAI's TorchScript models, older
/// open_clip versions): not learned, rebuilt from the config, so dropped.
const BUFFERS: &[&str] = &[
    "attn_mask",
    "input_resolution",
    "context_length",
    "vocab_size",
];

/// A checkpoint's tensors under OpenCLIP's names: `module.` (DistributedDataParallel) and
/// `text.` (`CustomTextCLIP`) prefixes removed, buffers dropped.
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    /// How the file held them, for messages: "safetensors", "state dict", "training checkpoint".
    pub form: &'static str,
}

impl Checkpoint {
    /// Reads `.safetensors`, or a `torch.save`d `.pt` / `.pth` / `.bin`: a state dict, or a
    /// dict with the state dict under `state_dict` (open_clip's training checkpoints).
    pub fn read(path: &Path) -> Result<Self> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (tensors, form) = if is_safetensors {
            let t = candle_core::safetensors::load(path, &Device::Cpu)
                .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
            (t, "safetensors file")
        } else {
            if !path.is_file() {
                bail!("{}: no such file", path.display());
            }
            // A training checkpoint first: reading the whole dict would also walk the optimiser
            // state. A plain state dict has no `state_dict` key, and that read fails.
            match candle_core::pickle::read_all_with_key(path, Some("state_dict")) {
                Ok(t) if !t.is_empty() => (t.into_iter().collect(), "training checkpoint"),
                _ => {
                    let t =
                        candle_core::pickle::read_all_with_key(path, None).with_context(|| {
                            format!(
                                "{}: not a PyTorch checkpoint skyscribe can read (a torch.save zip \
                             of a state dict, or of a dict with one under \"state_dict\"), nor \
                             .safetensors",
                                path.display()
                            )
                        })?;
                    (t.into_iter().collect(), "state dict")
                }
            }
        };
        if tensors.is_empty() {
            bail!("{}: holds no tensors", path.display());
        }
        Ok(Self {
            tensors: normalise_names(tensors),
            form,
        })
    }

    /// Checks every tensor against `config`: unknown, missing and mis-shaped ones are errors
    /// naming them (a few of each, and how many).
    pub fn check(&self, config: &OpenClipConfig) -> Result<()> {
        let expected = config.state_dict_shapes();
        let mut unknown: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .collect();
        unknown.sort();
        let missing: Vec<&String> = expected
            .keys()
            .filter(|k| !self.tensors.contains_key(*k))
            .collect();
        let mut problems = Vec::new();
        if unknown.iter().any(|k| {
            k.starts_with("visual.layer")
                || k.starts_with("visual.attnpool")
                || k.starts_with("visual.trunk")
        }) {
            problems.push(
                "the checkpoint has a ResNet or timm image tower (visual.layer*/attnpool/trunk), \
                 which skyscribe does not run"
                    .to_string(),
            );
        }
        if !unknown.is_empty() {
            problems.push(format!(
                "{} unknown tensor(s): {}",
                unknown.len(),
                list(&unknown)
            ));
        }
        if !missing.is_empty() {
            problems.push(format!(
                "{} missing tensor(s): {}",
                missing.len(),
                list(&missing)
            ));
        }
        let mut wrong: Vec<String> = Vec::new();
        for (k, shape) in &expected {
            if let Some(t) = self.tensors.get(k)
                && t.dims() != shape.as_slice()
            {
                wrong.push(format!("{k} is {:?}, expected {shape:?}", t.dims()));
            }
        }
        // Embeddings and projections first: they tell the sizes apart at a glance.
        wrong.sort_by_key(|w| (w.contains("resblocks"), w.clone()));
        if !wrong.is_empty() {
            problems.push(format!(
                "{} tensor(s) of the wrong shape: {}",
                wrong.len(),
                list(&wrong)
            ));
        }
        if !problems.is_empty() {
            bail!(
                "this {} does not match the architecture{}: {}",
                self.form,
                self.describe()
                    .map(|d| format!(" (the checkpoint holds {d})"))
                    .unwrap_or_default(),
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// The tensors under transformers' `CLIPModel` names, in their own dtype (f64 as f32).
    pub fn to_hf(&self, config: &OpenClipConfig) -> Result<HashMap<String, Tensor>> {
        let src = |k: &str| -> Result<Tensor> {
            let t = self
                .tensors
                .get(k)
                .with_context(|| format!("missing {k}"))?;
            Ok(if t.dtype() == DType::F64 {
                t.to_dtype(DType::F32)?
            } else {
                t.clone()
            })
        };
        let mut out = HashMap::new();
        let mut put = |k: String, t: Tensor| -> Result<()> {
            out.insert(k, t.contiguous()?);
            Ok(())
        };
        put("logit_scale".into(), src("logit_scale")?)?;
        put(
            "text_model.embeddings.token_embedding.weight".into(),
            src("token_embedding.weight")?,
        )?;
        put(
            "text_model.embeddings.position_embedding.weight".into(),
            src("positional_embedding")?,
        )?;
        for p in ["weight", "bias"] {
            put(
                format!("text_model.final_layer_norm.{p}"),
                src(&format!("ln_final.{p}"))?,
            )?;
        }
        put(
            "text_projection.weight".into(),
            src("text_projection")?.t()?,
        )?;
        let v = "vision_model.embeddings";
        put(
            format!("{v}.patch_embedding.weight"),
            src("visual.conv1.weight")?,
        )?;
        put(
            format!("{v}.class_embedding"),
            src("visual.class_embedding")?,
        )?;
        put(
            format!("{v}.position_embedding.weight"),
            src("visual.positional_embedding")?,
        )?;
        for p in ["weight", "bias"] {
            put(
                format!("vision_model.pre_layrnorm.{p}"),
                src(&format!("visual.ln_pre.{p}"))?,
            )?;
            put(
                format!("vision_model.post_layernorm.{p}"),
                src(&format!("visual.ln_post.{p}"))?,
            )?;
        }
        put("visual_projection.weight".into(), src("visual.proj")?.t()?)?;
        for (from, to, shape) in [
            ("transformer", "text_model", &config.text),
            ("visual.transformer", "vision_model", &config.vision),
        ] {
            let w = shape.width;
            for i in 0..shape.layers {
                let b = format!("{from}.resblocks.{i}");
                let l = format!("{to}.encoder.layers.{i}");
                for p in ["weight", "bias"] {
                    put(
                        format!("{l}.layer_norm1.{p}"),
                        src(&format!("{b}.ln_1.{p}"))?,
                    )?;
                    put(
                        format!("{l}.layer_norm2.{p}"),
                        src(&format!("{b}.ln_2.{p}"))?,
                    )?;
                    put(
                        format!("{l}.mlp.fc1.{p}"),
                        src(&format!("{b}.mlp.c_fc.{p}"))?,
                    )?;
                    put(
                        format!("{l}.mlp.fc2.{p}"),
                        src(&format!("{b}.mlp.c_proj.{p}"))?,
                    )?;
                    put(
                        format!("{l}.self_attn.out_proj.{p}"),
                        src(&format!("{b}.attn.out_proj.{p}"))?,
                    )?;
                    // nn.MultiheadAttention packs q, k, v along the output dimension.
                    let packed = src(&format!("{b}.attn.in_proj_{p}"))?;
                    for (j, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        put(
                            format!("{l}.self_attn.{name}.{p}"),
                            packed.narrow(0, j * w, w)?,
                        )?;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Checkpoint {
    /// The sizes a ViT checkpoint's tensors imply, to tell which architecture it is.
    fn describe(&self) -> Option<String> {
        let dims = |k: &str| self.tensors.get(k).map(|t| t.dims().to_vec());
        let layers = |prefix: &str| {
            self.tensors
                .keys()
                .filter_map(|k| {
                    k.strip_prefix(prefix)?
                        .split('.')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .max()
                .map_or(0, |i| i + 1)
        };
        let conv = dims("visual.conv1.weight")?;
        let pos = dims("visual.positional_embedding")?;
        let (width, patch) = (conv[0], *conv.get(2)?);
        let grid = ((pos[0].saturating_sub(1)) as f64).sqrt() as usize;
        let mut d = format!(
            "an image tower of width {width}, patch {patch}, {} layers, {} px",
            layers("visual.transformer.resblocks."),
            grid * patch
        );
        if let (Some(tok), Some(pos)) =
            (dims("token_embedding.weight"), dims("positional_embedding"))
        {
            d += &format!(
                "; a text tower of width {}, {} layers, context {}, vocabulary {}",
                tok[1],
                layers("transformer.resblocks."),
                pos[0],
                tok[0]
            );
        }
        Some(d)
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(8).map(|k| k.to_string()).collect();
    if items.len() > shown.len() {
        format!(
            "{}, … ({} more)",
            shown.join(", "),
            items.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

fn normalise_names(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let all_module = tensors.keys().all(|k| k.starts_with("module."));
    tensors
        .into_iter()
        .map(|(k, t)| {
            let k = if all_module {
                k["module.".len()..].to_string()
            } else {
                k
            };
            // CustomTextCLIP keeps its text tower under `text.`; CLIP at the top level.
            let k = match k.strip_prefix("text.") {
                Some(rest) => rest.to_string(),
                None => k,
            };
            (k, t)
        })
        .filter(|(k, _)| {
            let last = k.rsplit('.').next().unwrap_or(k);
            !BUFFERS.contains(&last)
        })
        .collect()
}

/// What `import` did, for the command's output.
#[derive(Debug, serde::Serialize)]
pub struct Imported {
    pub out: PathBuf,
    pub form: &'static str,
    pub tensors: usize,
    pub parameters: usize,
    pub dtype: String,
    pub hidden_act: Activation,
}

/// Imports `weights` (an OpenCLIP checkpoint of the `config` architecture) as a new Hugging Face
/// CLIP folder `out`, written atomically and loaded once before it is put in place.
pub fn import(weights: &Path, config: &OpenClipConfig, arch: &str, out: &Path) -> Result<Imported> {
    let dir = crate::atomic::NewDir::create(out)?;
    let ckpt = Checkpoint::read(weights)?;
    ckpt.check(config)
        .with_context(|| format!("{} ({arch})", weights.display()))?;
    let hf = ckpt.to_hf(config)?;
    let dtype = hf["logit_scale"].dtype();
    let form = ckpt.form;
    let parameters = ckpt.tensors.values().map(|t| t.elem_count()).sum();
    drop(ckpt);
    let tensors = hf.len();
    dir.write_safetensors("model.safetensors", &hf)?;
    drop(hf);
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("serialisable");
    dir.write("config.json", &pretty(&config.config_json()))?;
    dir.write(
        "preprocessor_config.json",
        &pretty(&config.preprocessor_json()),
    )?;
    dir.write("tokenizer.json", crate::builtin::CLIP_TOKENIZER_JSON)?;
    dir.write(
        "import.json",
        &pretty(&json!({
            "from": "openclip",
            "weights": weights.display().to_string(),
            "arch": arch,
        })),
    )?;
    // The folder must load as it will be used; a failure here is a bug in the mapping.
    ClipModel::load_dir(dir.path(), &Device::Cpu).context("the converted folder does not load")?;
    let out = dir.commit()?;
    Ok(Imported {
        out,
        form,
        tensors,
        parameters,
        dtype: format!("{dtype:?}").to_lowercase(),
        hidden_act: config.clip_config().text_config.hidden_act,
    })
}

/// A model from converted tensors held in memory (no folder written).
pub fn load_converted(
    tensors: HashMap<String, Tensor>,
    config: &OpenClipConfig,
) -> Result<ClipModel> {
    ClipModel::new(
        config.clip_config(),
        &Weights::from_tensors(tensors, &Device::Cpu),
    )
}
