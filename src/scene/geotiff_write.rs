//! GeoTIFF files on a scene's grid: float bands with names (a class map's scores) and a
//! one-band palette image (a class map's argmax), each with the geotransform and the scene's own
//! GeoKeys, written atomically. Built from the `tiff` crate's directory encoder: its image
//! encoder fixes the band count at compile time, and a class map has one band per label.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use tiff::encoder::TiffEncoder;
use tiff::tags::Tag;

use super::GeoRef;

/// Where a raster lies: a geotransform (GDAL's order) and the CRS's GeoKeys; `None` writes a
/// plain TIFF in pixel coordinates.
pub struct Placement {
    pub transform: [f64; 6],
    pub geo_keys: Vec<u16>,
    pub geo_doubles: Vec<f64>,
    pub geo_ascii: String,
}

impl Placement {
    /// A grid of `cell`-pixel cells over a georeferenced scene; refused when no GeoKeys can
    /// name the scene's CRS exactly (a scene GDAL read whose CRS has no EPSG code).
    pub fn grid(georef: &GeoRef, cell: f64) -> anyhow::Result<Self> {
        let Some((keys, doubles, ascii)) = georef.geo_keys() else {
            anyhow::bail!(
                "the scene's CRS ({}) has no EPSG code, so no GeoKeys can name it: class maps of \
                 this scene cannot be written on its CRS",
                georef.crs_name
            );
        };
        Ok(Self {
            transform: georef.scaled(cell),
            geo_keys: keys.to_vec(),
            geo_doubles: doubles.to_vec(),
            geo_ascii: ascii.to_string(),
        })
    }
}

/// GDAL's metadata tag: band descriptions and other items as XML.
const GDAL_METADATA: Tag = Tag::Unknown(42112);

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn err(e: tiff::TiffError) -> anyhow::Error {
    anyhow!("writing TIFF: {e}")
}

/// Writes `bands` (each `width × height`, row-major) as one Float32 GeoTIFF, band `i` described
/// as `names[i]`; NaN marks cells without a value (GDAL_NODATA "nan").
pub fn write_float_bands(
    path: &Path,
    width: u32,
    height: u32,
    bands: &[Vec<f32>],
    names: &[String],
    place: Option<&Placement>,
) -> Result<()> {
    let n = bands.len();
    if n == 0 || names.len() != n || bands.iter().any(|b| b.len() != (width * height) as usize) {
        bail!("{n} bands of {width}×{height} with {} names", names.len());
    }
    let mut interleaved = Vec::with_capacity(n * (width * height) as usize);
    for i in 0..(width * height) as usize {
        interleaved.extend(bands.iter().map(|b| b[i]));
    }
    let mut meta = String::from("<GDALMetadata>\n");
    for (i, name) in names.iter().enumerate() {
        meta.push_str(&format!(
            "  <Item name=\"DESCRIPTION\" sample=\"{i}\" role=\"description\">{}</Item>\n",
            xml_escape(name)
        ));
    }
    meta.push_str("</GDALMetadata>");
    let mut buf = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut buf).map_err(err)?;
        let mut dir = enc.image_directory().map_err(err)?;
        let offset = dir.write_data(&interleaved[..]).map_err(err)?;
        dir.write_tag(Tag::ImageWidth, width).map_err(err)?;
        dir.write_tag(Tag::ImageLength, height).map_err(err)?;
        dir.write_tag(Tag::BitsPerSample, &vec![32u16; n][..])
            .map_err(err)?;
        dir.write_tag(Tag::Compression, 1u16).map_err(err)?;
        dir.write_tag(Tag::PhotometricInterpretation, 1u16)
            .map_err(err)?;
        dir.write_tag(Tag::SamplesPerPixel, n as u16).map_err(err)?;
        dir.write_tag(Tag::RowsPerStrip, height).map_err(err)?;
        dir.write_tag(Tag::PlanarConfiguration, 1u16).map_err(err)?;
        dir.write_tag(Tag::SampleFormat, &vec![3u16; n][..])
            .map_err(err)?;
        if n > 1 {
            dir.write_tag(Tag::ExtraSamples, &vec![0u16; n - 1][..])
                .map_err(err)?;
        }
        dir.write_tag(Tag::StripOffsets, u32::try_from(offset)?)
            .map_err(err)?;
        dir.write_tag(Tag::StripByteCounts, (interleaved.len() * 4) as u32)
            .map_err(err)?;
        dir.write_tag(GDAL_METADATA, meta.as_str()).map_err(err)?;
        dir.write_tag(Tag::GdalNodata, "nan").map_err(err)?;
        if let Some(p) = place {
            write_placement(&mut dir, p)?;
        }
        dir.finish().map_err(err)?;
    }
    crate::atomic::write_file(path, buf.get_ref())
}

