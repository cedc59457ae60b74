//! Element-wise maths over `f32` slices, written so that the compiler vectorises it: a
//! branch-free [`exp`], the row [`softmax`] and [`log_sum_exp`] built on it, and [`map`] /
//! [`map_in_place`] for activations and their derivatives.
//!
//! Why by hand: libm's `expf` is one scalar call per element, which no compiler vectorises, and
//! a float sum in one accumulator cannot be reordered into vector lanes. Profiled on the AMD
//! host, `expf` alone was ~5 % of a bf16 image batch (softmax and quick GELU) and the loops
//! calling it another few percent; a ClipCap training step takes it over the full 50,257-word
//! vocabulary for every token. No crate in use offers a vectorised `exp` on slices (candle's
//! CPU `exp` is the same scalar call).
//!
//! Each slice function is compiled three times (AVX-512, AVX2 + FMA, the x86-64 baseline) and
//! picks the best the CPU has at run time ([`crate::simd`]).

use crate::simd::multiversioned;

/// `eˣ` to within ~2 ulp (relative error < 3·10⁻⁷) on [−87, 88]; 0 below −87 (where `eˣ` is
/// already under 1.7·10⁻³⁸) and +∞ above 88 (f32 overflows at 88.72); NaN stays NaN.
///
/// `eˣ = 2ⁿ · eʳ` with `n = round(x · log₂e)` and `r = x − n · ln 2` in about ±ln 2 / 2
/// (ln 2 split in a 9-bit head, exact times any `n` here, and a tail); `eʳ` by Cephes' `expf`
/// polynomial; `2ⁿ` written straight into the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding 1.5 · 2²³ rounds to an integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HEAD: f32 = 0.693_359_4;
    const LN2_TAIL: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HEAD) - n * LN2_TAIL;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // The low 9 bits of `shifted`'s pattern are n (two's complement); n + 127 is 2ⁿ's exponent.
    let two_n = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    let y = e_r * two_n;
    if x < -87.0 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else {
        y
    }
}

/// Lanes of the partial sums and maxima: 16 = one AVX-512 register (two AVX2 ones).
const LANES: usize = 16;

#[inline(always)]
fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    rest.iter()
        .copied()
        .fold(fold_lanes(acc, f32::max), f32::max)
}

/// The lanes combined by `f` in halves (8 + 8, 4 + 4, …): a few vector operations, where one
/// lane after another is a chain of 15 dependent scalar ones, the cost of a short row.
#[inline(always)]
fn fold_lanes(mut acc: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            acc[i] = f(acc[i], acc[i + half]);
        }
        half /= 2;
    }
    acc[0]
}

#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    fold_lanes(acc, |a, b| a + b) + rest.iter().sum::<f32>()
}

#[inline(always)]
fn softmax_plain(row: &mut [f32]) -> f32 {
    let (max, sum) = softmax_row(row);
    max + sum.ln()
}

/// `row ← softmax(row)`; returns the row's maximum and the sum of the shifted exponentials.
#[inline(always)]
fn softmax_row(row: &mut [f32]) -> (f32, f32) {
    let max = max_lanes(row);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let sum = sum_lanes(row);
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
    (max, sum)
}

#[inline(always)]
fn softmax_rows_plain(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width.max(1)) {
        softmax_row(row);
    }
}

#[inline(always)]
fn log_sum_exp_plain(row: &[f32]) -> f32 {
    let max = max_lanes(row);
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += exp(x - max);
        }
    }
    let sum = acc.iter().sum::<f32>() + rest.iter().map(|&x| exp(x - max)).sum::<f32>();
    max + sum.ln()
}

#[inline(always)]
fn map_plain(xs: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = f(x);
    }
}

#[inline(always)]
fn map_in_place_plain(ys: &mut [f32], xs: &[f32], f: impl Fn(f32, f32) -> f32) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = f(*y, x);
    }
}

#[inline(always)]
fn mean_and_rstd_plain(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = sum_lanes(row) / d;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x - mean) * (x - mean);
        }
    }
    let var =
        (acc.iter().sum::<f32>() + rest.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>()) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn layer_norm_row_plain(x: &[f32], out: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, rstd) = mean_and_rstd_plain(x, eps);
    for (((o, &x), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (x - mean) * rstd * w + b;
    }
}

