//! GeoParquet 1.1's two pieces that plain Parquet lacks: geometries as WKB and the `geo` file
//! metadata that says which column holds them, how, and on which CRS. `scan --out FILE.parquet`
//! and the index's parts use them, so DuckDB spatial, GeoPandas, GDAL/OGR and QGIS open those
//! files as layers; and the one way both write a file of one batch.
//!
//! By hand: a polygon's WKB is five lines (a byte order, a type, counts, coordinates) and the
//! metadata is a JSON object; the `wkb`/`geoarrow` crates bring a geometry model this does not
//! need.

use serde_json::json;

/// A polygon of one closed ring as ISO WKB (little-endian, type 3).
pub fn wkb_polygon(ring: &[[f64; 2]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + 16 * ring.len());
    out.push(1u8);
    out.extend(3u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend((ring.len() as u32).to_le_bytes());
    for p in ring {
        out.extend(p[0].to_le_bytes());
        out.extend(p[1].to_le_bytes());
    }
    out
}

/// The closed ring of a `[west, south, east, north]` box, counter-clockwise.
pub fn box_ring(b: [f64; 4]) -> Vec<[f64; 2]> {
    vec![
        [b[0], b[1]],
        [b[2], b[1]],
        [b[2], b[3]],
        [b[0], b[3]],
        [b[0], b[1]],
    ]
}

/// Where a file's geometries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coordinates {
    /// Longitude/latitude on WGS 84: GeoParquet's default CRS, OGC:CRS84 (the `crs` key is left
    /// out, as the spec asks for it).
    Wgs84,
    /// Anything else (pixels; longitude/latitude on another datum): `"crs": null`, which the
    /// spec reads as "undefined", so no reader takes them for WGS 84.
    Undefined,
}

/// The `geo` metadata value for a `geometry` column of polygons; `bbox` over every geometry.
pub fn geo_metadata(coordinates: Coordinates, bbox: Option<[f64; 4]>) -> String {
    let mut column = json!({
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
    });
    if coordinates == Coordinates::Undefined {
        column["crs"] = serde_json::Value::Null;
    }
    if let Some(b) = bbox.filter(|b| b.iter().all(|v| v.is_finite())) {
        column["bbox"] = json!(b);
    }
    json!({
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": { "geometry": column },
    })
    .to_string()
}

/// A Parquet file of one batch, as bytes (a file of no rows still carries the schema).
pub fn one_batch_file(
    batch: &arrow_array::RecordBatch,
    props: parquet::file::properties::WriterProperties,
) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    if batch.num_rows() > 0 {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(bytes)
}

/// The box around rings (∞ when there is none).
pub fn bbox<'a>(rings: impl IntoIterator<Item = &'a [[f64; 2]]>) -> [f64; 4] {
    let mut b = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for ring in rings {
        for p in ring {
            b = [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ];
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_is_the_wkb_iso_writes() {
        let w = wkb_polygon(&box_ring([0.0, 0.0, 1.0, 1.0]));
        assert_eq!(w.len(), 1 + 4 + 4 + 4 + 5 * 16);
        assert_eq!(&w[..13], &[1, 3, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(
            f64::from_le_bytes(w[13 + 16..13 + 24].try_into().unwrap()),
            1.0
        );
    }

    #[test]
    fn only_wgs84_goes_without_a_crs() {
        let m: serde_json::Value = serde_json::from_str(&geo_metadata(
            Coordinates::Wgs84,
            Some([0.0, 1.0, 2.0, 3.0]),
        ))
        .unwrap();
        assert!(m["columns"]["geometry"].get("crs").is_none());
        assert_eq!(
            m["columns"]["geometry"]["bbox"],
            json!([0.0, 1.0, 2.0, 3.0])
        );
        let m: serde_json::Value =
            serde_json::from_str(&geo_metadata(Coordinates::Undefined, None)).unwrap();
        assert!(m["columns"]["geometry"]["crs"].is_null());
        assert!(m["columns"]["geometry"].get("crs").is_some());
    }
}
