//! Building one shard of an index: incremental (unchanged files keep their rows, new and
//! changed ones are encoded, vanished ones dropped) and resumable (rows are flushed to the
//! shard's pending folder as they are encoded; a killed build's next run reads them back and
//! encodes only the rest).
//!
//! The index is itself the store of embeddings here, keyed by id and content hash, so the
//! embedding cache is not used: a cluster's shards share the index folder, not a cache.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::parts::{self, PartState, Row};
use super::{FORMAT, IndexItem, IndexMeta, ModelIdentity, Shard, VectorDtype};
use crate::encoder::{ClipEncoder, SceneCache, normalized};
use crate::imagery::DecodeOptions;

/// How a shard is built.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub shard: Shard,
    pub batch_size: usize,
    pub decode: DecodeOptions,
    /// Rows encoded between two flushes to the pending folder: what a kill can cost at most.
    pub checkpoint_every: usize,
    pub quiet: bool,
    /// The index's inputs, recorded in `index.json` (from [`super::plan_inputs`]); `None`
    /// records none (and keeps what is recorded).
    pub inputs: Option<Vec<String>>,
    /// How the raw matrices store the vectors. `None`: as the index already does (`f32` for a
    /// new one); another dtype than an existing index's is refused.
    pub dtype: Option<VectorDtype>,
}

/// What a build did (the `index build` summary line).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BuildReport {
    pub index: String,
    pub shard: String,
    /// Items of the inputs that belong to this shard.
    pub items: usize,
    /// Encoded by CLIP in this run.
    pub encoded: usize,
    /// Kept from the shard's previous part (file unchanged).
    pub reused: usize,
    /// Taken from the pending rows of an unfinished earlier run.
    pub resumed: usize,
    /// Rows of the previous part whose files vanished.
    pub dropped: usize,
    /// Scene tiles wholly nodata (GDAL_NODATA, alpha or mask): not indexed.
    pub nodata: usize,
    /// Images that could not be read: `(image, reason)`; they are not in the part.
    pub failed: Vec<(String, String)>,
    /// Rows in this shard's part now.
    pub rows: usize,
    pub parts_complete: usize,
    pub parts: usize,
    /// Rows in all complete parts.
    pub count: usize,
    /// Damaged files met and set aside (their rows were encoded again).
    pub warnings: Vec<String>,
}

/// The identity an index built by `clip` under `decode` records.
pub fn identity(clip: &ClipEncoder, spec: &str, decode: &DecodeOptions) -> Result<ModelIdentity> {
    Ok(ModelIdentity {
        spec: spec.to_string(),
        fingerprint: crate::cache::model_fingerprint(&clip.source.dir)?
            .to_hex()
            .to_string(),
        key: crate::cache::model_key(clip, decode)?.to_hex().to_string(),
    })
}

