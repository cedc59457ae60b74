//! Archive search: an index of image embeddings on disk, built in shards, searched by text,
//! image or both, and "find a feature in an image" (patch scores).
//!
//! An index is a folder:
//!
//! ```text
//! DIR/index.json                       the model's identity (as the cache keys it), dimension,
//!                                      dtype, shard count, skyscribe version, row count
//! DIR/parts/part-<I>-of-<N>.parquet    shard I's rows: id, path, chip, content_hash, embedding
//! DIR/parts/_part-<I>-of-<N>.done      its completion marker (rows, sizes, BLAKE3 of both files)
//! DIR/parts/_part-<I>-of-<N>.f32       the same embeddings as a raw matrix (search maps it)
//! DIR/parts/_part-<I>-of-<N>.pending/  rows an unfinished build of shard I encoded (resume)
//! DIR/ann/graph.bin, ann/ann.json       the HNSW graph of `index optimize` and its recall, when made
//! ```
//!
//! Only the parts in `parts/` lack the leading `_`, so `parts/` read as a folder by Spark,
//! PyArrow, Polars or DuckDB (`parts/*.parquet`) is exactly the index's rows.
//!
//! Shard `I` of `N` owns the ids whose BLAKE3 hash is `I` modulo `N` ([`shard_of`]), so shards
//! running on different machines over one shared folder never write the same part, and a new
//! file moves no other. Submodules: [`parts`] (the files), [`build`] (incremental, resumable
//! builds), [`search`] (loading and exact top-k), [`searcher`] (one search with its model, query and
//! engine), [`hnsw`] (the graph of links, built and searched over the parts' own vectors),
//! [`ann`] (the graph of an index: `index optimize`, its recall, when it is stale), [`locate`]
//! (patch scores in one image),
//! [`sheet`] (HTML contact sheets of results).

pub mod ann;
pub mod build;
pub mod hnsw;
pub mod locate;
pub mod parts;
pub mod search;
pub mod searcher;
pub mod sheet;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::data::{ChipOptions, ImageRef};

/// The format name in `index.json`: readers refuse folders of another format.
pub const FORMAT: &str = "skyscribe-index/1";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub format: String,
    pub skyscribe_version: String,
    pub model: ModelIdentity,
    /// 1-based bands used as red, green, blue (query images are read the same way).
    pub bands: Option<Vec<usize>>,
    /// JPEGs were decoded in draft mode (`--jpeg-draft`); written only when true, so indexes
    /// built without it read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jpeg_draft: bool,
    pub dim: usize,
    /// How the raw matrix beside each part stores the embeddings: `f32`, or `f16` (half the
    /// bytes; `index build --dtype f16`). [`IndexMeta::vector_dtype`] reads it.
    pub dtype: String,
    /// How many parts make the whole index.
    pub shards: usize,
    /// Rows in the parts complete when this file was last written. Per-part counts live in the
    /// markers (the truth while shards are still running); this is the whole index's count
    /// once `parts_complete == shards`.
    pub count: usize,
    pub parts_complete: usize,
    /// The inputs the index is built over, as [`canonical_inputs`] writes them: a build over
    /// other inputs is refused unless it says `--add` or `--replace` ([`plan_inputs`]).
    /// Absent in indexes built before it was recorded (their next build records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
}

/// How a build's inputs relate to those the index records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputChange {
    /// The same inputs (anything else is refused).
    #[default]
    Same,
    /// These inputs as well as the recorded ones.
    Add,
    /// These inputs instead of the recorded ones: rows of the others are dropped.
    Replace,
}

