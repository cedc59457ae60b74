//! CPU fast paths for inference, as candle custom ops (no backward pass: never use them in
//! training). Each replaces several generic candle ops whose separate passes, temporaries and
//! per-call thread synchronisation cost more than the arithmetic on a 2-core machine:
//!
//! - [`linear_bias`]: `x·Wᵀ + b` as one gemm call that starts from the bias rows;
//! - [`attention`]: multi-head attention straight from the fused `qkv` projection, one batch
//!   element per task, with no transposed copies of q, k, v or the output.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, bail};
use gemm::{Parallelism, gemm};
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

struct LinearBias;

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
        let mut dst: Vec<f32> = Vec::with_capacity(rows * n);
        for _ in 0..rows {
            dst.extend_from_slice(b);
        }
        // SAFETY: every pointer covers the extent implied by its dimensions and strides.
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
                w.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                threads(),
            );
        }
        Ok((CpuStorage::F32(dst), Shape::from((rows, n))))
    }
}

/// `x (rows, in) · w_t (in, out) + bias (out)`, all contiguous f32 on the CPU.
pub fn linear_bias(x: &Tensor, w_t: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(w_t, bias, &LinearBias)
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
                        gemm(
                            t,
                            t,
                            hd,
                            scores.as_mut_ptr(),
                            1,
                            t as isize,
                            false,
                            q,
                            1,
                            d3 as isize,
                            k,
                            d3 as isize,
                            1,
                            0.0,
                            scale,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                    for i in 0..t {
                        let row = &mut scores[i * t..(i + 1) * t];
                        let visible = if causal { i + 1 } else { t };
                        let max = row[..visible]
                            .iter()
                            .copied()
                            .fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0;
                        for x in &mut row[..visible] {
                            *x = (*x - max).exp();
                            sum += *x;
                        }
                        for x in &mut row[..visible] {
                            *x /= sum;
                        }
                        row[visible..].fill(0.0);
                    }
                    unsafe {
                        // out = probabilities · v
                        gemm(
                            t,
                            hd,
                            t,
                            out_b[head * hd..].as_mut_ptr(),
                            1,
                            d as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            t as isize,
                            v,
                            1,
                            d3 as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }
}

/// Self-attention of `qkv` (`(B, T, 3·D)`: queries, keys, values side by side, heads
/// contiguous within each) into `(B, T, D)`; `causal` hides later positions.
pub fn attention(qkv: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    qkv.contiguous()?
        .apply_op1_no_bwd(&Attention { heads, causal })
}
