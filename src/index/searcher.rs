//! One search as `search` and the Python package's `Index` run it: the index's CLIP model
//! loaded and checked against the index, a query of weighed texts and images (and ones to
//! look away from) embedded, the engine chosen (the HNSW graph when it is current, else exact),
//! an optional class filter, and each hit as the JSON line `search --jsonl` prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::Serialize;

use super::IndexMeta;
use super::ann::{AnnIndex, AnnState};

/// Candidates the HNSW graph explores per query unless `--ef` says otherwise.
pub const DEFAULT_EF: usize = 128;
use super::search::{LoadedIndex, Query, weighted};
use crate::classify::Classifier;
use crate::encoder::ClipEncoder;
use crate::imagery::DecodeOptions;

/// Which search engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The HNSW graph when `index optimize` made one and the parts have not changed since;
    /// else exact.
    Auto,
    /// Every vector scored (never wrong).
    Exact,
    /// The HNSW graph (an error when there is none or it is stale).
    Ann,
}

impl Engine {
    /// `auto`, `exact` or `ann`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "ann" => Ok(Self::Ann),
            other => bail!("engine {other:?}: expected auto, exact or ann"),
        }
    }
}

/// A query as given: texts and image paths, each `W:…` to weigh it (see [`weighted`]).
#[derive(Debug, Default, Clone)]
pub struct QuerySpec {
    pub texts: Vec<String>,
    pub images: Vec<String>,
    pub negative_texts: Vec<String>,
    pub negative_images: Vec<String>,
}

/// One result, as a line of `search --jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Hit<'a> {
    pub rank: usize,
    pub id: &'a str,
    pub path: &'a str,
    pub score: f32,
    pub chip: Option<[u32; 4]>,
    /// A scene tile's WGS 84 box; left out for other images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounds: Option<[f64; 4]>,
}

/// Images a classifier puts in one class: the filter of `search --class C --classifier F`.
pub struct ClassFilter {
    pub classifier: Classifier,
    pub class: usize,
}

/// An index opened for searching, with its model.
pub struct Searcher {
    pub dir: PathBuf,
    pub index: LoadedIndex,
    pub clip: ClipEncoder,
    pub decode: DecodeOptions,
    /// The HNSW graph, or why there is none usable; `None` when not loaded (exact only).
    ann: Option<Result<AnnIndex, AnnState>>,
}

