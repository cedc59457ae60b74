//! Pillow's `Image.resize` for 8-bit RGB, reproduced bit for bit: separable convolution with
//! Pillow's filters and support scaling (antialiased when shrinking), coefficients rounded to
//! 22 fractional bits, horizontal pass first with an 8-bit intermediate image.
//!
//! Written by hand because exactness is the point: transformers resizes through Pillow, and
//! general-purpose resizers (fast_image_resize included) differ from it by a level or two in a
//! noticeable share of pixels.

use std::f64::consts::PI;

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

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
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
    if filter == Filter::Nearest {
        return nearest(pixels, w, h, out_w, out_h);
    }
    let mut cur = pixels.to_vec();
    let mut cur_w = w;
    if out_w != w {
        let c = coefficients(w, out_w, filter);
        let mut out = vec![0u8; out_w * h * 3];
        for y in 0..h {
            let row = &cur[y * w * 3..(y + 1) * w * 3];
            for (xx, &(xmin, xmax)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + xmax];
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for ch in 0..3 {
                        acc[ch] += p[ch] as i64 * kx as i64;
                    }
                }
                let o = (y * out_w + xx) * 3;
                for ch in 0..3 {
                    out[o + ch] = clip8(acc[ch]);
                }
            }
        }
        cur = out;
        cur_w = out_w;
    }
    if out_h != h {
        let c = coefficients(h, out_h, filter);
        let mut out = vec![0u8; cur_w * out_h * 3];
        for (yy, &(ymin, ymax)) in c.bounds.iter().enumerate() {
            let k = &c.weights[yy * c.ksize..yy * c.ksize + ymax];
            for x in 0..cur_w {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (y, &ky) in k.iter().enumerate() {
                    let p = ((ymin + y) * cur_w + x) * 3;
                    for ch in 0..3 {
                        acc[ch] += cur[p + ch] as i64 * ky as i64;
                    }
                }
                let o = (yy * cur_w + x) * 3;
                for ch in 0..3 {
                    out[o + ch] = clip8(acc[ch]);
                }
            }
        }
        cur = out;
    }
    cur
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
