//! Multinomial logistic regression with an L2 penalty, fitted by L-BFGS: scikit-learn's
//! `LogisticRegression(C=…)` objective (the same minimiser), optionally pulled towards an
//! anchor — the zero-shot text classifier — instead of towards zero.
//!
//! Minimised, per example (scikit-learn's objective divided by `C · n`, which keeps the
//! minimiser and makes the gradient tolerance independent of the data set's size):
//!
//! ```text
//! f(W, b) = 1/n Σᵢ [logsumexp(W xᵢ + b) − (W xᵢ + b)_{yᵢ}] + 1/(2 C n) (‖W − W₀‖² + [b penalised] ‖b − b₀‖²)
//! ```
//!
//! L-BFGS is written here rather than taken from `argmin`: argmin's solvers ask for the cost and
//! the gradient in separate calls, which would double the passes over the examples, and the
//! two-loop recursion with a backtracking line search is forty lines. The passes themselves are
//! two matrix products (candle's, the `gemm` crate underneath) per evaluation.
//!
//! With an unpenalised intercept the examples are centred first: `W (x − μ) + b'` is the same
//! model as `W x + b` with `b = b' − W μ` and the same penalty, so the minimiser is unchanged,
//! but L-BFGS converges in far fewer iterations (CLIP embeddings share a large common
//! component, which otherwise couples every weight with the intercept). They are whitened too
//! (`x̃ = L⁻¹ (x − μ)` with `L Lᵀ` their covariance, a Cholesky factor): the fit then runs over
//! `V = W L`, whose loss is about equally curved in every direction, and the penalty is kept on
//! `W = V L⁻¹` exactly (the covariance gets a ridge of the penalty's size, see [`fit`]).

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};

/// What to fit: examples (rows of unit-length embeddings) with their class indices.
pub struct Problem<'a> {
    /// `n × d`, row-major.
    pub x: &'a [f32],
    pub y: &'a [usize],
    pub dim: usize,
    pub classes: usize,
    /// scikit-learn's C: the inverse of the penalty's strength.
    pub c: f64,
    /// What the penalty pulls towards (`W₀` as `classes × dim` row-major, and `b₀`); zero when
    /// `None`.
    pub anchor: Option<(&'a [f32], &'a [f32])>,
    /// Whether the intercept is penalised too (scikit-learn does not penalise it; a fit pulled
    /// towards the zero-shot classifier must, or a class absent from a cross-validation fold
    /// would get an intercept of −∞).
    pub penalise_bias: bool,
}

/// A fitted linear classifier: `logits = W x + b`.
#[derive(Debug, Clone)]
pub struct Fit {
    /// `classes × dim`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub iterations: usize,
    /// Whether the gradient fell below the tolerance (else the iteration limit or the line
    /// search stopped it).
    pub converged: bool,
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    /// Largest gradient component of the per-example objective.
    pub gradient: f64,
    pub max_iterations: usize,
}

impl Default for Stopping {
    fn default() -> Self {
        Self {
            gradient: 1e-6,
            max_iterations: 2000,
        }
    }
}

