//! Score heatmaps over an image: scores of rectangles (patches, tiles) averaged where they
//! overlap, stretched over a perceptual colour ramp and laid over a grey copy of the image, so
//! that where the colour is, the picture still shows what is there.

use super::RgbImage;

/// A scored rectangle: `((x, y, w, h), score)` in image pixels.
pub type Cell = ((u32, u32, u32, u32), f32);

/// Inferno's ramp at eight stops (dark purple → red → yellow): perceptually ordered and
/// readable in grey print, unlike a rainbow.
const RAMP: [[f32; 3]; 8] = [
    [0.0, 0.0, 4.0],
    [40.0, 11.0, 84.0],
    [101.0, 21.0, 110.0],
    [159.0, 42.0, 99.0],
    [212.0, 72.0, 66.0],
    [245.0, 125.0, 21.0],
    [250.0, 193.0, 39.0],
    [252.0, 255.0, 164.0],
];

/// The ramp's colour at `t` in `[0, 1]`.
pub fn ramp(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (RAMP.len() - 1) as f32;
    let i = (t.floor() as usize).min(RAMP.len() - 2);
    let f = t - i as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (RAMP[i][c] * (1.0 - f) + RAMP[i + 1][c] * f).round() as u8;
    }
    out
}

/// Per-pixel mean of the scores of the rectangles `(x, y, w, h)` covering it (`NaN` where none
/// does), `width × height`, row-major.
pub fn mean_cover(width: u32, height: u32, cells: &[Cell]) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let mut sum = vec![0f32; w * h];
    let mut count = vec![0u32; w * h];
    for &((x, y, cw, ch), score) in cells {
        let (x0, y0) = (x as usize, y as usize);
        let x1 = (x0 + cw as usize).min(w);
        let y1 = (y0 + ch as usize).min(h);
        for row in y0..y1 {
            for i in row * w + x0..row * w + x1 {
                sum[i] += score;
                count[i] += 1;
            }
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &c)| if c == 0 { f32::NAN } else { s / c as f32 })
        .collect()
}

/// How scores map onto the colour ramp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// `low` dark to `high` bright, the same for every picture (scores outside are clamped):
    /// colours can be compared between pictures, and a weak score stays dark.
    Fixed { low: f32, high: f32 },
    /// From the lowest mean score in the picture to the highest: every picture uses the whole
    /// ramp, so bright means "the best here", however weak.
    Auto,
}

impl std::str::FromStr for Scale {
    type Err = String;

    /// `auto`, or `LOW,HIGH` (`0,1`).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Scale::Auto);
        }
        let parsed = s.split_once(',').and_then(|(a, b)| {
            Some((a.trim().parse::<f32>().ok()?, b.trim().parse::<f32>().ok()?))
        });
        match parsed {
            Some((low, high)) if low.is_finite() && high.is_finite() && low < high => {
                Ok(Scale::Fixed { low, high })
            }
            Some(_) => Err(format!("{s:?}: LOW must be less than HIGH")),
            None => Err(format!("{s:?}: give auto, or LOW,HIGH such as 0,1")),
        }
    }
}

/// `img` in grey with the scores over it, coloured on `scale`; `alpha` is the colour's share.
/// Returns the picture and the `(low, high)` the ramp spans.
pub fn overlay(img: &RgbImage, cells: &[Cell], alpha: f32, scale: Scale) -> (RgbImage, (f32, f32)) {
    let mean = mean_cover(img.width, img.height, cells);
    let (lo, hi) = match scale {
        Scale::Fixed { low, high } => (low, high),
        Scale::Auto => mean
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            }),
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut pixels = Vec::with_capacity(img.pixels.len());
    for (px, &m) in img.pixels.chunks_exact(3).zip(&mean) {
        let grey = 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32;
        if m.is_finite() {
            let c = ramp((m - lo) / span);
            for ch in c {
                pixels.push((grey * (1.0 - alpha) + ch as f32 * alpha).round() as u8);
            }
        } else {
            pixels.extend([grey as u8; 3]);
        }
    }
    (
        RgbImage {
            width: img.width,
            height: img.height,
            pixels,
        },
        (lo, hi),
    )
}

/// Height of the legend under a heatmap.
const LEGEND_HEIGHT: u32 = 62;
/// A legend is at least this wide (a small image gets white margins).
const LEGEND_MIN_WIDTH: u32 = 360;

