//! From an image file to the tensor CLIP reads: decoding (JPEG, PNG, WebP, TIFF with any number
//! of 8/16/32-bit bands), conversion to 8-bit RGB, and preprocessing exactly as transformers'
//! `CLIPImageProcessor` (PIL path) does it, driven by `preprocessor_config.json`.

mod resample;

pub use resample::Filter;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use serde::Deserialize;

/// Pillow refuses images over twice its `MAX_IMAGE_PIXELS` as decompression bombs; so do we.
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// An 8-bit RGB image, rows top to bottom, `[r, g, b]` per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// How files become RGB.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// 1-based band numbers to use as red, green, blue (default: the first three, or the single
    /// band repeated for grayscale). A single band here makes a grayscale image.
    pub bands: Option<Vec<usize>>,
    /// Files whose header claims more pixels than this are refused before decoding.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            bands: None,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// The file extensions a directory walk picks up as images.
pub fn is_image_path(path: &Path) -> bool {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    matches!(
        ext.to_ascii_lowercase().as_str(),
        "jpg" | "jpeg" | "png" | "webp" | "tif" | "tiff" | "bmp" | "gif"
    )
}

/// The `(x, y, width, height)` rectangle of an image.
pub fn crop(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> Result<RgbImage> {
    if w == 0
        || h == 0
        || x.checked_add(w).is_none_or(|r| r > img.width)
        || y.checked_add(h).is_none_or(|b| b > img.height)
    {
        bail!(
            "chip {x},{y},{w},{h} is outside the {}×{} image",
            img.width,
            img.height
        );
    }
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for row in y..y + h {
        let start = ((row * img.width + x) * 3) as usize;
        pixels.extend_from_slice(&img.pixels[start..start + (w * 3) as usize]);
    }
    Ok(RgbImage {
        width: w,
        height: h,
        pixels,
    })
}

/// The image files under `dir`, walked recursively (following links), sorted.
pub fn images_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && is_image_path(e.path()))
        .map(|e| e.into_path())
        .collect();
    found.sort();
    found
}

/// Decodes a file into 8-bit RGB. Every error names the file.
pub fn load_rgb(path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    decode(path, opts).with_context(|| format!("{}", path.display()))
}

fn decode(path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let mut head = [0u8; 16];
    let n = File::open(path)
        .map_err(|e| anyhow!("cannot open: {e}"))?
        .read(&mut head)
        .map_err(|e| anyhow!("cannot read: {e}"))?;
    if n == 0 {
        bail!("empty file (0 bytes)");
    }
    let format = image::guess_format(&head[..n])
        .map_err(|_| anyhow!("not an image in a known format (JPEG, PNG, WebP, TIFF, BMP, GIF)"))?;
    if format == ImageFormat::Tiff {
        return decode_tiff(path, opts);
    }
    if format == ImageFormat::Jpeg {
        let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read: {e}"))?;
        check_jpeg_complete(&bytes)?;
        if opts.bands.is_none()
            && let Some(img) = decode_jpeg_like_pillow(&bytes, opts)?
        {
            return Ok(img);
        }
    }
    let mut reader = ImageReader::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
    reader.set_format(format);
    reader.no_limits();
    let decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("bad {format:?} header: {e}"))?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, opts)?;
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| anyhow!("cannot decode {format:?}: {e}"))?;
    dynamic_to_rgb(img, opts)
}

/// zune-jpeg decodes truncated files by inventing the missing rows; Pillow refuses them, and so
/// do we: a complete JPEG ends with the EOI marker (trailing zero padding tolerated).
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < 4 || bytes[end - 2..end] != [0xFF, 0xD9] {
        bail!("truncated JPEG (no end-of-image marker)");
    }
    Ok(())
}