impl Searcher {
    /// Opens the index in `dir` with its own model (or `model`, which must be the same model),
    /// and its HNSW graph unless `exact_only`.
    pub fn open(
        dir: &Path,
        model: Option<&str>,
        device: &Device,
        exact_only: bool,
    ) -> Result<Self> {
        let meta = IndexMeta::read(dir)?;
        let spec = model.unwrap_or(&meta.model.spec);
        let clip = ClipEncoder::load(spec, device).with_context(|| {
            if model.is_none() {
                format!(
                    "cannot load the index's model {spec} (give --model with the same model's folder)"
                )
            } else {
                format!("cannot load --model {spec}")
            }
        })?;
        let decode = meta.decode_options();
        let key = crate::cache::model_key(&clip, &decode)?;
        meta.check_model(dir, &key.to_hex(), spec)?;
        let index = LoadedIndex::load(dir)?;
        let ann = if exact_only {
            None
        } else {
            Some(AnnIndex::load(dir, &index)?)
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            clip,
            decode,
            ann,
        })
    }

    /// The query vector: `normalise(Σ w·text or image − Σ w·negatives)`.
    pub fn query(&self, spec: &QuerySpec) -> Result<Vec<f32>> {
        if spec.texts.is_empty() && spec.images.is_empty() {
            bail!("an empty query: give at least one --text or --image");
        }
        let mut query = Query::default();
        for (texts, images, into) in [
            (&spec.texts, &spec.images, &mut query.positive),
            (
                &spec.negative_texts,
                &spec.negative_images,
                &mut query.negative,
            ),
        ] {
            for t in texts {
                let (w, text) = weighted(t)?;
                if text.trim().is_empty() {
                    bail!("--text {t:?}: an empty text");
                }
                let e = self.clip.embed_texts(&[text.to_string()], 1)?.remove(0);
                into.push((w, e));
            }
            for i in images {
                let (w, path) = weighted(i)?;
                let pixels = self
                    .clip
                    .load_pixels(Path::new(path), &self.decode)
                    .with_context(|| format!("--image {path}: cannot be read"))?;
                into.push((w, self.clip.embed_pixels(&[pixels])?.remove(0)));
            }
        }
        query.vector()
    }

    /// `classifier` (read from `file`; of this index's model) and its class `class`.
    pub fn class_filter(
        &self,
        classifier: Classifier,
        file: &Path,
        class: &str,
    ) -> Result<ClassFilter> {
        classifier.check_model(&self.clip, file)?;
        let names: Vec<&str> = classifier.classes().iter().map(String::as_str).collect();
        let class = crate::labels::find_name(&names, class, "--class")?;
        Ok(ClassFilter { classifier, class })
    }

    /// The best `top_k` rows for `query`: `(row, cosine)`, best first. What the user should
    /// hear (a stale graph, how many images a class holds) goes to `note`.
    pub fn search(
        &self,
        query: &[f32],
        top_k: usize,
        engine: Engine,
        ef: usize,
        filter: Option<&ClassFilter>,
        mut note: impl FnMut(&str),
    ) -> Result<Vec<(usize, f32)>> {
        if top_k == 0 {
            bail!("--top-k must be at least 1");
        }
        if ef == 0 {
            bail!("--ef must be at least 1");
        }
        if let Some(f) = filter {
            if engine == Engine::Ann {
                bail!("--class searches exactly among the class's images; leave out --engine ann");
            }
            let c = &f.classifier;
            let rows = self
                .index
                .rows_where(|e| crate::classify::argmax(&c.logits(e)) == f.class);
            note(&format!(
                "--class {}: {} of {} images",
                c.classes()[f.class],
                rows.len(),
                self.index.len()
            ));
            return self.index.search_rows(query, top_k, &rows);
        }
        let dir = self.dir.display();
        match (engine, &self.ann) {
            (Engine::Exact, _) | (Engine::Auto, None | Some(Err(AnnState::Absent))) => {
                self.index.search(query, top_k)
            }
            (Engine::Auto, Some(Err(AnnState::Stale(why)))) => {
                note(&format!(
                    "the HNSW graph is stale ({why}); searched exactly (run `skyscribe index \
                     optimize --index {dir}`)"
                ));
                self.index.search(query, top_k)
            }
            (Engine::Auto, Some(Err(AnnState::Damaged(why)))) => {
                note(&format!(
                    "the HNSW graph is damaged ({why}); searched exactly"
                ));
                self.index.search(query, top_k)
            }
            (Engine::Ann, None | Some(Err(AnnState::Absent))) => {
                bail!("{dir}: no HNSW graph; run `skyscribe index optimize --index {dir}` first")
            }
            (Engine::Ann, Some(Err(AnnState::Stale(why)))) => bail!(
                "{dir}: the HNSW graph is stale ({why}); run `skyscribe index optimize` again"
            ),
            (Engine::Ann, Some(Err(AnnState::Damaged(why)))) => {
                bail!("{dir}: the HNSW graph is damaged ({why})")
            }
            (Engine::Auto, Some(Ok(ann))) => match ann.not_for_auto() {
                None => ann.search(&self.index, query, top_k, ef),
                Some(why) => {
                    note(&format!(
                        "the HNSW graph is not used: {why}; searched exactly (`--engine ann` \
                         uses it anyway; `index optimize --connections 32 --ef-construction 256` \
                         builds a closer one)"
                    ));
                    self.index.search(query, top_k)
                }
            },
            (Engine::Ann, Some(Ok(ann))) => ann.search(&self.index, query, top_k, ef),
        }
    }

    /// A hit of [`Self::search`] as its JSON line (`rank` from 1).
    pub fn hit(&self, rank: usize, row: usize, score: f32) -> Hit<'_> {
        Hit {
            rank,
            id: &self.index.ids[row],
            path: &self.index.paths[row],
            score,
            chip: self.index.chips[row],
            bounds: self.index.bounds[row],
        }
    }
}
