//! Training areas drawn over a scene (in QGIS, or any GIS): a GeoJSON of Polygon, MultiPolygon,
//! Point and MultiPoint features, each with a `class` (or `label`) property. A tile of the
//! scene becomes an example of a class when its centre lies in one of the class's polygons or
//! a point of the class lies in the tile.
//!
//! Coordinates are in the file's CRS: RFC 7946 longitude/latitude by default, or the CRS the
//! file names in its (pre-RFC, GDAL-written) `crs` member — `EPSG:32632`,
//! `urn:ogc:def:crs:EPSG::32632`, `urn:ogc:def:crs:OGC:1.3:CRS84` — converted to WGS 84
//! longitude/latitude here, where the scene's tiles are compared with them.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::scene::georef::GeoRef;

/// One drawn area or point of a class.
#[derive(Debug, Clone)]
enum Shape {
    /// Rings in longitude/latitude: the outer ring, then holes.
    Polygon(Vec<Vec<[f64; 2]>>),
    Point([f64; 2]),
}

/// The training areas of a file, in WGS 84 longitude/latitude.
#[derive(Debug, Clone)]
pub struct TrainingAreas {
    /// Class names in the order of first appearance in the file.
    pub classes: Vec<String>,
    shapes: Vec<(usize, Shape)>,
    /// `[west, south, east, north]` of every shape.
    pub bounds: [f64; 4],
}

/// The EPSG code a GeoJSON `crs` member names, `None` for longitude/latitude on WGS 84.
fn crs_code(crs: &serde_json::Value, file: &Path) -> Result<Option<u16>> {
    let name = crs
        .get("properties")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| {
            format!(
                "{}: its `crs` member has no properties.name (expected e.g. \
                 \"urn:ogc:def:crs:EPSG::32632\")",
                file.display()
            )
        })?;
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("CRS84") || upper.ends_with("CRS:84") {
        return Ok(None);
    }
    let code = upper
        .rsplit([':', '/'])
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| upper.contains("EPSG"))
        .with_context(|| {
            format!(
                "{}: the CRS {name:?} is not one read here (name it by EPSG code, e.g. \
                 urn:ogc:def:crs:EPSG::32632, or save the layer in EPSG:4326)",
                file.display()
            )
        })?;
    // GeoJSON keeps longitude first whatever EPSG:4326's official axis order.
    Ok((code != 4326).then_some(code))
}

fn point(c: &[f64], to: &dyn Fn(f64, f64) -> Result<[f64; 2]>) -> Result<[f64; 2]> {
    if c.len() < 2 || !c[0].is_finite() || !c[1].is_finite() {
        bail!("a position needs two finite numbers, not {c:?}");
    }
    to(c[0], c[1])
}