thread_local! {
    /// Set while libjpeg runs on this thread: its errors arrive as panics that we catch.
    static IN_LIBJPEG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes a JPEG with libjpeg-turbo's decoder (through mozjpeg): the same integer IDCT and
/// "fancy" chroma upsampling as Pillow, so pixels are bit-identical to what transformers sees.
/// `None` for colour spaces libjpeg cannot turn into RGB (CMYK, YCCK): the caller falls back.
fn decode_jpeg_like_pillow(bytes: &[u8], opts: &DecodeOptions) -> Result<Option<RgbImage>> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_LIBJPEG.with(|f| f.get()) {
                previous(info)
            }
        }));
    });
    let max_pixels = opts.max_pixels;
    IN_LIBJPEG.with(|f| f.set(true));
    let result = std::panic::catch_unwind(|| -> Result<Option<RgbImage>> {
        let d = mozjpeg::Decompress::new_mem(bytes).map_err(|e| anyhow!("bad JPEG: {e}"))?;
        use mozjpeg::ColorSpace;
        if matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK) {
            return Ok(None);
        }
        let (w, h) = (d.width() as u32, d.height() as u32);
        check_size(
            w,
            h,
            &DecodeOptions {
                bands: None,
                max_pixels,
            },
        )?;
        let mut started = d.rgb().map_err(|e| anyhow!("cannot decode JPEG: {e}"))?;
        let pixels = started
            .read_scanlines::<u8>()
            .map_err(|e| anyhow!("cannot decode JPEG: {e}"))?;
        started
            .finish()
            .map_err(|e| anyhow!("cannot decode JPEG: {e}"))?;
        Ok(Some(RgbImage {
            width: w,
            height: h,
            pixels,
        }))
    });
    IN_LIBJPEG.with(|f| f.set(false));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            bail!("cannot decode JPEG: {msg}")
        }
    }
}

fn check_size(w: u32, h: u32, opts: &DecodeOptions) -> Result<()> {
    let pixels = w as u64 * h as u64;
    if w == 0 || h == 0 {
        bail!("image has no pixels ({w}×{h})");
    }
    if pixels > opts.max_pixels {
        bail!(
            "image of {w}×{h} = {pixels} pixels exceeds the limit of {} (raise it with --max-pixels, or cut the scene into tiles)",
            opts.max_pixels
        );
    }
    Ok(())
}

/// Interleaved samples of any depth, before band selection.
struct Bands {
    width: u32,
    height: u32,
    count: usize,
    /// `true` when samples are 8-bit: kept as they are, with no rescaling.
    eight_bit: bool,
    samples: Vec<f32>,
}

