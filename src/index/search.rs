//! Exact search: every part's vectors a memory-mapped row-major matrix (`f32`, or `f16` in an
//! index built with `--dtype f16`), scored against the query by a dot product (cosine, as both
//! are L2-normalised), best `k` kept per thread and merged. Up to millions of vectors this is
//! fast enough on one machine (docs/src/search.md has the measurements), needs no build step and
//! is never wrong.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;

use anyhow::{Result, bail};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::parts::{self, PartState};
use super::{IndexMeta, VectorDtype};

/// An index opened for search: ids, paths and chips in memory, embeddings memory-mapped one
/// matrix per part (the operating system keeps the pages it has room for).
pub struct LoadedIndex {
    pub meta: IndexMeta,
    pub ids: Vec<String>,
    pub paths: Vec<String>,
    pub chips: Vec<Option<[u32; 4]>>,
    /// Scene tiles' `[west, south, east, north]` (WGS 84), where known.
    pub bounds: Vec<Option<[f64; 4]>>,
    /// How the matrices store their values.
    pub dtype: VectorDtype,
    /// `(first row, embeddings)` of each usable part, in row order.
    segments: Vec<(usize, memmap2::Mmap)>,
    /// Parts skipped (unfinished, missing or damaged), each with why: the rest is searchable.
    pub warnings: Vec<String>,
}

/// One part's matrix, as its dtype reads it.
enum Matrix<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl LoadedIndex {
    /// Opens every complete part of the index in `dir`. Parts that are unfinished, missing or
    /// damaged are skipped with a warning each; an index with no usable part is an error.
    pub fn load(dir: &Path) -> Result<Self> {
        let meta = IndexMeta::read(dir)?;
        let dtype = meta.vector_dtype()?;
        let parts_dir = dir.join("parts");
        let (shards, dim) = (meta.shards, meta.dim);
        let mut index = Self {
            ids: vec![],
            paths: vec![],
            chips: vec![],
            bounds: vec![],
            dtype,
            segments: vec![],
            warnings: vec![],
            meta,
        };
        for i in 0..shards {
            let name = parts_dir.join(parts::part_name(i, shards));
            let key = &index.meta.model.key;
            let problem = match parts::map_part(&parts_dir, i, shards, key, dim, dtype) {
                Ok(part) => {
                    index.segments.push((index.ids.len(), part.vectors));
                    index.ids.extend(part.ids);
                    index.paths.extend(part.paths);
                    index.chips.extend(part.chips);
                    index.bounds.extend(part.bounds);
                    continue;
                }
                Err(PartState::Missing) => format!("{}: not built yet", name.display()),
                Err(PartState::Unfinished) => {
                    format!("{}: still being written (no marker)", name.display())
                }
                Err(PartState::Damaged(why)) => why,
            };
            index.warnings.push(format!("skipped {problem}"));
        }
        if index.segments.is_empty() {
            bail!(
                "{}: no complete part to search (0 of {shards} parts usable):\n  {}",
                dir.display(),
                index.warnings.join("\n  ")
            );
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    fn matrix<'a>(&self, bytes: &'a memmap2::Mmap) -> Matrix<'a> {
        // Mappings start on a page boundary: the casts cannot fail on alignment.
        match self.dtype {
            VectorDtype::F32 => Matrix::F32(bytemuck::cast_slice(&bytes[..])),
            VectorDtype::F16 => Matrix::F16(bytemuck::cast_slice(&bytes[..])),
        }
    }

