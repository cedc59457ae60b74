//! TIFF and BigTIFF scenes read a band of rows at a time: the `tiff` crate reads the tags (and
//! decodes JPEG chunks); every other chunk is decoded by [`super::tiff_chunk`]. Only the strips
//! or tiles a request touches are decoded, and those still needed by the next band of rows
//! (tiles overlap when the stride is under the tile) are kept, so memory follows the width of
//! the scene, never its area.
//!
//! GDAL's internal masks (an extra image of 1-bit samples, photometric "transparency mask")
//! are read here by hand: the `tiff` crate refuses that photometric interpretation, and no
//! other crate reads it. Their chunks are found through the crate's tag reader and inflated with
//! `flate2` (GDAL writes them deflated) or taken as they are when stored uncompressed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::Tag;

use super::georef::{GeoRef, GeoTags};
use super::raster::{RasterInfo, RasterReader};
use super::source::{self, BlockReader, RemoteOptions, Shared};
use super::tiff_chunk::{self, Coding};

/// The most a single decoded chunk may take, and the most any tag value may (a mutated file
/// that claims a gigantic strip fails cleanly instead of allocating it).
const MAX_CHUNK_BYTES: usize = 256 << 20;
const MAX_TAG_BYTES: usize = 16 << 20;
/// The widest and tallest scene read (aerial mosaics reach 100,000 px; a header claiming more
/// is damaged, and its bands of rows could not be held).
pub const MAX_SIDE: u32 = 1 << 20;

/// How samples are stored, as far as a scene cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    F32,
    F64,
}

impl SampleKind {
    pub fn name(self) -> &'static str {
        match self {
            SampleKind::U8 => "uint8",
            SampleKind::I8 => "int8",
            SampleKind::U16 => "uint16",
            SampleKind::I16 => "int16",
            SampleKind::U32 => "uint32",
            SampleKind::I32 => "int32",
            SampleKind::U64 => "uint64",
            SampleKind::I64 => "int64",
            SampleKind::F16 => "float16",
            SampleKind::F32 => "float32",
            SampleKind::F64 => "float64",
        }
    }
}

/// Where the strips or tiles are and how big.
#[derive(Debug, Clone, Copy)]
struct Layout {
    width: u32,
    height: u32,
    samples: usize,
    chunk_w: u32,
    chunk_h: u32,
    across: u32,
    down: u32,
    planar: bool,
}

impl Layout {
    fn chunk_index(&self, col: u32, row: u32, plane: usize) -> u32 {
        let per_plane = self.across * self.down;
        plane as u32 * per_plane + row * self.across + col
    }
}

/// An open TIFF scene.
pub struct TiffReader {
    decoder: Decoder<BlockReader>,
    /// The file or object, for chunks' stored bytes.
    src: Shared,
    file_len: u64,
    /// Stored bytes fetched ahead for the band of rows being read (neighbours merged into one
    /// request), by chunk index.
    fetched: HashMap<u32, Vec<u8>>,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    coding: Coding,
    tiled: bool,
    /// Samples a stored pixel has (a palette image: 1; it is read as 3).
    stored_samples: usize,
    /// What a sparse (absent) chunk reads as: the nodata value, else 0.
    fill: f64,
    layout: Layout,
    /// Decoded chunks kept between calls, by chunk index.
    cache: HashMap<u32, Arc<DecodingResult>>,
    mask: Option<MaskReader>,
    /// Reduced-resolution copies of the image (a COG's overviews): IFD index, width, height,
    /// largest first.
    overviews: Vec<(usize, u32, u32)>,
}

/// The GeoTIFF tags of an image as stored, for [`GeoRef::from_tags`].
struct GeoTagValues {
    pixel_scale: Option<Vec<f64>>,
    tiepoints: Option<Vec<f64>>,
    transformation: Option<Vec<f64>>,
    geo_keys: Option<Vec<u16>>,
    geo_doubles: Option<Vec<f64>>,
    geo_ascii: Option<String>,
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.decoding_buffer_size = MAX_CHUNK_BYTES;
    l.intermediate_buffer_size = MAX_CHUNK_BYTES;
    l.ifd_value_size = MAX_TAG_BYTES;
    l
}

fn tiff_err(e: tiff::TiffError) -> anyhow::Error {
    anyhow!("{e}")
}

