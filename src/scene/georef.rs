//! Where a scene's pixels are on Earth: the GeoTIFF tags (ModelPixelScale + ModelTiepoint, or
//! ModelTransformation; GeoKeys with an EPSG code; PixelIsArea / PixelIsPoint) read into a
//! GDAL-style affine geotransform and a CRS, and points of that CRS transformed to WGS 84
//! longitude/latitude with `proj4rs` (PROJ's algorithms in Rust: Poder/Engsager transverse
//! Mercator for UTM, as PROJ itself uses) and its EPSG table.

use anyhow::{Result, anyhow, bail};
use proj4rs::Proj;

/// GeoKey ids this reader uses.
const GT_MODEL_TYPE: u16 = 1024;
const GT_RASTER_TYPE: u16 = 1025;
const GEOGRAPHIC_TYPE: u16 = 2048;
const PROJECTED_CS_TYPE: u16 = 3072;
/// "User-defined" in GeoKeys: the CRS is spelled out in parameters instead of a code.
const USER_DEFINED: u16 = 32767;

/// A scene's georeferencing: pixel (column, row) → CRS coordinates, and the CRS.
#[derive(Clone)]
pub struct GeoRef {
    /// GDAL's order: `x = t[0] + col·t[1] + row·t[2]`, `y = t[3] + col·t[4] + row·t[5]`, at
    /// pixel corners (PixelIsPoint files are shifted by half a pixel, as GDAL does).
    pub transform: [f64; 6],
    /// The EPSG code of the CRS.
    pub epsg: u32,
    crs: Proj,
    wgs84: Proj,
    geographic: bool,
}

impl std::fmt::Debug for GeoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoRef")
            .field("transform", &self.transform)
            .field("epsg", &self.epsg)
            .finish()
    }
}

/// The GeoTIFF tags, as read from the file (each optional).
pub struct GeoTags<'a> {
    pub pixel_scale: Option<&'a [f64]>,
    pub tiepoints: Option<&'a [f64]>,
    pub transformation: Option<&'a [f64]>,
    pub geo_keys: Option<&'a [u16]>,
}

impl GeoRef {
    /// The georeferencing the tags describe; `Ok(None)` when the file has none at all (no
    /// transform and no keys).
    pub fn from_tags(t: &GeoTags) -> Result<Option<Self>> {
        let transform = match (t.transformation, t.tiepoints, t.pixel_scale) {
            (Some(m), _, _) => {
                if m.len() < 16 {
                    bail!(
                        "ModelTransformationTag holds {} values, 16 expected",
                        m.len()
                    );
                }
                [m[3], m[0], m[1], m[7], m[4], m[5]]
            }
            (None, Some(tp), Some(sc)) => {
                if tp.len() < 6 || sc.len() < 2 {
                    bail!("ModelTiepointTag or ModelPixelScaleTag too short");
                }
                // The first tie point and the scale, as GDAL reads them.
                let (i, j, x, y) = (tp[0], tp[1], tp[3], tp[4]);
                [x - i * sc[0], sc[0], 0.0, y + j * sc[1], 0.0, -sc[1]]
            }
            (None, Some(_), None) => {
                bail!("tie points without ModelPixelScaleTag (ground control points are not read)")
            }
            _ => {
                if t.geo_keys.is_some() {
                    bail!("GeoKeys but no ModelTransformationTag or ModelTiepointTag");
                }
                return Ok(None);
            }
        };
        if transform.iter().any(|v| !v.is_finite())
            || transform[1] * transform[5] - transform[2] * transform[4] == 0.0
        {
            bail!("the geotransform {transform:?} cannot be inverted");
        }
        let keys = t.geo_keys.ok_or_else(|| {
            anyhow!("a geotransform but no GeoKeyDirectoryTag: the CRS is unknown")
        })?;
        let key = |id: u16| -> Option<u16> {
            if keys.len() < 4 {
                return None;
            }
            let n = keys[3] as usize;
            keys[4..]
                .chunks_exact(4)
                .take(n)
                .find(|k| k[0] == id && k[1] == 0)
                .map(|k| k[3])
        };
        let mut transform = transform;
        if key(GT_RASTER_TYPE) == Some(2) {
            // PixelIsPoint: coordinates name pixel centres; GDAL moves the origin half a pixel
            // to the corner (its default, GTIFF_POINT_GEO_IGNORE=FALSE).
            transform[0] -= 0.5 * transform[1] + 0.5 * transform[2];
            transform[3] -= 0.5 * transform[4] + 0.5 * transform[5];
        }
        let model = key(GT_MODEL_TYPE);
        let code = match (model, key(PROJECTED_CS_TYPE), key(GEOGRAPHIC_TYPE)) {
            (_, Some(p), _) if p != USER_DEFINED && p != 0 => p,
            (Some(2) | None, _, Some(g)) if g != USER_DEFINED && g != 0 => g,
            (Some(1), _, _) => bail!(
                "the CRS is user-defined (ProjectedCSTypeGeoKey {USER_DEFINED}), not an EPSG \
                 code: reproject the scene to an EPSG CRS (gdalwarp -t_srs EPSG:…)"
            ),
            _ => bail!("the GeoKeys name no EPSG code for the CRS"),
        };
        let (crs, geographic) = crs_for(code as u32)?;
        Ok(Some(Self {
            transform,
            epsg: code as u32,
            crs,
            wgs84: Proj::from_proj_string("+proj=longlat +datum=WGS84 +no_defs")
                .map_err(|e| anyhow!("WGS 84: {e}"))?,
            geographic,
        }))
    }

