//! The int8 product of `--precision int8`: weights quantised per output channel to int8 once, at
//! load; each input row quantised to u8 on the fly (its own scale and zero point); sums of
//! `u8 × i8` products in int32 with `vpdpbusd` (AVX512-VNNI, four multiply-adds per 32-bit lane
//! where bf16's `vdpbf16ps` does two and an f32 FMA one); the result scaled back to f32 with the
//! bias added in the same pass.
//!
//! Written by hand for the same reason as the bf16 product: neither candle nor the `gemm` crate
//! has an integer product. The scheme is ONNX Runtime's dynamic quantisation (`quantize_dynamic`:
//! int8 weights per channel, u8 activations with a zero point) except that each input row has
//! its own scale rather than one for the whole tensor, which costs nothing here and keeps a row of
//! small values from being rounded by the range of another's.
//!
//! With `x ≈ sₐ (a − z)` (a in 0..=255) and `w ≈ s_w q` (q in −127..=127),
//! `Σ x·w ≈ sₐ s_w (Σ a·q − z Σ q)`: `Σ a·q` is the integer product and `Σ q`, a column's
//! sum, is computed at packing. No overflow: each product is at most 255 · 127 in size, so for k
//! up to [`MAX_IN`] both sums and their difference stay inside int32.
//!
//! Layout as in [`super::reduced_precision`]: the weight in panels of [`NR`] output columns
//! whose k values sit in quads (the four bytes one `vpdpbusd` lane reads), the input rows as
//! quads of bytes read in place, an [`MR`] × [`NR`] tile of int32 sums in 24 registers over a
//! block of [`KC`] k values, kept in the output buffer between blocks and turned into f32 there
//! after the last.

use anyhow::{Result, bail};

use super::cpu_kernels::Act;
use super::reduced_precision::{PackedProduct, check_pack_shape};

/// Output rows of the micro-kernel's tile.
const MR: usize = 12;
/// Output columns of a panel (two registers of 16 int32).
const NR: usize = 32;
/// k values per block: a block of a weight panel (KC × NR bytes, 16 KiB) stays in L1 while the
/// tiles of a row block pass over it.
const KC: usize = 512;
/// Tiles of MR rows per task: a task's input rows (MB·MR × KC bytes) stay in L2.
const MB: usize = 8;

/// The widest input the int32 sums hold exactly: 2 · 255 · 127 · 32,768 < 2³¹.
pub const MAX_IN: usize = 32_768;

/// Whether this CPU runs the int8 product (and this build has it): AVX512-VNNI.
pub fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cfg!(feature = "avx512")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX-VNNI (the 256-bit form: Intel Alder Lake and later client CPUs)
/// without AVX512-VNNI: named when int8 is refused there.
pub fn avx_vnni_only() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avxvnni")
            && !std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `W` (out, in) quantised and packed for [`PackedInt8::linear`].
pub struct PackedInt8 {
    in_dim: usize,
    out_dim: usize,
    quads: usize,
    /// Panels of NR columns; in a panel, for each quad of k values `4j..4j+4`, NR words holding
    /// the four int8 values of a column (low byte first). Columns past `out` and k past `in` are
    /// zeros.
    panels: Vec<u32>,
    /// Per column (padded to whole panels with zeros): the weight's scale `s_w`, the sum of its
    /// int8 values, and the bias (zeros when the layer has none).
    col_scale: Vec<f32>,
    col_sum: Vec<i32>,
    bias: Vec<f32>,
}

/// `x` rounded to the nearest integer, ties to even, for |x| < 2²²: adding and taking away
/// 1.5 · 2²³ leaves the rounded value (the f32 sum has no bits below 1 there). The same result
/// as `round_ties_even`, which LLVM leaves a call to libm's `rintf` per value; this vectorises.
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// One weight row quantised symmetrically: `(scale, values)` with `w ≈ scale · q`, q in
/// −127..=127 (−128 unused, so that the range is symmetric), rounding to nearest even.
pub fn quantize_weight_row(row: &[f32]) -> (f32, Vec<i8>) {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        // An all-zero row is exact with any scale; a non-finite one has no scale, and its
        // outputs are NaN as the f32 product's would be.
        let scale = if max == 0.0 { 0.0 } else { f32::NAN };
        return (scale, vec![0; row.len()]);
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    let q = row
        .iter()
        .map(|&v| round_small(v * inv).clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, q)
}