/// Writes `data` (`width × height` class numbers) as a one-band UInt8 GeoTIFF with a colour
/// table (`palette[i]` for value `i`); `nodata` marks cells without a class.
pub fn write_palette(
    path: &Path,
    width: u32,
    height: u32,
    data: &[u8],
    palette: &[[u8; 3]],
    nodata: u8,
    place: Option<&Placement>,
) -> Result<()> {
    if data.len() != (width * height) as usize || palette.len() > 256 {
        bail!(
            "{} values for {width}×{height}, {} colours",
            data.len(),
            palette.len()
        );
    }
    // TIFF colour maps hold all 256 reds, then greens, then blues, in 16 bits.
    let mut map = vec![0u16; 3 * 256];
    for (i, c) in palette.iter().enumerate() {
        for ch in 0..3 {
            map[ch * 256 + i] = c[ch] as u16 * 257;
        }
    }
    let mut buf = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut buf).map_err(err)?;
        let mut dir = enc.image_directory().map_err(err)?;
        let offset = dir.write_data(data).map_err(err)?;
        dir.write_tag(Tag::ImageWidth, width).map_err(err)?;
        dir.write_tag(Tag::ImageLength, height).map_err(err)?;
        dir.write_tag(Tag::BitsPerSample, 8u16).map_err(err)?;
        dir.write_tag(Tag::Compression, 1u16).map_err(err)?;
        dir.write_tag(Tag::PhotometricInterpretation, 3u16)
            .map_err(err)?;
        dir.write_tag(Tag::SamplesPerPixel, 1u16).map_err(err)?;
        dir.write_tag(Tag::RowsPerStrip, height).map_err(err)?;
        dir.write_tag(Tag::StripOffsets, u32::try_from(offset)?)
            .map_err(err)?;
        dir.write_tag(Tag::StripByteCounts, data.len() as u32)
            .map_err(err)?;
        dir.write_tag(Tag::ColorMap, &map[..]).map_err(err)?;
        dir.write_tag(Tag::GdalNodata, nodata.to_string().as_str())
            .map_err(err)?;
        if let Some(p) = place {
            write_placement(&mut dir, p)?;
        }
        dir.finish().map_err(err)?;
    }
    crate::atomic::write_file(path, buf.get_ref())
}

fn write_placement<W: std::io::Write + std::io::Seek>(
    dir: &mut tiff::encoder::DirectoryEncoder<'_, W, tiff::encoder::TiffKindStandard>,
    p: &Placement,
) -> Result<()> {
    let t = p.transform;
    if t[2] == 0.0 && t[4] == 0.0 {
        dir.write_tag(Tag::ModelPixelScaleTag, &[t[1], -t[5], 0.0][..])
            .map_err(err)?;
        dir.write_tag(Tag::ModelTiepointTag, &[0.0, 0.0, 0.0, t[0], t[3], 0.0][..])
            .map_err(err)?;
    } else {
        let m = [
            t[1], t[2], 0.0, t[0], t[4], t[5], 0.0, t[3], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        dir.write_tag(Tag::ModelTransformationTag, &m[..])
            .map_err(err)?;
    }
    dir.write_tag(Tag::GeoKeyDirectoryTag, &p.geo_keys[..])
        .map_err(err)?;
    if !p.geo_doubles.is_empty() {
        dir.write_tag(Tag::GeoDoubleParamsTag, &p.geo_doubles[..])
            .map_err(err)?;
    }
    if !p.geo_ascii.is_empty() {
        dir.write_tag(Tag::GeoAsciiParamsTag, p.geo_ascii.as_str())
            .map_err(err)?;
    }
    Ok(())
}
