//! The `skyscribe` command line: argument parsing and output formatting over the library.

use std::io::Write;

/// Candle allocates a fresh buffer for every op; mimalloc reuses freed ones instead of
/// returning them to the kernel, which saves the page faults of each new buffer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use skyscribe::encoder::{ClipEncoder, collect_images};
use skyscribe::imagery::{DEFAULT_MAX_PIXELS, DecodeOptions};
use skyscribe::labels::{LabelSet, Templates};
use skyscribe::zeroshot::ZeroShotClassifier;

#[derive(Parser)]
#[command(
    name = "skyscribe",
    version,
    about = "What is in a satellite or aerial image, with CLIP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Labels from a sensible default vocabulary of land cover and scenes.
    Describe {
        #[command(flatten)]
        common: Common,
        /// How many labels to show per image.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// A captioner directory: also write a caption under the labels (default: the built-in
        /// skyscribe-mini-captioner when --model is not given).
        #[arg(long)]
        captioner: Option<String>,
        /// Labels only, no caption.
        #[arg(long, conflicts_with = "captioner")]
        no_caption: bool,
        /// Image files or folders (walked recursively).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Zero-shot labels from a label set.
    Labels {
        #[command(flatten)]
        common: Common,
        /// A preset (eurosat, eurosat-folders, eurosat-reduced, xview, rsicd, describe), a file
        /// (one label a line, or `label: wording | synonym`), or `a,b,c`.
        #[arg(long)]
        labels: String,
        /// A template with `{}` ("a satellite photo of {}.") or a template set (satellite,
        /// eurosat, aerial, plain, remote-sensing); repeat to ensemble.
        #[arg(long = "template")]
        templates: Vec<String>,
        /// Keep the k best labels (default: all in JSON, 5 in the table).
        #[arg(long)]
        top_k: Option<usize>,
        /// Image files or folders (walked recursively).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Projected CLIP embeddings (before L2 normalisation) of texts and images.
    Embed {
        #[command(flatten)]
        common: Common,
        /// A text to embed; repeatable.
        #[arg(long = "text")]
        texts: Vec<String>,
        /// Image files or folders (walked recursively).
        inputs: Vec<PathBuf>,
    },
    /// Captions from a ClipCap captioner (greedy decoding, as the reference's generate2).
    Caption {
        #[command(flatten)]
        common: Common,
        /// A captioner directory (config.json, model.safetensors, tokenizer.json), or the built-in
        /// skyscribe-mini-captioner.
        #[arg(long)]
        captioner: String,
        #[command(flatten)]
        decoding: CaptionArgs,
        /// Image files or folders (walked recursively).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Convert a checkpoint saved by the reference ClipCap code into a captioner directory.
    ImportClipcap {
        /// The `.pt` state dict (clip_project.* and gpt.* tensors).
        #[arg(long)]
        weights: PathBuf,
        /// The GPT-2 it was trained with: a directory (config.json, tokenizer.json) or hub id.
        #[arg(long)]
        gpt2: String,
        /// The CLIP model it was trained with: a directory or hub id.
        #[arg(long)]
        clip: String,
        /// mlp or transformer.
        #[arg(long)]
        mapping: String,
        #[arg(long, default_value_t = 10)]
        prefix_length: usize,
        #[arg(long, default_value_t = 10)]
        clip_length: usize,
        #[arg(long, default_value_t = 8)]
        num_layers: usize,
        #[arg(long)]
        normalize_prefix: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Copy a model or captioner folder without its training checkpoint, weights in f16 or f32
    /// (f16 halves the size; models compute in f32 either way).
    Export {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, value_parser = ["f16", "f32"], default_value = "f16")]
        dtype: String,
    },
    /// Measure CLIP on labelled data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Train a captioner or CLIP.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Images per second of the image pipeline (ViT-B/32 shapes, random weights by default).
    Bench {
        /// A folder of images to run through the pipeline (default: EuroSAT's Forest class
        /// under $SKYSCRIBE_DATA or ../shared/data).
        #[arg(long)]
        images: Option<PathBuf>,
        /// How many images to use.
        #[arg(long, default_value_t = 256)]
        limit: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// A real model instead of random ViT-B/32 weights.
        #[arg(long)]
        model: Option<String>,
        /// Time ClipCap training steps instead (gpt2 124M shapes, random weights, MLP mapper,
        /// --batch-size captions of --caption-tokens tokens).
        #[arg(long)]
        captioner_step: bool,
        #[arg(long, default_value_t = 20)]
        caption_tokens: usize,
        /// With --captioner-step: train GPT-2 too (default: frozen).
        #[arg(long)]
        train_gpt2: bool,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long)]
        jsonl: bool,
    },
}

