//! Image files to 8-bit RGB: JPEG through libjpeg-turbo (Pillow's decoder, so pixels match
//! transformers' exactly), PNG / WebP / BMP / GIF through `image`, and TIFF with any number of
//! 8/16/32-bit or float bands through `tiff`, with band selection and stretching. Headers are
//! checked against the pixel cap and the memory a decode needs before anything is allocated.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::{DecodeOptions, Decoded, RgbImage};

/// Decodes a file into 8-bit RGB (transparency composited onto white, as transformers'
/// `convert_to_rgb` does). Every error names the file.
pub fn load_rgb(path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    load_decoded(path, opts, None).map(Decoded::over_white)
}

/// [`load_rgb`] for a consumer that needs at least `(width, height)` pixels: with
/// [`DecodeOptions::jpeg_draft`], a JPEG decodes at the smallest of 1/8, 1/4, 1/2 scale that
/// keeps both sides at least that size, choosing the scale as Pillow's `Image.draft` does
/// (libjpeg's scaled inverse DCT, the same pixels as Pillow's draft mode). Without the option,
/// and for other formats, the same as [`load_rgb`].
pub fn load_rgb_at_least(path: &Path, opts: &DecodeOptions, size: (u32, u32)) -> Result<RgbImage> {
    load_decoded(path, opts, Some(size)).map(Decoded::over_white)
}

/// A file decoded as it is stored (see [`Decoded`]), before anything turns it into RGB; `at_least`
/// as [`load_rgb_at_least`]. Every error names the file.
pub fn load_decoded(
    path: &Path,
    opts: &DecodeOptions,
    at_least: Option<(u32, u32)>,
) -> Result<Decoded> {
    let draft = at_least.filter(|_| opts.jpeg_draft);
    decode(Source::File(path), opts, draft).with_context(|| format!("{}", path.display()))
}

/// Pillow's draft scale for an image of `(w, h)` asked for at least `(want_w, want_h)`: the
/// largest of 8, 4, 2 not above `min(w / want_w, h / want_h)` (integer division), else 1.
fn draft_scale((w, h): (u32, u32), (want_w, want_h): (u32, u32)) -> u32 {
    let ratio = (w / want_w.max(1)).min(h / want_h.max(1));
    [8, 4, 2, 1].into_iter().find(|&s| ratio >= s).unwrap_or(1)
}

/// Decodes an image held in memory (an upload) into 8-bit RGB, with the same formats, caps and
/// checks as a file.
pub fn decode_rgb(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage> {
    decode(Source::Bytes(bytes), opts, None).map(Decoded::over_white)
}

/// [`decode_rgb`] as [`load_decoded`]: the image as it is stored.
pub fn decode_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded> {
    decode(Source::Bytes(bytes), opts, None)
}

/// Whether the image's colours are palette indices (or 1-bit), as Pillow opens them (modes `P`
/// and `1`): PNGs of colour type 3 or 1-bit grey (read from the header, which `image` does not
/// report), and GIFs.
fn is_palette(head: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Gif => true,
        // Signature (8), IHDR length and type (8), width and height (8), then bit depth and
        // colour type.
        ImageFormat::Png => matches!(head.get(24..26), Some([_, 3]) | Some([1, 0])),
        _ => false,
    }
}

/// Where the encoded image is: a file is read as the decoder goes (a large TIFF is not held
/// twice), bytes already in memory are read in place.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

fn open_file(path: &Path) -> Result<BufReader<File>> {
    Ok(BufReader::new(
        File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?,
    ))
}

/// `draft`: the size a JPEG may be decoded down to (see [`load_rgb_at_least`]).
fn decode(src: Source, opts: &DecodeOptions, draft: Option<(u32, u32)>) -> Result<Decoded> {
    let mut head = [0u8; 32];
    let head: &[u8] = match src {
        Source::File(path) => {
            let n = File::open(path)
                .map_err(|e| anyhow!("cannot open: {e}"))?
                .read(&mut head)
                .map_err(|e| anyhow!("cannot read: {e}"))?;
            &head[..n]
        }
        Source::Bytes(b) => &b[..b.len().min(32)],
    };
    if head.is_empty() {
        bail!("empty file (0 bytes)");
    }
    let format = image::guess_format(head)
        .map_err(|_| anyhow!("not an image in a known format (JPEG, PNG, WebP, TIFF, BMP, GIF)"))?;
    if format == ImageFormat::Tiff {
        return match src {
            Source::File(path) => decode_tiff(open_file(path)?, opts),
            Source::Bytes(b) => decode_tiff(Cursor::new(b), opts),
        }
        .map(Decoded::from);
    }
    if format == ImageFormat::Jpeg {
        let bytes: std::borrow::Cow<[u8]> = match src {
            Source::File(path) => std::fs::read(path)
                .map_err(|e| anyhow!("cannot read: {e}"))?
                .into(),
            Source::Bytes(b) => b.into(),
        };
        check_jpeg_complete(&bytes)?;
        if opts.bands.is_none()
            && let Some(img) = decode_jpeg_like_pillow(&bytes, opts, draft)?
        {
            return Ok(img.into());
        }
    }
    if format == ImageFormat::Gif {
        let gif = match src {
            Source::File(path) => decode_gif(open_file(path)?, opts)?,
            Source::Bytes(b) => decode_gif(Cursor::new(b), opts)?,
        };
        if let Some(img) = gif {
            let mut decoded = dynamic_to_rgb(img, opts)?;
            decoded.palette = true;
            return Ok(decoded);
        }
    }
    let mut decoded = match src {
        Source::File(path) => decode_other(ImageReader::new(open_file(path)?), format, opts),
        Source::Bytes(b) => decode_other(ImageReader::new(Cursor::new(b)), format, opts),
    }?;
    decoded.palette = is_palette(head, format);
    Ok(decoded)
}

