//! Whole scenes, read a band of rows at a time: GeoTIFF / BigTIFF (strips or tiles, any number
//! of 8/16/32-bit or float bands, the usual compressions) through [`tiff_reader`], any other
//! image the decoder reads (PNG, JPEG, …) whole. A scene knows where it is on Earth
//! ([`georef`]), which pixels hold no data (GDAL_NODATA, an alpha band, an internal mask), and
//! how its bands become 8-bit red, green and blue (band choice and a stretch measured on a
//! decimated read). [`geotiff_write`] writes rasters on a scene's grid and CRS.
//!
//! Memory follows the scene's width, not its area: a caller walks the scene top to bottom in
//! bands of rows ([`Scene::rgb_rows`]); only the strips or tiles those rows touch are decoded.

pub mod crs;
#[cfg(feature = "gdal")]
mod gdal_reader;
pub mod georef;
pub mod geotiff_write;
pub mod raster;
pub mod source;
pub mod stac;
mod tiff_chunk;
mod tiff_reader;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

pub use georef::GeoRef;
pub use tiff_reader::SampleKind;

use crate::imagery::{self, DecodeOptions, RgbImage};
use raster::{BandStack, RasterInfo, RasterReader};
use tiff_reader::TiffReader;

/// How a band's values become 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stretch {
    /// 8-bit data as it is; deeper data [`Stretch::Percentile`].
    #[default]
    Auto,
    /// The band's 2nd to 98th percentile (of valid pixels, from a decimated read) spans 0..=255,
    /// as QGIS shows 16-bit and float scenes.
    Percentile,
    /// The band's minimum to maximum (of the decimated read).
    MinMax,
    /// Values as they are, clamped to 0..=255.
    None,
}

impl std::str::FromStr for Stretch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Stretch::Auto),
            "p2-98" => Ok(Stretch::Percentile),
            "minmax" => Ok(Stretch::MinMax),
            "none" => Ok(Stretch::None),
            _ => Err(format!("{s:?}: use p2-98, minmax, none or auto")),
        }
    }
}

/// How to read a scene.
#[derive(Debug, Clone, Default)]
pub struct SceneOptions {
    /// 1-based bands to show as red, green, blue (one band: grey). Default: 1, 2, 3 (or the
    /// single band of a grey scene).
    pub bands: Option<Vec<usize>>,
    pub stretch: Stretch,
    /// How scenes named by URL (https://, s3://, gs://, az://) are reached.
    pub remote: source::RemoteOptions,
    /// Which reader opens the scene.
    pub reader: ReaderChoice,
}

/// Which reader opens a scene (see [`raster`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaderChoice {
    /// TIFFs and URLs by the pure-Rust reader; with the `gdal` feature every other file (JPEG
    /// 2000, VRT, NetCDF, a SAFE folder's XML, `/vsi…` paths) by GDAL, without it PNG, JPEG and
    /// the other images the decoder reads, whole and in pixel coordinates.
    #[default]
    Auto,
    /// The pure-Rust reader (and the image decoder for non-TIFF files).
    Native,
    /// GDAL for everything (a build with the `gdal` feature).
    Gdal,
}

impl std::str::FromStr for ReaderChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ReaderChoice::Auto),
            "native" => Ok(ReaderChoice::Native),
            "gdal" => Ok(ReaderChoice::Gdal),
            _ => Err(format!("{s:?}: use auto, native or gdal")),
        }
    }
}

/// Whether this build reads scenes through GDAL too (the `gdal` cargo feature).
pub const HAS_GDAL: bool = cfg!(feature = "gdal");

enum Source {
    Raster(Box<dyn RasterReader>),
    Decoded(RgbImage),
}

/// An open scene.
pub struct Scene {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Bands in the file (alpha included).
    pub band_count: usize,
    pub kind: SampleKind,
    pub georef: Option<GeoRef>,
    /// Why a scene has no georeferencing (no GeoTIFF tags, GeoKeys without a geotransform,
    /// ground control points only, a geotransform without a CRS).
    pub no_georef: Option<String>,
    /// Bits per sample as stored (1, 2 and 4-bit samples read as 0..2^bits − 1).
    pub bits: u16,
    pub nodata: Option<f64>,
    /// The alpha band (0-based), if the file has one.
    pub alpha: Option<usize>,
    /// Whether an internal mask says which pixels are valid.
    pub has_mask: bool,
    /// The 0-based bands shown as red, green, blue.
    pub rgb_bands: [usize; 3],
    /// Per shown band, the value mapped to 0 and the value mapped to 255.
    pub ranges: [(f32, f32); 3],
    /// What a reader should know about how the picture was made (constant bands, the band
    /// choice), for the caller to show.
    pub notes: Vec<String>,
    source: Source,
}