/// Options every training run shares.
#[derive(clap::Args)]
struct TrainCommon {
    /// Captioned images: rsicd:DIR (captions.jsonl + images), coco:FILE.json, or
    /// parquet:FILE.parquet (the Hugging Face arampacha/rsicd layout).
    #[arg(long)]
    data: String,
    /// Output folder: the trained model, plus checkpoint/ for --resume.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Peak learning rate after warm-up (default: captioner 2e-5, as the reference; CLIP 5e-4
    /// from scratch, 1e-5 fine-tuning).
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps (default: captioner 5000, as the reference; CLIP 200 from scratch, 100
    /// fine-tuning).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay on weight matrices (default: captioner 0.01, CLIP 0.1).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Share of images held out for validation.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    /// Checkpoint every N steps (and at every epoch's end).
    #[arg(long, default_value_t = 500)]
    save_every: usize,
    /// Continue the run in --out exactly where it stopped.
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint after this step, as if interrupted.
    #[arg(long)]
    stop_after: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Size of the BPE vocabulary trained on the captions when a model is trained from scratch
    /// without --tokenizer.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// tokenizer.json for a model trained from scratch.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print the per-epoch history as JSON Lines.
    #[arg(long)]
    jsonl: bool,
}

#[derive(Subcommand)]
enum TrainCommand {
    /// ClipCap: a mapping network (and optionally GPT-2) on CLIP image embeddings.
    Captioner {
        #[command(flatten)]
        common: TrainCommon,
        /// The CLIP model whose image embeddings are the prefix (directory or hub id).
        #[arg(long)]
        clip: String,
        /// A pretrained GPT-2 (directory or hub id).
        #[arg(long, conflicts_with = "gpt2_config")]
        gpt2: Option<String>,
        /// Train GPT-2 from scratch with these shapes: `mini` or a GPT-2 config.json.
        #[arg(long)]
        gpt2_config: Option<String>,
        /// Train the pretrained GPT-2 together with the mapper (default: frozen).
        #[arg(long)]
        train_gpt2: bool,
        #[arg(long, value_parser = ["mlp", "transformer"], default_value = "mlp")]
        mapping: String,
        /// K: GPT-2 embeddings the mapper writes.
        #[arg(long, default_value_t = 10)]
        prefix_length: usize,
        /// Tokens the CLIP embedding is spread over (transformer mapper).
        #[arg(long, default_value_t = 10)]
        clip_length: usize,
        /// Transformer mapper layers.
        #[arg(long, default_value_t = 8)]
        num_layers: usize,
        /// L2-normalise CLIP embeddings before the mapper.
        #[arg(long)]
        normalize_prefix: bool,
        #[arg(long, default_value_t = 40)]
        batch_size: usize,
        /// Embedding cache folder (default $SKYSCRIBE_CACHE or ~/.cache/skyscribe).
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        no_cache: bool,
    },
    /// CLIP, contrastively: fine-tune (--init) or from scratch (--config).
    Clip {
        #[command(flatten)]
        common: TrainCommon,
        /// A pretrained CLIP to fine-tune (directory or hub id).
        #[arg(long, conflicts_with = "config")]
        init: Option<String>,
        /// Train from scratch with these shapes: `mini` or a CLIP config.json.
        #[arg(long)]
        config: Option<String>,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Train on the images as they are (no crops, flips, rotations, colour jitter).
        #[arg(long)]
        no_augment: bool,
    },
}

fn print_training(
    summary: &skyscribe::train::captioner::TrainSummary,
    jsonl: bool,
    out: &std::path::Path,
) -> Result<()> {
    if jsonl {
        for r in &summary.history {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        for r in &summary.history {
            let extra: Vec<String> = r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            println!(
                "epoch {:>3}  step {:>6}  train loss {:.4}  validation loss {}  {:.0} s  {}",
                r.epoch,
                r.step,
                r.train_loss,
                r.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
                r.seconds,
                extra.join("  ")
            );
        }
    }
    eprintln!(
        "skyscribe: {} after {} steps in {:.0} s; model in {}",
        if summary.finished {
            "finished"
        } else {
            "stopped"
        },
        summary.steps,
        summary.seconds,
        out.display()
    );
    Ok(())
}

fn train_command(cmd: TrainCommand) -> Result<usize> {
    use skyscribe::train::{captioner, clip};
    match cmd {
        TrainCommand::Captioner {
            common: c,
            clip,
            gpt2,
            gpt2_config,
            train_gpt2,
            mapping,
            prefix_length,
            clip_length,
            num_layers,
            normalize_prefix,
            batch_size,
            cache,
            no_cache,
        } => {
            let dev = device(&c.device)?;
            let opts = captioner::CaptionerTrainOptions {
                data: c.data,
                clip,
                gpt2,
                gpt2_config,
                tokenizer: c.tokenizer,
                vocab_size: c.vocab_size,
                mapping: if mapping == "mlp" {
                    skyscribe::models::mapper::MappingType::Mlp
                } else {
                    skyscribe::models::mapper::MappingType::Transformer
                },
                prefix_length,
                clip_length,
                num_layers,
                normalize_prefix,
                train_gpt2,
                epochs: c.epochs,
                batch_size,
                lr: c.lr.unwrap_or(2e-5),
                warmup: c.warmup.unwrap_or(5000),
                weight_decay: c.weight_decay.unwrap_or(0.01),
                grad_clip: c.grad_clip,
                val_fraction: c.val_fraction,
                seed: c.seed,
                save_every: c.save_every,
                resume: c.resume,
                stop_after: c.stop_after,
                cache: if no_cache {
                    None
                } else {
                    Some(cache.unwrap_or_else(default_cache_dir))
                },
                out: c.out.clone(),
                quiet: false,
            };
            let summary = captioner::train_captioner(&opts, &dev)?;
            print_training(&summary, c.jsonl, &c.out)?;
        }
        TrainCommand::Clip {
            common: c,
            init,
            config,
            batch_size,
            no_augment,
        } => {
            let dev = device(&c.device)?;
            let scratch = init.is_none();
            let opts = clip::ClipTrainOptions {
                data: c.data,
                init,
                config,
                tokenizer: c.tokenizer,
                vocab_size: c.vocab_size,
                epochs: c.epochs,
                batch_size,
                lr: c.lr.unwrap_or(if scratch { 5e-4 } else { 1e-5 }),
                warmup: c.warmup.unwrap_or(if scratch { 200 } else { 100 }),
                weight_decay: c.weight_decay.unwrap_or(0.1),
                grad_clip: c.grad_clip,
                val_fraction: c.val_fraction,
                augment: !no_augment,
                seed: c.seed,
                save_every: c.save_every,
                resume: c.resume,
                stop_after: c.stop_after,
                out: c.out.clone(),
                quiet: false,
            };
            let summary = clip::train_clip(&opts, &dev)?;
            print_training(&summary, c.jsonl, &c.out)?;
        }
    }
    Ok(0)
}

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum EvalCommand {
    /// BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of captions against references: from a predictions
    /// file, from a captioner run on a dataset, or from the nearest-neighbour baseline.
    Captions {
        /// `{"input": "<path>", "caption": "..."}` lines, as `caption --jsonl` writes them.
        #[arg(long, conflicts_with_all = ["captioner", "nearest_neighbour"])]
        predictions: Option<PathBuf>,
        /// RSICD `captions.jsonl` or COCO caption JSON; matched to predictions by file name
        /// (default: the captions of --data).
        #[arg(long)]
        references: Option<PathBuf>,
        /// Caption the images of --data with this captioner directory (or
        /// skyscribe-mini-captioner).
        #[arg(long, conflicts_with = "nearest_neighbour")]
        captioner: Option<String>,
        /// Baseline: caption each image of --data with the first caption of the most similar
        /// image (cosine of CLIP image embeddings) of this captioned set, e.g. rsicd:TRAIN.
        #[arg(long)]
        nearest_neighbour: Option<String>,
        /// The images to caption and their references: rsicd:DIR, coco:FILE.json or
        /// parquet:FILE.parquet.
        #[arg(long)]
        data: Option<String>,
        /// CLIP model (default: the captioner's own; required for --nearest-neighbour).
        #[arg(long)]
        clip: Option<String>,
        #[command(flatten)]
        decoding: CaptionArgs,
        /// Also write the generated captions here (JSON Lines).
        #[arg(long)]
        save_predictions: Option<PathBuf>,
        /// Embedding cache folder (default $SKYSCRIBE_CACHE or ~/.cache/skyscribe).
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        no_cache: bool,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Score the captions as they are, without lower-casing or dropping punctuation.
        #[arg(long)]
        pretokenized: bool,
        /// Per-image scores as JSON Lines, then the corpus scores.
        #[arg(long)]
        jsonl: bool,
    },
    /// Zero-shot accuracy on a labelled dataset, with a grid of label wordings and templates.
    ZeroShot {
        #[command(flatten)]
        common: Common,
        /// KIND:PATH — folder:DIR, rsicd-scenes:IMAGES, jsonl:FILE, dota:DIR, xview:DIR|GEOJSON.
        #[arg(long)]
        dataset: String,
        /// Keep only the images this file lists (paths relative to the dataset, one a line).
        #[arg(long)]
        split: Option<PathBuf>,
        /// A label set (preset, file, or a,b,c); repeat to compare wordings. The first is the
        /// main one.
        #[arg(long = "labels", required_unless_present = "grid")]
        labels: Vec<String>,
        /// A grid file: `labels: SPEC` and `template: SPEC` lines, added after the options.
        #[arg(long)]
        grid: Option<PathBuf>,
        /// A template or template set; repeat to compare (and ensemble) them.
        #[arg(long = "template")]
        templates: Vec<String>,
        /// k of top-k measures (default 5 single-label, 10 multi-label).
        #[arg(long)]
        k: Option<usize>,
        /// Write report.md, report.html, plots, CSV and JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Embedding cache folder (default $SKYSCRIBE_CACHE or ~/.cache/skyscribe).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Encode every image again and do not touch the cache.
        #[arg(long)]
        no_cache: bool,
        /// Chip side for scene datasets (xview, dota).
        #[arg(long, default_value_t = 300)]
        chip_size: u32,
        /// Chip stride (default: the chip size, no overlap).
        #[arg(long)]
        chip_stride: Option<u32>,
        /// Share of a box's area that must lie in a chip for its class to count.
        #[arg(long, default_value_t = 0.5)]
        min_box_share: f64,
    },
}

#[derive(Args)]
struct Common {
    /// A CLIP model directory (Hugging Face layout) or hub id, e.g.
    /// openai/clip-vit-base-patch32 (default: the built-in skyscribe-mini).
    #[arg(long)]
    model: Option<String>,
    /// Print JSON Lines instead of a table.
    #[arg(long)]
    jsonl: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// 1-based bands to use as red,green,blue for multi-band images (e.g. 4,3,2), or one band.
    #[arg(long, value_delimiter = ',')]
    bands: Option<Vec<usize>>,
    /// Refuse images with more pixels than this.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// cpu, cuda, or auto (cuda when built with it and available).
    #[arg(long, default_value = "auto")]
    device: String,
}

impl Common {
    /// --model, or the built-in mini CLIP.
    fn model(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| skyscribe::builtin::MINI_CLIP.to_string())
    }

    fn decode(&self) -> DecodeOptions {
        DecodeOptions {
            bands: self.bands.clone(),
            max_pixels: self.max_pixels,
        }
    }
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)
            .context("cannot use CUDA (was skyscribe built with --features cuda?)")?,
        "auto" => Device::cuda_if_available(0).unwrap_or(Device::Cpu),
        other => bail!("unknown device '{other}' (cpu, cuda, auto)"),
    })
}

