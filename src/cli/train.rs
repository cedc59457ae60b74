//! `train captioner` and `train clip`: the command line over [`skyscribe::train`]. Defaults
//! live with the library's option types (`Default` and `from_scratch`); an option given here
//! replaces its default.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use skyscribe::train::captioner::{CaptionerTrainOptions, train_captioner};
use skyscribe::train::clip::{ClipTrainOptions, train_clip};
use skyscribe::train::{RunOptions, TrainSummary};

use super::caption::MappingArg;
use super::common::{CacheArgs, DeviceArg};
use super::output::{Out, report};

/// Options every training run shares; unset ones take the trainer's defaults.
#[derive(Args)]
pub struct TrainCommon {
    /// Captioned images: rsicd:DIR (captions.jsonl + images), coco:FILE.json, or
    /// parquet:FILE.parquet (the Hugging Face arampacha/rsicd layout).
    #[arg(long)]
    data: String,
    /// Output folder: the trained model, plus checkpoint/ for --resume.
    #[arg(long)]
    out: PathBuf,
    /// Passes over the training images (default 10).
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per step (default: captioner 40, CLIP 128).
    #[arg(long)]
    batch_size: Option<usize>,
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
    /// Clip the global gradient norm to this; 0: off (default 1.0).
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Share of images held out for validation (default 0.05).
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Checkpoint every N steps, and at every epoch's end (default 500).
    #[arg(long)]
    save_every: Option<usize>,
    /// Continue the run in --out exactly where it stopped.
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint after this step, as if interrupted.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Seed of the initial weights, the data order and every random choice (default 42).
    #[arg(long)]
    seed: Option<u64>,
    /// Size of the BPE vocabulary trained on the captions when a model is trained from scratch
    /// without --tokenizer (default 2048).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// tokenizer.json for a model trained from scratch.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Where the model trains.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Print the per-epoch history as JSON Lines.
    #[arg(long)]
    jsonl: bool,
}

impl TrainCommon {
    /// The trainer's defaults `run`, with what was given on the command line.
    fn apply(&self, run: &mut RunOptions) {
        run.data = self.data.clone();
        run.out = self.out.clone();
        run.resume = self.resume;
        run.stop_after = self.stop_after;
        run.tokenizer = self.tokenizer.clone();
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut run.epochs, self.epochs);
        set(&mut run.batch_size, self.batch_size);
        set(&mut run.warmup, self.warmup);
        set(&mut run.save_every, self.save_every);
        set(&mut run.vocab_size, self.vocab_size);
        let setf = |slot: &mut f64, v: Option<f64>| *slot = v.unwrap_or(*slot);
        setf(&mut run.lr, self.lr);
        setf(&mut run.weight_decay, self.weight_decay);
        setf(&mut run.grad_clip, self.grad_clip);
        setf(&mut run.val_fraction, self.val_fraction);
        run.seed = self.seed.unwrap_or(run.seed);
    }
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// ClipCap: a mapping network (and optionally GPT-2) on CLIP image embeddings.
    Captioner(CaptionerArgs),
    /// CLIP, contrastively: fine-tune (--init) or from scratch (--config).
    Clip(ClipArgs),
}

#[derive(Args)]
pub struct CaptionerArgs {
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
    /// The mapping network.
    #[arg(long, value_enum, default_value_t = MappingArg::Mlp)]
    mapping: MappingArg,
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
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args)]
pub struct ClipArgs {
    #[command(flatten)]
    common: TrainCommon,
    /// A pretrained CLIP to fine-tune (directory or hub id).
    #[arg(long, conflicts_with = "config")]
    init: Option<String>,
    /// Train from scratch with these shapes: `mini` or a CLIP config.json.
    #[arg(long)]
    config: Option<String>,
    /// Train on the images as they are (no crops, flips, rotations, colour jitter).
    #[arg(long)]
    no_augment: bool,
}

pub fn run(cmd: TrainCommand) -> Result<usize> {
    let (summary, common) = match cmd {
        TrainCommand::Captioner(a) => {
            let mut opts = CaptionerTrainOptions {
                clip: a.clip,
                gpt2: a.gpt2,
                gpt2_config: a.gpt2_config,
                train_gpt2: a.train_gpt2,
                mapping: a.mapping.into(),
                prefix_length: a.prefix_length,
                clip_length: a.clip_length,
                num_layers: a.num_layers,
                normalize_prefix: a.normalize_prefix,
                cache: a.cache.dir(),
                ..CaptionerTrainOptions::default()
            };
            a.common.apply(&mut opts.run);
            let dev = a.common.device.device()?;
            (train_captioner(&opts, &dev)?, a.common)
        }
        TrainCommand::Clip(a) => {
            let mut opts = if a.init.is_some() {
                ClipTrainOptions::default()
            } else {
                ClipTrainOptions::from_scratch()
            };
            opts.init = a.init;
            opts.config = a.config;
            opts.augment = !a.no_augment;
            a.common.apply(&mut opts.run);
            let dev = a.common.device.device()?;
            (train_clip(&opts, &dev)?, a.common)
        }
    };
    print_summary(&summary, common.jsonl, &common.out)?;
    Ok(0)
}

fn print_summary(summary: &TrainSummary, jsonl: bool, out: &std::path::Path) -> Result<()> {
    let mut w = Out::new();
    if jsonl {
        for r in &summary.history {
            w.json(r)?;
        }
    } else {
        for r in &summary.history {
            let extra: Vec<String> = r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            w.line(&format!(
                "epoch {:>3}  step {:>6}  train loss {:.4}  validation loss {}  {:.0} s  {}",
                r.epoch,
                r.step,
                r.train_loss,
                r.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
                r.seconds,
                extra.join("  ")
            ))?;
        }
    }
    report(&format!(
        "{} after {} steps in {:.0} s; model in {}",
        if summary.finished {
            "finished"
        } else {
            "stopped"
        },
        summary.steps,
        summary.seconds,
        out.display()
    ));
    Ok(())
}
