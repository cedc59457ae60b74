//! `bench`: images per second of the CLIP image pipeline, or the time of a ClipCap training
//! step. Measurements only; the README says which machine gave which number.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use skyscribe::encoder::{ClipEncoder, collect_images};

use super::common::DeviceArg;
use super::output::Out;

#[derive(Args)]
pub struct BenchArgs {
    /// A folder of images to run through the pipeline (default: EuroSAT's Forest class
    /// under $SKYSCRIBE_DATA or ../shared/data).
    #[arg(long)]
    images: Option<PathBuf>,
    /// How many images to use.
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Images (or captions, with --captioner-step) per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// A real model instead of random ViT-B/32 weights.
    #[arg(long)]
    model: Option<String>,
    /// Time ClipCap training steps instead (gpt2 124M shapes, random weights, MLP mapper,
    /// --batch-size captions of --caption-tokens tokens).
    #[arg(long)]
    captioner_step: bool,
    /// Tokens per caption, with --captioner-step.
    #[arg(long, default_value_t = 20)]
    caption_tokens: usize,
    /// With --captioner-step: train GPT-2 too (default: frozen).
    #[arg(long)]
    train_gpt2: bool,
    /// Timed training steps (after one warm-up step), with --captioner-step.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Print the report as one JSON line.
    #[arg(long)]
    jsonl: bool,
}

pub fn run(a: BenchArgs) -> Result<usize> {
    let dev = a.device.device()?;
    let mut out = Out::new();
    if a.captioner_step {
        let r = skyscribe::train::captioner::step_time(
            &dev,
            a.batch_size,
            a.caption_tokens,
            a.steps,
            a.train_gpt2,
        )?;
        if a.jsonl {
            out.json(&r)?;
        } else {
            out.line(&format!(
                "{}: batch {}, {} caption tokens + prefix {}, {} threads, {}\n  median step {:.3} s over {} steps",
                r.what,
                r.batch_size,
                r.caption_tokens,
                r.prefix_length,
                r.threads,
                r.device,
                r.median_step_s,
                r.steps
            ))?;
        }
        return Ok(0);
    }
    let images = a
        .images
        .unwrap_or_else(|| skyscribe::data_root().join("eurosat/images/Forest"));
    let (mut paths, errors) = collect_images(&[images]);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    paths.truncate(a.limit);
    let clip = match &a.model {
        Some(m) => ClipEncoder::load(m, &dev)?,
        None => skyscribe::bench::random_vit_b32(&dev)?,
    };
    let r = skyscribe::bench::run(&clip, &paths, a.batch_size)?;
    if a.jsonl {
        out.json(&r)?;
    } else {
        out.line(&format!(
            "{}: {} images, batch {}, {} threads, {}\n  end to end (decode + preprocess + encode): {:.1} images/s\n  model only: {:.1} images/s",
            r.model,
            r.images,
            r.batch_size,
            r.threads,
            r.device,
            r.end_to_end_images_per_s,
            r.model_images_per_s
        ))?;
    }
    Ok(0)
}