/// One input row's quantisation: `x ≈ scale · (a − zero_point)`, a in 0..=255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowQuant {
    pub scale: f32,
    pub zero_point: i32,
}

/// Quantises one input row into `dst` (as many bytes as `src` has values): the range spans the
/// row's minimum and maximum and always 0, so that 0 (padding, ReLU's zeros) is exact. The plain
/// code is also the reference the tests hold the kernels to.
#[inline(always)]
pub fn quantize_input_row(src: &[f32], dst: &mut [u8]) -> RowQuant {
    let (mut lo, mut hi, mut nan) = (0f32, 0f32, false);
    for &v in src {
        lo = lo.min(v);
        hi = hi.max(v);
        nan |= v.is_nan();
    }
    let range = hi - lo;
    if range == 0.0 || !range.is_finite() || nan {
        // A row of zeros gives the bias; one holding a NaN or an infinity gives NaN, as the f32
        // product would.
        dst.fill(0);
        let scale = if range == 0.0 && !nan { 0.0 } else { f32::NAN };
        return RowQuant {
            scale,
            zero_point: 0,
        };
    }
    let scale = range / 255.0;
    let inv = 255.0 / range;
    let zero_point = round_small(-lo * inv).clamp(0.0, 255.0);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = round_small(v * inv + zero_point).clamp(0.0, 255.0) as u8;
    }
    RowQuant {
        scale,
        zero_point: zero_point as i32,
    }
}

