//! Search at scale over synthetic vectors: an index of `n` unit vectors is written as one
//! real Parquet part, loaded the way `search` loads it, and queried. The vectors are
//! clustered (a thousand centres plus noise), as CLIP embeddings of an archive are, rather
//! than uniform on the sphere, where every neighbour is as far as every other.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::index::parts::{self, Row};
use crate::index::search::LoadedIndex;
use crate::index::{FORMAT, IndexMeta, ModelIdentity, VectorDtype};

/// What one search benchmark measured.
#[derive(Debug, Serialize)]
pub struct SearchBenchReport {
    pub vectors: usize,
    pub dim: usize,
    /// How the raw matrix stores the vectors (`f32`, `f16`).
    pub dtype: String,
    pub threads: usize,
    /// With `f16` vectors whose `f32` originals are at hand: the mean share of the `f32`
    /// matrix's exact top 10 that the `f16` one returns, over the timed queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top10_agreement_with_f32: Option<f64>,
    /// Size of the Parquet part over the vector count.
    pub bytes_per_vector: f64,
    /// Size of the raw matrix beside it (what search maps) over the vector count.
    pub matrix_bytes_per_vector: f64,
    /// Opening the part: ids and paths decoded from Parquet, the embeddings memory-mapped and
    /// checked (BLAKE3 against the marker, which reads every page once).
    pub load_s: f64,
    /// Growth of the resident set over the load, MiB.
    pub load_memory_mib: f64,
    pub queries: usize,
    pub query_ms_median: f64,
    pub query_ms_p95: f64,
    pub top_k: usize,
}

/// Clustered unit vectors: `n` of dimension `dim`, seeded.
pub fn clustered_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| unit((0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()))
        .collect();
    // Uniform noise of this scale has a length of about 0.6, the centres 1.
    let scale = 0.6 * (3.0 / dim as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[rng.random_range(0..centres.len())];
        let v: Vec<f32> = c
            .iter()
            .map(|x| x + scale * rng.random_range(-1.0f32..1.0))
            .collect();
        out.extend(unit(v));
    }
    out
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    crate::encoder::normalized(&v)
}

/// The resident set size of this process, MiB (0 where `/proc` is absent).
pub fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A float32 N × D matrix from a numpy `.npy` file, its rows L2-normalised: `(rows, D)`.
/// Anything else (another dtype or rank, Fortran order, a zero or non-finite row) is refused
/// naming the file.
pub fn read_npy_matrix(path: &Path) -> Result<(Vec<f32>, usize)> {
    use anyhow::{Context, bail};
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{name}: cannot open"))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .with_context(|| format!("{name}: not a numpy .npy file"))?;
    let shape = npy.shape().to_vec();
    let [n, dim] = shape[..] else {
        bail!("{name}: an array of shape {shape:?}; want a matrix, vectors × dimension");
    };
    let descr = npy.dtype().descr();
    if descr != "'<f4'" && descr != "'=f4'" {
        bail!("{name}: dtype {descr}; want float32 (numpy: .astype(np.float32))");
    }
    if npy.order() != npyz::Order::C {
        bail!("{name}: Fortran order; save np.ascontiguousarray(x)");
    }
    let (n, dim) = (n as usize, dim as usize);
    if n == 0 || dim == 0 {
        bail!("{name}: an empty matrix ({n} × {dim})");
    }
    let mut x: Vec<f32> = npy
        .into_vec()
        .with_context(|| format!("{name}: cannot read its {n} × {dim} values"))?;
    for (i, row) in x.chunks_exact_mut(dim).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            bail!("{name}: row {i} is zero or not finite");
        }
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok((x, dim))
}

/// Writes an index of `n` synthetic vectors into the empty folder `dir`.
pub fn write_synthetic_index(dir: &Path, n: usize, dim: usize) -> Result<()> {
    write_vectors_index(dir, clustered_vectors(n, dim, 1), dim, VectorDtype::F32)
}

