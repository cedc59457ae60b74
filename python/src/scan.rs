//! `skyscribe.scan`: one scene tiled and labelled as `skyscribe scan` does it, returned as the
//! GeoJSON FeatureCollection `--out` writes and the class map `--class-map` writes (scores per
//! label on a grid of `stride` pixels, the argmax, the grid's geotransform and CRS).

use std::path::PathBuf;
use std::sync::Arc;

use numpy::IntoPyArray;
use numpy::ndarray::{Array2, Array3};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use skyscribe::encoder::ClipEncoder;
use skyscribe::scan::maps::{self, ClassGrid, TileRecord};
use skyscribe::scan::{ScanOptions, TileScoring, score_scene};
use skyscribe::scene::{Scene, SceneOptions};

use crate::caption::Captioner;
use crate::classify::Classifier;
use crate::clip::{Clip, device_of, positive, scorer};
use crate::errors::{IntoPy, invalid};
use crate::images::decode_options;

/// The CLIP model of a scan: a `Clip`, a model spec, the classifier's own model, or the
/// built-in one.
fn clip_of(
    py: Python<'_>,
    model: Option<&Bound<'_, PyAny>>,
    classifier: Option<&Classifier>,
    device: &str,
) -> PyResult<Arc<ClipEncoder>> {
    if let Some(m) = model
        && let Ok(c) = m.cast::<Clip>()
    {
        return Ok(c.get().encoder.clone());
    }
    let spec: String = match model {
        Some(m) => m
            .extract()
            .map_err(|_| invalid("model: a skyscribe.Clip or a model name, folder or hub id"))?,
        None => match classifier {
            Some(c) => c.inner.info.model.spec.clone(),
            None => skyscribe::builtin::MINI_CLIP.to_string(),
        },
    };
    let dev = device_of(device)?;
    Ok(Arc::new(py.detach(|| ClipEncoder::load(&spec, &dev)).py()?))
}

/// Scans one scene (a GeoTIFF or COG file, or one by URL) and returns a dict: `features` (the
/// GeoJSON FeatureCollection of `scan --out`, tiles in WGS 84 lon/lat),
/// `scores` (`float32`, labels × rows × columns: each label's mean probability over the tiles
/// covering a cell of `stride` pixels, NaN where no tile was read), `class_map` (`int16`,
/// rows × columns, the best label's number, -1 for no data), `labels`, `transform` (the
/// grid's GDAL geotransform on the scene's CRS) and `crs` ("EPSG:…"), `crs_name`.
#[pyfunction]
#[pyo3(signature = (scene, labels = None, *, templates = None, classifier = None, model = None, tile = 224, stride = None, top_k = 5, bands = None, stretch = "auto", reader = "auto", pixel_coords = false, captioner = None, batch_size = 32, device = "cpu", progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn scan<'py>(
    py: Python<'py>,
    scene: PathBuf,
    labels: Option<&Bound<'py, PyAny>>,
    templates: Option<&Bound<'py, PyAny>>,
    classifier: Option<&Bound<'py, Classifier>>,
    model: Option<&Bound<'py, PyAny>>,
    tile: u32,
    stride: Option<u32>,
    top_k: usize,
    bands: Option<Vec<usize>>,
    stretch: &str,
    reader: &str,
    pixel_coords: bool,
    captioner: Option<&Bound<'py, Captioner>>,
    batch_size: usize,
    device: &str,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    positive(tile as usize, "tile")?;
    // As `scan --stride`: half the tile (rounded up) unless given.
    let stride = stride.unwrap_or(tile.div_ceil(2));
    positive(stride as usize, "stride")?;
    positive(top_k, "top_k")?;
    positive(batch_size, "batch_size")?;
    let decode = decode_options(bands, None)?;
    let scene_opts = SceneOptions {
        bands: decode.bands.clone(),
        stretch: stretch.parse().map_err(invalid)?,
        remote: Default::default(),
        reader: reader.parse().map_err(invalid)?,
    };
    let learned = classifier.map(|c| c.get());
    let clip = clip_of(py, model, learned, device)?;
    let cap = captioner.map(|c| c.get().captioner.clone());
    if let Some(c) = &cap {
        c.check_clip(&clip, false).arg()?;
    }
    let scorer = scorer(py, &clip, labels, templates, learned, None)?;
    let names = scorer.names();
    let o = ScanOptions {
        tile,
        stride,
        batch_size,
    };
    let name = scene.display().to_string();
    let (collection, grid, georef) = py
        .detach(|| -> anyhow::Result<_> {
            let mut sc = Scene::open(&scene, &scene_opts)?;
            if sc.georef.is_none() && !pixel_coords {
                anyhow::bail!(
                    "{name}: the scene has no georeferencing ({}); pass pixel_coords=True to \
                     scan it in pixel coordinates",
                    sc.no_georef
                        .as_deref()
                        .unwrap_or("no GeoTIFF transform and CRS")
                );
            }
            let georef = sc.georef.clone();
            let grid_len = skyscribe::scan::tile_grid(&sc, &o)?.len();
            let bar = skyscribe::progress::items(grid_len, "tiles", "scanning", !progress);
            let scoring = TileScoring {
                scorer: &scorer,
                captioner: cap.as_deref(),
                top_k,
            };
            let mut records: Vec<TileRecord> = Vec::new();
            let mut features = Vec::new();
            let counts = score_scene(
                &clip,
                &mut sc,
                &o,
                &scoring,
                |rec| {
                    let ring = maps::tile_ring(georef.as_ref(), rec.rect)?;
                    features.push(maps::feature(&name, &rec, ring));
                    records.push(rec);
                    Ok(())
                },
                || bar.inc(1),
            )?;
            bar.finish_and_clear();
            let info = maps::scene_info(&name, &sc, &o, counts, &clip.source.spec);
            let collection = maps::collection(features, info);
            let grid = ClassGrid::new(sc.width, sc.height, stride, &records, names.len());
            Ok((collection, grid, georef))
        })
        .py()?;
    let out = PyDict::new(py);
    let json = py.import("json")?;
    out.set_item(
        "features",
        json.call_method1("loads", (collection.to_string(),))?,
    )?;
    let (h, w) = (grid.height as usize, grid.width as usize);
    let scores: Vec<f32> = grid.scores.iter().flatten().copied().collect();
    let scores =
        Array3::from_shape_vec((names.len(), h, w), scores).map_err(|e| invalid(e.to_string()))?;
    let argmax: Vec<i16> = grid
        .argmax()
        .into_iter()
        .map(|a| a.map_or(-1, |l| l as i16))
        .collect();
    let argmax = Array2::from_shape_vec((h, w), argmax).map_err(|e| invalid(e.to_string()))?;
    out.set_item("scores", scores.into_pyarray(py))?;
    out.set_item("class_map", argmax.into_pyarray(py))?;
    out.set_item("labels", names)?;
    out.set_item(
        "transform",
        georef.as_ref().map(|g| g.scaled(stride as f64).to_vec()),
    )?;
    out.set_item(
        "crs",
        georef
            .as_ref()
            .and_then(|g| g.epsg)
            .map(|c| format!("EPSG:{c}")),
    )?;
    out.set_item("crs_name", georef.as_ref().map(|g| g.crs_name.clone()))?;
    Ok(out)
}
