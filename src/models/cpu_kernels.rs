//! CPU fast paths, as candle custom ops. Each replaces several generic candle ops whose separate
//! passes, temporaries and per-call thread synchronisation cost more than the arithmetic on a
//! 2-core machine:
//!
//! - [`linear_bias`]: `x·Wᵀ + b` as one gemm call that starts from the bias rows (inference);
//! - [`attention`]: multi-head attention straight from the fused `qkv` projection (by
//!   `short_attention`'s kernel on AVX-512, else with the `gemm` crate, one batch element per
//!   task), with no transposed copies of q, k, v or the output, and a backward pass
//!   that recomputes the (T × T) softmax;
//! - [`trained_linear`]: `x·Wᵀ` of a trained weight read in the layout it is stored in, so that
//!   neither pass multiplies by a transposed view whose gradient then has to be transposed back;
//! - [`head_cross_entropy`]: a language-model head's logits and their cross-entropy in one pass,
//!   with a backward pass (training);
//! - [`layer_norm`] and [`activation`] (GELU's tanh form, quick GELU): one parallel pass each
//!   way. Composed from candle ops for training, a LayerNorm is ~9 single-threaded passes
//!   forward and ~20 backward, and GELU's backward ~12 (through `powf` and `tanh`), each with a
//!   fresh temporary: most of a GPT-2 training step that is not a matrix product.
//!
//! [`linear_bias`] has no backward pass: it serves inference only (see `layers::Linear`).

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail,
};
use gemm::{Parallelism, gemm};

use super::vector_math;
use rayon::prelude::*;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{what}: f32 only")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: input must be contiguous")
    };
    Ok(&data[a..b])
}

fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `bias + x · Wᵀ` for `x` `(rows, k)` row-major and `Wᵀ` `(k, n)` read through strides
/// (`rhs_cs` between its columns, `rhs_rs` between its rows): one gemm that starts from the bias
/// rows instead of adding them in a second pass.
fn gemm_from_bias(
    x: &[f32],
    (rows, k, n): (usize, usize, usize),
    w_t: &[f32],
    (rhs_cs, rhs_rs): (isize, isize),
    bias: &[f32],
) -> Vec<f32> {
    let mut dst: Vec<f32> = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        dst.extend_from_slice(bias);
    }
    // SAFETY: the callers check x (rows·k), bias (n) and the extent of Wᵀ's strides (k·n).
    unsafe {
        gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            w_t.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            threads(),
        );
    }
    dst
}

