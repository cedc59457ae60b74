//! The indexes a server searches (`--index`, one or more): opened once, checked against the
//! served CLIP, searched together (each by its HNSW graph when it has a current one, else
//! exactly) with the hits merged by score; and thumbnails of their items by id — never by a
//! path a client could choose.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::data::ImageRef;
use crate::encoder::ClipEncoder;
use crate::imagery::DecodeOptions;
use crate::index::ann::{AnnIndex, AnnState};
use crate::index::search::LoadedIndex;
use crate::index::{IndexMeta, sheet};
use crate::scene::SharedTiles;

/// One index opened for serving.
pub struct ServedIndex {
    pub dir: PathBuf,
    pub index: LoadedIndex,
    /// Its HNSW graph, when it has one that matches its parts.
    pub ann: Option<AnnIndex>,
}

impl ServedIndex {
    /// Opens the index in `dir` and checks it was built with `clip` (same model files, same
    /// bands): its vectors are comparable with the server's queries only then.
    pub fn open(dir: &Path, clip: &ClipEncoder) -> Result<Self> {
        let meta = IndexMeta::read(dir)?;
        let key = crate::cache::model_key(clip, &meta.decode_options())?;
        meta.check_model(dir, &key.to_hex(), &clip.source.spec)?;
        let index = LoadedIndex::load(dir)?;
        for w in &index.warnings {
            super::log(&format!("{}: {w}", dir.display()));
        }
        let ann = match AnnIndex::load(dir, &index)? {
            Ok(a) => Some(a),
            Err(AnnState::Absent) => None,
            Err(AnnState::Stale(why) | AnnState::Damaged(why)) => {
                super::log(&format!(
                    "{}: the HNSW graph is not used ({why}); searching exactly",
                    dir.display()
                ));
                None
            }
        };
        // The server searches as `search --engine auto` does: the graph only where its
        // measured recall holds.
        let ann = match ann.map(|a| (a.not_for_auto(), a)) {
            Some((Some(why), _)) => {
                super::log(&format!(
                    "{}: the HNSW graph is not used ({why}); searching exactly",
                    dir.display()
                ));
                None
            }
            Some((None, a)) => Some(a),
            None => None,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            ann,
        })
    }
}

/// One search result, as `search --jsonl` prints it, less the server's own folders: `path` is
/// the file's path relative to the input it was indexed from (the id without its chip), never
/// the absolute path on the server.
#[derive(Debug, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: String,
    pub path: String,
    pub score: f32,
    pub chip: Option<[u32; 4]>,
    /// A scene tile's WGS 84 box; left out for other images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounds: Option<[f64; 4]>,
}

/// Every index served, and where each id lives.
pub struct Indexes {
    pub served: Vec<ServedIndex>,
    /// id → (index, row).
    ids: HashMap<String, (usize, usize)>,
    /// Scene tiles for thumbnails (the scene read last is kept open).
    tiles: SharedTiles,
}

/// How many candidates HNSW explores per query (as `search --ef`'s default).
const EF: usize = 64;

impl Indexes {
    /// Indexes searched together must agree on bands (queries are decoded once) and must not
    /// share ids (a thumbnail is asked for by id).
    pub fn new(served: Vec<ServedIndex>) -> Result<Self> {
        let mut ids = HashMap::new();
        for (i, s) in served.iter().enumerate() {
            if s.index.meta.bands != served[0].index.meta.bands {
                bail!(
                    "{} and {} were built from different bands; serve them separately",
                    served[0].dir.display(),
                    s.dir.display()
                );
            }
            for (row, id) in s.index.ids.iter().enumerate() {
                if let Some((j, _)) = ids.insert(id.clone(), (i, row)) {
                    bail!(
                        "the id {id:?} is in both {} and {}: ids must be unique across the indexes served",
                        served[j].dir.display(),
                        s.dir.display()
                    );
                }
            }
        }
        Ok(Self {
            served,
            ids,
            tiles: SharedTiles::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.served.is_empty()
    }

    /// The bands queries are read with: the indexes' (default when none is served).
    pub fn bands(&self) -> Option<Vec<usize>> {
        self.served.first().and_then(|s| s.index.meta.bands.clone())
    }

    /// The best `k` items of all indexes for a unit-length `query`, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let mut all: Vec<(f32, usize, usize)> = Vec::new();
        for (i, s) in self.served.iter().enumerate() {
            let hits = match &s.ann {
                Some(ann) => ann.search(&s.index, query, k, EF.max(k))?,
                None => s.index.search(query, k)?,
            };
            all.extend(hits.into_iter().map(|(row, score)| (score, i, row)));
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        all.truncate(k);
        Ok(all
            .into_iter()
            .enumerate()
            .map(|(rank, (score, i, row))| {
                let ix = &self.served[i].index;
                let id = &ix.ids[row];
                let path = match ix.chips[row] {
                    Some(_) => id.rsplit_once('#').map_or(id.as_str(), |(p, _)| p),
                    None => id,
                };
                Hit {
                    rank: rank + 1,
                    id: id.clone(),
                    path: path.to_string(),
                    score,
                    chip: ix.chips[row],
                    bounds: ix.bounds[row],
                }
            })
            .collect())
    }

    /// The image (or chip) an id stands for, if any index has it.
    pub fn image_of(&self, id: &str) -> Option<ImageRef> {
        let &(i, row) = self.ids.get(id)?;
        let ix = &self.served[i].index;
        Some(ImageRef {
            path: PathBuf::from(&ix.paths[row]),
            crop: ix.chips[row].map(|[x, y, w, h]| (x, y, w, h)),
        })
    }

    /// A JPEG thumbnail of an indexed image (see [`sheet::thumbnail`]), read as the index
    /// read it (its bands; the command line's pixel cap, not the uploads').
    pub fn thumbnail(&self, image: &ImageRef) -> Result<Vec<u8>> {
        let decode = DecodeOptions {
            bands: self.bands(),
            ..DecodeOptions::default()
        };
        sheet::thumbnail(image, &decode, &self.tiles)
    }
}
