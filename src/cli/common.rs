//! What most commands share: the CLIP and image options ([`CommonArgs`]), the compute device,
//! and running a list of image files through the encoder with a progress bar, reporting each
//! unreadable file on stderr without stopping the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};

use skyscribe::encoder::{ClipEncoder, collect_images};
use skyscribe::imagery::{DEFAULT_MAX_PIXELS, DecodeOptions};
use skyscribe::models::Precision;

use super::output::report;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
    /// CUDA when built with it and a GPU is present, else the CPU.
    Auto,
}

impl DeviceArg {
    pub fn device(self) -> Result<Device> {
        Ok(match self {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::new_cuda(0)
                .context("cannot use CUDA (was skyscribe built with --features cuda?)")?,
            DeviceArg::Auto => Device::cuda_if_available(0).unwrap_or(Device::Cpu),
        })
    }
}

/// What CLIP computes in (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    /// On CPUs with AVX512-BF16, the linear layers' products in bf16 with f32 sums; on CUDA
    /// GPUs, the whole model in bf16 (refused elsewhere); embeddings drift slightly from f32
    /// (docs/src/performance.md gives the measured drift).
    Bf16,
    /// The whole model in half precision, on CUDA GPUs only (as `model.half()` in PyTorch).
    F16,
    /// Opt-in, on CPUs with AVX512-VNNI or AVX-VNNI: the linear layers in int8 (weights per
    /// channel, inputs per row, int32 sums); faster than bf16, and drifts more
    /// (docs/src/performance.md gives the measured drift). Refused elsewhere.
    Int8,
}

