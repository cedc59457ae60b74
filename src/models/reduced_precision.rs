//! Reduced-precision inference: the [`Precision`] a model computes in, and the bf16 product
//! for CPUs with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and Sapphire Rapids).
//!
//! Reduced precision is opt-in and never chosen silently. What it means depends on the device:
//!
//! - **CPU, bf16**: a model loaded with [`Precision::Bf16`] rounds the weights of its inference
//!   linear layers and their inputs to bf16 and multiplies them with `vdpbf16ps`, which does two
//!   multiply-adds per f32 lane where an f32 FMA does one, and accumulates in f32. Everything
//!   else (LayerNorm, softmax, attention's per-head products, activations) stays f32.
//! - **CUDA, f16 or bf16**: the whole model holds its weights and activations in that type
//!   ([`Precision::compute_dtype`]) and runs on candle's CUDA kernels, as PyTorch users run CLIP
//!   with `model.half()`: cuBLAS sums products in f32 (candle leaves its reduced-precision
//!   reductions off), LayerNorm and softmax sum in f32. Embeddings come back as f32.
//! - **CPU, int8** (opt-in, AVX512-VNNI or AVX-VNNI): the same linear layers in int8 with int32 sums
//!   ([`super::int8`]); the rest as in bf16. Refused on GPUs.
//! - **CPU, f16**: refused. Neither candle nor the `gemm` crate has a half-precision kernel
//!   faster than f32 here; f16 would only be slower.
//!
//! The CPU bf16 product is written by hand because neither candle (its CPU bf16 matmul widens to
//! f32) nor the `gemm` crate (f16 is converted to f32 there too) has a bf16 kernel, so neither is
//! faster than f32.
//!
//! The product is the textbook blocked one: the weight `W` (out, in) is packed once, at load,
//! into panels of [`NR`] output columns whose k values sit in pairs (what one `vdpbf16ps` lane
//! reads); the input rows are rounded to bf16 in one pass and read in place; a micro-kernel
//! keeps an [`MR`] × [`NR`] tile of the output in 24 registers over a block of [`KC`] k values.
//!
//! [`PackedF32`] is the same product in f32 (one FMA a k value), for f32 inference on AVX-512:
//! packed once, it is a few per cent faster than the `gemm` crate's (which packs the weight at
//! every call), and it shares the tile-wise bias, activation and residual ([`Finish`]).

use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};

use super::cpu_kernels::{self, Act};

/// What a model's inference computes in (see the module comment for what each means where).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// Full f32 (the default; what the parity tests check).
    #[default]
    F32,
    /// On a CPU with AVX512-BF16, the linear layers in bf16 with f32 accumulation; on a CUDA
    /// GPU, the whole model in bf16.
    Bf16,
    /// The whole model in IEEE half precision, on a CUDA GPU only.
    F16,
    /// On a CPU with AVX512-VNNI or AVX-VNNI, the linear layers in int8: weights quantised per output
    /// channel, inputs per row, sums in int32 (see [`super::int8`]). Opt-in: it drifts more
    /// than bf16.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    /// Refuses a precision this device cannot compute in, saying why.
    pub fn check(self, device: &Device) -> Result<()> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Int8 if !device.is_cpu() => bail!(
                "int8 is implemented for CPUs with AVX512-VNNI or AVX-VNNI only; on a GPU use \
                 f16 or bf16"
            ),
            Precision::Int8 if !super::int8::int8_available() => bail!(
                "{}: use f32{}",
                super::int8::why_unavailable(),
                if bf16_available() { " or bf16" } else { "" }
            ),
            Precision::Int8 => Ok(()),
            Precision::Bf16 | Precision::F16 if device.is_cuda() => Ok(()),
            Precision::Bf16 | Precision::F16 if !device.is_cpu() => bail!(
                "{} is implemented for CUDA GPUs and (bf16) CPUs with AVX512-BF16; on this \
                 device use f32",
                self.name()
            ),
            Precision::F16 => bail!(
                "f16 runs on CUDA GPUs (--device cuda, in a build with --features cuda); on a \
                 CPU it would be slower than f32, so it is refused: use f32, or bf16 on CPUs with \
                 AVX512-BF16"
            ),
            Precision::Bf16 if !cfg!(feature = "avx512") => bail!(
                "bf16 needs AVX-512 code, and this build leaves it out (built without the \
                 `avx512` feature), so only f32 is offered"
            ),
            Precision::Bf16 if !bf16_available() => bail!(
                "bf16 needs a CPU with AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake or \
                 Sapphire Rapids and later) or a CUDA GPU; this CPU lacks it, so only f32 is \
                 offered here"
            ),
            Precision::Bf16 => Ok(()),
        }
    }

    /// The type a model on `device` holds its weights and activations in: f32 on a CPU (bf16
    /// there packs the linear layers' weights apart, see [`PackedBf16`]), the precision's own
    /// type on a GPU.
    pub fn compute_dtype(self, device: &Device) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 | Precision::Int8 if device.is_cpu() => DType::F32,
            // Refused off the CPU by `check`.
            Precision::Int8 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