    /// CRS coordinates of a pixel position (corners are whole numbers).
    pub fn pixel_to_crs(&self, col: f64, row: f64) -> (f64, f64) {
        let t = &self.transform;
        (
            t[0] + col * t[1] + row * t[2],
            t[3] + col * t[4] + row * t[5],
        )
    }

    /// WGS 84 (longitude, latitude) in degrees of CRS coordinates.
    pub fn crs_to_lon_lat(&self, x: f64, y: f64) -> Result<(f64, f64)> {
        let mut p = if self.geographic {
            (x.to_radians(), y.to_radians(), 0.0)
        } else {
            (x, y, 0.0)
        };
        proj4rs::transform::transform(&self.crs, &self.wgs84, &mut p)
            .map_err(|e| anyhow!("EPSG:{} → WGS 84 failed at ({x}, {y}): {e}", self.epsg))?;
        Ok((p.0.to_degrees(), p.1.to_degrees()))
    }

    /// WGS 84 (longitude, latitude) of a pixel position.
    pub fn pixel_to_lon_lat(&self, col: f64, row: f64) -> Result<(f64, f64)> {
        let (x, y) = self.pixel_to_crs(col, row);
        self.crs_to_lon_lat(x, y)
    }

    /// `[west, south, east, north]` in WGS 84 degrees of a pixel rectangle's four corners.
    pub fn tile_bounds(&self, (x, y, w, h): (u32, u32, u32, u32)) -> Result<[f64; 4]> {
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (px, py) in [(x, y), (x + w, y), (x + w, y + h), (x, y + h)] {
            let (lon, lat) = self.pixel_to_lon_lat(px as f64, py as f64)?;
            b = [b[0].min(lon), b[1].min(lat), b[2].max(lon), b[3].max(lat)];
        }
        Ok(b)
    }

    /// The geotransform of a grid laid over the scene with cells of `cell` pixels.
    pub fn scaled(&self, cell: f64) -> [f64; 6] {
        let t = self.transform;
        [
            t[0],
            t[1] * cell,
            t[2] * cell,
            t[3],
            t[4] * cell,
            t[5] * cell,
        ]
    }

    /// The GeoKey directory that says this CRS (for writing a GeoTIFF on the same CRS).
    pub fn geo_keys(&self) -> Vec<u16> {
        let code = self.epsg as u16;
        if self.geographic {
            vec![
                1,
                1,
                0,
                3,
                GT_MODEL_TYPE,
                0,
                1,
                2,
                GT_RASTER_TYPE,
                0,
                1,
                1,
                GEOGRAPHIC_TYPE,
                0,
                1,
                code,
            ]
        } else {
            vec![
                1,
                1,
                0,
                3,
                GT_MODEL_TYPE,
                0,
                1,
                1,
                GT_RASTER_TYPE,
                0,
                1,
                1,
                PROJECTED_CS_TYPE,
                0,
                1,
                code,
            ]
        }
    }
}

