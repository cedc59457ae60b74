//! An RGB picture to draw on: filled rectangles, lines and text, saved as PNG. The report's
//! charts (`eval::plot`) and the score heatmaps' colour bars (`imagery::heatmap`)
//! draw here.
//!
//! Drawn by hand rather than with plotters: plotters' built-in (ab_glyph) text ignores each
//! glyph's side bearing, so words come out as "fo ld ers" and "en semble". Glyph outlines and
//! coverage come from `ab_glyph` (laid out with advances, bearings and kerning), PNG encoding
//! from `image`; what is left — filled rectangles and lines — is a few lines.

use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::{Context, Result};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT).expect("the embedded DejaVu Sans is a valid font")
}

pub type Rgb = [u8; 3];
pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [110, 110, 110];
pub const LIGHT_GREY: Rgb = [225, 225, 225];
pub const BAR: Rgb = [66, 114, 196];
pub const RED: Rgb = [200, 40, 40];

/// Where a text's reference point is: its left, centre or right end, on the baseline's
/// vertical middle of the capital height.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Left,
    Center,
    Right,
}

/// An RGB picture being drawn.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pixels: Vec<u8>,
    font: FontRef<'static>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
            font: font(),
        }
    }

    /// A canvas holding `pixels` (interleaved RGB, `width × height`).
    pub fn from_pixels(width: u32, height: u32, pixels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), (width * height * 3) as usize, "RGB pixels");
        Self {
            width,
            height,
            pixels,
            font: font(),
        }
    }

    /// The pixels drawn (interleaved RGB).
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// Sets pixel `(x, y)` (outside the canvas: nothing).
    pub fn set(&mut self, x: i64, y: i64, color: Rgb) {
        self.blend(x, y, color, 1.0);
    }

    fn blend(&mut self, x: i64, y: i64, color: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 || alpha <= 0.0 {
            return;
        }
        let i = ((y as u32 * self.width + x as u32) * 3) as usize;
        let a = alpha.min(1.0);
        for (px, &new) in self.pixels[i..i + 3].iter_mut().zip(&color) {
            let old = *px as f32;
            *px = (old + (new as f32 - old) * a).round() as u8;
        }
    }

    /// Fills the rectangle from `(x0, y0)` to `(x1, y1)` (exclusive).
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.blend(x, y, color, 1.0);
            }
        }
    }

    /// A rectangle's outline, `w` pixels wide, inside the rectangle.
    pub fn outline(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, w: i64, color: Rgb) {
        self.fill(x0, y0, x1, y0 + w, color);
        self.fill(x0, y1 - w, x1, y1, color);
        self.fill(x0, y0, x0 + w, y1, color);
        self.fill(x1 - w, y0, x1, y1, color);
    }

    /// A vertical line, dashed when `dash` > 0 (dash and gap of that length).
    pub fn vline(&mut self, x: i64, y0: i64, y1: i64, w: i64, color: Rgb, dash: i64) {
        for y in y0..y1 {
            if dash == 0 || ((y - y0) / dash) % 2 == 0 {
                self.fill(x, y, x + w, y + 1, color);
            }
        }
    }

    /// A straight line from `(x0, y0)` to `(x1, y1)`, `w` pixels thick, dashed when `dash` > 0
    /// (dash and gap of that length along the line).
    pub fn line(
        &mut self,
        (x0, y0): (f32, f32),
        (x1, y1): (f32, f32),
        w: i64,
        color: Rgb,
        dash: f32,
    ) {
        let length = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        let steps = (length.ceil() as usize).max(1);
        let half = w / 2;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            if dash > 0.0 && ((t * length / dash) as i64) % 2 == 1 {
                continue;
            }
            let (x, y) = (
                (x0 + (x1 - x0) * t).round() as i64,
                (y0 + (y1 - y0) * t).round() as i64,
            );
            self.fill(x - half, y - half, x - half + w, y - half + w, color);
        }
    }

    /// The width in pixels of `text` at `size` pixels per em.
    pub fn text_width(&self, text: &str, size: f32) -> f32 {
        let f = self.font.as_scaled(PxScale::from(size));
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                w += f.kern(p, id);
            }
            w += f.h_advance(id);
            prev = Some(id);
        }
        w
    }

    /// Draws `text` at `size` pixels per em; `(x, y)` is the anchor point, `y` the middle of the
    /// capital height (so a text centred on a row's middle looks centred).
    pub fn text(&mut self, text: &str, x: f32, y: f32, size: f32, color: Rgb, anchor: Anchor) {
        let width = self.text_width(text, size);
        let left = match anchor {
            Anchor::Left => x,
            Anchor::Center => x - width / 2.0,
            Anchor::Right => x - width,
        };
        let baseline = y + size * 0.36;
        for (px, py, a) in self.glyph_coverage(text, size, left, baseline) {
            self.blend(px, py, color, a);
        }
    }

    /// Draws `text` turned a quarter to the left (read from bottom to top), centred on column
    /// `x`, its last letter at `y_top` (labels hanging under a matrix's columns).
    pub fn text_up(&mut self, text: &str, x: f32, y_top: f32, size: f32, color: Rgb) {
        let width = self.text_width(text, size);
        // Laid out horizontally with the capital height's middle on v = 0, then turned: along
        // the text (u) becomes up the picture, the letters' tops (v < 0) face left.
        for (u, v, a) in self.glyph_coverage(text, size, 0.0, size * 0.36) {
            self.blend(x as i64 + v, (y_top + width) as i64 - u, color, a);
        }
    }

    /// Pixel coverage of `text` laid out from `(left, baseline)`: advances, kerning, and each
    /// glyph placed by its own bounds (bearings included).
    fn glyph_coverage(
        &self,
        text: &str,
        size: f32,
        left: f32,
        baseline: f32,
    ) -> Vec<(i64, i64, f32)> {
        let scale = PxScale::from(size);
        let f = self.font.as_scaled(scale);
        let mut out = Vec::new();
        let mut caret = left;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, point(caret, baseline));
            if let Some(outlined) = self.font.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                outlined.draw(|gx, gy, a| {
                    out.push((b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, a));
                });
            }
            caret += f.h_advance(id);
            prev = Some(id);
        }
        out
    }

    /// Encodes the picture as PNG at `path`, atomically.
    pub fn save(self, path: &Path) -> Result<()> {
        let img = image::RgbImage::from_raw(self.width, self.height, self.pixels)
            .expect("the canvas holds width × height pixels");
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .with_context(|| format!("{}: cannot encode PNG", path.display()))?;
        crate::atomic::write_file(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_laid_out_with_the_fonts_advances() {
        let c = Canvas::new(1, 1);
        // "ll" is exactly two advances of "l": no extra gaps between glyphs.
        let (l, ll) = (c.text_width("l", 20.0), c.text_width("ll", 20.0));
        assert!((ll - 2.0 * l).abs() < 1e-3);
        // Glyphs sit at their bearings: the ink of "il" starts right of its box's left edge
        // by the side bearing, and the two glyphs' ink does not touch.
        let cov = c.glyph_coverage("ll", 40.0, 0.0, 40.0);
        let mut xs: Vec<i64> = cov.iter().filter(|p| p.2 > 0.5).map(|p| p.0).collect();
        xs.sort();
        xs.dedup();
        let gaps = xs.windows(2).filter(|w| w[1] - w[0] > 1).count();
        assert_eq!(gaps, 1, "two separate strokes: {xs:?}");
        assert!(xs[0] >= 1, "the first stroke starts at its bearing: {xs:?}");
    }
}