/// `x·Wᵀ + b`. With `frozen_weight` it has a backward pass for the input only (the weight and
/// bias are frozen): `g·W`, over `W` `(out, in)` made contiguous on first use (the same product
/// over the transposed view of `Wᵀ` runs ~30 % slower), shared by every call of the layer.
struct LinearBias {
    frozen_weight: Option<Arc<OnceLock<Tensor>>>,
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "linear-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, xl, "linear")?;
        let w = contiguous_f32(w, wl, "linear")?;
        let b = contiguous_f32(b, bl, "linear")?;
        let (rows, k) = xl.shape().dims2()?;
        let (k2, n) = wl.shape().dims2()?;
        if k != k2 || b.len() != n {
            bail!("linear: shapes ({rows}, {k}) x ({k2}, {n}) + ({})", b.len());
        }
        let dst = gemm_from_bias(x, (rows, k, n), w, (1, n as isize), b);
        Ok((CpuStorage::F32(dst), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w_t: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(cell) = &self.frozen_weight else {
            bail!("linear-bias: no backward pass for a trained weight")
        };
        let weight = match cell.get() {
            Some(w) => w,
            None => {
                let w = w_t.t()?.contiguous()?;
                cell.get_or_init(|| w)
            }
        };
        Ok((Some(grad.matmul(weight)?), None, None))
    }
}

/// `x (rows, in) · w_t (in, out) + bias (out)`, all contiguous f32 on the CPU. No backward pass.
pub fn linear_bias(x: &Tensor, w_t: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(
        w_t,
        bias,
        &LinearBias {
            frozen_weight: None,
        },
    )
}

/// `x · Wᵀ + b` with a trained weight `p`, stored as `W` `(out, in)` (PyTorch's `nn.Linear`) or,
/// with `stored_transposed`, as `Wᵀ` `(in, out)` (GPT-2's `Conv1D`). The gradient of `p` comes
/// out in its own layout (`gᵀ·x` or `xᵀ·g`), so candle never accumulates a transposed copy into
/// it, and the bias's gradient (the column sums of `g`) is one parallel pass rather than
/// candle's single-threaded reduction over rows.
struct TrainedLinear {
    stored_transposed: bool,
}

impl CustomOp3 for TrainedLinear {
    fn name(&self) -> &'static str {
        "trained-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "linear")?;
        let p = contiguous_f32(ps, pl, "linear")?;
        let bias = contiguous_f32(bs, bl, "linear")?;
        let (rows, k) = xl.shape().dims2()?;
        let (a, b) = pl.shape().dims2()?;
        let (k2, n) = if self.stored_transposed {
            (a, b)
        } else {
            (b, a)
        };
        if k != k2 || bias.len() != n {
            bail!(
                "linear: input ({rows}, {k}), weight {:?}, bias {}",
                pl.shape(),
                bias.len()
            );
        }
        // Wᵀ's element (i, j): stored (in, out) at i·n + j, stored (out, in) at j·k + i.
        let (rhs_cs, rhs_rs) = if self.stored_transposed {
            (1, n as isize)
        } else {
            (k as isize, 1)
        };
        let dst = gemm_from_bias(x, (rows, k, n), p, (rhs_cs, rhs_rs), bias);
        Ok((CpuStorage::F32(dst), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            let w = if self.stored_transposed {
                p.t()?
            } else {
                p.clone()
            };
            Some(grad.matmul(&w)?)
        } else {
            None
        };
        let dp = if self.stored_transposed {
            x.t()?.matmul(grad)?
        } else {
            grad.t()?.matmul(x)?
        };
        let db = if bias.track_op() {
            let n = bias.elem_count();
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            let sums = g
                .par_chunks(n * ROWS_PER_TASK)
                .map(|rows| {
                    let mut s = vec![0f32; n];
                    for row in rows.chunks(n) {
                        s.iter_mut().zip(row).for_each(|(s, g)| *s += g);
                    }
                    s
                })
                .reduce(
                    || vec![0f32; n],
                    |mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                        a
                    },
                );
            Some(Tensor::from_vec(sums, n, bias.device())?)
        } else {
            None
        };
        Ok((dx, Some(dp), db))
    }
}

/// `x (rows, in) · Wᵀ + bias` for a trained weight `p`: `W` `(out, in)`, or `Wᵀ` `(in, out)`
/// when `stored_transposed`. Differentiable in all three. CPU, f32.
pub fn trained_linear(
    x: &Tensor,
    p: &Tensor,
    bias: &Tensor,
    stored_transposed: bool,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(p, bias, TrainedLinear { stored_transposed })
}

/// [`linear_bias`] of a frozen layer under an input that needs a gradient: the backward pass
/// gives the input's gradient `g·W` and nothing else (candle's matmul backward would also
/// compute the weight's, which nobody reads). `weight` caches `W` for the backward pass.
pub fn frozen_linear_bias(
    x: &Tensor,
    w_t: &Tensor,
    bias: &Tensor,
    weight: &Arc<OnceLock<Tensor>>,
) -> Result<Tensor> {
    let op = LinearBias {
        frozen_weight: Some(weight.clone()),
    };
    x.contiguous()?.apply_op3(w_t, bias, op)
}

