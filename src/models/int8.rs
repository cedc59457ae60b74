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

use super::reduced_precision::{Finish, PackedProduct, check_pack_shape};

/// Output rows of the micro-kernel's tile.
const MR: usize = 12;
/// Output columns of a panel (two registers of 16 int32).
const NR: usize = 32;
/// The most k values in one block, for the reasons of `reduced_precision`'s: a block of a
/// weight panel is KC × NR bytes (96 KiB), a task's input rows MB·MR × KC (288 KiB).
const KC: usize = 3072;
/// Tiles of MR rows per task: a task's input rows (MB·MR × KC bytes) stay in L2.
const MB: usize = 8;

/// The widest input the int32 sums hold exactly: 2 · 255 · 127 · 32,768 < 2³¹.
pub const MAX_IN: usize = 32_768;

/// The int8 kernels, by the instructions they use. All compute the same integer sums and the
/// same f32 outputs from them; [`Int8Kernel::best`] picks the one a CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// 512-bit `vpdpbusd` (AVX512-VNNI: AMD Zen 4 and later, Intel Cascade Lake, Ice Lake,
    /// Sapphire Rapids and later). In builds with the `avx512` feature.
    Avx512Vnni,
    /// 256-bit `vpdpbusd` in its VEX encoding (AVX-VNNI: Intel Alder Lake and later client
    /// CPUs, which have no AVX-512).
    AvxVnni,
    /// The same 256-bit kernel in its EVEX encoding (AVX512-VNNI with AVX512-VL). Never picked
    /// by [`Int8Kernel::best`], since these CPUs run the 512-bit kernel; it is here so that the
    /// 256-bit code is tested and timed on AVX-512 hosts, most of which cannot decode AVX-VNNI's
    /// VEX form.
    Avx512Vnni256,
}

impl Int8Kernel {
    pub const ALL: [Int8Kernel; 3] = [
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx512Vnni256,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx512Vnni256 => "avx512-vnni-256",
        }
    }

    /// Whether this CPU (and this build) runs the kernel.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 = cfg!(feature = "avx512")
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vnni");
            match self {
                Int8Kernel::Avx512Vnni => avx512,
                Int8Kernel::AvxVnni => has!("avx2") && has!("fma") && has!("avxvnni"),
                Int8Kernel::Avx512Vnni256 => avx512 && has!("avx512vl") && has!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Every kernel this CPU (and this build) runs.
    pub fn here() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// The kernel this CPU runs best: the 512-bit one where it can, else AVX-VNNI's.
    pub fn best() -> Option<Self> {
        [Int8Kernel::Avx512Vnni, Int8Kernel::AvxVnni]
            .into_iter()
            .find(|k| k.runs_here())
    }
}

/// Whether this CPU runs the int8 product (and this build has it): AVX512-VNNI or AVX-VNNI.
pub fn int8_available() -> bool {
    Int8Kernel::best().is_some()
}

/// Why int8 is refused here, when [`int8_available`] is false.
pub fn why_unavailable() -> String {
    #[cfg(target_arch = "x86_64")]
    let left_out = !cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    let left_out = false;
    if left_out {
        "int8 needs AVX-512 code on this CPU (it has AVX512-VNNI but not AVX-VNNI), and this \
         build leaves it out (built without the `avx512` feature), so it is refused"
            .into()
    } else {
        "int8 needs a CPU with AVX512-VNNI (AMD Zen 4 or later, Intel Cascade Lake, Ice Lake, \
         Sapphire Rapids and later) or AVX-VNNI (Intel Alder Lake and later client CPUs); this \
         CPU has neither, so it is refused"
            .into()
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

/// One input row's quantisation: `x ≈ scale · (a − zero_point)`, a in 0..=255. The default,
/// scale 0, is a padding row's: its outputs are the bias.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowQuant {
    pub scale: f32,
    pub zero_point: i32,
}

/// Quantises one input row into `dst` (as many bytes as `src` has values): the range spans the
/// row's minimum and maximum and always 0, so that 0 (padding, ReLU's zeros) is exact. The plain
/// code is also the reference the tests hold the kernels to.
#[inline(always)]
pub fn quantize_input_row(src: &[f32], dst: &mut [u8]) -> RowQuant {
    let (lo, hi, nan) = fold_range((0.0, 0.0, false), src);
    let Some((quant, inv, zero_point)) = row_coding(lo, hi, nan) else {
        // A row of zeros gives the bias; one holding a NaN or an infinity gives NaN, as the f32
        // product would.
        dst.fill(0);
        let scale = if hi - lo == 0.0 && !nan {
            0.0
        } else {
            f32::NAN
        };
        return RowQuant {
            scale,
            zero_point: 0,
        };
    };
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = code(v, inv, zero_point);
    }
    quant
}

