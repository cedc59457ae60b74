//! The building blocks the transformer models share: linear layers, LayerNorm, multi-head
//! attention and the MLP, each loaded from checkpoint keys with checked shapes.
//!
//! Every layer serves inference and training. Inference uses fused kernels (candle's
//! `layer_norm` and `softmax_last_dim`, this crate's CPU kernels), which have no backward pass
//! and would silently give zero gradients; so as soon as a gradient can flow through a layer
//! (its input or its weights are tracked: `Tensor::track_op`) it switches to composed,
//! differentiable operations. Frozen weights under a tracked input (a frozen GPT-2 under a
//! trained prefix) go through [`FrozenLinear`], whose backward computes the input's gradient
//! only: candle's matmul backward would also compute the weight's, which nobody reads.

use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::cpu_kernels;
use super::weights::Scope;

/// `hidden_act` of a transformers config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Activation {
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// The exact, erf-based GELU (`nn.GELU()`).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::QuickGelu
                if xs.device().is_cpu() && xs.dtype() == DType::F32 && !xs.track_op() =>
            {
                xs.contiguous()?.apply_op1_no_bwd(&QuickGeluCpu)?
            }
            Activation::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Activation::Gelu => xs.gelu_erf()?,
            Activation::GeluTanh => xs.gelu()?,
            Activation::Relu => xs.relu()?,
        })
    }
}

/// `x · sigmoid(1.702 x)` in one parallel pass on the CPU. The composed version costs three
/// single-threaded passes and two temporaries, a quarter of ViT-B/32's time on two cores.
struct QuickGeluCpu;

impl candle_core::CustomOp1 for QuickGeluCpu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("quick-gelu: f32 only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quick-gelu: input must be contiguous")
        };
        let input = &data[start..end];
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(8192)
            .zip(input.par_chunks(8192))
            .for_each(|(o, i)| {
                for (o, &x) in o.iter_mut().zip(i) {
                    *o = x / (1.0 + (-1.702 * x).exp());
                }
            });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `y = x·Wᵀ + b`, with `Wᵀ` stored contiguous so every call is one plain matrix product over
/// all leading dimensions at once.
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Scope, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get("weight", &[out_dim, in_dim])?;
        let bias = w.get("bias", &[out_dim])?;
        Self::from_weights(weight, Some(bias))
    }

    pub fn load_no_bias(w: &Scope, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get("weight", &[out_dim, in_dim])?;
        Self::from_weights(weight, None)
    }

    /// `weight`: `(out, in)` as PyTorch stores it. A trainable weight is kept as a view of its
    /// variable (a copy would not see the optimiser's updates).
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight_t = if weight.track_op() {
            weight.t()?
        } else {
            weight.t()?.contiguous()?
        };
        Ok(Self { weight_t, bias })
    }

    /// Whether the weights are trained (then the layer cannot be fused with another).
    pub fn is_trainable(&self) -> bool {
        self.weight_t.track_op() || self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    /// Concatenates several layers reading the same input into one wider layer.
    pub fn fuse(layers: &[Linear]) -> Result<Self> {
        let ws: Vec<&Tensor> = layers.iter().map(|l| &l.weight_t).collect();
        let weight_t = Tensor::cat(&ws, 1)?;
        let bias = if layers.iter().all(|l| l.bias.is_some()) {
            let bs: Vec<&Tensor> = layers.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else if layers.iter().all(|l| l.bias.is_none()) {
            None
        } else {
            bail!("cannot fuse linear layers with and without bias");
        };
        Ok(Self { weight_t, bias })
    }

    pub fn out_dim(&self) -> usize {
        self.weight_t.dims()[1]
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = xs.elem_count() / in_dim.max(1);
        let xs2 = xs.reshape((rows, in_dim))?;
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == DType::F32;
        let ys = if !self.is_trainable() && cpu_f32 && xs.track_op() {
            xs2.contiguous()?.apply_op1(FrozenLinear {
                weight_t: self.weight_t.clone(),
                bias: self.bias.clone(),
            })?
        } else {
            match &self.bias {
                Some(b) if cpu_f32 && !self.is_trainable() => {
                    cpu_kernels::linear_bias(&xs2.contiguous()?, &self.weight_t, b)?
                }
                Some(b) => xs2.matmul(&self.weight_t)?.broadcast_add(b)?,
                None => xs2.matmul(&self.weight_t)?,
            }
        };
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.out_dim();
        Ok(ys.reshape(out_dims)?)
    }
}

/// `x·Wᵀ + b` with a frozen `W`: the forward pass is the fast kernel, the backward pass gives
/// the input's gradient `g·W` and nothing else.
struct FrozenLinear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl candle_core::CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("frozen-linear: f32 only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear: input must be contiguous")
        };
        let xs = Tensor::from_slice(&data[start..end], layout.shape(), &candle_core::Device::Cpu)?;
        let ys = match &self.bias {
            Some(b) => cpu_kernels::linear_bias(&xs, &self.weight_t, b)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            None => xs.matmul(&self.weight_t)?,
        };
        let shape = ys.shape().clone();
        Ok((
            candle_core::CpuStorage::F32(ys.flatten_all()?.to_vec1::<f32>()?),
            shape,
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight_t.t()?)?))
    }
}