/// `dst = beta · lhs · rhs` on this thread, for the small per-head products of attention:
/// `(m, n, k)` sizes, `dst` rows `dst_rs` apart (columns adjacent), `lhs` and `rhs` read through
/// (column stride, row stride) pairs.
///
/// # Safety
/// Every pointer must cover the extent its sizes and strides imply.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    (lhs_cs, lhs_rs): (isize, isize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (isize, isize),
    beta: f32,
) {
    // SAFETY: the caller's promise.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

struct Attention {
    heads: usize,
    causal: bool,
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s, l, "attention")?;
        let (b, t, d3) = l.shape().dims3()?;
        let d = d3 / 3;
        let h = self.heads;
        let hd = d / h;
        if d * 3 != d3 || hd * h != d {
            bail!("attention: width {d3} is not 3 × heads × head size");
        }
        if super::short_attention::available(hd) {
            let out = super::short_attention::attention(qkv, (b, t, d3), h, self.causal);
            return Ok((CpuStorage::F32(out), Shape::from((b, t, d))));
        }
        let scale = (hd as f32).powf(-0.5);
        let mut out = vec![0f32; b * t * d];
        let causal = self.causal;
        out.par_chunks_mut(t * d)
            .enumerate()
            .for_each(|(bi, out_b)| {
                let base = &qkv[bi * t * d3..(bi + 1) * t * d3];
                let mut scores = vec![0f32; t * t];
                for head in 0..h {
                    let q = base[head * hd..].as_ptr();
                    let k = base[d + head * hd..].as_ptr();
                    let v = base[2 * d + head * hd..].as_ptr();
                    // SAFETY: rows of q, k, v are `d3` apart inside this batch element's block;
                    // the output head block is rows `d` apart inside `out_b`.
                    unsafe {
                        // scores = scale · q · kᵀ
                        product(
                            (t, t, hd),
                            scores.as_mut_ptr(),
                            t as isize,
                            q,
                            (1, d3 as isize),
                            k,
                            (d3 as isize, 1),
                            scale,
                        );
                    }
                    for i in 0..t {
                        let row = &mut scores[i * t..(i + 1) * t];
                        let visible = if causal { i + 1 } else { t };
                        vector_math::softmax(&mut row[..visible]);
                        row[visible..].fill(0.0);
                    }
                    unsafe {
                        // out = probabilities · v
                        product(
                            (t, hd, t),
                            out_b[head * hd..].as_mut_ptr(),
                            d as isize,
                            scores.as_ptr(),
                            (1, t as isize),
                            v,
                            (1, d3 as isize),
                            1.0,
                        );
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = qkv.dims3()?;
        let x = qkv.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let dqkv = self.backward(&x, &g, dims);
        Ok(Some(Tensor::from_vec(dqkv, dims, qkv.device())?))
    }
}

impl Attention {
    /// The gradient of the fused qkv input: for each batch element and head, the softmax is
    /// recomputed from q and k (T × T, cheaper to recompute than to keep), then
    /// dP = dO·Vᵀ, dS = s·P ⊙ (dP − rowsum(P ⊙ dP)), dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q,
    /// each product one single-threaded gemm over strided views (one batch element per task).
    fn backward(&self, qkv: &[f32], grad: &[f32], (b, t, d3): (usize, usize, usize)) -> Vec<f32> {
        let d = d3 / 3;
        let h = self.heads;
        let hd = d / h;
        let scale = (hd as f32).powf(-0.5);
        let causal = self.causal;
        let mut dqkv = vec![0f32; b * t * d3];
        let (ti, d3i, di) = (t as isize, d3 as isize, d as isize);
        dqkv.par_chunks_mut(t * d3)
            .enumerate()
            .for_each(|(bi, dbase)| {
                let base = &qkv[bi * t * d3..(bi + 1) * t * d3];
                let gout = &grad[bi * t * d..(bi + 1) * t * d];
                let mut p = vec![0f32; t * t];
                let mut ds = vec![0f32; t * t];
                for head in 0..h {
                    let (qo, ko, vo) = (head * hd, d + head * hd, 2 * d + head * hd);
                    let (q, k, v) = (
                        base[qo..].as_ptr(),
                        base[ko..].as_ptr(),
                        base[vo..].as_ptr(),
                    );
                    let go = gout[head * hd..].as_ptr();
                    // SAFETY (every call below): q, k, v and their gradients are rows `d3` apart
                    // inside this batch element's block, dO rows `d` apart, P and dS are (t, t).
                    unsafe {
                        // P = softmax(s · Q·Kᵀ)
                        product(
                            (t, t, hd),
                            p.as_mut_ptr(),
                            ti,
                            q,
                            (1, d3i),
                            k,
                            (d3i, 1),
                            scale,
                        );
                        // dP = dO·Vᵀ
                        product(
                            (t, t, hd),
                            ds.as_mut_ptr(),
                            ti,
                            go,
                            (1, di),
                            v,
                            (d3i, 1),
                            1.0,
                        );
                    }
                    for i in 0..t {
                        let visible = if causal { i + 1 } else { t };
                        let pi = &mut p[i * t..(i + 1) * t];
                        let dsi = &mut ds[i * t..(i + 1) * t];
                        vector_math::softmax(&mut pi[..visible]);
                        let weighted: f32 = pi[..visible]
                            .iter()
                            .zip(&dsi[..visible])
                            .map(|(x, g)| x * g)
                            .sum();
                        for (g, &x) in dsi[..visible].iter_mut().zip(&pi[..visible]) {
                            *g = scale * x * (*g - weighted);
                        }
                        pi[visible..].fill(0.0);
                        dsi[visible..].fill(0.0);
                    }
                    let (dq, dk, dv) = (
                        dbase[qo..].as_mut_ptr(),
                        dbase[ko..].as_mut_ptr(),
                        dbase[vo..].as_mut_ptr(),
                    );
                    unsafe {
                        // dV = Pᵀ·dO
                        product((t, hd, t), dv, d3i, p.as_ptr(), (ti, 1), go, (1, di), 1.0);
                        // dQ = dS·K
                        product((t, hd, t), dq, d3i, ds.as_ptr(), (1, ti), k, (1, d3i), 1.0);
                        // dK = dSᵀ·Q
                        product((t, hd, t), dk, d3i, ds.as_ptr(), (ti, 1), q, (1, d3i), 1.0);
                    }
                }
            });
        dqkv
    }
}

/// Self-attention of `qkv` (`(B, T, 3·D)`: queries, keys, values side by side, heads
/// contiguous within each) into `(B, T, D)`; `causal` hides later positions. Differentiable
/// in `qkv`.
pub fn attention(qkv: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(Attention { heads, causal })
}

/// Negative log-likelihood of `targets` under the logits `hidden · weightᵀ` of a bias-free head.
///
/// Composed from candle ops, the head's cross-entropy makes about a dozen logits-sized tensors
/// per training step (logits, shifted, exp, log-probabilities, and the gradient of each): for
/// GPT-2's 50,257-token vocabulary and 800 caption tokens, 160 MB apiece, every one of them
/// fresh pages that the kernel zeroes, and single-threaded passes over each. Here the forward
/// pass is one gemm into one buffer and one parallel pass that turns each row into softmax
/// minus one-hot in place (kept for the backward pass only when a gradient can flow); the
/// backward pass scales those rows by the incoming gradient and multiplies once for the hidden
/// states (and once more for the weight, only when it is trained).
struct HeadCrossEntropy {
    targets: Vec<u32>,
    keep: bool,
    saved: Mutex<Option<Vec<f32>>>,
}

impl CustomOp2 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = contiguous_f32(hs, hl, "head cross-entropy")?;
        let w = contiguous_f32(ws, wl, "head cross-entropy")?;
        let (n, d) = hl.shape().dims2()?;
        let (v, d2) = wl.shape().dims2()?;
        if d != d2 || self.targets.len() != n {
            bail!(
                "head cross-entropy: hidden ({n}, {d}), head ({v}, {d2}), {} targets",
                self.targets.len()
            );
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= v) {
            bail!("head cross-entropy: target {t} is outside the vocabulary of {v}");
        }
        let mut logits = vec![0f32; n * v];
        // SAFETY: logits is (n, v) row-major; h is (n, d) row-major; the weight (v, d) row-major
        // read as its transpose (d, v): element (k, j) at j·d + k.
        unsafe {
            gemm(
                n,
                v,
                d,
                logits.as_mut_ptr(),
                1,
                v as isize,
                false,
                h.as_ptr(),
                1,
                d as isize,
                w.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                threads(),
            );
        }
        let keep = self.keep;
        let mut nll = vec![0f32; n];
        logits
            .par_chunks_mut(v)
            .zip(nll.par_iter_mut())
            .zip(self.targets.par_iter())
            .for_each(|((row, nll), &t)| {
                let target = row[t as usize];
                let normaliser = if keep {
                    let normaliser = vector_math::softmax(row);
                    row[t as usize] -= 1.0;
                    normaliser
                } else {
                    vector_math::log_sum_exp(row)
                };
                *nll = normaliser - target;
            });
        if keep {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(logits);
        }
        Ok((CpuStorage::F32(nll), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(mut dlogits) = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            bail!("head cross-entropy: backward pass without a saved forward pass")
        };
        let (n, _) = hidden.dims2()?;
        let v = weight.dim(0)?;
        let g = grad_res.to_vec1::<f32>()?;
        dlogits
            .par_chunks_mut(v)
            .zip(g.par_iter())
            .for_each(|(row, &g)| row.iter_mut().for_each(|x| *x *= g));
        let dlogits = Tensor::from_vec(dlogits, (n, v), hidden.device())?;
        let dh = if hidden.track_op() {
            Some(dlogits.matmul(&weight.contiguous()?)?)
        } else {
            None
        };
        let dw = if weight.track_op() {
            Some(dlogits.t()?.matmul(&hidden.contiguous()?)?)
        } else {
            None
        };
        Ok((dh, dw))
    }
}

/// Per-row negative log-likelihood `(N,)` of `targets` under `hidden (N, D) · weightᵀ (D, V)`,
/// differentiable in both (the weight's gradient is computed only when it is trained). CPU, f32.
pub fn head_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let op = HeadCrossEntropy {
        targets: targets.to_vec(),
        keep: hidden.track_op() || weight.track_op(),
        saved: Mutex::new(None),
    };
    hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)
}