fn dynamic_to_rgb(img: DynamicImage, opts: &DecodeOptions) -> Result<RgbImage> {
    let (width, height) = (img.width(), img.height());
    let bands = match img {
        // 8-bit images as transformers' convert_to_rgb sees them: grey is repeated, palettes
        // are expanded by the decoder, transparency is composited onto white.
        DynamicImage::ImageRgb8(b) if opts.bands.is_none() => {
            return Ok(RgbImage {
                width,
                height,
                pixels: b.into_raw(),
            });
        }
        DynamicImage::ImageRgba8(b) if opts.bands.is_none() => {
            let pixels = b
                .as_raw()
                .chunks_exact(4)
                .flat_map(|p| over_white([p[0], p[1], p[2]], p[3]))
                .collect();
            return Ok(RgbImage {
                width,
                height,
                pixels,
            });
        }
        DynamicImage::ImageLumaA8(b) if opts.bands.is_none() => {
            let pixels = b
                .as_raw()
                .chunks_exact(2)
                .flat_map(|p| over_white([p[0]; 3], p[1]))
                .collect();
            return Ok(RgbImage {
                width,
                height,
                pixels,
            });
        }
        DynamicImage::ImageLuma8(b) => Bands {
            width,
            height,
            count: 1,
            eight_bit: true,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageLumaA8(b) => Bands {
            width,
            height,
            count: 2,
            eight_bit: true,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageRgb8(b) => Bands {
            width,
            height,
            count: 3,
            eight_bit: true,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageRgba8(b) => Bands {
            width,
            height,
            count: 4,
            eight_bit: true,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageLuma16(b) => Bands {
            width,
            height,
            count: 1,
            eight_bit: false,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageLumaA16(b) => Bands {
            width,
            height,
            count: 2,
            eight_bit: false,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageRgb16(b) => Bands {
            width,
            height,
            count: 3,
            eight_bit: false,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageRgba16(b) => Bands {
            width,
            height,
            count: 4,
            eight_bit: false,
            samples: to_f32(b.as_raw()),
        },
        DynamicImage::ImageRgb32F(b) => Bands {
            width,
            height,
            count: 3,
            eight_bit: false,
            samples: b.into_raw(),
        },
        DynamicImage::ImageRgba32F(b) => Bands {
            width,
            height,
            count: 4,
            eight_bit: false,
            samples: b.into_raw(),
        },
        other => {
            let rgb = other.to_rgb8();
            Bands {
                width,
                height,
                count: 3,
                eight_bit: true,
                samples: to_f32(rgb.as_raw()),
            }
        }
    };
    bands_to_rgb(bands, opts)
}

/// Pillow's `alpha_composite` of one pixel over opaque white, in its fixed-point arithmetic
/// (7 fractional bits, division by 255 as `((x >> 8) + x) >> 8`).
fn over_white(rgb: [u8; 3], alpha: u8) -> [u8; 3] {
    if alpha == 0 {
        return [255; 3];
    }
    const PRECISION_BITS: u32 = 7;
    let a = alpha as u32;
    // With an opaque destination the blended alpha is 255·255, so the weights reduce to a and 255-a.
    let coef1 = a << PRECISION_BITS;
    let coef2 = (255 - a) << PRECISION_BITS;
    rgb.map(|c| {
        let tmp = c as u32 * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
        ((((tmp >> 8) + tmp) >> 8) >> PRECISION_BITS) as u8
    })
}

fn to_f32<T: Copy + Into<f32>>(xs: &[T]) -> Vec<f32> {
    xs.iter().map(|&x| x.into()).collect()
}

/// Picks three bands (or one, repeated) and maps them to 8 bits: 8-bit data as it is, deeper
/// data stretched linearly from the selected bands' minimum to their maximum.
fn bands_to_rgb(b: Bands, opts: &DecodeOptions) -> Result<RgbImage> {
    let chosen: Vec<usize> = match &opts.bands {
        Some(list) => {
            if list.len() != 1 && list.len() != 3 {
                bail!(
                    "--bands takes one band or three (red,green,blue), got {}",
                    list.len()
                );
            }
            for &band in list {
                if band == 0 || band > b.count {
                    bail!(
                        "band {band} does not exist: the image has {} band(s), numbered from 1",
                        b.count
                    );
                }
            }
            list.iter().map(|&x| x - 1).collect()
        }
        // Grey (+alpha) repeats the grey band; otherwise the first three bands.
        None if b.count < 3 => vec![0],
        None => vec![0, 1, 2],
    };
    let pick: [usize; 3] = if chosen.len() == 1 {
        [chosen[0]; 3]
    } else {
        [chosen[0], chosen[1], chosen[2]]
    };
    let n = (b.width * b.height) as usize;
    let (offset, scale) = if b.eight_bit {
        (0.0f32, 1.0f32)
    } else {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for i in 0..n {
            for &c in &chosen {
                let v = b.samples[i * b.count + c];
                if v.is_finite() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
        if !lo.is_finite() || hi <= lo {
            (if lo.is_finite() { lo } else { 0.0 }, 0.0)
        } else {
            (lo, 255.0 / (hi - lo))
        }
    };
    let mut pixels = Vec::with_capacity(n * 3);
    for i in 0..n {
        for &c in &pick {
            let v = b.samples[i * b.count + c];
            let v = if b.eight_bit {
                v
            } else {
                ((v - offset) * scale).round()
            };
            pixels.push(if v.is_finite() {
                v.clamp(0.0, 255.0) as u8
            } else {
                0
            });
        }
    }
    Ok(RgbImage {
        width: b.width,
        height: b.height,
        pixels,
    })
}

fn decode_tiff(path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    use tiff::decoder::{Decoder, DecodingResult, Limits};
    let file = File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
    let mut dec =
        Decoder::new(BufReader::new(file)).map_err(|e| anyhow!("bad TIFF header: {e}"))?;
    let (w, h) = dec
        .dimensions()
        .map_err(|e| anyhow!("bad TIFF header: {e}"))?;
    check_size(w, h, opts)?;
    let colortype = dec
        .colortype()
        .map_err(|e| anyhow!("unsupported TIFF: {e}"))?;
    let count = colortype.num_samples() as usize;
    let planar = dec
        .get_tag_u32(tiff::tags::Tag::PlanarConfiguration)
        .map(|v| v == 2)
        .unwrap_or(false);
    let mut dec = dec.with_limits(Limits::unlimited());
    let mut data = DecodingResult::U8(vec![]);
    dec.read_image_to_buffer(&mut data)
        .map_err(|e| anyhow!("cannot decode TIFF: {e}"))?;
    let (samples, eight_bit) = match data {
        DecodingResult::U8(v) => (to_f32(&v), true),
        DecodingResult::U16(v) => (to_f32(&v), false),
        DecodingResult::U32(v) => (v.iter().map(|&x| x as f32).collect(), false),
        DecodingResult::I8(v) => (to_f32(&v), false),
        DecodingResult::I16(v) => (to_f32(&v), false),
        DecodingResult::I32(v) => (v.iter().map(|&x| x as f32).collect(), false),
        DecodingResult::F32(v) => (v, false),
        DecodingResult::F64(v) => (v.iter().map(|&x| x as f32).collect(), false),
        DecodingResult::F16(v) => (v.iter().map(|&x| x.to_f32()).collect(), false),
        _ => bail!("unsupported TIFF sample type"),
    };
    let n = (w * h) as usize;
    if samples.len() < n * count {
        bail!(
            "TIFF holds {} samples, {}×{}×{count} expected",
            samples.len(),
            w,
            h
        );
    }
    // Planar files store band after band; interleave them like chunky ones.
    let samples = if planar && count > 1 {
        let mut out = vec![0f32; n * count];
        for c in 0..count {
            for i in 0..n {
                out[i * count + c] = samples[c * n + i];
            }
        }
        out
    } else {
        samples
    };
    bands_to_rgb(
        Bands {
            width: w,
            height: h,
            count,
            eight_bit,
            samples,
        },
        opts,
    )
}

/// `size` / `crop_size` in a preprocessor config: an int, `{"shortest_edge": n}` or
/// `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Int(u32),
    Shortest { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
}

#[derive(Debug, Clone, Deserialize)]
struct RawPreprocessorConfig {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<SizeSpec>,
    #[serde(default = "bicubic")]
    resample: u32,
    #[serde(default = "yes")]
    do_center_crop: bool,
    crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "default_rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    None,
    /// The shorter side becomes `n`, the longer `floor(n · long / short)`, as transformers does.
    ShortestEdge(u32),
    Exact {
        height: u32,
        width: u32,
    },
}

/// The `CLIPImageProcessor` settings of a model (`preprocessor_config.json`).
#[derive(Debug, Clone)]
pub struct Preprocessor {
    pub resize: Resize,
    /// Pillow's resampling filter number (0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box,
    /// 5 Hamming).
    pub resample: u32,
    /// `(height, width)` of the centre crop, if any.
    pub crop: Option<(u32, u32)>,
    pub rescale_factor: Option<f64>,
    pub mean_std: Option<([f32; 3], [f32; 3])>,
}

impl Preprocessor {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read preprocessor config", path.display()))?;
        let raw: RawPreprocessorConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid preprocessor_config.json", path.display()))?;
        Self::from_raw(raw)
            .with_context(|| format!("{}: unusable preprocessor config", path.display()))
    }

    /// What CLIP's own processor does for a model taking `size`-pixel images.
    #[allow(clippy::excessive_precision)] // CLIP's published mean and std, digit for digit.
    pub fn clip_default(size: u32) -> Self {
        Self {
            resize: Resize::ShortestEdge(size),
            resample: 3,
            crop: Some((size, size)),
            rescale_factor: Some(1.0 / 255.0),
            mean_std: Some((
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
                [0.268_629_54, 0.261_302_58, 0.275_777_1],
            )),
        }
    }

    fn from_raw(raw: RawPreprocessorConfig) -> Result<Self> {
        let resize = match (raw.do_resize, raw.size) {
            (false, _) => Resize::None,
            (true, Some(SizeSpec::Int(n)))
            | (true, Some(SizeSpec::Shortest { shortest_edge: n })) => Resize::ShortestEdge(n),
            (true, Some(SizeSpec::HeightWidth { height, width })) => {
                Resize::Exact { height, width }
            }
            (true, None) => Resize::ShortestEdge(224),
        };
        let crop = match (raw.do_center_crop, raw.crop_size) {
            (false, _) => None,
            (true, Some(SizeSpec::Int(n)))
            | (true, Some(SizeSpec::Shortest { shortest_edge: n })) => Some((n, n)),
            (true, Some(SizeSpec::HeightWidth { height, width })) => Some((height, width)),
            (true, None) => Some((224, 224)),
        };
        let mean_std = if raw.do_normalize {
            let mean = three(
                raw.image_mean
                    .unwrap_or(vec![0.48145466, 0.4578275, 0.40821073]),
                "image_mean",
            )?;
            let std = three(
                raw.image_std
                    .unwrap_or(vec![0.26862954, 0.26130258, 0.27577711]),
                "image_std",
            )?;
            if std.contains(&0.0) {
                bail!("image_std has a zero");
            }
            Some((mean, std))
        } else {
            None
        };
        if raw.resample > 5 {
            bail!("unknown resample filter {}", raw.resample);
        }
        Ok(Self {
            resize,
            resample: raw.resample,
            crop,
            rescale_factor: raw.do_rescale.then_some(raw.rescale_factor),
            mean_std,
        })
    }

    /// The `(height, width)` of the output.
    pub fn output_size(&self, img_h: u32, img_w: u32) -> (u32, u32) {
        match self.crop {
            Some(c) => c,
            None => self.resized_size(img_h, img_w),
        }
    }

    fn resized_size(&self, h: u32, w: u32) -> (u32, u32) {
        match self.resize {
            Resize::None => (h, w),
            Resize::Exact { height, width } => (height, width),
            Resize::ShortestEdge(n) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((n as u64 * long as u64) as f64 / short as f64) as u32;
                if w <= h { (new_long, n) } else { (n, new_long) }
            }
        }
    }

    /// Resize + centre crop, in 8-bit (transformers resizes through a PIL image, so the
    /// resized pixels are rounded to 8 bits before anything else).
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        let (h, w) = self.resized_size(img.height, img.width);
        let resized = if (h, w) == (img.height, img.width) {
            img.clone()
        } else {
            resize_rgb(img, w, h, self.resample)?
        };
        Ok(match self.crop {
            Some((ch, cw)) => center_crop(&resized, ch, cw),
            None => resized,
        })
    }

    /// The full pipeline: `(3, H, W)` floats, channel-major, ready for the vision tower.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let img = self.resize_and_crop(img)?;
        let n = (img.width * img.height) as usize;
        let mut out = vec![0f32; 3 * n];
        for c in 0..3 {
            let (mean, std) = match self.mean_std {
                Some((m, s)) => (m[c], s[c]),
                None => (0.0, 1.0),
            };
            for i in 0..n {
                let v = img.pixels[i * 3 + c];
                // transformers: rescale in float64, cast to float32, normalise in float32.
                let v = match self.rescale_factor {
                    Some(f) => (v as f64 * f) as f32,
                    None => v as f32,
                };
                out[c * n + i] = (v - mean) / std;
            }
        }
        Ok(out)
    }
}

fn three(v: Vec<f64>, what: &str) -> Result<[f32; 3]> {
    match v.as_slice() {
        [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
        [a] => Ok([*a as f32; 3]),
        _ => bail!("{what} must have 1 or 3 values, has {}", v.len()),
    }
}

/// Resizes as Pillow does (see [`resample`]).
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, resample: u32) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        bail!("resize to an empty image ({width}×{height})");
    }
    let filter =
        Filter::from_pil(resample).ok_or_else(|| anyhow!("unknown resample filter {resample}"))?;
    let pixels = resample::resize_rgb8(
        &img.pixels,
        img.width as usize,
        img.height as usize,
        width as usize,
        height as usize,
        filter,
    );
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// transformers' `center_crop`: offsets `(size - crop) // 2`, zero padding where the image is
/// smaller than the crop.
fn center_crop(img: &RgbImage, crop_h: u32, crop_w: u32) -> RgbImage {
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    // Python floor division on possibly negative numbers.
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    let mut pixels = vec![0u8; (ch * cw * 3) as usize];
    for y in 0..ch {
        let sy = y + top;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..cw {
            let sx = x + left;
            if sx < 0 || sx >= w {
                continue;
            }
            let s = ((sy * w + sx) * 3) as usize;
            let d = ((y * cw + x) * 3) as usize;
            pixels[d..d + 3].copy_from_slice(&img.pixels[s..s + 3]);
        }
    }
    RgbImage {
        width: crop_w,
        height: crop_h,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_truncates_like_transformers() {
        let p = Preprocessor::clip_default(224);
        // 224 * 300 / 200 = 336 exactly; 224 * 333 / 250 = 298.37 -> 298.
        assert_eq!(p.resized_size(200, 300), (224, 336));
        assert_eq!(p.resized_size(333, 250), (298, 224));
        assert_eq!(p.resized_size(64, 64), (224, 224));
    }

    #[test]
    fn center_crop_uses_floor_offsets_and_pads() {
        let img = RgbImage {
            width: 5,
            height: 1,
            pixels: (0..15).collect(),
        };
        let c = center_crop(&img, 1, 2);
        // (5 - 2) // 2 = 1: columns 1 and 2.
        assert_eq!(c.pixels, vec![3, 4, 5, 6, 7, 8]);
        let padded = center_crop(&img, 3, 5);
        assert_eq!(&padded.pixels[..15], &[0; 15]);
        assert_eq!(&padded.pixels[15..30], &img.pixels[..]);
    }

    #[test]
    fn alpha_composites_onto_white_like_pillow() {
        assert_eq!(over_white([10, 20, 30], 255), [10, 20, 30]);
        assert_eq!(over_white([10, 20, 30], 0), [255, 255, 255]);
        // Pillow: Image.alpha_composite(white, (0, 100, 200, 128)) -> (127, 177, 227)
        assert_eq!(over_white([0, 100, 200], 128), [127, 177, 227]);
        assert_eq!(over_white([77, 3, 250], 1), [254, 254, 255]);
        assert_eq!(over_white([77, 3, 250], 254), [78, 4, 250]);
    }

    #[test]
    fn sixteen_bit_bands_are_stretched_to_their_range() {
        let b = Bands {
            width: 2,
            height: 1,
            count: 4,
            eight_bit: false,
            samples: vec![100., 200., 300., 9999., 500., 400., 100., 0.],
        };
        let rgb = bands_to_rgb(b, &DecodeOptions::default()).unwrap();
        // range over bands 1-3: 100..500
        assert_eq!(rgb.pixels, vec![0, 64, 128, 255, 191, 0]);
    }
}
