//! Where a scene's pixels are on Earth: the GeoTIFF tags read into a GDAL-style affine
//! geotransform as GDAL reads them (ModelPixelScale + the first ModelTiepoint before
//! ModelTransformation; a negative Y scale taken as north-up; tie points without a scale are
//! ground control points, not a geotransform; PixelIsPoint moved to pixel corners), the CRS read
//! from the GeoKeys by [`super::crs`], and points transformed to longitude/latitude with
//! `proj4rs` (PROJ's algorithms in Rust: Poder/Engsager transverse Mercator for UTM, as PROJ
//! itself uses).

use anyhow::{Result, anyhow};
use proj4rs::Proj;

use super::crs::{self, Crs, GT_RASTER_TYPE};

/// A scene's georeferencing: pixel (column, row) → CRS coordinates, and the CRS.
#[derive(Clone)]
pub struct GeoRef {
    /// GDAL's order: `x = t[0] + col·t[1] + row·t[2]`, `y = t[3] + col·t[4] + row·t[5]`, at
    /// pixel corners (PixelIsPoint files are shifted by half a pixel, as GDAL does).
    pub transform: [f64; 6],
    /// The EPSG code of the CRS, when the file names one and does not redefine it.
    pub epsg: Option<u32>,
    /// The CRS for people ("EPSG:32633 (WGS 84 / UTM zone 33N)", "a user-defined …").
    pub crs_name: String,
    /// Set when longitude/latitude are not on WGS 84 (see [`Crs::datum_note`]): outputs carry
    /// it.
    pub datum_note: Option<String>,
    to_lon_lat: ToLonLat,
    /// The source's GeoKeys, written again as they are on rasters of the same CRS (a class
    /// map): whatever GDAL read from the scene, it reads from them. Empty for a scene GDAL read
    /// whose CRS has no EPSG code.
    keys: Vec<u16>,
    doubles: Vec<f64>,
    ascii: String,
}

/// A point outside the projection's domain (the space around the Earth's disk in a
/// geostationary view, the far side of an orthographic one): it has no longitude/latitude, as
/// GDAL and PROJ give it none. Callers turn such tiles' footprints into nulls, never guesses.
#[derive(Debug)]
pub struct OutsideProjection;

impl std::fmt::Display for OutsideProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the point is outside the projection's domain (off the Earth)")
    }
}

impl std::error::Error for OutsideProjection {}

/// How CRS coordinates become longitude/latitude.
#[derive(Clone)]
enum ToLonLat {
    /// `proj4rs`, from the GeoKeys (the pure-Rust reader).
    Proj4rs(Box<Proj4rsLonLat>),
    /// OSR over PROJ (scenes read through GDAL).
    #[cfg(feature = "gdal")]
    Osr(super::gdal_reader::OsrLonLat),
}

#[derive(Clone)]
struct Proj4rsLonLat {
    crs: Proj,
    lon_lat: Proj,
    geographic: bool,
    degrees_per_unit: f64,
}

impl std::fmt::Debug for GeoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoRef")
            .field("transform", &self.transform)
            .field("crs", &self.crs_name)
            .finish()
    }
}

/// The GeoTIFF tags, as read from the file (each optional).
#[derive(Default)]
pub struct GeoTags<'a> {
    pub pixel_scale: Option<&'a [f64]>,
    pub tiepoints: Option<&'a [f64]>,
    pub transformation: Option<&'a [f64]>,
    pub geo_keys: Option<&'a [u16]>,
    pub geo_doubles: Option<&'a [f64]>,
    pub geo_ascii: Option<&'a str>,
}

/// The geotransform the tags give, as GDAL takes it; `None` with the reason when there is
/// none.
fn geotransform(t: &GeoTags) -> Result<[f64; 6], &'static str> {
    if let (Some(sc), Some(tp)) = (t.pixel_scale, t.tiepoints)
        && sc.len() >= 2
        && tp.len() >= 6
        && sc[0] != 0.0
        && sc[1] != 0.0
    {
        // The first tie point and the scale; a negative Y scale is taken as north-up, as
        // GDAL does unless told otherwise (GTIFF_HONOUR_NEGATIVE_SCALEY).
        let (i, j, x, y) = (tp[0], tp[1], tp[3], tp[4]);
        let (sx, sy) = (sc[0], sc[1].abs());
        return Ok([x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]);
    }
    if let Some(m) = t.transformation.filter(|m| m.len() >= 16) {
        return Ok([m[3], m[0], m[1], m[7], m[4], m[5]]);
    }
    Err(match (t.tiepoints, t.geo_keys) {
        (Some(_), _) => {
            "tie points without a pixel scale are ground control points, which are not used"
        }
        (None, Some(_)) => {
            "GeoKeys but no geotransform (no ModelPixelScale + ModelTiepoint or ModelTransformation)"
        }
        (None, None) => "no GeoTIFF tags",
    })
}