/// Rows per parallel task in the element-wise kernels: large enough that the thread handoff is
/// noise, small enough that 2 cores share a (T × D) activation evenly.
const ROWS_PER_TASK: usize = 16;

/// LayerNorm over the last dimension of `(N, D)` rows with a backward pass for the input, the
/// weight and the bias. The backward pass recomputes each row's mean and deviation (one pass
/// over D) rather than keeping them.
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "layer norm")?;
        let w = contiguous_f32(ws, wl, "layer norm")?;
        let b = contiguous_f32(bs, bl, "layer norm")?;
        let d = w.len();
        // Normalised over the last dimension, which the weight and bias must match.
        if d == 0 || b.len() != d || xl.dims().last() != Some(&d) {
            bail!(
                "layer norm: input {:?}, weight {d}, bias {}",
                xl.shape(),
                b.len()
            );
        }
        let eps = self.eps;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    vector_math::layer_norm_row(x, o, w, b, eps);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x = xs.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let w = weight.to_vec1::<f32>()?;
        let d = w.len();
        let eps = self.eps;
        let mut dx = vec![0f32; x.len()];
        // Per task: the input's gradient rows, and partial sums of the weight's and bias's.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .zip(g.par_chunks(d * ROWS_PER_TASK))
            .map(|((dx, x), g)| {
                let mut dw = vec![0f32; d];
                let mut db = vec![0f32; d];
                for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                    let (mean, rstd) = vector_math::mean_and_rstd(x, eps);
                    // dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)), ĝ = g · w.
                    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                    for i in 0..d {
                        let xhat = (x[i] - mean) * rstd;
                        let gh = g[i] * w[i];
                        sum_g += gh;
                        sum_gx += gh * xhat;
                        dw[i] += g[i] * xhat;
                        db[i] += g[i];
                    }
                    let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
                    for i in 0..d {
                        let xhat = (x[i] - mean) * rstd;
                        dx[i] = rstd * (g[i] * w[i] - mean_g - xhat * mean_gx);
                    }
                }
                (dw, db)
            })
            .collect();
        let device = xs.device();
        let dx = Tensor::from_vec(dx, xs.shape(), device)?;
        let (dw, db) = if weight.track_op() || bias.track_op() {
            let mut dw = vec![0f32; d];
            let mut db = vec![0f32; d];
            for (pw, pb) in &partials {
                dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
            }
            (
                Some(Tensor::from_vec(dw, d, device)?),
                Some(Tensor::from_vec(db, d, device)?),
            )
        } else {
            (None, None)
        };
        Ok((Some(dx), dw, db))
    }
}