/// Inputs written so that the same input reads the same from any folder: paths (also those
/// of `KIND:PATH`) made absolute and canonical where they exist; sorted, without repeats.
pub fn canonical_inputs(inputs: &[String]) -> Vec<String> {
    let canonical = |p: &str| {
        std::fs::canonicalize(p)
            .map(|c| c.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    let mut out: Vec<String> = inputs
        .iter()
        .map(|input| {
            if Path::new(input).exists() {
                return canonical(input);
            }
            match input.split_once(':') {
                Some((kind, path)) if DATA_KINDS.contains(&kind) => {
                    format!("{kind}:{}", canonical(path))
                }
                _ => input.clone(),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The inputs a build of the index in `dir` runs over, given `inputs` on its command line and
/// `change`: a new index (or one that recorded none) takes them as they are; `Add` adds them to
/// the recorded ones and `Replace` puts them in their place; with neither, other inputs than
/// the recorded ones are refused — building over them would drop every row of the archive
/// that they do not name. Files vanished from the recorded inputs are still dropped.
pub fn plan_inputs(dir: &Path, inputs: &[String], change: InputChange) -> Result<Vec<String>> {
    let given = canonical_inputs(inputs);
    let recorded = if IndexMeta::path(dir).is_file() {
        IndexMeta::read(dir)?.inputs
    } else {
        None
    };
    let Some(recorded) = recorded else {
        return Ok(given);
    };
    Ok(match change {
        InputChange::Replace => given,
        InputChange::Add => {
            let mut all = recorded;
            all.extend(given);
            all.sort();
            all.dedup();
            all
        }
        InputChange::Same if given == recorded => given,
        InputChange::Same => {
            let new: Vec<&str> = given
                .iter()
                .filter(|g| !recorded.contains(g))
                .map(String::as_str)
                .collect();
            let missing: Vec<&str> = recorded
                .iter()
                .filter(|r| !given.contains(r))
                .map(String::as_str)
                .collect();
            bail!(
                "{}: this index is built over {}; building it over {} would drop the rows of                  every file these inputs do not name{}{}. Give --add to index these inputs as                  well (the index keeps what it has), or --replace to make them the index's only                  inputs (the rows of the others are dropped)",
                dir.display(),
                recorded.join(", "),
                given.join(", "),
                if new.is_empty() {
                    String::new()
                } else {
                    format!(" (new: {})", new.join(", "))
                },
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (not given: {})", missing.join(", "))
                },
            )
        }
    })
}

/// How the raw matrix beside each part (the vectors search reads) stores an embedding's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorDtype {
    /// 4 bytes a value: search scores exactly what the model gave.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes a value: half the disk and memory, about 3 significant
    /// digits; the Parquet column then holds the same rounded values (as `f32`), so both agree.
    F16,
}

impl VectorDtype {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => bail!("unknown vector dtype {other:?}: f32 or f16"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// Bytes one value takes in the raw matrix.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

impl std::fmt::Display for VectorDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which model embedded the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The `--model` given to the build (a folder, built-in name or hub id): search loads it
    /// when no `--model` is given.
    pub spec: String,
    /// [`crate::cache::model_fingerprint`] of the model folder.
    pub fingerprint: String,
    /// The embedding cache's key: the model files, its preprocessing and the bands.
    pub key: String,
}

impl IndexMeta {
    /// How the index read its images (bands, JPEG draft mode): query images are read the same
    /// way, and the model key is computed under these options.
    pub fn decode_options(&self) -> crate::imagery::DecodeOptions {
        crate::imagery::DecodeOptions {
            bands: self.bands.clone(),
            jpeg_draft: self.jpeg_draft,
            ..Default::default()
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("index.json")
    }

    /// Reads `DIR/index.json`, refusing a missing folder or a folder that is not an index.
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: no such index folder", dir.display());
        }
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: not a skyscribe index (no index.json; build one with `skyscribe index build --index {}`)",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        let meta: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a skyscribe index.json", path.display()))?;
        if meta.format != FORMAT {
            bail!(
                "{}: index format {:?}, this skyscribe reads {FORMAT:?}",
                path.display(),
                meta.format
            );
        }
        Ok(meta)
    }

    /// The dtype of the raw matrices, refusing one this skyscribe does not read (an index
    /// written by a newer version).
    pub fn vector_dtype(&self) -> Result<VectorDtype> {
        VectorDtype::parse(&self.dtype).map_err(|e| anyhow!("index.json: {e}"))
    }

    /// Refuses a model other than the index's, naming both.
    pub fn check_model(&self, dir: &Path, key: &str, spec: &str) -> Result<()> {
        if self.model.key != key {
            bail!(
                "{}: this index was built with model {} (key {}), not {spec} (key {key}); \
                 use --model {} or another index folder",
                dir.display(),
                self.model.spec,
                &self.model.key[..16.min(self.model.key.len())],
                self.model.spec
            );
        }
        Ok(())
    }
}

/// One share of the inputs: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {i:?} is not a shard number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a shard count"))?;
        if count == 0 {
            return Err(format!("{s:?}: the shard count must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "{s:?}: shards are numbered 0 to {} (I/N with I < N)",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// The shard to run: `--shard` when given; else a Slurm job array's
    /// `SLURM_ARRAY_TASK_ID` (less `SLURM_ARRAY_TASK_MIN`) of `SLURM_ARRAY_TASK_COUNT`; else a
    /// Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` of `--shards N`; else the whole input.
    pub fn resolve(
        flag: Option<Shard>,
        shards: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow!("{name}={v:?} is not a number"))
                })
                .transpose()
        };
        if let Some(s) = flag {
            if shards.is_some() {
                bail!("--shards goes with JOB_COMPLETION_INDEX; with --shard I/N it says nothing");
            }
            return Ok(s);
        }
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                anyhow!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
            })?;
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            if let Some(n) = shards
                && n != count
            {
                bail!("--shards {n} disagrees with SLURM_ARRAY_TASK_COUNT={count}");
            }
            let index = id.checked_sub(min).filter(|&i| i < count).ok_or_else(|| {
                anyhow!(
                    "SLURM_ARRAY_TASK_ID={id} is not one of {count} consecutive tasks from {min}: \
                     submit the array as --array=0-{} or pass --shard I/N",
                    count.saturating_sub(1)
                )
            })?;
            return Ok(Self { index, count });
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                anyhow!("JOB_COMPLETION_INDEX is set: give --shards N (the Job's completions)")
            })?;
            return Self::parse(&format!("{index}/{count}")).map_err(|e| anyhow!(e));
        }
        if let Some(n) = shards {
            bail!(
                "--shards {n} without JOB_COMPLETION_INDEX: pass --shard I/{n} to choose a shard"
            );
        }
        Ok(Self::WHOLE)
    }

    pub fn owns(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

/// The shard that owns `id` among `count`: BLAKE3 of the id, modulo the count (stable across
/// machines and versions, and independent of the other ids).
pub fn shard_of(id: &str, count: usize) -> usize {
    let h = blake3::hash(id.as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (n % count as u64) as usize
}

/// An image or chip to index, with its stable id.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexItem {
    /// The path relative to its input root (`/`-separated), plus `#x,y,w,h` for chips.
    pub id: String,
    pub image: ImageRef,
    /// A georeferenced scene tile's `[west, south, east, north]` (WGS 84 degrees).
    pub bounds: Option<[f64; 4]>,
}

/// The data set kinds an `index build` input may name as `KIND:PATH`.
const DATA_KINDS: &[&str] = &[
    "folder",
    "rsicd",
    "rsicd-scenes",
    "jsonl",
    "dota",
    "xview",
    "scene",
];

/// The items named by `inputs`: files, folders (walked) and data sets `KIND:PATH`. Inputs that
/// cannot be read come back as errors naming them; two different files with one id are an
/// error (give inputs whose relative paths differ).
pub fn gather_items(
    inputs: &[String],
    chips: &ChipOptions,
) -> Result<(Vec<IndexItem>, Vec<anyhow::Error>)> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        let as_path = Path::new(input);
        if crate::scene::stac::is_stac(input) {
            match stac_items(input, chips) {
                Ok(found) => items.extend(found),
                Err(e) => errors.push(e),
            }
            continue;
        }
        if let Some(path) = input.strip_prefix("scene:").filter(|_| !as_path.exists()) {
            match scene_items(Path::new(path), chips) {
                Ok(found) => items.extend(found),
                Err(e) => errors.push(e),
            }
            continue;
        }
        let dataset = input
            .split_once(':')
            .filter(|(kind, _)| DATA_KINDS.contains(kind) && !as_path.exists());
        if let Some((kind, path)) = dataset {
            let root = Path::new(path);
            let images: Vec<ImageRef> = if kind == "rsicd" {
                crate::data::open_captions(input)?
                    .items
                    .into_iter()
                    .map(|c| ImageRef::file(c.path))
                    .collect()
            } else {
                crate::data::open(input, None, chips)?
                    .samples
                    .into_iter()
                    .map(|s| s.image)
                    .collect()
            };
            let root = if root.is_dir() {
                root
            } else {
                root.parent().unwrap_or(Path::new("."))
            };
            items.extend(images.into_iter().map(|image| item(root, image)));
        } else if as_path.is_dir() {
            let found = crate::imagery::images_under(as_path);
            if found.is_empty() {
                errors.push(anyhow!("{input}: folder has no images"));
            }
            items.extend(found.into_iter().map(|p| item(as_path, ImageRef::file(p))));
        } else if as_path.is_file() {
            let root = as_path.parent().unwrap_or(Path::new("."));
            items.push(item(root, ImageRef::file(as_path.to_path_buf())));
        } else {
            errors.push(anyhow!(
                "{input}: no such file, folder or data set (KIND:PATH with KIND one of {})",
                DATA_KINDS.join(", ")
            ));
        }
    }
    let mut seen: HashMap<&str, &ImageRef> = HashMap::new();
    for it in &items {
        if let Some(other) = seen.insert(&it.id, &it.image)
            && other != &it.image
        {
            bail!(
                "two inputs give the id {:?}: {} and {} (index them into separate indexes, or \
                 give the folder above both)",
                it.id,
                other.display(),
                it.image.display()
            );
        }
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));
    items.dedup_by(|a, b| a.id == b.id);
    Ok((items, errors))
}