/// A band of rows in 8-bit RGB, with each pixel's validity.
pub struct RgbRows {
    pub y0: u32,
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
    pub valid: Vec<bool>,
}

impl RgbRows {
    /// The `(x, y, w, h)` tile (scene pixels) as an image, and whether any pixel of it is valid.
    pub fn tile(&self, (x, y, w, h): (u32, u32, u32, u32)) -> Result<(RgbImage, bool)> {
        if y < self.y0 || y + h > self.y0 + self.height || x + w > self.width {
            bail!(
                "tile {x},{y},{w},{h} is outside rows {}..{}",
                self.y0,
                self.y0 + self.height
            );
        }
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        let mut any = false;
        for row in (y - self.y0)..(y - self.y0 + h) {
            let start = (row * self.width + x) as usize;
            pixels.extend_from_slice(&self.pixels[start * 3..(start + w as usize) * 3]);
            any |= self.valid[start..start + w as usize].iter().any(|&v| v);
        }
        Ok((
            RgbImage {
                width: w,
                height: h,
                pixels,
            },
            any,
        ))
    }
}

/// The error of a tile with no valid pixel (GDAL_NODATA, alpha or mask hide all of it):
/// callers count such tiles apart from unreadable ones.
#[derive(Debug)]
pub struct NodataTile;

impl std::fmt::Display for NodataTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the tile is wholly nodata")
    }
}

impl std::error::Error for NodataTile {}

/// Whether a file starts like a TIFF or BigTIFF (those are read window by window).
pub fn is_tiff(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && matches!(&head, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
}

/// Tiles of scenes for many threads at once (the batched image pipeline's loaders): the scene
/// read last and its last band of rows are kept, so tiles asked for in row order decode each
/// part of the scene about once, and memory stays at one band of rows.
#[derive(Default)]
pub struct SharedTiles {
    state: std::sync::Mutex<Option<(Scene, Option<RgbRows>)>>,
}

impl SharedTiles {
    /// The `(x, y, w, h)` tile of the scene at `path`, or `None` when it is wholly nodata.
    pub fn tile(
        &self,
        path: &Path,
        (x, y, w, h): (u32, u32, u32, u32),
        opts: &SceneOptions,
    ) -> Result<Option<RgbImage>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.as_ref().is_none_or(|(s, _)| s.path != path) {
            *state = None; // the previous scene's memory goes before the next is opened
            *state = Some((Scene::open(path, opts)?, None));
        }
        let (scene, rows) = state.as_mut().expect("opened above");
        if !rows.as_ref().is_some_and(|r| r.y0 == y && r.height == h) {
            *rows = None;
            *rows = Some(scene.rgb_rows(y, h, 1)?);
        }
        let (img, any) = rows
            .as_ref()
            .expect("read above")
            .tile((x, y, w, h))
            .with_context(|| path.display().to_string())?;
        Ok(any.then_some(img))
    }
}

/// How many pixels the decimated read behind the stretch looks at, at most.
const STATS_PIXELS: u64 = 1 << 20;

impl Scene {
    /// Opens a scene: reads its header, georeferencing and nodata, checks the bands, and
    /// measures the stretch. Every error names the file.
    pub fn open(path: &Path, opts: &SceneOptions) -> Result<Self> {
        Self::open_inner(path, opts).with_context(|| path.display().to_string())
    }

    /// Opens rasters on one grid (files or URLs) as the bands of one scene called `name`, each
    /// part's bands after the previous part's: a STAC item's `red`, `green` and `blue` COGs.
    pub fn open_bands(name: &str, parts: &[String], opts: &SceneOptions) -> Result<Self> {
        let inner = || -> Result<Self> {
            let mut opened = Vec::with_capacity(parts.len());
            for p in parts {
                let (reader, info) = open_raster(p, opts).with_context(|| p.clone())?;
                opened.push((p.clone(), reader, info));
            }
            let (stack, info) = BandStack::new(opened)?;
            Self::from_raster(Path::new(name), Box::new(stack), info, opts)
        };
        inner().with_context(|| name.to_string())
    }