fn open_decoder(src: &Shared) -> Result<Decoder<BlockReader>> {
    Ok(Decoder::new(BlockReader::new(src.clone()))
        .map_err(|e| anyhow!("bad TIFF header: {e}"))?
        .with_limits(limits()))
}

impl TiffReader {
    /// Opens the first image of a TIFF and reads its tags and georeferencing (as GDAL reads
    /// them: [`GeoRef::from_tags`]); nothing is decoded yet.
    pub fn open(path: &Path, remote: &RemoteOptions) -> Result<(Self, RasterInfo)> {
        let src = source::open(&path.to_string_lossy(), remote)?;
        let (mut reader, mut info, geo) = Self::open_at(src, 0)?;
        reader.overviews = find_overviews(&reader.src, &reader.layout, reader.stored_samples)?;
        info.georef = GeoRef::from_tags(&GeoTags {
            pixel_scale: geo.pixel_scale.as_deref(),
            tiepoints: geo.tiepoints.as_deref(),
            transformation: geo.transformation.as_deref(),
            geo_keys: geo.geo_keys.as_deref(),
            geo_doubles: geo.geo_doubles.as_deref(),
            geo_ascii: geo.geo_ascii.as_deref(),
        })?;
        Ok((reader, info))
    }

    /// Opens image `ifd` of the file (0: the full-resolution image; an overview's index): the
    /// reader, what it holds (georeferencing not yet read), and its GeoTIFF tags.
    fn open_at(src: Shared, ifd: usize) -> Result<(Self, RasterInfo, GeoTagValues)> {
        let mut d = open_decoder(&src)?;
        if ifd > 0 {
            d.seek_to_image(ifd)
                .map_err(|e| anyhow!("image {ifd} of the file: {e}"))?;
        }
        let (width, height) = d.dimensions().map_err(tiff_err)?;
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            bail!(
                "the image claims {width}×{height} pixels (scenes up to {MAX_SIDE} a side are read)"
            );
        }
        let stored_samples = d
            .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
            .map_err(tiff_err)?
            .unwrap_or(1) as usize;
        if stored_samples == 0 {
            bail!("SamplesPerPixel is 0");
        }
        let all_bits = d
            .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
            .map_err(tiff_err)?
            .unwrap_or_else(|| vec![1]);
        let bits = all_bits.first().copied().unwrap_or(1);
        if all_bits.iter().any(|&b| b != bits) {
            bail!("bands of different bit depths ({all_bits:?}) are not read");
        }
        let format = d
            .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
            .map_err(tiff_err)?
            .and_then(|v| v.first().copied())
            .unwrap_or(1);
        let kind = match (format, bits) {
            (1, 1 | 2 | 4 | 8) => SampleKind::U8,
            (2, 8) => SampleKind::I8,
            (1, 16) => SampleKind::U16,
            (2, 16) => SampleKind::I16,
            (1, 32) => SampleKind::U32,
            (2, 32) => SampleKind::I32,
            (1, 64) => SampleKind::U64,
            (2, 64) => SampleKind::I64,
            (3, 16) => SampleKind::F16,
            (3, 32) => SampleKind::F32,
            (3, 64) => SampleKind::F64,
            (5 | 6, _) => bail!("complex samples (SampleFormat {format}) are not read"),
            _ => bail!("unsupported sample type: {bits}-bit, SampleFormat {format}"),
        };
        let compression = d
            .find_tag_unsigned::<u16>(Tag::Compression)
            .map_err(tiff_err)?
            .unwrap_or(1);
        tiff_chunk::supported(compression)?;
        let photometric = d
            .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
            .map_err(tiff_err)?
            .unwrap_or(1);
        match photometric {
            0 | 1 | 2 | 3 | 5 => {}
            6 if compression == 7 => {}
            6 => bail!("YCbCr samples without JPEG compression are not read"),
            p => bail!("photometric interpretation {p} (CIELab, LogLuv, …) is not read"),
        }
        if compression == 7 {
            // Asking for the colour type checks that the crate can decode this JPEG before any
            // chunk is read.
            d.colortype()
                .map_err(|e| anyhow!("unsupported TIFF: {e}"))?;
        }
        let palette = if bits == 1 && stored_samples == 1 && matches!(photometric, 0 | 1) {
            // GDAL reads a 1-bit image as a black-and-white palette (white first for
            // MinIsWhite), so do we.
            let (zero, one) = if photometric == 0 {
                (65535, 0)
            } else {
                (0, 65535)
            };
            Some(vec![zero, one, zero, one, zero, one])
        } else if photometric == 3 {
            let map = d
                .find_tag_unsigned_vec::<u16>(Tag::ColorMap)
                .map_err(tiff_err)?
                .ok_or_else(|| anyhow!("a palette image without a ColorMap"))?;
            if stored_samples != 1 || bits > 16 || map.len() != 3 << bits {
                bail!(
                    "a palette image of {stored_samples} × {bits}-bit samples with {} ColorMap values",
                    map.len()
                );
            }
            Some(map)
        } else {
            None
        };
        let samples = if palette.is_some() { 3 } else { stored_samples };
        let kind = if palette.is_some() {
            SampleKind::U8
        } else {
            kind
        };
        let coding = Coding {
            compression,
            predictor: d
                .find_tag_unsigned::<u16>(Tag::Predictor)
                .map_err(tiff_err)?
                .unwrap_or(1),
            bits,
            format,
            little_endian: matches!(d.byte_order(), tiff::tags::ByteOrder::LittleEndian),
            lsb_first: d
                .find_tag_unsigned::<u16>(Tag::FillOrder)
                .map_err(tiff_err)?
                == Some(2),
            palette,
        };
        let planar = d
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(tiff_err)?
            == Some(2);
        let (chunk_w, chunk_h) = match d.get_chunk_type() {
            ChunkType::Tile => d.chunk_dimensions(),
            ChunkType::Strip => (width, d.chunk_dimensions().1.clamp(1, height)),
        };
        if chunk_w == 0 || chunk_h == 0 {
            bail!("bad TIFF: chunks of {chunk_w}×{chunk_h} pixels");
        }
        // A band of rows holds a row of chunks decoded (plus the rows asked for): refuse strips or
        // tiles so tall that one row of them could not be held.
        let row_of_chunks = width as u64 * chunk_h as u64 * samples as u64 * 8;
        if row_of_chunks > 4 << 30 {
            bail!(
                "strips/tiles of {chunk_h} rows across {width} px × {samples} bands need {} GiB \
                 a row; rewrite the scene tiled (gdal_translate -co TILED=YES)",
                row_of_chunks >> 30
            );
        }
        let layout = Layout {
            width,
            height,
            samples,
            chunk_w,
            chunk_h,
            across: width.div_ceil(chunk_w),
            down: height.div_ceil(chunk_h),
            planar,
        };
        let tiled = d.get_chunk_type() == ChunkType::Tile;
        let (offsets_tag, counts_tag) = match d.get_chunk_type() {
            ChunkType::Tile => (Tag::TileOffsets, Tag::TileByteCounts),
            ChunkType::Strip => (Tag::StripOffsets, Tag::StripByteCounts),
        };
        let offsets = d.get_tag_u64_vec(offsets_tag).map_err(tiff_err)?;
        let counts = d.get_tag_u64_vec(counts_tag).map_err(tiff_err)?;
        let planes = if planar { stored_samples } else { 1 };
        let chunks = layout.across as usize * layout.down as usize * planes;
        if offsets.len() < chunks || counts.len() < chunks {
            bail!(
                "{chunks} strips/tiles but {} offsets and {} byte counts",
                offsets.len(),
                counts.len()
            );
        }
        let extra = d
            .find_tag_unsigned_vec::<u16>(Tag::ExtraSamples)
            .map_err(tiff_err)?
            .unwrap_or_default();
        let alpha = extra
            .iter()
            .position(|&e| e == 1 || e == 2)
            .and_then(|i| (samples + i).checked_sub(extra.len()));
        let f64s = |d: &mut Decoder<_>, tag| -> Result<Option<Vec<f64>>> {
            d.find_tag(tag)
                .map_err(tiff_err)?
                .map(|v| v.into_f64_vec().map_err(tiff_err))
                .transpose()
        };
        let pixel_scale = f64s(&mut d, Tag::ModelPixelScaleTag)?;
        let tiepoints = f64s(&mut d, Tag::ModelTiepointTag)?;
        let transformation = f64s(&mut d, Tag::ModelTransformationTag)?;
        let geo_keys = d
            .find_tag(Tag::GeoKeyDirectoryTag)
            .map_err(tiff_err)?
            .map(|v| v.into_u16_vec().map_err(tiff_err))
            .transpose()?;
        let geo_doubles = f64s(&mut d, Tag::GeoDoubleParamsTag)?;
        let geo_ascii = match d.find_tag(Tag::GeoAsciiParamsTag).map_err(tiff_err)? {
            Some(v) => Some(v.into_string().map_err(tiff_err)?),
            None => None,
        };
        let nodata = match d.find_tag(Tag::GdalNodata).map_err(tiff_err)? {
            Some(v) => {
                let s = v.into_string().map_err(tiff_err)?;
                atof_m(s.trim_matches(char::from(0)))
            }
            None => None,
        };
        let mask = MaskReader::find(&src, &layout)?;
        let info = RasterInfo {
            width,
            height,
            samples,
            kind,
            bits,
            alpha,
            nodata,
            has_mask: mask.is_some(),
            georef: Err("not read yet".into()),
        };
        let geo = GeoTagValues {
            pixel_scale,
            tiepoints,
            transformation,
            geo_keys,
            geo_doubles,
            geo_ascii,
        };
        let file_len = src.lock().unwrap_or_else(|e| e.into_inner()).size();
        Ok((
            Self {
                decoder: d,
                src,
                file_len,
                fetched: HashMap::new(),
                offsets,
                counts,
                coding,
                tiled,
                stored_samples,
                fill: nodata.filter(|v| v.is_finite()).unwrap_or(0.0),
                layout,
                cache: HashMap::new(),
                mask,
                overviews: vec![],
            },
            info,
            geo,
        ))
    }

    fn chunk(&mut self, index: u32) -> Result<Arc<DecodingResult>> {
        if let Some(c) = self.cache.get(&index) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            self.decode_chunk(index)
                .map_err(|e| anyhow!("cannot decode strip/tile {index}: {e:#}"))?,
        );
        self.cache.insert(index, c.clone());
        Ok(c)
    }

    /// Where chunk `index`'s stored bytes are; `None` for a sparse (absent) chunk.
    fn stored(&self, index: u32) -> Result<Option<std::ops::Range<u64>>> {
        let (off, len) = (self.offsets[index as usize], self.counts[index as usize]);
        if off == 0 || len == 0 {
            return Ok(None);
        }
        if off.checked_add(len).is_none_or(|end| end > self.file_len)
            || len > MAX_CHUNK_BYTES as u64
        {
            bail!("strip/tile {index} points past the end of the file ({len} bytes at {off})");
        }
        Ok(Some(off..off + len))
    }

    /// Fetches the stored bytes of the chunks `indices` not decoded yet, in as few requests as
    /// their places allow (ranges closer than 4 KiB are merged).
    fn prefetch(&mut self, indices: &[u32]) -> Result<()> {
        if self.coding.compression == 7 {
            return Ok(()); // JPEG chunks are read by the tiff crate through the block reader
        }
        let mut wanted: Vec<(std::ops::Range<u64>, u32)> = Vec::new();
        for &i in indices {
            if self.cache.contains_key(&i) || self.fetched.contains_key(&i) {
                continue;
            }
            if let Some(r) = self
                .stored(i)
                .map_err(|e| anyhow!("cannot decode strip/tile {i}: {e:#}"))?
            {
                wanted.push((r, i));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_by_key(|(r, _)| r.start);
        let ranges: Vec<_> = wanted.iter().map(|(r, _)| r.clone()).collect();
        let (merged, owner) = source::merge(&ranges, 4 << 10);
        let got = self
            .src
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_ranges(&merged)?;
        for ((r, i), m) in wanted.iter().zip(owner) {
            let base = merged[m].start;
            let bytes = &got[m][(r.start - base) as usize..(r.end - base) as usize];
            self.fetched.insert(*i, bytes.to_vec());
        }
        Ok(())
    }

    fn decode_chunk(&mut self, index: u32) -> Result<DecodingResult> {
        if self.coding.compression == 7 {
            return self.decoder.read_chunk(index).map_err(tiff_err);
        }
        let l = self.layout;
        let per_plane = l.across * l.down;
        let at = index % per_plane;
        let (ccol, crow) = (at % l.across, at / l.across);
        let cx0 = ccol * l.chunk_w;
        let cy0 = crow * l.chunk_h;
        let keep_w = l.chunk_w.min(l.width - cx0);
        let spp = if l.planar { 1 } else { self.stored_samples };
        // Tiles are stored whole (padded past the edges); the last strip only to the last row.
        let (w, rows) = if self.tiled {
            (l.chunk_w, l.chunk_h)
        } else {
            (l.width, l.chunk_h.min(l.height - cy0))
        };
        let bytes = match self.fetched.remove(&index) {
            Some(b) => Some(b),
            None => match self.stored(index)? {
                Some(r) => Some(
                    self.src
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .read_range(r)?,
                ),
                None => None,
            },
        };
        // None: sparse; GDAL reads an absent chunk as nodata (or 0).
        let raw = bytes.as_deref();
        let out_bytes = w as u64 * rows as u64 * spp as u64 * (self.coding.bits as u64).max(8) / 8;
        if out_bytes > MAX_CHUNK_BYTES as u64 {
            bail!("a {w}×{rows} chunk of {spp} samples is larger than {MAX_CHUNK_BYTES} bytes");
        }
        tiff_chunk::decode(&self.coding, raw, (w, rows, spp), keep_w, self.fill)
    }
}

/// A GDAL_NODATA value as GDAL reads it (CPLAtofM): empty is no nodata; "inf", "1.#INF",
/// "nan", "1.#QNAN", "-1.#IND" as MSVC wrote them; a comma as the decimal point; otherwise
/// the longest number the text starts with, 0 when it starts with none.
fn atof_m(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    let (neg, body) = match lower.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if body.starts_with("inf") || body.starts_with("1.#inf") {
        return Some(sign * f64::INFINITY);
    }
    if body.starts_with("1.#qnan")
        || body.starts_with("1.#ind")
        || (!neg && body.starts_with("nan"))
    {
        return Some(f64::NAN);
    }
    let t = t.replace(',', ".");
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    let mut any = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        any |= digits(&mut i);
    }
    if !any {
        return Some(0.0);
    }
    let mantissa_end = i;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if digits(&mut j) {
            i = j;
        }
    }
    let end = if i > mantissa_end { i } else { mantissa_end };
    Some(t[..end].trim_end_matches('.').parse().unwrap_or(0.0))
}