fn item(root: &Path, image: ImageRef) -> IndexItem {
    let rel = image.path.strip_prefix(root).unwrap_or(&image.path);
    let mut id = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    if let Some((x, y, w, h)) = image.crop {
        id.push_str(&format!("#{x},{y},{w},{h}"));
    }
    IndexItem {
        id,
        image,
        bounds: None,
    }
}

/// The tiles of the scenes named by `scene:PATH` (a scene file, or a folder of them): windows of
/// the chip size every chip stride to every edge, as `scan` lays them; each with its WGS 84
/// bounds when the scene is georeferenced.
fn scene_items(path: &Path, chips: &ChipOptions) -> Result<Vec<IndexItem>> {
    if crate::scene::source::is_remote(&path.to_string_lossy()) {
        // A URL is its own id (its tiles' ids: URL#x,y,w,h).
        let name = path.display().to_string();
        return tiles_of_scene(path, &name, chips);
    }
    let (files, root) = if path.is_dir() {
        (crate::imagery::images_under(path), path)
    } else if path.is_file() {
        (
            vec![path.to_path_buf()],
            path.parent().unwrap_or(Path::new(".")),
        )
    } else {
        bail!("scene:{}: no such file or folder", path.display());
    };
    if files.is_empty() {
        bail!("scene:{}: folder has no scenes", path.display());
    }
    let mut items = Vec::new();
    for file in files {
        let id = item(root, ImageRef::file(file.clone())).id;
        items.extend(tiles_of_scene(&file, &id, chips)?);
    }
    Ok(items)
}

