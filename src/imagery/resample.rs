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

/// For each output position: the first input index and the fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
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
            weights[xx * ksize + x] = if w < 0.0 {
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

/// Resizes interleaved RGB8 `pixels` (`w`×`h`) to `out_w`×`out_h` as Pillow does.
///
/// Sums are `i32`, as Pillow's are (22 fractional bits leave room for 255 × the filter's
/// positive lobes), so the results are Pillow's bit for bit. The vertical pass runs along whole
/// rows — each output row is the weighted sum of a few input rows — which the compiler turns
/// into vector code; Pillow's own loop goes pixel by pixel.
pub fn resize_rgb8(
    pixels: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> Vec<u8> {
    if filter == Filter::Nearest {
        return nearest(pixels, w, h, out_w, out_h);
    }
    let horizontal;
    let (cur, cur_w) = if out_w != w {
        horizontal = resize_rows(pixels, w, h, out_w, filter);
        (horizontal.as_slice(), out_w)
    } else {
        (pixels, w)
    };
    if out_h != h {
        resize_columns(cur, cur_w * 3, h, out_h, filter)
    } else {
        cur.to_vec()
    }
}

multiversioned! {
    /// The horizontal pass: every row from `w` to `out_w` pixels.
    fn resize_rows(pixels: &[u8], w: usize, h: usize, out_w: usize, filter: Filter) -> Vec<u8> = resize_rows_plain
}

#[inline(always)]
fn resize_rows_plain(pixels: &[u8], w: usize, h: usize, out_w: usize, filter: Filter) -> Vec<u8> {
    let c = coefficients(w, out_w, filter);
    let mut out = vec![0u8; out_w * h * 3];
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
    /// The vertical pass: rows of `row_len` bytes, `h` of them to `out_h`.
    fn resize_columns(pixels: &[u8], row_len: usize, h: usize, out_h: usize, filter: Filter) -> Vec<u8> = resize_columns_plain
}

#[inline(always)]
fn resize_columns_plain(
    pixels: &[u8],
    row_len: usize,
    h: usize,
    out_h: usize,
    filter: Filter,
) -> Vec<u8> {
    let c = coefficients(h, out_h, filter);
    let mut out = vec![0u8; row_len * out_h];
    let mut acc = vec![0i32; row_len];
    for ((&(ymin, ymax), k), out_row) in c
        .bounds
        .iter()
        .zip(c.weights.chunks_exact(c.ksize))
        .zip(out.chunks_exact_mut(row_len))
    {
        acc.fill(HALF);
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

/// Pillow's NEAREST resize: the source pixel under each output pixel's centre.
fn nearest(pixels: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_w * out_h * 3];
    for yy in 0..out_h {
        let sy = (((yy as f64 + 0.5) * h as f64 / out_h as f64) as usize).min(h - 1);
        for xx in 0..out_w {
            let sx = (((xx as f64 + 0.5) * w as f64 / out_w as f64) as usize).min(w - 1);
            let s = (sy * w + sx) * 3;
            let d = (yy * out_w + xx) * 3;
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
            let c = coefficients(n, out_n, f);
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

    #[test]
    fn vectorised_passes_give_the_plain_sums_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let filters = [
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
        ];
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
            let c = coefficients(64, 224, f);
            for (i, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i32 = c.weights[i * c.ksize..i * c.ksize + n].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{f:?}");
            }
        }
    }
}