impl PackedInt8 {
    /// Quantises and packs `w`, `(out, in)` row-major f32, with its bias.
    pub fn pack(w: &[f32], bias: Option<&[f32]>, out_dim: usize, in_dim: usize) -> Result<Self> {
        check_pack_shape("int8", w, bias, out_dim, in_dim)?;
        if in_dim > MAX_IN {
            bail!("int8 pack: {in_dim} inputs a column; int32 sums hold at most {MAX_IN}");
        }
        let quads = in_dim.div_ceil(4);
        let padded = out_dim.div_ceil(NR) * NR;
        let mut panels = vec![0u32; padded / NR * quads * NR];
        let mut col_scale = vec![0f32; padded];
        let mut col_sum = vec![0i32; padded];
        let mut padded_bias = vec![0f32; padded];
        if let Some(b) = bias {
            padded_bias[..out_dim].copy_from_slice(b);
        }
        for col in 0..out_dim {
            let (scale, q) = quantize_weight_row(&w[col * in_dim..(col + 1) * in_dim]);
            col_scale[col] = scale;
            col_sum[col] = q.iter().map(|&v| v as i32).sum();
            let (p, lane) = (col / NR, col % NR);
            for (j, quad) in q.chunks(4).enumerate() {
                let mut bytes = [0u8; 4];
                for (b, &v) in bytes.iter_mut().zip(quad) {
                    *b = v as u8;
                }
                panels[(p * quads + j) * NR + lane] = u32::from_le_bytes(bytes);
            }
        }
        Ok(Self {
            in_dim,
            out_dim,
            quads,
            panels,
            col_scale,
            col_sum,
            bias: padded_bias,
        })
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Column `col`'s int8 weights as packed (for tests and reports).
    pub fn column(&self, col: usize) -> Vec<i8> {
        let (p, lane) = (col / NR, col % NR);
        (0..self.in_dim)
            .map(|i| {
                let word = self.panels[(p * self.quads + i / 4) * NR + lane];
                word.to_le_bytes()[i % 4] as i8
            })
            .collect()
    }

    /// Column `col`'s scale `s_w`.
    pub fn column_scale(&self, col: usize) -> f32 {
        self.col_scale[col]
    }

    /// `x · Wᵀ + bias` for `x` `(rows, in)` row-major f32, each row quantised to u8. Needs
    /// [`int8_available`].
    pub fn linear(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.linear_then(x, rows, None)
    }

    /// [`Self::linear`], then `act` applied to the outputs.
    pub fn linear_then(&self, x: &[f32], rows: usize, act: Option<Act>) -> Result<Vec<f32>> {
        if x.len() != rows * self.in_dim {
            bail!(
                "int8 linear: {} values for ({rows}, {}) inputs",
                x.len(),
                self.in_dim
            );
        }
        if !int8_available() {
            bail!("int8 linear: this CPU lacks AVX512-VNNI");
        }
        #[cfg(target_arch = "x86_64")]
        {
            Ok(x86::linear(self, x, rows, act))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unreachable!("int8_available is false off x86_64")
        }
    }
}

impl PackedProduct for PackedInt8 {
    const NAME: &'static str = "linear-int8";

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn linear_then(&self, x: &[f32], rows: usize, act: Option<Act>) -> Result<Vec<f32>> {
        PackedInt8::linear_then(self, x, rows, act)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::super::reduced_precision::{Blocking, blocked_product};
    use super::{Act, KC, MB, MR, NR, PackedInt8, RowQuant, quantize_input_row};

    pub(super) fn linear(w: &PackedInt8, x: &[f32], rows: usize, act: Option<Act>) -> Vec<f32> {
        let (k, n, quads) = (w.in_dim, w.out_dim, w.quads);
        if rows == 0 {
            return Vec::new();
        }
        let tiles = rows.div_ceil(MR);
        let padded_rows = tiles * MR;
        // The inputs as rows of `quads` words of four bytes; padding rows and k past `in` are 0
        // (their weights are 0 too), and a padding row's scale 0 makes its outputs the bias.
        let mut a = vec![0u32; padded_rows * quads];
        let mut quant = vec![
            RowQuant {
                scale: 0.0,
                zero_point: 0
            };
            padded_rows
        ];
        a.par_chunks_mut(quads)
            .zip(quant.par_iter_mut())
            .zip(x.par_chunks(k))
            .for_each(|((dst, q), src)| {
                // SAFETY: the words are plain bytes; the feature was checked by `linear`.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, dst.len() * 4)
                };
                *q = unsafe { quantize_row_avx512(src, &mut bytes[..k]) };
            });
        let row_scale: Vec<f32> = quant.iter().map(|q| q.scale).collect();
        let row_zp: Vec<i32> = quant.iter().map(|q| q.zero_point).collect();
        // The output holds int32 sums until the last k block turns them into f32 in place.
        let k_blocks = quads.div_ceil(KC / 4);
        let blocking = Blocking {
            rows,
            n,
            mr: MR,
            nr: NR,
            units: quads,
            block: KC / 4,
            tiles_per_task: MB,
        };
        blocked_product(blocking, act, |out, ldc, (kb, j0, jn), p, t| {
            let b = &w.panels[(p * quads + j0) * NR..];
            let ends = Ends {
                first: kb == 0,
                last: (kb + 1 == k_blocks).then(|| Epilogue {
                    row_scale: row_scale[t * MR..].as_ptr(),
                    row_zp: row_zp[t * MR..].as_ptr(),
                    col_scale: w.col_scale[p * NR..].as_ptr(),
                    col_sum: w.col_sum[p * NR..].as_ptr(),
                    bias: w.bias[p * NR..].as_ptr(),
                }),
            };
            // SAFETY: the tile (rows t·MR.., columns p·NR..) lies in the output, written by this
            // task only; `a` holds MR rows `quads` apart from `j0`, `b` holds `jn` quads of the
            // panel; the epilogue's vectors hold MR rows and NR columns from their starts.
            unsafe {
                kernel(
                    jn,
                    a[t * MR * quads + j0..].as_ptr(),
                    quads,
                    b.as_ptr(),
                    out.at(t * MR * ldc + p * NR),
                    ldc,
                    ends,
                )
            }
        })
    }