/// LayerNorm of `xs (…, D)` with `weight`, `bias` `(D,)`: differentiable in all three. CPU, f32.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    xs.contiguous()?
        .apply_op3(weight, bias, LayerNormOp { eps })
}

/// The element-wise activations with a fused kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x · sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (GPT-2's `gelu_new`).
    GeluTanh,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `tanh` through one `exp`: libm's `tanhf` (via `expm1f`) took a tenth of a GPT-2 training
/// step. Saturates correctly: `exp` overflowing to infinity gives 1, underflowing to 0 gives −1.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (1.0 + vector_math::exp(2.0 * u))
}

impl Act {
    #[inline(always)]
    fn value(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => x / (1.0 + vector_math::exp(-1.702 * x)),
            Act::GeluTanh => 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
        }
    }

    #[inline(always)]
    fn derivative(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => {
                let s = 1.0 / (1.0 + vector_math::exp(-1.702 * x));
                s + 1.702 * x * s * (1.0 - s)
            }
            Act::GeluTanh => {
                let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
                0.5 * (1.0 + t)
                    + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
            }
        }
    }
}

struct ActivationOp(Act);

impl CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "activation")?;
        let act = self.0;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(8192)
            .zip(x.par_chunks(8192))
            .for_each(|(o, x)| match act {
                // One loop per activation, so that each vectorises without a branch inside.
                Act::QuickGelu => vector_math::map(x, o, |x| Act::QuickGelu.value(x)),
                Act::GeluTanh => vector_math::map(x, o, |x| Act::GeluTanh.value(x)),
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let mut g = grad.flatten_all()?.to_vec1::<f32>()?;
        let act = self.0;
        g.par_chunks_mut(8192)
            .zip(x.par_chunks(8192))
            .for_each(|(g, x)| match act {
                Act::QuickGelu => {
                    vector_math::map_in_place(g, x, |g, x| g * Act::QuickGelu.derivative(x))
                }
                Act::GeluTanh => {
                    vector_math::map_in_place(g, x, |g, x| g * Act::GeluTanh.derivative(x))
                }
            });
        Ok(Some(Tensor::from_vec(g, arg.shape(), arg.device())?))
    }
}