/// The CRS of an EPSG code from proj4rs's table, and whether it is geographic (degrees).
fn crs_for(code: u32) -> Result<(Proj, bool)> {
    let unsupported = || {
        anyhow!(
            "CRS EPSG:{code} is not supported (reproject the scene, e.g. gdalwarp -t_srs \
             EPSG:4326, or to its UTM zone)"
        )
    };
    let code16 = u16::try_from(code).map_err(|_| unsupported())?;
    let proj = Proj::from_epsg_code(code16).map_err(|_| unsupported())?;
    let geographic = proj.is_latlong();
    Ok((proj, geographic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(projected: Option<u16>, geographic: Option<u16>, point: bool) -> Vec<u16> {
        let mut k = vec![1, 1, 0, 0];
        let model = if projected.is_some() { 1 } else { 2 };
        k.extend([GT_MODEL_TYPE, 0, 1, model]);
        k.extend([GT_RASTER_TYPE, 0, 1, if point { 2 } else { 1 }]);
        if let Some(g) = geographic {
            k.extend([GEOGRAPHIC_TYPE, 0, 1, g]);
        }
        if let Some(p) = projected {
            k.extend([PROJECTED_CS_TYPE, 0, 1, p]);
        }
        k[3] = ((k.len() - 4) / 4) as u16;
        k
    }

    /// The georeferencing of a pixel scale, a tie point and GeoKeys.
    fn tied(scale: &[f64], tie: &[f64], keys: &[u16]) -> Result<Option<GeoRef>> {
        GeoRef::from_tags(&GeoTags {
            pixel_scale: Some(scale),
            tiepoints: Some(tie),
            transformation: None,
            geo_keys: Some(keys),
        })
    }

    #[test]
    fn tiepoint_and_scale_make_gdals_geotransform() {
        let k = keys(Some(32633), None, false);
        let tie = [0.0, 0.0, 0.0, 399960.0, 5300040.0, 0.0];
        let g = tied(&[10.0, 10.0, 0.0], &tie, &k).unwrap().unwrap();
        assert_eq!(g.transform, [399960.0, 10.0, 0.0, 5300040.0, 0.0, -10.0]);
        assert_eq!(g.epsg, 32633);
        // Zone 33's central meridian is 15°E: x = 500000 lies on it.
        let (lon, _) = g.crs_to_lon_lat(500000.0, 5300040.0).unwrap();
        assert!((lon - 15.0).abs() < 1e-9, "{lon}");
    }

    #[test]
    fn pixel_is_point_moves_the_origin_half_a_pixel() {
        let k = keys(None, Some(4326), true);
        let tie = [0.0, 0.0, 0.0, 10.0, 50.0, 0.0];
        let g = tied(&[0.5, 0.25, 0.0], &tie, &k).unwrap().unwrap();
        assert_eq!(g.transform, [9.75, 0.5, 0.0, 50.125, 0.0, -0.25]);
        assert_eq!(g.pixel_to_lon_lat(0.5, 0.5).unwrap(), (10.0, 50.0));
    }

    #[test]
    fn unknown_and_user_defined_crs_are_refused_by_code() {
        let (scale, tie) = ([1.0, 1.0, 0.0], [0.0; 6]);
        let err = tied(&scale, &tie, &keys(Some(1), None, false)).unwrap_err();
        assert!(err.to_string().contains("EPSG:1 is not supported"), "{err}");
        let err = tied(&scale, &tie, &keys(Some(USER_DEFINED), None, false)).unwrap_err();
        assert!(err.to_string().contains("user-defined"), "{err}");
        assert!(
            GeoRef::from_tags(&GeoTags {
                pixel_scale: None,
                tiepoints: None,
                transformation: None,
                geo_keys: None
            })
            .unwrap()
            .is_none()
        );
    }
}