multiversioned! {
    /// A row's mean and `1 / √(variance + eps)` (the biased variance, as LayerNorm takes it),
    /// summed in vector lanes: a sum in one accumulator waits on each add in turn.
    fn mean_and_rstd(row: &[f32], eps: f32) -> (f32, f32) = mean_and_rstd_plain
}

multiversioned! {
    /// `out = (x − mean) / √(variance + eps) · w + b` over one row: LayerNorm's forward pass.
    fn layer_norm_row(x: &[f32], out: &mut [f32], w: &[f32], b: &[f32], eps: f32) = layer_norm_row_plain
}

#[inline(always)]
fn apply_plain(ys: &mut [f32], f: impl Fn(f32) -> f32) {
    for y in ys {
        *y = f(*y);
    }
}

multiversioned! {
    /// `ys[i] = f(ys[i])` in place: an activation applied where a product left its output.
    fn apply<F: Fn(f32) -> f32>(ys: &mut [f32], f: F) = apply_plain
}

#[inline(always)]
fn apply_rows_plain(rows: &mut [&mut [f32]], f: impl Fn(f32) -> f32) {
    for row in rows {
        // In whole vectors: a loop over a short row would be unrolled past its length and
        // leave it all to the scalar remainder.
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for y in c {
                *y = f(*y);
            }
        }
        for y in chunks.into_remainder() {
            *y = f(*y);
        }
    }
}

multiversioned! {
    /// [`apply`] over several rows in one call: a product's output tile, rows apart in memory,
    /// activated while it is in L1 (a call a row costs as much as the row's maths).
    fn apply_rows<F: Fn(f32) -> f32>(rows: &mut [&mut [f32]], f: F) = apply_rows_plain
}

multiversioned! {
    /// `row ← softmax(row)` in place; returns `ln Σ exp(row)` of the input (its normaliser).
    fn softmax(row: &mut [f32]) -> f32 = softmax_plain
}

multiversioned! {
    /// Each `width`-long row of `rows` ← its softmax, in one call and without the normaliser's
    /// logarithm: for many short rows (attention's), where both would cost as much as the rows.
    /// `-∞` entries come out 0 (hidden keys).
    fn softmax_rows(rows: &mut [f32], width: usize) = softmax_rows_plain
}

multiversioned! {
    /// `ln Σ exp(row)`, shifted by the row's maximum so that nothing overflows.
    fn log_sum_exp(row: &[f32]) -> f32 = log_sum_exp_plain
}

multiversioned! {
    /// `out[i] = f(xs[i])` (over the shorter of the two). `f` should be `#[inline(always)]`
    /// arithmetic (with [`exp`]) for the loop to vectorise.
    fn map<F: Fn(f32) -> f32>(xs: &[f32], out: &mut [f32], f: F) = map_plain
}