fn decoded_len(d: &DecodingResult) -> usize {
    match d {
        DecodingResult::U8(v) => v.len(),
        DecodingResult::U16(v) => v.len(),
        DecodingResult::U32(v) => v.len(),
        DecodingResult::U64(v) => v.len(),
        DecodingResult::F16(v) => v.len(),
        DecodingResult::F32(v) => v.len(),
        DecodingResult::F64(v) => v.len(),
        DecodingResult::I8(v) => v.len(),
        DecodingResult::I16(v) => v.len(),
        DecodingResult::I32(v) => v.len(),
        DecodingResult::I64(v) => v.len(),
    }
}

/// A stored sample as f32 (the one conversion every sample type needs).
trait ToF32: Copy {
    fn to_f32(self) -> f32;
}

macro_rules! to_f32_as {
    ($($t:ty),*) => {$(
        impl ToF32 for $t {
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
        }
    )*};
}
to_f32_as!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// Where one decoded chunk's samples go in a band of rows: typed once per chunk, so the inner
/// loop is a plain strided copy (a match per sample cost a third of a scan's reading time).
struct ChunkAt<'a> {
    /// Samples per pixel in the chunk (1 for planar chunks).
    spp: usize,
    /// The chunk's data width and left edge in the image.
    cw: u32,
    cx0: u32,
    step: u32,
    out_w: usize,
    /// Samples per pixel in the output.
    nb: usize,
    /// (sample in the chunk, sample in the output) pairs.
    picks: &'a [(usize, usize)],
}