    /// [`quantize_input_row`] in AVX-512: the same operations in the same order (a product,
    /// then a sum, each rounded; rounding to nearest even), so the same bytes. Written out
    /// because LLVM leaves `round_ties_even` a call to libm's `rintf` per value.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn quantize_row_avx512(src: &[f32], dst: &mut [u8]) -> RowQuant {
        let n = src.len();
        let full = n / 16;
        // SAFETY: 16 values from 16·i < n are in `src`, 16 bytes in `dst` (as long as `src`).
        unsafe {
            let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut nan: __mmask16 = 0;
            for i in 0..full {
                let v = _mm512_loadu_ps(src.as_ptr().add(16 * i));
                lo = _mm512_min_ps(lo, v);
                hi = _mm512_max_ps(hi, v);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
            let (mut lo, mut hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
            for &v in &src[16 * full..] {
                lo = lo.min(v);
                hi = hi.max(v);
                nan |= v.is_nan() as u16;
            }
            // A row of zeros or with a non-finite value: the plain code's answer.
            let range = hi - lo;
            if range == 0.0 || !range.is_finite() || nan != 0 {
                return quantize_input_row(src, dst);
            }
            let inv = 255.0 / range;
            let zero_point = super::round_small(-lo * inv).clamp(0.0, 255.0);
            let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_ps(zero_point));
            let (zero, top) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
            for i in 0..full {
                let v = _mm512_loadu_ps(src.as_ptr().add(16 * i));
                let q = _mm512_cvtps_epi32(_mm512_add_ps(_mm512_mul_ps(v, vinv), vzp));
                let q = _mm512_min_epi32(_mm512_max_epi32(q, zero), top);
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                );
            }
            for (d, &v) in dst[16 * full..].iter_mut().zip(&src[16 * full..]) {
                *d = super::round_small(v * inv + zero_point).clamp(0.0, 255.0) as u8;
            }
            RowQuant {
                scale: range / 255.0,
                zero_point: zero_point as i32,
            }
        }
    }