/// Numbers for the ticks of a bar from `low` to `high`: enough decimals to tell the ticks
/// apart, no more.
fn tick_text(v: f32, span: f32) -> String {
    let decimals = (1.0 - (span / 4.0).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// `img` with a legend under it: `title` (what the colours measure, and on which scale), then
/// the colour bar from `low` to `high` with its values at five ticks.
pub fn with_colour_bar(img: &RgbImage, (low, high): (f32, f32), title: &str) -> RgbImage {
    use crate::canvas::{Anchor, BLACK, Canvas, GREY};
    let width = img.width.max(LEGEND_MIN_WIDTH);
    let mut c = Canvas::new(width, img.height + LEGEND_HEIGHT);
    let left = (width - img.width) / 2;
    for y in 0..img.height {
        for x in 0..img.width {
            let i = ((y * img.width + x) * 3) as usize;
            let p = &img.pixels[i..i + 3];
            c.set((left + x) as i64, y as i64, [p[0], p[1], p[2]]);
        }
    }
    let top = img.height as f32;
    let (x0, x1) = (14i64, width as i64 - 14);
    // The title, cut with … to the width.
    let mut t = title.to_string();
    let room = (x1 - x0) as f32;
    if c.text_width(&t, 12.0) > room {
        while t.pop().is_some() && c.text_width(&format!("{t}…"), 12.0) > room {}
        t.push('…');
    }
    c.text(&t, x0 as f32, top + 13.0, 12.0, BLACK, Anchor::Left);
    let (bar_top, bar_bottom) = (top as i64 + 24, top as i64 + 38);
    for x in x0..x1 {
        let color = ramp((x - x0) as f32 / (x1 - x0 - 1).max(1) as f32);
        c.fill(x, bar_top, x + 1, bar_bottom, color);
    }
    c.outline(x0 - 1, bar_top - 1, x1 + 1, bar_bottom + 1, 1, GREY);
    let span = if high > low { high - low } else { 1.0 };
    for i in 0..5 {
        let f = i as f32 / 4.0;
        let x = x0 as f32 + f * (x1 - x0 - 1) as f32;
        c.fill(x as i64, bar_bottom + 1, x as i64 + 1, bar_bottom + 5, GREY);
        let anchor = match i {
            0 => Anchor::Left,
            4 => Anchor::Right,
            _ => Anchor::Center,
        };
        let label = tick_text(low + f * span, span);
        c.text(&label, x, top + 52.0, 11.0, BLACK, anchor);
    }
    RgbImage {
        width,
        height: img.height + LEGEND_HEIGHT,
        pixels: c.into_pixels(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_cells_average() {
        let m = mean_cover(4, 1, &[((0, 0, 3, 1), 1.0), ((1, 0, 3, 1), 3.0)]);
        assert_eq!(m, vec![1.0, 2.0, 2.0, 3.0]);
        assert!(mean_cover(2, 1, &[((0, 0, 1, 1), 1.0)])[1].is_nan());
    }

    #[test]
    fn scales_parse_and_fixed_scales_keep_weak_scores_dark() {
        assert_eq!("auto".parse::<Scale>(), Ok(Scale::Auto));
        assert_eq!(
            "0, 1".parse::<Scale>(),
            Ok(Scale::Fixed {
                low: 0.0,
                high: 1.0
            })
        );
        assert!("1,0".parse::<Scale>().is_err());
        assert!("0".parse::<Scale>().is_err());
        // A label scoring 0.0016–0.0088 (softmax shares): dark on 0–1, the whole ramp on auto.
        let img = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![0; 6],
        };
        let cells = [((0, 0, 1, 1), 0.0016), ((1, 0, 1, 1), 0.0088)];
        let fixed = Scale::Fixed {
            low: 0.0,
            high: 1.0,
        };
        let (pic, span) = overlay(&img, &cells, 1.0, fixed);
        assert_eq!(span, (0.0, 1.0));
        assert!(pic.pixels.iter().all(|&v| v < 20), "{:?}", pic.pixels);
        let (pic, span) = overlay(&img, &cells, 1.0, Scale::Auto);
        assert_eq!(span, (0.0016, 0.0088));
        assert_eq!(&pic.pixels[3..], &ramp(1.0));
    }

    #[test]
    fn the_legend_shows_the_bar_and_its_values() {
        let img = RgbImage {
            width: 100,
            height: 40,
            pixels: vec![128; 100 * 40 * 3],
        };
        let out = with_colour_bar(&img, (0.0, 1.0), "P(Forest)");
        assert_eq!(
            (out.width, out.height),
            (LEGEND_MIN_WIDTH, 40 + LEGEND_HEIGHT)
        );
        let px = |x: u32, y: u32| {
            let i = ((y * out.width + x) * 3) as usize;
            [out.pixels[i], out.pixels[i + 1], out.pixels[i + 2]]
        };
        // The image, centred; white margins beside it.
        assert_eq!(px(130, 10), [128; 3]);
        assert_eq!(px(5, 10), [255; 3]);
        // The bar runs dark to bright from left to right.
        let y = 40 + 31;
        assert_eq!(px(14, y), ramp(0.0));
        assert_eq!(px(out.width - 15, y), ramp(1.0));
        assert_eq!(tick_text(0.25, 1.0), "0.25");
        assert_eq!(tick_text(0.0016, 0.0072), "0.0016");
        assert_eq!(tick_text(0.5, 2.0), "0.50");
    }

    #[test]
    fn the_ramp_runs_dark_to_bright() {
        let lum = |c: [u8; 3]| c.iter().map(|&v| v as u32).sum::<u32>();
        let steps: Vec<u32> = (0..=10).map(|i| lum(ramp(i as f32 / 10.0))).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        assert_eq!(ramp(0.0), [0, 0, 4]);
        assert_eq!(ramp(1.0), [252, 255, 164]);
    }
}
