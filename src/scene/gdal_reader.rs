//! Scenes read through GDAL (the `gdal` cargo feature, over the system's libgdal): every raster
//! format GDAL reads (JPEG 2000 in Sentinel-2 SAFE folders, VRT, NetCDF, HDF, ERDAS, …), GDAL's
//! virtual file systems (`/vsicurl/`, `/vsis3/`, `/vsizip/`, …), and PROJ for every CRS. It
//! stands behind the same [`RasterReader`] as the pure-Rust TIFF reader and hands `Scene` the
//! same things: palettes (and 1-bit images, which GDAL gives a black/white colour table) as
//! red, green, blue; signed bytes as GDAL 3.6 flags them (`PIXELTYPE=SIGNEDBYTE`); alpha bands;
//! per-dataset masks; and longitude/latitude from OSR.
//!
//! Datums as the native reader treats them: PROJ's best transformation to WGS 84 is used, but
//! never a "ballpark" one (which ignores the datum shift, as PROJ falls back to when the grids
//! a shift needs are not installed). Then longitude/latitude stay on the CRS's own datum and
//! outputs say so with `datum_note`, as they do for the pure-Rust reader.

use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use gdal::Dataset;
use gdal::raster::{ColorInterpretation, GdalDataType};
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, CoordTransformOptions, SpatialRef};

use super::georef::GeoRef;
use super::raster::{RasterInfo, RasterReader};
use super::source::RemoteOptions;
use super::tiff_reader::SampleKind;

/// A scene open in GDAL.
pub struct GdalReader {
    ds: Dataset,
    width: usize,
    block_h: u32,
    /// Band 1's colour table as (red, green, blue) per index: the scene is read as three bands.
    palette: Option<Vec<[f32; 3]>>,
    /// Band 1 holds signed bytes stored as GDAL's Byte.
    signed_bytes: bool,
    /// Whether a per-dataset mask (an internal mask, a .msk file) says which pixels are valid.
    mask: bool,
}

/// GDAL's name for a location: URLs become its virtual file systems' paths.
pub fn gdal_path(location: &str) -> String {
    for (scheme, vsi) in [
        ("https://", "/vsicurl/https://"),
        ("http://", "/vsicurl/http://"),
        ("s3://", "/vsis3/"),
        ("gs://", "/vsigs/"),
        ("az://", "/vsiaz/"),
        ("abfs://", "/vsiadls/"),
        ("azure://", "/vsiaz/"),
    ] {
        if let Some(rest) = location.strip_prefix(scheme) {
            return format!("{vsi}{rest}");
        }
    }
    location.to_string()
}

