//! Pillow's `Image.resize` for 8-bit RGB, reproduced bit for bit: separable convolution with
//! Pillow's filters and support scaling (antialiased when shrinking), coefficients rounded to
//! 22 fractional bits, horizontal pass first with an 8-bit intermediate image.
//!
//! Written by hand because exactness is the point: transformers resizes through Pillow, and
//! general-purpose resizers (fast_image_resize included) differ from it by a level or two in a
//! noticeable share of pixels.

use std::f64::consts::PI;

use crate::simd::multiversioned;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters, numbered as `PIL.Image.Resampling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    pub fn from_pil(n: u32) -> Option<Self> {
        Some(match n {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * PI;
        x.sin() / x
    }
}

/// For each output position of a range: the first input index and the fixed-point weights.
pub struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

impl Coefficients {
    /// The input indices the range reads: `first..last`.
    fn input_span(&self) -> (usize, usize) {
        let first = self.bounds.first().map_or(0, |b| b.0);
        let last = self
            .bounds
            .iter()
            .map(|&(min, n)| min + n)
            .max()
            .unwrap_or(first);
        (first, last)
    }
}

/// Pillow's coefficients for output positions `range` of a resize from `in_size` to
/// `out_size`. Each position's weights depend on that position alone, so computing a range is
/// the same as computing all and keeping the range — which is what bounds a resize by the
/// pixels it keeps (a 1 × 1,000,000 image resized to a 224-pixel shortest edge would be 224
/// million rows long; its centre crop needs a few).
fn coefficients(
    in_size: usize,
    out_size: usize,
    range: std::ops::Range<usize>,
    filter: Filter,
) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(range.len());
    let mut weights = vec![0i32; range.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (i, xx) in range.enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            weights[i * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        bounds,
        ksize,
        weights,
    }
}

/// Pillow's `clip8`: the fixed-point sum back to a byte.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding term every sum starts from (Pillow's `1 << (PRECISION_BITS - 1)`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// A rectangle of a resized image: `x, y` its top-left corner, `width × height` its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Resizes interleaved RGB8 `pixels` (`w`×`h`) to `out_w`×`out_h` as Pillow does.
pub fn resize_rgb8(
    pixels: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> Vec<u8> {
    let whole = Window {
        x: 0,
        y: 0,
        width: out_w,
        height: out_h,
    };
    resize_rgb8_window(pixels, w, h, out_w, out_h, whole, filter)
}

/// The `window` of Pillow's resize of `pixels` (`w`×`h`) to `out_w`×`out_h`, bit for bit what
/// resizing whole and cropping gives, at the cost of the window alone: the horizontal pass
/// computes the window's columns of just the input rows its vertical taps read. `window` must
/// lie inside `out_w`×`out_h`.
///
/// Sums are `i32`, as Pillow's are (22 fractional bits leave room for 255 × the filter's
/// positive lobes), so the results are Pillow's bit for bit. The vertical pass runs along whole
/// rows — each output row is the weighted sum of a few input rows — which the compiler turns
/// into vector code; Pillow's own loop goes pixel by pixel.
pub fn resize_rgb8_window(
    pixels: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    window: Window,
    filter: Filter,
) -> Vec<u8> {
    assert!(
        window.x + window.width <= out_w && window.y + window.height <= out_h,
        "window {window:?} outside {out_w}×{out_h}"
    );
    if filter == Filter::Nearest {
        return nearest(pixels, w, h, out_w, out_h, window);
    }
    let columns = window.x..window.x + window.width;
    let rows = window.y..window.y + window.height;
    // The vertical pass's coefficients say which input rows the window reads.
    let vertical = (out_h != h).then(|| coefficients(h, out_h, rows.clone(), filter));
    let (first, last) = match &vertical {
        Some(c) => c.input_span(),
        None => (rows.start, rows.end),
    };
    let band = &pixels[first * w * 3..last * w * 3];
    let horizontal;
    let (cur, cur_w) = if out_w != w {
        let c = coefficients(w, out_w, columns, filter);
        horizontal = resize_rows(band, w, &c);
        (horizontal.as_slice(), window.width)
    } else if window.width == w {
        (band, w)
    } else {
        horizontal = band
            .chunks_exact(w * 3)
            .flat_map(|row| &row[columns.start * 3..columns.end * 3])
            .copied()
            .collect();
        (horizontal.as_slice(), window.width)
    };
    match vertical {
        Some(c) => resize_columns(cur, cur_w * 3, first, &c),
        None => cur.to_vec(),
    }
}

multiversioned! {
    /// The horizontal pass: every row of `pixels` (`w` pixels wide) to the positions of `c`.
    fn resize_rows(pixels: &[u8], w: usize, c: &Coefficients) -> Vec<u8> = resize_rows_plain
}

#[inline(always)]
fn resize_rows_plain(pixels: &[u8], w: usize, c: &Coefficients) -> Vec<u8> {
    let out_w = c.bounds.len();
    let rows = pixels.len() / (w * 3);
    let mut out = vec![0u8; out_w * rows * 3];
    for (row, out_row) in pixels
        .chunks_exact(w * 3)
        .zip(out.chunks_exact_mut(out_w * 3))
    {
        for ((&(xmin, xmax), k), o) in c
            .bounds
            .iter()
            .zip(c.weights.chunks_exact(c.ksize))
            .zip(out_row.chunks_exact_mut(3))
        {
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (p, &kx) in row[xmin * 3..(xmin + xmax) * 3]
                .chunks_exact(3)
                .zip(&k[..xmax])
            {
                r += p[0] as i32 * kx;
                g += p[1] as i32 * kx;
                b += p[2] as i32 * kx;
            }
            o.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

multiversioned! {
    /// The vertical pass: rows of `row_len` bytes, the first of them input row `first`, to the
    /// positions of `c`.
    fn resize_columns(pixels: &[u8], row_len: usize, first: usize, c: &Coefficients) -> Vec<u8> = resize_columns_plain
}

#[inline(always)]
fn resize_columns_plain(pixels: &[u8], row_len: usize, first: usize, c: &Coefficients) -> Vec<u8> {
    let mut out = vec![0u8; row_len * c.bounds.len()];
    let mut acc = vec![0i32; row_len];
    for ((&(ymin, ymax), k), out_row) in c
        .bounds
        .iter()
        .zip(c.weights.chunks_exact(c.ksize))
        .zip(out.chunks_exact_mut(row_len))
    {
        acc.fill(HALF);
        let ymin = ymin - first;
        for (row, &ky) in pixels[ymin * row_len..(ymin + ymax) * row_len]
            .chunks_exact(row_len)
            .zip(&k[..ymax])
        {
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's NEAREST resize (the `window` of it): the source pixel under each output pixel's
/// centre.
fn nearest(pixels: &[u8], w: usize, h: usize, out_w: usize, out_h: usize, win: Window) -> Vec<u8> {
    let mut out = vec![0u8; win.width * win.height * 3];
    for (i, yy) in (win.y..win.y + win.height).enumerate() {
        let sy = (((yy as f64 + 0.5) * h as f64 / out_h as f64) as usize).min(h - 1);
        for (j, xx) in (win.x..win.x + win.width).enumerate() {
            let sx = (((xx as f64 + 0.5) * w as f64 / out_w as f64) as usize).min(w - 1);
            let s = (sy * w + sx) * 3;
            let d = (i * win.width + j) * 3;
            out[d..d + 3].copy_from_slice(&pixels[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's resampling written plainly, pixel by pixel with wide sums: what the row-wise,
    /// vectorised passes must reproduce.
    fn resize_plainly(p: &[u8], w: usize, h: usize, ow: usize, oh: usize, f: Filter) -> Vec<u8> {
        let pass = |p: &[u8], n: usize, stride: usize, lines: usize, line_step: usize, out_n| {
            let c = coefficients(n, out_n, 0..out_n, f);
            let mut out = vec![0u8; out_n * lines * 3];
            for line in 0..lines {
                for (o, &(min, len)) in c.bounds.iter().enumerate() {
                    for ch in 0..3 {
                        let mut acc = HALF as i64;
                        for t in 0..len {
                            let i = line * line_step + (min + t) * stride + ch;
                            acc += p[i] as i64 * c.weights[o * c.ksize + t] as i64;
                        }
                        let o = if stride == 3 {
                            (line * out_n + o) * 3 + ch
                        } else {
                            (o * lines + line) * 3 + ch
                        };
                        out[o] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
                    }
                }
            }
            out
        };
        let p = if ow != w {
            pass(p, w, 3, h, w * 3, ow)
        } else {
            p.to_vec()
        };
        if oh != h {
            pass(&p, h, ow * 3, ow, 3, oh)
        } else {
            p
        }
    }

    /// The convolution filters (all but nearest neighbour).
    const CONVOLUTIONS: [Filter; 5] = [
        Filter::Bicubic,
        Filter::Bilinear,
        Filter::Lanczos,
        Filter::Box,
        Filter::Hamming,
    ];

    #[test]
    fn vectorised_passes_give_the_plain_sums_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let filters = CONVOLUTIONS;
        // Up, down, one side only, odd sizes, and a 1-pixel image.
        for (w, h, ow, oh) in [
            (64, 64, 224, 224),
            (1000, 371, 224, 83),
            (37, 53, 37, 11),
            (29, 31, 113, 31),
            (1, 1, 5, 3),
        ] {
            let img: Vec<u8> = (0..w * h * 3).map(|_| rng.random()).collect();
            for f in filters {
                let ours = resize_rgb8(&img, w, h, ow, oh, f);
                let plain = resize_plainly(&img, w, h, ow, oh, f);
                assert_eq!(ours, plain, "{w}×{h} → {ow}×{oh}, {f:?}");
            }
        }
    }

    #[test]
    fn a_window_is_the_same_bits_as_resizing_whole_and_cropping() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut filters = vec![Filter::Nearest];
        filters.extend(CONVOLUTIONS);
        // Up and down in each direction, one side unchanged, a skinny image.
        for (w, h, ow, oh) in [
            (64, 48, 224, 168),
            (300, 200, 96, 64),
            (37, 53, 37, 80),
            (50, 3, 20, 3),
            (1, 40, 8, 320),
        ] {
            let img: Vec<u8> = (0..w * h * 3).map(|_| rng.random()).collect();
            for &f in &filters {
                let whole = resize_rgb8(&img, w, h, ow, oh, f);
                for _ in 0..6 {
                    let (x, y) = (rng.random_range(0..ow), rng.random_range(0..oh));
                    let win = Window {
                        x,
                        y,
                        width: rng.random_range(1..=ow - x),
                        height: rng.random_range(1..=oh - y),
                    };
                    let cropped: Vec<u8> = whole
                        .chunks_exact(ow * 3)
                        .skip(win.y)
                        .take(win.height)
                        .flat_map(|row| &row[win.x * 3..(win.x + win.width) * 3])
                        .copied()
                        .collect();
                    let got = resize_rgb8_window(&img, w, h, ow, oh, win, f);
                    assert_eq!(got, cropped, "{w}×{h} → {ow}×{oh}, {win:?}, {f:?}");
                }
            }
        }
    }

    #[test]
    fn constant_images_stay_constant_and_weights_sum_to_one() {
        let img = vec![77u8; 10 * 7 * 3];
        for f in [
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
        ] {
            assert!(
                resize_rgb8(&img, 10, 7, 23, 3, f).iter().all(|&v| v == 77),
                "{f:?}"
            );
            let c = coefficients(64, 224, 0..224, f);
            for (i, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i32 = c.weights[i * c.ksize..i * c.ksize + n].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{f:?}");
            }
        }
    }
}
