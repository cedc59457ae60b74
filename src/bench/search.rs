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
use crate::index::{FORMAT, IndexMeta, ModelIdentity};

/// What one search benchmark measured.
#[derive(Debug, Serialize)]
pub struct SearchBenchReport {
    pub vectors: usize,
    pub dim: usize,
    pub threads: usize,
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

/// Writes an index of `n` synthetic vectors into the empty folder `dir`.
pub fn write_synthetic_index(dir: &Path, n: usize, dim: usize) -> Result<()> {
    let parts_dir = dir.join("parts");
    std::fs::create_dir_all(&parts_dir)?;
    let key = "synthetic".to_string();
    let vectors = clustered_vectors(n, dim, 1);
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
    parts::write_part(&parts_dir, 0, 1, &rows, dim, &key)?;
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
        dtype: "f32".into(),
        shards: 1,
        count: n,
        parts_complete: 1,
        inputs: None,
    };
    crate::atomic::write_file(&IndexMeta::path(dir), &serde_json::to_vec_pretty(&meta)?)
}

/// Loads the index in `dir` and times `queries` top-`k` queries near its vectors.
pub fn measure(dir: &Path, queries: usize, k: usize) -> Result<SearchBenchReport> {
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
    let matrix = dir.join("parts").join(parts::vectors_name(0, 1));
    let matrix_bytes = std::fs::metadata(&matrix)?.len() as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut times = Vec::with_capacity(queries);
    for _ in 0..queries.max(1) {
        let row = rng.random_range(0..index.len());
        let q = unit(
            index
                .vector(row)
                .iter()
                .map(|x| x + 0.05 * rng.random_range(-1.0f32..1.0))
                .collect(),
        );
        let t = Instant::now();
        let hits = index.search(&q, k)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(hits);
    }
    times.sort_by(f64::total_cmp);
    Ok(SearchBenchReport {
        vectors: index.len(),
        dim,
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
    pub queries: usize,
    pub query_ms_median: f64,
    pub query_ms_p95: f64,
}

/// Builds the HNSW graph of the index in `dir` (`index optimize`) and measures recall@10
/// against exact search and latency, at each `ef` of `efs`.
pub fn measure_ann(
    dir: &Path,
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let qs: Vec<Vec<f32>> = (0..queries.max(1))
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
        .collect();
    let exact: Vec<Vec<usize>> = qs
        .iter()
        .map(|q| Ok(index.search(q, 10)?.into_iter().map(|h| h.0).collect()))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for &ef in efs {
        let mut times = Vec::new();
        let mut found = 0usize;
        for (q, want) in qs.iter().zip(&exact) {
            let t = Instant::now();
            let hits = ann.search(q, 10, ef)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            found += hits.iter().filter(|h| want.contains(&h.0)).count();
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
            queries: qs.len(),
            query_ms_median: times[times.len() / 2],
            query_ms_p95: times[(times.len() * 95 / 100).min(times.len() - 1)],
        });
    }
    Ok(out)
}