/// Builds (or brings up to date) shard `options.shard` of the index in `dir` over `items` (all
/// inputs; the shard keeps its share).
pub fn build(
    dir: &Path,
    clip: &ClipEncoder,
    spec: &str,
    items: &[IndexItem],
    options: &BuildOptions,
) -> Result<BuildReport> {
    let shard = options.shard;
    let model = identity(clip, spec, &options.decode)?;
    let dim = clip.model.config().projection_dim;
    let meta = IndexMeta {
        format: FORMAT.into(),
        skyscribe_version: env!("CARGO_PKG_VERSION").into(),
        model,
        bands: options.decode.bands.clone(),
        jpeg_draft: options.decode.jpeg_draft,
        dim,
        dtype: options.dtype.unwrap_or_default().as_str().into(),
        shards: shard.count,
        count: 0,
        parts_complete: 0,
        inputs: options.inputs.clone(),
    };
    let meta = open_or_create(dir, meta, options.dtype.is_some())?;
    let dtype = meta.vector_dtype()?;
    let parts_dir = dir.join("parts");
    std::fs::create_dir_all(&parts_dir)
        .with_context(|| format!("{}: cannot create", parts_dir.display()))?;
    let key = meta.model.key.clone();
    let mut report = BuildReport {
        index: dir.display().to_string(),
        shard: shard.to_string(),
        parts: shard.count,
        ..BuildReport::default()
    };

    // What is known already: the previous part, then what an unfinished run left pending.
    let mut known: HashMap<String, Row> = HashMap::new();
    let mut previous_ids = Vec::new();
    let previous = match parts::read_part(&parts_dir, shard.index, shard.count, &key) {
        Ok((rows, _)) => Some(rows),
        // A part file without its marker: a build was killed between writing the part and its
        // marker. The file itself is whole (it was renamed into place) and of this index's
        // model (index.json was checked); its rows are still good where the content matches.
        Err(PartState::Unfinished) => {
            let path = parts_dir.join(parts::part_name(shard.index, shard.count));
            std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| parts::decode(b, &path))
                .ok()
                .map(|(rows, _)| rows)
        }
        Err(PartState::Missing) => None,
        Err(PartState::Damaged(why)) => {
            report
                .warnings
                .push(format!("{why}; its rows are encoded again"));
            None
        }
    };
    for r in previous.into_iter().flatten() {
        previous_ids.push(r.id.clone());
        known.insert(r.id.clone(), r);
    }
    let pending_dir = parts_dir.join(parts::pending_name(shard.index, shard.count));
    let (pending, problems) = parts::read_pending(&pending_dir);
    report.warnings.extend(problems);
    let pending_ids: std::collections::HashSet<String> =
        pending.iter().map(|r| r.id.clone()).collect();
    for r in pending {
        known.insert(r.id.clone(), r);
    }

    let mine: Vec<&IndexItem> = items.iter().filter(|i| shard.owns(&i.id)).collect();
    report.items = mine.len();
    let refs: Vec<_> = mine.iter().map(|i| &i.image).collect();
    let hashes = crate::cache::content_hashes(&refs);
    let mut rows: Vec<Option<Row>> = vec![None; mine.len()];
    let mut todo = Vec::new();
    for (n, item) in mine.iter().enumerate() {
        let Some(hash) = hashes.get(&item.image.path) else {
            report.failed.push((
                item.image.display(),
                format!("{}: cannot read", item.image.path.display()),
            ));
            continue;
        };
        let hash = hash.to_hex().to_string();
        match known.remove(&item.id) {
            Some(row) if row.content_hash == hash && row.embedding.len() == dim => {
                if pending_ids.contains(&item.id) {
                    report.resumed += 1;
                } else {
                    report.reused += 1;
                }
                rows[n] = Some(Row {
                    path: absolute(&item.image.path),
                    ..row
                });
            }
            _ => todo.push((n, hash)),
        }
    }
    let current: std::collections::HashSet<&str> = mine.iter().map(|i| i.id.as_str()).collect();
    report.dropped = previous_ids
        .iter()
        .filter(|id| !current.contains(id.as_str()))
        .count();

    // Encode what is new or changed, flushing to the pending folder as we go.
    if !todo.is_empty() {
        std::fs::create_dir_all(&pending_dir)
            .with_context(|| format!("{}: cannot create", pending_dir.display()))?;
    }
    let mut chunk_no = next_chunk_number(&pending_dir);
    let mut unflushed: Vec<Row> = Vec::new();
    let bar = crate::progress::items(
        todo.len(),
        "images",
        &format!("indexing shard {shard}"),
        options.quiet,
    );
    let scenes = SceneCache::default();
    // Chips in reading order (scene, then rows top to bottom), so a TIFF scene's reader decodes
    // each band of rows once; ids sort `#x,y,…` by x first. Results land by item number.
    todo.sort_by_key(|(n, _)| {
        let image = &mine[*n].image;
        let (x, y, _, _) = image.crop.unwrap_or_default();
        (image.path.clone(), y, x)
    });
    let flush = |rows: &mut Vec<Row>, chunk_no: &mut usize| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bytes = parts::encode(rows, dim)?;
        crate::atomic::write_file(
            &pending_dir.join(format!("chunk-{:06}.parquet", *chunk_no)),
            &bytes,
        )?;
        *chunk_no += 1;
        rows.clear();
        Ok(())
    };
    clip.embed_batched(
        &todo,
        options.batch_size,
        |(n, _)| clip.load_pixels_ref(&mine[*n].image, &options.decode, &scenes),
        |j, result| {
            bar.inc(1);
            let (n, hash) = &todo[j];
            let item = mine[*n];
            match result {
                Ok(e) => {
                    let row = Row {
                        id: item.id.clone(),
                        path: absolute(&item.image.path),
                        chip: item.image.crop.map(|(x, y, w, h)| [x, y, w, h]),
                        bounds: item.bounds,
                        content_hash: hash.clone(),
                        embedding: normalized(&e),
                    };
                    unflushed.push(row.clone());
                    rows[*n] = Some(row);
                    report.encoded += 1;
                    if unflushed.len() >= options.checkpoint_every.max(1) {
                        flush(&mut unflushed, &mut chunk_no)?;
                    }
                }
                Err(err) if err.is::<crate::scene::NodataTile>() => report.nodata += 1,
                Err(err) => report
                    .failed
                    .push((item.image.display(), format!("{err:#}"))),
            }
            Ok(())
        },
    )?;
    flush(&mut unflushed, &mut chunk_no)?;
    bar.finish_and_clear();

    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    report.rows = rows.len();
    parts::write_part(
        &parts_dir,
        shard.index,
        shard.count,
        &rows,
        dim,
        &key,
        dtype,
    )?;
    if pending_dir.exists() {
        std::fs::remove_dir_all(&pending_dir)
            .with_context(|| format!("{}: cannot remove", pending_dir.display()))?;
    }

    // The shard that finds every part complete writes the final count (shards finishing
    // together compute the same bytes).
    let (complete, count) = complete_parts(&parts_dir, &meta)?;
    report.parts_complete = complete;
    report.count = count;
    if complete == shard.count {
        let done = IndexMeta {
            count,
            parts_complete: complete,
            ..meta
        };
        crate::atomic::write_file(&IndexMeta::path(dir), &serde_json::to_vec_pretty(&done)?)?;
    }
    Ok(report)
}