/// Writes an index of the unit vectors `vectors` (rows of `dim`) into the empty folder `dir`,
/// as one real part whose matrix is of `dtype`.
pub fn write_vectors_index(
    dir: &Path,
    vectors: Vec<f32>,
    dim: usize,
    dtype: VectorDtype,
) -> Result<()> {
    let parts_dir = dir.join("parts");
    std::fs::create_dir_all(&parts_dir)?;
    let key = "synthetic".to_string();
    let n = vectors.len() / dim;
    let rows: Vec<Row> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| Row {
            bounds: None,
            id: format!("synthetic/{i:08}.jpg"),
            path: format!("/archive/synthetic/{i:08}.jpg"),
            chip: None,
            content_hash: format!("{i:064x}"),
            embedding: v.to_vec(),
        })
        .collect();
    drop(vectors);
    parts::write_part(&parts_dir, 0, 1, &rows, dim, &key, dtype)?;
    let meta = IndexMeta {
        format: FORMAT.into(),
        skyscribe_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelIdentity {
            spec: "synthetic".into(),
            fingerprint: String::new(),
            key,
        },
        bands: None,
        jpeg_draft: false,
        dim,
        dtype: dtype.as_str().into(),
        shards: 1,
        count: n,
        parts_complete: 1,
        inputs: None,
    };
    crate::atomic::write_file(&IndexMeta::path(dir), &serde_json::to_vec_pretty(&meta)?)
}

/// The queries of a search benchmark: `given` (unit rows of a queries file), else `count`
/// vectors of the index, each moved by uniform noise of ±0.05 a coordinate and renormalised
/// (drawn with `seed`).
pub fn bench_queries(
    index: &LoadedIndex,
    given: Option<&[f32]>,
    count: usize,
    seed: u64,
) -> Result<Vec<Vec<f32>>> {
    let dim = index.dim();
    if let Some(q) = given {
        if q.len() % dim != 0 || q.is_empty() {
            anyhow::bail!("the queries are not rows of the index's dimension {dim}");
        }
        return Ok(q.chunks_exact(dim).map(<[f32]>::to_vec).collect());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok((0..count.max(1))
        .map(|_| {
            let row = rng.random_range(0..index.len());
            unit(
                index
                    .vector(row)
                    .iter()
                    .map(|x| x + 0.05 * rng.random_range(-1.0f32..1.0))
                    .collect(),
            )
        })
        .collect())
}

/// Loads the index in `dir` and times top-`k` queries: `given`, else `queries` near its vectors.
/// With `originals` (the `f32` vectors an `f16` index was written from), also measures how much
/// of their exact top 10 the index's returns.
pub fn measure(
    dir: &Path,
    given: Option<&[f32]>,
    queries: usize,
    k: usize,
    originals: Option<&[f32]>,
) -> Result<SearchBenchReport> {
    let before = resident_mib();
    let t = Instant::now();
    let index = LoadedIndex::load(dir)?;
    let load_s = t.elapsed().as_secs_f64();
    let load_memory_mib = resident_mib() - before;
    if index.is_empty() {
        anyhow::bail!("{}: the index holds no vectors", dir.display());
    }
    let dim = index.dim();
    let part = dir.join("parts").join(parts::part_name(0, 1));
    let bytes = std::fs::metadata(&part)?.len() as f64;
    let matrix = dir
        .join("parts")
        .join(parts::vectors_name(0, 1, index.dtype));
    let matrix_bytes = std::fs::metadata(&matrix)?.len() as f64;
    let qs = bench_queries(&index, given, queries, 2)?;
    let mut times = Vec::with_capacity(qs.len());
    let mut agreed = 0usize;
    for q in &qs {
        let t = Instant::now();
        let hits = index.search(q, k)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(x) = originals {
            let want = crate::index::search::top_k(x, dim, q, 10);
            agreed += hits
                .iter()
                .take(10)
                .filter(|h| want.iter().any(|w| w.0 == h.0))
                .count();
        }
        std::hint::black_box(hits);
    }
    times.sort_by(f64::total_cmp);
    Ok(SearchBenchReport {
        vectors: index.len(),
        dim,
        dtype: index.dtype.as_str().into(),
        top10_agreement_with_f32: originals
            .map(|x| agreed as f64 / (qs.len() * 10.min(x.len() / dim)) as f64),
        threads: rayon::current_num_threads(),
        bytes_per_vector: bytes / index.len() as f64,
        matrix_bytes_per_vector: matrix_bytes / index.len() as f64,
        load_s,
        load_memory_mib,
        queries: times.len(),
        query_ms_median: times[times.len() / 2],
        query_ms_p95: times[(times.len() * 95 / 100).min(times.len() - 1)],
        top_k: k,
    })
}

/// What the approximate engine measured against exact search on the same queries.
#[derive(Debug, Serialize)]
pub struct AnnBenchReport {
    pub vectors: usize,
    pub connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub build_s: f64,
    /// Size of the saved graph (with its copy of the vectors) over the vector count.
    pub graph_bytes_per_vector: f64,
    /// Mean share of exact search's top 10 that the graph also returns.
    pub recall_at_10: f64,
    /// Mean share of the graph's 10 hits at most 1 % farther (cosine distance) than exact
    /// search's 10th: the (1 + ε)-approximate recall of the ANN literature, ε = 0.01. Far above
    /// `recall_at_10` when the true neighbours are near-ties the graph swaps for equals.
    pub epsilon_recall_at_10: f64,
    pub queries: usize,
    pub query_ms_median: f64,
    pub query_ms_p95: f64,
}

/// Builds the HNSW graph of the index in `dir` (`index optimize`) and measures recall@10
/// against exact search and latency, at each `ef` of `efs`.
pub fn measure_ann(
    dir: &Path,
    given: Option<&[f32]>,
    queries: usize,
    options: crate::index::ann::AnnOptions,
    efs: &[usize],
) -> Result<Vec<AnnBenchReport>> {
    use crate::index::ann::{AnnIndex, ann_dir, optimize};
    let meta = optimize(dir, options, true)?;
    let index = LoadedIndex::load(dir)?;
    let ann = AnnIndex::load(dir, &index)?
        .map_err(|_| anyhow::anyhow!("the graph just built does not load"))?;
    let graph_bytes: u64 = std::fs::read_dir(ann_dir(dir))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let qs = bench_queries(&index, given, queries, 3)?;
    let exact: Vec<Vec<(usize, f32)>> = qs
        .iter()
        .map(|q| index.search(q, 10))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for &ef in efs {
        let mut times = Vec::new();
        let (mut found, mut near) = (0usize, 0usize);
        for (q, want) in qs.iter().zip(&exact) {
            let t = Instant::now();
            let hits = ann.search(&index, q, 10, ef)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            found += hits
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.0))
                .count();
            let tenth = want.last().map_or(0.0, |w| 1.0 - w.1);
            near += hits
                .iter()
                .filter(|h| 1.0 - h.1 <= tenth * 1.01 + 1e-6)
                .count();
        }
        times.sort_by(f64::total_cmp);
        out.push(AnnBenchReport {
            vectors: index.len(),
            connections: meta.connections,
            ef_construction: meta.ef_construction,
            ef_search: ef,
            build_s: meta.build_s,
            graph_bytes_per_vector: graph_bytes as f64 / index.len() as f64,
            recall_at_10: found as f64 / (10 * qs.len()) as f64,
            epsilon_recall_at_10: near as f64 / (10 * qs.len()) as f64,
            queries: qs.len(),
            query_ms_median: times[times.len() / 2],
            query_ms_p95: times[(times.len() * 95 / 100).min(times.len() - 1)],
        });
    }
    Ok(out)
}