    fn open_inner(path: &Path, opts: &SceneOptions) -> Result<Self> {
        let location = path.to_string_lossy();
        if use_gdal(&location, opts)? {
            let (reader, info) = open_raster(&location, opts)?;
            return Self::from_raster(path, reader, info, opts);
        }
        let mut head = [0u8; 4];
        if source::is_remote(&location) {
            // Over the network only GeoTIFFs are read, window by window (a COG's point).
            head = *b"II*\0";
        } else {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
            let n = f.read(&mut head).map_err(|e| anyhow!("cannot read: {e}"))?;
            if n < 4 {
                bail!("not an image: {n} bytes");
            }
        }
        if matches!(&head, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+") {
            let (reader, info) = open_raster(&location, opts)?;
            return Self::from_raster(path, reader, info, opts);
        }
        let decode = DecodeOptions {
            bands: opts.bands.clone(),
            ..DecodeOptions::default()
        };
        let img = imagery::load_rgb(path, &decode).map_err(|e| anyhow!("{e:#}"))?;
        let mut scene = Scene {
            path: path.to_path_buf(),
            width: img.width,
            height: img.height,
            band_count: 3,
            kind: SampleKind::U8,
            georef: None,
            no_georef: Some("not a GeoTIFF".into()),
            bits: 8,
            nodata: None,
            alpha: None,
            has_mask: false,
            rgb_bands: [0, 1, 2],
            ranges: [(0.0, 255.0); 3],
            notes: vec![],
            source: Source::Decoded(img),
        };
        if !matches!(opts.stretch, Stretch::Auto | Stretch::None) {
            // Said, not silently dropped: these formats decode to 8 bits already.
            scene
                .notes
                .push("--stretch applies to TIFF scenes; this image is used as it is".into());
        }
        Ok(scene)
    }

    /// A scene over an opened raster: bands chosen, stretch measured.
    fn from_raster(
        path: &Path,
        reader: Box<dyn RasterReader>,
        info: RasterInfo,
        opts: &SceneOptions,
    ) -> Result<Self> {
        let (georef, no_georef) = match info.georef {
            Ok(g) => (Some(g), None),
            Err(why) => (None, Some(why)),
        };
        let mut scene = Scene {
            path: path.to_path_buf(),
            width: info.width,
            height: info.height,
            band_count: info.samples,
            kind: info.kind,
            georef,
            no_georef,
            bits: info.bits,
            nodata: info.nodata,
            alpha: info.alpha,
            has_mask: info.has_mask,
            rgb_bands: [0; 3],
            ranges: [(0.0, 255.0); 3],
            notes: vec![],
            source: Source::Raster(reader),
        };
        scene.choose_bands(opts)?;
        scene.measure_stretch(opts.stretch)?;
        Ok(scene)
    }

    fn choose_bands(&mut self, opts: &SceneOptions) -> Result<()> {
        let colour_bands = self.band_count - usize::from(self.alpha.is_some());
        let (bands, defaulted) = imagery::rgb_bands(
            opts.bands.as_deref(),
            self.band_count,
            colour_bands,
            "scene",
        )?;
        if defaulted {
            self.notes.push(format!(
                "{colour_bands} bands: bands 1, 2, 3 shown as red, green, blue (choose others \
                 with --bands, e.g. 4,3,2 for Sentinel-2's true colour)"
            ));
        }
        self.rgb_bands = bands;
        Ok(())
    }

    /// The bands a row read asks for: the shown ones, then alpha.
    fn read_bands(&self) -> Vec<usize> {
        let mut b = self.rgb_bands.to_vec();
        b.extend(self.alpha);
        b
    }