/// PNG, WebP, BMP, GIF (and JPEGs libjpeg cannot make RGB) through `image`.
fn decode_other<R: BufRead + Seek>(
    mut reader: ImageReader<R>,
    format: ImageFormat,
    opts: &DecodeOptions,
) -> Result<Decoded> {
    reader.set_format(format);
    reader.no_limits();
    let decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("bad {format:?} header: {e}"))?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, opts)?;
    // What `DynamicImage::from_decoder` would allocate, asked for fallibly first.
    ensure_memory(decoder.total_bytes())?;
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| anyhow!("cannot decode {format:?}: {e}"))?;
    dynamic_to_rgb(img, opts)
}

/// A GIF's first frame as RGBA (palette and transparency applied), when it covers the whole
/// logical screen; `None` for a frame placed inside a larger screen (`image` composes those).
///
/// Decoded here rather than through `image`, whose `gif` 0.14 reads interlaced frames row by
/// row and reports "image truncated" for some valid ones (Pillow 13 interlaces every GIF it
/// writes; an 81 × 45 one fails): the frame's data is read whole, in stream order, and its
/// rows put back in place from GIF's four interlace passes.
fn decode_gif<R: Read>(reader: R, opts: &DecodeOptions) -> Result<Option<DynamicImage>> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    // The pixel cap and `ensure_memory` below bound what is allocated.
    options.set_memory_limit(gif::MemoryLimit::Unlimited);
    let mut decoder = options
        .read_info(reader)
        .map_err(|e| anyhow!("bad Gif header: {e}"))?;
    let (screen_w, screen_h) = (decoder.width() as u32, decoder.height() as u32);
    check_size(screen_w, screen_h, opts)?;
    let frame = decoder
        .next_frame_info()
        .map_err(|e| anyhow!("cannot decode Gif: {e}"))?
        .ok_or_else(|| anyhow!("a Gif without any frame"))?;
    let (w, h) = (frame.width as u32, frame.height as u32);
    if (frame.left, frame.top, w, h) != (0, 0, screen_w, screen_h) {
        return Ok(None);
    }
    let interlaced = frame.interlaced;
    let row = w as usize * 4;
    ensure_memory(2 * row as u64 * h as u64)?;
    let mut stream = vec![0u8; row * h as usize];
    if !decoder
        .fill_buffer(&mut stream)
        .map_err(|e| anyhow!("cannot decode Gif: {e}"))?
    {
        bail!("cannot decode Gif: the image data ends before its last row");
    }
    let pixels = if interlaced {
        let mut out = vec![0u8; stream.len()];
        for (i, y) in interlaced_rows(h as usize).enumerate() {
            out[y * row..(y + 1) * row].copy_from_slice(&stream[i * row..(i + 1) * row]);
        }
        out
    } else {
        stream
    };
    let img = image::RgbaImage::from_raw(w, h, pixels).expect("w × h RGBA pixels");
    Ok(Some(DynamicImage::ImageRgba8(img)))
}

