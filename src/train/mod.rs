//! Training: what the captioner and CLIP trainers share.
//!
//! - [`AdamW`], with its moments saved in checkpoints;
//! - [`Schedule`]: linear warm-up, then linear or cosine decay;
//! - [`Checkpoint`]: `OUT/checkpoint/{model,optimizer}.safetensors` + `state.json`, written
//!   into a temporary folder and renamed into place, so a crash leaves the old checkpoint or the
//!   new one, never half of each;
//! - exact resume without saving random-generator state: the data order of epoch `e` and the
//!   random choices of step `s` are drawn from generators seeded by `(seed, e)` and `(seed, s)`.
//!
//! The trainers themselves ([`captioner`], [`clip`]) read top to bottom like nanoGPT's loop.

pub mod bpe;
pub mod captioner;
pub mod clip;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// AdamW (decoupled weight decay, bias-corrected moments), as `torch.optim.AdamW`.
pub struct AdamW {
    params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    /// Matrices decay; biases, LayerNorm gains, embeddings' 1-D vectors and scalars do not.
    decay: bool,
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], weight_decay: f64) -> Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                Ok(Param {
                    name: name.clone(),
                    var: var.clone(),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    decay: var.rank() >= 2,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One update at learning rate `lr`; `step` counts from 1. Parameters without a gradient
    /// (unused in this batch) are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64, step: usize) -> Result<()> {
        let bc1 = 1.0 - self.beta1.powi(step as i32);
        let bc2 = 1.0 - self.beta2.powi(step as i32);
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            p.m = ((&p.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            p.v = ((&p.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&p.m / bc1)? / ((&p.v / bc2)?.sqrt()? + self.eps)?)?;
            let mut theta = p.var.as_tensor().detach();
            if p.decay && self.weight_decay > 0.0 {
                theta = (theta * (1.0 - lr * self.weight_decay))?;
            }
            p.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// `m.NAME` and `v.NAME` of every parameter.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for p in &self.params {
            out.insert(format!("m.{}", p.name), p.m.clone());
            out.insert(format!("v.{}", p.name), p.v.clone());
        }
        out
    }

    pub fn load_state(&mut self, file: &Path, state: &HashMap<String, Tensor>) -> Result<()> {
        for p in &mut self.params {
            for (slot, key) in [(&mut p.m, "m"), (&mut p.v, "v")] {
                let name = format!("{key}.{}", p.name);
                let t = state.get(&name).with_context(|| {
                    format!("{}: optimiser state has no '{name}'", file.display())
                })?;
                if t.dims() != p.var.dims() {
                    bail!(
                        "{}: optimiser state '{name}' has shape {:?}, the parameter {:?}",
                        file.display(),
                        t.dims(),
                        p.var.dims()
                    );
                }
                *slot = t.to_dtype(DType::F32)?;
            }
        }
        Ok(())
    }
}

/// Scales every gradient so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, v) in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// How the learning rate moves with the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linear to zero at the last step (the ClipCap reference's scheduler).
    Linear,
    /// Half a cosine to zero (CLIP's).
    Cosine,
}

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
    pub decay: Decay,
}

impl Schedule {
    /// The learning rate of step `step` (counting from 1).
    pub fn lr(&self, step: usize) -> f64 {
        if step <= self.warmup && self.warmup > 0 {
            return self.peak * step as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let done = (step.saturating_sub(self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.peak * (1.0 - done),
            Decay::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
        }
    }
}

/// A generator for `(seed, what, index)`: the same numbers whether a run was resumed or not.
pub fn rng_for(seed: u64, what: &str, index: u64) -> rand::rngs::StdRng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(what.as_bytes());
    h.update(&index.to_le_bytes());
    let bytes: [u8; 32] = *h.finalize().as_bytes();
    rand::rngs::StdRng::from_seed(bytes)
}

/// The order in which epoch `epoch` visits `n` examples.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, "epoch", epoch as u64));
    order
}

