//! Preprocessing exactly as transformers' `CLIPImageProcessor` (PIL path) does it, driven by
//! `preprocessor_config.json`: resize (Pillow's filters, see `resample`), centre crop, rescale
//! and normalise into the `(3, H, W)` floats CLIP reads.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use super::resample::{self, Filter};
use super::{Decoded, RgbImage};

/// CLIP's published per-channel mean and standard deviation (OpenAI's training statistics), the
/// defaults of `CLIPImageProcessor`.
#[allow(clippy::excessive_precision)] // digit for digit as published
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

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
    /// skyscribe's own key (transformers ignores it): whose centre-crop offsets to use.
    #[serde(default)]
    crop_offsets: CropOffsets,
    /// skyscribe's own key: when the image becomes RGB (default: `last` for torchvision's
    /// offsets, which only OpenCLIP imports write, else `first`).
    #[serde(default)]
    convert_rgb: Option<ConvertRgb>,
}

/// When an image with transparency or a palette becomes RGB, which changes its pixels. The two
/// reference pipelines differ: transformers' `CLIPImageProcessor` converts first (alpha
/// composited onto white, palettes expanded), then resizes; OpenCLIP's torchvision transform
/// resizes the image in its own mode — Pillow resizes RGBA and LA with premultiplied alpha and
/// palette (and 1-bit) images with nearest neighbour whatever the filter — crops, and only then
/// converts, dropping the alpha. Models imported from OpenCLIP carry `"convert_rgb": "last"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertRgb {
    #[default]
    First,
    Last,
}