multiversioned! {
    /// `ys[i] = f(ys[i], xs[i])` (over the shorter of the two): a gradient times a derivative.
    fn map_in_place<F: Fn(f32, f32) -> f32>(ys: &mut [f32], xs: &[f32], f: F) = map_in_place_plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            let rel = ((exp(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
            x += 0.000_7;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert!(worst > 0.0, "compared against itself?");
        // And at the points where the reduction changes n, and at whole numbers.
        for k in -125..=126 {
            for x in [
                k as f32 * std::f32::consts::LN_2,
                k as f32 * 0.69,
                k as f32 * 0.5,
            ] {
                if (-87.0..=88.0).contains(&x) {
                    let exact = (x as f64).exp();
                    let rel = ((exp(x) as f64) - exact).abs() / exact;
                    assert!(rel < 3e-7, "exp({x}) off by {rel:e}");
                }
            }
        }
    }

    #[test]
    fn exp_saturates_outside_its_range_and_keeps_nan() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-86.9) > 0.0 && exp(87.9).is_finite());
    }

    /// A row of `n` values spread over ±`spread`, deterministic.
    fn row(n: usize, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * spread)
            .collect()
    }

    #[test]
    fn softmax_and_log_sum_exp_match_a_plain_f64_computation() {
        // Lengths around the 16 lanes, the image and text towers' 50 and 77, and a vocabulary.
        for n in [1, 15, 16, 17, 50, 77, 50_257] {
            for spread in [0.1, 30.0] {
                let xs = row(n, spread);
                let max = xs.iter().copied().fold(f64::MIN, |m, x| m.max(x as f64));
                let sum: f64 = xs.iter().map(|&x| (x as f64 - max).exp()).sum();
                let lse = max + sum.ln();
                let got = log_sum_exp(&xs);
                assert!(
                    (got as f64 - lse).abs() < 1e-5 * lse.abs().max(1.0),
                    "n {n}: {got} vs {lse}"
                );
                let mut p = xs.clone();
                let normaliser = softmax(&mut p);
                assert!((normaliser as f64 - lse).abs() < 1e-5 * lse.abs().max(1.0));
                for (&pi, &x) in p.iter().zip(&xs) {
                    let exact = (x as f64 - lse).exp();
                    assert!(
                        (pi as f64 - exact).abs() < 1e-6 * exact.max(1e-3),
                        "n {n}: {pi} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_computes_the_same_bits() {
        // The dispatched copies (AVX-512 or AVX2 here) against the plain baseline code: the
        // sums run in the same lane order and nothing is contracted into an FMA, so the
        // vectorised results are the scalar ones exactly.
        for n in [7, 50, 77, 1_000] {
            let xs = row(n, 20.0);
            let (mut a, mut b) = (xs.clone(), xs.clone());
            assert_eq!(softmax(&mut a).to_bits(), softmax_plain(&mut b).to_bits());
            assert_eq!(a, b);
            assert_eq!(log_sum_exp(&xs).to_bits(), log_sum_exp_plain(&xs).to_bits());
            let f = |x: f32| x / (1.0 + exp(-1.702 * x));
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            map(&xs, &mut a, f);
            map_plain(&xs, &mut b, f);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn the_maps_apply_the_function_to_every_element() {
        let xs = row(1_000, 5.0);
        let mut out = vec![f32::NAN; xs.len()];
        map(&xs, &mut out, |x| x / (1.0 + exp(-1.702 * x)));
        for (&o, &x) in out.iter().zip(&xs) {
            let exact = x as f64 / (1.0 + (-1.702 * x as f64).exp());
            assert!((o as f64 - exact).abs() < 1e-6, "{o} vs {exact}");
        }
        let mut ys = vec![2.0f32; xs.len()];
        map_in_place(&mut ys, &xs, |y, x| y * x);
        for (&y, &x) in ys.iter().zip(&xs) {
            assert_eq!(y, 2.0 * x);
        }
        apply(&mut ys, |y| y + 1.0);
        // LayerNorm's statistics against a plain f64 computation, at a length with a remainder.
        let row: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let mean64 = row.iter().map(|&x| x as f64).sum::<f64>() / 37.0;
        let var64 = row
            .iter()
            .map(|&x| (x as f64 - mean64).powi(2))
            .sum::<f64>()
            / 37.0;
        let (mean, rstd) = mean_and_rstd(&row, 1e-5);
        assert!((mean as f64 - mean64).abs() < 1e-6, "{mean} {mean64}");
        assert!((rstd as f64 - 1.0 / (var64 + 1e-5).sqrt()).abs() < 1e-5);
        let mut normed = vec![0f32; 37];
        let (w, b) = (vec![2.0f32; 37], vec![0.5f32; 37]);
        layer_norm_row(&row, &mut normed, &w, &b, 1e-5);
        for (&n, &x) in normed.iter().zip(&row) {
            let want = (x as f64 - mean64) / (var64 + 1e-5).sqrt() * 2.0 + 0.5;
            assert!((n as f64 - want).abs() < 1e-5, "{n} {want}");
        }
        for (&y, &x) in ys.iter().zip(&xs) {
            assert_eq!(y, 2.0 * x + 1.0);
        }
    }
}