    fn measure_stretch(&mut self, stretch: Stretch) -> Result<()> {
        if stretch == Stretch::Auto && self.bits < 8 {
            // 1, 2 and 4-bit samples (masks, classes): their whole range spans 0..=255.
            let top = ((1u32 << self.bits) - 1) as f32;
            self.ranges = [(0.0, top); 3];
            return Ok(());
        }
        let stretch = match stretch {
            Stretch::Auto if self.kind == SampleKind::U8 => Stretch::None,
            Stretch::Auto => Stretch::Percentile,
            s => s,
        };
        if stretch == Stretch::None {
            self.ranges = [(0.0, 255.0); 3];
            return Ok(());
        }
        let bands = self.read_bands();
        let Source::Raster(reader) = &mut self.source else {
            return Ok(());
        };
        // A decimated read: every `step`-th pixel of at most 32 evenly spread bands of rows.
        let area = self.width as u64 * self.height as u64;
        let step = ((area as f64 / STATS_PIXELS as f64).sqrt().ceil() as u32).max(1);
        let block = reader.chunk_height().max(step).min(self.height);
        let blocks = self.height.div_ceil(block);
        let picks = blocks.min(32);
        let nb = bands.len();
        let mut values: [Vec<f32>; 3] = Default::default();
        for i in 0..picks {
            let bi = (i as u64 * blocks as u64 / picks as u64) as u32;
            let y0 = bi * block;
            let h = block.min(self.height - y0);
            let (data, mask) = reader.read_rows(y0, h, &bands, step)?;
            for (p, px) in data.chunks_exact(nb).enumerate() {
                if !valid_pixel(px, &mask, p, self.nodata, self.alpha.is_some()) {
                    continue;
                }
                for (v, &x) in values.iter_mut().zip(px) {
                    if x.is_finite() && !is_nodata(x, self.nodata) {
                        v.push(x);
                    }
                }
            }
        }
        for (c, v) in values.iter_mut().enumerate() {
            if v.is_empty() {
                self.notes.push(format!(
                    "band {} has no valid pixels in a decimated read",
                    self.rgb_bands[c] + 1
                ));
                self.ranges[c] = (0.0, 1.0);
                continue;
            }
            let (lo, hi) = match stretch {
                Stretch::MinMax => v
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    }),
                _ => (percentile(v, 0.02), percentile(v, 0.98)),
            };
            if hi <= lo {
                self.notes.push(format!(
                    "band {} is constant ({lo}) where sampled: shown as black",
                    self.rgb_bands[c] + 1
                ));
                self.ranges[c] = (lo, lo + 1.0);
            } else {
                self.ranges[c] = (lo, hi);
            }
        }
        Ok(())
    }

    /// Rows `y0..y0 + h`, every `step`-th pixel, in 8-bit RGB with each pixel's validity
    /// (invalid pixels are black). Call with `y0` never decreasing.
    pub fn rgb_rows(&mut self, y0: u32, h: u32, step: u32) -> Result<RgbRows> {
        self.rgb_rows_inner(y0, h, step)
            .with_context(|| format!("{}: rows {y0}..{}", self.path.display(), y0 + h))
    }

    fn rgb_rows_inner(&mut self, y0: u32, h: u32, step: u32) -> Result<RgbRows> {
        let step = step.max(1);
        let bands = self.read_bands();
        if h == 0 || y0 + h > self.height {
            bail!("outside the {}-row scene", self.height);
        }
        let out_w = self.width.div_ceil(step);
        let out_h = h.div_ceil(step);
        let n = (out_w * out_h) as usize;
        match &mut self.source {
            Source::Decoded(img) => {
                let mut pixels = Vec::with_capacity(n * 3);
                for r in (y0..y0 + h).step_by(step as usize) {
                    for c in (0..img.width).step_by(step as usize) {
                        let i = ((r * img.width + c) * 3) as usize;
                        pixels.extend_from_slice(&img.pixels[i..i + 3]);
                    }
                }
                Ok(RgbRows {
                    y0,
                    width: out_w,
                    height: out_h,
                    pixels,
                    valid: vec![true; n],
                })
            }
            Source::Raster(reader) => {
                let (data, mask) = reader.read_rows(y0, h, &bands, step)?;
                let (pixels, valid) = self.to_rgb(&data, &mask, bands.len());
                Ok(RgbRows {
                    y0,
                    width: out_w,
                    height: out_h,
                    pixels,
                    valid,
                })
            }
        }
    }

    /// Samples (pixel-interleaved, `nb` bands: the shown ones, then alpha) in 8-bit RGB by the
    /// scene's stretch, with each pixel's validity (invalid pixels are black).
    fn to_rgb(&self, data: &[f32], mask: &Option<Vec<bool>>, nb: usize) -> (Vec<u8>, Vec<bool>) {
        let n = data.len() / nb.max(1);
        let mut pixels = Vec::with_capacity(n * 3);
        let mut valid = Vec::with_capacity(n);
        // Per band: value → (value − lo) · 255 / (hi − lo), rounded half up, clamped.
        let scales = self.ranges.map(|(lo, hi)| (lo, 255.0 / (hi - lo)));
        let all_valid = mask.is_none() && self.alpha.is_none() && self.nodata.is_none();
        for (p, px) in data.chunks_exact(nb).enumerate() {
            let ok = all_valid || valid_pixel(px, mask, p, self.nodata, self.alpha.is_some());
            valid.push(ok);
            if !ok {
                pixels.extend_from_slice(&[0; 3]);
                continue;
            }
            for (&(lo, k), &v) in scales.iter().zip(px) {
                let x = (v - lo) * k;
                // NaN fails every comparison and becomes 0, like nodata.
                let byte = if is_nodata(v, self.nodata) {
                    0
                } else if x >= 254.5 {
                    255
                } else if x > 0.0 {
                    (x + 0.5) as u8
                } else {
                    0
                };
                pixels.push(byte);
            }
        }
        (pixels, valid)
    }

    /// The preview from the smallest overview at least as large as it (a COG's point: a
    /// picture of the whole scene without reading every full-resolution tile), each preview
    /// pixel taken from the overview pixel over it; `None` when there is no such overview.
    fn preview_from_overview(&mut self, step: u32) -> Result<Option<RgbImage>> {
        let (out_w, out_h) = (self.width.div_ceil(step), self.height.div_ceil(step));
        let bands = self.read_bands();
        let Source::Raster(reader) = &self.source else {
            return Ok(None);
        };
        let best = reader
            .overviews()
            .into_iter()
            .enumerate()
            .filter(|(_, (w, h))| *w >= out_w && *h >= out_h)
            .min_by_key(|(_, (w, _))| *w);
        let Some((i, (ow, oh))) = best else {
            return Ok(None);
        };
        let mut overview = reader.open_overview(i)?;
        // Preview pixel (c, r) shows scene pixel (c·step, r·step): overview pixel
        // (c·step·ow/width, r·step·oh/height).
        let col = |c: u32| ((c as u64 * step as u64 * ow as u64) / self.width as u64) as usize;
        let row = |r: u32| ((r as u64 * step as u64 * oh as u64) / self.height as u64) as u32;
        let cols: Vec<usize> = (0..out_w).map(|c| col(c).min(ow as usize - 1)).collect();
        let nb = bands.len();
        let block = overview.chunk_height().clamp(1, oh);
        let mut data = Vec::with_capacity(out_w as usize * out_h as usize * nb);
        let mut mask_all: Option<Vec<bool>> = None;
        let mut r = 0;
        let mut y0 = 0;
        while r < out_h && y0 < oh {
            let h = block.min(oh - y0);
            let (values, mask) = overview.read_rows(y0, h, &bands, 1)?;
            while r < out_h && row(r).min(oh - 1) < y0 + h {
                let src_row = (row(r).min(oh - 1) - y0) as usize;
                for &c in &cols {
                    let p = src_row * ow as usize + c;
                    data.extend_from_slice(&values[p * nb..(p + 1) * nb]);
                    if let Some(m) = &mask {
                        mask_all.get_or_insert_with(Vec::new).push(m[p]);
                    }
                }
                r += 1;
            }
            y0 += h;
        }
        let (pixels, _) = self.to_rgb(&data, &mask_all, nb);
        Ok(Some(RgbImage {
            width: out_w,
            height: out_h,
            pixels,
        }))
    }

    /// The whole scene at most `max_side` pixels on its longer side (every k-th pixel; from an
    /// overview when the file has one at least that large), read top to bottom in bands of
    /// rows; and k.
    pub fn preview(&mut self, max_side: u32) -> Result<(RgbImage, u32)> {
        let step = self.width.max(self.height).div_ceil(max_side.max(1)).max(1);
        if step > 1
            && let Some(img) = self
                .preview_from_overview(step)
                .with_context(|| format!("{}: overview", self.path.display()))?
        {
            return Ok((img, step));
        }
        let block = (step * 64).min(self.height);
        let mut pixels = Vec::new();
        let mut y = 0;
        let mut rows = 0;
        while y < self.height {
            let h = block.min(self.height - y);
            let r = self.rgb_rows(y, h, step)?;
            pixels.extend_from_slice(&r.pixels);
            rows += r.height;
            y += h;
        }
        Ok((
            RgbImage {
                width: self.width.div_ceil(step),
                height: rows,
                pixels,
            },
            step,
        ))
    }

    /// What the file is, in one line for people.
    pub fn describe(&self) -> String {
        let crs = match (&self.georef, &self.no_georef) {
            (Some(g), _) => g.crs_name.clone(),
            (None, Some(why)) => format!("no georeferencing: {why}"),
            (None, None) => "no georeferencing".into(),
        };
        format!(
            "{}×{} px, {} band(s) {}, {crs}",
            self.width,
            self.height,
            self.band_count,
            self.kind.name()
        )
    }

    /// Rows `y0..y0 + h` of every band as stored (pixel-interleaved f32), with each pixel's
    /// validity by the internal mask (`None`: no mask). For tools and tests that need the data
    /// itself, not a picture of it.
    pub fn values(&mut self, y0: u32, h: u32) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        let all: Vec<usize> = (0..self.band_count).collect();
        match &mut self.source {
            Source::Raster(r) => r.read_rows(y0, h, &all, 1),
            Source::Decoded(img) => {
                let start = (y0 * img.width * 3) as usize;
                let end = ((y0 + h) * img.width * 3) as usize;
                let px = img
                    .pixels
                    .get(start..end)
                    .ok_or_else(|| anyhow!("rows outside"))?;
                Ok((px.iter().map(|&v| v as f32).collect(), None))
            }
        }
    }
}