/// Whether this CPU runs the bf16 product (and this build has it).
pub fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cfg!(feature = "avx512")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Output rows of the micro-kernel's tile.
const MR: usize = 12;
/// Output columns of the micro-kernel's tile (two registers of 16 f32).
const NR: usize = 32;
/// The most k values in one block. Every block after the first reloads each output tile's sums
/// from memory, and the hardware prefetchers do not foresee those loads (a tile's rows lie a
/// whole output row apart): with blocks of 256 values that cost ViT-B/32's products 9–12 % of
/// their time. So the inner dimension is cut only past this, into equal blocks; 3,072 covers
/// every layer of CLIP ViT-B and GPT-2. A block of a weight panel (KC × NR bf16, 192 KiB) and a
/// task's input rows (MB·MR × KC bf16, 576 KiB) then share L2 (1 MiB and more on CPUs with
/// AVX512-BF16).
const KC: usize = 3072;
/// Tiles of MR rows per task: a task's input rows (MB·MR × KC bf16) stay in L2.
const MB: usize = 8;

/// The words from one input row to the next in a product's rounded (bf16) or quantised (int8)
/// copy of its inputs: the row's `words`, padded to an odd number of 64-byte lines. Rows a
/// power of two apart fall into one L1 set (4 KiB apart, as bf16 rows are at k = 2,048), and a
/// tile's 12 rows then overflow its 8 ways: the text tower's MLP-down product (768 × 2,048 ×
/// 512) ran at 269 GFLOP/s in bf16, and at 374 with the rows padded.
pub(super) fn row_stride(words: usize) -> usize {
    (words.div_ceil(16) | 1) * 16
}

/// A product's inputs in its own form, `padded_rows` rows `lda` words apart: `fill(row, words)`
/// writes input row `row` (below `rows`) into its words, all zeros beforehand, and returns what
/// the product keeps of the row (int8: its quantisation); padding rows stay zeros and give
/// `T::default()`. Each row is zeroed by the task that fills it, while it is in cache:
/// `vec![0; n]` would zero the whole buffer first, on one thread, out of cache (4 % of the text
/// tower's time).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn input_rows<T: Send + Default>(
    rows: usize,
    padded_rows: usize,
    lda: usize,
    fill: impl Fn(usize, &mut [u32]) -> T + Sync,
) -> (Vec<u32>, Vec<T>) {
    use rayon::prelude::*;
    let mut a = Vec::<u32>::with_capacity(padded_rows * lda);
    let kept: Vec<T> = a.spare_capacity_mut()[..padded_rows * lda]
        .par_chunks_mut(lda)
        .enumerate()
        .map(|(r, words)| {
            words.fill(std::mem::MaybeUninit::new(0));
            // SAFETY: every word was initialised just above.
            let words = unsafe { &mut *(words as *mut [std::mem::MaybeUninit<u32>] as *mut [u32]) };
            if r < rows {
                fill(r, words)
            } else {
                T::default()
            }
        })
        .collect();
    // SAFETY: the tasks above initialised all `padded_rows · lda` words.
    unsafe { a.set_len(padded_rows * lda) };
    (a, kept)
}

/// The length of a k block, in `units` (bf16 pairs, int8 quads): `units` cut into as few equal
/// blocks as hold at most `max_units` each.
pub(super) fn block_units(units: usize, max_units: usize) -> usize {
    units.div_ceil(units.div_ceil(max_units.max(1)).max(1))
}

/// f32 → bf16 bits, rounding to nearest even (as `vcvtneps2bf16` does; NaN stays NaN).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// A weight `W` (out, in) packed for [`PackedBf16::linear`]: panels of [`NR`] output columns;
/// in a panel, for each pair of k values `(2j, 2j+1)`, NR 32-bit words holding
/// `bf16(W[col][2j]) | bf16(W[col][2j+1]) << 16`. Columns past `out` and the odd k past `in`
/// are zeros.
pub struct PackedBf16 {
    in_dim: usize,
    out_dim: usize,
    pairs: usize,
    panels: Vec<u32>,
    /// The bias, padded with zeros to whole panels (zeros when the layer has none): the sums'
    /// starting value.
    bias: Vec<f32>,
}

