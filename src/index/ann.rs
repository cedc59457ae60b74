//! The approximate engine for archives beyond what exact search scans quickly: an HNSW graph
//! ([`super::hnsw`]) built on demand by `index optimize` over every complete part, saved in
//! `DIR/ann/graph.bin`; it holds only links, and search reads the vectors from the parts.
//!
//! `DIR/ann/ann.json` records the parts' checksums the graph was built from: once any part
//! changes, the graph is stale and search falls back to exact (saying so) until the next
//! `index optimize`. Graph rows are the rows of [`LoadedIndex`] (parts in order).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::IndexMeta;
use super::hnsw::{BuildOptions, Graph};
use super::parts::{self, Marker};
use super::search::LoadedIndex;

/// The graph's file in `DIR/ann/`.
const GRAPH_FILE: &str = "graph.bin";

/// `ann.json`'s `engine` for graphs this skyscribe reads; a graph of an older one (hnsw_rs's
/// files) is not read, and search says to optimize again.
pub const ENGINE: &str = "skyscribe HNSW 1 (diversity-pruned links, inner product on unit vectors)";

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
    /// `(file, bytes)` of the graph's files as written: a file cut short or swapped is caught
    /// before the graph is mapped.
    #[serde(default)]
    pub files: Vec<(String, u64)>,
    /// Recall@10 against exact search measured when the graph was built (see [`measure_recall`]);
    /// `search --engine auto` uses the graph only when it is at least [`MIN_RECALL`].
    #[serde(default)]
    pub recall: Option<MeasuredRecall>,
}

/// What `index optimize` measured of the graph it built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRecall {
    /// Mean share of exact search's top 10 the graph returns.
    pub recall_at_10: f64,
    /// At this `ef` (search's default).
    pub ef: usize,
    /// Over this many queries: rows of the index drawn at random, each finding its neighbours
    /// among the others.
    pub queries: usize,
}

/// The recall below which `search --engine auto` searches exactly instead of through the graph.
pub const MIN_RECALL: f64 = 0.95;

/// Queries [`measure_recall`] draws.
const RECALL_QUERIES: usize = 200;

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
    if options.connections < 2 || options.connections > 255 {
        bail!("--connections must be between 2 and 255");
    }
    remove_leftovers(dir);
    let started = Instant::now();
    let n = index.len();
    let bar = crate::progress::items(n, "vectors", "HNSW graph", quiet);
    let build = BuildOptions {
        connections: options.connections,
        ef_construction: options.ef_construction,
        seed: 0x5EA4C8,
    };
    let graph = Graph::build(&index, build, |k| bar.inc(k as u64))?;
    bar.finish_and_clear();
    let build_s = started.elapsed().as_secs_f64();
    let recall = measure_recall(&index, |q, k, ef| graph.search(&index, q, k, ef));
    let out = crate::atomic::NewDir::replacing(&ann_dir(dir))?;
    graph.save(&out.path().join(GRAPH_FILE))?;
    let ann = AnnMeta {
        engine: ENGINE.into(),
        rows: n,
        connections: options.connections,
        ef_construction: options.ef_construction,
        build_s,
        parts: markers,
        files: graph_files(out.path())?,
        recall: Some(recall?),
    };
    // ann.json last: a folder without it is no graph (and the rename makes it whole anyway).
    out.write("ann.json", &serde_json::to_vec_pretty(&ann)?)?;
    out.replace()?;
    Ok(ann)
}

/// Removes the temporary folders of optimize runs that were killed (`.ann.PID-N.tmp`, beside
/// `ann/`, of a process that is gone): never read, they only take space.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".ann.")
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `(name, bytes)` of the graph's files in `dir`.
fn graph_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let path = dir.join(GRAPH_FILE);
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    Ok(vec![(GRAPH_FILE.into(), bytes)])
}

