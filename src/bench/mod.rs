//! Throughput of the image pipeline with a real model's shapes and random weights, end to end
//! from image files (decode + preprocess + encode) and for the model alone. Speed is measured
//! here, never asserted in tests. Also the text side ([`texts`]: prompts of a label set) and the
//! matrix products of the image layers alone ([`gemm_shapes`]).
//! (Training steps are timed by `train::captioner::step_time` and `train::clip::step_time`;
//! search over synthetic vectors by [`search`]; a running server's answers under load by
//! [`http`].)

pub mod http;
pub mod search;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::encoder::ClipEncoder;
use crate::hub::ModelDir;
use crate::imagery::{DecodeOptions, Preprocessor};
use crate::models::int8::{Int8Kernel, PackedInt8};
use crate::models::reduced_precision::{self, Finish, PackedBf16, PackedF32};
use crate::models::{ClipConfig, ClipModel, Precision, Weights};
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
    /// What the linear layers computed in (`f32`, `bf16`).
    pub precision: String,
}

/// A ViT-B/32 CLIP (openai/clip-vit-base-patch32's config) with random weights.
pub fn random_vit_b32(device: &Device, precision: Precision) -> Result<ClipEncoder> {
    let config = ClipConfig::vit_base_patch32();
    let model = ClipModel::new(config, &Weights::random(device).with_precision(precision)?)?;
    let tokenizer = TextTokenizer::new(crate::builtin::clip_tokenizer()?, model.context_length());
    let source = ModelDir {
        spec: "random ViT-B/32".into(),
        dir: PathBuf::from("<random>"),
    };
    ClipEncoder::from_parts(model, tokenizer, Preprocessor::clip_default(224), source)
}

/// Runs the pipeline over `paths` once to warm up (first batch only), then timed.
pub fn run(
    clip: &ClipEncoder,
    paths: &[PathBuf],
    batch_size: usize,
    decode: &DecodeOptions,
) -> Result<BenchReport> {
    if paths.is_empty() || batch_size == 0 {
        bail!("a benchmark needs at least one image and a positive batch size");
    }
    // Warm-up: one batch through the model (allocations, thread pool start).
    let warm: Vec<Vec<f32>> = paths
        .iter()
        .take(batch_size)
        .map(|p| clip.load_pixels(p, decode))
        .collect::<Result<_>>()?;
    clip.embed_pixels(&warm)?;

    let start = Instant::now();
    let mut n = 0usize;
    clip.embed_files(paths, batch_size, decode, |_, _, r| {
        r?;
        n += 1;
        Ok(())
    })?;
    let end_to_end = n as f64 / start.elapsed().as_secs_f64();

    let pixels: Vec<Vec<f32>> = paths
        .iter()
        .map(|p| clip.load_pixels(p, decode))
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
        device: crate::models::device_label(clip.device()),
        precision: clip.model.precision().name().into(),
    })
}

/// Decoding and preprocessing alone, on every thread of the pool: the rate at which this machine
/// can feed a model on any device. On a CPU the model is the slower part; a GPU encodes ViT-B/32
/// faster than a few cores decode, so there this rate is the pipeline's ceiling.
#[derive(Debug, Serialize)]
pub struct PreprocessReport {
    pub images: usize,
    /// Mean size of the decoded images, in megapixels (smaller than the files' with
    /// --jpeg-draft).
    pub mean_megapixels: f64,
    /// `[height, width]` of the model input the preprocessor makes of the first image.
    pub output_size: [u32; 2],
    pub threads: usize,
    /// Decode only (file to 8-bit RGB), images per second.
    pub decode_images_per_s: f64,
    /// Decode + preprocess (resize, crop, normalise into the model's floats), images per second.
    pub images_per_s: f64,
    /// `images_per_s` over `threads`.
    pub images_per_s_per_thread: f64,
    /// Whether JPEGs were decoded in draft mode (--jpeg-draft).
    pub jpeg_draft: bool,
    pub device: String,
}