/// Writes result lines; a closed pipe (`| head`) ends output quietly.
struct Out {
    stdout: std::io::Stdout,
    closed: bool,
}

impl Out {
    fn new() -> Self {
        Self {
            stdout: std::io::stdout(),
            closed: false,
        }
    }

    fn line(&mut self, s: &str) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut lock = self.stdout.lock();
        match writeln!(lock, "{s}").and_then(|_| lock.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn progress(n: usize) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} images [{elapsed_precise}] {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if n < 64 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// The images named by `inputs`; inputs that are missing or hold no images are reported on
/// stderr and counted, not fatal.
fn gather(inputs: &[PathBuf]) -> (Vec<PathBuf>, usize) {
    let (paths, errors) = collect_images(inputs);
    for e in &errors {
        eprintln!("skyscribe: {e:#}");
    }
    (paths, errors.len())
}

/// Runs `paths` through the encoder, reporting unreadable files on stderr; returns how many
/// failed (plus `failed` already).
fn for_each_image(
    clip: &ClipEncoder,
    paths: &[PathBuf],
    common: &Common,
    mut failed: usize,
    mut each: impl FnMut(&std::path::Path, Vec<f32>) -> Result<()>,
) -> Result<usize> {
    let bar = progress(paths.len());
    clip.embed_files(
        paths,
        common.batch_size,
        &common.decode(),
        |_, path, result| {
            bar.inc(1);
            match result {
                Ok(e) => each(path, e),
                Err(err) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("skyscribe: {err:#}"));
                    Ok(())
                }
            }
        },
    )?;
    bar.finish_and_clear();
    Ok(failed)
}