impl ChunkAt<'_> {
    fn copy<T: ToF32>(
        &self,
        src: &[T],
        rows: impl Iterator<Item = (usize, usize)>,
        out: &mut [f32],
    ) {
        let (spp, nb, cw) = (self.spp, self.nb, self.cw as usize);
        for (src_row, out_row) in rows {
            let src = &src[src_row * cw * spp..(src_row + 1) * cw * spp];
            if self.step == 1 {
                let d0 = (out_row * self.out_w + self.cx0 as usize) * nb;
                let dst = &mut out[d0..d0 + cw * nb];
                for (s, d) in src.chunks_exact(spp).zip(dst.chunks_exact_mut(nb)) {
                    for &(from, to) in self.picks {
                        d[to] = s[from].to_f32();
                    }
                }
            } else {
                let step = self.step as usize;
                let first = (self.cx0 as usize).div_ceil(step) * step;
                for x in (first..self.cx0 as usize + cw).step_by(step) {
                    let s = &src[(x - self.cx0 as usize) * spp..];
                    let d = (out_row * self.out_w + x / step) * nb;
                    for &(from, to) in self.picks {
                        out[d + to] = s[from].to_f32();
                    }
                }
            }
        }
    }
}

/// GDAL's internal per-dataset mask: 1 bit a pixel, same size and chunking as the image.
struct MaskReader {
    src: Shared,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    compression: u16,
    layout: Layout,
    file_len: u64,
    cache: HashMap<u32, Arc<Vec<u8>>>,
}

