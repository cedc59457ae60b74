//! `train captioner` and `train clip`: the command line over [`skyscribe::train`]. Defaults
//! live with the library's option types (`Default` and `from_scratch`); an option given here
//! replaces its default.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use skyscribe::train::captioner::{CaptionerTrainOptions, train_captioner};
use skyscribe::train::clip::{CaptionPool, ClipTrainOptions, train_clip};
use skyscribe::train::run::EpochSink;
use skyscribe::train::{EpochRecord, RunOptions, TrainSummary};

use super::caption::{MapperShapeArgs, MappingArg};
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
    /// Peak learning rate after warm-up (default: captioner 2e-5 as the reference, 1e-3 with
    /// GPT-2 from scratch; CLIP 1e-5 fine-tuning, 5e-4 from scratch).
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps (default: captioner 5000 as the reference, 300 with GPT-2 from scratch;
    /// CLIP 100 fine-tuning, 200 from scratch).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay on weight matrices (default: captioner 0.01, CLIP 0.1).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm to this; 0: off (default 1.0).
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Validate and save an exponential moving average of the weights with this decay (e.g.
    /// 0.999); the checkpoint keeps both. Default: off.
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
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
        run.ema = self.ema.or(run.ema);
    }
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// ClipCap: a mapping network (and optionally GPT-2) on CLIP image embeddings.
    #[command(after_help = super::shell::examples::TRAIN_CAPTIONER)]
    Captioner(CaptionerArgs),
    /// CLIP, contrastively: fine-tune (--init) or from scratch (--config).
    #[command(after_help = super::shell::examples::TRAIN_CLIP)]
    Clip(ClipArgs),
    /// A classifier on CLIP image embeddings from labelled examples, a few shots, or training
    /// areas drawn over a scene (linear probe, prototypes, or pulled towards zero-shot).
    #[command(after_help = super::shell::examples::TRAIN_CLASSIFIER)]
    Classifier(super::classify::TrainClassifierArgs),
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
    #[command(flatten)]
    shape: MapperShapeArgs,
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
    /// Train from scratch with these shapes: `mini` (64-pixel images), `mini-128` (the same at
    /// 128 pixels) or a CLIP config.json.
    #[arg(long)]
    config: Option<String>,
    /// Train on the images as they are (no crops, flips, rotations, colour jitter).
    #[arg(long)]
    no_augment: bool,
    /// Which sentences a training image is paired with: its captions, RSICD's `augmented`
    /// paraphrases, or both (validation always uses the first caption).
    #[arg(long, value_enum, default_value_t = CaptionsArg::Original)]
    captions: CaptionsArg,
    /// Label smoothing of the contrastive loss's targets, in [0, 1) (default 0: off).
    #[arg(long, value_name = "EPSILON")]
    label_smoothing: Option<f64>,
    /// The share of augmented views, in [0, 1], rendered at a random coarser resolution (¼ to
    /// 1 × the model's input) and scaled back up, as a coarser sensor would see the ground
    /// (default 0: off).
    #[arg(long, value_name = "SHARE")]
    low_res_views: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptionsArg {
    /// The image's captions (the references).
    Original,
    /// RSICD's `augmented` sentences (back-translated paraphrases in place of repeats).
    Augmented,
    /// Both, without duplicates.
    Both,
}

pub fn run(cmd: TrainCommand) -> Result<usize> {
    let (summary, common) = match cmd {
        TrainCommand::Classifier(a) => return super::classify::train_classifier(a),
        TrainCommand::Captioner(a) => {
            let defaults = if a.gpt2_config.is_some() {
                CaptionerTrainOptions::from_scratch()
            } else {
                CaptionerTrainOptions::default()
            };
            let mut opts = CaptionerTrainOptions {
                clip: a.clip,
                gpt2: a.gpt2,
                gpt2_config: a.gpt2_config,
                train_gpt2: a.train_gpt2,
                mapping: a.mapping.into(),
                prefix_length: a.shape.prefix_length,
                clip_length: a.shape.clip_length,
                num_layers: a.shape.num_layers,
                normalize_prefix: a.shape.normalize_prefix,
                cache: a.cache.dir(),
                ..defaults
            };
            a.common.apply(&mut opts.run);
            opts.run.on_epoch = epoch_printer(a.common.jsonl);
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
            opts.captions = match a.captions {
                CaptionsArg::Original => CaptionPool::Original,
                CaptionsArg::Augmented => CaptionPool::Augmented,
                CaptionsArg::Both => CaptionPool::Both,
            };
            opts.label_smoothing = a.label_smoothing.unwrap_or(opts.label_smoothing);
            opts.low_res_views = a.low_res_views.unwrap_or(opts.low_res_views);
            a.common.apply(&mut opts.run);
            opts.run.on_epoch = epoch_printer(a.common.jsonl);
            let dev = a.common.device.device()?;
            (train_clip(&opts, &dev)?, a.common)
        }
    };
    print_summary(&summary, &common.out);
    Ok(0)
}

/// Each epoch's line as the run makes it: a table row, or a JSON line with `--jsonl`.
fn epoch_printer(jsonl: bool) -> EpochSink {
    let out = std::sync::Mutex::new(Out::new());
    EpochSink::new(move |r: &EpochRecord| {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        let written = if jsonl {
            out.json(r)
        } else {
            out.line(&epoch_row(r))
        };
        if let Err(e) = written {
            report(&format!("cannot write the epoch line: {e:#}"));
        }
    })
}

/// `epoch   3  step    120  train loss 1.2345  validation loss 1.3456  12 s  i→t r@1 0.125 …`,
/// recalls in the order r@1, r@5, r@10.
fn epoch_row(r: &EpochRecord) -> String {
    let mut metrics: Vec<(&String, &f64)> = r.metrics.iter().collect();
    let k_of = |name: &str| -> usize {
        name.rsplit('@')
            .next()
            .and_then(|k| k.parse().ok())
            .unwrap_or(0)
    };
    metrics.sort_by_key(|(name, _)| {
        (
            name.split("_r@").next().unwrap_or("").to_string(),
            k_of(name),
        )
    });
    let extra: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    format!(
        "epoch {:>3}  step {:>6}  train loss {:.4}  validation loss {}  {:.0} s  {}",
        r.epoch,
        r.step,
        r.train_loss,
        r.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
        r.seconds,
        extra.join("  ")
    )
    .trim_end()
    .to_string()
}

fn print_summary(summary: &TrainSummary, out: &std::path::Path) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recalls_print_in_the_order_of_k() {
        let r = EpochRecord {
            epoch: 1,
            step: 10,
            train_loss: 1.0,
            val_loss: None,
            metrics: [
                ("image_to_text_r@1", 0.1),
                ("image_to_text_r@10", 0.3),
                ("image_to_text_r@5", 0.2),
                ("text_to_image_r@5", 0.5),
                ("text_to_image_r@1", 0.4),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            seconds: 1.0,
        };
        let row = epoch_row(&r);
        let at = |s: &str| row.find(s).unwrap();
        assert!(at("image_to_text_r@1 ") < at("image_to_text_r@5"), "{row}");
        assert!(at("image_to_text_r@5") < at("image_to_text_r@10"), "{row}");
        assert!(at("image_to_text_r@10") < at("text_to_image_r@1 "), "{row}");
    }
}