fn print_labels(
    out: &mut Out,
    jsonl: bool,
    path: &std::path::Path,
    labels: &[skyscribe::zeroshot::LabelScore],
    caption: Option<&str>,
) -> Result<()> {
    if jsonl {
        let mut v = json!({"input": path.display().to_string(), "labels": labels});
        if let Some(c) = caption {
            v["caption"] = c.into();
        }
        out.line(&v.to_string())
    } else {
        out.line(&path.display().to_string())?;
        for l in labels {
            out.line(&format!("  {:<40} {:>6.3}", l.label, l.score))?;
        }
        if let Some(c) = caption {
            out.line(&format!("  caption: {}", c.trim()))?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn labels_command(
    common: &Common,
    labels: LabelSet,
    templates: Templates,
    top_k_json: Option<usize>,
    top_k_table: usize,
    inputs: &[PathBuf],
    captioner: Option<&str>,
) -> Result<usize> {
    let (paths, failed) = gather(inputs);
    let dev = device(&common.device)?;
    let captioner = captioner
        .map(|c| skyscribe::caption::Captioner::load(&captioner_dir(c)?, &dev))
        .transpose()?;
    // With a captioner and no --model, use the CLIP model the captioner was trained with.
    let clip_spec = match &captioner {
        Some(c) if common.model.is_none() => c.clip_model_spec(),
        _ => common.model(),
    };
    let clip = ClipEncoder::load(&clip_spec, &dev)?;
    let classifier = ZeroShotClassifier::new(&clip, labels, templates)?;
    let top_k = if common.jsonl {
        top_k_json
    } else {
        Some(top_k_json.unwrap_or(top_k_table))
    };
    let mut out = Out::new();
    for_each_image(&clip, &paths, common, failed, |path, embedding| {
        let caption = match &captioner {
            Some(c) => {
                let ids = c.greedy(std::slice::from_ref(&embedding), &Default::default())?;
                Some(c.decode_text(&ids[0])?)
            }
            None => None,
        };
        print_labels(
            &mut out,
            common.jsonl,
            path,
            &classifier.ranked(&embedding, top_k),
            caption.as_deref(),
        )
    })
}

fn embed_command(common: &Common, texts: &[String], inputs: &[PathBuf]) -> Result<usize> {
    if texts.is_empty() && inputs.is_empty() {
        bail!("nothing to embed: give image files or folders, or --text");
    }
    let (paths, failed) = gather(inputs);
    let clip = ClipEncoder::load(&common.model(), &device(&common.device)?)?;
    let mut out = Out::new();
    let emit = |out: &mut Out, input: &str, kind: &str, e: &[f32]| -> Result<()> {
        if common.jsonl {
            out.line(&json!({"input": input, "kind": kind, "embedding": e}).to_string())
        } else {
            let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:.4}")).collect();
            out.line(&format!(
                "{kind:<5} {input}  [{}, … ({} values)]",
                head.join(", "),
                e.len()
            ))
        }
    };
    if !texts.is_empty() {
        for (t, e) in texts
            .iter()
            .zip(clip.embed_texts(texts, common.batch_size)?)
        {
            emit(&mut out, t, "text", &e)?;
        }
    }
    for_each_image(&clip, &paths, common, failed, |path, e| {
        emit(&mut out, &path.display().to_string(), "image", &e)
    })
}

fn default_cache_dir() -> PathBuf {
    // SKYSCRIBE_CACHE names the embedding cache itself (as before the other caches existed).
    match std::env::var_os("SKYSCRIBE_CACHE") {
        Some(p) => p.into(),
        None => skyscribe::cache_root().join("embeddings"),
    }
}

/// Where `eval captions` gets its captions from.
struct CaptionSource<'a> {
    predictions: Option<&'a std::path::Path>,
    captioner: Option<&'a str>,
    nearest_neighbour: Option<&'a str>,
    data: Option<&'a str>,
    clip: Option<&'a str>,
    decoding: &'a CaptionArgs,
    save_predictions: Option<&'a std::path::Path>,
    cache: Option<PathBuf>,
    device: &'a str,
}

/// `(input, caption)` pairs generated for `--data` by a captioner or the nearest-neighbour
/// baseline, and the `--data` set itself (its captions are the default references).
fn generate_captions(
    src: &CaptionSource,
) -> Result<(Vec<(String, String)>, skyscribe::data::CaptionedImages)> {
    use skyscribe::train::captioner::embed_images;
    let spec = src
        .data
        .context("--captioner and --nearest-neighbour need --data (the images to caption)")?;
    let data = skyscribe::data::open_captions(spec)?;
    let dev = device(src.device)?;
    let open_cache = |clip: &ClipEncoder| -> Result<Option<skyscribe::cache::EmbeddingCache>> {
        src.cache
            .as_ref()
            .map(|dir| skyscribe::cache::EmbeddingCache::open(dir, clip, &DecodeOptions::default()))
            .transpose()
    };
    let inputs: Vec<String> = data
        .items
        .iter()
        .map(|i| i.path.display().to_string())
        .collect();
    let captions: Vec<String> = if let Some(dir) = src.captioner {
        let cap = skyscribe::caption::Captioner::load(&captioner_dir(dir)?, &dev)?;
        let clip_spec = src
            .clip
            .map_or_else(|| cap.clip_model_spec(), str::to_string);
        let clip = ClipEncoder::load(&clip_spec, &dev)?;
        let embeds = embed_images(&clip, &data, open_cache(&clip)?.as_ref(), false)?;
        let how = src.decoding.decoding()?;
        let opts = src.decoding.options();
        let pb = progress(embeds.len());
        pb.set_message("captions");
        let mut out = Vec::with_capacity(embeds.len());
        for chunk in embeds.chunks(32) {
            out.extend(cap.captions(chunk, how, &opts, out.len() as u64)?);
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        out
    } else {
        let train_spec = src.nearest_neighbour.expect("one source is given");
        let clip_spec = src
            .clip
            .context("--nearest-neighbour needs --clip (the model that finds the neighbours)")?;
        let clip = ClipEncoder::load(clip_spec, &dev)?;
        let cache = open_cache(&clip)?;
        let train = skyscribe::data::open_captions(train_spec)?;
        let norm = |v: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            v.iter()
                .map(|e| skyscribe::zeroshot::normalized(e))
                .collect()
        };
        let train_e = norm(embed_images(&clip, &train, cache.as_ref(), false)?);
        let test_e = norm(embed_images(&clip, &data, cache.as_ref(), false)?);
        use rayon::prelude::*;
        test_e
            .par_iter()
            .map(|q| {
                let best = train_e
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, q.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()))
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |(i, _)| i);
                train.items[best].captions[0].clone()
            })
            .collect()
    };
    let rows: Vec<(String, String)> = inputs.into_iter().zip(captions).collect();
    if let Some(path) = src.save_predictions {
        let text: String = rows
            .iter()
            .map(|(i, c)| format!("{}\n", json!({"input": i, "caption": c})))
            .collect();
        skyscribe::eval::report::write_atomic(path, text.as_bytes())?;
    }
    Ok((rows, data))
}

