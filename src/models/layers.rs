//! The building blocks the transformer models share: linear layers, LayerNorm, multi-head
//! attention and the MLP, each loaded from checkpoint keys with checked shapes.
//!
//! Every layer serves inference and training. On the CPU in f32, LayerNorm, the activations,
//! attention and the head's cross-entropy run this crate's fused kernels (`cpu_kernels`), each
//! with its own backward pass; elsewhere (CUDA, other dtypes) they are composed from candle's
//! differentiable ops, except at inference where candle's fused `layer_norm` and softmax serve.
//! Linear layers use a bias-fused gemm without a backward pass, so a trained weight goes
//! through candle's matmul; frozen weights under a tracked input (a frozen GPT-2 under a trained
//! prefix) go through `cpu_kernels::frozen_linear_bias`, whose backward computes the input's
//! gradient only: candle's matmul backward would also compute the weight's. Weights loaded for
//! bf16 or int8 inference on a CPU (`Weights::with_precision`) pack each frozen layer for the
//! bf16 product of `reduced_precision` or the int8 product of `int8` once, at load (fc1 then
//! applies its activation inside the product, and `out_proj` and fc2 add the residual there);
//! in f32 on a CPU with AVX-512, each frozen layer's first inference call packs it for the
//! same product in f32 (`reduced_precision::PackedF32`); on a GPU, f16 and bf16 weights are
//! plain tensors of that type and every layer takes the composed path.

use std::sync::{Arc, OnceLock};

use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::cpu_kernels;
use super::int8::PackedInt8;
use super::reduced_precision::{self, PackedBf16, PackedF32, Precision};
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
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == DType::F32;
        Ok(match self {
            Activation::QuickGelu if cpu_f32 => {
                cpu_kernels::activation(xs, cpu_kernels::Act::QuickGelu)?
            }
            Activation::GeluTanh if cpu_f32 => {
                cpu_kernels::activation(xs, cpu_kernels::Act::GeluTanh)?
            }
            Activation::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Activation::Gelu => xs.gelu_erf()?,
            Activation::GeluTanh => xs.gelu()?,
            Activation::Relu => xs.relu()?,
        })
    }
}

/// `y = x·Wᵀ + b`, with `Wᵀ` stored contiguous so every call is one plain matrix product over
/// all leading dimensions at once.
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
    /// A trained weight as its variable stores it, and whether that is `Wᵀ` `(in, out)`
    /// (see [`cpu_kernels::trained_linear`]).
    trained: Option<(Tensor, bool)>,
    /// `W` `(out, in)` contiguous for the backward pass of a frozen layer, made on first use
    /// (see [`cpu_kernels::frozen_linear_bias`]): only training pays for the copy.
    weight: Arc<OnceLock<Tensor>>,
    /// The weight packed for reduced-precision products, when the weights were loaded for
    /// bf16 or int8 inference on a CPU.
    packed: Option<Packed>,
    /// In f32, the weight packed for the hand-written f32 product on AVX-512, made by the
    /// first inference call (see [`Linear::packed_for`]): a frozen layer under a tracked input
    /// (training) never pays for the copy.
    packed_f32: Arc<OnceLock<Option<Arc<PackedF32>>>>,
}

/// A frozen layer's weight packed for a CPU product in reduced precision.
#[derive(Clone)]
enum Packed {
    F32(Arc<PackedF32>),
    Bf16(Arc<PackedBf16>),
    Int8(Arc<PackedInt8>),
}

impl Linear {
    pub fn load(w: &Scope, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get("weight", &[out_dim, in_dim])?;
        let bias = w.get("bias", &[out_dim])?;
        Self::from_weights(weight, Some(bias))?.in_precision(w.precision())
    }

    pub fn load_no_bias(w: &Scope, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get("weight", &[out_dim, in_dim])?;
        Self::from_weights(weight, None)?.in_precision(w.precision())
    }

    /// Packs a frozen f32 layer on the CPU for `precision`'s products (a trained layer stays
    /// f32; on a GPU the weight's own type is the precision).
    pub fn in_precision(mut self, precision: Precision) -> Result<Self> {
        self.packed = None;
        self.packed_f32 = Arc::default();
        let cpu_f32 = self.weight_t.device().is_cpu() && self.weight_t.dtype() == DType::F32;
        let reduced = matches!(precision, Precision::Bf16 | Precision::Int8);
        if reduced && cpu_f32 && !self.is_trainable() {
            let (in_dim, out_dim) = self.weight_t.dims2()?;
            let w = self
                .weight_t
                .t()?
                .contiguous()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let b = match &self.bias {
                Some(b) => Some(b.to_vec1::<f32>()?),
                None => None,
            };
            self.packed = Some(if precision == Precision::Int8 {
                Packed::Int8(Arc::new(PackedInt8::pack(
                    &w,
                    b.as_deref(),
                    out_dim,
                    in_dim,
                )?))
            } else {
                Packed::Bf16(Arc::new(PackedBf16::pack(
                    &w,
                    b.as_deref(),
                    out_dim,
                    in_dim,
                )?))
            });
        }
        Ok(self)
    }