/// Fits `problem`, starting from `start` (a previous fit, e.g. at a neighbouring C) or from the
/// anchor (zero without one).
pub fn fit(problem: &Problem, start: Option<&Fit>, stop: Stopping) -> Result<Fit> {
    let (n, d, k) = (problem.y.len(), problem.dim, problem.classes);
    if n == 0 {
        bail!("no examples to fit");
    }
    if problem.x.len() != n * d {
        bail!(
            "{} values for {n} examples of {d} dimensions",
            problem.x.len()
        );
    }
    if let Some(&bad) = problem.y.iter().find(|&&c| c >= k) {
        bail!("class index {bad} of {k} classes");
    }
    if !(problem.c > 0.0 && problem.c.is_finite()) {
        bail!("C must be a positive number, not {}", problem.c);
    }
    // Centre and whiten unless the intercept is penalised (see the module's comment).
    let whiten = !problem.penalise_bias;
    let mean: Vec<f32> = if whiten {
        let mut m = vec![0f64; d];
        for row in problem.x.chunks_exact(d) {
            for (a, &v) in m.iter_mut().zip(row) {
                *a += v as f64;
            }
        }
        m.into_iter().map(|v| (v / n as f64) as f32).collect()
    } else {
        vec![0.0; d]
    };
    let centred: Vec<f32> = problem
        .x
        .chunks_exact(d)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| v - m))
        .collect();
    let mut x = Tensor::from_vec(centred, (n, d), &Device::Cpu)?;
    let transform = if whiten {
        let cov: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
        let mut cov: Vec<f64> = cov.iter().map(|&v| v as f64 / n as f64).collect();
        // The loss's curvature is about Σ / k (softmax's at uniform probabilities), the
        // penalty's I / (C n): whitening with Σ + k I / (C n) makes their sum about equally
        // curved in every direction, whether the penalty or the data dominates (whitening with
        // Σ alone made strongly penalised fits worse).
        let ridge = k as f64 / (problem.c * n as f64)
            + 1e-9 * (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d as f64;
        for i in 0..d {
            cov[i * d + i] += ridge;
        }
        let l = cholesky(&cov, d)?;
        let l_inv = lower_inverse(&l, d);
        let t: Vec<f32> = l_inv.iter().map(|&v| v as f32).collect();
        x = x.matmul(&Tensor::from_vec(t, (d, d), &Device::Cpu)?.t()?)?;
        Some((l, l_inv))
    } else {
        None
    };
    let objective = Objective {
        x: x.flatten_all()?.to_vec1()?,
        y: problem.y,
        n,
        d,
        k,
        strength: 1.0 / (problem.c * n as f64),
        anchor: problem.anchor.map(|(w, b)| {
            (
                w.iter().map(|&v| v as f64).collect(),
                b.iter().map(|&v| v as f64).collect(),
            )
        }),
        penalise_bias: problem.penalise_bias,
        l_inv: transform.as_ref().map(|t| t.1.clone()),
    };
    // Parameters: W row-major, then b (in centred coordinates: b' = b + W μ).
    let mut theta: Vec<f64> = match (start, &objective.anchor) {
        (Some(s), _) => s.weight.iter().chain(&s.bias).map(|&v| v as f64).collect(),
        (None, Some((w, b))) => w.iter().chain(b).copied().collect(),
        (None, None) => vec![0.0; k * d + k],
    };
    shift_bias(&mut theta, &mean, k, d, 1.0);
    if let Some((l, _)) = &transform {
        // V = W L.
        let v = matmul(&theta[..k * d], l, k, d, d);
        theta[..k * d].copy_from_slice(&v);
    }
    let (mut theta, iterations, converged) = lbfgs(&objective, theta, stop)?;
    if let Some((_, l_inv)) = &transform {
        let w = matmul(&theta[..k * d], l_inv, k, d, d);
        theta[..k * d].copy_from_slice(&w);
    }
    shift_bias(&mut theta, &mean, k, d, -1.0);
    Ok(Fit {
        weight: theta[..k * d].iter().map(|&v| v as f32).collect(),
        bias: theta[k * d..].iter().map(|&v| v as f32).collect(),
        iterations,
        converged,
    })
}

/// `a (r × m) · b (m × c)`, row-major.
fn matmul(a: &[f64], b: &[f64], r: usize, m: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0f64; r * c];
    for i in 0..r {
        for j in 0..m {
            let aij = a[i * m + j];
            if aij != 0.0 {
                for (o, &bv) in out[i * c..(i + 1) * c]
                    .iter_mut()
                    .zip(&b[j * c..(j + 1) * c])
                {
                    *o += aij * bv;
                }
            }
        }
    }
    out
}