fn eval_captions(
    src: &CaptionSource,
    references: Option<&std::path::Path>,
    pretokenized: bool,
    jsonl: bool,
) -> Result<usize> {
    use skyscribe::eval::captions::{CaptionPair, read_references, score, simple_tokenize};
    let (predictions, refs, refs_name): (Vec<(String, String)>, _, String) = match src.predictions {
        Some(file) => {
            let references =
                references.context("--predictions needs --references (the reference captions)")?;
            (
                read_predictions(file)?,
                read_references(references)?,
                references.display().to_string(),
            )
        }
        None => {
            if src.captioner.is_none() && src.nearest_neighbour.is_none() {
                bail!("give --predictions FILE, --captioner DIR or --nearest-neighbour DATA");
            }
            let (rows, data) = generate_captions(src)?;
            let (refs, name) = match references {
                Some(r) => (read_references(r)?, r.display().to_string()),
                None => {
                    let refs = data
                        .items
                        .iter()
                        .map(|i| {
                            let name = i.path.file_name().map(|n| n.to_string_lossy().into_owned());
                            (name.unwrap_or_default(), i.captions.clone())
                        })
                        .collect();
                    (refs, src.data.unwrap_or_default().to_string())
                }
            };
            (rows, refs, name)
        }
    };
    let tok = |s: &str| {
        if pretokenized {
            s.to_string()
        } else {
            simple_tokenize(s)
        }
    };
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for (input, caption) in &predictions {
        let name = std::path::Path::new(input)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = refs
            .get(&name)
            .with_context(|| format!("{input}: no reference captions for {name} in {refs_name}"))?;
        rows.push((
            input.to_string(),
            tok(caption),
            r.iter().map(|c| tok(c)).collect(),
        ));
    }
    if rows.is_empty() {
        bail!("no predictions to score");
    }
    let pairs: Vec<CaptionPair> = rows
        .iter()
        .map(|(_, h, r)| CaptionPair {
            hypothesis: h,
            references: r.iter().map(String::as_str).collect(),
        })
        .collect();
    let (corpus, per) = score(&pairs);
    let mut out = Out::new();
    if jsonl {
        for ((input, _, _), s) in rows.iter().zip(&per) {
            out.line(&json!({"input": input, "scores": s}).to_string())?;
        }
        out.line(&json!({"corpus": corpus, "images": rows.len()}).to_string())?;
    } else {
        out.line(&format!("{} images", rows.len()))?;
        for (k, b) in corpus.bleu.iter().enumerate() {
            out.line(&format!("  BLEU-{}   {:.4}", k + 1, b))?;
        }
        out.line(&format!(
            "  METEOR   {:.4}  (exact + stem modules)\n  ROUGE-L  {:.4}\n  CIDEr-D  {:.4}",
            corpus.meteor, corpus.rouge_l, corpus.cider_d
        ))?;
    }
    Ok(0)
}

