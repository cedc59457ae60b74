//! From tiles' scores to maps: GeoJSON features (tile polygons in WGS 84 longitude/latitude,
//! RFC 7946, or in pixels when a scene has no georeferencing), class-map grids (one score band
//! per label, overlapping tiles averaged) written as GeoTIFFs on the scene's CRS with an argmax
//! companion in a colour table, and score heatmaps over a preview of the scene.

use std::path::{Path, PathBuf};

use anyhow::Result;
use geojson::{Feature, FeatureCollection, Geometry, GeometryValue, JsonObject};
use serde_json::json;

use super::Rect;
use crate::imagery::{RgbImage, heatmap};
use crate::scene::GeoRef;
use crate::scene::geotiff_write::{self, Placement};
use crate::zeroshot::LabelScore;

/// One scored tile.
#[derive(Debug, Clone)]
pub struct TileRecord {
    pub rect: Rect,
    /// The best labels, best first.
    pub labels: Vec<LabelScore>,
    /// Every label's probability, in label-set order (for class maps).
    pub probs: Vec<f32>,
    /// Every label's cosine similarity to the tile, in label-set order (for heatmaps of one
    /// label on its own).
    pub similarities: Vec<f32>,
    pub caption: Option<String>,
}

/// The closed ring of a tile's four pixel corners: WGS 84 (longitude, latitude) through
/// `georef`, else pixel (x, y); counter-clockwise as RFC 7946 asks of exterior rings. `None`
/// when a corner is off the Earth (a geostationary disk's corners): such a tile has no
/// footprint, and its feature a null geometry.
pub fn tile_ring(georef: Option<&GeoRef>, (x, y, w, h): Rect) -> Result<Option<Vec<[f64; 2]>>> {
    let corners = [(x, y), (x, y + h), (x + w, y + h), (x + w, y)];
    let mut ring = Vec::with_capacity(5);
    for (px, py) in corners {
        ring.push(match georef {
            Some(g) => match g.pixel_to_lon_lat(px as f64, py as f64) {
                Ok((lon, lat)) => [lon, lat],
                Err(e) if e.is::<crate::scene::georef::OutsideProjection>() => return Ok(None),
                Err(e) => return Err(e),
            },
            None => [px as f64, py as f64],
        });
    }
    // Shoelace: a negative area is clockwise (a transform that flips an axis); turn it round.
    let area: f64 = (0..4)
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % 4]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    if area < 0.0 {
        ring.reverse();
    }
    ring.push(ring[0]);
    Ok(Some(ring))
}

/// `[west, south, east, north]` (or `[min x, min y, max x, max y]`) of a ring.
pub fn bounds(ring: &[[f64; 2]]) -> [f64; 4] {
    ring.iter().fold(
        [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        |b, p| {
            [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ]
        },
    )
}

/// A tile as a GeoJSON Feature: its polygon; `scene`, `tile`, the best label and its score as
/// plain `label` and `score` (what QGIS and other GIS tools can style and filter by: they read
/// nested values as JSON strings), all `labels` ranked, and `caption`.
pub fn feature(scene: &str, rec: &TileRecord, ring: Option<Vec<[f64; 2]>>) -> Feature {
    let mut props = JsonObject::new();
    props.insert("scene".into(), json!(scene));
    let (x, y, w, h) = rec.rect;
    props.insert("tile".into(), json!([x, y, w, h]));
    if let Some(best) = rec.labels.first() {
        props.insert("label".into(), json!(best.label));
        props.insert(
            "score".into(),
            serde_json::to_value(best.score).unwrap_or_default(),
        );
    }
    props.insert(
        "labels".into(),
        serde_json::to_value(&rec.labels).unwrap_or_default(),
    );
    if let Some(c) = &rec.caption {
        props.insert("caption".into(), json!(c));
    }
    Feature {
        bbox: None,
        geometry: ring.map(|r| Geometry::new(GeometryValue::new_polygon([r]))),
        id: None,
        properties: Some(props),
        foreign_members: None,
    }
}

/// The coordinates a scene's features are in, as the FeatureCollection's `skyscribe` member
/// says.
pub fn coordinates(georef: Option<&GeoRef>) -> &'static str {
    match georef {
        Some(g) if g.datum_note.is_some() => "lon/lat on the scene's own datum (see datum_note)",
        Some(_) => "lon/lat (WGS 84)",
        None => "pixels (the scene has no georeferencing)",
    }
}