impl GeoRef {
    /// The georeferencing the tags describe: `Ok(Err(reason))` when there is no geotransform
    /// or no CRS (the scene is then read in pixel coordinates only); `Err` when the tags are
    /// there but cannot be read exactly (an unknown unit, an unsupported projection).
    pub fn from_tags(t: &GeoTags) -> Result<Result<Self, String>> {
        let mut transform = match geotransform(t) {
            Ok(g) => g,
            Err(why) => return Ok(Err(why.to_string())),
        };
        if transform.iter().any(|v| !v.is_finite())
            || transform[1] * transform[5] - transform[2] * transform[4] == 0.0
        {
            return Ok(Err(format!(
                "the geotransform {transform:?} cannot be inverted"
            )));
        }
        let Some(keys) = t.geo_keys.filter(|k| k.len() >= 4) else {
            return Ok(Err(
                "a geotransform but no GeoKeyDirectoryTag: the CRS is unknown".to_string(),
            ));
        };
        let geokeys = crs::GeoKeys {
            directory: keys,
            doubles: t.geo_doubles.unwrap_or(&[]),
            ascii: t.geo_ascii.unwrap_or(""),
        };
        if geokeys.short(GT_RASTER_TYPE) == Some(2) {
            // PixelIsPoint: coordinates name pixel centres; GDAL moves the origin half a pixel
            // to the corner (its default, GTIFF_POINT_GEO_IGNORE=FALSE).
            transform[0] -= 0.5 * transform[1] + 0.5 * transform[2];
            transform[3] -= 0.5 * transform[4] + 0.5 * transform[5];
        }
        let c: Crs = crs::from_geokeys(&geokeys)?;
        let proj = |s: &str| {
            Proj::from_proj_string(s).map_err(|e| anyhow!("{}: PROJ string {s:?}: {e}", c.name))
        };
        let mut keys = keys.to_vec();
        // The transform is at pixel corners now: whoever reads the keys again reads PixelIsArea.
        for k in keys[4..].chunks_exact_mut(4) {
            if k[0] == GT_RASTER_TYPE && k[1] == 0 {
                k[3] = 1;
            }
        }
        Ok(Ok(Self {
            transform,
            epsg: c.epsg,
            crs_name: c.name.clone(),
            datum_note: c.datum_note.clone(),
            to_lon_lat: ToLonLat::Proj4rs(Box::new(Proj4rsLonLat {
                crs: proj(&c.proj)?,
                lon_lat: proj(&c.lon_lat)?,
                geographic: c.geographic,
                degrees_per_unit: c.degrees_per_unit,
            })),
            keys,
            doubles: geokeys.doubles.to_vec(),
            ascii: geokeys.ascii.to_string(),
        }))
    }

    /// The CRS of EPSG `code` with a pixel grid equal to its coordinates: for turning another
    /// file's coordinates in that CRS (a GeoJSON's `crs`) into longitude/latitude with
    /// [`Self::crs_to_lon_lat`], exactly as a scene in it would be.
    pub fn of_epsg(code: u16) -> Result<Self> {
        let geographic = crs_definitions::from_code(code)
            .ok_or_else(|| anyhow!("EPSG:{code} is not in the EPSG table"))?
            .proj4
            .contains("+proj=longlat");
        let (model, key) = if geographic { (2, 2048) } else { (1, 3072) };
        let keys = [1, 1, 0, 2, crs::GT_MODEL_TYPE, 0, 1, model, key, 0, 1, code];
        let tags = GeoTags {
            pixel_scale: Some(&[1.0, 1.0, 0.0]),
            tiepoints: Some(&[0.0; 6]),
            geo_keys: Some(&keys),
            ..Default::default()
        };
        Self::from_tags(&tags)?.map_err(|why| anyhow!("EPSG:{code}: {why}"))
    }