/// `{"input", "caption"}` lines.
fn read_predictions(predictions: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(predictions)
        .with_context(|| format!("{}: cannot read predictions", predictions.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", predictions.display(), i + 1))?;
        let input = v["input"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"input\"", predictions.display(), i + 1))?;
        let caption = v["caption"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"caption\"", predictions.display(), i + 1))?;
        rows.push((input.to_string(), caption.to_string()));
    }
    if rows.is_empty() {
        bail!("{}: no predictions", predictions.display());
    }
    Ok(rows)
}

/// Adds a grid file's `labels:` and `template:` lines; label files are found relative to it.
fn read_grid(
    path: &std::path::Path,
    labels: &mut Vec<String>,
    templates: &mut Vec<String>,
) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read grid file", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some(("labels", spec)) => {
                let spec = spec.trim();
                let relative = base.join(spec);
                labels.push(if relative.is_file() {
                    relative.display().to_string()
                } else {
                    spec.to_string()
                });
            }
            Some(("template", spec)) => templates.push(spec.trim().to_string()),
            _ => bail!(
                "{}:{}: expected `labels: SPEC` or `template: SPEC`, got {line:?}",
                path.display(),
                i + 1
            ),
        }
    }
    if labels.is_empty() {
        bail!("{}: the grid names no label set", path.display());
    }
    Ok(())
}

fn eval_command(cmd: EvalCommand) -> Result<usize> {
    if let EvalCommand::Captions {
        predictions,
        references,
        captioner,
        nearest_neighbour,
        data,
        clip,
        decoding,
        save_predictions,
        cache,
        no_cache,
        device,
        pretokenized,
        jsonl,
    } = &cmd
    {
        let src = CaptionSource {
            predictions: predictions.as_deref(),
            captioner: captioner.as_deref(),
            nearest_neighbour: nearest_neighbour.as_deref(),
            data: data.as_deref(),
            clip: clip.as_deref(),
            decoding,
            save_predictions: save_predictions.as_deref(),
            cache: if *no_cache {
                None
            } else {
                Some(cache.clone().unwrap_or_else(default_cache_dir))
            },
            device,
        };
        return eval_captions(&src, references.as_deref(), *pretokenized, *jsonl);
    }
    let EvalCommand::ZeroShot {
        common,
        dataset,
        split,
        mut labels,
        mut templates,
        grid,
        k,
        report,
        cache,
        no_cache,
        chip_size,
        chip_stride,
        min_box_share,
    } = cmd
    else {
        unreachable!("captions handled above")
    };
    if let Some(grid) = &grid {
        read_grid(grid, &mut labels, &mut templates)?;
    }
    let chips = skyscribe::data::ChipOptions {
        size: chip_size,
        stride: chip_stride.unwrap_or(chip_size),
        min_box_share,
    };
    let ds = skyscribe::data::open(&dataset, split.as_deref(), &chips)?;
    let label_sets: Vec<LabelSet> = labels
        .iter()
        .map(|l| LabelSet::parse(l))
        .collect::<Result<_>>()?;
    skyscribe::eval::template_variants(&templates)?;
    skyscribe::eval::check_label_sets(&ds, &label_sets)?;
    let clip = ClipEncoder::load(&common.model(), &device(&common.device)?)?;
    let decode = common.decode();
    let cache = if no_cache {
        None
    } else {
        Some(skyscribe::cache::EmbeddingCache::open(
            &cache.unwrap_or_else(default_cache_dir),
            &clip,
            &decode,
        )?)
    };
    let bar = progress(ds.samples.len());
    let (embeddings, stats) = skyscribe::eval::embed_samples(
        &clip,
        &ds.samples,
        cache.as_ref(),
        common.batch_size,
        &decode,
        &bar,
    )?;
    bar.finish_and_clear();
    for (image, why) in &stats.failed {
        eprintln!("skyscribe: {why}");
        let _ = image;
    }
    let failed = stats.failed.len();
    let eval =
        skyscribe::eval::evaluate(&clip, &ds, &embeddings, &label_sets, &templates, k, stats)?;
    if let Some(dir) = &report {
        skyscribe::eval::report::write(&eval, dir)?;
    }
    let mut out = Out::new();
    if common.jsonl {
        for p in &eval.predictions {
            out.line(&serde_json::to_string(p)?)?;
        }
        out.line(&json!({"summary": &eval}).to_string())?;
    } else {
        out.line(&format!(
            "{} — {} images evaluated of {}",
            eval.dataset, eval.evaluated, eval.images
        ))?;
        out.line(&format!(
            "embeddings: {} encoded, {} from cache, {} corrupt entries recomputed",
            eval.encode.encoded, eval.encode.from_cache, eval.encode.corrupt_entries
        ))?;
        for g in &eval.grid {
            let what = match (&g.single, &g.multi) {
                (Some(s), _) => format!(
                    "top-1 {:.1} %  top-{} {:.1} %  macro F1 {:.1} %",
                    100.0 * s.top1,
                    s.k,
                    100.0 * s.topk,
                    100.0 * s.macro_f1
                ),
                (_, Some(m)) => format!(
                    "mAP {:.1} %  ≥1 in top-{} {:.1} %  all in top-{} {:.1} %",
                    100.0 * m.mean_average_precision,
                    m.k,
                    100.0 * m.at_least_one_in_top_k,
                    m.k,
                    100.0 * m.all_in_top_k
                ),
                _ => String::new(),
            };
            out.line(&format!("  {:<28} {:<40} {what}", g.labels, g.templates))?;
        }
        if let Some(dir) = &report {
            out.line(&format!("report: {}", dir.join("report.md").display()))?;
        }
    }
    Ok(failed)
}