/// Where a centre crop starts when the margin `size - crop` is odd. The two reference
/// pipelines differ: transformers floors `(size - crop) / 2`, torchvision (OpenCLIP's
/// preprocessing) rounds it half to even, so a 35-pixel side cropped to 32 starts at 1 in one and
/// at 2 in the other. Models imported from OpenCLIP carry `"crop_offsets": "torchvision"` in
/// their `preprocessor_config.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CropOffsets {
    #[default]
    Transformers,
    Torchvision,
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
    pub crop_offsets: CropOffsets,
    pub convert_rgb: ConvertRgb,
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
    pub fn clip_default(size: u32) -> Self {
        Self {
            resize: Resize::ShortestEdge(size),
            resample: 3,
            crop: Some((size, size)),
            rescale_factor: Some(1.0 / 255.0),
            mean_std: Some((CLIP_MEAN, CLIP_STD)),
            crop_offsets: CropOffsets::Transformers,
            convert_rgb: ConvertRgb::First,
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
            let mean = match raw.image_mean {
                Some(v) => three(v, "image_mean")?,
                None => CLIP_MEAN,
            };
            let std = match raw.image_std {
                Some(v) => three(v, "image_std")?,
                None => CLIP_STD,
            };
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
            crop_offsets: raw.crop_offsets,
            convert_rgb: raw.convert_rgb.unwrap_or(match raw.crop_offsets {
                CropOffsets::Torchvision => ConvertRgb::Last,
                CropOffsets::Transformers => ConvertRgb::First,
            }),
        })
    }

    /// What the embedding cache and the index key on: every setting that changes pixels.
    /// Written as the derived `Debug` of this struct was before `convert_rgb` existed, so that
    /// keys of models in transformers' order stay what they were; OpenCLIP's order adds to it
    /// (its pixels of RGBA and palette images differ).
    pub fn identity(&self) -> String {
        let base = format!(
            "Preprocessor {{ resize: {:?}, resample: {:?}, crop: {:?}, rescale_factor: {:?}, \
             mean_std: {:?}, crop_offsets: {:?} }}",
            self.resize,
            self.resample,
            self.crop,
            self.rescale_factor,
            self.mean_std,
            self.crop_offsets
        );
        match self.convert_rgb {
            ConvertRgb::First => base,
            ConvertRgb::Last => format!("{base}, convert_rgb: Last"),
        }
    }

    /// The `(height, width)` of the output (saturating: an output without a crop that would
    /// not fit in `u32` is refused by [`Self::resize_and_crop`]).
    pub fn output_size(&self, img_h: u32, img_w: u32) -> (u32, u32) {
        match self.crop {
            Some(c) => c,
            None => {
                let (h, w) = self.resized_size(img_h, img_w);
                (h.min(u32::MAX as u64) as u32, w.min(u32::MAX as u64) as u32)
            }
        }
    }

    /// `(width, height)` an image must keep for this preprocessing to see the pixels it would
    /// see in full (what [`super::load_rgb_at_least`] may decode a JPEG down to): the resize
    /// target; `None` when nothing is resized.
    pub fn draft_size(&self) -> Option<(u32, u32)> {
        match self.resize {
            Resize::None => None,
            Resize::Exact { height, width } => Some((width, height)),
            // Both sides at least n keeps the shorter one at least n.
            Resize::ShortestEdge(n) => Some((n, n)),
        }
    }

    /// The `(height, width)` the image is resized to, before any crop. In `u64`: a skinny
    /// image's long side, scaled with its short one, can pass any 32-bit size.
    fn resized_size(&self, h: u32, w: u32) -> (u64, u64) {
        match self.resize {
            Resize::None => (h as u64, w as u64),
            Resize::Exact { height, width } => (height as u64, width as u64),
            Resize::ShortestEdge(n) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((n as u64 * long as u64) as f64 / short as f64) as u64;
                if w <= h {
                    (new_long, n as u64)
                } else {
                    (n as u64, new_long)
                }
            }
        }
    }

    /// Resize + centre crop, in 8-bit (transformers resizes through a PIL image, so the
    /// resized pixels are rounded to 8 bits before anything else).
    ///
    /// Only the part of the resized image that the crop keeps is computed (bit for bit what
    /// resizing whole and cropping gives), so the work and memory are bounded by the output:
    /// a 1 × 1,000,000 image, whose shortest-edge resize alone would be 224 × 224,000,000
    /// pixels, costs a 224 × 224 crop.
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        let (h, w) = self.resized_size(img.height, img.width);
        let Some((ch, cw)) = self.crop else {
            // No crop: the whole resize is the output, so it must be one a model can take.
            const MAX_OUTPUT: u64 = 1 << 26;
            if h * w > MAX_OUTPUT {
                bail!(
                    "a {}×{} image would be resized to {w}×{h} pixels, more than any model input \
                     (this preprocessor does not crop)",
                    img.width,
                    img.height
                );
            }
            return if (h, w) == (img.height as u64, img.width as u64) {
                Ok(img.clone())
            } else {
                resize_rgb(img, w as u32, h as u32, self.resample)
            };
        };
        let top = crop_offset(h, ch, self.crop_offsets);
        let left = crop_offset(w, cw, self.crop_offsets);
        // The rows and columns of the resized image inside the crop.
        let (y0, y1) = (top.max(0) as u64, (top + ch as i64).min(h as i64) as u64);
        let (x0, x1) = (left.max(0) as u64, (left + cw as i64).min(w as i64) as u64);
        let window = resample::Window {
            x: x0 as usize,
            y: y0 as usize,
            width: (x1 - x0) as usize,
            height: (y1 - y0) as usize,
        };
        let inside = if (h, w) == (img.height as u64, img.width as u64) {
            super::crop(
                img,
                (
                    x0 as u32,
                    y0 as u32,
                    window.width as u32,
                    window.height as u32,
                ),
            )?
        } else {
            let filter = Filter::from_pil(self.resample)
                .ok_or_else(|| anyhow!("unknown resample filter {}", self.resample))?;
            RgbImage {
                width: window.width as u32,
                height: window.height as u32,
                pixels: resample::resize_rgb8_window(
                    &img.pixels,
                    img.width as usize,
                    img.height as usize,
                    w as usize,
                    h as usize,
                    window,
                    filter,
                ),
            }
        };
        if (window.width, window.height) == (cw as usize, ch as usize) {
            return Ok(inside);
        }
        // The crop is larger than the resized image on some side: zero padding around it.
        let (dx, dy) = ((x0 as i64 - left) as usize, (y0 as i64 - top) as usize);
        let mut pixels = vec![0u8; ch as usize * cw as usize * 3];
        for (row, src) in inside.pixels.chunks_exact(window.width * 3).enumerate() {
            let d = ((dy + row) * cw as usize + dx) * 3;
            pixels[d..d + src.len()].copy_from_slice(src);
        }
        Ok(RgbImage {
            width: cw,
            height: ch,
            pixels,
        })
    }

    /// The full pipeline: `(3, H, W)` floats, channel-major, ready for the vision tower.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Vec<f32>> {
        Ok(self.normalize(&self.resize_and_crop(img)?))
    }

    /// The full pipeline from an image as decoded, converted to RGB where this model's
    /// pipeline converts it ([`ConvertRgb`]).
    pub fn preprocess_decoded(&self, img: Decoded) -> Result<Vec<f32>> {
        let rgb = match self.convert_rgb {
            ConvertRgb::First => self.resize_and_crop(&img.over_white())?,
            ConvertRgb::Last => self.resize_and_crop_then_convert(&img)?,
        };
        Ok(self.normalize(&rgb))
    }

    /// OpenCLIP's order: resize (and crop) the image in its own mode, as Pillow does under
    /// torchvision's `Resize`, then make it RGB by dropping the alpha.
    fn resize_and_crop_then_convert(&self, img: &Decoded) -> Result<RgbImage> {
        let (h, w) = self.resized_size(img.rgb.height, img.rgb.width);
        let resized = (h, w) != (img.rgb.height as u64, img.rgb.width as u64);
        if img.palette && self.resample != 0 {
            // Pillow resizes modes P and 1 with nearest neighbour, whatever was asked.
            let nearest = Self {
                resample: 0,
                ..self.clone()
            };
            return nearest.resize_and_crop(&img.rgb);
        }
        let alpha = match &img.alpha {
            // Pillow premultiplies only to resize, and not for nearest neighbour.
            Some(a) if resized && self.resample != 0 && !img.palette => a,
            _ => return self.resize_and_crop(&img.rgb),
        };
        // RGBA → RGBa (Pillow's rgbA2rgba), resized band by band, → RGBA (rgba2rgbA).
        let premultiplied = RgbImage {
            pixels: img
                .rgb
                .pixels
                .chunks_exact(3)
                .zip(alpha)
                .flat_map(|(p, &a)| [p[0], p[1], p[2]].map(|c| muldiv255(c, a)))
                .collect(),
            ..img.rgb
        };
        let alpha_as_rgb = RgbImage {
            pixels: alpha.iter().flat_map(|&a| [a; 3]).collect(),
            ..img.rgb
        };
        let mut colour = self.resize_and_crop(&premultiplied)?;
        let alpha = self.resize_and_crop(&alpha_as_rgb)?;
        for (p, a) in colour
            .pixels
            .chunks_exact_mut(3)
            .zip(alpha.pixels.chunks_exact(3))
        {
            let a = a[0] as u32;
            if a != 0 && a != 255 {
                for c in p {
                    *c = ((255 * *c as u32) / a).min(255) as u8;
                }
            }
        }
        Ok(colour)
    }

    /// Rescale and normalise into `(3, H, W)` floats, channel-major.
    fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let n = (img.width * img.height) as usize;
        // A byte has 256 values: each channel's floats are looked up, computed once each the
        // way transformers computes them (rescale in float64, cast to float32, normalise in
        // float32), so the table gives the same bits as the arithmetic per pixel.
        let table: [[f32; 256]; 3] = std::array::from_fn(|c| {
            let (mean, std) = match self.mean_std {
                Some((m, s)) => (m[c], s[c]),
                None => (0.0, 1.0),
            };
            std::array::from_fn(|v| {
                let v = match self.rescale_factor {
                    Some(f) => (v as f64 * f) as f32,
                    None => v as f32,
                };
                (v - mean) / std
            })
        });
        let mut out = vec![0f32; 3 * n];
        let (r, rest) = out.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        for (((p, r), g), b) in img.pixels.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = table[0][p[0] as usize];
            *g = table[1][p[1] as usize];
            *b = table[2][p[2] as usize];
        }
        out
    }
}