/// The tiles of one scene (a file or a URL), with ids `ID#x,y,w,h` and WGS 84 bounds when the
/// scene is georeferenced. A scene smaller than the tile is one tile wide (or tall), cut to the
/// scene, as `scan` takes it.
fn tiles_of_scene(location: &Path, id: &str, chips: &ChipOptions) -> Result<Vec<IndexItem>> {
    let scene = crate::scene::Scene::open(location, &Default::default())?;
    if let Some(note) = scene.georef.as_ref().and_then(|g| g.datum_note.as_ref()) {
        // Said once per scene: its tiles' bounds are on that datum, not quite WGS 84.
        eprintln!(
            "skyscribe: {}: warning: {note}; its tiles' bounds are given so",
            location.display()
        );
    }
    let mut items = Vec::new();
    for rect in crate::data::cover_grid(scene.width, scene.height, chips.size, chips.stride) {
        let (x, y, w, h) = rect;
        items.push(IndexItem {
            id: format!("{id}#{x},{y},{w},{h}"),
            image: ImageRef {
                path: location.to_path_buf(),
                crop: Some(rect),
            },
            // A tile off the Earth (a geostationary disk's corners) has no bounds.
            bounds: match &scene.georef {
                Some(g) => g.tile_bounds_on_earth(rect)?,
                None => None,
            },
        });
    }
    Ok(items)
}