/// Recall@10 of `search` (a graph's) against exact search: [`RECALL_QUERIES`] rows of the
/// index drawn with a fixed seed, each a query whose own row is left out of both answers (the
/// neighbours of an archive's images, as a query near them finds them).
pub fn measure_recall(
    index: &LoadedIndex,
    search: impl Fn(&[f32], usize, usize) -> Vec<(usize, f32)>,
) -> Result<MeasuredRecall> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EA4C8);
    let n = index.len();
    let queries = RECALL_QUERIES.min(n);
    let ef = super::searcher::DEFAULT_EF;
    let mut found = 0usize;
    let mut wanted = 0usize;
    for _ in 0..queries {
        let row = rng.random_range(0..n);
        let q = index.vector(row);
        let exact: Vec<usize> = index
            .search(&q, 11)?
            .into_iter()
            .map(|h| h.0)
            .filter(|&r| r != row)
            .take(10)
            .collect();
        let got: Vec<usize> = search(&q, 11, ef)
            .into_iter()
            .map(|h| h.0)
            .filter(|&r| r != row)
            .take(10)
            .collect();
        wanted += exact.len();
        found += got.iter().filter(|r| exact.contains(r)).count();
    }
    Ok(MeasuredRecall {
        recall_at_10: if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        },
        ef,
        queries,
    })
}

/// A saved graph, loaded.
pub struct AnnIndex {
    graph: Graph,
    dim: usize,
    pub meta: AnnMeta,
}

/// Why the graph is not used.
pub enum AnnState {
    Absent,
    /// The parts changed since `index optimize`.
    Stale(String),
    /// Its files are cut short, missing or unreadable.
    Damaged(String),
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
        if meta.engine != ENGINE {
            return Ok(Err(AnnState::Stale(format!(
                "the graph was made by an older skyscribe ({}); run `skyscribe index optimize` again",
                meta.engine
            ))));
        }
        if now != meta.parts || meta.rows != index.len() || !index.warnings.is_empty() {
            return Ok(Err(AnnState::Stale(
                "the parts changed since `index optimize`".into(),
            )));
        }
        for (name, bytes) in &meta.files {
            let path = adir.join(name);
            let now = std::fs::metadata(&path).map(|m| m.len()).ok();
            if now != Some(*bytes) {
                return Ok(Err(AnnState::Damaged(format!(
                    "{}: {} bytes, {bytes} when written; run `skyscribe index optimize` again",
                    path.display(),
                    now.map_or("missing".into(), |b| b.to_string())
                ))));
            }
        }
        let graph = match Graph::load(&adir.join(GRAPH_FILE), index.len()) {
            Ok(g) => g,
            Err(e) => {
                return Ok(Err(AnnState::Damaged(format!(
                    "{e:#}; run `skyscribe index optimize` again"
                ))));
            }
        };
        Ok(Ok(Self {
            graph,
            dim: index.dim(),
            meta,
        }))
    }

    /// The (approximately) best `k` rows of `index` (the one the graph was loaded for) for
    /// `query`: `(row, cosine)`, best first. `ef`: the candidates explored (more is slower and
    /// closer to exact).
    pub fn search(
        &self,
        index: &LoadedIndex,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Result<Vec<(usize, f32)>> {
        if query.len() != self.dim {
            bail!(
                "a query of dimension {} for an index of dimension {}",
                query.len(),
                self.dim
            );
        }
        Ok(self.graph.search(index, query, k, ef))
    }

    /// Why `--engine auto` should not use this graph: its recall measured at build was under
    /// [`MIN_RECALL`], or was not measured (a graph of an older skyscribe).
    pub fn not_for_auto(&self) -> Option<String> {
        match &self.meta.recall {
            Some(r) if r.recall_at_10 >= MIN_RECALL => None,
            Some(r) => Some(format!(
                "its recall@10 measured at build is {:.3} (ef {}), under {MIN_RECALL}",
                r.recall_at_10, r.ef
            )),
            None => Some("its recall was never measured (an older graph)".into()),
        }
    }
}