/// The lower Cholesky factor of a symmetric positive definite `d × d` matrix. By hand: one
/// small matrix per fit, and no linear-algebra crate is otherwise needed.
fn cholesky(a: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v.is_nan() || v <= 0.0 {
                    bail!(
                        "the embeddings' covariance is not positive definite (NaN or constant values?)"
                    );
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Ok(l)
}

/// The inverse of a lower triangular `d × d` matrix (lower triangular too).
fn lower_inverse(l: &[f64], d: usize) -> Vec<f64> {
    let mut inv = vec![0f64; d * d];
    for col in 0..d {
        inv[col * d + col] = 1.0 / l[col * d + col];
        for i in col + 1..d {
            let s: f64 = (col..i).map(|k| l[i * d + k] * inv[k * d + col]).sum();
            inv[i * d + col] = -s / l[i * d + i];
        }
    }
    inv
}

/// `b ← b + sign · W μ`.
fn shift_bias(theta: &mut [f64], mean: &[f32], k: usize, d: usize, sign: f64) {
    for c in 0..k {
        let wm: f64 = theta[c * d..(c + 1) * d]
            .iter()
            .zip(mean)
            .map(|(w, &m)| w * m as f64)
            .sum();
        theta[k * d + c] += sign * wm;
    }
}

/// Logits of unit-length rows `x` (`n × d`) under `weight` (`classes × d`) and `bias`.
pub fn logits(x: &[f32], dim: usize, weight: &[f32], bias: &[f32]) -> Result<Vec<f32>> {
    let n = x.len() / dim;
    let k = bias.len();
    let xt = Tensor::from_slice(x, (n, dim), &Device::Cpu)?;
    let wt = Tensor::from_slice(weight, (k, dim), &Device::Cpu)?;
    let bt = Tensor::from_slice(bias, (1, k), &Device::Cpu)?;
    let z = xt.matmul(&wt.t()?)?.broadcast_add(&bt)?;
    Ok(z.flatten_all()?.to_vec1()?)
}

struct Objective<'a> {
    /// The examples as the fit sees them (centred and whitened, or as given), `n × d`.
    x: Vec<f32>,
    y: &'a [usize],
    n: usize,
    d: usize,
    k: usize,
    /// `1 / (C n)`.
    strength: f64,
    anchor: Option<(Vec<f64>, Vec<f64>)>,
    penalise_bias: bool,
    /// `L⁻¹` when the examples are whitened: the parameters are `V`, the penalised weights
    /// `W = V L⁻¹`.
    l_inv: Option<Vec<f64>>,
}

impl Objective<'_> {
    /// The objective and its gradient at `theta`.
    fn evaluate(&self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        let (n, d, k) = (self.n, self.d, self.k);
        let w: Vec<f32> = theta[..k * d].iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = theta[k * d..].iter().map(|&v| v as f32).collect();
        let (loss, gw, gb) = data_pass(&self.x, self.y, d, &w, &b);
        let scale = 1.0 / n as f64;
        let mut value = loss * scale;
        let mut grad: Vec<f64> = gw.iter().chain(&gb).map(|&v| v * scale).collect();
        // The penalty, on W (= V L⁻¹ when whitened: its gradient in V is (W − W₀) L⁻ᵀ).
        let w_now: std::borrow::Cow<[f64]> = match &self.l_inv {
            Some(t) => matmul(&theta[..k * d], t, k, d, d).into(),
            None => theta[..k * d].into(),
        };
        let mut delta_w = vec![0f64; k * d];
        for (j, dw) in delta_w.iter_mut().enumerate() {
            let anchor = self.anchor.as_ref().map_or(0.0, |(w0, _)| w0[j]);
            *dw = w_now[j] - anchor;
            value += 0.5 * self.strength * *dw * *dw;
        }
        let penalty_grad = match &self.l_inv {
            Some(t) => {
                // (W − W₀) L⁻ᵀ: row i, column j = Σ_m ΔW[i, m] L⁻¹[j, m].
                let mut g = vec![0f64; k * d];
                for i in 0..k {
                    for j in 0..d {
                        g[i * d + j] = (0..=j).map(|m| delta_w[i * d + m] * t[j * d + m]).sum();
                    }
                }
                g
            }
            None => delta_w,
        };
        for (g, p) in grad[..k * d].iter_mut().zip(&penalty_grad) {
            *g += self.strength * p;
        }
        if self.penalise_bias {
            for c in 0..k {
                let anchor = self.anchor.as_ref().map_or(0.0, |(_, b0)| b0[c]);
                let delta = theta[k * d + c] - anchor;
                value += 0.5 * self.strength * delta * delta;
                grad[k * d + c] += self.strength * delta;
            }
        }
        Ok((value, grad))
    }
}