    /// What this layer's products compute in.
    pub fn precision(&self) -> Precision {
        match self.packed {
            Some(Packed::Bf16(_)) => Precision::Bf16,
            Some(Packed::Int8(_)) => Precision::Int8,
            Some(Packed::F32(_)) | None => Precision::F32,
        }
    }

    /// `weight`: `(out, in)` as PyTorch stores it. A trainable weight is kept as a view of its
    /// variable (a copy would not see the optimiser's updates).
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (weight_t, trained) = if weight.track_op() {
            (weight.t()?, Some((weight, false)))
        } else {
            (weight.t()?.contiguous()?, None)
        };
        Ok(Self {
            weight_t,
            bias,
            trained,
            weight: Arc::default(),
            packed: None,
            packed_f32: Arc::default(),
        })
    }

    /// `weight_t`: `(in, out)`, as GPT-2's `Conv1D` stores it.
    pub fn from_transposed(weight_t: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (weight_t, trained) = if weight_t.track_op() {
            (weight_t.clone(), Some((weight_t, true)))
        } else {
            (weight_t.contiguous()?, None)
        };
        Ok(Self {
            weight_t,
            bias,
            trained,
            weight: Arc::default(),
            packed: None,
            packed_f32: Arc::default(),
        })
    }

    /// Whether the weights are trained (then the layer cannot be fused with another).
    pub fn is_trainable(&self) -> bool {
        self.weight_t.track_op() || self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    /// Concatenates several layers reading the same input into one wider layer.
    pub fn fuse(layers: &[Linear]) -> Result<Self> {
        if layers.iter().any(Linear::is_trainable) {
            bail!("cannot fuse trained linear layers (each keeps its own variable)");
        }
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
        let precision = layers.first().map_or(Precision::F32, Linear::precision);
        if layers.iter().any(|l| l.precision() != precision) {
            bail!("cannot fuse linear layers of different precisions");
        }
        Self {
            weight_t,
            bias,
            trained: None,
            weight: Arc::default(),
            packed: None,
            packed_f32: Arc::default(),
        }
        .in_precision(precision)
    }

    pub fn out_dim(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// The packed product that serves `xs`, if any: none for an input that carries a gradient or
    /// is not f32 on the CPU; else the bf16 or int8 product packed at load, or in f32 on a CPU
    /// with AVX-512 the f32 one, packed by the first call (it runs at 214–221 GFLOP/s on
    /// ViT-B/32's shapes where the `gemm` crate's runs at 206–217, and like the others adds
    /// the bias, fc1's activation and the residual to each tile while it is in cache).
    fn packed_for(&self, xs: &Tensor) -> Option<Packed> {
        if !xs.device().is_cpu() || xs.dtype() != DType::F32 || xs.track_op() {
            return None;
        }
        if let Some(packed) = &self.packed {
            return Some(packed.clone());
        }
        let frozen_cpu_f32 = !self.is_trainable()
            && self.weight_t.device().is_cpu()
            && self.weight_t.dtype() == DType::F32;
        if !frozen_cpu_f32 || !reduced_precision::f32_packed_available() {
            return None;
        }
        let packed = self.packed_f32.get_or_init(|| {
            let (in_dim, out_dim) = self.weight_t.dims2().ok()?;
            let w = self.weight_t.t().ok()?.contiguous().ok()?;
            let w = w.flatten_all().ok()?.to_vec1::<f32>().ok()?;
            let b = match &self.bias {
                Some(b) => Some(b.to_vec1::<f32>().ok()?),
                None => None,
            };
            PackedF32::pack(&w, b.as_deref(), out_dim, in_dim)
                .ok()
                .map(Arc::new)
        });
        packed.clone().map(Packed::F32)
    }

    /// `act(forward(xs))`: in one pass where the layer is packed for a reduced-precision
    /// product and the activation has a fused kernel (the product applies it to its tiles while
    /// they are in cache), else as two steps.
    pub fn forward_activated(&self, xs: &Tensor, act: Activation) -> Result<Tensor> {
        let fused = match act {
            Activation::QuickGelu => Some(cpu_kernels::Act::QuickGelu),
            Activation::GeluTanh => Some(cpu_kernels::Act::GeluTanh),
            Activation::Gelu | Activation::Relu => None,
        };
        let (Some(packed), Some(_)) = (self.packed_for(xs), fused) else {
            return act.forward(&self.forward(xs)?);
        };
        let dims = xs.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let xs2 = xs.reshape((xs.elem_count() / in_dim.max(1), in_dim))?;
        let ys = match &packed {
            Packed::F32(w) => reduced_precision::packed_linear(&xs2, w, fused)?,
            Packed::Bf16(w) => reduced_precision::packed_linear(&xs2, w, fused)?,
            Packed::Int8(w) => reduced_precision::packed_linear(&xs2, w, fused)?,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.out_dim();
        Ok(ys.reshape(out_dims)?)
    }

    /// `residual + forward(xs)`: in one pass where the layer is packed for a reduced-precision
    /// product (it adds the residual to each finished tile while the tile is in cache; the
    /// same values to the bit), else as two steps.
    pub fn forward_plus(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let residual_ok =
            residual.device().is_cpu() && residual.dtype() == DType::F32 && !residual.track_op();
        let packed = self.packed_for(xs).filter(|_| residual_ok);
        let Some(packed) = packed else {
            return Ok((residual + self.forward(xs)?)?);
        };
        let in_dim = *xs.dims().last().unwrap_or(&0);
        let rows = xs.elem_count() / in_dim.max(1);
        let xs2 = xs.reshape((rows, in_dim))?;
        let res2 = residual.reshape((rows, self.out_dim()))?;
        let ys = match &packed {
            Packed::F32(w) => reduced_precision::packed_linear_plus(&xs2, &res2, w)?,
            Packed::Bf16(w) => reduced_precision::packed_linear_plus(&xs2, &res2, w)?,
            Packed::Int8(w) => reduced_precision::packed_linear_plus(&xs2, &res2, w)?,
        };
        Ok(ys.reshape(residual.dims())?)
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = xs.elem_count() / in_dim.max(1);
        let xs2 = xs.reshape((rows, in_dim))?;
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == DType::F32;
        let bias_or_zeros = || -> Result<Tensor> {
            Ok(match &self.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(self.out_dim(), DType::F32, xs.device())?,
            })
        };
        let packed = self.packed_for(xs);
        let ys = if let Some(Packed::F32(w)) = &packed {
            reduced_precision::packed_linear(&xs2, w, None)?
        } else if let Some(Packed::Bf16(w)) = &packed {
            reduced_precision::packed_linear(&xs2, w, None)?
        } else if let Some(Packed::Int8(w)) = &packed {
            reduced_precision::packed_linear(&xs2, w, None)?
        } else if let (Some((p, stored_t)), true) = (&self.trained, cpu_f32) {
            cpu_kernels::trained_linear(&xs2, p, &bias_or_zeros()?, *stored_t)?
        } else if !self.is_trainable() && cpu_f32 && xs.track_op() {
            cpu_kernels::frozen_linear_bias(&xs2, &self.weight_t, &bias_or_zeros()?, &self.weight)?
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

/// LayerNorm over the last dimension (see the module comment for which kernel runs where).
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
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return Ok(cpu_kernels::layer_norm(
                xs,
                &self.weight,
                &self.bias,
                self.eps,
            )?);
        }
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
        self.out_proj.forward(&self.mix(xs, causal)?)
    }

    /// `residual + forward(xs, causal)`, the residual added by `out_proj`
    /// ([`Linear::forward_plus`]).
    pub fn forward_plus(&self, xs: &Tensor, residual: &Tensor, causal: bool) -> Result<Tensor> {
        self.out_proj.forward_plus(&self.mix(xs, causal)?, residual)
    }

    /// `residual` plus the output at a few positions only, `(N, hidden)`: `rows` indexes the
    /// `B·T` positions of `xs` flattened, `residual` is `(N, hidden)`. What a tower that pools
    /// one token needs of its last layer: every position still attends (keys and values), but
    /// only the pooled ones go through `out_proj`.
    pub fn forward_rows_plus(
        &self,
        xs: &Tensor,
        rows: &Tensor,
        residual: &Tensor,
        causal: bool,
    ) -> Result<Tensor> {
        let (b, t, hidden) = xs.dims3()?;
        let mixed = self.mix(xs, causal)?.reshape((b * t, hidden))?;
        self.out_proj
            .forward_plus(&mixed.index_select(rows, 0)?, residual)
    }

    /// The heads' outputs side by side, before `out_proj`.
    fn mix(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
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
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return Ok(cpu_kernels::attention(&qkv, h, causal)?);
        }
        let qkv = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
        let scale = (hd as f64).powf(-0.5);
        let q = (qkv.get(0)?.contiguous()? * scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?;
        let scores = if causal {
            scores.broadcast_add(&causal_mask(t, xs.device())?.to_dtype(scores.dtype())?)?
        } else {
            scores
        };
        let probs = softmax_last(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, hidden))?;
        Ok(out)
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
        let h = self.fc1.forward_activated(xs, self.act)?;
        self.fc2.forward(&h)
    }

    /// `residual + forward(xs)`, the residual added by `fc2` ([`Linear::forward_plus`]).
    pub fn forward_plus(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward_activated(xs, self.act)?;
        self.fc2.forward_plus(&h, residual)
    }
}