/// Refuses a weight `w` that is not `(out_dim, in_dim)`, a bias that is not `out_dim` long, and
/// an empty weight, naming the `kind` of product being packed.
pub(super) fn check_pack_shape(
    kind: &str,
    w: &[f32],
    bias: Option<&[f32]>,
    out_dim: usize,
    in_dim: usize,
) -> Result<()> {
    if w.len() != out_dim * in_dim {
        bail!(
            "{kind} pack: {} values for a ({out_dim}, {in_dim}) weight",
            w.len()
        );
    }
    if bias.is_some_and(|b| b.len() != out_dim) {
        bail!("{kind} pack: a bias of {out_dim} values expected");
    }
    if in_dim == 0 || out_dim == 0 {
        bail!("{kind} pack: an empty ({out_dim}, {in_dim}) weight");
    }
    Ok(())
}

/// Refuses inputs `x` that are not `rows` rows of `in_dim` values, and a `finish` that does not
/// fit `(rows, out_dim)` outputs: what every packed product checks first, named by `what`.
pub(super) fn check_inputs(
    what: &str,
    x: &[f32],
    rows: usize,
    (in_dim, out_dim): (usize, usize),
    finish: Finish,
) -> Result<()> {
    if x.len() != rows * in_dim {
        bail!("{what}: {} values for ({rows}, {in_dim}) inputs", x.len());
    }
    finish.check(what, rows, out_dim)
}