    /// The matrix holding `row`, and the span of its values there.
    fn locate(&self, row: usize) -> (Matrix<'_>, std::ops::Range<usize>) {
        let dim = self.meta.dim;
        let (first, bytes) = self
            .segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= row)
            .expect("row 0 is in the first segment");
        (
            self.matrix(bytes),
            (row - first) * dim..(row - first + 1) * dim,
        )
    }

    /// The embedding of `row` (borrowed from an `f32` matrix, widened from an `f16` one).
    pub fn vector(&self, row: usize) -> Cow<'_, [f32]> {
        let (matrix, span) = self.locate(row);
        match matrix {
            Matrix::F32(m) => Cow::Borrowed(&m[span]),
            Matrix::F16(m) => Cow::Owned(m[span].to_f32_vec()),
        }
    }

    /// The best `k` rows for `query` (a unit vector), best first: `(row, cosine)`. A query of
    /// another dimension than the index's is an error.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        if query.len() != self.meta.dim {
            bail!(
                "a query of dimension {} for an index of dimension {}",
                query.len(),
                self.meta.dim
            );
        }
        let dim = self.meta.dim;
        let mut all: Vec<(usize, f32)> = self
            .segments
            .iter()
            .flat_map(|(first, bytes)| {
                let best = match self.matrix(bytes) {
                    Matrix::F32(m) => top_k(m, dim, query, k),
                    Matrix::F16(m) => top_k(m, dim, query, k),
                };
                best.into_iter().map(move |(r, s)| (first + r, s))
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        Ok(all)
    }

    /// The rows `keep` accepts (asked of each row with its embedding, in parallel), e.g. those
    /// a classifier puts in one class.
    pub fn rows_where(&self, keep: impl Fn(&[f32]) -> bool + Sync) -> Vec<usize> {
        (0..self.len())
            .into_par_iter()
            .filter(|&r| keep(&self.vector(r)))
            .collect()
    }

    /// [`Self::search`] among `rows` only (exactly).
    pub fn search_rows(
        &self,
        query: &[f32],
        k: usize,
        rows: &[usize],
    ) -> Result<Vec<(usize, f32)>> {
        if query.len() != self.meta.dim {
            bail!(
                "a query of dimension {} for an index of dimension {}",
                query.len(),
                self.meta.dim
            );
        }
        let mut all: Vec<(usize, f32)> = rows
            .par_iter()
            .map(|&r| (r, dot(&self.vector(r), query)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        Ok(all)
    }
}

/// The graph reads the index's own matrices: no second copy of the vectors.
impl super::hnsw::Vectors for LoadedIndex {
    fn count(&self) -> usize {
        self.ids.len()
    }

    fn dim(&self) -> usize {
        self.meta.dim
    }

    fn vector(&self, row: usize) -> Cow<'_, [f32]> {
        LoadedIndex::vector(self, row)
    }

    fn scores(&self, query: &[f32], rows: &[u32], out: &mut Vec<f32>) {
        out.clear();
        let dim = self.meta.dim;
        if let [(_, bytes)] = &self.segments[..] {
            match self.matrix(bytes) {
                Matrix::F32(m) => score_rows_at_f32(m, dim, query, rows, out),
                Matrix::F16(m) => {
                    for &r in rows {
                        let r = r as usize;
                        half_rows::score(&m[r * dim..(r + 1) * dim], dim, query, out);
                    }
                }
            }
            return;
        }
        for &r in rows {
            match self.locate(r as usize) {
                (Matrix::F32(m), span) => out.push(dot(&m[span], query)),
                (Matrix::F16(m), span) => half_rows::score(&m[span], dim, query, out),
            }
        }
    }
}

#[inline(always)]
fn score_rows_at_f32_plain(
    matrix: &[f32],
    dim: usize,
    query: &[f32],
    rows: &[u32],
    out: &mut Vec<f32>,
) {
    // Rows a graph links lie anywhere in the matrix: each is a cache miss the hardware cannot
    // predict, so the next row is asked for while this one is scored.
    prefetch_row(matrix, dim, rows.first());
    for (i, &r) in rows.iter().enumerate() {
        prefetch_row(matrix, dim, rows.get(i + 1));
        let r = r as usize;
        out.push(dot(&matrix[r * dim..(r + 1) * dim], query));
    }
}

/// Asks the CPU to bring `row` of `matrix` into cache (every 64-byte line of it).
#[inline(always)]
fn prefetch_row(matrix: &[f32], dim: usize, row: Option<&u32>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(&r) = row {
        let row = &matrix[r as usize * dim..(r as usize + 1) * dim];
        for line in row.chunks(16) {
            // SAFETY: a prefetch of an address inside the slice; it never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line.as_ptr() as *const i8
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (matrix, dim, row);
}

crate::simd::multiversioned!(
    /// [`dot`] of the chosen rows of a matrix (a graph's links), compiled for the CPU's widest
    /// vectors.
    fn score_rows_at_f32(matrix: &[f32], dim: usize, query: &[f32], rows: &[u32], out: &mut Vec<f32>) = score_rows_at_f32_plain
);

/// `x · y`, with sixteen partial sums so that the compiler vectorises it (a single running sum
/// must be added in order and stays scalar).
#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (xc, xr) = x.as_chunks::<16>();
    let (yc, yr) = y.as_chunks::<16>();
    for (a, b) in xc.iter().zip(yc) {
        for l in 0..16 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// A value type a raw matrix stores: how a run of its rows is scored against an `f32` query.
pub trait Stored: Copy + Sync {
    /// Appends to `scores` the dot product of each `dim`-wide row of `rows` with `query`.
    fn score_rows(rows: &[Self], dim: usize, query: &[f32], scores: &mut Vec<f32>);
}

#[inline(always)]
fn score_rows_f32_plain(rows: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
    out.extend(rows.chunks_exact(dim).map(|v| dot(v, query)));
}

crate::simd::multiversioned!(
    /// [`dot`] of every row, compiled for the CPU's widest vectors.
    fn score_rows_f32(rows: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) = score_rows_f32_plain
);

impl Stored for f32 {
    fn score_rows(rows: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        score_rows_f32(rows, dim, query, out);
    }
}

impl Stored for f16 {
    fn score_rows(rows: &[f16], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        half_rows::score(rows, dim, query, out);
    }
}

/// Dot products of `f16` rows with an `f32` query. Written with intrinsics because the one
/// instruction that matters, widening 8 or 16 halves to floats (`vcvtph2ps`, F16C / AVX-512F),
/// is out of reach of plain Rust the compiler vectorises, and `half`'s conversions ask the CPU
/// about F16C at every call: the loop would be scalar. Rows are widened in registers, never
/// written back, so memory traffic is half that of `f32` rows.
mod half_rows {
    use half::f16;

    /// The scalar reference (and the path on CPUs without F16C).
    fn plain(rows: &[f16], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        out.extend(rows.chunks_exact(dim).map(|r| {
            r.iter()
                .zip(query)
                .map(|(a, b)| a.to_f32() * b)
                .sum::<f32>()
        }));
    }

    pub fn score(rows: &[f16], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        assert_eq!(query.len(), dim, "query and rows differ in dimension");
        #[cfg(target_arch = "x86_64")]
        match level() {
            // SAFETY: `level` saw the CPU report the features each function enables.
            Level::Avx512 => return unsafe { x86::avx512(rows, dim, query, out) },
            Level::Avx2F16c => return unsafe { x86::avx2(rows, dim, query, out) },
            Level::Plain => {}
        }
        plain(rows, dim, query, out)
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Level {
        Avx512,
        Avx2F16c,
        Plain,
    }

    fn level() -> Level {
        static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use crate::simd::Isa;
                match crate::simd::isa() {
                    Isa::Avx512 => return Level::Avx512,
                    Isa::Avx2Fma if std::arch::is_x86_feature_detected!("f16c") => {
                        return Level::Avx2F16c;
                    }
                    _ => {}
                }
            }
            Level::Plain
        })
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        use half::f16;

        /// The tail of a row past its last full vector.
        fn tail(row: &[f16], query: &[f32], from: usize) -> f32 {
            row[from..]
                .iter()
                .zip(&query[from..])
                .map(|(a, b)| a.to_f32() * b)
                .sum()
        }

        /// One kernel, written once and compiled per vector width: `$lanes` halves are loaded
        /// as one integer vector (`$load_h`), widened to floats (`$cvt`) and multiplied into two
        /// accumulators, then summed across lanes (`$sum`).
        macro_rules! f16_kernel {
            ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $half:ty,
             $load_h:ident, $load_q:ident, $cvt:ident, $fma:ident, $add:ident, $zero:ident,
             $sum:ident) => {
                $(#[$doc])*
                #[target_feature(enable = $features)]
                pub fn $name(rows: &[f16], dim: usize, query: &[f32], out: &mut Vec<f32>) {
                    let full = dim / $lanes * $lanes;
                    for row in rows.chunks_exact(dim) {
                        let (mut a0, mut a1) = ($zero(), $zero());
                        let mut i = 0;
                        // SAFETY: every load reads `$lanes` values at `i` with
                        // `i + $lanes <= full <= dim`, from slices of `dim` values (unaligned
                        // loads).
                        unsafe {
                            while i + 2 * $lanes <= full {
                                let h0 = $load_h(row.as_ptr().add(i) as *const $half);
                                let h1 = $load_h(row.as_ptr().add(i + $lanes) as *const $half);
                                let q0 = $load_q(query.as_ptr().add(i));
                                let q1 = $load_q(query.as_ptr().add(i + $lanes));
                                a0 = $fma($cvt(h0), q0, a0);
                                a1 = $fma($cvt(h1), q1, a1);
                                i += 2 * $lanes;
                            }
                            if i < full {
                                let h0 = $load_h(row.as_ptr().add(i) as *const $half);
                                let q0 = $load_q(query.as_ptr().add(i));
                                a0 = $fma($cvt(h0), q0, a0);
                            }
                        }
                        out.push($sum($add(a0, a1)) + tail(row, query, full));
                    }
                }
            };
        }

        f16_kernel!(
            /// Sixteen lanes (AVX-512F).
            avx512, "avx512f", 16, __m256i, _mm256_loadu_si256, _mm512_loadu_ps,
            _mm512_cvtph_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps,
            _mm512_reduce_add_ps
        );

        f16_kernel!(
            /// Eight lanes (AVX2 + FMA + F16C).
            avx2, "avx2,fma,f16c", 8, __m128i, _mm_loadu_si128, _mm256_loadu_ps,
            _mm256_cvtph_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps, sum8
        );

        /// The sum of a vector's eight floats (AVX has no single instruction for it).
        #[target_feature(enable = "avx")]
        fn sum8(s: __m256) -> f32 {
            let pair = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let pair = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every kernel this CPU runs against the scalar reference, at dimensions that leave
        /// every kind of tail (none, under 8, under 16, a half vector) and one that is long.
        #[test]
        fn every_kernel_matches_the_scalar_reference_at_odd_sizes() {
            let mut next = super::super::test_values(99);
            for dim in [1, 5, 8, 15, 16, 17, 24, 31, 32, 33, 47, 48, 192, 515] {
                let rows: Vec<f16> = (0..3 * dim).map(|_| f16::from_f32(next())).collect();
                let query: Vec<f32> = (0..dim).map(|_| next()).collect();
                let mut want = vec![];
                plain(&rows, dim, &query, &mut want);
                let mut kernels: Vec<(&str, Vec<f32>)> = vec![];
                let mut got = vec![];
                score(&rows, dim, &query, &mut got);
                kernels.push(("dispatched", got));
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        let mut got = vec![];
                        // SAFETY: the CPU has AVX-512F.
                        unsafe { x86::avx512(&rows, dim, &query, &mut got) };
                        kernels.push(("avx512", got));
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                        && std::arch::is_x86_feature_detected!("f16c")
                    {
                        let mut got = vec![];
                        // SAFETY: the CPU has AVX2, FMA and F16C.
                        unsafe { x86::avx2(&rows, dim, &query, &mut got) };
                        kernels.push(("avx2", got));
                    }
                }
                for (name, got) in kernels {
                    assert_eq!(got.len(), 3, "{name} at {dim}");
                    for (g, w) in got.iter().zip(&want) {
                        // Summed in another order: f32 rounding of a sum of `dim` terms.
                        assert!(
                            (g - w).abs() <= 1e-5 * dim as f32,
                            "{name} at {dim}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

/// Values in [-1, 1) from a xorshift seeded with `seed`: test data that needs no `rand` draw.
#[cfg(test)]
fn test_values(mut state: u64) -> impl FnMut() -> f32 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2000) as f32 / 1000.0 - 1.0
    }
}

/// A scored row, ordered so that a max-heap of `Worse` keeps the worst of the best on top.
#[derive(PartialEq)]
struct Worse(f32, usize);

impl Eq for Worse {}

impl PartialOrd for Worse {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worse {
    fn cmp(&self, other: &Self) -> Ordering {
        // Lower score is "greater" (worse); ties: the later row is worse, so results are stable.
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

/// The `k` rows of `vectors` (row-major, `dim` wide, `f32` or `f16`) with the highest dot
/// product with `query`, best first (ties: lower row first).
pub fn top_k<T: Stored>(vectors: &[T], dim: usize, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    assert_eq!(query.len(), dim, "query and index dimensions differ");
    let rows = vectors.len() / dim.max(1);
    if k == 0 || rows == 0 {
        return vec![];
    }
    const BLOCK: usize = 4096;
    let keep = |heap: &mut BinaryHeap<Worse>, item: Worse| {
        if heap.len() < k {
            heap.push(item);
        } else if let Some(top) = heap.peek()
            && item < *top
        {
            heap.pop();
            heap.push(item);
        }
    };
    let heaps: Vec<BinaryHeap<Worse>> = vectors
        .par_chunks(BLOCK * dim)
        .enumerate()
        .map(|(b, block)| {
            let mut heap = BinaryHeap::with_capacity(k + 1);
            let mut scores = Vec::with_capacity(BLOCK);
            T::score_rows(block, dim, query, &mut scores);
            for (r, s) in scores.into_iter().enumerate() {
                keep(&mut heap, Worse(s, b * BLOCK + r));
            }
            heap
        })
        .collect();
    let mut all = BinaryHeap::with_capacity(k + 1);
    for h in heaps {
        for item in h {
            keep(&mut all, item);
        }
    }
    let mut best: Vec<Worse> = all.into_vec();
    best.sort();
    best.into_iter().map(|Worse(s, r)| (r, s)).collect()
}

/// A query's parts: weighted embeddings to add and to subtract.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub positive: Vec<(f32, Vec<f32>)>,
    pub negative: Vec<(f32, Vec<f32>)>,
}

impl Query {
    /// `normalise(Σ wᵢ·normalise(pᵢ) − Σ wⱼ·normalise(nⱼ))`: each part counts by its weight
    /// whatever its length. An empty query, or one whose parts cancel out, is an error.
    pub fn vector(&self) -> Result<Vec<f32>> {
        let Some(dim) = self.positive.first().map(|(_, e)| e.len()) else {
            bail!("an empty query: give at least one --text or --image");
        };
        let mut q = vec![0f32; dim];
        let parts = self
            .positive
            .iter()
            .map(|(w, e)| (*w, e))
            .chain(self.negative.iter().map(|(w, e)| (-*w, e)));
        for (w, e) in parts {
            if e.len() != dim {
                bail!(
                    "query parts of different dimensions ({} and {dim})",
                    e.len()
                );
            }
            for (q, v) in q.iter_mut().zip(crate::encoder::normalized(e)) {
                *q += w * v;
            }
        }
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm.is_nan() || norm <= 1e-6 {
            bail!("the query's parts cancel out (the negatives equal the positives)");
        }
        Ok(q.into_iter().map(|v| v / norm).collect())
    }
}

/// `W:TEXT` (rclip's weight syntax, e.g. `2:harbour`, `0.5:ships`) → `(W, TEXT)`; a text
/// without a leading number and colon has weight 1. A text that itself starts with a number
/// and a colon is written with an explicit weight: `1:10:30 am`.
pub fn weighted(s: &str) -> Result<(f32, &str)> {
    if let Some((w, rest)) = s.split_once(':')
        && !w.is_empty()
        && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        && let Ok(w) = w.parse::<f32>()
    {
        if !(w > 0.0 && w.is_finite()) {
            bail!("{s:?}: a weight must be a positive number");
        }
        return Ok((w, rest));
    }
    Ok((1.0, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_full_sort() {
        let dim = 5;
        let n = 10_000;
        let mut next = super::test_values(7);
        let vectors: Vec<f32> = (0..n * dim).map(|_| next()).collect();
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        let mut all: Vec<(usize, f32)> = vectors
            .chunks(dim)
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(&query).map(|(a, b)| a * b).sum()))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let got = top_k(&vectors, dim, &query, 25);
        assert_eq!(got.len(), 25);
        for (g, want) in got.iter().zip(&all) {
            assert_eq!(g.0, want.0);
            assert!((g.1 - want.1).abs() < 1e-5);
        }
        assert_eq!(top_k(&vectors, dim, &query, 0), vec![]);
        assert_eq!(top_k(&vectors[..2 * dim], dim, &query, 10).len(), 2);
    }

    #[test]
    fn half_precision_rows_score_as_their_widened_values() {
        // Odd sizes on every side: a dimension that is no multiple of 16, runs of 64 rows cut
        // short, and a block boundary (4096 rows) crossed.
        for dim in [1, 7, 17, 33] {
            let n = 4096 + 70;
            let mut state = 11u64 + dim as u64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2000) as f32 / 1000.0 - 1.0
            };
            let halves: Vec<f16> = (0..n * dim).map(|_| f16::from_f32(next())).collect();
            let query: Vec<f32> = (0..dim).map(|_| next()).collect();
            let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
            let want = top_k(&widened, dim, &query, 40);
            let got = top_k(&halves, dim, &query, 40);
            // The same rows in the same order; scores summed in another order differ in the
            // last bits only.
            let rows = |x: &[(usize, f32)]| x.iter().map(|h| h.0).collect::<Vec<_>>();
            assert_eq!(rows(&got), rows(&want), "dim {dim}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.1 - w.1).abs() <= 1e-6 * dim as f32,
                    "dim {dim}: {g:?} vs {w:?}"
                );
            }
            assert_eq!(top_k(&halves[..3 * dim], dim, &query, 10).len(), 3);
        }
    }

    #[test]
    fn dot_handles_tails() {
        let x: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let y: Vec<f32> = (0..37).map(|i| (i % 3) as f32).collect();
        let want: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot(&x, &y), want);
    }

    #[test]
    fn queries_are_weighted_normalised_sums() {
        let q = Query {
            positive: vec![(2.0, vec![3.0, 0.0]), (1.0, vec![0.0, 5.0])],
            negative: vec![],
        };
        let v = q.vector().unwrap();
        let n = (5f32).sqrt();
        assert!((v[0] - 2.0 / n).abs() < 1e-6 && (v[1] - 1.0 / n).abs() < 1e-6);
        let minus = Query {
            positive: vec![(1.0, vec![1.0, 1.0])],
            negative: vec![(1.0, vec![0.0, 2.0])],
        };
        let v = minus.vector().unwrap();
        let a = 1.0 / 2f32.sqrt();
        let (x, y) = (a, a - 1.0);
        let n = (x * x + y * y).sqrt();
        assert!((v[0] - x / n).abs() < 1e-6 && (v[1] - y / n).abs() < 1e-6);
        assert!(Query::default().vector().is_err());
        let cancel = Query {
            positive: vec![(1.0, vec![1.0, 0.0])],
            negative: vec![(1.0, vec![2.0, 0.0])],
        };
        assert!(cancel.vector().is_err());
    }

    #[test]
    fn weights_use_rclips_syntax() {
        assert_eq!(weighted("2:harbour").unwrap(), (2.0, "harbour"));
        assert_eq!(weighted("0.5:ships").unwrap(), (0.5, "ships"));
        assert_eq!(weighted("ships: many").unwrap(), (1.0, "ships: many"));
        assert_eq!(weighted("1:10:30 am").unwrap(), (1.0, "10:30 am"));
        assert!(weighted("0:x").is_err());
    }
}