/// Whether `location` is read through GDAL (see [`ReaderChoice`]); refuses what this build
/// cannot read at all.
fn use_gdal(location: &str, opts: &SceneOptions) -> Result<bool> {
    let vsi = location.starts_with("/vsi");
    match opts.reader {
        ReaderChoice::Gdal if !HAS_GDAL => bail!(
            "--reader gdal: this build has no GDAL (build with `cargo build --release --features \
             gdal`, which needs libgdal-dev)"
        ),
        ReaderChoice::Gdal => Ok(true),
        _ if vsi && !HAS_GDAL => bail!(
            "GDAL's virtual file systems (/vsicurl/, /vsis3/, /vsizip/, …) need a build with the \
             gdal feature; URLs (https://, s3://, gs://, az://) are read without it"
        ),
        ReaderChoice::Native if vsi => {
            bail!("--reader native cannot read GDAL's virtual file systems: use --reader gdal")
        }
        ReaderChoice::Native => Ok(false),
        ReaderChoice::Auto => Ok(
            HAS_GDAL && (vsi || (!source::is_remote(location) && !is_tiff(Path::new(location))))
        ),
    }
}

/// Opens one raster (a file, a URL, or with GDAL anything GDAL opens) through the reader
/// `opts` chooses.
fn open_raster(location: &str, opts: &SceneOptions) -> Result<(Box<dyn RasterReader>, RasterInfo)> {
    #[cfg(feature = "gdal")]
    if use_gdal(location, opts)? {
        let (r, info) = gdal_reader::GdalReader::open(location, &opts.remote)?;
        return Ok((Box::new(r), info));
    }
    #[cfg(not(feature = "gdal"))]
    use_gdal(location, opts)?;
    let (reader, info) = TiffReader::open(Path::new(location), &opts.remote)?;
    Ok((Box::new(reader), info))
}