/// The FeatureCollection's `skyscribe` member: what was scanned, how, and in which
/// coordinates.
pub fn scene_info(
    name: &str,
    scene: &crate::scene::Scene,
    o: &super::ScanOptions,
    counts: super::ScanCounts,
    model: &str,
) -> serde_json::Value {
    let georef = scene.georef.as_ref();
    json!({
        "scene": name,
        "coordinates": coordinates(georef),
        "crs": georef.and_then(|g| g.epsg).map(|c| format!("EPSG:{c}")),
        "crs_name": georef.map(|g| g.crs_name.clone()),
        "datum_note": georef.and_then(|g| g.datum_note.clone()),
        "width": scene.width,
        "height": scene.height,
        "tile": o.tile,
        "stride": o.stride,
        "tiles": counts.tiles,
        "nodata_tiles": counts.nodata,
        "model": model,
    })
}

/// The features of one scene as a FeatureCollection, with a `skyscribe` member that says what
/// was scanned and in which coordinates (`"lon/lat (WGS 84)"` or `"pixels"`).
pub fn collection(features: Vec<Feature>, info: serde_json::Value) -> FeatureCollection {
    let mut members = JsonObject::new();
    members.insert("skyscribe".into(), info);
    FeatureCollection {
        bbox: None,
        features,
        foreign_members: Some(members),
    }
}

/// Scores on a grid of `cell`-pixel cells over the scene: a cell takes the mean of the tiles
/// that hold its centre; NaN where every such tile was nodata.
pub struct ClassGrid {
    pub width: u32,
    pub height: u32,
    pub cell: u32,
    /// Per label, `width × height` scores, rows top to bottom.
    pub scores: Vec<Vec<f32>>,
}

impl ClassGrid {
    pub fn new(
        scene_w: u32,
        scene_h: u32,
        cell: u32,
        records: &[TileRecord],
        labels: usize,
    ) -> Self {
        let (gw, gh) = (scene_w.div_ceil(cell), scene_h.div_ceil(cell));
        let n = (gw * gh) as usize;
        let mut sums = vec![vec![0f32; n]; labels];
        let mut counts = vec![0u32; n];
        // The cell centre, clipped into the scene for the last, partial cells.
        let centre =
            |i: u32, side: u32| ((i * cell) as f64 + cell as f64 / 2.0).min(side as f64 - 0.5);
        for rec in records {
            let (x, y, w, h) = rec.rect;
            let cols = (x / cell)..((x + w).div_ceil(cell)).min(gw);
            let rows = (y / cell)..((y + h).div_ceil(cell)).min(gh);
            for r in rows {
                let cy = centre(r, scene_h);
                if cy < y as f64 || cy >= (y + h) as f64 {
                    continue;
                }
                for c in cols.clone() {
                    let cx = centre(c, scene_w);
                    if cx < x as f64 || cx >= (x + w) as f64 {
                        continue;
                    }
                    let i = (r * gw + c) as usize;
                    counts[i] += 1;
                    for (l, p) in rec.probs.iter().enumerate() {
                        sums[l][i] += p;
                    }
                }
            }
        }
        let scores = sums
            .into_iter()
            .map(|s| {
                s.iter()
                    .zip(&counts)
                    .map(|(&v, &k)| if k == 0 { f32::NAN } else { v / k as f32 })
                    .collect()
            })
            .collect();
        Self {
            width: gw,
            height: gh,
            cell,
            scores,
        }
    }

