//! Scanning whole scenes: tiles laid over the scene to every edge ([`crate::data::cover_grid`]:
//! the last tile of a row or column moved inward), read a band of rows at a time, wholly
//! nodata tiles skipped and counted, the rest embedded by CLIP in batches while the next rows
//! are decoded and cut on another thread. [`maps`] turns the tiles' scores into GeoJSON
//! features, class-map GeoTIFFs and heatmaps.

pub mod maps;

use std::sync::mpsc;

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::encoder::ClipEncoder;
use crate::scene::Scene;

/// A tile: `(x, y, w, h)` in scene pixels.
pub type Rect = (u32, u32, u32, u32);

/// How tiles are laid and batched.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Tile side in scene pixels (tiles are resized to the model's input).
    pub tile: u32,
    /// Pixels between tile origins.
    pub stride: u32,
    /// Tiles per forward pass.
    pub batch_size: usize,
}

/// What a scan saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Tiles laid over the scene.
    pub tiles: usize,
    /// Tiles wholly nodata (GDAL_NODATA, alpha or mask), not embedded.
    pub nodata: usize,
}

/// The tiles of a scene, rows top to bottom; refuses stride 0. A scene narrower or shorter
/// than the tile gets tiles cut to its width or height (callers say so: [`tiles_cut_note`]).
pub fn tile_grid(scene: &Scene, o: &ScanOptions) -> Result<Vec<Rect>> {
    if o.stride == 0 || o.tile == 0 {
        bail!("--tile and --stride must be at least 1 pixel");
    }
    Ok(crate::data::cover_grid(
        scene.width,
        scene.height,
        o.tile,
        o.stride,
    ))
}

/// What to tell people when the scene is smaller than the tile in a direction.
pub fn tiles_cut_note(scene: &Scene, o: &ScanOptions) -> Option<String> {
    (o.tile > scene.width || o.tile > scene.height).then(|| {
        format!(
            "the scene ({}×{} px) is smaller than --tile {}: its tiles are {}×{} px",
            scene.width,
            scene.height,
            o.tile,
            o.tile.min(scene.width),
            o.tile.min(scene.height)
        )
    })
}

/// A batch from the reading thread: each tile with its preprocessed pixels, or `None` when it
/// is wholly nodata.
type Batch = Vec<(Rect, Option<Vec<f32>>)>;

/// Embeds every tile of `scene` (projected, not normalised) and hands each to `sink` in grid
/// order; wholly nodata tiles go to `sink` with `None`. Reading, cutting and preprocessing run
/// on a second thread (tiles in parallel), one batch ahead of the model.
pub fn scan_scene(
    clip: &ClipEncoder,
    scene: &mut Scene,
    o: &ScanOptions,
    mut sink: impl FnMut(Rect, Option<Vec<f32>>) -> Result<()>,
) -> Result<ScanCounts> {
    let grid = tile_grid(scene, o)?;
    let batch_size = o.batch_size.max(1);
    let mut counts = ScanCounts {
        tiles: grid.len(),
        nodata: 0,
    };
    let pre = &clip.preprocessor;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(1);
        let grid = &grid;
        scope.spawn(move || {
            let mut pending: Batch = Vec::new();
            let mut i = 0;
            while i < grid.len() {
                let y = grid[i].1;
                let row_end = grid[i..].iter().take_while(|r| r.1 == y).count() + i;
                let rects = &grid[i..row_end];
                i = row_end;
                let rows = match scene.rgb_rows(y, rects[0].3, 1) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // A batch at a time: a row of tiles can hold 10,000 of them (a wide scene at
                // tile 1), and each preprocessed tile is 600 KB.
                for part in rects.chunks(batch_size) {
                    let prepared: Result<Batch> = part
                        .par_iter()
                        .map(|&r| {
                            let (img, any) = rows.tile(r)?;
                            Ok((
                                r,
                                if any {
                                    Some(pre.preprocess(&img)?)
                                } else {
                                    None
                                },
                            ))
                        })
                        .collect();
                    match prepared {
                        Ok(p) => pending.extend(p),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    while pending.len() >= batch_size {
                        let rest = pending.split_off(batch_size);
                        if tx.send(Ok(std::mem::replace(&mut pending, rest))).is_err() {
                            return; // the model side stopped (an error): stop reading.
                        }
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(Ok(pending));
            }
        });
        for batch in rx {
            let mut tiles = Vec::new();
            let mut pixels = Vec::new();
            for (rect, p) in batch? {
                tiles.push((rect, p.is_some()));
                pixels.extend(p);
            }
            let mut embeddings = clip.embed_pixels(&pixels)?.into_iter();
            for (rect, valid) in tiles {
                if valid {
                    sink(rect, embeddings.next())?;
                } else {
                    counts.nodata += 1;
                    sink(rect, None)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(counts)
}

/// How [`score_scene`] scores tiles: a label set's zero-shot classifier or a learned one, the
/// best labels kept per tile, and captions when a captioner is given.
pub struct TileScoring<'a> {
    pub scorer: &'a crate::classify::Scorer,
    pub captioner: Option<&'a crate::caption::Captioner>,
    pub top_k: usize,
}

/// [`scan_scene`] with every tile scored: `each` gets each embedded tile's record in grid
/// order, `tick` is called once a tile (nodata ones too, for progress). Tiles are captioned a
/// batch at a time (the captioner decodes a batch as fast as one tile).
pub fn score_scene(
    clip: &ClipEncoder,
    scene: &mut Scene,
    o: &ScanOptions,
    scoring: &TileScoring,
    mut each: impl FnMut(maps::TileRecord) -> Result<()>,
    mut tick: impl FnMut(),
) -> Result<ScanCounts> {
    let mut emit = |tiles: Vec<(Rect, Vec<f32>)>| -> Result<()> {
        let captions: Vec<Option<String>> = match scoring.captioner {
            Some(c) if !tiles.is_empty() => {
                let embeddings: Vec<Vec<f32>> = tiles.iter().map(|t| t.1.clone()).collect();
                c.greedy(&embeddings, &Default::default())?
                    .iter()
                    .map(|ids| Ok(Some(c.decode_text(ids)?.trim().to_string())))
                    .collect::<Result<_>>()?
            }
            _ => vec![None; tiles.len()],
        };
        for ((rect, e), caption) in tiles.into_iter().zip(captions) {
            each(maps::TileRecord {
                rect,
                labels: scoring.scorer.ranked(&e, Some(scoring.top_k)),
                probs: scoring.scorer.probabilities(&e),
                similarities: scoring.scorer.similarities(&e),
                caption,
            })?;
        }
        Ok(())
    };
    let mut pending = Vec::new();
    let batch = o.batch_size.max(1);
    let counts = scan_scene(clip, scene, o, |rect, embedding| {
        tick();
        if let Some(e) = embedding {
            pending.push((rect, e));
            if pending.len() >= batch {
                emit(std::mem::take(&mut pending))?;
            }
        }
        Ok(())
    })?;
    emit(pending)?;
    Ok(counts)
}