    /// The AVX-512 row quantisation, for the tests' comparison with the plain code.
    #[cfg(test)]
    pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) -> RowQuant {
        assert!(super::int8_available());
        // SAFETY: the features were checked.
        unsafe { quantize_row_avx512(src, dst) }
    }

    /// What a kernel call does at the ends of the k blocks: start the sums from zero (the first
    /// block) rather than from the output, and (the last) turn them into f32 outputs.
    #[derive(Clone, Copy)]
    struct Ends {
        first: bool,
        last: Option<Epilogue>,
    }

    /// The tile's row and column factors: `out = sₐ s_w (Σ a·q − z Σ q) + bias`.
    #[derive(Clone, Copy)]
    struct Epilogue {
        row_scale: *const f32,
        row_zp: *const i32,
        col_scale: *const f32,
        col_sum: *const i32,
        bias: *const f32,
    }

    /// `c[MR × NR] (+)= a · b` over `quads` k-quads in int32: `a` MR rows of u8 quads, `lda`
    /// words apart; `b` one panel's quads, NR words each; `c` rows `ldc` apart, int32 until the
    /// epilogue writes f32.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn kernel(
        quads: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        ends: Ends,
    ) {
        // SAFETY: the caller's promise on the extents.
        unsafe {
            let ci = c as *mut i32;
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            if !ends.first {
                for (i, row) in acc.iter_mut().enumerate() {
                    row[0] = _mm512_loadu_si512(ci.add(i * ldc) as *const _);
                    row[1] = _mm512_loadu_si512(ci.add(i * ldc + 16) as *const _);
                }
            }
            for j in 0..quads {
                let bp = b.add(j * NR);
                let b0 = _mm512_loadu_si512(bp as *const _);
                let b1 = _mm512_loadu_si512(bp.add(16) as *const _);
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_epi32(*a.add(i * lda + j) as i32);
                    row[0] = _mm512_dpbusd_epi32(row[0], ai, b0);
                    row[1] = _mm512_dpbusd_epi32(row[1], ai, b1);
                }
            }
            for (i, row) in acc.iter().enumerate() {
                _mm512_storeu_si512(ci.add(i * ldc) as *mut _, row[0]);
                _mm512_storeu_si512(ci.add(i * ldc + 16) as *mut _, row[1]);
            }
            // The epilogue reads the sums back from L1 rather than from `acc`: a loop this long
            // over `acc` would not be unrolled, and `acc` would then live on the stack.
            let Some(e) = ends.last else { return };
            for i in 0..MR {
                let zp = _mm512_set1_epi32(*e.row_zp.add(i));
                let sa = _mm512_set1_ps(*e.row_scale.add(i));
                for h in 0..2 {
                    let at = i * ldc + 16 * h;
                    let sum = _mm512_loadu_si512(ci.add(at) as *const _);
                    let col_sum = _mm512_loadu_si512(e.col_sum.add(16 * h) as *const _);
                    let exact = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zp, col_sum));
                    let scale = _mm512_mul_ps(sa, _mm512_loadu_ps(e.col_scale.add(16 * h)));
                    let bias = _mm512_loadu_ps(e.bias.add(16 * h));
                    let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), scale, bias);
                    _mm512_storeu_ps(c.add(at), y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reduced_precision::tests::values;
    use super::*;

    #[test]
    fn small_values_round_to_nearest_even() {
        for i in -600_000..600_000 {
            let x = i as f32 / 1000.0;
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
        for x in [0.5, 1.5, 2.5, -0.5, -2.5, 127.5, 254.5, 4_194_303.5] {
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn rows_are_quantised_with_zero_exact_and_the_ends_of_their_range() {
        let mut q = vec![0u8; 4];
        let r = quantize_input_row(&[-1.0, 0.0, 0.5, 1.55], &mut q);
        assert_eq!(r.scale, 2.55 / 255.0);
        assert_eq!(r.zero_point, 100);
        assert_eq!(q, [0, 100, 150, 255]);
        // All positive: the range still reaches 0, whose code is 0.
        let r = quantize_input_row(&[2.0, 1.0, 0.0, 0.01], &mut q);
        assert_eq!((r.zero_point, q[0], q[2]), (0, 255, 0));
        assert_eq!(q[1], 128); // 127.5 rounds to the even 128
        // A zero row: scale 0 (its outputs are the bias); a non-finite one: NaN.
        assert_eq!(quantize_input_row(&[0.0; 4], &mut q).scale, 0.0);
        for bad in [f32::INFINITY, f32::NAN] {
            let r = quantize_input_row(&[1.0, bad, 0.0, 0.0], &mut q);
            assert!(r.scale.is_nan(), "{bad}");
        }
        let (s, w) = quantize_weight_row(&[-0.5, 0.25, 1.0, -1.0]);
        assert_eq!(s, 1.0 / 127.0);
        assert_eq!(w, [-64, 32, 127, -127]); // −63.5 rounds to the even −64
    }

    /// Odd sizes on every side (rows, k, out) exercise the padding; a column split (few rows)
    /// and several k blocks (k > KC) the task grid and the int32 sums kept between blocks. The
    /// kernel must equal the integer product of the same quantised values, scaled back, to f32
    /// rounding.
    #[test]
    fn the_int8_product_is_the_integer_product_of_the_quantised_values() {
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96), (130, 1201, 70), (1, 5, 1)] {
            let x = values(rows * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let packed = PackedInt8::pack(&w, Some(&bias), n, k).unwrap();
            let got = match packed.linear(&x, rows) {
                Ok(got) => got,
                Err(e) => {
                    // Not this CPU's feature: refused, with the reason.
                    assert!(!int8_available());
                    assert!(e.to_string().contains("AVX512-VNNI"), "{e}");
                    return;
                }
            };
            assert_eq!(got.len(), rows * n);
            let mut worst_integer = 0f64;
            let mut worst_exact = 0f64;
            let mut a = vec![0u8; k];
            for r in 0..rows {
                let row = &x[r * k..(r + 1) * k];
                let quant = quantize_input_row(row, &mut a);
                for c in 0..n {
                    let q = packed.column(c);
                    let (s_w, _) = quantize_weight_row(&w[c * k..(c + 1) * k]);
                    assert_eq!(packed.column_scale(c), s_w);
                    let integer: i64 = a
                        .iter()
                        .zip(&q)
                        .map(|(&a, &q)| (a as i64 - quant.zero_point as i64) * q as i64)
                        .sum();
                    let want = quant.scale as f64 * s_w as f64 * integer as f64 + bias[c] as f64;
                    let exact: f64 = bias[c] as f64
                        + row
                            .iter()
                            .zip(&w[c * k..(c + 1) * k])
                            .map(|(&x, &w)| x as f64 * w as f64)
                            .sum::<f64>();
                    let g = got[r * n + c] as f64;
                    worst_integer = worst_integer.max((g - want).abs() / (1.0 + want.abs()));
                    worst_exact = worst_exact.max((g - exact).abs());
                }
            }
            assert!(worst_integer < 1e-6, "{rows}×{k}×{n}: {worst_integer}");
            // …and differ from the f32 product by the quantisation's rounding (8 bits).
            let bound = 0.02 * (k as f64).sqrt() / 10.0;
            assert!(worst_exact > 1e-5 && worst_exact < bound, "{worst_exact}");
        }
    }

    /// The vectorised quantisation must give the plain code's bytes, scale and zero point, at
    /// lengths around the vector width and for rows of zeros, NaNs and infinities.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vectorised_quantisation_equals_the_plain_one() {
        if !int8_available() {
            return;
        }
        for (len, seed) in [
            (1, 1),
            (15, 2),
            (16, 3),
            (17, 4),
            (64, 5),
            (301, 6),
            (768, 7),
        ] {
            let mut rows = vec![values(len, seed), vec![0.0; len]];
            let positive: Vec<f32> = values(len, seed + 10).iter().map(|v| v + 0.5).collect();
            rows.push(positive);
            for bad in [f32::NAN, f32::INFINITY] {
                let mut row = values(len, seed + 20);
                row[len / 2] = bad;
                rows.push(row);
            }
            for row in rows {
                let (mut plain, mut fast) = (vec![0u8; len], vec![1u8; len]);
                let want = quantize_input_row(&row, &mut plain);
                let got = x86::quantize_row(&row, &mut fast);
                assert_eq!(plain, fast, "{len}");
                assert_eq!(want.zero_point, got.zero_point);
                assert!(
                    want.scale == got.scale || (want.scale.is_nan() && got.scale.is_nan()),
                    "{len}: {want:?} {got:?}"
                );
            }
        }
        // Through the product: a row with a NaN gives NaN outputs, as f32's would; the others
        // are untouched.
        let w = values(3 * 20, 8);
        let packed = PackedInt8::pack(&w, None, 3, 20).unwrap();
        let mut x = values(2 * 20, 9);
        x[25] = f32::NAN;
        let y = packed.linear(&x, 2).unwrap();
        assert!(y[..3].iter().all(|v| v.is_finite()) && y[3..].iter().all(|v| v.is_nan()));
    }

    /// An activation fused into the int8 and bf16 products gives what the activation applied
    /// after them gives, over every tile of the grid (a column split and padding included).
    #[test]
    fn a_fused_activation_equals_the_activation_after_the_product() {
        use super::super::cpu_kernels::activate_in_place;
        use super::super::reduced_precision::{PackedBf16, bf16_available};
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96)] {
            let x = values(rows * k, 4);
            let w = values(n * k, 5);
            let bias = values(n, 6);
            for act in [Act::QuickGelu, Act::GeluTanh] {
                let mut runs = Vec::new();
                if int8_available() {
                    let p = PackedInt8::pack(&w, Some(&bias), n, k).unwrap();
                    runs.push((
                        p.linear(&x, rows).unwrap(),
                        p.linear_then(&x, rows, Some(act)),
                    ));
                }
                if bf16_available() {
                    let p = PackedBf16::pack(&w, Some(&bias), n, k).unwrap();
                    runs.push((
                        p.linear(&x, rows).unwrap(),
                        p.linear_then(&x, rows, Some(act)),
                    ));
                }
                for (mut plain, fused) in runs {
                    activate_in_place(act, &mut plain);
                    assert_eq!(plain, fused.unwrap(), "{rows}×{k}×{n} {act:?}");
                }
            }
        }
    }

    #[test]
    fn packing_refuses_shapes_that_do_not_match() {
        assert!(PackedInt8::pack(&[0.0; 5], None, 2, 3).is_err());
        assert!(PackedInt8::pack(&[0.0; 6], Some(&[0.0]), 2, 3).is_err());
        assert!(PackedInt8::pack(&[], None, 0, 3).is_err());
        let wide = vec![0.0; MAX_IN + 1];
        assert!(PackedInt8::pack(&wide, None, 1, MAX_IN + 1).is_err());
        assert!(PackedInt8::pack(&wide[..MAX_IN], None, 1, MAX_IN).is_ok());
    }
}