/// The rows of an interlaced GIF of `h` rows in the order its data holds them: every 8th row
/// from 0, every 8th from 4, every 4th from 2, every 2nd from 1.
fn interlaced_rows(h: usize) -> impl Iterator<Item = usize> {
    [(0, 8), (4, 8), (2, 4), (1, 2)]
        .into_iter()
        .flat_map(move |(start, step)| (start..h).step_by(step))
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

/// Decodes a JPEG with libjpeg-turbo's decoder (through mozjpeg): the same integer IDCT and
/// "fancy" chroma upsampling as Pillow, so pixels are bit-identical to what transformers sees.
/// `None` for colour spaces libjpeg cannot turn into RGB (CMYK, YCCK): the caller falls back.
///
/// libjpeg reports errors by unwinding: mozjpeg's error handler raises them with
/// `resume_unwind`, which does not run the panic hook, so catching them here prints nothing and
/// leaves the host program's hook alone.
fn decode_jpeg_like_pillow(
    bytes: &[u8],
    opts: &DecodeOptions,
    draft: Option<(u32, u32)>,
) -> Result<Option<RgbImage>> {
    let max_pixels = opts.max_pixels;
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
                max_pixels,
                ..DecodeOptions::default()
            },
        )?;
        let mut d = d;
        let scale = draft.map_or(1, |want| draft_scale((w, h), want));
        if scale > 1 {
            // libjpeg's scale_num / scale_denom: 1/s as s/8ths; the output is ⌈w / s⌉ wide.
            d.scale((8 / scale) as u8);
        }
        let (w, h) = (w.div_ceil(scale), h.div_ceil(scale));
        let mut pixels = allocate::<u8>(w as u64 * h as u64 * 3)?;
        let mut started = d.rgb().map_err(|e| anyhow!("cannot decode JPEG: {e}"))?;
        if (started.width(), started.height()) != (w as usize, h as usize) {
            bail!(
                "libjpeg decodes at {}×{}, not the {w}×{h} asked for",
                started.width(),
                started.height()
            );
        }
        started
            .read_scanlines_into::<u8>(&mut pixels)
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

/// A zeroed buffer of `n` values, or an error if the memory cannot be had (see
/// [`ensure_memory`]).
fn allocate<T: Clone + Default>(n: u64) -> Result<Vec<T>> {
    ensure_memory(n.saturating_mul(std::mem::size_of::<T>() as u64))?;
    Ok(vec![T::default(); n as usize])
}