/// The tiles of STAC items (`stac:ITEM`, `stac-search:API`): each item's `visual` asset, tiled
/// as `scene:` inputs are, with ids `ITEM_ID#x,y,w,h`. An index row is one file's chip, so an
/// item whose colour comes from several band files is scanned (`scan --assets`), not indexed.
fn stac_items(input: &str, chips: &ChipOptions) -> Result<Vec<IndexItem>> {
    let query = crate::scene::stac::StacQuery {
        max_items: 100,
        ..Default::default()
    };
    let (scenes, notes) = crate::scene::stac::resolve(input, &query)?;
    for n in notes {
        eprintln!("skyscribe: {n}");
    }
    let mut items = Vec::new();
    for s in scenes {
        let [href] = s.hrefs.as_slice() else {
            bail!(
                "{input}: item {} has no `visual` asset (one file of red, green and blue): an \
                 index reads one file per item; scan its bands with `scan stac:… --assets \
                 red,green,blue`",
                s.id
            );
        };
        items.extend(
            tiles_of_scene(Path::new(href), &s.id, chips)
                .with_context(|| format!("{input}: item {}", s.id))?,
        );
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(Shard::parse("3/2").unwrap_err().contains("0 to 1"));
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("a/2").is_err());
        assert!(Shard::parse("1").is_err());
    }

    #[test]
    fn scheduler_variables_choose_the_shard() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert_eq!(Shard::resolve(None, None, none).unwrap(), Shard::WHOLE);
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
        ]);
        assert_eq!(
            Shard::resolve(None, None, slurm).unwrap(),
            Shard { index: 1, count: 3 }
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(
            Shard::resolve(None, Some(4), k8s).unwrap(),
            Shard { index: 2, count: 4 }
        );
        assert!(Shard::resolve(None, None, k8s).is_err());
        assert!(Shard::resolve(None, Some(2), none).is_err());
        let flag = Shard { index: 0, count: 2 };
        assert_eq!(Shard::resolve(Some(flag), None, slurm).unwrap(), flag);
        let gap = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert!(Shard::resolve(None, None, gap).is_err());
    }

    #[test]
    fn shards_split_ids_evenly_and_stably() {
        let ids: Vec<String> = (0..3000).map(|i| format!("a/{i}.jpg")).collect();
        let mut counts = [0usize; 3];
        for id in &ids {
            counts[shard_of(id, 3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        // The owner of an id depends on that id only.
        assert_eq!(shard_of("a/7.jpg", 3), shard_of("a/7.jpg", 3));
    }
}