impl PrecisionArg {
    pub fn precision(self) -> Precision {
        match self {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

/// A count that must be at least 1 (`--top-k 0` would print empty lists, `--batch-size 0`
/// could not run): refused when parsing, with clap's usage error (exit 2).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--dtype` of an index's vectors: `f32` or `f16`.
pub fn vector_dtype(s: &str) -> Result<skyscribe::index::VectorDtype, String> {
    skyscribe::index::VectorDtype::parse(s).map_err(|e| e.to_string())
}

/// `--bands` as given: one band (grey) or three (red, green, blue), numbered from 1. (A type
/// of its own: clap would read a `Vec` as repeated values.)
#[derive(Debug, Clone)]
pub struct BandList(pub Vec<usize>);

fn bands(s: &str) -> Result<BandList, String> {
    let bands = s
        .split(',')
        .map(|b| match b.trim().parse::<usize>() {
            Ok(0) => Err("bands are numbered from 1".to_string()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{b:?} is not a band number")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if bands.len() != 1 && bands.len() != 3 {
        return Err(format!(
            "give one band (grey) or three (red,green,blue), not {}",
            bands.len()
        ));
    }
    Ok(BandList(bands))
}

/// Options of every command that runs CLIP over images.
#[derive(Args)]
pub struct CommonArgs {
    /// A CLIP model directory (Hugging Face layout) or hub id, e.g.
    /// openai/clip-vit-base-patch32 (default: the built-in skyscribe-mini).
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON Lines instead of a table.
    #[arg(long)]
    pub jsonl: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    /// 1-based bands to use as red,green,blue for multi-band images (e.g. 4,3,2 for
    /// Sentinel-2's true colour), or one band for grey (default: bands 1, 2, 3).
    #[arg(long, value_parser = bands)]
    pub bands: Option<BandList>,
    /// Refuse images with more pixels than this.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale where the model's input is at most that
    /// share of their size (Pillow's draft mode): ~1.7× the 1-megapixel JPEGs a core decodes
    /// and preprocesses, pixels a little different from transformers' full decode. Off by
    /// default.
    #[arg(long)]
    pub jpeg_draft: bool,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// What CLIP computes in: f32; bf16 on CPUs with AVX512-BF16 and CUDA GPUs; f16 on CUDA
    /// GPUs; int8 (opt-in) on CPUs with AVX512-VNNI or AVX-VNNI.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

impl CommonArgs {
    /// --model, or the built-in mini CLIP.
    pub fn model(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| skyscribe::builtin::MINI_CLIP.to_string())
    }

    /// Loads the CLIP `spec` on `--device` in `--precision`.
    pub fn load_clip(&self, spec: &str) -> Result<ClipEncoder> {
        let device = self.device.device()?;
        ClipEncoder::load_in(spec, &device, self.precision.precision())
    }

    pub fn decode(&self) -> DecodeOptions {
        DecodeOptions {
            bands: self.bands.as_ref().map(|b| b.0.clone()),
            max_pixels: self.max_pixels,
            jpeg_draft: self.jpeg_draft,
            ..DecodeOptions::default()
        }
    }
}

/// The label vocabulary and prompt templates of commands that label with the model's own
/// vocabulary by default (`describe`, `scan`).
#[derive(Args)]
pub struct VocabularyArgs {
    /// The vocabulary: a preset, a file or `a,b,c` (default: the model's own, from its
    /// skyscribe.json, else `describe`: RSICD's scenes and EuroSAT's land covers).
    #[arg(long)]
    pub labels: Option<String>,
    /// A template with `{}` or a template set; repeat to ensemble (default: the model's own,
    /// from its skyscribe.json, else "a satellite photo of {}.").
    #[arg(long = "template")]
    pub templates: Vec<String>,
}

/// The captioner of commands that caption by default (`describe`, `serve`).
#[derive(Args)]
pub struct CaptionerArgs {
    /// A captioner directory: also caption (default: the built-in skyscribe-mini-captioner
    /// when --model is not given).
    #[arg(long)]
    pub captioner: Option<String>,
    /// Labels only, no caption.
    #[arg(long, conflicts_with = "captioner")]
    pub no_caption: bool,
    /// Use --model with the captioner even though it was trained on another CLIP.
    #[arg(long)]
    pub force_clip: bool,
}

impl CaptionerArgs {
    /// The captioner to load, if any. The built-in captioner reads the built-in CLIP: it is the
    /// default only with it (no `--model`).
    pub fn spec(&self, model: Option<&str>) -> Option<String> {
        match (&self.captioner, model, self.no_caption) {
            (_, _, true) => None,
            (Some(c), _, _) => Some(c.clone()),
            (None, None, false) => Some(skyscribe::builtin::MINI_CAPTIONER.to_string()),
            (None, Some(_), false) => None,
        }
    }
}

/// CLIP for a run that may caption: `--model`, else the CLIP the captioner was trained with
/// (the built-in captioner reads the built-in CLIP), checked against the captioner.
pub fn clip_for(
    common: &CommonArgs,
    captioner: Option<&skyscribe::caption::Captioner>,
    force_clip: bool,
    dev: &Device,
) -> Result<ClipEncoder> {
    let spec = match captioner {
        Some(c) if common.model.is_none() => c.clip_model_spec(),
        _ => common.model(),
    };
    let clip = ClipEncoder::load_in(&spec, dev, common.precision.precision())?;
    if let Some(c) = captioner {
        c.check_clip(&clip, force_clip)?;
    }
    Ok(clip)
}

/// The label set given, else the model's describe vocabulary (its skyscribe.json, else the
/// `describe` preset).
pub fn labels_or_vocabulary(
    given: Option<skyscribe::labels::LabelSet>,
    clip: &ClipEncoder,
) -> Result<skyscribe::labels::LabelSet> {
    match given {
        Some(l) => Ok(l),
        None => clip.describe_labels(),
    }
}

/// Options of commands that keep embeddings in the on-disk cache.
#[derive(Args)]
pub struct CacheArgs {
    /// Embedding cache folder (default: embeddings/ under $SKYSCRIBE_CACHE, else
    /// ~/.cache/skyscribe/embeddings).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Encode every image again and do not touch the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache of `clip` under `decode` in the chosen folder, or `None` with `--no-cache`.
    pub fn open(
        &self,
        clip: &ClipEncoder,
        decode: &DecodeOptions,
    ) -> Result<Option<skyscribe::cache::EmbeddingCache>> {
        self.dir()
            .map(|dir| skyscribe::cache::EmbeddingCache::open(&dir, clip, decode))
            .transpose()
    }

    /// The cache folder to use, or `None` with `--no-cache`.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            Some(
                self.cache
                    .clone()
                    .unwrap_or_else(skyscribe::cache::default_dir),
            )
        }
    }
}

/// The images named by `inputs`; inputs that are missing or hold no images are reported on
/// stderr and counted, not fatal.
pub fn gather(inputs: &[PathBuf]) -> (Vec<PathBuf>, usize) {
    let (paths, errors) = collect_images(inputs);
    for e in &errors {
        report(&format!("{e:#}"));
    }
    (paths, errors.len())
}

/// Runs `paths` through the encoder, reporting unreadable files on stderr; returns how many
/// failed (plus `failed` already).
pub fn for_each_image(
    clip: &ClipEncoder,
    paths: &[PathBuf],
    common: &CommonArgs,
    mut failed: usize,
    mut each: impl FnMut(&Path, Vec<f32>) -> Result<()>,
) -> Result<usize> {
    let bar = skyscribe::progress::items(paths.len(), "images", "encoding", false);
    let decode = common.decode();
    clip.embed_files(paths, common.batch_size, &decode, |_, path, result| {
        bar.inc(1);
        match result {
            Ok(e) => each(path, e),
            Err(err) => {
                failed += 1;
                bar.suspend(|| report(&format!("{err:#}")));
                Ok(())
            }
        }
    })?;
    bar.finish_and_clear();
    note_bands(&decode);
    Ok(failed)
}

/// Says once which bands became red, green and blue, if a multi-band image made that choice.
pub fn note_bands(decode: &DecodeOptions) {
    if let Some(note) = decode.band_note.get() {
        report(note);
    }
}

/// Embeds `samples` through the `--cache` folder (a progress bar unless `quiet`), reporting each
/// unreadable image by name: what `eval zero-shot`, `eval classify` and the classifier
/// commands share.
pub fn embed_labelled(
    clip: &ClipEncoder,
    common: &CommonArgs,
    cache: &CacheArgs,
    samples: &[skyscribe::data::Sample],
    quiet: bool,
) -> Result<(Vec<Option<Vec<f32>>>, skyscribe::cache::EncodeStats)> {
    let decode = common.decode();
    let cache = cache.open(clip, &decode)?;
    let bar = skyscribe::progress::items(samples.len(), "images", "encoding", quiet);
    let (embeddings, stats) = skyscribe::cache::embed_samples(
        clip,
        samples,
        cache.as_ref(),
        common.batch_size,
        &decode,
        &bar,
    )?;
    bar.finish_and_clear();
    note_bands(&decode);
    for (_, why) in &stats.failed {
        super::output::report(why);
    }
    Ok((embeddings, stats))
}

/// How scene data sets (dota, xview) are cut into chips: `eval zero-shot`, `eval classify`,
/// `eval few-shot`, `train classifier`.
#[derive(Args, Clone)]
pub struct ChipArgs {
    /// Chip side for scene data sets (xview, dota).
    #[arg(long, default_value_t = 300)]
    chip_size: u32,
    /// Chip stride (default: the chip size, no overlap).
    #[arg(long)]
    chip_stride: Option<u32>,
    /// Share of a box's area that must lie in a chip for its class to count.
    #[arg(long, default_value_t = 0.5)]
    min_box_share: f64,
}

impl ChipArgs {
    pub fn options(&self) -> skyscribe::data::ChipOptions {
        skyscribe::data::ChipOptions {
            size: self.chip_size,
            stride: self.chip_stride.unwrap_or(self.chip_size),
            min_box_share: self.min_box_share,
        }
    }
}