fn is_nodata(v: f32, nodata: Option<f64>) -> bool {
    match nodata {
        Some(n) if n.is_nan() => v.is_nan(),
        Some(n) => v as f64 == n || v == n as f32,
        None => false,
    }
}

/// A pixel is valid unless the mask or alpha hides it, or every shown band is nodata.
fn valid_pixel(
    px: &[f32],
    mask: &Option<Vec<bool>>,
    i: usize,
    nodata: Option<f64>,
    alpha: bool,
) -> bool {
    if let Some(m) = mask
        && !m[i]
    {
        return false;
    }
    if alpha && px[3] == 0.0 {
        return false;
    }
    !(nodata.is_some() && px[..3].iter().all(|&v| is_nodata(v, nodata)))
}

/// The `q` quantile of `v` (nearest rank; reorders `v`).
fn percentile(v: &mut [f32], q: f64) -> f32 {
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f32> = (0..101).map(|i| i as f32).collect();
        assert_eq!(percentile(&mut v, 0.02), 2.0);
        assert_eq!(percentile(&mut v, 0.98), 98.0);
    }

    #[test]
    fn nodata_hides_a_pixel_only_when_every_shown_band_is_nodata() {
        assert!(!valid_pixel(&[0.0, 0.0, 0.0], &None, 0, Some(0.0), false));
        assert!(valid_pixel(&[0.0, 5.0, 0.0], &None, 0, Some(0.0), false));
        assert!(!valid_pixel(&[9.0, 9.0, 9.0, 0.0], &None, 0, None, true));
        assert!(!valid_pixel(
            &[9.0, 9.0, 9.0],
            &Some(vec![false]),
            0,
            None,
            false
        ));
        assert!(!valid_pixel(
            &[f32::NAN; 3],
            &None,
            0,
            Some(f64::NAN),
            false
        ));
    }
}