impl TrainingAreas {
    /// Reads a GeoJSON FeatureCollection (or a single Feature) of training areas.
    pub fn read(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read the training areas", file.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        let code = match json.get("crs") {
            Some(c) => crs_code(c, file)?,
            None => None,
        };
        let georef = code
            .map(|c| {
                GeoRef::of_epsg(c).with_context(|| {
                    format!(
                        "{}: its CRS EPSG:{c} cannot be transformed to longitude/latitude",
                        file.display()
                    )
                })
            })
            .transpose()?;
        let to = |x: f64, y: f64| -> Result<[f64; 2]> {
            match &georef {
                Some(g) => {
                    let (lon, lat) = g.crs_to_lon_lat(x, y)?;
                    Ok([lon, lat])
                }
                None => {
                    if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
                        bail!(
                            "({x}, {y}) is not a longitude/latitude, and the file names no \
                             other CRS (a `crs` member, as GDAL writes it)"
                        );
                    }
                    Ok([x, y])
                }
            }
        };
        let features: Vec<&serde_json::Value> = match json.get("type").and_then(|t| t.as_str()) {
            Some("FeatureCollection") => json
                .get("features")
                .and_then(|f| f.as_array())
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            Some("Feature") => vec![&json],
            _ => bail!(
                "{}: not a GeoJSON FeatureCollection or Feature",
                file.display()
            ),
        };
        let mut classes: Vec<String> = Vec::new();
        let mut shapes = Vec::new();
        for (i, f) in features.iter().enumerate() {
            let at = || format!("{}: feature {}", file.display(), i + 1);
            let props = f.get("properties");
            let class = ["class", "label"]
                .iter()
                .find_map(|k| props.and_then(|p| p.get(*k)))
                .and_then(|v| match v {
                    serde_json::Value::String(s) if !s.trim().is_empty() => {
                        Some(s.trim().to_string())
                    }
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .with_context(|| format!("{}: no `class` or `label` property", at()))?;
            let c = match classes.iter().position(|x| x == &class) {
                Some(c) => c,
                None => {
                    classes.push(class);
                    classes.len() - 1
                }
            };
            let geometry = f
                .get("geometry")
                .filter(|g| !g.is_null())
                .with_context(|| format!("{}: no geometry", at()))?;
            let polygon = |rings: &Vec<Vec<Vec<f64>>>| -> Result<Shape> {
                let rings: Vec<Vec<[f64; 2]>> = rings
                    .iter()
                    .map(|r| r.iter().map(|p| point(p, &to)).collect())
                    .collect::<Result<_>>()?;
                if rings.first().is_none_or(|r| r.len() < 4) {
                    bail!("a polygon's ring needs four positions or more");
                }
                Ok(Shape::Polygon(rings))
            };
            let mut add = |s: Result<Shape>| -> Result<()> {
                shapes.push((c, s.with_context(at)?));
                Ok(())
            };
            let kind = geometry.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let coords = geometry.get("coordinates").cloned().unwrap_or_default();
            // Coordinates read by shape: the geojson crate's types would be converted to these
            // same nested vectors.
            fn nested<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
                serde_json::from_value(v).context("coordinates of the wrong shape")
            }
            match kind {
                "Polygon" => add(nested(coords).and_then(|p| polygon(&p)))?,
                "MultiPolygon" => {
                    let m: Vec<Vec<Vec<Vec<f64>>>> = nested(coords).with_context(at)?;
                    for p in &m {
                        add(polygon(p))?;
                    }
                }
                "Point" => {
                    add(nested::<Vec<f64>>(coords).and_then(|p| point(&p, &to).map(Shape::Point)))?
                }
                "MultiPoint" => {
                    let m: Vec<Vec<f64>> = nested(coords).with_context(at)?;
                    for p in &m {
                        add(point(p, &to).map(Shape::Point))?;
                    }
                }
                other => bail!(
                    "{}: a {other:?} geometry — training areas are Polygons or Points",
                    at()
                ),
            }
        }
        if shapes.is_empty() {
            bail!("{}: no training areas", file.display());
        }
        let mut bounds = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (_, s) in &shapes {
            let pts: Vec<[f64; 2]> = match s {
                Shape::Polygon(r) => r[0].clone(),
                Shape::Point(p) => vec![*p],
            };
            for p in pts {
                bounds = [
                    bounds[0].min(p[0]),
                    bounds[1].min(p[1]),
                    bounds[2].max(p[0]),
                    bounds[3].max(p[1]),
                ];
            }
        }
        Ok(Self {
            classes,
            shapes,
            bounds,
        })
    }

    /// The classes a tile belongs to: those with a polygon holding its `centre`, or a point
    /// inside its `ring` (both longitude/latitude). Sorted, without repeats.
    pub fn classes_of_tile(&self, centre: [f64; 2], ring: &[[f64; 2]]) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .shapes
            .iter()
            .filter(|(_, s)| match s {
                Shape::Polygon(rings) => {
                    inside(centre, &rings[0]) && !rings[1..].iter().any(|h| inside(centre, h))
                }
                Shape::Point(p) => inside(*p, ring),
            })
            .map(|(c, _)| *c)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Whether `p` lies inside the closed `ring` (even–odd rule, by a ray towards +x).
fn inside(p: [f64; 2], ring: &[[f64; 2]]) -> bool {
    let mut odd = false;
    let n = ring.len();
    for i in 0..n {
        let (a, b) = (ring[i], ring[(i + 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                odd = !odd;
            }
        }
    }
    odd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_in_polygons_and_points_in_tiles() {
        let dir = std::env::temp_dir().join(format!("skyscribe-areas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("areas.geojson");
        std::fs::write(
            &file,
            r#"{"type":"FeatureCollection","features":[
              {"type":"Feature","properties":{"class":"Forest"},"geometry":{"type":"Polygon",
               "coordinates":[[[0,0],[2,0],[2,2],[0,2],[0,0]],[[0.5,0.5],[1,0.5],[1,1],[0.5,1],[0.5,0.5]]]}},
              {"type":"Feature","properties":{"label":"Lake"},"geometry":{"type":"Point","coordinates":[5.5,5.5]}}]}"#,
        )
        .unwrap();
        let areas = TrainingAreas::read(&file).unwrap();
        assert_eq!(areas.classes, vec!["Forest", "Lake"]);
        let square = |x: f64, y: f64| vec![[x, y], [x + 1.0, y], [x + 1.0, y + 1.0], [x, y + 1.0]];
        assert_eq!(
            areas.classes_of_tile([1.5, 1.5], &square(1.0, 1.0)),
            vec![0]
        );
        // In the hole.
        assert!(
            areas
                .classes_of_tile([0.75, 0.75], &square(0.25, 0.25))
                .is_empty()
        );
        assert_eq!(
            areas.classes_of_tile([5.2, 5.2], &square(5.0, 5.0)),
            vec![1]
        );
        assert!(
            areas
                .classes_of_tile([3.0, 3.0], &square(2.5, 2.5))
                .is_empty()
        );
        assert_eq!(areas.bounds, [0.0, 0.0, 5.5, 5.5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_feature_without_a_class_is_named() {
        let dir = std::env::temp_dir().join(format!("skyscribe-areas2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("areas.geojson");
        std::fs::write(
            &file,
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"x"},
               "geometry":{"type":"Point","coordinates":[1,1]}}]}"#,
        )
        .unwrap();
        let e = format!("{:#}", TrainingAreas::read(&file).unwrap_err());
        assert!(
            e.contains("feature 1: no `class` or `label` property"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
