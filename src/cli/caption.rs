//! `caption` (ClipCap captions of images) and `import-clipcap` (a reference checkpoint into a
//! captioner folder); [`DecodingArgs`] is shared with `eval captions`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::json;

use skyscribe::caption::{Captioner, DecodeKind, DecodeOptions, Decoding, DecodingRequest};
use skyscribe::encoder::ClipEncoder;
use skyscribe::models::mapper::MappingType;

use super::common::{CommonArgs, for_each_image, gather, positive};
use super::output::{Out, report};

/// How captions are decoded.
#[derive(Args)]
pub struct DecodingArgs {
    /// greedy (the reference's generate2), beam (generate_beam) or sample (nucleus).
    #[arg(long, value_enum, default_value_t = DecodeKind::Greedy)]
    decode: DecodeKind,
    /// Beams kept by --decode beam [default: 5].
    #[arg(long, value_parser = positive)]
    beam_size: Option<usize>,
    /// Nucleus size for --decode sample [default: 0.9].
    #[arg(long)]
    top_p: Option<f32>,
    /// Logits are divided by this before beam search and sampling; 0 decodes greedily
    /// [default: 1].
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed for --decode sample (each image uses seed + its index) [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// At most this many tokens per caption.
    #[arg(long, default_value_t = 67)]
    max_tokens: usize,
}

impl DecodingArgs {
    /// The decoding asked for, checked (see [`DecodingRequest`]).
    pub fn resolve(&self) -> Result<(Decoding, DecodeOptions)> {
        DecodingRequest {
            decode: self.decode,
            beam_size: self.beam_size,
            top_p: self.top_p,
            temperature: self.temperature,
            seed: self.seed,
            max_tokens: self.max_tokens,
        }
        .resolve()
    }
}

#[derive(Args)]
pub struct CaptionArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// A captioner directory (config.json, model.safetensors, tokenizer.json) or the name of a
    /// built-in one (default: skyscribe-mini-captioner).
    #[arg(long, default_value = skyscribe::builtin::MINI_CAPTIONER)]
    captioner: String,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Use --model even though the captioner was trained on another CLIP.
    #[arg(long)]
    force_clip: bool,
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn caption(a: CaptionArgs) -> Result<usize> {
    let common = &a.common;
    let (how, opts) = a.decoding.resolve()?;
    let dev = common.device.device()?;
    let cap = Captioner::load_spec(&a.captioner, &dev)?;
    let (paths, failed) = gather(&a.inputs);
    // The captioner's own CLIP unless --model names another.
    let clip_spec = match &common.model {
        None => cap.clip_model_spec(),
        Some(m) => m.clone(),
    };
    let clip = ClipEncoder::load_in(&clip_spec, &dev, common.precision.precision())?;
    cap.check_clip(&clip, a.force_clip)?;
    let mut out = Out::new();
    let mut batch: Vec<(PathBuf, Vec<f32>)> = Vec::new();
    let mut index = 0u64;
    let mut flush = |batch: &mut Vec<(PathBuf, Vec<f32>)>, out: &mut Out| -> Result<()> {
        let embeds: Vec<Vec<f32>> = batch.iter().map(|b| b.1.clone()).collect();
        let captions = cap.captions(&embeds, how, &opts, index)?;
        index += embeds.len() as u64;
        for ((path, _), caption) in batch.iter().zip(captions) {
            if common.jsonl {
                out.line(
                    &json!({"input": path.display().to_string(), "caption": caption}).to_string(),
                )?;
            } else {
                out.line(&format!("{}\t{caption}", path.display()))?;
            }
        }
        batch.clear();
        Ok(())
    };
    let batch_size = common.batch_size;
    let failed = for_each_image(&clip, &paths, common, failed, |path, e| {
        batch.push((path.to_path_buf(), e));
        if batch.len() >= batch_size {
            flush(&mut batch, &mut out)
        } else {
            Ok(())
        }
    })?;
    flush(&mut batch, &mut out)?;
    Ok(failed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MappingArg {
    /// Linear → tanh → linear (ClipCap's MLP).
    Mlp,
    /// ClipCap's transformer mapper.
    Transformer,
}

impl From<MappingArg> for MappingType {
    fn from(m: MappingArg) -> Self {
        match m {
            MappingArg::Mlp => MappingType::Mlp,
            MappingArg::Transformer => MappingType::Transformer,
        }
    }
}

/// The shapes of a ClipCap mapping network (the reference's option names and defaults).
#[derive(Args)]
pub struct MapperShapeArgs {
    /// K: GPT-2 embeddings the mapper writes.
    #[arg(long, default_value_t = 10)]
    pub prefix_length: usize,
    /// Tokens the CLIP embedding is spread over (transformer mapper).
    #[arg(long, default_value_t = 10)]
    pub clip_length: usize,
    /// Transformer mapper layers.
    #[arg(long, default_value_t = 8)]
    pub num_layers: usize,
    /// L2-normalise CLIP embeddings before the mapper.
    #[arg(long)]
    pub normalize_prefix: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The `.pt` state dict (clip_project.* and gpt.* tensors).
    #[arg(long)]
    weights: PathBuf,
    /// The GPT-2 it was trained with: a directory (config.json, tokenizer.json) or hub id.
    #[arg(long)]
    gpt2: String,
    /// The CLIP model it was trained with: a directory or hub id.
    #[arg(long)]
    clip: String,
    /// The mapping network of the checkpoint.
    #[arg(long, value_enum)]
    mapping: MappingArg,
    #[command(flatten)]
    shape: MapperShapeArgs,
    /// The captioner folder to write (must not exist).
    #[arg(long)]
    out: PathBuf,
}

pub fn import(a: ImportArgs) -> Result<usize> {
    let gpt2_dir = skyscribe::hub::resolve(&a.gpt2, &["config.json", "tokenizer.json"], &[])?;
    let clip_dir = skyscribe::hub::resolve(&a.clip, &["config.json"], &[])?;
    let clip_config = skyscribe::models::ClipConfig::from_file(&clip_dir.file("config.json"))?;
    skyscribe::caption::import_clipcap(
        &skyscribe::caption::ImportOptions {
            weights: &a.weights,
            gpt2_dir: &gpt2_dir.dir,
            gpt2_spec: &a.gpt2,
            clip_spec: &a.clip,
            prefix_size: clip_config.projection_dim,
            mapping_type: a.mapping.into(),
            prefix_length: a.shape.prefix_length,
            clip_length: a.shape.clip_length,
            num_layers: a.shape.num_layers,
            normalize_prefix: a.shape.normalize_prefix,
        },
        &a.out,
    )?;
    report(&format!("wrote captioner {}", a.out.display()));
    Ok(0)
}