    /// Per cell, the index of the best label (`None` where the cell has no score).
    pub fn argmax(&self) -> Vec<Option<usize>> {
        (0..(self.width * self.height) as usize)
            .map(|i| {
                let mut best: Option<(usize, f32)> = None;
                for (l, s) in self.scores.iter().enumerate() {
                    let v = s[i];
                    if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
                        best = Some((l, v));
                    }
                }
                best.map(|(l, _)| l)
            })
            .collect()
    }
}

/// Land-cover colours for the labels of skyscribe's land-cover presets (EuroSAT's classes and
/// wordings, `eurosat-reduced`, RSICD's scene classes and wordings, `describe`), in the
/// conventions of land-cover maps (CORINE, ESA WorldCover): water blue, forest dark green,
/// grass and shrubs light greens, crops yellow and orange, built-up reds and purples,
/// transport greys, bare ground sand and brown. Keys are the names lower-cased with only
/// letters and digits kept.
const LAND_COVER: &[(&str, [u8; 3])] = &[
    // Water.
    ("sealake", [0, 92, 196]),
    ("lakeorsea", [0, 92, 196]),
    ("bodyofwater", [0, 92, 196]),
    ("river", [66, 146, 232]),
    ("pond", [120, 186, 245]),
    ("port", [40, 70, 140]),
    ("beach", [250, 236, 180]),
    // Trees, grass, shrubs.
    ("forest", [0, 100, 0]),
    ("park", [60, 170, 80]),
    ("meadow", [150, 215, 100]),
    ("pasture", [200, 230, 77]),
    ("pastureland", [200, 230, 77]),
    ("herbaceousvegetation", [120, 160, 50]),
    ("brushlandorshrubland", [120, 160, 50]),
    ("baseballfield", [110, 200, 150]),
    ("playground", [180, 230, 160]),
    // Crops.
    ("annualcrop", [255, 220, 60]),
    ("annualcropland", [255, 220, 60]),
    ("field", [255, 220, 60]),
    ("farmland", [240, 200, 110]),
    ("permanentcrop", [230, 128, 0]),
    ("permanentcropland", [230, 128, 0]),
    // Built-up.
    ("residential", [220, 30, 30]),
    ("residentialbuildingsorhomesorapartments", [220, 30, 30]),
    ("buildings", [220, 30, 30]),
    ("denseresidential", [180, 0, 0]),
    ("denseresidentialarea", [180, 0, 0]),
    ("mediumresidential", [230, 80, 80]),
    ("mediumresidentialarea", [230, 80, 80]),
    ("sparseresidential", [250, 150, 150]),
    ("sparseresidentialarea", [250, 150, 150]),
    ("center", [120, 0, 30]),
    ("citycenter", [120, 0, 30]),
    ("industrial", [150, 60, 170]),
    ("industrialarea", [150, 60, 170]),
    ("industrialbuildingsorcommercialbuildings", [150, 60, 170]),
    ("commercial", [200, 110, 220]),
    ("commercialarea", [200, 110, 220]),
    ("church", [160, 90, 60]),
    ("school", [240, 120, 60]),
    ("resort", [255, 170, 200]),
    ("stadium", [210, 60, 130]),
    ("square", [190, 160, 190]),
    ("storagetanks", [130, 100, 150]),
    // Transport.
    ("highway", [100, 100, 100]),
    ("highwayorroad", [100, 100, 100]),
    ("airport", [160, 160, 175]),
    ("railwaystation", [80, 60, 50]),
    ("bridge", [60, 60, 60]),
    ("viaduct", [130, 130, 120]),
    ("parking", [200, 200, 200]),
    ("parkinglot", [200, 200, 200]),
    // Bare ground.
    ("bareland", [205, 175, 130]),
    ("desert", [237, 210, 160]),
    ("mountain", [130, 100, 70]),
];