fn absolute(path: &Path) -> String {
    if crate::scene::source::is_remote(&path.to_string_lossy()) {
        return path.display().to_string();
    }
    // Canonical (no `..`, links resolved) so that the path means the same from any folder.
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn next_chunk_number(pending: &Path) -> usize {
    std::fs::read_dir(pending)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("chunk-")?
                        .strip_suffix(".parquet")?
                        .parse::<usize>()
                        .ok()
                })
                .max()
                .map_or(0, |n| n + 1)
        })
        .unwrap_or(0)
}

/// How many parts are complete, and their rows, from the markers.
pub fn complete_parts(parts_dir: &Path, meta: &IndexMeta) -> Result<(usize, usize)> {
    let mut complete = 0;
    let mut rows = 0;
    for i in 0..meta.shards {
        let path = parts_dir.join(parts::marker_name(i, meta.shards));
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        if let Ok(m) = serde_json::from_slice::<parts::Marker>(&text)
            && m.model_key == meta.model.key
        {
            complete += 1;
            rows += m.rows;
        }
    }
    Ok((complete, rows))
}

/// The index's `index.json`: created when absent (atomically, by a link that fails if another
/// shard created it first), else read and checked against this build's model and shard count.
/// Opens the index in `dir`, or creates it with `meta`. An existing index must be of the same
/// model and shard count, and of the same dtype where `dtype_given` (a build that names none
/// keeps the index's).
fn open_or_create(dir: &Path, meta: IndexMeta, dtype_given: bool) -> Result<IndexMeta> {
    if dir.exists() && !dir.is_dir() {
        bail!("{}: exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = IndexMeta::path(dir);
    if !path.exists() {
        let others = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
        // Shards of one array start together: another one may have created index.json (and
        // then its `parts` folder) between the check above and the listing, which is no reason
        // to refuse. Only files without an index.json are.
        if others && !path.exists() {
            bail!(
                "{}: the folder holds other files but no index.json; give an empty or new folder",
                dir.display()
            );
        }
    }
    if !path.exists() {
        let tmp = dir.join(format!(".index.json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(meta),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("{}: cannot write", path.display())),
        }
    }
    let mut existing = IndexMeta::read(dir)?;
    existing.check_model(dir, &meta.model.key, &meta.model.spec)?;
    if existing.shards != meta.shards {
        bail!(
            "{}: this index is built in {} shards, not {}: run shards I/{} (or build a new index \
             folder for another shard count)",
            dir.display(),
            existing.shards,
            meta.shards,
            existing.shards
        );
    }
    if dtype_given && existing.dtype != meta.dtype {
        bail!(
            "{}: this index stores its vectors as {}, not {}: build without --dtype (or with \
             --dtype {}), or build a new index folder",
            dir.display(),
            existing.dtype,
            meta.dtype,
            existing.dtype
        );
    }
    if meta.inputs.is_some() && meta.inputs != existing.inputs {
        // Inputs added or replaced (shards of one array run the same command, so they write
        // the same bytes here).
        existing.inputs = meta.inputs;
        crate::atomic::write_file(&path, &serde_json::to_vec_pretty(&existing)?)?;
    }
    Ok(existing)
}