/// Decodes every file once to warm the page cache (and measure the sources), then times a pass
/// of decoding alone and a pass of decoding + preprocessing, both spread over rayon's pool as
/// the pipeline's producer spreads a batch.
pub fn preprocess(
    preprocessor: &Preprocessor,
    paths: &[PathBuf],
    decode: &DecodeOptions,
) -> Result<PreprocessReport> {
    use rayon::prelude::*;
    if paths.is_empty() {
        bail!("a benchmark needs at least one image");
    }
    // As the pipeline loads (`ClipEncoder::load_pixels`): draft-decoded JPEGs with --jpeg-draft.
    let load = |p: &PathBuf| match preprocessor.draft_size() {
        Some(size) => crate::imagery::load_rgb_at_least(p, decode, size),
        None => crate::imagery::load_rgb(p, decode),
    };
    let sizes: Vec<(u32, u32)> = paths
        .par_iter()
        .map(|p| load(p).map(|i| (i.height, i.width)))
        .collect::<Result<_>>()?;
    let pixels: u64 = sizes.iter().map(|&(h, w)| h as u64 * w as u64).sum();
    let mean_megapixels = pixels as f64 / sizes.len() as f64 / 1e6;
    let (h, w) = sizes[0];
    let (out_h, out_w) = preprocessor.output_size(h, w);

    let start = Instant::now();
    paths.par_iter().try_for_each(|p| -> Result<()> {
        std::hint::black_box(load(p)?);
        Ok(())
    })?;
    let decode_images_per_s = paths.len() as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    paths.par_iter().try_for_each(|p| -> Result<()> {
        std::hint::black_box(preprocessor.preprocess(&load(p)?)?);
        Ok(())
    })?;
    let images_per_s = paths.len() as f64 / start.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    Ok(PreprocessReport {
        images: paths.len(),
        mean_megapixels,
        output_size: [out_h, out_w],
        threads,
        decode_images_per_s,
        images_per_s,
        images_per_s_per_thread: images_per_s / threads as f64,
        jpeg_draft: decode.jpeg_draft,
        device: crate::models::device_label(&Device::Cpu),
    })
}

/// Throughput of the text side: prompts (a label set × templates) tokenized and encoded, as
/// zero-shot classification does once per label set.
#[derive(Debug, Serialize)]
pub struct TextBenchReport {
    pub model: String,
    pub prompts: usize,
    pub batch_size: usize,
    /// Mean tokens per prompt (with the start and end tokens; batches pad to their longest).
    pub mean_tokens: f64,
    /// Mean tokens a prompt costs once padded: batched in the given order, and by length.
    pub padded_tokens_in_order: f64,
    pub padded_tokens_by_length: f64,
    pub threads: usize,
    /// Tokenize + encode as the library does it ([`ClipEncoder::embed_texts`]: batches formed by
    /// token length), prompts per second.
    pub end_to_end_prompts_per_s: f64,
    /// Encode only, ids made beforehand and batched in the given order (as the reference
    /// script batches them), prompts per second.
    pub model_prompts_per_s: f64,
    pub device: String,
    /// What the linear layers computed in (`f32`, `bf16`).
    pub precision: String,
}

/// Embeds `prompts` once to warm up (first batch only), then timed: tokenizing and encoding,
/// then encoding ids made beforehand.
pub fn texts(clip: &ClipEncoder, prompts: &[String], batch_size: usize) -> Result<TextBenchReport> {
    if prompts.is_empty() || batch_size == 0 {
        bail!("a text benchmark needs at least one prompt and a positive batch size");
    }
    clip.embed_texts(&prompts[..batch_size.min(prompts.len())], batch_size)?;
    let start = Instant::now();
    std::hint::black_box(clip.embed_texts(prompts, batch_size)?);
    let end_to_end = prompts.len() as f64 / start.elapsed().as_secs_f64();

    let ids: Vec<Vec<Vec<u32>>> = prompts
        .chunks(batch_size)
        .map(|c| clip.tokenizer.encode_batch_padded(c))
        .collect::<Result<_>>()?;
    let mut lengths: Vec<usize> = prompts
        .iter()
        .map(|p| clip.tokenizer.encode(p).map(|t| t.len()))
        .collect::<Result<_>>()?;
    let tokens: usize = lengths.iter().sum();
    let padded_tokens_in_order = mean_padded_length(&lengths, batch_size);
    lengths.sort_unstable();
    let padded_tokens_by_length = mean_padded_length(&lengths, batch_size);
    let start = Instant::now();
    for batch in &ids {
        std::hint::black_box(clip.model.text_features(batch)?.to_vec2::<f32>()?);
    }
    let model_only = prompts.len() as f64 / start.elapsed().as_secs_f64();
    Ok(TextBenchReport {
        model: clip.source.spec.clone(),
        prompts: prompts.len(),
        batch_size,
        mean_tokens: tokens as f64 / prompts.len() as f64,
        padded_tokens_in_order,
        padded_tokens_by_length,
        threads: rayon::current_num_threads(),
        end_to_end_prompts_per_s: end_to_end,
        model_prompts_per_s: model_only,
        device: crate::models::device_label(clip.device()),
        precision: clip.model.precision().name().into(),
    })
}

/// Tokens a sequence costs on average once batches of `batch_size` (in the given order) are
/// padded to their longest.
fn mean_padded_length(lengths: &[usize], batch_size: usize) -> f64 {
    let total: usize = lengths
        .chunks(batch_size.max(1))
        .map(|c| c.len() * c.iter().max().unwrap_or(&0))
        .sum();
    total as f64 / lengths.len().max(1) as f64
}

