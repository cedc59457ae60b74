//! From an image file to the tensor CLIP reads, in two steps with a seam between them:
//! [`decode`] (file → 8-bit RGB: formats, bands, pixel and memory caps) and [`preprocess`]
//! (RGB → normalised floats, exactly as transformers' `CLIPImageProcessor`), with Pillow's
//! resampling filters in `resample`. This module holds what both sides share: the RGB image,
//! the decode options, image walks and crops.

mod decode;
pub mod heatmap;
mod preprocess;
mod resample;

pub use decode::{decode_bytes, decode_rgb, load_decoded, load_rgb, load_rgb_at_least};
pub use preprocess::{
    CLIP_MEAN, CLIP_STD, ConvertRgb, CropOffsets, Preprocessor, Resize, resize_rgb,
};
pub use resample::Filter;

use std::path::Path;

use anyhow::{Result, bail};

/// Pillow refuses images over twice its `MAX_IMAGE_PIXELS` as decompression bombs; so do we.
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// An image refused before decoding because its header claims more pixels than the cap (a
/// type of its own so that callers can tell it from a damaged file: the server answers 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyPixels {
    pub width: u32,
    pub height: u32,
    pub limit: u64,
}

impl std::fmt::Display for TooManyPixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (w, h) = (self.width, self.height);
        write!(
            f,
            "image of {w}×{h} = {} pixels exceeds the limit of {} (raise it with --max-pixels, or cut the scene into tiles)",
            w as u64 * h as u64,
            self.limit
        )
    }
}

impl std::error::Error for TooManyPixels {}

/// An image as decoded, before it is made RGB: its colours straight (not composited), its
/// alpha when it has one, and whether the colours came from a palette (Pillow's modes `P` and
/// `1`). What becomes of the alpha, and how the image is resized, depends on the pipeline:
/// transformers composites onto white first ([`Decoded::over_white`]); OpenCLIP resizes the
/// image in its own mode and drops the alpha after ([`ConvertRgb`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub rgb: RgbImage,
    /// One byte a pixel, when the file has transparency.
    pub alpha: Option<Vec<u8>>,
    pub palette: bool,
}

impl From<RgbImage> for Decoded {
    fn from(rgb: RgbImage) -> Self {
        Self {
            rgb,
            alpha: None,
            palette: false,
        }
    }
}

/// An 8-bit RGB image, rows top to bottom, `[r, g, b]` per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Writes the image as a PNG file, atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        use image::ImageEncoder;
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png).write_image(
            &self.pixels,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        )?;
        crate::atomic::write_file(path, &png)
    }
}

/// How files become RGB.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// 1-based band numbers to use as red, green, blue (default: the first three, or the single
    /// band repeated for grayscale). A single band here makes a grayscale image.
    pub bands: Option<Vec<usize>>,
    /// Files whose header claims more pixels than this are refused before decoding.
    pub max_pixels: u64,
    /// Says which bands became red, green and blue when an image had more than three and no
    /// `bands` were given (shared by the clones of these options: one note per run).
    pub band_note: BandNote,
    /// Opt-in speed for large JPEGs: where the model's input is at most half an image's size,
    /// decode it at 1/2, 1/4 or 1/8 scale inside the inverse DCT (Pillow's
    /// `Image.draft("RGB", size)`), several times less work than decoding every pixel and
    /// resizing. The pixels then differ a little from transformers' (which decodes in full), so
    /// it is never on by default; embeddings made with it are keyed apart in caches and indexes.
    pub jpeg_draft: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            bands: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            band_note: BandNote::default(),
            jpeg_draft: false,
        }
    }
}

/// The first default band choice of a run, kept for the caller to show once (four bands in
/// Sentinel-2 order, B, G, R, NIR, would otherwise silently be shown as R, G, B = B, G, R).
#[derive(Debug, Clone, Default)]
pub struct BandNote(std::sync::Arc<std::sync::OnceLock<String>>);

impl BandNote {
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, note: impl FnOnce() -> String) {
        self.0.get_or_init(note);
    }
}

/// The 0-based bands shown as red, green, blue: `given` (1-based; one band for grey or three),
/// checked against the `count` bands of the `what` ("image", "scene"); by default band 1 as grey
/// when there are fewer than three `colour` bands, else bands 1, 2, 3. The flag says the default
/// chose among more than three (worth telling the user: Sentinel-2's order is B, G, R, NIR).
pub fn rgb_bands(
    given: Option<&[usize]>,
    count: usize,
    colour: usize,
    what: &str,
) -> Result<([usize; 3], bool)> {
    let Some(list) = given else {
        return Ok(if colour < 3 {
            ([0; 3], false)
        } else {
            ([0, 1, 2], colour > 3)
        });
    };
    if list.len() != 1 && list.len() != 3 {
        bail!(
            "--bands takes one band or three (red,green,blue), got {}",
            list.len()
        );
    }
    if let Some(b) = list.iter().find(|&&b| b == 0 || b > count) {
        bail!("band {b} does not exist: the {what} has {count} band(s), numbered from 1");
    }
    Ok(if list.len() == 1 {
        ([list[0] - 1; 3], false)
    } else {
        ([list[0] - 1, list[1] - 1, list[2] - 1], false)
    })
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