/// A deterministic hold-out: which of `n` items are for validation.
pub fn validation_split(seed: u64, n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let order = {
        let mut o: Vec<usize> = (0..n).collect();
        o.shuffle(&mut rng_for(seed, "validation", 0));
        o
    };
    let n_val = ((n as f64 * fraction).round() as usize).min(n.saturating_sub(1));
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
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
    pub metrics: std::collections::BTreeMap<String, f64>,
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

/// `OUT/checkpoint`.
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    pub fn new(out: &Path) -> Self {
        Self {
            dir: out.join("checkpoint"),
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.join("state.json").is_file() || self.old_dir().join("state.json").is_file()
    }

    fn old_dir(&self) -> PathBuf {
        self.dir.with_extension("old")
    }

    /// Writes weights, optimiser moments and state into a fresh folder, then swaps it in.
    pub fn save(
        &self,
        weights: &HashMap<String, Tensor>,
        optimizer: &AdamW,
        state: &TrainState,
    ) -> Result<()> {
        let tmp = self.dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("{}: cannot create checkpoint folder", tmp.display()))?;
        candle_core::safetensors::save(weights, tmp.join("model.safetensors"))?;
        candle_core::safetensors::save(&optimizer.state(), tmp.join("optimizer.safetensors"))?;
        std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
        let old = self.old_dir();
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if self.dir.exists() {
            std::fs::rename(&self.dir, &old)?;
        }
        std::fs::rename(&tmp, &self.dir).with_context(|| {
            format!("{}: cannot move checkpoint into place", self.dir.display())
        })?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    /// The saved state, the path of the saved weights and the optimiser moments.
    pub fn load(&self, device: &Device) -> Result<(TrainState, PathBuf, HashMap<String, Tensor>)> {
        let dir = if self.dir.join("state.json").is_file() {
            self.dir.clone()
        } else if self.old_dir().join("state.json").is_file() {
            // A crash between the two renames: the previous checkpoint is whole.
            self.old_dir()
        } else {
            bail!(
                "{}: no checkpoint to resume from (no state.json); start without --resume",
                self.dir.display()
            );
        };
        let state_file = dir.join("state.json");
        let state: TrainState = serde_json::from_slice(
            &std::fs::read(&state_file)
                .with_context(|| format!("{}: cannot read", state_file.display()))?,
        )
        .with_context(|| format!("{}: not a training state", state_file.display()))?;
        let opt_file = dir.join("optimizer.safetensors");
        let opt = candle_core::safetensors::load(&opt_file, device)
            .with_context(|| format!("{}: cannot read optimiser state", opt_file.display()))?;
        Ok((state, dir.join("model.safetensors"), opt))
    }
}

/// Refuses to resume a run whose shaping options differ from the checkpoint's.
pub fn check_same_run(
    saved: &serde_json::Value,
    now: &serde_json::Value,
    dir: &Path,
) -> Result<()> {
    if saved != now {
        bail!(
            "{}: the checkpoint was made with other options ({saved}); resume with the same \
             options ({now}) or start a new --out folder",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses to start a new run over a folder that already holds one.
pub fn check_fresh_out(out: &Path) -> Result<()> {
    if Checkpoint::new(out).exists() {
        bail!(
            "{}: holds a training run already; pass --resume to continue it or choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create output folder", out.display()))
}

/// Mean token cross-entropy of `logits` `(N, V)` against `targets` `(N,)` over rows where `mask`
/// `(N,)` is 1, built from differentiable operations.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let count = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    Ok(((picked * mask)?.sum_all()? * (-1.0 / count))?)
}

/// A progress bar for `total` steps showing loss, learning rate and throughput.
pub fn progress_bar(total: usize, done: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg} (eta {eta})",
        )
        .expect("valid progress template"),
    );
    pb.set_position(done as u64);
    pb
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub finished: bool,
    pub history: Vec<EpochRecord>,
    pub seconds: f64,
}

/// What a trainer does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStep {
    Continue,
    /// Write a checkpoint (an epoch ended, or `--save-every` steps passed).
    Save,
    /// Write a checkpoint and stop (`--stop-after`).
    SaveAndStop,
}

/// The bookkeeping both trainers share after each optimiser step: the epoch's running loss,
/// the progress bar, the per-epoch record with validation numbers, and when to checkpoint.
pub struct StepLog {
    pb: indicatif::ProgressBar,
    epoch_started: std::time::Instant,
    window: (std::time::Instant, usize),
    save_every: usize,
    stop_after: Option<usize>,
    quiet: bool,
}