    /// CRS coordinates of a pixel position (corners are whole numbers).
    pub fn pixel_to_crs(&self, col: f64, row: f64) -> (f64, f64) {
        let t = &self.transform;
        (
            t[0] + col * t[1] + row * t[2],
            t[3] + col * t[4] + row * t[5],
        )
    }

    /// The georeferencing GDAL reads: its geotransform (already at pixel corners) and its CRS,
    /// taken to longitude/latitude by OSR. Class maps get GeoKeys naming the CRS's EPSG code
    /// when OSR finds one.
    #[cfg(feature = "gdal")]
    pub fn from_gdal(transform: [f64; 6], srs: gdal::spatial_ref::SpatialRef) -> Result<Self> {
        if transform.iter().any(|v| !v.is_finite())
            || transform[1] * transform[5] - transform[2] * transform[4] == 0.0
        {
            anyhow::bail!("the geotransform {transform:?} cannot be inverted");
        }
        let name = srs.name().unwrap_or_else(|| "an unnamed CRS".into());
        let mut identified = srs.clone();
        let epsg = (identified.auth_name().as_deref() == Some("EPSG"))
            .then(|| identified.auth_code().ok())
            .flatten()
            .or_else(|| {
                identified.auto_identify_epsg().ok()?;
                (identified.auth_name().as_deref() == Some("EPSG"))
                    .then(|| identified.auth_code().ok())
                    .flatten()
            })
            .and_then(|c| u32::try_from(c).ok());
        let (to_lon_lat, datum_note) = super::gdal_reader::OsrLonLat::new(&srs)?;
        let keys = match epsg {
            // GTModelType, GTRasterType (PixelIsArea), then the CRS by code.
            Some(code) if code <= u16::MAX as u32 => {
                let (model, key) = if srs.is_geographic() {
                    (2, 2048)
                } else {
                    (1, 3072)
                };
                vec![
                    1,
                    1,
                    0,
                    3,
                    1024,
                    0,
                    1,
                    model,
                    GT_RASTER_TYPE,
                    0,
                    1,
                    1,
                    key,
                    0,
                    1,
                    code as u16,
                ]
            }
            _ => vec![],
        };
        Ok(Self {
            transform,
            epsg,
            crs_name: match epsg {
                Some(c) => format!("EPSG:{c} ({name})"),
                None => name,
            },
            datum_note,
            to_lon_lat: ToLonLat::Osr(to_lon_lat),
            keys,
            doubles: vec![],
            ascii: String::new(),
        })
    }

    /// WGS 84 (longitude, latitude) in degrees of CRS coordinates.
    pub fn crs_to_lon_lat(&self, x: f64, y: f64) -> Result<(f64, f64)> {
        let (crs, lon_lat, geographic, k) = match &self.to_lon_lat {
            ToLonLat::Proj4rs(p) => (&p.crs, &p.lon_lat, p.geographic, p.degrees_per_unit),
            #[cfg(feature = "gdal")]
            // Its errors are OutsideProjection, passed on as they are.
            ToLonLat::Osr(t) => return t.lon_lat(x, y),
        };
        let mut p = if geographic {
            ((x * k).to_radians(), (y * k).to_radians(), 0.0)
        } else {
            (x, y, 0.0)
        };
        match proj4rs::transform::transform(crs, lon_lat, &mut p) {
            Err(proj4rs::errors::Error::CoordTransOutsideProjectionDomain) => {
                return Err(anyhow::Error::new(OutsideProjection));
            }
            Err(e) => {
                return Err(anyhow!(
                    "{} → longitude/latitude failed at ({x}, {y}): {e}",
                    self.crs_name
                ));
            }
            Ok(()) => {}
        }
        if !(p.0.is_finite() && p.1.is_finite()) {
            return Err(anyhow::Error::new(OutsideProjection));
        }
        Ok((p.0.to_degrees(), p.1.to_degrees()))
    }

    /// WGS 84 (longitude, latitude) of a pixel position.
    pub fn pixel_to_lon_lat(&self, col: f64, row: f64) -> Result<(f64, f64)> {
        let (x, y) = self.pixel_to_crs(col, row);
        self.crs_to_lon_lat(x, y)
    }

