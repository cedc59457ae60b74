//! The approximate engine for archives beyond what exact search scans quickly: an HNSW graph
//! (hnsw_rs, pure Rust, so the default build still needs no C++ toolchain; usearch and faiss
//! would) built on demand by `index optimize` over every complete part, saved in `DIR/ann/`.
//!
//! `DIR/ann/ann.json` records the parts' checksums the graph was built from: once any part
//! changes, the graph is stale and search falls back to exact (saying so) until the next
//! `index optimize`. Graph rows are the rows of [`LoadedIndex`] (parts in order).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo, ReloadOptions};
use serde::{Deserialize, Serialize};

use super::IndexMeta;
use super::parts::{self, Marker};
use super::search::LoadedIndex;

const BASENAME: &str = "hnsw";

/// `1 − x·y` for unit vectors, with skyscribe's vectorised dot product (hnsw_rs's own `DistDot`
/// is scalar unless a SIMD feature is chosen, and asserts on the rounding of near-equal
/// vectors); clamped at 0 for the same rounding.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - super::search::dot(a, b)).max(0.0)
    }
}

/// How the graph is built.
#[derive(Debug, Clone, Copy)]
pub struct AnnOptions {
    /// Neighbours kept per node (HNSW's M).
    pub connections: usize,
    /// Candidates explored when inserting (efConstruction).
    pub ef_construction: usize,
}

impl Default for AnnOptions {
    fn default() -> Self {
        Self {
            connections: 16,
            ef_construction: 128,
        }
    }
}

/// `DIR/ann/ann.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnMeta {
    pub engine: String,
    pub rows: usize,
    pub connections: usize,
    pub ef_construction: usize,
    pub build_s: f64,
    /// `(part file, its BLAKE3)` of every part the graph holds, in row order.
    pub parts: Vec<(String, String)>,
}

pub fn ann_dir(index: &Path) -> PathBuf {
    index.join("ann")
}

/// The markers of every part of the index, all of which must be complete.
fn complete_markers(dir: &Path, meta: &IndexMeta) -> Result<Vec<(String, String)>> {
    let parts_dir = dir.join("parts");
    (0..meta.shards)
        .map(|i| {
            let path = parts_dir.join(parts::marker_name(i, meta.shards));
            let text = std::fs::read(&path).map_err(|_| {
                anyhow!(
                    "{}: part {i} of {} is not complete; optimize once every shard has finished",
                    dir.display(),
                    meta.shards
                )
            })?;
            let m: Marker = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a part marker", path.display()))?;
            Ok((parts::part_name(i, meta.shards), m.vectors_blake3))
        })
        .collect()
}

/// Builds the graph over every part of the index in `dir` and saves it in `DIR/ann/`
/// (replacing an older one whole).
pub fn optimize(dir: &Path, options: AnnOptions, quiet: bool) -> Result<AnnMeta> {
    let meta = IndexMeta::read(dir)?;
    let markers = complete_markers(dir, &meta)?;
    let index = LoadedIndex::load(dir)?;
    if !index.warnings.is_empty() {
        bail!(
            "{}: every part must be readable to optimize:\n  {}",
            dir.display(),
            index.warnings.join("\n  ")
        );
    }
    if index.is_empty() {
        bail!("{}: the index holds no vectors", dir.display());
    }
    if options.connections == 0 || options.connections > 255 {
        bail!("--connections must be between 1 and 255");
    }
    let started = Instant::now();
    let n = index.len();
    let layers = 16;
    let hnsw: Hnsw<f32, UnitCosine> = Hnsw::new(
        options.connections,
        n.max(1),
        layers,
        options.ef_construction.max(options.connections),
        UnitCosine,
    );
    let rows: Vec<(&[f32], usize)> = (0..n).map(|r| (index.vector(r), r)).collect();
    let bar = crate::progress::items(n, "vectors", "HNSW graph", quiet);
    // In blocks, so that the bar moves; each block is inserted on every core.
    for block in rows.chunks(4096) {
        hnsw.parallel_insert_slice(&block.to_vec());
        bar.inc(block.len() as u64);
    }
    bar.finish_and_clear();
    let build_s = started.elapsed().as_secs_f64();
    let ann = AnnMeta {
        engine: "hnsw_rs 0.3 (HNSW, inner product on unit vectors)".into(),
        rows: n,
        connections: options.connections,
        ef_construction: options.ef_construction,
        build_s,
        parts: markers,
    };
    let out = crate::atomic::NewDir::replacing(&ann_dir(dir))?;
    hnsw.file_dump(out.path(), BASENAME)
        .map_err(|e| anyhow!("{}: cannot save the graph ({e})", out.path().display()))?;
    out.write("ann.json", &serde_json::to_vec_pretty(&ann)?)?;
    out.replace()?;
    Ok(ann)
}

/// A saved graph, loaded.
pub struct AnnIndex {
    graph: Hnsw<'static, f32, UnitCosine>,
    dim: usize,
    pub meta: AnnMeta,
}

/// Why the graph is not used.
pub enum AnnState {
    Absent,
    /// The parts changed since `index optimize`.
    Stale(String),
}

impl AnnIndex {
    /// The graph of the index in `dir`, if there is one and it matches the index's parts.
    pub fn load(dir: &Path, index: &LoadedIndex) -> Result<Result<Self, AnnState>> {
        let adir = ann_dir(dir);
        let Ok(text) = std::fs::read(adir.join("ann.json")) else {
            return Ok(Err(AnnState::Absent));
        };
        let meta: AnnMeta = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not an ann.json", adir.display()))?;
        let now = match complete_markers(dir, &index.meta) {
            Ok(m) => m,
            Err(e) => return Ok(Err(AnnState::Stale(format!("{e:#}")))),
        };
        if now != meta.parts || meta.rows != index.len() || !index.warnings.is_empty() {
            return Ok(Err(AnnState::Stale(
                "the parts changed since `index optimize`".into(),
            )));
        }
        // hnsw_rs's loaded graph borrows its loader for its whole life; a search process loads
        // one graph once, so the loader (a few paths and options) is leaked to make it 'static.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new_with_options(
            &adir,
            BASENAME,
            ReloadOptions::default().set_mmap(true),
        )));
        let graph: Hnsw<f32, UnitCosine> = io
            .load_hnsw()
            .map_err(|e| anyhow!("{}: cannot load the graph ({e})", adir.display()))?;
        Ok(Ok(Self {
            graph,
            dim: index.dim(),
            meta,
        }))
    }

    /// The (approximately) best `k` rows for `query`: `(row, cosine)`, best first. `ef`: the
    /// candidates explored (more is slower and closer to exact).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<(usize, f32)>> {
        if query.len() != self.dim {
            bail!(
                "a query of dimension {} for an index of dimension {}",
                query.len(),
                self.dim
            );
        }
        let mut hits: Vec<(usize, f32)> = self
            .graph
            .search(query, k, ef.max(k))
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }
}
