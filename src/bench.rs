//! Throughput of the image pipeline with a real model's shapes and random weights, end to end
//! from image files (decode + preprocess + encode) and for the model alone. Speed is measured
//! here, never asserted in tests.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::encoder::ClipEncoder;
use crate::hub::ModelDir;
use crate::imagery::{DecodeOptions, Preprocessor};
use crate::models::{ClipConfig, ClipModel, Weights};
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub images: usize,
    pub batch_size: usize,
    pub threads: usize,
    /// Decode + preprocess + encode, images per second.
    pub end_to_end_images_per_s: f64,
    /// Encode only (pixels already in memory), images per second.
    pub model_images_per_s: f64,
    pub device: String,
}

/// A ViT-B/32 CLIP (openai/clip-vit-base-patch32's config) with random weights.
pub fn random_vit_b32(device: &Device, tokenizer: &std::path::Path) -> Result<ClipEncoder> {
    let config = ClipConfig::vit_base_patch32();
    let model = ClipModel::new(config, &Weights::random(device))?;
    let tokenizer = TextTokenizer::from_file(tokenizer, model.context_length())?;
    let source = ModelDir {
        spec: "random ViT-B/32".into(),
        dir: PathBuf::from("<random>"),
    };
    ClipEncoder::from_parts(model, tokenizer, Preprocessor::clip_default(224), source)
}

/// Runs the pipeline over `paths` once to warm up (first batch only), then timed.
pub fn run(clip: &ClipEncoder, paths: &[PathBuf], batch_size: usize) -> Result<BenchReport> {
    let decode = DecodeOptions::default();
    // Warm-up: one batch through the model (allocations, thread pool start).
    let warm: Vec<Vec<f32>> = paths
        .iter()
        .take(batch_size)
        .map(|p| clip.load_pixels(p, &decode))
        .collect::<Result<_>>()?;
    clip.embed_pixels(&warm)?;

    let start = Instant::now();
    let mut n = 0usize;
    clip.embed_files(paths, batch_size, &decode, |_, _, r| {
        r?;
        n += 1;
        Ok(())
    })?;
    let end_to_end = n as f64 / start.elapsed().as_secs_f64();

    let pixels: Vec<Vec<f32>> = paths
        .iter()
        .map(|p| clip.load_pixels(p, &decode))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    for chunk in pixels.chunks(batch_size.max(1)) {
        let out = clip.embed_pixels(chunk)?;
        std::hint::black_box(out);
    }
    // Synchronise with the device before reading the clock.
    let _ = Tensor::zeros(1, candle_core::DType::F32, clip.device())?.to_vec1::<f32>()?;
    let model_only = pixels.len() as f64 / start.elapsed().as_secs_f64();
    Ok(BenchReport {
        model: clip.source.spec.clone(),
        images: n,
        batch_size,
        threads: rayon::current_num_threads(),
        end_to_end_images_per_s: end_to_end,
        model_images_per_s: model_only,
        device: format!("{:?}", clip.device()),
    })
}

/// Time of ClipCap training steps with `gpt2`'s shapes (124M, random weights).
#[derive(Debug, Serialize)]
pub struct CaptionerStepReport {
    pub what: String,
    pub batch_size: usize,
    pub caption_tokens: usize,
    pub prefix_length: usize,
    pub train_gpt2: bool,
    pub threads: usize,
    /// Median seconds of one step (forward, backward, AdamW) over `steps` timed steps.
    pub median_step_s: f64,
    pub steps: usize,
    pub device: String,
}

/// Training steps of an MLP-mapper ClipCap on a random `gpt2` (frozen unless `train_gpt2`),
/// batches of random 512-wide CLIP embeddings and `caption_tokens`-token captions.
pub fn captioner_step(
    device: &Device,
    batch_size: usize,
    caption_tokens: usize,
    steps: usize,
    train_gpt2: bool,
) -> Result<CaptionerStepReport> {
    use crate::caption::CaptionerConfig;
    use crate::models::gpt2::Gpt2Config;
    use crate::models::mapper::{MapperConfig, MappingType};
    use crate::train::captioner::{CaptionerModel, build_model_from_weights};
    use rand::{Rng, SeedableRng};

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
    let mut optimizer = crate::train::AdamW::new(&model.vars, 0.01)?;
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
        let start = Instant::now();
        let loss = model.loss(&embeds, &tokens)?;
        let grads = loss.backward()?;
        optimizer.step(&grads, 1e-5, step)?;
        let _ = loss.to_scalar::<f32>()?;
        if step > 1 {
            // The first step warms up allocations and threads.
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
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
        median_step_s: times[times.len() / 2],
        steps,
        device: format!("{device:?}"),
    })
}