/// Examples per parallel piece of [`data_pass`].
const ROWS_PER_TASK: usize = 1024;

/// One pass over the examples: the summed loss, and the gradient's data part (`Σ rᵢ xᵢᵀ` and
/// `Σ rᵢ`, `rᵢ` = probabilities − one-hot). Fused by hand — logits, softmax and the gradient of
/// each example while it is in cache — rather than two matrix products: with ten classes the
/// products are thin and the pass is bound by reading the examples, which this does once.
fn data_pass(x: &[f32], y: &[usize], d: usize, w: &[f32], b: &[f32]) -> (f64, Vec<f64>, Vec<f64>) {
    use rayon::prelude::*;
    let k = b.len();
    let w = Packed::new(w, k, d);
    let w = &w;
    x.par_chunks(ROWS_PER_TASK * d)
        .zip(y.par_chunks(ROWS_PER_TASK))
        .map(|(xs, ys)| {
            let mut sums = Sums::new(k, d);
            let loss = pass_rows(xs, ys, d, w, b, &mut sums);
            let gb = std::mem::take(&mut sums.gb);
            (loss, sums.weight_gradient(k, d), gb)
        })
        .fold(
            || (0f64, vec![0f64; k * d], vec![0f64; k]),
            |(l, mut gw, mut gb), (l2, gw2, gb2)| {
                for (a, v) in gw.iter_mut().zip(gw2) {
                    *a += v as f64;
                }
                for (a, v) in gb.iter_mut().zip(gb2) {
                    *a += v;
                }
                (l + l2, gw, gb)
            },
        )
        .reduce(
            || (0f64, vec![0f64; k * d], vec![0f64; k]),
            |(l, mut gw, mut gb), (l2, gw2, gb2)| {
                for (a, v) in gw.iter_mut().zip(gw2) {
                    *a += v;
                }
                for (a, v) in gb.iter_mut().zip(gb2) {
                    *a += v;
                }
                (l + l2, gw, gb)
            },
        )
}

/// Vector lanes of the logits' sums (one AVX-512 register of f32).
const LANES: usize = 16;
/// Classes whose logits are summed together (ten accumulators: EuroSAT's classes in one
/// group; measured 30 % faster than groups of eight there); `w` holds a multiple of this many
/// rows.
const GROUP: usize = 10;

/// What a piece of [`data_pass`] adds up: the gradient's parts, and scratch for the logits.
pub struct Sums {
    z: Vec<f32>,
    /// The weights' gradient row-major (only its last `d % LANES` columns are added here).
    gw: Vec<f32>,
    /// The rest of it, laid out as [`Packed`] lays out the weights.
    blocks: Vec<[[f32; LANES]; GROUP]>,
    gb: Vec<f64>,
    /// Residuals (probabilities − one-hot) of a block of rows, `BLOCK_ROWS × whole groups`.
    r: Vec<f32>,
}

impl Sums {
    fn new(k: usize, d: usize) -> Self {
        let groups = k.div_ceil(GROUP);
        Self {
            z: vec![0.0; k],
            gw: vec![0.0; k * d],
            blocks: vec![[[0.0; LANES]; GROUP]; groups * (d / LANES)],
            gb: vec![0.0; k],
            r: vec![0.0; BLOCK_ROWS * groups * GROUP],
        }
    }

    /// The weights' gradient, row-major.
    fn weight_gradient(mut self, k: usize, d: usize) -> Vec<f32> {
        let runs = d / LANES;
        for (i, block) in self.blocks.iter().enumerate() {
            let (g, j) = (i / runs, i % runs);
            for (cc, lanes) in block.iter().enumerate() {
                let c = g * GROUP + cc;
                if c < k {
                    for (o, v) in self.gw[c * d + j * LANES..][..LANES].iter_mut().zip(lanes) {
                        *o += v;
                    }
                }
            }
        }
        self.gw
    }
}

