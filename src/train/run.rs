//! The training loop, once, for every model skyscribe trains (in the manner of nanoGPT's
//! `train.py`). A trainer ([`Trainer`]) says how a batch of examples becomes a loss and how to
//! validate; this loop owns everything else:
//!
//! 1. start fresh, or resume from `OUT/checkpoint` (the same options, or a refusal);
//! 2. each step: the batch from the epoch's order, loss, backward, clipping, AdamW (and the
//!    weights' moving average with `--ema`);
//! 3. each epoch's end: validation (of the average, with `--ema`) and a history record;
//! 4. save points (`--save-every`, each epoch, `--stop-after`), each writing the checkpoint and
//!    the model once;
//! 5. the summary.
//!
//! Exact resume without saving random-generator state: the data order of epoch `e` and the
//! random choices of step `s` come from generators seeded by `(seed, e)` and `(seed, s)`
//! ([`super::rng_for`]), so an interrupted-and-resumed run ends bit-identical to an
//! uninterrupted one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, Saved, check_fresh_out, check_same_run};
use super::epoch_order;
use super::optim::{AdamW, Decay, Ema, Schedule, clip_grad_norm};
use crate::progress;

/// How a run goes, whatever is trained. The trainers' option types embed it (flattened: the
/// options a checkpoint records are one flat object) and set its defaults for their models.
#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    /// The captioned images (`rsicd:DIR`, `coco:FILE.json`, `parquet:FILE`).
    pub data: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup` steps.
    pub lr: f64,
    pub warmup: usize,
    /// AdamW's decoupled weight decay, on weight matrices only.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    pub grad_clip: f64,
    /// Validate and save an exponential moving average of the weights with this decay.
    /// (Left out of the recorded options when off, so checkpoints of earlier versions resume.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
    /// Share of the images held out whole for validation.
    pub val_fraction: f64,
    pub seed: u64,
    /// `tokenizer.json` for a model trained from scratch (default: a BPE trained on the
    /// captions, of `vocab_size` tokens).
    pub tokenizer: Option<PathBuf>,
    pub vocab_size: usize,
    /// Checkpoint every N steps (and at each epoch's end); 0: at epoch ends only.
    #[serde(skip)]
    pub save_every: usize,
    /// Continue the run in `out` exactly where it stopped.
    #[serde(skip)]
    pub resume: bool,
    /// Stop with a checkpoint after this step, as if interrupted.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// The output folder: the trained model, plus `checkpoint/`.
    #[serde(skip)]
    pub out: PathBuf,
    /// No progress bar and no epoch lines (library callers, tests).
    #[serde(skip)]
    pub quiet: bool,
    /// Receives each epoch's record as the run makes it (the command line prints it as a
    /// result line); without one, a line is logged on stderr unless `quiet`.
    #[serde(skip)]
    pub on_epoch: EpochSink,
}

type EpochFn = dyn Fn(&EpochRecord) + Send + Sync;

/// A receiver of [`EpochRecord`]s, shared by clones of the options.
#[derive(Clone, Default)]
pub struct EpochSink(Option<std::sync::Arc<EpochFn>>);

impl EpochSink {
    pub fn new(f: impl Fn(&EpochRecord) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }
}

impl std::fmt::Debug for EpochSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EpochSink(set)"
        } else {
            "EpochSink(none)"
        })
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            data: String::new(),
            epochs: 10,
            batch_size: 32,
            lr: 1e-4,
            warmup: 0,
            weight_decay: 0.01,
            grad_clip: 1.0,
            ema: None,
            val_fraction: 0.05,
            seed: 42,
            tokenizer: None,
            vocab_size: 2048,
            save_every: 500,
            resume: false,
            stop_after: None,
            out: PathBuf::new(),
            quiet: false,
            on_epoch: EpochSink::default(),
        }
    }
}

impl RunOptions {
    /// Refuses options that make no sense before anything is loaded.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be positive");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be positive");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 1)");
        }
        if self.grad_clip < 0.0 || self.weight_decay < 0.0 {
            bail!("--grad-clip and --weight-decay cannot be negative");
        }
        if let Some(d) = self.ema
            && !(d > 0.0 && d < 1.0)
        {
            bail!("--ema must be a decay strictly between 0 and 1 (e.g. 0.999), not {d}");
        }
        Ok(())
    }
}

/// What a model brings to the loop.
pub trait Trainer {
    /// The trainable variables by checkpoint key: what AdamW updates.
    fn vars(&self) -> &[(String, Var)];
    /// The mean loss of training examples `batch` (indices into the training set) at `step`;
    /// random choices come from [`super::rng_for`]`(seed, .., step)`.
    fn loss(&self, batch: &[usize], step: usize) -> Result<Tensor>;
    /// After each update (CLIP clamps its temperature here).
    fn after_update(&self) -> Result<()> {
        Ok(())
    }
    /// The validation loss and extra numbers (retrieval recalls), at each epoch's end.
    fn validate(&self) -> Result<(Option<f64>, BTreeMap<String, f64>)>;
    /// Every tensor of the model by checkpoint key, as saved.
    fn weights(&self) -> HashMap<String, Tensor>;
}

/// How the loop walks the training set.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Examples in the training set.
    pub examples: usize,
    /// Drop each epoch's last, smaller batch (contrastive losses need full batches).
    pub drop_last: bool,
    pub decay: Decay,
}

/// One line of the training history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// Extra validation numbers (retrieval recalls for CLIP).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
}

/// Where a run stands: enough, with the weights and optimiser moments, to continue it exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: usize,
    pub total_steps: usize,
    pub steps_per_epoch: usize,
    /// The options that shape the run (checked on resume: a different run is refused).
    pub options: serde_json::Value,
    pub history: Vec<EpochRecord>,
    /// Sum and count of the training losses of the current epoch so far.
    pub epoch_loss_sum: f64,
    pub epoch_loss_count: usize,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub finished: bool,
    pub history: Vec<EpochRecord>,
    pub seconds: f64,
    /// Checkpoints written by this process.
    pub checkpoints_written: usize,
}

/// Phase 1, before the model is built or anything is written: a fresh output folder, or the
/// checkpoint of the same run to resume.
pub struct Start {
    out: PathBuf,
    checkpoint: Checkpoint,
    saved: Option<Saved>,
    /// The trainer's options as the checkpoint records them.
    options: serde_json::Value,
    started: Instant,
}

impl Start {
    /// `options`: the trainer's options, serialised (a resumed run must have the same).
    pub fn new(run: &RunOptions, options: serde_json::Value, device: &Device) -> Result<Self> {
        let checkpoint = Checkpoint::new(&run.out);
        let saved = if run.resume {
            let saved = checkpoint.load(device)?;
            check_same_run(&saved.state.options, &options, &run.out)?;
            Some(saved)
        } else {
            check_fresh_out(&run.out)?;
            None
        };
        Ok(Self {
            out: run.out.clone(),
            checkpoint,
            saved,
            options,
            started: Instant::now(),
        })
    }

    pub fn is_resumed(&self) -> bool {
        self.saved.is_some()
    }

    /// The checkpoint's `model.safetensors` when resuming: what the trainer builds its model
    /// from.
    pub fn resumed_weights(&self) -> Option<&Path> {
        self.saved.as_ref().map(|s| s.weights.as_path())
    }
}

/// Trains `trainer` from `start` to the end of the run (or `--stop-after`); `label` names the
/// progress bar.
pub fn train(
    trainer: &impl Trainer,
    start: Start,
    plan: Plan,
    run: &RunOptions,
    label: &str,
) -> Result<TrainSummary> {
    // A batch larger than the training set is the whole set.
    let batch_size = run.batch_size.min(plan.examples);
    if batch_size == 0 {
        bail!("{}: no training examples", run.data);
    }
    let steps_per_epoch = if plan.drop_last {
        plan.examples / batch_size
    } else {
        plan.examples.div_ceil(batch_size)
    };

    // Phase 1: the run's state and optimiser, fresh or as saved.
    let mut optimizer = AdamW::new(trainer.vars(), run.weight_decay)?;
    let mut ema = run
        .ema
        .map(|decay| Ema::new(trainer.vars(), decay))
        .transpose()?;
    let mut state = match &start.saved {
        Some(saved) => {
            optimizer.load_state(&saved.optimizer_file, &saved.moments)?;
            if let Some(ema) = &mut ema {
                ema.load_state(&saved.optimizer_file, &saved.moments)?;
            }
            saved.state.clone()
        }
        None => TrainState {
            step: 0,
            total_steps: steps_per_epoch * run.epochs,
            steps_per_epoch,
            options: start.options.clone(),
            history: vec![],
            epoch_loss_sum: 0.0,
            epoch_loss_count: 0,
        },
    };
    if !run.quiet && !start.is_resumed() && run.warmup >= state.total_steps {
        progress::say(
            &indicatif::ProgressBar::hidden(),
            &format!(
                "warning: the warm-up ({} steps) is as long as the whole run ({} steps): the \
                 learning rate never reaches --lr {}; lower --warmup or train longer",
                run.warmup, state.total_steps, run.lr
            ),
        );
    }
    let schedule = Schedule {
        peak: run.lr,
        warmup: run.warmup,
        total: state.total_steps,
        decay: plan.decay,
    };
    // With --ema, validation and the saved model see the averaged weights; the checkpoint
    // keeps the trained ones (and the average) to continue from.
    let save = |state: &TrainState, optimizer: &AdamW, ema: &Option<Ema>| -> Result<()> {
        let mut optimizer_state = optimizer.state()?;
        if let Some(ema) = ema {
            optimizer_state.extend(ema.state()?);
        }
        start
            .checkpoint
            .save(&trainer.weights(), &optimizer_state, state)?;
        averaged(ema, || {
            crate::atomic::write_safetensors(
                &start.out.join("model.safetensors"),
                &trainer.weights(),
            )
            .with_context(|| format!("{}: saving the model", start.out.display()))
        })
    };
    let mut checkpoints_written = 0;

    let bar = progress::steps(state.total_steps, state.step, label, run.quiet);
    let mut epoch_started = Instant::now();
    let mut window = (Instant::now(), 0usize);
    let mut order: Option<(usize, Vec<usize>)> = None;
    while state.step < state.total_steps {
        // Phase 2: one step on the next batch of this epoch's order.
        let step = state.step + 1;
        let epoch = (step - 1) / state.steps_per_epoch;
        let index = (step - 1) % state.steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(run.seed, epoch, plan.examples)));
        }
        let (_, perm) = order.as_ref().expect("set above");
        let lo = index * batch_size;
        let batch = &perm[lo..(lo + batch_size).min(perm.len())];

        let loss = trainer.loss(batch, step)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, trainer.vars(), run.grad_clip)?;
        let lr = schedule.lr(step);
        optimizer.step(&grads, lr, step)?;
        trainer.after_update()?;
        if let Some(ema) = &mut ema {
            ema.update(step)?;
        }

        let loss = loss.to_scalar::<f32>()? as f64;
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {step}; try a lower --lr");
        }
        state.step = step;
        state.epoch_loss_sum += loss;
        state.epoch_loss_count += 1;
        window.1 += batch.len();
        let rate = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.3} lr {lr:.2e} {rate:.0} samples/s"));

        // Phase 3: at an epoch's end, validation and the history record.
        let end_of_epoch = step.is_multiple_of(state.steps_per_epoch);
        if end_of_epoch {
            let (val_loss, metrics) = averaged(&ema, || trainer.validate())?;
            let record = EpochRecord {
                epoch: step / state.steps_per_epoch,
                step,
                train_loss: state.epoch_loss_sum / state.epoch_loss_count.max(1) as f64,
                val_loss,
                metrics,
                seconds: epoch_started.elapsed().as_secs_f64(),
            };
            match &run.on_epoch.0 {
                Some(sink) => bar.suspend(|| sink(&record)),
                None if !run.quiet => progress::say(&bar, &epoch_line(&record)),
                None => {}
            }
            state.history.push(record);
            state.epoch_loss_sum = 0.0;
            state.epoch_loss_count = 0;
            epoch_started = Instant::now();
            window = (Instant::now(), 0);
        }

        // Phase 4: save points.
        let stop = run.stop_after == Some(step);
        let save_point = run.save_every > 0 && step.is_multiple_of(run.save_every);
        if stop || end_of_epoch || save_point {
            // Every epoch ends here, so the run's last step is always saved, once.
            save(&state, &optimizer, &ema)?;
            checkpoints_written += 1;
        }
        if stop {
            break;
        }
    }

    // Phase 5: the summary.
    let finished = state.step >= state.total_steps;
    if finished {
        bar.finish_and_clear();
    } else {
        bar.abandon_with_message(format!(
            "stopped after step {} (checkpoint saved)",
            state.step
        ));
    }
    Ok(TrainSummary {
        steps: state.step,
        finished,
        history: state.history,
        seconds: start.started.elapsed().as_secs_f64(),
        checkpoints_written,
    })
}

/// `f` with the moving average's weights in place when there is one.
fn averaged<R>(ema: &Option<Ema>, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match ema {
        Some(ema) => ema.with_average(f),
        None => f(),
    }
}

/// `epoch 3: train loss 1.2345, validation loss 1.3456, image_to_text_r@1 0.123, …`
pub fn epoch_line(r: &EpochRecord) -> String {
    let recalls: String = r
        .metrics
        .iter()
        .filter(|(k, _)| k.ends_with("r@1"))
        .map(|(k, v)| format!(", {k} {v:.3}"))
        .collect();
    format!(
        "epoch {}: train loss {:.4}, validation loss {}{recalls}",
        r.epoch,
        r.train_loss,
        r.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
    )
}