/// Distinct colours for the classes `names`, in order. Land-cover labels (every name in
/// [`LAND_COVER`], no colour twice) get land-cover colours, so that water reads blue and
/// forest green; any other set gets Tableau's 20 qualitative colours (then repeating).
pub fn palette(names: &[String]) -> Vec<[u8; 3]> {
    let key = |n: &str| -> String {
        n.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let land: Option<Vec<[u8; 3]>> = names
        .iter()
        .map(|n| {
            let k = key(n);
            LAND_COVER
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, c)| *c)
        })
        .collect();
    if let Some(colours) = land {
        let mut seen = colours.clone();
        seen.sort();
        seen.dedup();
        if seen.len() == colours.len() {
            return colours;
        }
    }
    qualitative(names.len())
}

/// Tableau's 20 colours, then repeating: readable side by side in QGIS.
fn qualitative(n: usize) -> Vec<[u8; 3]> {
    const TAB20: [[u8; 3]; 20] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
        [174, 199, 232],
        [255, 187, 120],
        [152, 223, 138],
        [255, 152, 150],
        [197, 176, 213],
        [196, 156, 148],
        [247, 182, 210],
        [199, 199, 199],
        [219, 219, 141],
        [158, 218, 229],
    ];
    (0..n).map(|i| TAB20[i % 20]).collect()
}

/// Where the argmax companion of a class map goes: `NAME.tif` → `NAME.argmax.tif`.
pub fn argmax_path(class_map: &Path) -> PathBuf {
    let stem = class_map
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    class_map.with_file_name(format!("{stem}.argmax.tif"))
}