/// How `caption` decodes.
#[derive(Args)]
struct CaptionArgs {
    /// greedy (the reference's generate2), beam (generate_beam) or sample (nucleus).
    #[arg(long, default_value = "greedy")]
    decode: String,
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Nucleus size for --decode sample.
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Seed for --decode sample (each image uses seed + its index).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many tokens per caption.
    #[arg(long, default_value_t = 67)]
    max_tokens: usize,
}

impl CaptionArgs {
    fn decoding(&self) -> Result<skyscribe::caption::Decoding> {
        use skyscribe::caption::Decoding;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p {} must be in (0, 1]", self.top_p);
        }
        Ok(match self.decode.as_str() {
            "greedy" => Decoding::Greedy,
            "beam" => Decoding::Beam {
                size: self.beam_size.max(1),
            },
            "sample" => Decoding::Sample {
                top_p: self.top_p,
                seed: self.seed,
            },
            other => bail!("--decode {other}: expected greedy, beam or sample"),
        })
    }

    fn options(&self) -> skyscribe::caption::DecodeOptions {
        skyscribe::caption::DecodeOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
        }
    }
}

/// The captioner's own CLIP unless --model names another.
fn captioner_clip(common: &Common, cap: &skyscribe::caption::Captioner) -> String {
    if common.model.is_none() {
        cap.clip_model_spec()
    } else {
        common.model()
    }
}

fn export_model(
    from: &std::path::Path,
    to: &std::path::Path,
    dtype: candle_core::DType,
) -> Result<()> {
    let weights = from.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu)
        .with_context(|| format!("{}: cannot read", weights.display()))?;
    if to.exists() {
        bail!("{}: already exists; choose a new folder", to.display());
    }
    let tmp = to.with_extension(format!("partial-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let converted = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    candle_core::safetensors::save(&converted, tmp.join("model.safetensors"))?;
    for f in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), tmp.join(f))
                .with_context(|| format!("{}: cannot copy", from.join(f).display()))?;
        }
    }
    std::fs::rename(&tmp, to).with_context(|| format!("{}: cannot create", to.display()))?;
    Ok(())
}

/// A captioner folder, or a built-in captioner written out.
fn captioner_dir(spec: &str) -> Result<PathBuf> {
    match skyscribe::builtin::model_dir(spec) {
        Some(dir) => dir,
        None => Ok(PathBuf::from(spec)),
    }
}

