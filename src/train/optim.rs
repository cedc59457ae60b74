//! The optimiser side of training: [`AdamW`] (its moments saved in checkpoints), the weights'
//! moving average [`Ema`], global gradient-norm clipping, and the learning-rate [`Schedule`]
//! (linear warm-up, then linear or cosine decay).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;
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
            if g.device().is_cpu() && g.dtype() == DType::F32 {
                let decay = if p.decay { self.weight_decay } else { 0.0 };
                let h = Hyper {
                    beta1: self.beta1 as f32,
                    beta2: self.beta2 as f32,
                    bc1: bc1 as f32,
                    bc2: bc2 as f32,
                    eps: self.eps as f32,
                    lr: lr as f32,
                    shrink: (1.0 - lr * decay) as f32,
                };
                fused_step(p, g, &h)?;
                continue;
            }
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
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            // Copies: the moments are updated in place by the next step.
            out.insert(format!("m.{}", p.name), p.m.copy()?);
            out.insert(format!("v.{}", p.name), p.v.copy()?);
        }
        Ok(out)
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
                // A copy of its own: the moments are updated in place.
                *slot = t.to_dtype(DType::F32)?.copy()?;
            }
        }
        Ok(())
    }
}

/// An exponential moving average of the trained weights (`--ema DECAY`): validation and the
/// saved model use it, while training goes on with the raw weights. Its decay warms up as
/// `min(decay, (1 + step) / (10 + step))`, so the random initial weights are forgotten within
/// the first steps rather than dragged along for `1 / (1 − decay)` of them.
pub struct Ema {
    pub decay: f64,
    shadow: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// Starts at the variables' current values.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.clone(), var.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    /// The decay used after optimiser step `step` (counting from 1).
    pub fn decay_at(&self, step: usize) -> f64 {
        self.decay.min((1.0 + step as f64) / (10.0 + step as f64))
    }

    /// `shadow ← d·shadow + (1 − d)·θ` after optimiser step `step`.
    pub fn update(&mut self, step: usize) -> Result<()> {
        let d = self.decay_at(step);
        for (_, var, shadow) in &mut self.shadow {
            let theta = var.as_tensor();
            if theta.device().is_cpu() && theta.dtype() == DType::F32 {
                // The same in-place pass as AdamW's first moment, with θ for the gradient.
                shadow.inplace_op2(
                    &theta.contiguous()?,
                    &Moment {
                        beta: d as f32,
                        square: false,
                    },
                )?;
            } else {
                *shadow = ((&*shadow * d)? + (theta.detach() * (1.0 - d))?)?;
            }
        }
        Ok(())
    }

    /// Runs `f` with the averaged weights in the variables, then puts the trained ones back.
    pub fn with_average<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let trained: Vec<Tensor> = self
            .shadow
            .iter()
            .map(|(_, var, _)| var.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        for (_, var, shadow) in &self.shadow {
            var.set(shadow)?;
        }
        let result = f();
        for ((_, var, _), t) in self.shadow.iter().zip(&trained) {
            var.set(t)?;
        }
        result
    }

    /// `ema.NAME` of every parameter, for the checkpoint.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.shadow
            .iter()
            .map(|(name, _, t)| Ok((format!("ema.{name}"), t.copy()?)))
            .collect()
    }

    pub fn load_state(&mut self, file: &Path, state: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var, slot) in &mut self.shadow {
            let key = format!("ema.{name}");
            let t = state.get(&key).with_context(|| {
                format!(
                    "{}: the checkpoint has no '{key}' (was the run started without --ema?)",
                    file.display()
                )
            })?;
            if t.dims() != var.dims() {
                bail!(
                    "{}: '{key}' has shape {:?}, the parameter {:?}",
                    file.display(),
                    t.dims(),
                    var.dims()
                );
            }
            *slot = t.to_dtype(var.dtype())?.copy()?;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One step's constants, in f32 as the tensors are.
struct Hyper {
    beta1: f32,
    beta2: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
    lr: f32,
    shrink: f32,
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adamw: contiguous f32 tensors only"),
    }
}

fn cpu_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adamw: contiguous f32 tensors only"),
    }
}

const CHUNK: usize = 8192;

/// `m ← β·m + (1 − β)·g` (or `g²`), in place.
struct Moment {
    beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let (m, g) = (cpu_f32_mut(dst, dst_l)?, cpu_f32(g, gl)?);
        if m.len() != g.len() {
            candle_core::bail!(
                "adamw: moment of {} values, gradient of {}",
                m.len(),
                g.len()
            );
        }
        let (beta, square) = (self.beta, self.square);
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = if square { g * g } else { g };
                    *m = *m * beta + g * (1.0 - beta);
                }
            });
        Ok(())
    }
}

/// `θ ← θ·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)`, in place.
struct Update<'a>(&'a Hyper);

impl InplaceOp3 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let (theta, m, v) = (cpu_f32_mut(dst, dst_l)?, cpu_f32(m, ml)?, cpu_f32(v, vl)?);
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("adamw: parameter and moments differ in size");
        }
        let h = self.0;
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((theta, m), v)| {
                for ((theta, &m), &v) in theta.iter_mut().zip(m).zip(v) {
                    let update = (m / h.bc1) / ((v / h.bc2).sqrt() + h.eps);
                    *theta = *theta * h.shrink - update * h.lr;
                }
            });
        Ok(())
    }
}

/// The AdamW update of one parameter in place: three parallel passes, no temporaries (the
/// composed version is nine single-threaded passes with a fresh tensor each: a tenth of a
/// ClipCap step whose mapper has 31 M parameters, more with GPT-2's 124 M).
fn fused_step(p: &mut Param, g: &Tensor, h: &Hyper) -> Result<()> {
    let g = g.contiguous()?;
    p.m.inplace_op2(
        &g,
        &Moment {
            beta: h.beta1,
            square: false,
        },
    )?;
    p.v.inplace_op2(
        &g,
        &Moment {
            beta: h.beta2,
            square: true,
        },
    )?;
    p.var.as_tensor().inplace_op3(&p.m, &p.v, &Update(h))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
    fn ema_averages_and_swaps_back() {
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![0.0f32, 4.0], 2, &dev).unwrap();
        let mut ema = Ema::new(&[("w".into(), var.clone())], 0.5).unwrap();
        var.set(&Tensor::new(&[2.0f32, 0.0], &dev).unwrap())
            .unwrap();
        // Step 1: the warm-up decay 2/11 is below 0.5.
        ema.update(1).unwrap();
        let d = 2.0 / 11.0;
        let want = [2.0 * (1.0 - d), 4.0 * d];
        let seen = ema
            .with_average(|| Ok(var.as_tensor().to_vec1::<f32>()?))
            .unwrap();
        for (s, w) in seen.iter().zip(want) {
            assert!((*s as f64 - w).abs() < 1e-6, "{seen:?} vs {want:?}");
        }
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [2.0, 0.0]);
        // Late steps use the decay itself.
        assert_eq!(ema.decay_at(1000), 0.5);
        // State round trip.
        let state = ema.state().unwrap();
        let mut other = Ema::new(&[("w".into(), var.clone())], 0.5).unwrap();
        other.load_state(Path::new("x"), &state).unwrap();
        let back = other
            .with_average(|| Ok(var.as_tensor().to_vec1::<f32>()?))
            .unwrap();
        assert_eq!(back, seen);
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
}