impl MaskReader {
    /// Looks through the file's further images for a mask of the first one's size
    /// (NewSubfileType with the mask bit, 4).
    fn find(src: &Shared, image: &Layout) -> Result<Option<Self>> {
        // A second decoder: walking the images moves the one that reads pixels.
        let mut walker = open_decoder(src)?;
        let mut index = 0usize;
        // GDAL puts the mask right after the image or after its overviews; a few suffice, and a
        // bound keeps a looping IFD chain of a damaged file from walking forever.
        while index < 64 && walker.more_images() {
            index += 1;
            if walker.seek_to_image(index).is_err() {
                return Ok(None);
            }
            let kind = walker
                .find_tag_unsigned::<u32>(Tag::NewSubfileType)
                .map_err(tiff_err)?
                .unwrap_or(0);
            let Ok((w, h)) = walker.dimensions() else {
                continue;
            };
            if kind & 4 == 0 || kind & 1 != 0 || (w, h) != (image.width, image.height) {
                continue;
            }
            let tiled = walker.get_chunk_type() == ChunkType::Tile;
            let (offsets_tag, counts_tag) = if tiled {
                (Tag::TileOffsets, Tag::TileByteCounts)
            } else {
                (Tag::StripOffsets, Tag::StripByteCounts)
            };
            let offsets = walker.get_tag_u64_vec(offsets_tag).map_err(tiff_err)?;
            let counts = walker.get_tag_u64_vec(counts_tag).map_err(tiff_err)?;
            let compression = walker
                .find_tag_unsigned::<u16>(Tag::Compression)
                .map_err(tiff_err)?
                .unwrap_or(1);
            let (chunk_w, chunk_h) = match walker.get_chunk_type() {
                ChunkType::Tile => walker.chunk_dimensions(),
                ChunkType::Strip => (w, walker.chunk_dimensions().1.clamp(1, h)),
            };
            if chunk_w == 0 || chunk_h == 0 {
                bail!("bad internal mask: chunks of {chunk_w}×{chunk_h} pixels");
            }
            let layout = Layout {
                width: w,
                height: h,
                samples: 1,
                chunk_w,
                chunk_h,
                across: w.div_ceil(chunk_w),
                down: h.div_ceil(chunk_h),
                planar: false,
            };
            let chunks = (layout.across * layout.down) as usize;
            if offsets.len() < chunks || counts.len() < chunks {
                bail!(
                    "bad internal mask: {chunks} chunks, {} offsets",
                    offsets.len()
                );
            }
            if !matches!(compression, 1 | 8 | 32946) {
                bail!("internal mask compressed with TIFF method {compression}, which is not read");
            }
            let file_len = src.lock().unwrap_or_else(|e| e.into_inner()).size();
            return Ok(Some(Self {
                src: src.clone(),
                offsets,
                counts,
                compression,
                layout,
                file_len,
                cache: HashMap::new(),
            }));
        }
        Ok(None)
    }