/// `act(xs)` element-wise in one parallel pass, differentiable. CPU, f32.
/// `ys ← act(ys)` in place: the activation a reduced-precision product applies to the rows it
/// has just written, while they are in cache (no pass of its own, no second buffer).
pub fn activate_in_place(act: Act, ys: &mut [f32]) {
    match act {
        // One loop per activation, so that each vectorises without a branch inside.
        Act::QuickGelu => vector_math::apply(ys, |x| Act::QuickGelu.value(x)),
        Act::GeluTanh => vector_math::apply(ys, |x| Act::GeluTanh.value(x)),
    }
}

/// [`activate_in_place`] over several rows in one call.
pub fn activate_rows_in_place(act: Act, rows: &mut [&mut [f32]]) {
    match act {
        Act::QuickGelu => vector_math::apply_rows(rows, |x| Act::QuickGelu.value(x)),
        Act::GeluTanh => vector_math::apply_rows(rows, |x| Act::GeluTanh.value(x)),
    }
}

pub fn activation(xs: &Tensor, act: Act) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(ActivationOp(act))
}

#[cfg(test)]
mod tests {
    //! Each kernel against the same computation composed from candle's differentiable ops:
    //! the values and the gradients of a random linear read-out of the output.
    use super::*;
    use candle_core::{D, Device, Var};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The output of `f` on `inputs`, and each input's gradient of `sum(f(inputs) · r)`.
    fn value_and_grads(
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Tensor,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let r = random(out.dims(), 99);
        let grads = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let value = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = ts
            .iter()
            .map(|t| {
                grads
                    .get(t)
                    .expect("a gradient for every input")
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        (value, g)
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(scale > 0.0, "{what}: all zero");
        assert!(
            worst <= tol * scale.max(1.0),
            "{what}: max difference {worst} (scale {scale})"
        );
    }

    fn check(fused: (Vec<f32>, Vec<Vec<f32>>), composed: (Vec<f32>, Vec<Vec<f32>>), what: &str) {
        assert_close(&fused.0, &composed.0, 1e-5, &format!("{what} value"));
        for (i, (a, b)) in fused.1.iter().zip(&composed.1).enumerate() {
            assert_close(a, b, 1e-4, &format!("{what} gradient {i}"));
        }
    }

    #[test]
    fn layer_norm_matches_composed_values_and_gradients() {
        let inputs = [random(&[6, 5, 16], 1), random(&[16], 2), random(&[16], 3)];
        let fused = value_and_grads(&inputs, |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap());
        let composed = value_and_grads(&inputs, |t| {
            let mean = t[0].mean_keepdim(D::Minus1).unwrap();
            let c = t[0].broadcast_sub(&mean).unwrap();
            let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            c.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&t[1])
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
        });
        check(fused, composed, "layer norm");
        // (16, 6) has a multiple of 16 values but is not normalised over 16: refused.
        let wrong = random(&[16, 6], 4);
        let msg = layer_norm(&wrong, &inputs[1], &inputs[2], 1e-5)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("layer norm: input [16, 6]"), "{msg}");
    }

