//! The one seam between a scene and whatever reads its pixels: a [`RasterReader`] hands out
//! bands of rows as f32 samples, and [`RasterInfo`] says what it opened (size, bands, sample
//! type, nodata, alpha, mask, georeferencing). Three readers stand behind it — the pure-Rust
//! TIFF reader ([`super::tiff_reader`]), a stack of single-band files on one grid
//! ([`BandStack`], how STAC items publish Sentinel-2's and Landsat's bands), and GDAL with the
//! `gdal` feature (`super::gdal_reader`) — and nothing above [`super::Scene`] can tell them
//! apart.

use anyhow::{Result, bail};

use super::georef::GeoRef;
use super::tiff_reader::SampleKind;

/// Bands of rows, decoded.
pub trait RasterReader: Send {
    /// The height of a strip or tile: reading rows in multiples of it decodes each stored block
    /// once.
    fn chunk_height(&self) -> u32;

    /// Rows `y0..y0 + h` of the bands `bands` (0-based), every `step`-th column and row,
    /// pixel-interleaved as f32; and, per pixel, whether an internal mask leaves it visible
    /// (`None`: no mask). Rows are asked for top to bottom.
    fn read_rows(
        &mut self,
        y0: u32,
        h: u32,
        bands: &[usize],
        step: u32,
    ) -> Result<(Vec<f32>, Option<Vec<bool>>)>;

    /// Reduced-resolution copies (a COG's overviews) as (width, height), largest first.
    fn overviews(&self) -> Vec<(u32, u32)> {
        vec![]
    }

    /// Overview `i` of [`RasterReader::overviews`], as a reader of its own (same bands).
    fn open_overview(&self, i: usize) -> Result<Box<dyn RasterReader>> {
        bail!("no overview {i}")
    }
}

/// What a reader found when it opened a raster.
pub struct RasterInfo {
    pub width: u32,
    pub height: u32,
    /// Bands as read (a palette image has 3: red, green, blue).
    pub samples: usize,
    pub kind: SampleKind,
    /// Bits per sample as stored (1, 2 and 4-bit samples read as 0..2^bits − 1).
    pub bits: u16,
    /// `Some(i)`: band `i` (0-based) is an alpha band.
    pub alpha: Option<usize>,
    pub nodata: Option<f64>,
    pub has_mask: bool,
    /// Where the pixels are on Earth, or why that is not known.
    pub georef: std::result::Result<GeoRef, String>,
}

/// Several rasters on one grid read as the bands of one: each part's bands follow the previous
/// part's. STAC items publish Sentinel-2 and Landsat as one COG per band (`red`, `green`,
/// `blue`), which a scan shows as one RGB scene.
pub struct BandStack {
    parts: Vec<(Box<dyn RasterReader>, usize)>,
}

impl BandStack {
    /// Stacks opened parts (with their names, for errors): every part must have the first one's
    /// size and georeferencing, and none may carry alpha or a mask (which band's would hide
    /// a pixel?).
    pub fn new(
        parts: Vec<(String, Box<dyn RasterReader>, RasterInfo)>,
    ) -> Result<(Self, RasterInfo)> {
        let mut it = parts.into_iter();
        let Some((first_name, first_reader, first)) = it.next() else {
            bail!("a band stack needs at least one raster");
        };
        let mut info = RasterInfo {
            alpha: None,
            has_mask: false,
            ..first
        };
        let mut readers = vec![(first_reader, info.samples)];
        for (name, reader, part) in it {
            if (part.width, part.height) != (info.width, info.height) {
                bail!(
                    "{name} is {}×{} px but {first_name} is {}×{}: bands from separate files \
                     must share one grid",
                    part.width,
                    part.height,
                    info.width,
                    info.height
                );
            }
            let same_grid = match (&part.georef, &info.georef) {
                (Ok(a), Ok(b)) => {
                    a.transform
                        .iter()
                        .zip(&b.transform)
                        .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
                        && a.crs_name == b.crs_name
                }
                (Err(_), Err(_)) => true,
                _ => false,
            };
            if !same_grid {
                bail!(
                    "{name} is not on {first_name}'s grid (geotransform or CRS differ): bands \
                     from separate files must share one grid"
                );
            }
            if part.kind != info.kind || part.bits != info.bits {
                bail!(
                    "{name} holds {} samples but {first_name} holds {}: stacked bands must share \
                     one sample type",
                    part.kind.name(),
                    info.kind.name()
                );
            }
            if part.nodata != info.nodata
                && !(part.nodata.is_some_and(f64::is_nan) && info.nodata.is_some_and(f64::is_nan))
            {
                bail!(
                    "{name} has nodata {:?} but {first_name} has {:?}: stacked bands must agree",
                    part.nodata,
                    info.nodata
                );
            }
            info.samples += part.samples;
            readers.push((reader, part.samples));
        }
        Ok((Self { parts: readers }, info))
    }

    /// Which part holds stacked band `b`, and its band there.
    fn locate(&self, mut b: usize) -> Option<(usize, usize)> {
        for (i, (_, n)) in self.parts.iter().enumerate() {
            if b < *n {
                return Some((i, b));
            }
            b -= n;
        }
        None
    }
}

impl RasterReader for BandStack {
    fn chunk_height(&self) -> u32 {
        // The largest block of any part: a multiple of it is near a multiple of each.
        self.parts
            .iter()
            .map(|(r, _)| r.chunk_height())
            .max()
            .unwrap_or(1)
    }

    fn read_rows(
        &mut self,
        y0: u32,
        h: u32,
        bands: &[usize],
        step: u32,
    ) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        let nb = bands.len();
        let mut out: Vec<f32> = Vec::new();
        for (k, &b) in bands.iter().enumerate() {
            let Some((part, local)) = self.locate(b) else {
                bail!("band {} is outside the stack's bands", b + 1);
            };
            let (values, _) = self.parts[part].0.read_rows(y0, h, &[local], step)?;
            if out.is_empty() {
                out = vec![0.0; values.len() * nb];
            }
            for (p, v) in values.into_iter().enumerate() {
                out[p * nb + k] = v;
            }
        }
        Ok((out, None))
    }
}