/// `(lo, hi, nan)` extended over `values`: the plain code's whole row, the vectorised ones' values
/// past their last whole vector.
#[inline(always)]
fn fold_range((mut lo, mut hi, mut nan): (f32, f32, bool), values: &[f32]) -> (f32, f32, bool) {
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        nan |= v.is_nan();
    }
    (lo, hi, nan)
}

/// How a row whose values span `lo..=hi` (0 among them) is coded: its [`RowQuant`], the factor
/// `255 / range` and the zero point as f32; `None` for a row of zeros or one holding a NaN or an
/// infinity, which [`quantize_input_row`] answers on its own.
#[inline(always)]
fn row_coding(lo: f32, hi: f32, nan: bool) -> Option<(RowQuant, f32, f32)> {
    let range = hi - lo;
    if range == 0.0 || !range.is_finite() || nan {
        return None;
    }
    let inv = 255.0 / range;
    let zero_point = round_small(-lo * inv).clamp(0.0, 255.0);
    let quant = RowQuant {
        scale: range / 255.0,
        zero_point: zero_point as i32,
    };
    Some((quant, inv, zero_point))
}

/// One value's u8 code: the product, then the sum, each rounded, then rounding to nearest even,
/// in the order the vectorised quantisations keep too.
#[inline(always)]
fn code(v: f32, inv: f32, zero_point: f32) -> u8 {
    round_small(v * inv + zero_point).clamp(0.0, 255.0) as u8
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
        self.linear_then(x, rows, Finish::Nothing)
    }

    /// [`Self::linear`], then `finish` done to the outputs.
    pub fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        let Some(kernel) = Int8Kernel::best() else {
            bail!("int8 linear: {}", why_unavailable());
        };
        self.linear_with(kernel, x, rows, finish)
    }

    /// [`Self::linear_then`] through a given kernel (for tests and benchmarks of each); refused
    /// where the CPU does not run it.
    pub fn linear_with(
        &self,
        kernel: Int8Kernel,
        x: &[f32],
        rows: usize,
        finish: Finish,
    ) -> Result<Vec<f32>> {
        super::reduced_precision::check_inputs(
            "int8 linear",
            x,
            rows,
            (self.in_dim, self.out_dim),
            finish,
        )?;
        if !kernel.runs_here() {
            bail!(
                "int8 linear: this CPU or build does not run the {} kernel",
                kernel.name()
            );
        }
        #[cfg(target_arch = "x86_64")]
        {
            Ok(x86::linear(kernel, self, x, rows, finish))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unreachable!("no int8 kernel runs off x86_64")
        }
    }
}

impl PackedProduct for PackedInt8 {
    const NAME: &'static str = "linear-int8";

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        PackedInt8::linear_then(self, x, rows, finish)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::reduced_precision::{
        Blocking, block_units, blocked_product, input_rows, row_stride,
    };
    use super::{Finish, Int8Kernel, KC, MB, MR, NR, PackedInt8, RowQuant, quantize_input_row};

