//! The report's pictures: a confusion matrix and horizontal bar charts, drawn on an RGB canvas
//! and saved as PNG.
//!
//! Drawn here rather than with plotters: plotters' built-in (ab_glyph) text ignores each
//! glyph's side bearing, so words come out as "fo ld ers" and "en semble", and its charts
//! could not drop an empty first tick or keep "100 %" inside the picture. Glyph outlines and
//! coverage come from `ab_glyph` (laid out with advances, bearings and kerning), PNG encoding
//! from `image`; what is left — filled rectangles, lines and a colour scale — is a few lines.

use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::{Context, Result};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

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

    /// The title and, under it, the subtitle (cut with … to the picture's width).
    fn titles(&mut self, t: &Titles) {
        self.text(t.title, 12.0, 20.0, 18.0, BLACK, Anchor::Left);
        let room = self.width as f32 - 24.0;
        let mut sub = t.subtitle.to_string();
        if self.text_width(&sub, 12.0) > room {
            while sub.pop().is_some() && self.text_width(&format!("{sub}…"), 12.0) > room {}
            sub.push('…');
        }
        self.text(&sub, 12.0, 44.0, 12.0, GREY, Anchor::Left);
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

/// ColorBrewer's sequential "Blues", white to dark blue, at `t` in [0, 1].
pub fn blues(t: f64) -> Rgb {
    const STOPS: [Rgb; 9] = [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    [
        mix(STOPS[i][0], STOPS[i + 1][0]),
        mix(STOPS[i][1], STOPS[i + 1][1]),
        mix(STOPS[i][2], STOPS[i + 1][2]),
    ]
}

/// Black or white, whichever reads better on `background`.
fn ink_on(background: Rgb) -> Rgb {
    let luma =
        0.299 * background[0] as f64 + 0.587 * background[1] as f64 + 0.114 * background[2] as f64;
    if luma < 140.0 { WHITE } else { BLACK }
}

/// What a picture is of: its title and a line saying model, data, wording and size.
pub struct Titles<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
}

/// A confusion matrix: rows the true classes, columns the predictions, each cell coloured by
/// its share of the row (so the diagonal is per-class recall) and labelled with its count.
/// Sized to the class count: readable at 10, 30 and 60 classes.
pub fn confusion(path: &Path, t: &Titles, names: &[String], counts: &[Vec<usize>]) -> Result<()> {
    let n = names.len().max(1);
    let cell: i64 = (720 / n as i64).clamp(16, 44);
    let label_size = if cell >= 24 { 13.0 } else { 11.0 };
    let count_size = (cell as f32 * 0.42).clamp(8.0, 13.0);
    let probe = Canvas::new(1, 1);
    let longest = names
        .iter()
        .map(|s| probe.text_width(s, label_size))
        .fold(0.0f32, f32::max)
        .ceil() as i64;
    let (top, left) = (70i64, longest + 46);
    let matrix = cell * n as i64;
    let (scale_w, right) = (16i64, 90i64);
    let bottom = longest + 44;
    let width = left + matrix + 30 + scale_w + right;
    let height = top + matrix + bottom;
    let mut c = Canvas::new(width as u32, height as u32);
    c.titles(t);
    for (r, row) in counts.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &k) in row.iter().enumerate() {
            let share = if total > 0 {
                k as f64 / total as f64
            } else {
                0.0
            };
            let (x0, y0) = (left + p as i64 * cell, top + r as i64 * cell);
            let bg = blues(share);
            c.fill(x0, y0, x0 + cell, y0 + cell, bg);
            if k > 0 && cell >= 18 {
                let mid = (x0 as f32 + cell as f32 / 2.0, y0 as f32 + cell as f32 / 2.0);
                c.text(
                    &k.to_string(),
                    mid.0,
                    mid.1,
                    count_size,
                    ink_on(bg),
                    Anchor::Center,
                );
            }
        }
    }
    // The diagonal (correct predictions) outlined, the matrix framed.
    for d in 0..n as i64 {
        let (x0, y0) = (left + d * cell, top + d * cell);
        c.outline(
            x0,
            y0,
            x0 + cell,
            y0 + cell,
            if cell >= 24 { 2 } else { 1 },
            [200, 120, 0],
        );
    }
    c.outline(
        left - 1,
        top - 1,
        left + matrix + 1,
        top + matrix + 1,
        1,
        GREY,
    );
    for (i, name) in names.iter().enumerate() {
        let mid = top as f32 + (i as f32 + 0.5) * cell as f32;
        c.text(
            name,
            (left - 6) as f32,
            mid,
            label_size,
            BLACK,
            Anchor::Right,
        );
        let col = left as f32 + (i as f32 + 0.5) * cell as f32;
        c.text_up(name, col, (top + matrix + 6) as f32, label_size, BLACK);
    }
    // Axis titles.
    c.text(
        "predicted class",
        (left + matrix / 2) as f32,
        (top + matrix + longest + 28) as f32,
        14.0,
        BLACK,
        Anchor::Center,
    );
    let axis = "true class";
    let aw = c.text_width(axis, 14.0);
    c.text_up(
        axis,
        16.0,
        top as f32 + matrix as f32 / 2.0 - aw / 2.0,
        14.0,
        BLACK,
    );
    // The colour scale: share of the true class's images.
    let sx = left + matrix + 30;
    let steps = matrix.max(1);
    for y in 0..steps {
        let share = 1.0 - y as f64 / steps as f64;
        c.fill(sx, top + y, sx + scale_w, top + y + 1, blues(share));
    }
    c.outline(sx - 1, top - 1, sx + scale_w + 1, top + matrix + 1, 1, GREY);
    for (share, label) in [(1.0, "100 %"), (0.5, "50 %"), (0.0, "0 %")] {
        let y = top as f32 + (1.0 - share as f32) * matrix as f32;
        c.fill(sx + scale_w, y as i64, sx + scale_w + 4, y as i64 + 1, GREY);
        c.text(
            label,
            (sx + scale_w + 7) as f32,
            y,
            11.0,
            BLACK,
            Anchor::Left,
        );
    }
    c.text(
        "share of the row",
        (sx + scale_w + 7) as f32,
        (top + matrix + 18) as f32,
        11.0,
        GREY,
        Anchor::Left,
    );
    c.save(path)
}