/// Fails unless `bytes` more can be allocated: an image's header can ask for far more than the
/// machine has, and a failed allocation aborts the whole process (losing the other images of
/// the run) where it should fail this one image. Compared with the memory the system has
/// available, then reserved (not touched) once to be sure.
fn ensure_memory(bytes: u64) -> Result<()> {
    if let Some(available) = available_memory()
        && bytes > available
    {
        bail!(
            "decoding needs {:.1} GB of memory, and only {:.1} GB are available",
            bytes as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    let n = usize::try_from(bytes).map_err(|_| anyhow!("image too large for this machine"))?;
    Vec::<u8>::new().try_reserve_exact(n).map_err(|_| {
        anyhow!(
            "cannot allocate {:.1} GB to decode this image",
            bytes as f64 / 1e9
        )
    })
}

/// Memory the system can give without swapping (`MemAvailable`), where the OS says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn check_size(w: u32, h: u32, opts: &DecodeOptions) -> Result<()> {
    let pixels = w as u64 * h as u64;
    if w == 0 || h == 0 {
        bail!("image has no pixels ({w}×{h})");
    }
    if pixels > opts.max_pixels {
        return Err(anyhow::Error::new(super::TooManyPixels {
            width: w,
            height: h,
            limit: opts.max_pixels,
        }));
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

fn dynamic_to_rgb(img: DynamicImage, opts: &DecodeOptions) -> Result<Decoded> {
    let (width, height) = (img.width(), img.height());
    let bands = match img {
        // 8-bit images as Pillow holds them: grey is repeated, palettes are expanded by the
        // decoder, transparency is kept beside the colours (composited onto white by
        // [`Decoded::over_white`] as transformers does, or dropped after resizing as OpenCLIP
        // does).
        DynamicImage::ImageRgb8(b) if opts.bands.is_none() => {
            return Ok(RgbImage {
                width,
                height,
                pixels: b.into_raw(),
            }
            .into());
        }
        DynamicImage::ImageRgba8(b) if opts.bands.is_none() => {
            let raw = b.into_raw();
            return Ok(Decoded {
                rgb: RgbImage {
                    width,
                    height,
                    pixels: raw
                        .chunks_exact(4)
                        .flat_map(|p| [p[0], p[1], p[2]])
                        .collect(),
                },
                alpha: Some(raw.chunks_exact(4).map(|p| p[3]).collect()),
                palette: false,
            });
        }
        DynamicImage::ImageLumaA8(b) if opts.bands.is_none() => {
            let raw = b.into_raw();
            return Ok(Decoded {
                rgb: RgbImage {
                    width,
                    height,
                    pixels: raw.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
                },
                alpha: Some(raw.chunks_exact(2).map(|p| p[1]).collect()),
                palette: false,
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
    bands_to_rgb(bands, opts).map(Decoded::from)
}

impl Decoded {
    /// The image as transformers' `convert_to_rgb` makes it: transparency composited onto
    /// white (Pillow's `alpha_composite`).
    pub fn over_white(self) -> RgbImage {
        let Some(alpha) = self.alpha else {
            return self.rgb;
        };
        let pixels = self
            .rgb
            .pixels
            .chunks_exact(3)
            .zip(alpha)
            .flat_map(|(p, a)| over_white([p[0], p[1], p[2]], a))
            .collect();
        RgbImage { pixels, ..self.rgb }
    }
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
    let (pick, defaulted) = super::rgb_bands(opts.bands.as_deref(), b.count, b.count, "image")?;
    if defaulted {
        opts.band_note.set(|| {
            format!(
                "images with {} bands: bands 1, 2, 3 were used as red, green, blue \
                 (choose others with --bands, e.g. 4,3,2 for Sentinel-2's true colour)",
                b.count
            )
        });
    }
    let n = (b.width * b.height) as usize;
    let (offset, scale) = if b.eight_bit {
        (0.0f32, 1.0f32)
    } else {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for i in 0..n {
            for &c in &pick {
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

fn decode_tiff<R: Read + Seek>(reader: R, opts: &DecodeOptions) -> Result<RgbImage> {
    use tiff::decoder::{Decoder, DecodingResult, Limits};
    let mut dec = Decoder::new(reader).map_err(|e| anyhow!("bad TIFF header: {e}"))?;
    let (w, h) = dec
        .dimensions()
        .map_err(|e| anyhow!("bad TIFF header: {e}"))?;
    check_size(w, h, opts)?;
    let colortype = dec
        .colortype()
        .map_err(|e| anyhow!("unsupported TIFF: {e}"))?;
    let count = colortype.num_samples() as usize;
    // The decoded samples, and their f32 copy.
    let bytes_per_sample = (colortype.bit_depth() as u64).div_ceil(8) + 4;
    ensure_memory(w as u64 * h as u64 * count as u64 * bytes_per_sample)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interlaced_gif_rows_come_in_four_passes() {
        let order: Vec<usize> = interlaced_rows(11).collect();
        assert_eq!(order, vec![0, 8, 4, 2, 6, 10, 1, 3, 5, 7, 9]);
        for h in 1..40 {
            let mut rows: Vec<usize> = interlaced_rows(h).collect();
            rows.sort();
            assert_eq!(rows, (0..h).collect::<Vec<_>>(), "{h}");
        }
    }

    #[test]
    fn draft_scales_are_pillows() {
        // Pillow: min(w // want_w, h // want_h), then the first of 8, 4, 2, 1 not above it.
        assert_eq!(draft_scale((1024, 1024), (224, 224)), 4);
        assert_eq!(draft_scale((224, 224), (224, 224)), 1);
        assert_eq!(draft_scale((447, 2000), (224, 224)), 1);
        assert_eq!(draft_scale((448, 2000), (224, 224)), 2);
        assert_eq!(draft_scale((4000, 3000), (64, 64)), 8);
        assert_eq!(draft_scale((200, 150), (64, 64)), 2);
        assert_eq!(draft_scale((10, 10), (0, 0)), 8);
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

    #[test]
    fn corrupt_jpegs_fail_without_touching_the_panic_hook() {
        // libjpeg's errors unwind through the decoder; the host program's panic hook must
        // neither be replaced nor called (it would print a panic for every bad file).
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let previous = std::panic::take_hook();
        let marker = 7u64; // captured, so the hook has an address of its own
        let ours: Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> = Box::new(move |_| {
            CALLS.fetch_add(marker as usize / 7, Ordering::SeqCst);
        });
        let address = &*ours as *const _ as *const ();
        std::panic::set_hook(ours);
        // A JPEG start, a corrupt header, and an end marker (so it is not "truncated").
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x03, 0x42];
        bytes.extend([0x13; 64]);
        bytes.extend([0xFF, 0xD9]);
        let err = decode_jpeg_like_pillow(&bytes, &DecodeOptions::default(), None).unwrap_err();
        let calls_during_decode = CALLS.load(Ordering::SeqCst);
        let hook = std::panic::take_hook();
        let unchanged = &*hook as *const _ as *const () == address;
        std::panic::set_hook(hook);
        // The hook is still ours: a real panic reaches it.
        let _ = std::panic::catch_unwind(|| panic!("expected"));
        let calls_after_panic = CALLS.load(Ordering::SeqCst);
        std::panic::set_hook(previous);
        assert!(err.to_string().contains("JPEG"), "{err}");
        assert!(unchanged, "the panic hook was replaced");
        assert_eq!(calls_during_decode, 0);
        assert_eq!(calls_after_panic, 1);
    }
}