/// Pillow's `MULDIV255`: `a · b / 255`, rounded, in integers.
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    (((t >> 8) + t) >> 8) as u8
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

/// The offset of a centre crop of `crop` pixels in a side of `size` (negative: zero padding).
fn crop_offset(size: u64, crop: u32, how: CropOffsets) -> i64 {
    let margin = size as i64 - crop as i64;
    match how {
        // Python floor division on possibly negative numbers.
        CropOffsets::Transformers => margin.div_euclid(2),
        // torchvision pads `(crop - size) // 2` on the left/top first, then crops at
        // `round(margin / 2)`, Python's round: half to even.
        CropOffsets::Torchvision if margin < 0 => -((-margin) / 2),
        CropOffsets::Torchvision => {
            let half = margin / 2;
            if margin % 2 == 1 && half % 2 == 1 {
                half + 1
            } else {
                half
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_of_transformers_order_is_the_old_derived_debug() {
        // The struct as it was before `convert_rgb`: its derived Debug is what keys were made of.
        mod old {
            #[derive(Debug)]
            #[allow(dead_code)]
            pub struct Preprocessor {
                pub resize: super::Resize,
                pub resample: u32,
                pub crop: Option<(u32, u32)>,
                pub rescale_factor: Option<f64>,
                pub mean_std: Option<([f32; 3], [f32; 3])>,
                pub crop_offsets: super::CropOffsets,
            }
        }
        let p = Preprocessor::clip_default(224);
        let was = old::Preprocessor {
            resize: p.resize,
            resample: p.resample,
            crop: p.crop,
            rescale_factor: p.rescale_factor,
            mean_std: p.mean_std,
            crop_offsets: p.crop_offsets,
        };
        assert_eq!(p.identity(), format!("{was:?}"));
        let open_clip = Preprocessor {
            convert_rgb: ConvertRgb::Last,
            ..p.clone()
        };
        assert_ne!(open_clip.identity(), p.identity());
    }

    #[test]
    fn shortest_edge_truncates_like_transformers() {
        let p = Preprocessor::clip_default(224);
        // 224 * 300 / 200 = 336 exactly; 224 * 333 / 250 = 298.37 -> 298.
        assert_eq!(p.resized_size(200, 300), (224, 336));
        assert_eq!(p.resized_size(333, 250), (298, 224));
        assert_eq!(p.resized_size(64, 64), (224, 224));
    }

    fn crop_only(h: u32, w: u32) -> Preprocessor {
        Preprocessor {
            resize: Resize::None,
            crop: Some((h, w)),
            ..Preprocessor::clip_default(224)
        }
    }

    #[test]
    fn center_crop_uses_floor_offsets_and_pads() {
        let img = RgbImage {
            width: 5,
            height: 1,
            pixels: (0..15).collect(),
        };
        let c = crop_only(1, 2).resize_and_crop(&img).unwrap();
        // (5 - 2) // 2 = 1: columns 1 and 2.
        assert_eq!(c.pixels, vec![3, 4, 5, 6, 7, 8]);
        let padded = crop_only(3, 5).resize_and_crop(&img).unwrap();
        assert_eq!(&padded.pixels[..15], &[0; 15]);
        assert_eq!(&padded.pixels[15..30], &img.pixels[..]);
        assert_eq!(&padded.pixels[30..], &[0; 15]);
        // Padding on both axes: the 5×1 image in the middle of 7×3.
        let both = crop_only(3, 7).resize_and_crop(&img).unwrap();
        assert_eq!(&both.pixels[21..24], &[0; 3]);
        assert_eq!(&both.pixels[24..39], &img.pixels[..]);
        assert_eq!(&both.pixels[39..42], &[0; 3]);
    }

    #[test]
    fn a_skinny_image_costs_its_crop_not_its_resize() {
        // 1 × 1,000,000: resized whole, 224 × 224,000,000 pixels (150 GB). Each row has its own
        // grey level (row / 4000), so the crop shows the rows around the middle.
        let h = 1_000_000u32;
        let img = RgbImage {
            width: 1,
            height: h,
            pixels: (0..h).flat_map(|y| [(y / 4000) as u8; 3]).collect(),
        };
        let p = Preprocessor::clip_default(224);
        let out = p.resize_and_crop(&img).unwrap();
        assert_eq!((out.width, out.height), (224, 224));
        // Rows 499,999.5 ± 0.5 of the input are all grey level 124 or 125.
        assert!(
            out.pixels.iter().all(|&v| v == 124 || v == 125),
            "{:?}",
            &out.pixels[..9]
        );
        // The same image on its side.
        let wide = RgbImage {
            width: h,
            height: 1,
            pixels: img.pixels.clone(),
        };
        let out = p.resize_and_crop(&wide).unwrap();
        assert_eq!((out.width, out.height), (224, 224));
        assert!(out.pixels.iter().all(|&v| v == 124 || v == 125));
        // Without a crop the output is the resize itself: refused with the sizes, not allocated.
        let no_crop = Preprocessor {
            crop: None,
            ..Preprocessor::clip_default(224)
        };
        let err = no_crop.resize_and_crop(&img).unwrap_err().to_string();
        assert!(
            err.contains("1×1000000") && err.contains("224×224000000"),
            "{err}"
        );
    }

    #[test]
    fn torchvision_offsets_round_half_to_even() {
        // Python: round((size - crop) / 2) for 33..40 cropped to 32, and padding by
        // (crop - size) // 2 on the left for smaller sides.
        let got: Vec<i64> = (33..=40)
            .map(|s| crop_offset(s, 32, CropOffsets::Torchvision))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 2, 2, 3, 4, 4]);
        let floor: Vec<i64> = (33..=40)
            .map(|s| crop_offset(s, 32, CropOffsets::Transformers))
            .collect();
        assert_eq!(floor, vec![0, 1, 1, 2, 2, 3, 3, 4]);
        assert_eq!(crop_offset(3, 6, CropOffsets::Torchvision), -1);
        assert_eq!(crop_offset(3, 6, CropOffsets::Transformers), -2);
    }
}