fn caption_command(
    common: &Common,
    captioner: &str,
    a: &CaptionArgs,
    inputs: &[PathBuf],
) -> Result<usize> {
    let how = a.decoding()?;
    let opts = a.options();
    let dev = device(&common.device)?;
    let cap = skyscribe::caption::Captioner::load(&captioner_dir(captioner)?, &dev)?;
    let (paths, failed) = gather(inputs);
    let clip = ClipEncoder::load(&captioner_clip(common, &cap), &dev)?;
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

#[allow(clippy::too_many_arguments)]
fn import_command(
    weights: &std::path::Path,
    gpt2: &str,
    clip: &str,
    mapping: &str,
    prefix_length: usize,
    clip_length: usize,
    num_layers: usize,
    normalize_prefix: bool,
    out: &std::path::Path,
) -> Result<usize> {
    use skyscribe::models::mapper::MappingType;
    let mapping_type = match mapping {
        "mlp" => MappingType::Mlp,
        "transformer" => MappingType::Transformer,
        other => bail!("--mapping {other}: expected mlp or transformer"),
    };
    let gpt2_dir = skyscribe::hub::resolve(gpt2, &["config.json", "tokenizer.json"], &[])?;
    let clip_dir = skyscribe::hub::resolve(clip, &["config.json"], &[])?;
    let clip_config = skyscribe::models::ClipConfig::from_file(&clip_dir.file("config.json"))?;
    skyscribe::caption::import_clipcap(
        &skyscribe::caption::ImportOptions {
            weights,
            gpt2_dir: &gpt2_dir.dir,
            gpt2_spec: gpt2,
            clip_spec: clip,
            prefix_size: clip_config.projection_dim,
            mapping_type,
            prefix_length,
            clip_length,
            num_layers,
            normalize_prefix,
        },
        out,
    )?;
    eprintln!("skyscribe: wrote captioner {}", out.display());
    Ok(0)
}

fn run(cli: Cli) -> Result<usize> {
    match cli.command {
        Command::Caption {
            common,
            captioner,
            decoding,
            inputs,
        } => caption_command(&common, &captioner, &decoding, &inputs),
        Command::ImportClipcap {
            weights,
            gpt2,
            clip,
            mapping,
            prefix_length,
            clip_length,
            num_layers,
            normalize_prefix,
            out,
        } => import_command(
            &weights,
            &gpt2,
            &clip,
            &mapping,
            prefix_length,
            clip_length,
            num_layers,
            normalize_prefix,
            &out,
        ),
        Command::Eval(cmd) => eval_command(cmd),
        Command::Export { from, to, dtype } => {
            let dtype = if dtype == "f16" {
                candle_core::DType::F16
            } else {
                candle_core::DType::F32
            };
            export_model(&from, &to, dtype)?;
            eprintln!("skyscribe: wrote {}", to.display());
            Ok(0)
        }
        Command::Train(cmd) => train_command(cmd),
        Command::Describe {
            common,
            top_k,
            captioner,
            no_caption,
            inputs,
        } => {
            // The built-in captioner reads the built-in CLIP: it is the default only with it.
            let captioner = match (&captioner, &common.model, no_caption) {
                (_, _, true) => None,
                (Some(c), _, _) => Some(c.clone()),
                (None, None, false) => Some(skyscribe::builtin::MINI_CAPTIONER.to_string()),
                (None, Some(_), false) => None,
            };
            labels_command(
                &common,
                LabelSet::parse("describe")?,
                Templates::parse(&[])?,
                Some(top_k),
                top_k,
                &inputs,
                captioner.as_deref(),
            )
        }
        Command::Labels {
            common,
            labels,
            templates,
            top_k,
            inputs,
        } => {
            let labels = LabelSet::parse(&labels)?;
            let templates = Templates::parse(&templates)?;
            labels_command(&common, labels, templates, top_k, 5, &inputs, None)
        }
        Command::Embed {
            common,
            texts,
            inputs,
        } => embed_command(&common, &texts, &inputs),
        Command::Bench {
            images,
            limit,
            batch_size,
            model,
            device: dev,
            jsonl,
            captioner_step,
            caption_tokens,
            train_gpt2,
            steps,
        } => {
            if captioner_step {
                let r = skyscribe::bench::captioner_step(
                    &device(&dev)?,
                    batch_size,
                    caption_tokens,
                    steps.max(1),
                    train_gpt2,
                )?;
                if jsonl {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{}: batch {}, {} caption tokens + prefix {}, {} threads, {}\n  median step {:.3} s over {} steps",
                        r.what,
                        r.batch_size,
                        r.caption_tokens,
                        r.prefix_length,
                        r.threads,
                        r.device,
                        r.median_step_s,
                        r.steps
                    );
                }
                return Ok(0);
            }
            let images =
                images.unwrap_or_else(|| skyscribe::data_root().join("eurosat/images/Forest"));
            let (mut paths, errors) = collect_images(&[images]);
            if let Some(e) = errors.into_iter().next() {
                return Err(e);
            }
            paths.truncate(limit);
            let dev = device(&dev)?;
            let clip = match model {
                Some(m) => ClipEncoder::load(&m, &dev)?,
                None => skyscribe::bench::random_vit_b32(&dev, &tokenizer_asset()?)?,
            };
            let r = skyscribe::bench::run(&clip, &paths, batch_size)?;
            if jsonl {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {} images, batch {}, {} threads, {}\n  end to end (decode + preprocess + encode): {:.1} images/s\n  model only: {:.1} images/s",
                    r.model,
                    r.images,
                    r.batch_size,
                    r.threads,
                    r.device,
                    r.end_to_end_images_per_s,
                    r.model_images_per_s
                );
            }
            Ok(0)
        }
    }
}

/// CLIP's tokenizer.json shipped in the repository (for random-weight benchmarks).
fn tokenizer_asset() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers/clip/tokenizer.json");
    if !p.is_file() {
        bail!(
            "{}: missing (run from a checkout of skyscribe)",
            p.display()
        );
    }
    Ok(p)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!(
                "skyscribe: {failed} input(s) could not be read; every other result was written"
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("skyscribe: {e:#}");
            ExitCode::from(2)
        }
    }
}