impl GdalReader {
    /// Opens `location` (a path, a URL, or a GDAL `/vsi…` path) and reads what a scene needs.
    pub fn open(location: &str, remote: &RemoteOptions) -> Result<(Self, RasterInfo)> {
        if remote.no_sign_request {
            // GDAL's way of the AWS CLI's --no-sign-request (and anonymous GCS).
            gdal::config::set_config_option("AWS_NO_SIGN_REQUEST", "YES")?;
            gdal::config::set_config_option("GS_NO_SIGN_REQUEST", "YES")?;
        }
        let ds =
            Dataset::open(gdal_path(location)).map_err(|e| anyhow!("GDAL cannot open it: {e}"))?;
        let (width, height) = ds.raster_size();
        let bands = ds.raster_count();
        if bands == 0 {
            bail!(
                "GDAL opens it, but it has no raster bands (a SAFE folder or container: name one of its subdatasets)"
            );
        }
        // The native reader's limit, for the same reason: a band of rows of a taller or wider
        // scene could not be held (GDAL's test files include a 2,048 × 1,073,741,824 one).
        let max = super::tiff_reader::MAX_SIDE as usize;
        if width == 0 || height == 0 || width > max || height > max {
            bail!("the image claims {width}×{height} pixels (scenes up to {max} a side are read)");
        }
        let b1 = ds.rasterband(1)?;
        let structure = |key: &str| {
            use gdal::Metadata;
            b1.metadata_item(key, "IMAGE_STRUCTURE")
        };
        let signed_bytes = structure("PIXELTYPE").as_deref() == Some("SIGNEDBYTE");
        let kind = match b1.band_type() {
            GdalDataType::UInt8 if signed_bytes => SampleKind::I8,
            GdalDataType::UInt8 => SampleKind::U8,
            GdalDataType::UInt16 => SampleKind::U16,
            GdalDataType::Int16 => SampleKind::I16,
            GdalDataType::UInt32 => SampleKind::U32,
            GdalDataType::Int32 => SampleKind::I32,
            GdalDataType::UInt64 => SampleKind::U64,
            GdalDataType::Int64 => SampleKind::I64,
            GdalDataType::Float32 => SampleKind::F32,
            GdalDataType::Float64 => SampleKind::F64,
            t => bail!("GDAL gives {t:?} samples, which are not read (complex or unknown)"),
        };
        let bits = structure("NBITS")
            .and_then(|b| b.parse().ok())
            .unwrap_or(match kind {
                SampleKind::U8 | SampleKind::I8 => 8,
                SampleKind::U16 | SampleKind::I16 | SampleKind::F16 => 16,
                SampleKind::U32 | SampleKind::I32 | SampleKind::F32 => 32,
                _ => 64,
            });
        let palette = match (b1.color_interpretation(), b1.color_table()) {
            (ColorInterpretation::PaletteIndex, Some(ct)) => Some(
                (0..ct.entry_count())
                    .map(|i| {
                        ct.entry_as_rgb(i)
                            .map(|e| [e.r as f32, e.g as f32, e.b as f32])
                            .unwrap_or([0.0; 3])
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let mut alpha = None;
        for i in 1..=bands {
            if ds.rasterband(i)?.color_interpretation() == ColorInterpretation::AlphaBand {
                alpha = Some(i - 1);
            }
        }
        let flags = b1.mask_flags()?;
        let mask = flags.is_per_dataset() && !flags.is_alpha() && !flags.is_nodata();
        let (_, block_h) = b1.block_size();
        let samples = if palette.is_some() { 3 } else { bands };
        let georef = georef(&ds);
        let nodata = b1.no_data_value();
        Ok((
            Self {
                ds,
                width,
                // A stretch's decimated read takes a block at a time: at most ~32 MB of f64.
                block_h: block_h
                    .clamp(1, ((32usize << 20) / (width * 8)).max(1))
                    .min(height) as u32,
                palette,
                signed_bytes,
                mask,
            },
            RasterInfo {
                width: width as u32,
                height: height as u32,
                samples,
                kind,
                bits,
                alpha,
                nodata,
                has_mask: mask,
                georef,
            },
        ))
    }

    /// Rows `y0..y0 + h` of 1-based band `band`, every `step`-th column and row, as f64.
    fn band_rows(&self, band: usize, y0: u32, h: u32, step: u32) -> Result<Vec<f64>> {
        let b = self.ds.rasterband(band)?;
        self.rows_of(&b, y0, h, step)
    }

    fn rows_of(
        &self,
        b: &gdal::raster::RasterBand,
        y0: u32,
        h: u32,
        step: u32,
    ) -> Result<Vec<f64>> {
        let w = self.width;
        if step == 1 {
            let buf = b.read_as::<f64>((0, y0 as isize), (w, h as usize), (w, h as usize), None)?;
            return Ok(buf.into_shape_and_vec().1);
        }
        // Every step-th row read alone and every step-th pixel kept: the same pixels as the
        // native reader's decimation (GDAL's own resampling would pick others), and memory of
        // one row, never of the rows skipped.
        let out_w = w.div_ceil(step as usize);
        let mut out = Vec::with_capacity(out_w * h.div_ceil(step) as usize);
        for r in (y0..y0 + h).step_by(step as usize) {
            let row = b.read_as::<f64>((0, r as isize), (w, 1), (w, 1), None)?;
            out.extend(row.data().iter().step_by(step as usize));
        }
        Ok(out)
    }
}

impl RasterReader for GdalReader {
    fn chunk_height(&self) -> u32 {
        self.block_h
    }

    fn read_rows(
        &mut self,
        y0: u32,
        h: u32,
        bands: &[usize],
        step: u32,
    ) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        let step = step.max(1);
        let nb = bands.len();
        let mut out: Vec<f32> = Vec::new();
        // A palette scene's three bands all come from band 1's indices.
        let indices = match &self.palette {
            Some(_) => Some(self.band_rows(1, y0, h, step)?),
            None => None,
        };
        for (k, &b) in bands.iter().enumerate() {
            let values: Vec<f32> = match (&self.palette, &indices) {
                (Some(p), Some(ix)) => ix
                    .iter()
                    .map(|&i| p.get(i as usize).map_or(0.0, |c| c[b.min(2)]))
                    .collect(),
                _ => {
                    let v = self.band_rows(b + 1, y0, h, step)?;
                    if self.signed_bytes {
                        v.into_iter().map(|x| x as u8 as i8 as f32).collect()
                    } else {
                        v.into_iter().map(|x| x as f32).collect()
                    }
                }
            };
            if out.is_empty() {
                out = vec![0.0; values.len() * nb];
            }
            for (p, v) in values.into_iter().enumerate() {
                out[p * nb + k] = v;
            }
        }
        let mask = if self.mask {
            let b1 = self.ds.rasterband(1)?;
            let m = b1.open_mask_band()?;
            Some(
                self.rows_of(&m, y0, h, step)?
                    .into_iter()
                    .map(|v| v > 0.0)
                    .collect(),
            )
        } else {
            None
        };
        Ok((out, mask))
    }
}

/// The dataset's georeferencing through OSR, or why there is none.
fn georef(ds: &Dataset) -> std::result::Result<GeoRef, String> {
    let transform = ds.geo_transform().map_err(|_| {
        if unsafe { gdal_sys::GDALGetGCPCount(ds.c_dataset()) } > 0 {
            "ground control points only (no geotransform), which are not used".to_string()
        } else {
            "no geotransform".to_string()
        }
    })?;
    let srs = match ds.spatial_ref() {
        Ok(s) => s,
        Err(_) => return Err("a geotransform but no CRS: the CRS is unknown".into()),
    };
    GeoRef::from_gdal(transform, srs).map_err(|e| format!("{e:#}"))
}

/// Longitude/latitude from a CRS through OSR, shared by the clones of a [`GeoRef`].
#[derive(Clone)]
pub struct OsrLonLat {
    ct: Arc<Mutex<SendTransform>>,
}

/// An OSR transformation moved between threads, used by one at a time (the mutex): GDAL's
/// coordinate transformations may not be used concurrently but are not tied to the thread that
/// made them (GDAL ≥ 3 gives each thread its own PROJ context).
struct SendTransform(CoordTransform);
// SAFETY: see above; the value is only reached through `OsrLonLat`'s mutex.
unsafe impl Send for SendTransform {}

impl OsrLonLat {
    /// The transformation to WGS 84 longitude/latitude; or, when PROJ has only a ballpark one,
    /// to the CRS's own geographic CRS with a note saying so.
    pub fn new(srs: &SpatialRef) -> Result<(Self, Option<String>)> {
        let mut source = srs.clone();
        source.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut wgs84 = SpatialRef::from_epsg(4326)?;
        wgs84.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut opts = CoordTransformOptions::new()?;
        opts.set_ballpark_allowed(false)?;
        let wrap = |ct| Self {
            ct: Arc::new(Mutex::new(SendTransform(ct))),
        };
        // Its failure is an answer here (no exact transformation), said in datum_note below.
        if let Ok(ct) = quietly(|| CoordTransform::new_with_options(&source, &wgs84, &opts)) {
            return Ok((wrap(ct), None));
        }
        let mut own = srs.geog_cs()?;
        own.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let ct = CoordTransform::new(&source, &own)?;
        let datum = own.name().unwrap_or_else(|| "its own datum".into());
        Ok((
            wrap(ct),
            Some(format!(
                "longitude/latitude are on {datum}, not WGS 84: PROJ has no transformation to \
                 WGS 84 here that applies the datum shift (its grids are not installed)"
            )),
        ))
    }

    pub fn lon_lat(&self, x: f64, y: f64) -> Result<(f64, f64)> {
        let ct = self.ct.lock().unwrap_or_else(|e| e.into_inner());
        let (mut xs, mut ys, mut zs) = ([x], [y], [0.0]);
        if quietly(|| ct.0.transform_coords(&mut xs, &mut ys, &mut zs)).is_err()
            || !(xs[0].is_finite() && ys[0].is_finite())
        {
            // OSR fails (or gives infinities) where PROJ has no inverse: off the Earth.
            return Err(anyhow::Error::new(super::georef::OutsideProjection));
        }
        Ok((xs[0], ys[0]))
    }
}

/// `f` with GDAL's error messages silenced: for calls whose failure skyscribe reports itself
/// (GDAL would print "ERROR 1: Point outside of projection domain" for every tile off the
/// Earth).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: the handler stack is per thread; every push is popped before returning.
    unsafe { gdal_sys::CPLPushErrorHandler(Some(gdal_sys::CPLQuietErrorHandler)) };
    let out = f();
    unsafe { gdal_sys::CPLPopErrorHandler() };
    out
}
