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

/// `img` in grey with the scores over it: the lowest mean score dark, the highest bright
/// yellow; `alpha` is the colour's share. Returns the picture and the `(low, high)` the ramp
/// spans.
pub fn overlay(img: &RgbImage, cells: &[Cell], alpha: f32) -> (RgbImage, (f32, f32)) {
    let mean = mean_cover(img.width, img.height, cells);
    let (lo, hi) = mean
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
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
    fn the_ramp_runs_dark_to_bright() {
        let lum = |c: [u8; 3]| c.iter().map(|&v| v as u32).sum::<u32>();
        let steps: Vec<u32> = (0..=10).map(|i| lum(ramp(i as f32 / 10.0))).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        assert_eq!(ramp(0.0), [0, 0, 4]);
        assert_eq!(ramp(1.0), [252, 255, 164]);
    }
}