    /// `[west, south, east, north]` in WGS 84 degrees of a pixel rectangle's four corners;
    /// `None` when a corner is off the Earth ([`OutsideProjection`]).
    pub fn tile_bounds_on_earth(&self, rect: (u32, u32, u32, u32)) -> Result<Option<[f64; 4]>> {
        match self.tile_bounds(rect) {
            Err(e) if e.is::<OutsideProjection>() => Ok(None),
            other => other.map(Some),
        }
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

    /// The source's GeoKeys (directory, doubles, ASCII), for a raster on the same CRS; `None`
    /// for a scene GDAL read whose CRS has no EPSG code (no keys would say it exactly).
    pub fn geo_keys(&self) -> Option<(&[u16], &[f64], &str)> {
        (!self.keys.is_empty()).then_some((&self.keys, &self.doubles, &self.ascii))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::crs::{GT_MODEL_TYPE, USER_DEFINED};

    const GEOGRAPHIC_TYPE: u16 = 2048;
    const PROJECTED_CS_TYPE: u16 = 3072;

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
    fn tied(scale: &[f64], tie: &[f64], keys: &[u16]) -> Result<Result<GeoRef, String>> {
        GeoRef::from_tags(&GeoTags {
            pixel_scale: Some(scale),
            tiepoints: Some(tie),
            geo_keys: Some(keys),
            ..Default::default()
        })
    }

    #[test]
    fn tiepoint_and_scale_make_gdals_geotransform() {
        let k = keys(Some(32633), None, false);
        let tie = [0.0, 0.0, 0.0, 399960.0, 5300040.0, 0.0];
        let g = tied(&[10.0, 10.0, 0.0], &tie, &k).unwrap().unwrap();
        assert_eq!(g.transform, [399960.0, 10.0, 0.0, 5300040.0, 0.0, -10.0]);
        assert_eq!(g.epsg, Some(32633));
        assert!(g.datum_note.is_none());
        // Zone 33's central meridian is 15°E: x = 500000 lies on it.
        let (lon, _) = g.crs_to_lon_lat(500000.0, 5300040.0).unwrap();
        assert!((lon - 15.0).abs() < 1e-9, "{lon}");
        // A negative Y scale is north-up, as GDAL takes it.
        let g = tied(&[10.0, -10.0, 0.0], &tie, &k).unwrap().unwrap();
        assert_eq!(g.transform[5], -10.0);
    }

    #[test]
    fn pixel_is_point_moves_the_origin_half_a_pixel() {
        let k = keys(None, Some(4326), true);
        let tie = [0.0, 0.0, 0.0, 10.0, 50.0, 0.0];
        let g = tied(&[0.5, 0.25, 0.0], &tie, &k).unwrap().unwrap();
        assert_eq!(g.transform, [9.75, 0.5, 0.0, 50.125, 0.0, -0.25]);
        assert_eq!(g.pixel_to_lon_lat(0.5, 0.5).unwrap(), (10.0, 50.0));
        // Written again, the keys say PixelIsArea: the transform is at corners now.
        assert_eq!(&g.geo_keys().unwrap().0[8..12], &[GT_RASTER_TYPE, 0, 1, 1]);
    }

    #[test]
    fn unknown_crs_are_refused_and_missing_parts_leave_pixel_coordinates() {
        let (scale, tie) = ([1.0, 1.0, 0.0], [0.0; 6]);
        let err = tied(&scale, &tie, &keys(Some(1), None, false)).unwrap_err();
        assert!(
            err.to_string().contains("EPSG:1 is not in the EPSG table"),
            "{err}"
        );
        let err = tied(&scale, &tie, &keys(Some(USER_DEFINED), None, false)).unwrap_err();
        assert!(err.to_string().contains("ProjCoordTransGeoKey"), "{err}");
        let none = GeoRef::from_tags(&GeoTags::default()).unwrap().unwrap_err();
        assert_eq!(none, "no GeoTIFF tags");
        let gcps = GeoRef::from_tags(&GeoTags {
            tiepoints: Some(&[0.0, 0.0, 0.0, 5.0, 6.0, 0.0, 9.0, 9.0, 0.0, 1.0, 1.0, 0.0]),
            geo_keys: Some(&keys(None, Some(4326), false)),
            ..Default::default()
        })
        .unwrap()
        .unwrap_err();
        assert!(gcps.contains("ground control points"), "{gcps}");
        let no_crs = GeoRef::from_tags(&GeoTags {
            pixel_scale: Some(&scale),
            tiepoints: Some(&tie),
            ..Default::default()
        })
        .unwrap()
        .unwrap_err();
        assert!(no_crs.contains("CRS is unknown"), "{no_crs}");
    }
}
