//! Inference attention for short sequences (CLIP's 50 image tokens, a prompt's dozen) on
//! AVX-512: every head's `softmax(s · q·kᵀ) · v` straight from the fused `qkv` rows, in f32.
//!
//! Why by hand: the products of one head are tiny (50 × 50 × 64), and the `gemm` crate packs
//! both operands and dispatches for each of them: profiled on the 2-core AMD host, attention
//! ran at ~83 GFLOP/s at ViT-B/32's shapes and ~43 at a prompt's, 8 % of an int8 image batch.
//! Here a head transposes its keys once into a scratch block, then takes its queries six at a
//! time: their scores against every visible key are summed in registers (6 rows × up to 64
//! keys), scaled, turned into probabilities while they are in L1, and multiplied by the values
//! in registers again (6 rows × up to 64 of the head's columns). The sums run in `k` order,
//! like a plain dot product; results differ from the `gemm` crate's only by rounding. Same
//! host: 2.98 → 2.40 ms a layer for 32 images, 0.86 → ~0.55 ms for 64 prompts of 20 tokens.
//!
//! [`available`] says whether this path runs; `cpu_kernels`' attention falls back to the `gemm`
//! crate where it does not (no AVX-512, or a head size that is not a multiple of 16).

use rayon::prelude::*;

use super::vector_math;

/// Lanes of an AVX-512 register: keys (scores) and a head's columns (outputs) go 16 at a time.
const LANES: usize = 16;
/// Query rows of a tile: 6 rows × 4 registers of sums, 4 of operands and a broadcast fill 29
/// of the 32 registers.
const ROWS: usize = 6;
/// Registers of sums a row at most (64 keys or columns); wider rows go in groups.
const GROUP: usize = 4;
/// Work per task, in multiply-adds, below which heads are grouped into one task (a prompt's
/// head is ~10⁴, less than rayon's cost of handing it out).
const TASK_WORK: usize = 1 << 18;

/// Whether this CPU and build run [`attention`] for a head size of `head_dim`.
pub fn available(head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        head_dim > 0
            && head_dim.is_multiple_of(LANES)
            && cfg!(feature = "avx512")
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = head_dim;
        false
    }
}