/// Rows whose residuals are gathered before they are multiplied into the gradient: each
/// accumulator then stays in a register over the block instead of being loaded and stored
/// for every row.
const BLOCK_ROWS: usize = 32;

/// The weights laid out for [`pass_rows`]: for each group of [`GROUP`] classes and each run of
/// [`LANES`] dimensions, the group's weights side by side — fixed-size blocks the compiler
/// indexes without bounds checks (which, on plain row slices, cost more than the products).
pub struct Packed {
    blocks: Vec<[[f32; LANES]; GROUP]>,
    /// `LANES`-wide runs per row (the rest, `d % LANES`, is read from `rows`).
    runs: usize,
    /// The weights row-major, padded with zero rows to whole groups.
    rows: Vec<f32>,
}

impl Packed {
    fn new(w: &[f32], k: usize, d: usize) -> Self {
        let groups = k.div_ceil(GROUP);
        let runs = d / LANES;
        let mut rows = w.to_vec();
        rows.resize(groups * GROUP * d, 0.0);
        let mut blocks = vec![[[0f32; LANES]; GROUP]; groups * runs];
        for g in 0..groups {
            for j in 0..runs {
                for (cc, lanes) in blocks[g * runs + j].iter_mut().enumerate() {
                    let at = (g * GROUP + cc) * d + j * LANES;
                    lanes.copy_from_slice(&rows[at..at + LANES]);
                }
            }
        }
        Self { blocks, runs, rows }
    }
}