impl PackedBf16 {
    /// Packs `w`, `(out, in)` row-major f32, and keeps the bias (f32) beside it.
    pub fn pack(w: &[f32], bias: Option<&[f32]>, out_dim: usize, in_dim: usize) -> Result<Self> {
        check_pack_shape("bf16", w, bias, out_dim, in_dim)?;
        let pairs = in_dim.div_ceil(2);
        let n_panels = out_dim.div_ceil(NR);
        let mut panels = vec![0u32; n_panels * pairs * NR];
        for (p, panel) in panels.chunks_mut(pairs * NR).enumerate() {
            for col in p * NR..((p + 1) * NR).min(out_dim) {
                let row = &w[col * in_dim..(col + 1) * in_dim];
                for j in 0..pairs {
                    let lo = bf16_bits(row[2 * j]) as u32;
                    let hi = row.get(2 * j + 1).map_or(0, |&v| bf16_bits(v) as u32);
                    panel[j * NR + col - p * NR] = lo | hi << 16;
                }
            }
        }
        Ok(Self {
            in_dim,
            out_dim,
            pairs,
            panels,
            bias: {
                let mut padded = vec![0f32; n_panels * NR];
                if let Some(b) = bias {
                    padded[..out_dim].copy_from_slice(b);
                }
                padded
            },
        })
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x · Wᵀ + bias` for `x` `(rows, in)` row-major f32: the inputs rounded to bf16, products
    /// accumulated in f32 from the f32 bias. Needs [`bf16_available`].
    pub fn linear(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.linear_then(x, rows, Finish::Nothing)
    }

    /// [`Self::linear`], then `finish` done to the outputs.
    pub fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        check_inputs("bf16 linear", x, rows, (self.in_dim, self.out_dim), finish)?;
        if !bf16_available() {
            bail!("bf16 linear: this CPU lacks AVX512-BF16");
        }
        #[cfg(target_arch = "x86_64")]
        {
            Ok(x86::linear(self, x, rows, finish))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unreachable!("bf16_available is false off x86_64")
        }
    }
}

/// A weight `W` (out, in) packed for [`PackedF32::linear_then`]: panels of [`NR`] output columns,
/// in a panel NR values for each k. Columns past `out` are zeros.
pub struct PackedF32 {
    in_dim: usize,
    out_dim: usize,
    panels: Vec<f32>,
    /// The bias, padded with zeros to whole panels: the sums' starting value.
    bias: Vec<f32>,
}

impl PackedF32 {
    /// Packs `w`, `(out, in)` row-major f32, and keeps the bias beside it.
    pub fn pack(w: &[f32], bias: Option<&[f32]>, out_dim: usize, in_dim: usize) -> Result<Self> {
        check_pack_shape("f32", w, bias, out_dim, in_dim)?;
        let n_panels = out_dim.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * in_dim * NR];
        for (p, panel) in panels.chunks_mut(in_dim * NR).enumerate() {
            for col in p * NR..((p + 1) * NR).min(out_dim) {
                for (j, &v) in w[col * in_dim..(col + 1) * in_dim].iter().enumerate() {
                    panel[j * NR + col - p * NR] = v;
                }
            }
        }
        let mut padded = vec![0f32; n_panels * NR];
        if let Some(b) = bias {
            padded[..out_dim].copy_from_slice(b);
        }
        Ok(Self {
            in_dim,
            out_dim,
            panels,
            bias: padded,
        })
    }

    /// `x · Wᵀ + bias` for `x` `(rows, in)` row-major f32, then `finish`. Needs AVX-512F.
    pub fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        check_inputs("f32 linear", x, rows, (self.in_dim, self.out_dim), finish)?;
        if !f32_packed_available() {
            bail!("f32 packed linear: this CPU or build lacks AVX-512");
        }
        #[cfg(target_arch = "x86_64")]
        {
            Ok(x86::linear_f32(self, x, rows, finish))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unreachable!("f32_packed_available is false off x86_64")
        }
    }
}

/// Whether this CPU runs the packed f32 product (and this build has it).
pub fn f32_packed_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedProduct for PackedF32 {
    const NAME: &'static str = "linear-f32";

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        PackedF32::linear_then(self, x, rows, finish)
    }
}

/// What a packed product does to each output tile once its sums are complete, while the tile
/// is in L1: a pass of its own would read the whole output back from memory.
#[derive(Debug, Clone, Copy, Default)]
pub enum Finish<'a> {
    #[default]
    Nothing,
    /// An activation (fc1's).
    Activate(Act),
    /// A residual added, `(rows, out)` row-major: `out = residual + (x · Wᵀ + bias)`, the same
    /// value, to the bit, as adding it afterwards.
    AddTo(&'a [f32]),
}

impl Finish<'_> {
    /// Asks for the residual of rows `r0..r1`, columns `c0..c1` (a panel), of an output of
    /// `rows` × `n`, before the tile's sums are computed. The rows lie a whole output row apart,
    /// a pattern the hardware prefetchers do not follow, and adding them on arrival stalled on
    /// every load (6 % of the int8 image model's time in `perf`); the tile's product takes long
    /// enough to bring them from memory.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn prefetch(&self, (r0, r1): (usize, usize), (c0, c1): (usize, usize), rows: usize, n: usize) {
        let Finish::AddTo(residual) = self else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        for r in r0..r1.min(rows) {
            // Every cache line (16 values) of the row's part of the panel.
            for c in (c0..c1.min(n)).step_by(16) {
                let at = &residual[r * n + c] as *const f32 as *const i8;
                // SAFETY: a hint only; the address lies in `residual`.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at)
                };
            }
        }
    }

    /// Refuses a residual that is not `(rows, out_dim)`.
    pub(super) fn check(&self, what: &str, rows: usize, out_dim: usize) -> Result<()> {
        if let Finish::AddTo(residual) = self
            && residual.len() != rows * out_dim
        {
            bail!(
                "{what}: a residual of {} values for ({rows}, {out_dim}) outputs",
                residual.len()
            );
        }
        Ok(())
    }
}

/// A weight packed for a reduced-precision product on the CPU (bf16 here, int8 in
/// [`super::int8`]): what [`packed_linear`] runs as a candle op.
pub trait PackedProduct: Send + Sync + 'static {
    /// The op's name in candle's errors.
    const NAME: &'static str;
    fn out_dim(&self) -> usize;
    /// `x · Wᵀ + bias` for `x` `(rows, in)` row-major f32, then `finish`.
    fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>>;
}

impl PackedProduct for PackedBf16 {
    const NAME: &'static str = "linear-bf16";

    fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn linear_then(&self, x: &[f32], rows: usize, finish: Finish) -> Result<Vec<f32>> {
        PackedBf16::linear_then(self, x, rows, finish)
    }
}

/// `act(x · Wᵀ + bias)` through a packed product, as a candle op (inference: no backward
/// pass), `x` `(rows, in)`.
pub fn packed_linear<P: PackedProduct>(x: &Tensor, w: &Arc<P>, act: Option<Act>) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op1_no_bwd(&PackedLinearOp(w.clone(), act))?)
}

struct PackedLinearOp<P>(Arc<P>, Option<Act>);

impl<P: PackedProduct> CustomOp1 for PackedLinearOp<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("{}: f32 inputs only", P::NAME)
        };
        let Some((from, to)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", P::NAME)
        };
        let (rows, _) = l.shape().dims2()?;
        let out = self
            .0
            .linear_then(
                &data[from..to],
                rows,
                self.1.map_or(Finish::Nothing, Finish::Activate),
            )
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(out), Shape::from((rows, self.0.out_dim()))))
    }
}

/// `residual + (x · Wᵀ + bias)` through a packed product, as a candle op (inference: no
/// backward pass), `x` `(rows, in)`, `residual` `(rows, out)`: the residual added to each
/// output tile while it is in cache, instead of by a pass of its own.
pub fn packed_linear_plus<P: PackedProduct>(
    x: &Tensor,
    residual: &Tensor,
    w: &Arc<P>,
) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2_no_bwd(&residual.contiguous()?, &PackedLinearPlusOp(w.clone()))?)
}

struct PackedLinearPlusOp<P>(Arc<P>);

impl<P: PackedProduct> CustomOp2 for PackedLinearPlusOp<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(residual)) = (xs, rs) else {
            candle_core::bail!("{}: f32 inputs and residual only", P::NAME)
        };
        let (Some((x0, x1)), Some((r0, r1))) = (xl.contiguous_offsets(), rl.contiguous_offsets())
        else {
            candle_core::bail!("{}: the input and residual must be contiguous", P::NAME)
        };
        let (rows, _) = xl.shape().dims2()?;
        if rl.shape().dims2()? != (rows, self.0.out_dim()) {
            candle_core::bail!(
                "{}: a residual of shape {:?} for ({rows}, {}) outputs",
                P::NAME,
                rl.shape(),
                self.0.out_dim()
            )
        }
        let out = self
            .0
            .linear_then(&x[x0..x1], rows, Finish::AddTo(&residual[r0..r1]))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(out), Shape::from((rows, self.0.out_dim()))))
    }
}

/// A pointer handed to the tasks of one blocked product, each writing its own tiles.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);

impl SharedOut {
    /// The output at `offset` (a method, so that a closure captures the whole `SharedOut`, which
    /// is `Send`, rather than its raw pointer field).
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the output they were given.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: the tasks of a product write disjoint tiles and finish before it returns.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Does `finish` to rows `r0..r1`, columns `c0..c1` of an output `ldc` wide whose first `rows`
/// rows and `n` columns are the product's: what a task does to a tile once its sums are
/// complete.
///
/// # Safety
/// The region lies in the output, written, and no other task touches it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) unsafe fn finish_tile(
    finish: Finish,
    out: SharedOut,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    (ldc, rows, n): (usize, usize, usize),
) {
    // SAFETY (both arms): the caller's promise; the rows are disjoint.
    let row = |r: usize, width: usize| unsafe {
        std::slice::from_raw_parts_mut(out.at(r * ldc + c0), width)
    };
    match finish {
        Finish::Nothing => {}
        Finish::Activate(act) => {
            // A tile's rows (MR of them) in one call.
            let mut tile: Vec<&mut [f32]> = (r0..r1).map(|r| row(r, c1 - c0)).collect();
            cpu_kernels::activate_rows_in_place(act, &mut tile);
        }
        Finish::AddTo(residual) => {
            // Padding rows and columns have no residual (and are cut off).
            let width = c1.min(n).saturating_sub(c0);
            for r in r0..r1.min(rows) {
                let plus = &residual[r * n + c0..r * n + c0 + width];
                for (y, &p) in row(r, width).iter_mut().zip(plus) {
                    *y += p;
                }
            }
        }
    }
}

/// The `(rows, n)` output of a blocked product written into `c`'s spare capacity: `padded_rows`
/// rows (whole tiles) of `ldc` columns (whole panels), the padding cut off.
///
/// # Safety
/// The first `padded_rows · ldc` values of `c`'s capacity are written.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) unsafe fn finish_output(
    mut c: Vec<f32>,
    padded_rows: usize,
    rows: usize,
    ldc: usize,
    n: usize,
) -> Vec<f32> {
    // SAFETY: the caller's promise.
    unsafe { c.set_len(padded_rows * ldc) };
    c.truncate(rows * ldc);
    if ldc != n {
        c = c.chunks(ldc).flat_map(|r| r[..n].iter().copied()).collect();
    }
    c
}

/// Runs `task(tiles t0..t1, panels p0..p1)` over the task grid of a blocked product in parallel:
/// row blocks of at most `tiles_per_block` tiles, as many as a multiple of the threads (17
/// blocks on 2 threads would leave one idle for a block: 6 % of the product), and column ranges
/// when there are too few rows to keep every thread busy (the class-token rows of a last layer).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn for_each_tile_block(
    tiles: usize,
    tiles_per_block: usize,
    n_panels: usize,
    task: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    use rayon::prelude::*;
    if tiles == 0 || n_panels == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let row_blocks = tiles.div_ceil(tiles_per_block).div_ceil(threads) * threads;
    let row_blocks = row_blocks.min(tiles);
    let col_splits = (2 * threads).div_ceil(row_blocks).clamp(1, n_panels);
    (0..row_blocks * col_splits).into_par_iter().for_each(|i| {
        let (rb, cs) = (i / col_splits, i % col_splits);
        task(
            (rb * tiles / row_blocks, (rb + 1) * tiles / row_blocks),
            (cs * n_panels / col_splits, (cs + 1) * n_panels / col_splits),
        );
    });
}

/// The extents of a blocked product: `rows` input rows in tiles of `mr`, `n` output columns in
/// panels of `nr`, the inner dimension as `units` (bf16 pairs, int8 quads) in blocks of
/// `block`, and the tiles a task takes at most.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Blocking {
    pub rows: usize,
    pub n: usize,
    pub mr: usize,
    pub nr: usize,
    pub units: usize,
    pub block: usize,
    pub tiles_per_task: usize,
}

/// Runs a blocked product and returns its `(rows, n)` output: over the task grid of
/// [`for_each_tile_block`], each task takes its k blocks in turn, each panel, each tile, calling
/// `tile(out, ldc, (block index, first unit, units), panel, tile)`, and does `finish` to each
/// tile once its last block is done. `tile` must write every value of its tile in the first block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn blocked_product(
    b: Blocking,
    finish: Finish,
    tile: impl Fn(SharedOut, usize, (usize, usize, usize), usize, usize) + Sync,
) -> Vec<f32> {
    let tiles = b.rows.div_ceil(b.mr);
    let padded_rows = tiles * b.mr;
    // Columns padded to whole panels only when `n` is not a multiple of the panel (never for
    // CLIP's widths); rows padded to whole tiles, cut off at the end. Every element is written
    // by the first k block before it is read, so the buffer is not zeroed first (a pass over
    // the whole output, 6 % of a product's time).
    let n_panels = b.n.div_ceil(b.nr);
    let ldc = n_panels * b.nr;
    let mut c = Vec::<f32>::with_capacity(padded_rows * ldc);
    let out = SharedOut(c.as_mut_ptr());
    let k_blocks = b.units.div_ceil(b.block);
    for_each_tile_block(tiles, b.tiles_per_task, n_panels, |(t0, t1), (p0, p1)| {
        for kb in 0..k_blocks {
            let j0 = kb * b.block;
            let jn = b.block.min(b.units - j0);
            for p in p0..p1 {
                for t in t0..t1 {
                    if kb + 1 == k_blocks {
                        let (rows, cols) = ((t * b.mr, (t + 1) * b.mr), (p * b.nr, (p + 1) * b.nr));
                        finish.prefetch(rows, cols, b.rows, b.n);
                    }
                    tile(out, ldc, (kb, j0, jn), p, t);
                    if kb + 1 == k_blocks {
                        // The finished tile, while it is in L1 (a pass over the task's tiles
                        // afterwards would read them back from memory).
                        // SAFETY: this task's tile, all written above.
                        unsafe {
                            finish_tile(
                                finish,
                                out,
                                (t * b.mr, (t + 1) * b.mr),
                                (p * b.nr, (p + 1) * b.nr),
                                (ldc, b.rows, b.n),
                            )
                        };
                    }
                }
            }
        }
    });
    // SAFETY: the tasks above wrote every tile: all `padded_rows` rows, `ldc` columns.
    unsafe { finish_output(c, padded_rows, b.rows, ldc, b.n) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Blocking, Finish, KC, MB, MR, NR, PackedBf16, PackedF32, blocked_product};

    pub(super) fn linear(w: &PackedBf16, x: &[f32], rows: usize, finish: Finish) -> Vec<f32> {
        let (k, n, pairs) = (w.in_dim, w.out_dim, w.pairs);
        if rows == 0 || n == 0 {
            return Vec::new();
        }
        let tiles = rows.div_ceil(MR);
        let padded_rows = tiles * MR;
        // The inputs as bf16 rows of `pairs` 32-bit words, `lda` apart; padding rows and the
        // odd k are 0.
        let lda = super::row_stride(pairs);
        let (a, _) = super::input_rows(rows, padded_rows, lda, |r, dst| {
            // SAFETY: the feature was checked by `PackedBf16::linear`.
            unsafe { round_row(&x[r * k..(r + 1) * k], &mut dst[..pairs]) }
        });
        let blocking = Blocking {
            rows,
            n,
            mr: MR,
            nr: NR,
            units: pairs,
            block: super::block_units(pairs, KC / 2),
            tiles_per_task: MB,
        };
        blocked_product(blocking, finish, |out, ldc, (_, j0, jn), p, t| {
            let b = &w.panels[(p * pairs + j0) * NR..];
            let start = (j0 == 0).then(|| w.bias[p * NR..].as_ptr());
            let a_tile = &a[t * MR * lda + j0..];
            // SAFETY: the tile (rows t·MR.., columns p·NR..) lies in the output, written by
            // this task only; `a_tile` holds MR rows `lda` apart from `j0`, `b` holds `jn`
            // pairs of the panel, `start` NR values.
            unsafe {
                kernel(
                    jn,
                    a_tile.as_ptr(),
                    lda,
                    b.as_ptr(),
                    out.at(t * MR * ldc + p * NR),
                    ldc,
                    start,
                )
            }
        })
    }

    pub(super) fn linear_f32(w: &PackedF32, x: &[f32], rows: usize, finish: Finish) -> Vec<f32> {
        let (k, n) = (w.in_dim, w.out_dim);
        if rows == 0 || n == 0 {
            return Vec::new();
        }
        let tiles = rows.div_ceil(MR);
        let padded_rows = tiles * MR;
        // The inputs copied `lda` apart (an odd number of cache lines: see `row_stride`), as
        // f32 bits; padding rows are 0.
        let lda = super::row_stride(k);
        let (a, _) = super::input_rows(rows, padded_rows, lda, |r, dst| {
            for (d, &v) in dst[..k].iter_mut().zip(&x[r * k..(r + 1) * k]) {
                *d = v.to_bits();
            }
        });
        let blocking = Blocking {
            rows,
            n,
            mr: MR,
            nr: NR,
            units: k,
            block: super::block_units(k, KC),
            tiles_per_task: MB,
        };
        blocked_product(blocking, finish, |out, ldc, (_, j0, jn), p, t| {
            let b = &w.panels[(p * k + j0) * NR..];
            let start = (j0 == 0).then(|| w.bias[p * NR..].as_ptr());
            let a_tile = &a[t * MR * lda + j0..];
            // SAFETY: as in `linear`, with one f32 a k value.
            unsafe {
                kernel_f32(
                    jn,
                    a_tile.as_ptr() as *const f32,
                    lda,
                    b.as_ptr(),
                    out.at(t * MR * ldc + p * NR),
                    ldc,
                    start,
                )
            }
        })
    }

    /// `c[MR × NR] += a · b` over `k` values: `a` MR rows `lda` apart; `b` one panel's rows, NR
    /// values each; `c` rows `ldc` apart; `start` as in `kernel`.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        start: Option<*const f32>,
    ) {
        // SAFETY: the caller's promise on the extents.
        unsafe {
            let mut acc = start_tile(c, ldc, start);
            for j in 0..k {
                let bp = b.add(j * NR);
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*a.add(i * lda + j));
                    row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
                }
            }
            store_tile(&acc, c, ldc);
        }
    }

    /// An MR × NR tile's sums before a k block: the NR values at `start` in every row (the
    /// bias, first block), else the tile's rows of `c` (`ldc` apart).
    ///
    /// # Safety
    /// AVX-512F; `start` holds NR values, or `c` MR rows of NR.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn start_tile(
        c: *const f32,
        ldc: usize,
        start: Option<*const f32>,
    ) -> [[__m512; 2]; MR] {
        let (from, stride) = match start {
            Some(bias) => (bias, 0),
            None => (c, ldc),
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's promise.
            unsafe {
                row[0] = _mm512_loadu_ps(from.add(i * stride));
                row[1] = _mm512_loadu_ps(from.add(i * stride + 16));
            }
        }
        acc
    }

    /// The tile's sums written to `c`, rows `ldc` apart.
    ///
    /// # Safety
    /// AVX-512F; `c` holds MR writable rows of NR.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_tile(acc: &[[__m512; 2]; MR], c: *mut f32, ldc: usize) {
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the caller's promise.
            unsafe {
                _mm512_storeu_ps(c.add(i * ldc), row[0]);
                _mm512_storeu_ps(c.add(i * ldc + 16), row[1]);
            }
        }
    }

    /// One row rounded to bf16 (`vcvtneps2bf16`, nearest even), two values a word.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
        let full = src.len() / 32;
        for i in 0..full {
            // SAFETY: 32 values from 32·i are in `src`, 16 words from 16·i in `dst`
            // (dst holds src.len().div_ceil(2) words).
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(32 * i));
                let hi = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * i) as *mut _, packed);
            }
        }
        for j in 16 * full..dst.len() {
            let lo = super::bf16_bits(src[2 * j]) as u32;
            let hi = src
                .get(2 * j + 1)
                .map_or(0, |&v| super::bf16_bits(v) as u32);
            dst[j] = lo | hi << 16;
        }
    }

    /// `c[MR × NR] += a · b` over `pairs` k-pairs: `a` MR rows of bf16 pairs, `lda` words apart;
    /// `b` one panel's pairs, NR words each; `c` rows `ldc` apart. With `start` (the first k
    /// block), the sums start from those NR values in every row instead of from `c`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel(
        pairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        start: Option<*const f32>,
    ) {
        // SAFETY: the caller's promise on the extents.
        unsafe {
            let mut acc = start_tile(c, ldc, start);
            for j in 0..pairs {
                let bp = b.add(j * NR);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + j) as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
                }
            }
            store_tile(&acc, c, ldc);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `n` pseudo-random values in [−0.5, 0.5) (a linear congruential sequence from `seed`),
    /// the inputs of the packed products' tests here and in `int8`.
    pub(in crate::models) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn k_is_cut_into_as_few_equal_blocks_as_fit() {
        assert_eq!(block_units(384, 1536), 384);
        assert_eq!(block_units(1536, 1536), 1536);
        // 1,537 units: two blocks of 769 (769 + 768), not 1,536 + 1.
        assert_eq!(block_units(1537, 1536), 769);
        assert_eq!(block_units(3073, 1536), 1025);
        assert_eq!(block_units(1, 1536), 1);
    }

    #[test]
    fn input_rows_are_an_odd_number_of_cache_lines_apart() {
        for words in [1, 15, 16, 17, 384, 512, 1024, 1536, 3000] {
            let stride = row_stride(words);
            assert!(stride >= words && stride < words + 32, "{words}: {stride}");
            assert_eq!(stride % 16, 0, "{words}: whole lines");
            assert_eq!(stride / 16 % 2, 1, "{words}: an odd number of lines");
        }
        // k = 2,048 in bf16: 1,024 words (4 KiB) become 1,040.
        assert_eq!(row_stride(1024), 1040);
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_value(bf16_bits(1.0)), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even one (1).
        assert_eq!(bf16_value(bf16_bits(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        assert_eq!(
            bf16_value(bf16_bits(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
    }

    /// The f32 product at odd sizes on every side (padding), few rows (a column split) and two
    /// k blocks (k > KC), against a plain f64 sum: f32 rounding only; and a residual added by
    /// the product equals the sum afterwards, to the bit.
    #[test]
    fn the_packed_f32_product_is_the_plain_product() {
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96), (130, 3101, 70), (1, 1, 1)] {
            let x = values(rows * k, 4);
            let w = values(n * k, 5);
            let bias = values(n, 6);
            let packed = PackedF32::pack(&w, Some(&bias), n, k).unwrap();
            let got = match packed.linear_then(&x, rows, Finish::Nothing) {
                Ok(got) => got,
                Err(e) => {
                    assert!(!f32_packed_available());
                    assert!(e.to_string().contains("AVX-512"), "{e}");
                    return;
                }
            };
            assert_eq!(got.len(), rows * n);
            let mut worst = 0f64;
            for r in 0..rows {
                for c in 0..n {
                    let mut exact = bias[c] as f64;
                    for i in 0..k {
                        exact += x[r * k + i] as f64 * w[c * k + i] as f64;
                    }
                    worst = worst.max((got[r * n + c] as f64 - exact).abs());
                }
            }
            assert!(worst < 2e-5 * (k as f64).sqrt(), "{rows}×{k}×{n}: {worst}");
            let residual = values(rows * n, 7);
            let plus = packed
                .linear_then(&x, rows, Finish::AddTo(&residual))
                .unwrap();
            for ((p, g), r) in plus.iter().zip(&got).zip(&residual) {
                assert_eq!(p.to_bits(), (g + r).to_bits());
            }
        }
    }

    /// Odd sizes on every side (rows, k, out) exercise the padding; a column split (few rows)
    /// and two k blocks (k > KC) the task grid. The kernel must equal the same bf16
    /// rounding computed plainly, up to f32 summation order.
    #[test]
    fn the_bf16_product_is_the_product_of_the_rounded_values() {
        for &(rows, k, n) in &[(37, 301, 45), (3, 64, 96), (130, 3101, 70)] {
            let x = values(rows * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let packed = PackedBf16::pack(&w, Some(&bias), n, k).unwrap();
            let got = match packed.linear(&x, rows) {
                Ok(got) => got,
                Err(e) => {
                    // Not this CPU's feature: refused, with the reason.
                    assert!(!bf16_available());
                    assert!(e.to_string().contains("AVX512-BF16"), "{e}");
                    assert!(Precision::Bf16.check(&Device::Cpu).is_err());
                    return;
                }
            };
            let round = |v: f32| bf16_value(bf16_bits(v)) as f64;
            let mut worst_rounded = 0f64;
            let mut worst_exact = 0f64;
            for r in 0..rows {
                for c in 0..n {
                    let (mut rounded, mut exact) = (bias[c] as f64, bias[c] as f64);
                    for i in 0..k {
                        rounded += round(x[r * k + i]) * round(w[c * k + i]);
                        exact += x[r * k + i] as f64 * w[c * k + i] as f64;
                    }
                    let g = got[r * n + c] as f64;
                    worst_rounded = worst_rounded.max((g - rounded).abs());
                    worst_exact = worst_exact.max((g - exact).abs());
                }
            }
            assert_eq!(got.len(), rows * n);
            assert!(worst_rounded < 1e-4, "{rows}×{k}×{n}: {worst_rounded}");
            // …and differ from the f32 product by bf16's rounding (8 bits of mantissa).
            assert!(worst_exact > 1e-4 && worst_exact < 0.05, "{worst_exact}");
        }
    }
}