/// Speed of one matrix-product shape.
#[derive(Debug, Serialize)]
pub struct GemmReport {
    /// `(rows, inner, columns)`: `(rows × inner) · (inner × columns)`.
    pub shape: [usize; 3],
    pub gflop_per_s: f64,
    pub threads: usize,
    /// `f32`, `bf16` (inputs and weights rounded, f32 sums), `f16` (on a GPU) or `int8`
    /// (weights and inputs quantised, int32 sums; GFLOP/s then counts integer operations).
    pub precision: String,
    /// In int8, which kernel ([`Int8Kernel::name`]): every one this CPU runs is timed, the one
    /// the model uses marked by `best`. Absent in the other precisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<bool>,
    pub device: String,
}

/// The products of ViT-B/32's layers at batch 32 (1,600 token rows: qkv, MLP up, MLP down,
/// attention output), through the same bias-fused kernel the model uses, in GFLOP/s
/// (2 × rows × inner × columns per product): the ceiling every other number is measured against.
/// In f32 on a CPU with AVX-512 and in bf16 on the CPU, the packed products of
/// [`crate::models::reduced_precision`] (the inputs' copy or rounding included; elsewhere in
/// f32 the `gemm` crate's); in int8, that of [`crate::models::int8`] (input quantisation included)
/// with each kernel the CPU runs; on a GPU, candle's product and bias add in the precision's
/// type, timed to the device's completion.
pub fn gemm_shapes(
    repeats: usize,
    precision: Precision,
    device: &Device,
) -> Result<Vec<GemmReport>> {
    precision.check(device)?;
    let dtype = precision.compute_dtype(device);
    let mut out = Vec::new();
    for [m, k, n] in [
        [1600, 768, 2304],
        [1600, 768, 3072],
        [1600, 3072, 768],
        [1600, 768, 768],
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), device)?.to_dtype(dtype)?;
        let w_t = Tensor::randn(0f32, 1.0, (k, n), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros(n, dtype, device)?;
        let cpu_weight =
            || -> Result<Vec<f32>> { Ok(w_t.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?) };
        let zeros = vec![0f32; n];
        let time = |product: &dyn Fn() -> Result<()>| -> Result<f64> {
            for _ in 0..2 {
                product()?;
            }
            device.synchronize()?;
            let start = Instant::now();
            for _ in 0..repeats.max(1) {
                product()?;
            }
            device.synchronize()?;
            let seconds = start.elapsed().as_secs_f64() / repeats.max(1) as f64;
            Ok(2.0 * (m * k * n) as f64 / seconds / 1e9)
        };
        let report = |gflop_per_s, kernel: Option<Int8Kernel>| GemmReport {
            shape: [m, k, n],
            gflop_per_s,
            threads: rayon::current_num_threads(),
            precision: precision.name().into(),
            kernel: kernel.map(|k| k.name().into()),
            best: kernel.map(|k| Some(k) == Int8Kernel::best()),
            device: crate::models::device_label(device),
        };
        match precision {
            Precision::Bf16 if device.is_cpu() => {
                let p = Arc::new(PackedBf16::pack(&cpu_weight()?, Some(&zeros), n, k)?);
                let rate = time(&|| {
                    std::hint::black_box(reduced_precision::packed_linear(&x, &p, None)?);
                    Ok(())
                })?;
                out.push(report(rate, None));
            }
            Precision::F32 if device.is_cpu() && reduced_precision::f32_packed_available() => {
                let p = Arc::new(PackedF32::pack(&cpu_weight()?, Some(&zeros), n, k)?);
                let rate = time(&|| {
                    std::hint::black_box(reduced_precision::packed_linear(&x, &p, None)?);
                    Ok(())
                })?;
                out.push(report(rate, None));
            }
            Precision::Int8 => {
                // Each kernel on the plain input values, as the model's op hands them over.
                let p = PackedInt8::pack(&cpu_weight()?, Some(&zeros), n, k)?;
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                for kernel in Int8Kernel::here() {
                    let rate = time(&|| {
                        std::hint::black_box(p.linear_with(kernel, &xs, m, Finish::Nothing)?);
                        Ok(())
                    })?;
                    out.push(report(rate, Some(kernel)));
                }
            }
            _ => {
                let rate = time(&|| {
                    std::hint::black_box(if device.is_cpu() {
                        crate::models::cpu_kernels::linear_bias(&x, &w_t, &b)?
                    } else {
                        x.matmul(&w_t)?.broadcast_add(&b)?
                    });
                    Ok(())
                })?;
                out.push(report(rate, None));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_counted_per_batch() {
        // In order, each batch of two pads its 3-token prompt to 10; sorted, the short ones
        // share a batch.
        assert_eq!(mean_padded_length(&[3, 10, 3, 10], 2), 10.0);
        assert_eq!(mean_padded_length(&[3, 3, 10, 10], 2), 6.5);
        assert_eq!(mean_padded_length(&[4, 2, 7], 5), 7.0);
    }
}