/// The sum of a vector's lanes by halving (four dependent additions, not sixteen).
#[inline(always)]
fn sum_lanes(a: &[f32; LANES]) -> f32 {
    let mut h = [0f32; LANES / 2];
    for l in 0..LANES / 2 {
        h[l] = a[l] + a[l + LANES / 2];
    }
    let mut q = [0f32; LANES / 4];
    for l in 0..LANES / 4 {
        q[l] = h[l] + h[l + LANES / 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Runs over rows `xs` with `w` (`k` rows padded with zero rows to a multiple of [`GROUP`]):
/// returns their summed loss and adds their gradient to `sums`.
#[inline(always)]
fn pass_rows_plain(
    xs: &[f32],
    ys: &[usize],
    d: usize,
    w: &Packed,
    b: &[f32],
    sums: &mut Sums,
) -> f64 {
    let Sums {
        z,
        gw,
        blocks,
        gb,
        r,
    } = sums;
    use crate::models::vector_math::exp;
    let k = b.len();
    let groups = k.div_ceil(GROUP);
    let kp = groups * GROUP;
    let mut loss = 0f64;
    let body = d / LANES * LANES;
    for (xb, yb) in xs.chunks(BLOCK_ROWS * d).zip(ys.chunks(BLOCK_ROWS)) {
        for (i, (x, &y)) in xb.chunks_exact(d).zip(yb).enumerate() {
            // Logits, GROUP classes at a time, each with its own accumulator: independent
            // sums keep the vector units busy where one class's sum would wait on each
            // addition.
            let (xc, _) = x[..body].as_chunks::<LANES>();
            for g in 0..groups {
                let mut acc = [[0f32; LANES]; GROUP];
                for (xv, wb) in xc.iter().zip(&w.blocks[g * w.runs..(g + 1) * w.runs]) {
                    for cc in 0..GROUP {
                        for l in 0..LANES {
                            acc[cc][l] = xv[l].mul_add(wb[cc][l], acc[cc][l]);
                        }
                    }
                }
                for (cc, a) in acc.iter().enumerate() {
                    let c = g * GROUP + cc;
                    if c < k {
                        let tail: f32 = (body..d).map(|j| x[j] * w.rows[c * d + j]).sum();
                        z[c] = sum_lanes(a) + tail + b[c];
                    }
                }
            }
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // The true class's logit, kept before exponentiation (its eᶻ may underflow).
            let zy = z[y] - max;
            let mut sum = 0f32;
            for v in z.iter_mut() {
                *v = exp(*v - max);
                sum += *v;
            }
            loss += (sum.ln() - zy) as f64;
            let inv = 1.0 / sum;
            let ri = &mut r[i * kp..(i + 1) * kp];
            for c in 0..k {
                let rc = z[c] * inv - if c == y { 1.0 } else { 0.0 };
                ri[c] = rc;
                gb[c] += rc as f64;
                for t in body..d {
                    gw[c * d + t] = rc.mul_add(x[t], gw[c * d + t]);
                }
            }
        }
        // The block's gradient: Σᵢ rᵢ xᵢ, a run of LANES dimensions of GROUP classes at a time.
        let rows: Vec<&[[f32; LANES]]> = xb
            .chunks_exact(d)
            .map(|x| x[..body].as_chunks::<LANES>().0)
            .collect();
        for g in 0..groups {
            for j in 0..w.runs {
                let mut acc = blocks[g * w.runs + j];
                for (i, xc) in rows.iter().enumerate() {
                    let xv = &xc[j];
                    let ri = &r[i * kp + g * GROUP..i * kp + (g + 1) * GROUP];
                    for cc in 0..GROUP {
                        for l in 0..LANES {
                            acc[cc][l] = ri[cc].mul_add(xv[l], acc[cc][l]);
                        }
                    }
                }
                blocks[g * w.runs + j] = acc;
            }
        }
    }
    loss
}

crate::simd::multiversioned! {
    /// [`pass_rows_plain`] for the best instruction set the CPU has.
    fn pass_rows(xs: &[f32], ys: &[usize], d: usize, w: &Packed, b: &[f32], sums: &mut Sums) -> f64 = pass_rows_plain
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS (ten pairs of memory) with a backtracking Armijo line search; returns the parameters,
/// the iterations taken and whether the gradient tolerance was met.
fn lbfgs(f: &Objective, mut x: Vec<f64>, stop: Stopping) -> Result<(Vec<f64>, usize, bool)> {
    const MEMORY: usize = 10;
    let (mut fx, mut g) = f.evaluate(&x)?;
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let max_abs = |g: &[f64]| g.iter().fold(0f64, |m, v| m.max(v.abs()));
    for iteration in 0..stop.max_iterations {
        if max_abs(&g) <= stop.gradient {
            return Ok((x, iteration, true));
        }
        // Two-loop recursion: direction = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        let gamma = match pairs.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / dot(&g, &g).sqrt().max(1e-12),
        };
        for v in &mut q {
            *v *= gamma;
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let direction: Vec<f64> = q.into_iter().map(|v| -v).collect();
        let mut slope = dot(&g, &direction);
        let direction = if slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            pairs.clear();
            slope = -dot(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            direction
        };
        let mut step = 1.0;
        let mut accepted = None;
        // Ten halvings: a step a thousandth of the quasi-Newton one that still does not lower the
        // objective means it is at the products' rounding floor (forty were measured to cost
        // 7 % of a fit for nothing).
        for _ in 0..10 {
            let candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(xi, di)| xi + step * di)
                .collect();
            let (fc, gc) = f.evaluate(&candidate)?;
            if fc <= fx + 1e-4 * step * slope {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((candidate, fc, gc)) = accepted else {
            // No decrease left at f32's precision of the products: as good as it gets.
            return Ok((x, iteration, false));
        };
        let s: Vec<f64> = candidate.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-16 {
            if pairs.len() == MEMORY {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        let decrease = fx - fc;
        x = candidate;
        fx = fc;
        g = gc;
        if decrease.abs() <= 1e-13 * fx.abs().max(1e-30) && max_abs(&g) <= 100.0 * stop.gradient {
            return Ok((x, iteration + 1, false));
        }
    }
    Ok((x, stop.max_iterations, max_abs(&g) <= stop.gradient))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes on a line: the fitted weights satisfy the optimality condition, which is
    /// checked by finite differences of the objective here rather than by trusting the solver.
    #[test]
    fn the_fit_is_a_stationary_point_of_scikit_learns_objective() {
        let x: Vec<f32> = vec![1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -0.6, 0.8, 0.6, -0.8];
        let y = vec![0, 0, 1, 1, 0];
        let problem = Problem {
            x: &x,
            y: &y,
            dim: 2,
            classes: 2,
            c: 3.0,
            anchor: None,
            penalise_bias: false,
        };
        let fit = fit(&problem, None, Stopping::default()).unwrap();
        assert!(fit.converged);
        // Objective in scikit-learn's own form: ½‖W‖² + C Σ loss.
        let sk = |w: &[f64], b: &[f64]| -> f64 {
            let mut loss = 0.0;
            for (i, row) in x.chunks(2).enumerate() {
                let z: Vec<f64> = (0..2)
                    .map(|c| w[c * 2] * row[0] as f64 + w[c * 2 + 1] * row[1] as f64 + b[c])
                    .collect();
                let lse = (z[0].exp() + z[1].exp()).ln();
                loss += lse - z[y[i]];
            }
            0.5 * w.iter().map(|v| v * v).sum::<f64>() + 3.0 * loss
        };
        let w: Vec<f64> = fit.weight.iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = fit.bias.iter().map(|&v| v as f64).collect();
        let base = sk(&w, &b);
        for j in 0..4 {
            for h in [1e-3, -1e-3] {
                let mut w2 = w.clone();
                w2[j] += h;
                assert!(sk(&w2, &b) >= base - 1e-9, "moving w[{j}] by {h} lowers it");
            }
        }
        // The penalty makes the two classes' weights opposite (their sum is not penalised
        // away by the softmax, so the minimiser splits it evenly).
        assert!((fit.weight[0] + fit.weight[2]).abs() < 1e-4);
    }

    /// The fused, blocked pass gives the loss and gradient a plain computation gives, with
    /// dimensions and classes that fill neither a vector nor a group (the tails), and more rows
    /// than a block.
    #[test]
    fn the_data_pass_matches_a_plain_computation() {
        let (n, d, k) = (75, 37, 13);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.3)
            .collect();
        let y: Vec<usize> = (0..n).map(|i| (i * 5) % k).collect();
        let w: Vec<f32> = (0..k * d)
            .map(|i| (i * 31 % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k).map(|c| c as f32 * 0.05 - 0.3).collect();
        let (loss, gw, gb) = data_pass(&x, &y, d, &w, &b);
        let (mut want_loss, mut want_gw, mut want_gb) = (0f64, vec![0f64; k * d], vec![0f64; k]);
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            let z: Vec<f64> = (0..k)
                .map(|c| (0..d).map(|j| (w[c * d + j] * xi[j]) as f64).sum::<f64>() + b[c] as f64)
                .collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            want_loss += lse - z[y[i]];
            for c in 0..k {
                let r = (z[c] - lse).exp() - if c == y[i] { 1.0 } else { 0.0 };
                want_gb[c] += r;
                for j in 0..d {
                    want_gw[c * d + j] += r * xi[j] as f64;
                }
            }
        }
        assert!(
            (loss - want_loss).abs() < 1e-4 * want_loss,
            "{loss} {want_loss}"
        );
        for (a, b) in gw.iter().zip(&want_gw).chain(gb.iter().zip(&want_gb)) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
    }

    /// Pulled towards an anchor with a tiny C, the fit is the anchor.
    #[test]
    fn a_strong_pull_keeps_the_anchor() {
        let x: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0];
        let y = vec![1, 0];
        let w0 = [2.0f32, 0.0, 0.0, 2.0];
        let b0 = [0.0f32, 0.0];
        let problem = Problem {
            x: &x,
            y: &y,
            dim: 2,
            classes: 2,
            c: 1e-6,
            anchor: Some((&w0, &b0)),
            penalise_bias: true,
        };
        let fit = fit(&problem, None, Stopping::default()).unwrap();
        for (a, b) in fit.weight.iter().zip(&w0) {
            assert!((a - b).abs() < 1e-4, "{:?}", fit.weight);
        }
        assert!(fit.bias.iter().all(|b| b.abs() < 1e-4));
    }
}