/// Horizontal bars of values in [0, 1], one labelled row each, in the order given, with
/// value labels, a light 0–100 % grid and, when given, a dashed chance level.
pub fn bars(path: &Path, t: &Titles, rows: &[(String, f64)], chance: Option<f64>) -> Result<()> {
    let (row_h, bar_h, label_size) = (24i64, 16i64, 12.0f32);
    let probe = Canvas::new(1, 1);
    let longest = rows
        .iter()
        .map(|(s, _)| probe.text_width(s, label_size))
        .fold(0.0f32, f32::max)
        .ceil() as i64;
    let left = (longest + 24).max(120);
    let plot_w = 560i64;
    let (top, right, bottom) = (76i64, 70i64, 40i64);
    let width = left + plot_w + right;
    let height = top + row_h * rows.len() as i64 + bottom;
    let mut c = Canvas::new(width as u32, height as u32);
    c.titles(t);
    let plot_bottom = top + row_h * rows.len() as i64;
    let x_of = |v: f64| left + (v.clamp(0.0, 1.0) * plot_w as f64).round() as i64;
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = x_of(tick);
        c.vline(x, top - 4, plot_bottom, 1, LIGHT_GREY, 0);
        c.text(
            &format!("{:.0} %", tick * 100.0),
            x as f32,
            (plot_bottom + 14) as f32,
            11.0,
            GREY,
            Anchor::Center,
        );
    }
    // The chance level first, so that bars and their values are drawn over it.
    if let Some(p) = chance {
        let x = x_of(p);
        c.vline(x, top - 10, plot_bottom, 2, RED, 5);
        c.text(
            &format!("chance {:.1} %", p * 100.0),
            (x + 4) as f32,
            (top - 14) as f32,
            11.0,
            RED,
            Anchor::Left,
        );
    }
    for (i, (label, v)) in rows.iter().enumerate() {
        let y0 = top + i as i64 * row_h + (row_h - bar_h) / 2;
        let mid = (top + i as i64 * row_h) as f32 + row_h as f32 / 2.0;
        c.fill(left, y0, x_of(*v).max(left + 1), y0 + bar_h, BAR);
        c.text(
            label,
            (left - 8) as f32,
            mid,
            label_size,
            BLACK,
            Anchor::Right,
        );
        let value = format!("{:.1} %", v * 100.0);
        let vx = (x_of(*v) + 5) as f32;
        let vw = c.text_width(&value, 11.0);
        c.fill(
            vx as i64 - 1,
            mid as i64 - 7,
            (vx + vw) as i64 + 2,
            mid as i64 + 7,
            WHITE,
        );
        c.text(&value, vx, mid, 11.0, BLACK, Anchor::Left);
    }
    c.vline(left, top - 4, plot_bottom, 1, GREY, 0);
    c.save(path)
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

    #[test]
    fn blues_runs_from_white_to_dark_blue() {
        assert_eq!(blues(0.0), [247, 251, 255]);
        assert_eq!(blues(1.0), [8, 48, 107]);
        assert_eq!(ink_on(blues(1.0)), WHITE);
        assert_eq!(ink_on(blues(0.1)), BLACK);
    }
}