/// Softmax over the last dimension: the fused kernel for inference, composed operations when a
/// gradient must flow (the shift by the row maximum is a constant for the gradient).
pub fn softmax_last(xs: &Tensor) -> Result<Tensor> {
    if !xs.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(xs)?);
    }
    let max = xs.max_keepdim(candle_core::D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(candle_core::D::Minus1)?;
    Ok(e.broadcast_div(&sum)?)
}

/// LayerNorm over the last dimension (candle's fused kernel for inference, composed for training).
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn load(w: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get("weight", &[dim])?,
            bias: w.get("bias", &[dim])?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() || self.weight.track_op() {
            let d = candle_core::D::Minus1;
            let mean = xs.mean_keepdim(d)?;
            let centred = xs.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(d)?;
            let normed = centred.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?;
            return Ok(normed
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)?);
        }
        Ok(candle_nn::ops::layer_norm(
            &xs.contiguous()?,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// Multi-head self-attention with `q_proj`, `k_proj`, `v_proj` (fused into one product) and
/// `out_proj`, queries scaled by `head_dim^-0.5` as transformers does.
pub struct Attention {
    /// One fused layer for inference; three when they are trained (see [`Linear::fuse`]).
    qkv: Vec<Linear>,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(w: &Scope, hidden: usize, heads: usize) -> Result<Self> {
        let q = Linear::load(&w.pp("q_proj"), hidden, hidden)?;
        let k = Linear::load(&w.pp("k_proj"), hidden, hidden)?;
        let v = Linear::load(&w.pp("v_proj"), hidden, hidden)?;
        let qkv = if q.is_trainable() {
            vec![q, k, v]
        } else {
            vec![Linear::fuse(&[q, k, v])?]
        };
        Ok(Self {
            qkv,
            out_proj: Linear::load(&w.pp("out_proj"), hidden, hidden)?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// `xs`: `(B, T, hidden)`; `causal` hides later positions from each query.
    pub fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, t, hidden) = xs.dims3()?;
        let (h, hd) = (self.heads, self.head_dim);
        let qkv = match self.qkv.as_slice() {
            [fused] => fused.forward(xs)?,
            parts => {
                let outs = parts
                    .iter()
                    .map(|l| l.forward(xs))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&outs, 2)?
            }
        };
        if xs.device().is_cpu() && xs.dtype() == DType::F32 && !qkv.track_op() {
            let out = cpu_kernels::attention(&qkv, h, causal)?;
            return self.out_proj.forward(&out);
        }
        let qkv = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
        let scale = (hd as f64).powf(-0.5);
        let q = (qkv.get(0)?.contiguous()? * scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?;
        let scores = if causal {
            scores.broadcast_add(&causal_mask(t, xs.device())?)?
        } else {
            scores
        };
        let probs = softmax_last(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, hidden))?;
        self.out_proj.forward(&out)
    }
}

/// `(T, T)`: 0 where a query may see a key, `-inf` above the diagonal.
fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}

/// `fc1 → activation → fc2`.
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub fn load(w: &Scope, hidden: usize, inter: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(&w.pp("fc1"), hidden, inter)?,
            fc2: Linear::load(&w.pp("fc2"), inter, hidden)?,
            act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.act.forward(&self.fc1.forward(xs)?)?;
        self.fc2.forward(&h)
    }
}