    /// One chunk's bits, unpacked to one byte a pixel (row stride = the chunk's full width).
    fn chunk(&mut self, index: u32) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.cache.get(&index) {
            return Ok(c.clone());
        }
        let (off, len) = (self.offsets[index as usize], self.counts[index as usize]);
        if off.checked_add(len).is_none_or(|end| end > self.file_len)
            || len > MAX_CHUNK_BYTES as u64
        {
            bail!("internal mask chunk {index} points past the end of the file");
        }
        let raw = self
            .src
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_range(off..off + len)?;
        let l = self.layout;
        let row_bytes = l.chunk_w.div_ceil(8) as usize;
        let want = row_bytes * l.chunk_h as usize;
        let packed = if self.compression == 1 {
            raw
        } else {
            let mut out = Vec::with_capacity(want);
            flate2::read::ZlibDecoder::new(&raw[..])
                .take(want as u64)
                .read_to_end(&mut out)
                .map_err(|e| anyhow!("internal mask chunk {index}: cannot inflate: {e}"))?;
            out
        };
        let mut bits = vec![0u8; l.chunk_w as usize * l.chunk_h as usize];
        for r in 0..l.chunk_h as usize {
            for c in 0..l.chunk_w as usize {
                let byte = packed.get(r * row_bytes + c / 8).copied().unwrap_or(0);
                bits[r * l.chunk_w as usize + c] = (byte >> (7 - c % 8)) & 1;
            }
        }
        let bits = Arc::new(bits);
        self.cache.insert(index, bits.clone());
        Ok(bits)
    }

    fn read_rows(&mut self, y0: u32, h: u32, step: u32, out_w: usize) -> Result<Vec<bool>> {
        let l = self.layout;
        let out_h = h.div_ceil(step) as usize;
        let mut out = vec![false; out_w * out_h];
        let first_row = y0 / l.chunk_h;
        self.cache.retain(|&i, _| i / l.across >= first_row);
        for (oy, r) in (y0..y0 + h).step_by(step as usize).enumerate() {
            let crow = r / l.chunk_h;
            for (ox, x) in (0..l.width).step_by(step as usize).enumerate() {
                let ccol = x / l.chunk_w;
                let chunk = self.chunk(crow * l.across + ccol)?;
                let i = ((r - crow * l.chunk_h) * l.chunk_w + (x - ccol * l.chunk_w)) as usize;
                out[oy * out_w + ox] = chunk[i] != 0;
            }
        }
        Ok(out)
    }
}

