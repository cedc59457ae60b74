//! Training: one loop ([`run`]) and the models it trains, each a [`run::Trainer`]:
//!
//! | module | owns |
//! |---|---|
//! | [`run`] | the loop: fresh or resumed start, steps, validation, save points, summary; [`RunOptions`] |
//! | [`optim`] | AdamW, gradient clipping, the learning-rate schedule |
//! | [`checkpoint`] | `OUT/checkpoint/` written atomically, exact resume, refusing a different run |
//! | [`captioner`] | ClipCap: batch → next-token loss, validation loss |
//! | [`clip`] | contrastive CLIP: augmentation, batch → InfoNCE loss, retrieval recalls |
//! | [`bpe`] | byte-level BPE tokenizers for models trained from scratch |
//!
//! This file holds the small pieces both trainers use: seeded generators, the epoch order, the
//! validation split, the masked cross-entropy and weight snapshots.

pub mod bpe;
pub mod captioner;
pub mod checkpoint;
pub mod clip;
pub mod optim;
pub mod run;

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::models::cpu_kernels;

pub use checkpoint::Checkpoint;
pub use optim::{AdamW, Decay, Schedule, clip_grad_norm};
pub use run::{EpochRecord, RunOptions, TrainState, TrainSummary, Trainer};

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

/// Mean token cross-entropy of a bias-free head's logits `hidden (N, D) · weightᵀ` against
/// `targets` over the rows where `mask` is 1. On the CPU in f32 the logits and their gradient
/// never become a graph of logits-sized tensors ([`cpu_kernels::head_cross_entropy`]);
/// elsewhere the logits go through [`masked_cross_entropy`].
pub fn head_cross_entropy(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[u32],
    mask: &[f32],
) -> Result<Tensor> {
    let device = hidden.device();
    let count = mask.iter().sum::<f32>().max(1.0) as f64;
    let mask_t = Tensor::new(mask, device)?;
    if device.is_cpu() && hidden.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        let nll = cpu_kernels::head_cross_entropy(hidden, weight, targets)?;
        return Ok(((nll * mask_t)?.sum_all()? * (1.0 / count))?);
    }
    let logits = hidden.matmul(&weight.t()?)?;
    masked_cross_entropy(&logits, &Tensor::new(targets, device)?, &mask_t)
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

/// One timed training step: the loss (forced, so the forward pass is done), its gradients, the
/// AdamW update. Returns `[whole step, forward, backward, optimiser]` seconds.
pub fn timed_step(
    optimizer: &mut AdamW,
    step: usize,
    loss: impl FnOnce() -> Result<Tensor>,
) -> Result<[f64; 4]> {
    let start = std::time::Instant::now();
    let loss = loss()?;
    let _ = loss.to_scalar::<f32>()?;
    let forward = start.elapsed().as_secs_f64();
    let grads = loss.backward()?;
    let backward = start.elapsed().as_secs_f64();
    optimizer.step(&grads, 1e-5, step)?;
    let total = start.elapsed().as_secs_f64();
    Ok([total, forward, backward - forward, total - backward])
}

/// Median seconds of timed training steps: the whole step and its parts.
#[derive(Debug, serde::Serialize)]
pub struct StepTimes {
    /// Forward, backward and optimiser together.
    pub median_step_s: f64,
    /// The loss (forward), the gradients (backward), the AdamW update.
    pub median_forward_s: f64,
    pub median_backward_s: f64,
    pub median_optimizer_s: f64,
}

impl StepTimes {
    /// `times`: one `[whole step, forward, backward, optimiser]` a timed step.
    pub fn median_of(times: &[[f64; 4]]) -> Self {
        let [step, forward, backward, optimizer] = std::array::from_fn(|i| {
            let mut v: Vec<f64> = times.iter().map(|t| t[i]).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        });
        Self {
            median_step_s: step,
            median_forward_s: forward,
            median_backward_s: backward,
            median_optimizer_s: optimizer,
        }
    }
}

impl std::fmt::Display for StepTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median step {:.3} s (forward {:.3} s, backward {:.3} s, AdamW {:.3} s)",
            self.median_step_s,
            self.median_forward_s,
            self.median_backward_s,
            self.median_optimizer_s
        )
    }
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
    use candle_core::Device;

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