impl StepLog {
    pub fn new(
        state: &TrainState,
        quiet: bool,
        save_every: usize,
        stop_after: Option<usize>,
    ) -> Self {
        let pb = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            progress_bar(state.total_steps, state.step)
        };
        Self {
            pb,
            epoch_started: std::time::Instant::now(),
            window: (std::time::Instant::now(), 0),
            save_every,
            stop_after,
            quiet,
        }
    }

    /// Records step `state.step + 1` with its loss, learning rate and batch size; at an epoch's
    /// end `validate` gives the validation loss and metrics of the epoch's record.
    pub fn record(
        &mut self,
        state: &mut TrainState,
        loss: f64,
        lr: f64,
        samples: usize,
        validate: impl FnOnce() -> Result<(Option<f64>, std::collections::BTreeMap<String, f64>)>,
    ) -> Result<AfterStep> {
        let step = state.step + 1;
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {step}; try a lower --lr");
        }
        state.step = step;
        state.epoch_loss_sum += loss;
        state.epoch_loss_count += 1;
        self.window.1 += samples;
        let rate = self.window.1 as f64 / self.window.0.elapsed().as_secs_f64().max(1e-9);
        self.pb.set_position(step as u64);
        self.pb
            .set_message(format!("loss {loss:.3} lr {lr:.2e} {rate:.0} samples/s"));
        let end_of_epoch = step.is_multiple_of(state.steps_per_epoch);
        if end_of_epoch {
            let (val_loss, metrics) = validate()?;
            let record = EpochRecord {
                epoch: step / state.steps_per_epoch,
                step,
                train_loss: state.epoch_loss_sum / state.epoch_loss_count.max(1) as f64,
                val_loss,
                metrics,
                seconds: self.epoch_started.elapsed().as_secs_f64(),
            };
            let recalls: String = record
                .metrics
                .iter()
                .filter(|(k, _)| k.ends_with("r@1"))
                .map(|(k, v)| format!(", {k} {v:.3}"))
                .collect();
            if !self.quiet {
                say(
                    &self.pb,
                    format!(
                        "epoch {}: train loss {:.4}, validation loss {}{recalls}",
                        record.epoch,
                        record.train_loss,
                        record.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
                    ),
                );
            }
            state.history.push(record);
            state.epoch_loss_sum = 0.0;
            state.epoch_loss_count = 0;
            self.epoch_started = std::time::Instant::now();
            self.window = (std::time::Instant::now(), 0);
        }
        Ok(if self.stop_after == Some(step) {
            AfterStep::SaveAndStop
        } else if end_of_epoch || (self.save_every > 0 && step.is_multiple_of(self.save_every)) {
            AfterStep::Save
        } else {
            AfterStep::Continue
        })
    }

    /// Ends the bar; the summary of the run so far.
    pub fn summary(self, state: &TrainState, started: std::time::Instant) -> TrainSummary {
        let finished = state.step >= state.total_steps;
        if finished {
            self.pb.finish_and_clear();
        } else {
            self.pb.abandon_with_message(format!(
                "stopped after step {} (checkpoint saved)",
                state.step
            ));
        }
        TrainSummary {
            steps: state.step,
            finished,
            history: state.history.clone(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// A line for the log: above the progress bar, or on stderr when there is no bar (not a
/// terminal), so that logs of unattended runs keep the per-epoch lines.
pub fn say(pb: &indicatif::ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// Writes the weights as `model.safetensors` in `dir` atomically.
pub fn save_weights(dir: &Path, weights: &HashMap<String, Tensor>) -> Result<()> {
    let path = dir.join("model.safetensors");
    let tmp = dir.join(format!("model.safetensors.{}.tmp", std::process::id()));
    candle_core::safetensors::save(weights, &tmp)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// The current values of variables and frozen tensors by checkpoint key.
pub fn snapshot(
    vars: &[(String, Var)],
    frozen: &HashMap<String, Tensor>,
) -> HashMap<String, Tensor> {
    let mut out = frozen.clone();
    for (n, v) in vars {
        out.insert(n.clone(), v.as_tensor().detach());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = Schedule {
            peak: 1.0,
            warmup: 10,
            total: 110,
            decay: Decay::Linear,
        };
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr(60) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // With bias correction the first step is lr·sign(g) (up to eps).
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let loss = (var.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(&[("w".into(), var.clone())], 0.0).unwrap();
        opt.step(&grads, 0.1, 1).unwrap();
        let v = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] + 2.1).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn cross_entropy_matches_hand_value() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0.0f32, 0.0], [2.0, 0.0]], &dev).unwrap();
        let targets = Tensor::new(&[0u32, 1], &dev).unwrap();
        let mask = Tensor::new(&[1.0f32, 0.0], &dev).unwrap();
        let l = masked_cross_entropy(&logits, &targets, &mask)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