/// The file's overviews of `image` (NewSubfileType with the reduced-resolution bit and not the
/// mask bit, the same samples, smaller): IFD index, width, height, largest first. GDAL and COGs
/// put them after the full-resolution image; a bound keeps a looping IFD chain from walking
/// forever.
fn find_overviews(src: &Shared, image: &Layout, samples: usize) -> Result<Vec<(usize, u32, u32)>> {
    let mut walker = open_decoder(src)?;
    let mut found = Vec::new();
    let mut index = 0usize;
    while index < 64 && walker.more_images() {
        index += 1;
        if walker.seek_to_image(index).is_err() {
            break;
        }
        let kind = walker
            .find_tag_unsigned::<u32>(Tag::NewSubfileType)
            .map_err(tiff_err)?
            .unwrap_or(0);
        let spp = walker
            .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
            .map_err(tiff_err)?
            .unwrap_or(1) as usize;
        let Ok((w, h)) = walker.dimensions() else {
            continue;
        };
        if kind & 1 != 0 && kind & 4 == 0 && spp == samples && w < image.width && h < image.height {
            found.push((index, w, h));
        }
    }
    found.sort_by_key(|&(_, w, _)| std::cmp::Reverse(w));
    Ok(found)
}

impl RasterReader for TiffReader {
    fn chunk_height(&self) -> u32 {
        self.layout.chunk_h
    }

    fn overviews(&self) -> Vec<(u32, u32)> {
        self.overviews.iter().map(|&(_, w, h)| (w, h)).collect()
    }

    fn open_overview(&self, i: usize) -> Result<Box<dyn RasterReader>> {
        let &(ifd, _, _) = self
            .overviews
            .get(i)
            .ok_or_else(|| anyhow!("no overview {i}"))?;
        Ok(Box::new(Self::open_at(self.src.clone(), ifd)?.0))
    }