    #[test]
    fn activations_match_composed_values_and_gradients() {
        let inputs = [(random(&[3, 1000], 4) * 3.0).unwrap()];
        let fused = value_and_grads(&inputs, |t| activation(&t[0], Act::GeluTanh).unwrap());
        let composed = value_and_grads(&inputs, |t| t[0].gelu().unwrap());
        check(fused, composed, "gelu (tanh)");
        let fused = value_and_grads(&inputs, |t| activation(&t[0], Act::QuickGelu).unwrap());
        let composed = value_and_grads(&inputs, |t| {
            (&t[0] * candle_nn::ops::sigmoid(&(&t[0] * 1.702).unwrap()).unwrap()).unwrap()
        });
        check(fused, composed, "quick gelu");
        // Far from zero tanh saturates instead of overflowing.
        assert_eq!(Act::GeluTanh.value(100.0), 100.0);
        assert_eq!(Act::GeluTanh.value(-100.0), 0.0);
        assert_eq!(Act::GeluTanh.derivative(100.0), 1.0);
    }

    #[test]
    fn attention_matches_composed_values_and_gradients() {
        // A head size of 8 takes the `gemm` crate's path; multiples of 16 take
        // `short_attention`'s on AVX-512: one key, a tile of 6 query rows with a tail,
        // ViT-B/32's 50 tokens, and 77 tokens × 80 columns (a fifth register of keys and of
        // columns past a group of four).
        let shapes = [
            (3, 7, 2, 8),
            (2, 1, 2, 16),
            (2, 17, 3, 16),
            (2, 50, 2, 64),
            (1, 77, 2, 80),
        ];
        for (b, t, h, hd) in shapes {
            attention_matches_composed(b, t, h, hd);
        }
    }

