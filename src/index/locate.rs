//! "Find a feature in an image" (CLIP-rsicd's demo): the image is cut into overlapping patches
//! that cover it to every edge, each patch is embedded, and its cosine with a text says how
//! much of the text is there.

use anyhow::Result;
use rayon::prelude::*;

use crate::data::cover_grid;
use crate::encoder::{ClipEncoder, normalized};
use crate::imagery::{self, RgbImage};

/// A patch `(x, y, w, h)` of the image and its cosine with the text.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchScore {
    pub patch: (u32, u32, u32, u32),
    pub score: f32,
}

/// Scores every `patch`-pixel window, `stride` apart, of `image` against `text` (an
/// embedding; normalised here). Patches are decoded in parallel and encoded `batch_size` at a
/// time.
pub fn locate(
    clip: &ClipEncoder,
    image: &RgbImage,
    text: &[f32],
    patch: u32,
    stride: u32,
    batch_size: usize,
) -> Result<Vec<PatchScore>> {
    let text = normalized(text);
    let grid = cover_grid(image.width, image.height, patch, stride);
    let mut out = Vec::with_capacity(grid.len());
    for rects in grid.chunks(batch_size.max(1)) {
        let pixels: Vec<Vec<f32>> = rects
            .par_iter()
            .map(|&r| clip.preprocessor.preprocess(&imagery::crop(image, r)?))
            .collect::<Result<_>>()?;
        for (&r, e) in rects.iter().zip(clip.embed_pixels(&pixels)?) {
            out.push(PatchScore {
                patch: r,
                score: super::search::dot(&normalized(&e), &text),
            });
        }
    }
    Ok(out)
}