    /// `kernel` must run here ([`Int8Kernel::runs_here`]).
    pub(super) fn linear(
        kernel: Int8Kernel,
        w: &PackedInt8,
        x: &[f32],
        rows: usize,
        finish: Finish,
    ) -> Vec<f32> {
        let (k, n, quads) = (w.in_dim, w.out_dim, w.quads);
        if rows == 0 {
            return Vec::new();
        }
        let tiles = rows.div_ceil(MR);
        let padded_rows = tiles * MR;
        // The inputs as rows of `quads` words of four bytes, `lda` apart; padding rows and k
        // past `in` are 0 (their weights are 0 too), and a padding row's scale 0 makes its
        // outputs the bias.
        let lda = row_stride(quads);
        let (a, quant) = input_rows(rows, padded_rows, lda, |r, dst| {
            // SAFETY: the words are plain bytes; the kernel's features include the
            // quantisation's (AVX512-BW, or AVX2 for AVX-VNNI).
            let bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, k) };
            unsafe { quantize_row(kernel, &x[r * k..(r + 1) * k], bytes) }
        });
        let row_scale: Vec<f32> = quant.iter().map(|q| q.scale).collect();
        let row_zp: Vec<i32> = quant.iter().map(|q| q.zero_point).collect();
        // The output holds int32 sums until the last k block turns them into f32 in place.
        let block = block_units(quads, KC / 4);
        let k_blocks = quads.div_ceil(block);
        let blocking = Blocking {
            rows,
            n,
            mr: MR,
            nr: NR,
            units: quads,
            block,
            tiles_per_task: MB,
        };
        blocked_product(blocking, finish, |out, ldc, (kb, j0, jn), p, t| {
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
            let (a, c) = (
                a[t * MR * lda + j0..].as_ptr(),
                out.at(t * MR * ldc + p * NR),
            );
            // SAFETY: the tile (rows t·MR.., columns p·NR..) lies in the output, written by this
            // task only; `a` holds MR rows `lda` apart from `j0`, `b` holds `jn` quads of the
            // panel; the epilogue's vectors hold MR rows and NR columns from their starts. The
            // caller checked that the kernel runs here.
            unsafe {
                match kernel {
                    Int8Kernel::Avx512Vnni => kernel_512(jn, a, lda, b.as_ptr(), c, ldc, ends),
                    Int8Kernel::AvxVnni => kernel_avx_vnni(jn, a, lda, b.as_ptr(), c, ldc, ends),
                    Int8Kernel::Avx512Vnni256 => {
                        kernel_avx512_vnni_256(jn, a, lda, b.as_ptr(), c, ldc, ends)
                    }
                }
            }
        })
    }

    /// One input row quantised with the kernel's vector width.
    ///
    /// # Safety
    /// `kernel` runs here.
    unsafe fn quantize_row(kernel: Int8Kernel, src: &[f32], dst: &mut [u8]) -> RowQuant {
        // SAFETY: the 512-bit kernel implies AVX512-BW, the 256-bit ones AVX2. The EVEX 256-bit
        // kernel takes AVX2's quantisation too, so that the whole of AVX-VNNI's path is tested
        // on AVX-512 hosts.
        unsafe {
            match kernel {
                Int8Kernel::Avx512Vnni => quantize_row_avx512(src, dst),
                Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni256 => quantize_row_avx2(src, dst),
            }
        }
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
            let vectors = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), nan != 0);
            let (lo, hi, nan) = super::fold_range(vectors, &src[16 * full..]);
            // A row of zeros or with a non-finite value: the plain code's answer.
            let Some((quant, inv, zero_point)) = super::row_coding(lo, hi, nan) else {
                return quantize_input_row(src, dst);
            };
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
                *d = super::code(v, inv, zero_point);
            }
            quant
        }
    }

    /// [`quantize_input_row`] in AVX2, as [`quantize_row_avx512`] is in AVX-512: eight values
    /// a step, the same operations in the same order, so the same bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn quantize_row_avx2(src: &[f32], dst: &mut [u8]) -> RowQuant {
        let n = src.len();
        let full = n / 8;
        // SAFETY: 8 values from 8·i < n are in `src`, 8 bytes in `dst` (as long as `src`).
        unsafe {
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut nan = 0;
            for i in 0..full {
                let v = _mm256_loadu_ps(src.as_ptr().add(8 * i));
                lo = _mm256_min_ps(lo, v);
                hi = _mm256_max_ps(hi, v);
                nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            }
            let (mut los, mut his) = ([0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(los.as_mut_ptr(), lo);
            _mm256_storeu_ps(his.as_mut_ptr(), hi);
            let lo = los.iter().fold(0f32, |m, &v| m.min(v));
            let hi = his.iter().fold(0f32, |m, &v| m.max(v));
            let (lo, hi, nan) = super::fold_range((lo, hi, nan != 0), &src[8 * full..]);
            let Some((quant, inv, zero_point)) = super::row_coding(lo, hi, nan) else {
                return quantize_input_row(src, dst);
            };
            let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_ps(zero_point));
            let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
            // After the two packs, lane 0's low word holds values 0..4 and lane 1's 4..8.
            let gather = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
            for i in 0..full {
                let v = _mm256_loadu_ps(src.as_ptr().add(8 * i));
                let q = _mm256_cvtps_epi32(_mm256_add_ps(_mm256_mul_ps(v, vinv), vzp));
                let q = _mm256_min_epi32(_mm256_max_epi32(q, zero), top);
                let bytes = _mm256_packus_epi16(_mm256_packus_epi32(q, q), zero);
                let bytes = _mm256_permutevar8x32_epi32(bytes, gather);
                _mm_storel_epi64(
                    dst.as_mut_ptr().add(8 * i) as *mut __m128i,
                    _mm256_castsi256_si128(bytes),
                );
            }
            for (d, &v) in dst[8 * full..].iter_mut().zip(&src[8 * full..]) {
                *d = super::code(v, inv, zero_point);
            }
            quant
        }
    }

    /// A kernel's row quantisation, for the tests' comparison with the plain code.
    #[cfg(test)]
    pub(super) fn quantize_row_with(kernel: Int8Kernel, src: &[f32], dst: &mut [u8]) -> RowQuant {
        assert!(kernel.runs_here());
        // SAFETY: the features were checked.
        unsafe { quantize_row(kernel, src, dst) }
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
    unsafe fn kernel_512(
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
            let Some(e) = ends.last else {
                for (i, row) in acc.iter().enumerate() {
                    _mm512_storeu_si512(ci.add(i * ldc) as *mut _, row[0]);
                    _mm512_storeu_si512(ci.add(i * ldc + 16) as *mut _, row[1]);
                }
                return;
            };
            // The epilogue on the sums in registers: storing them and reading them back cost
            // a tenth of the kernel's time at k = 768. Row by row, written out, because a loop
            // over `acc` this long is not unrolled, and `acc` would then live on the stack.
            let row = |i: usize, sums: [__m512i; 2]| {
                let zp = _mm512_set1_epi32(*e.row_zp.add(i));
                let sa = _mm512_set1_ps(*e.row_scale.add(i));
                for (h, sum) in sums.into_iter().enumerate() {
                    let col_sum = _mm512_loadu_si512(e.col_sum.add(16 * h) as *const _);
                    let exact = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zp, col_sum));
                    let scale = _mm512_mul_ps(sa, _mm512_loadu_ps(e.col_scale.add(16 * h)));
                    let bias = _mm512_loadu_ps(e.bias.add(16 * h));
                    let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), scale, bias);
                    _mm512_storeu_ps(c.add(i * ldc + 16 * h), y);
                }
            };
            const _: () = assert!(MR == 12, "the epilogue below names every row");
            let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = acc;
            row(0, a0);
            row(1, a1);
            row(2, a2);
            row(3, a3);
            row(4, a4);
            row(5, a5);
            row(6, a6);
            row(7, a7);
            row(8, a8);
            row(9, a9);
            row(10, a10);
            row(11, a11);
        }
    }

    /// The 256-bit kernel, written once for both encodings of 256-bit `vpdpbusd`. Its tile is
    /// the 512-bit kernel's (MR × NR, so that packing and blocking are shared), done as four
    /// 6 × 16 sub-tiles: twelve 8-lane sums, two weight vectors and a broadcast take 15 of the 16
    /// registers AVX2 has, where the 512-bit kernel keeps its 12 × 32 tile in 24 of 32.
    macro_rules! kernel_256 {
        ($name:ident, $features:literal, $dpbusd:ident) => {
            /// [`kernel_512`]'s product in 256-bit vectors.
            #[target_feature(enable = $features)]
            unsafe fn $name(
                quads: usize,
                a: *const u32,
                lda: usize,
                b: *const u32,
                c: *mut f32,
                ldc: usize,
                ends: Ends,
            ) {
                const SUB: usize = MR / 2;
                // SAFETY: the caller's promise on the extents.
                unsafe {
                    let ci = c as *mut i32;
                    for (rows, half) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let a = a.add(rows * SUB * lda);
                        let b = b.add(half * 16);
                        let ci = ci.add(rows * SUB * ldc + half * 16);
                        let mut acc = [[_mm256_setzero_si256(); 2]; SUB];
                        if !ends.first {
                            for (i, row) in acc.iter_mut().enumerate() {
                                row[0] = _mm256_loadu_si256(ci.add(i * ldc) as *const _);
                                row[1] = _mm256_loadu_si256(ci.add(i * ldc + 8) as *const _);
                            }
                        }
                        for j in 0..quads {
                            let bp = b.add(j * NR);
                            let b0 = _mm256_loadu_si256(bp as *const _);
                            let b1 = _mm256_loadu_si256(bp.add(8) as *const _);
                            for (i, row) in acc.iter_mut().enumerate() {
                                let ai = _mm256_set1_epi32(*a.add(i * lda + j) as i32);
                                row[0] = $dpbusd(row[0], ai, b0);
                                row[1] = $dpbusd(row[1], ai, b1);
                            }
                        }
                        for (i, row) in acc.iter().enumerate() {
                            _mm256_storeu_si256(ci.add(i * ldc) as *mut _, row[0]);
                            _mm256_storeu_si256(ci.add(i * ldc + 8) as *mut _, row[1]);
                        }
                    }
                    let Some(e) = ends.last else { return };
                    for i in 0..MR {
                        let zp = _mm256_set1_epi32(*e.row_zp.add(i));
                        let sa = _mm256_set1_ps(*e.row_scale.add(i));
                        for h in 0..NR / 8 {
                            let at = i * ldc + 8 * h;
                            let sum = _mm256_loadu_si256(ci.add(at) as *const _);
                            let col_sum = _mm256_loadu_si256(e.col_sum.add(8 * h) as *const _);
                            let exact = _mm256_sub_epi32(sum, _mm256_mullo_epi32(zp, col_sum));
                            let scale = _mm256_mul_ps(sa, _mm256_loadu_ps(e.col_scale.add(8 * h)));
                            let bias = _mm256_loadu_ps(e.bias.add(8 * h));
                            let y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), scale, bias);
                            _mm256_storeu_ps(c.add(at), y);
                        }
                    }
                }
            }
        };
    }

    kernel_256!(kernel_avx_vnni, "avx2,fma,avxvnni", _mm256_dpbusd_avx_epi32);
    kernel_256!(
        kernel_avx512_vnni_256,
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        _mm256_dpbusd_epi32
    );
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

    /// The kernels this CPU runs, with a note of it in the test's output: on a CPU with none,
    /// the tests below check only the refusal.
    fn kernels_here() -> Vec<Int8Kernel> {
        let here = Int8Kernel::here();
        eprintln!("int8 kernels tested on this CPU: {here:?}");
        here
    }

    /// Odd sizes on every side (rows, k, out) exercise the padding; a column split (few rows)
    /// and three k blocks (k > 2·KC) the task grid and the int32 sums kept between blocks. Each
    /// kernel must equal the integer product of the same quantised values, scaled back, to f32
    /// rounding; and the kernels must agree to the bit, since their sums and epilogues are the
    /// same integer and f32 operations.
    #[test]
    fn the_int8_product_is_the_integer_product_of_the_quantised_values() {
        let kernels = kernels_here();
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96), (130, 6145, 70), (1, 5, 1)] {
            let x = values(rows * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let packed = PackedInt8::pack(&w, Some(&bias), n, k).unwrap();
            if kernels.is_empty() {
                // Not this CPU's feature: refused, with the reason.
                let e = packed.linear(&x, rows).unwrap_err().to_string();
                assert!(e.contains("AVX512-VNNI") && e.contains("AVX-VNNI"), "{e}");
                assert!(!int8_available());
                return;
            }
            let mut want = vec![0f64; rows * n];
            let mut exact = vec![0f64; rows * n];
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
                    want[r * n + c] =
                        quant.scale as f64 * s_w as f64 * integer as f64 + bias[c] as f64;
                    exact[r * n + c] = bias[c] as f64
                        + row
                            .iter()
                            .zip(&w[c * k..(c + 1) * k])
                            .map(|(&x, &w)| x as f64 * w as f64)
                            .sum::<f64>();
                }
            }
            let first = packed
                .linear_with(kernels[0], &x, rows, Finish::Nothing)
                .unwrap();
            for &kernel in &kernels {
                let got = packed
                    .linear_with(kernel, &x, rows, Finish::Nothing)
                    .unwrap();
                assert_eq!(got.len(), rows * n);
                let (mut worst_integer, mut worst_exact) = (0f64, 0f64);
                for ((&g, &want), &exact) in got.iter().zip(&want).zip(&exact) {
                    let g = g as f64;
                    worst_integer = worst_integer.max((g - want).abs() / (1.0 + want.abs()));
                    worst_exact = worst_exact.max((g - exact).abs());
                }
                assert!(
                    worst_integer < 1e-6,
                    "{kernel:?} {rows}×{k}×{n}: {worst_integer}"
                );
                // …and differ from the f32 product by the quantisation's rounding (8 bits).
                let bound = 0.02 * (k as f64).sqrt() / 10.0;
                assert!(worst_exact > 1e-5 && worst_exact < bound, "{worst_exact}");
                assert_eq!(got, first, "{kernel:?} against {:?}", kernels[0]);
            }
        }
    }

    #[test]
    fn a_kernel_this_cpu_lacks_is_refused() {
        let packed = PackedInt8::pack(&values(8, 1), None, 2, 4).unwrap();
        for kernel in Int8Kernel::ALL {
            let got = packed.linear_with(kernel, &values(4, 2), 1, Finish::Nothing);
            assert_eq!(got.is_ok(), kernel.runs_here(), "{kernel:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains(kernel.name()), "{e}");
            }
        }
        // The best kernel is one that runs, and never the test-only EVEX 256-bit form.
        let best = Int8Kernel::best();
        assert_eq!(best.is_some(), int8_available());
        assert!(best.is_none_or(|k| k.runs_here() && k != Int8Kernel::Avx512Vnni256));
    }

    /// The vectorised quantisation must give the plain code's bytes, scale and zero point, at
    /// lengths around the vector width and for rows of zeros, NaNs and infinities.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vectorised_quantisation_equals_the_plain_one() {
        let kernels = kernels_here();
        for (len, seed) in [
            (1, 1),
            (7, 11),
            (8, 12),
            (9, 13),
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
            for (row, &kernel) in rows
                .iter()
                .flat_map(|r| kernels.iter().map(move |k| (r, k)))
            {
                let (mut plain, mut fast) = (vec![0u8; len], vec![1u8; len]);
                let want = quantize_input_row(row, &mut plain);
                let got = x86::quantize_row_with(kernel, row, &mut fast);
                assert_eq!(plain, fast, "{kernel:?} {len}");
                assert_eq!(want.zero_point, got.zero_point);
                assert!(
                    want.scale == got.scale || (want.scale.is_nan() && got.scale.is_nan()),
                    "{kernel:?} {len}: {want:?} {got:?}"
                );
            }
        }
        // Through the product: a row with a NaN gives NaN outputs, as f32's would; the others
        // are untouched.
        let w = values(3 * 20, 8);
        let packed = PackedInt8::pack(&w, None, 3, 20).unwrap();
        let mut x = values(2 * 20, 9);
        x[25] = f32::NAN;
        for kernel in kernels {
            let y = packed.linear_with(kernel, &x, 2, Finish::Nothing).unwrap();
            assert!(y[..3].iter().all(|v| v.is_finite()) && y[3..].iter().all(|v| v.is_nan()));
        }
    }

    /// An activation fused into the int8 and bf16 products gives what the activation applied
    /// after them gives, over every tile of the grid (a column split and padding included).
    #[test]
    fn a_fused_activation_equals_the_activation_after_the_product() {
        use super::super::cpu_kernels::{Act, activate_in_place};
        use super::super::reduced_precision::{PackedBf16, bf16_available};
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96)] {
            let x = values(rows * k, 4);
            let w = values(n * k, 5);
            let bias = values(n, 6);
            for act in [Act::QuickGelu, Act::GeluTanh] {
                let mut runs = Vec::new();
                let p = PackedInt8::pack(&w, Some(&bias), n, k).unwrap();
                for kernel in Int8Kernel::here() {
                    runs.push((
                        p.linear_with(kernel, &x, rows, Finish::Nothing).unwrap(),
                        p.linear_with(kernel, &x, rows, Finish::Activate(act)),
                    ));
                }
                if bf16_available() {
                    let p = PackedBf16::pack(&w, Some(&bias), n, k).unwrap();
                    runs.push((
                        p.linear(&x, rows).unwrap(),
                        p.linear_then(&x, rows, Finish::Activate(act)),
                    ));
                }
                for (mut plain, fused) in runs {
                    activate_in_place(act, &mut plain);
                    assert_eq!(plain, fused.unwrap(), "{rows}×{k}×{n} {act:?}");
                }
            }
        }
    }

    /// A residual added by the int8 and bf16 products gives, to the bit, what adding it after
    /// them gives, over every tile of the grid (a column split and padding included); a residual
    /// of the wrong size is refused.
    #[test]
    fn a_fused_residual_equals_the_sum_after_the_product() {
        use super::super::reduced_precision::{PackedBf16, bf16_available};
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96), (130, 700, 70)] {
            let x = values(rows * k, 4);
            let w = values(n * k, 5);
            let bias = values(n, 6);
            let residual: Vec<f32> = values(rows * n, 7).iter().map(|v| 10.0 * v).collect();
            let mut runs = Vec::new();
            let p = PackedInt8::pack(&w, Some(&bias), n, k).unwrap();
            for kernel in Int8Kernel::here() {
                runs.push((
                    p.linear_with(kernel, &x, rows, Finish::Nothing).unwrap(),
                    p.linear_with(kernel, &x, rows, Finish::AddTo(&residual)),
                ));
                let short = &residual[1..];
                assert!(
                    p.linear_with(kernel, &x, rows, Finish::AddTo(short))
                        .is_err()
                );
            }
            if bf16_available() {
                let p = PackedBf16::pack(&w, Some(&bias), n, k).unwrap();
                runs.push((
                    p.linear(&x, rows).unwrap(),
                    p.linear_then(&x, rows, Finish::AddTo(&residual)),
                ));
                assert!(p.linear_then(&x, rows, Finish::AddTo(&[])).is_err());
            }
            for (plain, fused) in runs {
                let want: Vec<f32> = residual.iter().zip(&plain).map(|(r, y)| r + y).collect();
                assert_eq!(want, fused.unwrap(), "{rows}×{k}×{n}");
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