    fn attention_matches_composed(b: usize, t: usize, h: usize, hd: usize) {
        let d = h * hd;
        let inputs = [random(&[b, t, 3 * d], 5)];
        for causal in [false, true] {
            let fused = value_and_grads(&inputs, |x| attention(&x[0], h, causal).unwrap());
            let composed = value_and_grads(&inputs, |x| {
                let qkv = x[0].reshape((b, t, 3, h, hd)).unwrap();
                let qkv = qkv.permute((2, 0, 3, 1, 4)).unwrap();
                let q = qkv.get(0).unwrap().contiguous().unwrap();
                let k = qkv.get(1).unwrap().contiguous().unwrap();
                let v = qkv.get(2).unwrap().contiguous().unwrap();
                let mut s = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
                if causal {
                    let mask: Vec<f32> = (0..t * t)
                        .map(|i| {
                            if i % t > i / t {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
                    s = s.broadcast_add(&mask).unwrap();
                }
                let max = s.max_keepdim(D::Minus1).unwrap().detach();
                let e = s.broadcast_sub(&max).unwrap().exp().unwrap();
                let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
                p.matmul(&v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, t, d))
                    .unwrap()
            });
            let what = format!("attention ({b}, {t}, {h} × {hd}, causal: {causal})");
            check(fused, composed, &what);
        }
    }

    #[test]
    fn head_cross_entropy_matches_composed_values_and_gradients() {
        let (n, d, v) = (9, 12, 37);
        let inputs = [random(&[n, d], 6), random(&[v, d], 7)];
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 11) % v as u32).collect();
        let fused = value_and_grads(&inputs, |t| {
            head_cross_entropy(&t[0], &t[1], &targets).unwrap()
        });
        let composed = value_and_grads(&inputs, |t| {
            let logits = t[0].matmul(&t[1].t().unwrap()).unwrap();
            let max = logits.max_keepdim(1).unwrap().detach();
            let shifted = logits.broadcast_sub(&max).unwrap();
            let lse = shifted
                .exp()
                .unwrap()
                .sum_keepdim(1)
                .unwrap()
                .log()
                .unwrap();
            let ids = Tensor::new(targets.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(1)
                .unwrap();
            (lse - shifted.gather(&ids, 1).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap()
        });
        check(fused, composed, "head cross-entropy");
        // A frozen head: the hidden states' gradient only, the same as before.
        let h = Var::from_tensor(&inputs[0]).unwrap();
        let loss = head_cross_entropy(h.as_tensor(), &inputs[1], &targets).unwrap();
        let grads = loss.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(h.as_tensor()).is_some());
        assert!(grads.get(&inputs[1]).is_none());
        assert!(head_cross_entropy(&inputs[0], &inputs[1], &[v as u32; 9]).is_err());
    }

    #[test]
    fn trained_linear_matches_composed_values_and_gradients() {
        let inputs = [random(&[40, 6], 11), random(&[4, 6], 12), random(&[4], 14)];
        let composed = value_and_grads(&inputs, |t| {
            t[0].matmul(&t[1].t().unwrap())
                .unwrap()
                .broadcast_add(&t[2])
                .unwrap()
        });
        let fused = value_and_grads(&inputs, |t| {
            trained_linear(&t[0], &t[1], &t[2], false).unwrap()
        });
        check(fused, composed, "trained linear, W stored (out, in)");
        let inputs = [random(&[40, 6], 11), random(&[6, 4], 13), random(&[4], 14)];
        let composed = value_and_grads(&inputs, |t| {
            t[0].matmul(&t[1]).unwrap().broadcast_add(&t[2]).unwrap()
        });
        let fused = value_and_grads(&inputs, |t| {
            trained_linear(&t[0], &t[1], &t[2], true).unwrap()
        });
        check(fused, composed, "trained linear, W stored (in, out)");
    }

    #[test]
    fn frozen_linear_gives_the_input_gradient() {
        let (x, w_t, b) = (random(&[5, 6], 8), random(&[6, 4], 9), random(&[4], 10));
        let cell = Arc::new(OnceLock::new());
        let fused = value_and_grads(std::slice::from_ref(&x), |t| {
            frozen_linear_bias(&t[0], &w_t, &b, &cell).unwrap()
        });
        let composed = value_and_grads(std::slice::from_ref(&x), |t| {
            t[0].matmul(&w_t).unwrap().broadcast_add(&b).unwrap()
        });
        check(fused, composed, "frozen linear");
        assert!(
            cell.get().is_some(),
            "the weight is kept for the next backward pass"
        );
    }
}