    /// Chunks wholly above `y0` are dropped from the cache (rows are asked for top to bottom).
    fn read_rows(
        &mut self,
        y0: u32,
        h: u32,
        bands: &[usize],
        step: u32,
    ) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        let l = self.layout;
        let step = step.max(1);
        if y0 + h > l.height || bands.iter().any(|&b| b >= l.samples) {
            bail!("rows {y0}..{} or bands {bands:?} outside the image", y0 + h);
        }
        let out_w = l.width.div_ceil(step) as usize;
        let out_h = h.div_ceil(step) as usize;
        let nb = bands.len();
        let mut out = vec![0f32; out_w * out_h * nb];
        let first_row = y0 / l.chunk_h;
        let last_row = (y0 + h - 1) / l.chunk_h;
        // Forget chunks above the requested rows.
        let per_plane = l.across * l.down;
        self.cache
            .retain(|&i, _| (i % per_plane) / l.across >= first_row);
        self.fetched.clear();
        let planes: Vec<usize> = if l.planar { bands.to_vec() } else { vec![0] };
        let needed: Vec<u32> = (first_row..=last_row)
            .flat_map(|crow| (0..l.across).map(move |ccol| (ccol, crow)))
            .flat_map(|(ccol, crow)| planes.iter().map(move |&p| l.chunk_index(ccol, crow, p)))
            .collect();
        self.prefetch(&needed)?;
        for crow in first_row..=last_row {
            for ccol in 0..l.across {
                let cx0 = ccol * l.chunk_w;
                let cy0 = crow * l.chunk_h;
                let cw = l.chunk_w.min(l.width - cx0);
                let ch = l.chunk_h.min(l.height - cy0);
                // Rows of this chunk inside the request that the step keeps.
                let ry0 = y0.max(cy0);
                let ry1 = (y0 + h).min(cy0 + ch);
                if (ry0..ry1).all(|r| !(r - y0).is_multiple_of(step)) {
                    continue;
                }
                let planes: Vec<usize> = if l.planar { bands.to_vec() } else { vec![0] };
                for (pi, &plane) in planes.iter().enumerate() {
                    let chunk = self.chunk(l.chunk_index(ccol, crow, plane))?;
                    let spp = if l.planar { 1 } else { l.samples };
                    // The decoded chunk's row stride: its data width (edge tiles are cut).
                    let need = cw as usize * ch as usize * spp;
                    let len = decoded_len(&chunk);
                    if len < need {
                        bail!(
                            "strip/tile at {cx0},{cy0} decoded to {len} samples, {need} expected"
                        );
                    }
                    let picks: Vec<(usize, usize)> = if l.planar {
                        vec![(0, pi)]
                    } else {
                        bands.iter().enumerate().map(|(k, &b)| (b, k)).collect()
                    };
                    let rows = (ry0..ry1)
                        .filter(|r| (r - y0).is_multiple_of(step))
                        .map(|r| ((r - cy0) as usize, ((r - y0) / step) as usize));
                    let at = ChunkAt {
                        spp,
                        cw,
                        cx0,
                        step,
                        out_w,
                        nb,
                        picks: &picks,
                    };
                    match &*chunk {
                        DecodingResult::U8(v) => at.copy(v, rows, &mut out),
                        DecodingResult::U16(v) => at.copy(v, rows, &mut out),
                        DecodingResult::U32(v) => at.copy(v, rows, &mut out),
                        DecodingResult::U64(v) => at.copy(v, rows, &mut out),
                        DecodingResult::I8(v) => at.copy(v, rows, &mut out),
                        DecodingResult::I16(v) => at.copy(v, rows, &mut out),
                        DecodingResult::I32(v) => at.copy(v, rows, &mut out),
                        DecodingResult::I64(v) => at.copy(v, rows, &mut out),
                        DecodingResult::F32(v) => at.copy(v, rows, &mut out),
                        DecodingResult::F64(v) => at.copy(v, rows, &mut out),
                        DecodingResult::F16(v) => {
                            let v: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
                            at.copy(&v, rows, &mut out)
                        }
                    }
                }
            }
        }
        let mask = match self.mask.as_mut() {
            Some(m) => Some(m.read_rows(y0, h, step, out_w)?),
            None => None,
        };
        Ok((out, mask))
    }
}