/// Writes the class map: `path` with one Float32 score band per label (band descriptions =
/// labels), and [`argmax_path`] with the best label's number per cell in a colour table (255 =
/// no data) and a GDAL `.aux.xml` that names the classes (QGIS shows them as its legend).
/// Both on the scene's CRS, cells of `grid.cell` scene pixels. Returns the argmax file's path.
pub fn write_class_map(
    path: &Path,
    grid: &ClassGrid,
    labels: &[String],
    georef: Option<&GeoRef>,
) -> Result<PathBuf> {
    let place = georef
        .map(|g| Placement::grid(g, grid.cell as f64))
        .transpose()?;
    geotiff_write::write_float_bands(
        path,
        grid.width,
        grid.height,
        &grid.scores,
        labels,
        place.as_ref(),
    )?;
    let classes: Vec<u8> = grid
        .argmax()
        .into_iter()
        .map(|a| a.map_or(255, |l| l.min(254) as u8))
        .collect();
    let argmax = argmax_path(path);
    geotiff_write::write_palette(
        &argmax,
        grid.width,
        grid.height,
        &classes,
        &palette(&labels[..labels.len().min(255)]),
        255,
        place.as_ref(),
    )?;
    let mut aux = String::from("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n");
    for l in labels {
        aux.push_str(&format!("      <Category>{}</Category>\n", xml_escape(l)));
    }
    aux.push_str("    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n");
    let aux_path = argmax.with_file_name(format!(
        "{}.aux.xml",
        argmax.file_name().unwrap_or_default().to_string_lossy()
    ));
    crate::atomic::write_file(&aux_path, aux.as_bytes())?;
    Ok(argmax)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What a heatmap colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatmapScore {
    /// The label's share of the softmax over the label set: high where it wins, low where
    /// another label wins — even over the label's own object ("ship" dark over ships when
    /// "harbor" wins the tile).
    Probability,
    /// The label's cosine similarity to the tile, on its own: where the label fits, whatever
    /// the other labels do.
    Similarity,
}

impl HeatmapScore {
    /// The legend's words for `label` under this score and `scale`.
    pub fn legend(self, label: &str, labels: usize, scale: heatmap::Scale) -> String {
        let what = match self {
            HeatmapScore::Probability => {
                format!("P({label}): its share of the softmax over {labels} labels")
            }
            HeatmapScore::Similarity => format!("cosine similarity of {label:?} to each tile"),
        };
        match scale {
            heatmap::Scale::Fixed { .. } => format!("{what}; fixed scale"),
            heatmap::Scale::Auto => format!("{what}; stretched to this scene's range"),
        }
    }
}

/// A heatmap of `label`'s `score` over `preview` (the scene read every `step` pixels): tile
/// scores averaged where they overlap, coloured on `scale`; and the score range the colours
/// span.
pub fn heatmap(
    preview: &RgbImage,
    step: u32,
    records: &[TileRecord],
    label: usize,
    score: HeatmapScore,
    scale: heatmap::Scale,
) -> (RgbImage, (f32, f32)) {
    let cells: Vec<heatmap::Cell> = records
        .iter()
        .map(|r| {
            let (x, y, w, h) = r.rect;
            let s = match score {
                HeatmapScore::Probability => r.probs[label],
                HeatmapScore::Similarity => r.similarities[label],
            };
            ((x / step, y / step, w.div_ceil(step), h.div_ceil(step)), s)
        })
        .collect();
    heatmap::overlay(preview, &cells, 0.6, scale)
}

/// A scene's features as a GeoParquet 1.1 file: one row per feature, its polygon as WKB in
/// `geometry`, and each property as a column of its own (strings and numbers as they are,
/// lists and objects as JSON text, which is how GIS tools show nested values), in the order
/// they first appear. `info` (the GeoJSON's `skyscribe` member) rides along as the `skyscribe`
/// key of the file's metadata; `coordinates` says whether the polygons are on WGS 84.
pub fn write_geoparquet(
    path: &Path,
    features: &[Feature],
    info: &serde_json::Value,
    coordinates: crate::geoparquet::Coordinates,
) -> Result<()> {
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Float64Array, RecordBatch, StringArray,
    };
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    let mut names: Vec<String> = Vec::new();
    for f in features {
        for k in f.properties.iter().flat_map(|p| p.keys()) {
            if !names.contains(k) && k != "geometry" {
                names.push(k.clone());
            }
        }
    }
    let value = |f: &Feature, k: &str| f.properties.as_ref().and_then(|p| p.get(k)).cloned();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for k in &names {
        let values: Vec<Option<serde_json::Value>> = features
            .iter()
            .map(|f| value(f, k).filter(|v| !v.is_null()))
            .collect();
        let all = |pred: fn(&serde_json::Value) -> bool| values.iter().flatten().all(pred);
        let (dt, col): (DataType, ArrayRef) = if all(serde_json::Value::is_number) {
            let v: Float64Array = values
                .iter()
                .map(|v| v.as_ref().and_then(|v| v.as_f64()))
                .collect();
            (DataType::Float64, Arc::new(v))
        } else if all(serde_json::Value::is_boolean) {
            let v: BooleanArray = values
                .iter()
                .map(|v| v.as_ref().and_then(|v| v.as_bool()))
                .collect();
            (DataType::Boolean, Arc::new(v))
        } else {
            let v: StringArray = values
                .iter()
                .map(|v| {
                    v.as_ref().map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                })
                .collect();
            (DataType::Utf8, Arc::new(v))
        };
        fields.push(Field::new(k, dt, true));
        columns.push(col);
    }
    // A tile off the Earth has no footprint: a null geometry, as in the GeoJSON.
    let mut rings: Vec<Option<Vec<[f64; 2]>>> = Vec::with_capacity(features.len());
    for f in features {
        let ring = match f.geometry.as_ref().map(|g| &g.value) {
            Some(GeometryValue::Polygon { coordinates }) => Some(
                coordinates
                    .first()
                    .map(|r| r.iter().map(|p| [p[0], p[1]]).collect())
                    .unwrap_or_default(),
            ),
            None => None,
            _ => anyhow::bail!("{}: a feature without a polygon", path.display()),
        };
        rings.push(ring);
    }
    let wkb: Vec<Option<Vec<u8>>> = rings
        .iter()
        .map(|r| r.as_ref().map(|r| crate::geoparquet::wkb_polygon(r)))
        .collect();
    fields.push(Field::new("geometry", DataType::Binary, true));
    columns.push(Arc::new(BinaryArray::from_iter(
        wkb.iter().map(|w| w.as_deref()),
    )));
    let bbox = crate::geoparquet::bbox(rings.iter().flatten().map(|r| &r[..]));
    // GeoParquet readers look for `geo` in the Parquet file's own key-value metadata (the Arrow
    // schema's metadata would only be inside ARROW:schema).
    let kv = vec![
        parquet::file::metadata::KeyValue::new(
            "geo".to_string(),
            crate::geoparquet::geo_metadata(
                coordinates,
                rings.iter().any(Option::is_some).then_some(bbox),
            ),
        ),
        parquet::file::metadata::KeyValue::new("skyscribe".to_string(), info.to_string()),
    ];
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema, columns)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_created_by(format!("skyscribe {}", env!("CARGO_PKG_VERSION")))
        .build();
    crate::atomic::write_file(path, &crate::geoparquet::one_batch_file(&batch, props)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rect: Rect, probs: Vec<f32>) -> TileRecord {
        TileRecord {
            rect,
            labels: vec![],
            similarities: probs.clone(),
            probs,
            caption: None,
        }
    }

    #[test]
    fn land_cover_presets_get_land_cover_colours_and_others_a_qualitative_palette() {
        use crate::labels::LabelSet;
        let names = |spec: &str| -> Vec<String> {
            let set = LabelSet::parse(spec).unwrap();
            set.names().iter().map(|s| s.to_string()).collect()
        };
        for preset in [
            "eurosat",
            "eurosat-folders",
            "eurosat-reduced",
            "rsicd",
            "describe",
        ] {
            let n = names(preset);
            let p = palette(&n);
            let mut distinct = p.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), n.len(), "{preset}: a colour twice");
            assert_ne!(p, qualitative(n.len()), "{preset}: not land-cover colours");
        }
        let eurosat = names("eurosat");
        let colour =
            |name: &str| palette(&eurosat)[eurosat.iter().position(|n| n == name).unwrap()];
        let [r, g, b] = colour("SeaLake");
        assert!(b > r && b > g, "water is blue");
        let [r, g, b] = colour("Forest");
        assert!(g > r && g > b, "forest is green");
        let [r, g, b] = colour("Residential");
        assert!(r > g && r > b, "built-up is red");
        let [r, g, b] = colour("AnnualCrop");
        assert!(r > b && g > b, "crops are yellow");
        // Objects, or a set with a name the table does not know: Tableau's colours.
        assert_eq!(palette(&names("xview")), qualitative(60));
        let mixed = vec!["forest".to_string(), "ship".to_string()];
        assert_eq!(palette(&mixed), qualitative(2));
    }

    #[test]
    fn cells_average_the_tiles_over_their_centres() {
        // A 6×2 scene, tiles of 4 every 2 (the last moved in to end at the edge): cells of 2.
        let recs = [
            rec((0, 0, 4, 2), vec![1.0, 0.0]),
            rec((2, 0, 4, 2), vec![0.0, 1.0]),
        ];
        let g = ClassGrid::new(6, 2, 2, &recs, 2);
        assert_eq!((g.width, g.height), (3, 1));
        assert_eq!(g.scores[0], vec![1.0, 0.5, 0.0]);
        assert_eq!(g.argmax(), vec![Some(0), Some(0), Some(1)]);
        // A cell no tile holds has no score.
        let g = ClassGrid::new(6, 2, 2, &recs[..1], 2);
        assert!(g.scores[0][2].is_nan());
        assert_eq!(g.argmax()[2], None);
    }

    #[test]
    fn pixel_rings_are_closed_and_counter_clockwise() {
        let ring = tile_ring(None, (10, 20, 4, 3)).unwrap().unwrap();
        assert_eq!(ring.len(), 5);
        assert_eq!(ring[0], ring[4]);
        let area: f64 = (0..4)
            .map(|i| ring[i][0] * ring[i + 1][1] - ring[i + 1][0] * ring[i][1])
            .sum();
        assert!(area > 0.0);
        assert_eq!(bounds(&ring), [10.0, 20.0, 14.0, 23.0]);
    }
}