/// Multi-head attention of `qkv` `(b, t, 3·d)` (queries, keys, values side by side, heads
/// `d / heads` wide), scores scaled by `head_dim^-0.5`, `causal` hiding later keys. Returns
/// `(b, t, d)`. Only where [`available`] says so.
pub fn attention(
    qkv: &[f32],
    (b, t, d3): (usize, usize, usize),
    heads: usize,
    causal: bool,
) -> Vec<f32> {
    let d = d3 / 3;
    let hd = d / heads;
    assert!(
        available(hd) && hd * heads == d && d * 3 == d3 && qkv.len() == b * t * d3,
        "short attention: unsupported shape or CPU"
    );
    if t == 0 || b == 0 {
        return Vec::new();
    }
    // Every value is written below (each head's columns of each row), so the output is not
    // zeroed first.
    let len = b * t * d;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let keys = t.next_multiple_of(LANES);
    let per_head = t * t * hd;
    let min_len = (TASK_WORK / per_head.max(1)).clamp(1, heads);
    let shared = OutRows(out.as_mut_ptr());
    (0..b * heads)
        .into_par_iter()
        .with_min_len(min_len)
        .for_each_init(
            || Scratch {
                keys_t: vec![0f32; hd * keys],
                probs: vec![0f32; ROWS * keys],
            },
            |scratch, task| {
                let (bi, head) = (task / heads, task % heads);
                let block = &qkv[bi * t * d3..(bi + 1) * t * d3];
                let shape = Head {
                    t,
                    hd,
                    d3,
                    keys,
                    ld_out: d,
                    causal,
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available` checked AVX-512F; the task writes only columns
                // `head·hd..` of rows `bi·t..` of the output, no other task's.
                unsafe {
                    x86::head(
                        shape,
                        &block[head * hd..],
                        &block[d + head * hd..],
                        &block[2 * d + head * hd..],
                        shared.at(bi * t * d + head * hd),
                        scratch,
                    )
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (shape, block, head, scratch);
            },
        );
    // SAFETY: the tasks above wrote all `len` values (rows `t`, heads `heads` of `hd`).
    unsafe { out.set_len(len) };
    out
}

/// A task's scratch: the head's keys transposed (`hd` rows of `keys` values) and a tile's
/// probabilities (`ROWS` rows of at most `keys`).
struct Scratch {
    keys_t: Vec<f32>,
    probs: Vec<f32>,
}

/// The sizes one head's work needs.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Head {
    t: usize,
    hd: usize,
    /// Distance between `qkv` rows.
    d3: usize,
    /// `t` rounded up to whole registers.
    keys: usize,
    /// Distance between output rows.
    ld_out: usize,
    causal: bool,
}

#[derive(Clone, Copy)]
struct OutRows(*mut f32);

impl OutRows {
    /// The output at `offset` (a method, so that closures capture the `Send` wrapper).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the output they were given.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: the tasks write disjoint (row, head) blocks and finish before `attention` returns.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, Head, LANES, ROWS, Scratch, vector_math};

    /// Calls `$tile::<R, C>` for the runtime `(rows, regs)`, 1 ≤ rows ≤ 6, 1 ≤ regs ≤ 4: the
    /// sums stay in registers only when their count is known at compile time.
    macro_rules! by_shape {
        ($tile:ident, $rows:expr, $regs:expr, $($arg:expr),*) => {
            match ($rows, $regs) {
                (1, 1) => $tile::<1, 1>($($arg),*),
                (1, 2) => $tile::<1, 2>($($arg),*),
                (1, 3) => $tile::<1, 3>($($arg),*),
                (1, _) => $tile::<1, 4>($($arg),*),
                (2, 1) => $tile::<2, 1>($($arg),*),
                (2, 2) => $tile::<2, 2>($($arg),*),
                (2, 3) => $tile::<2, 3>($($arg),*),
                (2, _) => $tile::<2, 4>($($arg),*),
                (3, 1) => $tile::<3, 1>($($arg),*),
                (3, 2) => $tile::<3, 2>($($arg),*),
                (3, 3) => $tile::<3, 3>($($arg),*),
                (3, _) => $tile::<3, 4>($($arg),*),
                (4, 1) => $tile::<4, 1>($($arg),*),
                (4, 2) => $tile::<4, 2>($($arg),*),
                (4, 3) => $tile::<4, 3>($($arg),*),
                (4, _) => $tile::<4, 4>($($arg),*),
                (5, 1) => $tile::<5, 1>($($arg),*),
                (5, 2) => $tile::<5, 2>($($arg),*),
                (5, 3) => $tile::<5, 3>($($arg),*),
                (5, _) => $tile::<5, 4>($($arg),*),
                (_, 1) => $tile::<6, 1>($($arg),*),
                (_, 2) => $tile::<6, 2>($($arg),*),
                (_, 3) => $tile::<6, 3>($($arg),*),
                (_, _) => $tile::<6, 4>($($arg),*),
            }
        };
    }

    /// One head of one sequence: `q`, `k`, `v` start at its columns of the sequence's first
    /// `qkv` row (rows `d3` apart), `out` at its columns of the first output row.
    ///
    /// # Safety
    /// AVX-512F is available; `q`, `k`, `v` hold `t` rows of `hd` values `d3` apart; `out` has
    /// `t` rows of `hd` writable values `ld_out` apart that no one else touches; the scratch
    /// was sized for `hd` and `keys`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head(
        s: Head,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: *mut f32,
        scratch: &mut Scratch,
    ) {
        let Head {
            t,
            hd,
            d3,
            keys,
            ld_out,
            causal,
        } = s;
        // Keys transposed: column j of `keys_t` is key j, so a register holds 16 keys' values
        // of one dimension. Padding columns repeat the last key (a fixed count of loads keeps
        // the block in registers); their scores are replaced by −∞ below.
        let kt = scratch.keys_t.as_mut_ptr();
        for j0 in (0..t).step_by(LANES) {
            let last = LANES.min(t - j0) - 1;
            for c in (0..hd).step_by(LANES) {
                // SAFETY: key rows j0..=j0 + last hold hd values from `k`'s row starts; the 16
                // rows of `keys_t` from c hold `keys` ≥ j0 + 16 values.
                unsafe {
                    let mut block = [_mm512_setzero_ps(); LANES];
                    for (r, row) in block.iter_mut().enumerate() {
                        *row = _mm512_loadu_ps(k.as_ptr().add((j0 + r.min(last)) * d3 + c));
                    }
                    for (col, v) in transpose16(block).into_iter().enumerate() {
                        _mm512_storeu_ps(kt.add((c + col) * keys + j0), v);
                    }
                }
            }
        }
        let scale = (hd as f32).powf(-0.5);
        let probs = &mut scratch.probs;
        for i0 in (0..t).step_by(ROWS) {
            let rows = ROWS.min(t - i0);
            // Keys any row of the tile sees: all, or up to its last row when causal; the
            // tile's probabilities are `width` apart.
            let seen = if causal { i0 + rows } else { t };
            let key_regs = seen.div_ceil(LANES);
            let width = key_regs * LANES;
            let qt = q[i0 * d3..].as_ptr();
            for g in (0..key_regs).step_by(GROUP) {
                let regs = GROUP.min(key_regs - g);
                let kt_g = kt.wrapping_add(g * LANES).cast_const();
                let p_g = probs[g * LANES..].as_mut_ptr();
                // SAFETY: `rows` query rows from `qt`, `hd` rows of `keys` keys in `kt`
                // from column g·16, `regs` registers of each fit in `keys`; `probs` has
                // `rows` rows of `width` ≤ `keys`.
                unsafe {
                    by_shape!(
                        product_tile,
                        rows,
                        regs,
                        (qt, d3),
                        (kt_g, keys),
                        hd,
                        (p_g, width),
                        scale
                    )
                };
            }
            // Hidden and padding keys get −∞, which the softmax turns into 0.
            for r in 0..rows {
                let visible = if causal { i0 + r + 1 } else { t };
                probs[r * width + visible..(r + 1) * width].fill(f32::NEG_INFINITY);
            }
            vector_math::softmax_rows(&mut probs[..rows * width], width);
            for g in (0..hd / LANES).step_by(GROUP) {
                let regs = GROUP.min(hd / LANES - g);
                let v_g = v[g * LANES..].as_ptr();
                // SAFETY: `seen` value rows from `v_g`, `regs` registers of each inside the
                // head's columns; the output rows i0.. of this head are this task's.
                unsafe {
                    let (p, o) = (probs.as_ptr(), out.add(i0 * ld_out + g * LANES));
                    by_shape!(
                        product_tile,
                        rows,
                        regs,
                        (p, width),
                        (v_g, d3),
                        seen,
                        (o, ld_out),
                        1.0
                    )
                };
            }
        }
    }

    /// The 16 × 16 block `rows` transposed: four rounds of in-lane unpacks and lane shuffles
    /// (64 shuffles for 256 values, against one scalar store each).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(rows: [__m512; LANES]) -> [__m512; LANES] {
        let mut t = [_mm512_setzero_ps(); LANES];
        for i in 0..8 {
            // (a0 b0 a1 b1 | a4 b4 a5 b5 | …) and (a2 b2 a3 b3 | …) from rows a, b.
            t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); LANES];
        for i in 0..4 {
            let (a, b, c, d) = (
                _mm512_castps_pd(t[4 * i]),
                _mm512_castps_pd(t[4 * i + 1]),
                _mm512_castps_pd(t[4 * i + 2]),
                _mm512_castps_pd(t[4 * i + 3]),
            );
            // u[4i + m], 128-bit lane L: column 4L + m of rows 4i..4i + 4.
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        let mut out = [_mm512_setzero_ps(); LANES];
        for m in 0..4 {
            // Column 4L + m gathers lane L of u[m], u[4 + m], u[8 + m], u[12 + m].
            let v0 = _mm512_shuffle_f32x4::<0x44>(u[m], u[4 + m]);
            let v1 = _mm512_shuffle_f32x4::<0xEE>(u[m], u[4 + m]);
            let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + m], u[12 + m]);
            let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + m], u[12 + m]);
            out[m] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
            out[4 + m] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
            out[8 + m] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
            out[12 + m] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
        }
        out
    }

    /// `out[r][c·16..] = scale · Σⱼ a[r][j] · b[j][c·16..]` over `depth` values of j, for R rows
    /// and C registers: the scores (a = queries, b = keys transposed) and the outputs (a =
    /// probabilities, b = values, scale 1, which is exact).
    #[target_feature(enable = "avx512f")]
    unsafe fn product_tile<const R: usize, const C: usize>(
        (a, lda): (*const f32, usize),
        (b, ldb): (*const f32, usize),
        depth: usize,
        (out, ldo): (*mut f32, usize),
        scale: f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for j in 0..depth {
            // SAFETY: the caller's bounds (see `head`).
            unsafe {
                let mut bj = [_mm512_setzero_ps(); C];
                for (c, bj) in bj.iter_mut().enumerate() {
                    *bj = _mm512_loadu_ps(b.add(j * ldb + c * LANES));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let arj = _mm512_set1_ps(*a.add(r * lda + j));
                    for (acc, &bj) in acc.iter_mut().zip(&bj) {
                        *acc = _mm512_fmadd_ps(arj, bj, *acc);
                    }
                }
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (r, acc) in acc.iter().enumerate() {
            for (c, &acc) in acc.iter().enumerate() {
                // SAFETY: as above.
                unsafe {
                    _mm512_storeu_ps(out.add(r * ldo + c * LANES), _mm512_mul_ps(acc, scale))
                };
            }
        }
    }
}