/// The last line of `bench --search-… --jsonl`: the engine `search` would use with the
/// index's default parameters (the graph at `ef` 128 when one was built, else exact).
#[derive(Debug, Serialize, PartialEq)]
pub struct SearchSummary {
    pub vectors: usize,
    pub dim: usize,
    pub engine: &'static str,
    /// The raw matrix's dtype.
    pub dtype: String,
    pub build_s: f64,
    pub recall_at_10: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Everything kept per vector: the Parquet part, the raw matrix and the graph.
    pub bytes_per_vector: f64,
}

pub fn summary(exact: &SearchBenchReport, ann: &[AnnBenchReport]) -> SearchSummary {
    let stored = exact.bytes_per_vector + exact.matrix_bytes_per_vector;
    match ann
        .iter()
        .find(|x| x.ef_search == crate::index::searcher::DEFAULT_EF)
    {
        Some(x) => SearchSummary {
            vectors: exact.vectors,
            dim: exact.dim,
            engine: "ann",
            dtype: exact.dtype.clone(),
            build_s: x.build_s,
            recall_at_10: x.recall_at_10,
            p50_ms: x.query_ms_median,
            p95_ms: x.query_ms_p95,
            bytes_per_vector: stored + x.graph_bytes_per_vector,
        },
        None => SearchSummary {
            vectors: exact.vectors,
            dim: exact.dim,
            engine: "exact",
            dtype: exact.dtype.clone(),
            build_s: 0.0,
            // Exact over f16 values loses what rounding changed, measured against f32 when the
            // originals were at hand.
            recall_at_10: exact.top10_agreement_with_f32.unwrap_or(1.0),
            p50_ms: exact.query_ms_median,
            p95_ms: exact.query_ms_p95,
            bytes_per_vector: stored,
        },
    }
}
