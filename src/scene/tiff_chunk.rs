//! One strip or tile of a TIFF, from its stored bytes to samples: decompressed (none, LZW,
//! Deflate, PackBits, ZSTD, WebP), bit order and byte order undone, the predictor reversed
//! (horizontal or floating point), sub-byte samples unpacked, palette indices looked up.
//!
//! Written here rather than left to the `tiff` crate's chunk reader, which reads the tags well
//! but decodes wrongly where GDAL's files are ordinary: LZW chunks whose stream ends without an
//! end-of-information code (the right-hand tiles GDAL writes; image-tiff issue 395) are refused,
//! band-interleaved tiles of bands 2+ get the wrong padded size, and 1/2/4-bit, int8/int64,
//! float16, palette and sparse (absent) chunks are not read. The decompressors are the
//! well-kept crates (`weezl`, `flate2`, `ruzstd`, `image-webp`); JPEG stays with the `tiff`
//! crate, whose handling of JPEGTables and YCbCr is right.

use std::io::Read;

use anyhow::{Result, anyhow, bail};
use tiff::decoder::DecodingResult;

/// How a chunk's bytes are stored.
#[derive(Debug, Clone)]
pub struct Coding {
    pub compression: u16,
    pub predictor: u16,
    /// Bits per sample (all samples alike).
    pub bits: u16,
    /// 1 unsigned, 2 signed, 3 float.
    pub format: u16,
    pub little_endian: bool,
    /// FillOrder 2: bits stored least significant first.
    pub lsb_first: bool,
    /// A palette image's colour map: 3 × 2^bits 16-bit values (red, then green, then blue).
    pub palette: Option<Vec<u16>>,
}

/// The compressions decoded here (JPEG is decoded by the `tiff` crate).
pub fn supported(compression: u16) -> Result<()> {
    match compression {
        1 | 5 | 8 | 32946 | 32773 | 50000 | 50001 => Ok(()),
        7 => Ok(()),
        6 => bail!(
            "old-style JPEG (TIFF compression 6) is not read; rewrite the scene with gdal_translate"
        ),
        34887 => bail!(
            "LERC compression (34887) is not read yet; rewrite the scene with gdal_translate -co COMPRESS=DEFLATE"
        ),
        50002 => bail!(
            "JPEG-XL compression (50002) is not read; rewrite the scene with gdal_translate -co COMPRESS=DEFLATE"
        ),
        c => bail!("TIFF compression {c} is not read"),
    }
}

/// Inflates a zlib stream up to `want` bytes (a stream cut short keeps what it gave).
fn inflate(raw: &[u8], want: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(want);
    let r = flate2::read::ZlibDecoder::new(raw)
        .take(want as u64)
        .read_to_end(&mut out);
    match r {
        Ok(_) => Ok(out),
        Err(_) if out.len() >= want => Ok(out),
        Err(e) => Err(anyhow!("cannot inflate: {e}")),
    }
}

/// TIFF LZW (MSB first, the early code-size switch) up to `want` bytes. A stream that ends
/// without an end-of-information code is complete once it has given `want` bytes, as libtiff
/// takes it.
fn unlzw(raw: &[u8], want: usize) -> Result<Vec<u8>> {
    let mut d = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let mut out = vec![0u8; want];
    let mut filled = 0;
    let mut input = raw;
    while filled < want {
        let r = d.decode_bytes(input, &mut out[filled..]);
        filled += r.consumed_out;
        input = &input[r.consumed_in..];
        match r.status {
            Ok(weezl::LzwStatus::Ok) if r.consumed_in == 0 && r.consumed_out == 0 => break,
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::Done) | Ok(weezl::LzwStatus::NoProgress) => break,
            // An error after the chunk is whole (a bad code past its end) costs nothing.
            Err(_) if filled >= want => break,
            Err(e) => bail!("LZW: {e} after {filled} of {want} bytes"),
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// PackBits (Apple's run-length coding) up to `want` bytes. By hand: a dozen lines, and no
/// crate carries it alone.
fn unpackbits(raw: &[u8], want: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(want);
    let mut i = 0;
    while i < raw.len() && out.len() < want {
        let n = raw[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            let end = (i + len).min(raw.len());
            out.extend_from_slice(&raw[i..end]);
            i = end;
        } else if n != -128 {
            if let Some(&b) = raw.get(i) {
                out.extend(std::iter::repeat_n(b, (1 - n as isize) as usize));
            }
            i += 1;
        }
    }
    out.truncate(want);
    out
}

fn unzstd(raw: &[u8], want: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(want);
    ruzstd::decoding::StreamingDecoder::new(raw)
        .map_err(|e| anyhow!("ZSTD: {e}"))?
        .take(want as u64)
        .read_to_end(&mut out)
        .map_err(|e| anyhow!("ZSTD: {e}"))?;
    Ok(out)
}

/// The samples of one chunk of `width × rows` pixels (the chunk's stored size, padded tiles
/// included) with `spp` samples each, cut to its first `keep_w` columns: the layout the
/// `tiff` crate's decoder gives, so the caller copies either alike. `raw` is `None` for a
/// sparse chunk (offset or byte count 0), which GDAL reads as `fill`.
pub fn decode(
    c: &Coding,
    raw: Option<&[u8]>,
    (width, rows, spp): (u32, u32, usize),
    keep_w: u32,
    fill: f64,
) -> Result<DecodingResult> {
    let (w, h) = (width as usize, rows as usize);
    let row_bytes = (w * spp * c.bits as usize).div_ceil(8);
    let want = row_bytes * h;
    let Some(raw) = raw else {
        return Ok(filled(
            c,
            w.min(keep_w as usize) * h * out_spp(c, spp),
            fill,
        ));
    };
    let reversed: Vec<u8>;
    let raw = if c.lsb_first {
        reversed = raw.iter().map(|b| b.reverse_bits()).collect();
        &reversed[..]
    } else {
        raw
    };
    if c.compression == 50001 {
        return webp(raw, (w, h, spp), keep_w as usize);
    }
    let mut bytes = match c.compression {
        1 => raw.get(..want.min(raw.len())).unwrap_or(raw).to_vec(),
        5 => unlzw(raw, want)?,
        8 | 32946 => inflate(raw, want)?,
        32773 => unpackbits(raw, want),
        50000 => unzstd(raw, want)?,
        other => bail!("TIFF compression {other} is not read"),
    };
    if bytes.len() < want {
        bail!(
            "the chunk holds {} bytes, {want} expected ({w}×{h} px, {spp} sample(s) of {} bits)",
            bytes.len(),
            c.bits
        );
    }
    bytes.truncate(want);
    let keep = keep_w as usize;
    if c.bits < 8 {
        if c.predictor != 1 {
            bail!("a predictor on {}-bit samples", c.bits);
        }
        let v = unpack_bits(&bytes, (w, h, spp), c.bits, keep);
        return Ok(match &c.palette {
            Some(map) => look_up(&v, map),
            None => DecodingResult::U8(v),
        });
    }
    let size = c.bits as usize / 8;
    if c.predictor == 3 {
        if c.format != 3 {
            bail!("the floating-point predictor on integer samples");
        }
        undo_float_predictor(&mut bytes, row_bytes, spp, size);
        // The predictor leaves each sample big-endian.
        return typed(&bytes, c, false, (w, h, spp), keep);
    }
    if c.predictor == 2 {
        let mut out = typed(&bytes, c, c.little_endian, (w, h, spp), w)?;
        undo_horizontal(&mut out, w * spp, spp);
        return Ok(cut(out, (w, h, spp), keep));
    }
    if c.predictor != 1 {
        bail!("TIFF predictor {} is not read", c.predictor);
    }
    let out = typed(&bytes, c, c.little_endian, (w, h, spp), keep)?;
    Ok(match (&c.palette, out) {
        (Some(map), DecodingResult::U8(v)) => look_up(&v, map),
        (Some(map), DecodingResult::U16(v)) => look_up(&v, map),
        (_, out) => out,
    })
}

/// Samples per pixel after decoding: a palette image becomes red, green, blue.
fn out_spp(c: &Coding, spp: usize) -> usize {
    if c.palette.is_some() { 3 } else { spp }
}

fn filled(c: &Coding, n: usize, fill: f64) -> DecodingResult {
    match (c.format, c.bits) {
        (3, 64) => DecodingResult::F64(vec![fill; n]),
        (3, _) => DecodingResult::F32(vec![fill as f32; n]),
        (2, 8) => DecodingResult::I8(vec![fill as i8; n]),
        (2, 16) => DecodingResult::I16(vec![fill as i16; n]),
        (2, 32) => DecodingResult::I32(vec![fill as i32; n]),
        (2, _) => DecodingResult::I64(vec![fill as i64; n]),
        (_, 16) => DecodingResult::U16(vec![fill as u16; n]),
        (_, 32) => DecodingResult::U32(vec![fill as u32; n]),
        (_, 64) => DecodingResult::U64(vec![fill as u64; n]),
        _ => DecodingResult::U8(vec![fill as u8; n]),
    }
}

/// Rows of 1, 2 or 4-bit samples (each row starts on a byte) as one byte a sample.
fn unpack_bits(
    bytes: &[u8],
    (w, h, spp): (usize, usize, usize),
    bits: u16,
    keep: usize,
) -> Vec<u8> {
    let row_bytes = (w * spp * bits as usize).div_ceil(8);
    let per_byte = 8 / bits as usize;
    let mask = (1u8 << bits) - 1;
    let mut out = Vec::with_capacity(keep * spp * h);
    for r in 0..h {
        let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
        for i in 0..keep * spp {
            let byte = row[i / per_byte];
            let shift = 8 - bits as usize * (i % per_byte + 1);
            out.push((byte >> shift) & mask);
        }
    }
    out
}

/// GDAL's colour table from a TIFF ColorMap: 16-bit values scaled to 8 bits by 257 when every
/// value is a multiple of it (what GDAL writes), else by 256; values already 8-bit kept.
fn palette_byte(map: &[u16]) -> impl Fn(u16) -> u8 {
    let max = map.iter().copied().max().unwrap_or(0);
    let div = if max < 256 {
        1
    } else if map.iter().all(|v| v % 257 == 0) {
        257
    } else {
        256
    };
    move |v| (v / div).min(255) as u8
}

/// Palette indices (8 or 16-bit) as red, green, blue bytes; an index past the map takes its
/// last entry.
fn look_up<I: Copy + Into<usize>>(indices: &[I], map: &[u16]) -> DecodingResult {
    let n = map.len() / 3;
    let to8 = palette_byte(map);
    let mut out = Vec::with_capacity(indices.len() * 3);
    for &i in indices {
        let i = i.into().min(n.saturating_sub(1));
        out.extend([to8(map[i]), to8(map[n + i]), to8(map[2 * n + i])]);
    }
    DecodingResult::U8(out)
}

/// libtiff's floating-point predictor, undone: each row's bytes were differenced, then the
/// samples' bytes grouped most significant first.
fn undo_float_predictor(bytes: &mut [u8], row_bytes: usize, spp: usize, size: usize) {
    let mut tmp = vec![0u8; row_bytes];
    for row in bytes.chunks_exact_mut(row_bytes) {
        for i in spp..row.len() {
            row[i] = row[i].wrapping_add(row[i - spp]);
        }
        tmp.copy_from_slice(row);
        let words = row_bytes / size;
        for k in 0..words {
            for b in 0..size {
                row[k * size + b] = tmp[b * words + k];
            }
        }
    }
}

/// Reverses horizontal differencing: every sample adds the one `spp` before it, row by row.
fn undo_horizontal(out: &mut DecodingResult, row_len: usize, spp: usize) {
    macro_rules! acc {
        ($v:expr, $add:expr) => {
            for row in $v.chunks_exact_mut(row_len) {
                for i in spp..row.len() {
                    row[i] = $add(row[i], row[i - spp]);
                }
            }
        };
    }
    match out {
        DecodingResult::U8(v) => acc!(v, u8::wrapping_add),
        DecodingResult::I8(v) => acc!(v, i8::wrapping_add),
        DecodingResult::U16(v) => acc!(v, u16::wrapping_add),
        DecodingResult::I16(v) => acc!(v, i16::wrapping_add),
        DecodingResult::U32(v) => acc!(v, u32::wrapping_add),
        DecodingResult::I32(v) => acc!(v, i32::wrapping_add),
        DecodingResult::U64(v) => acc!(v, u64::wrapping_add),
        DecodingResult::I64(v) => acc!(v, i64::wrapping_add),
        // Horizontal differencing of floats is not defined; GDAL refuses to write it.
        _ => {}
    }
}

/// Keeps the first `keep` columns of each `w`-pixel row.
fn cut(out: DecodingResult, (w, h, spp): (usize, usize, usize), keep: usize) -> DecodingResult {
    if keep == w {
        return out;
    }
    macro_rules! cut {
        ($v:expr, $var:ident) => {{
            let mut o = Vec::with_capacity(keep * spp * h);
            for row in $v.chunks_exact(w * spp) {
                o.extend_from_slice(&row[..keep * spp]);
            }
            DecodingResult::$var(o)
        }};
    }
    match out {
        DecodingResult::U8(v) => cut!(v, U8),
        DecodingResult::I8(v) => cut!(v, I8),
        DecodingResult::U16(v) => cut!(v, U16),
        DecodingResult::I16(v) => cut!(v, I16),
        DecodingResult::U32(v) => cut!(v, U32),
        DecodingResult::I32(v) => cut!(v, I32),
        DecodingResult::U64(v) => cut!(v, U64),
        DecodingResult::I64(v) => cut!(v, I64),
        DecodingResult::F32(v) => cut!(v, F32),
        DecodingResult::F64(v) => cut!(v, F64),
        DecodingResult::F16(v) => cut!(v, F16),
    }
}

/// Bytes as typed samples (`little`: the bytes' order), the first `keep` columns of each row.
fn typed(
    bytes: &[u8],
    c: &Coding,
    little: bool,
    (w, h, spp): (usize, usize, usize),
    keep: usize,
) -> Result<DecodingResult> {
    let size = c.bits as usize / 8;
    let row = w * spp * size;
    macro_rules! read {
        ($t:ty, $var:ident) => {{
            let mut o: Vec<$t> = Vec::with_capacity(keep * spp * h);
            for r in bytes.chunks_exact(row).take(h) {
                for s in r[..keep * spp * size].chunks_exact(size) {
                    let a: [u8; std::mem::size_of::<$t>()] = s.try_into().unwrap();
                    o.push(if little {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    });
                }
            }
            DecodingResult::$var(o)
        }};
    }
    Ok(match (c.format, c.bits) {
        (1, 8) => read!(u8, U8),
        (2, 8) => read!(i8, I8),
        (1, 16) => read!(u16, U16),
        (2, 16) => read!(i16, I16),
        (1, 32) => read!(u32, U32),
        (2, 32) => read!(i32, I32),
        (1, 64) => read!(u64, U64),
        (2, 64) => read!(i64, I64),
        (3, 16) => {
            let DecodingResult::U16(v) = read!(u16, U16) else {
                unreachable!()
            };
            DecodingResult::F32(
                v.into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect(),
            )
        }
        (3, 32) => read!(f32, F32),
        (3, 64) => read!(f64, F64),
        (f, b) => bail!("{b}-bit samples of SampleFormat {f} are not read"),
    })
}

/// A WebP-compressed chunk: a whole WebP image of the chunk's size (RGB or RGBA).
fn webp(raw: &[u8], (w, h, spp): (usize, usize, usize), keep: usize) -> Result<DecodingResult> {
    let mut d = image_webp::WebPDecoder::new(std::io::Cursor::new(raw))
        .map_err(|e| anyhow!("WebP: {e}"))?;
    let (dw, dh) = d.dimensions();
    let has_alpha = d.has_alpha();
    let mut buf = vec![
        0u8;
        d.output_buffer_size()
            .ok_or_else(|| anyhow!("WebP: too large"))?
    ];
    d.read_image(&mut buf).map_err(|e| anyhow!("WebP: {e}"))?;
    let dspp = if has_alpha { 4 } else { 3 };
    if (dw as usize, dh as usize) != (w, h) || spp > dspp {
        bail!("a WebP chunk of {dw}×{dh} px × {dspp}, {w}×{h} × {spp} expected");
    }
    let mut out = Vec::with_capacity(keep * spp * h);
    for r in 0..h {
        for x in 0..keep {
            let p = (r * w + x) * dspp;
            out.extend_from_slice(&buf[p..p + spp]);
        }
    }
    Ok(DecodingResult::U8(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding(compression: u16, predictor: u16, bits: u16, format: u16) -> Coding {
        Coding {
            compression,
            predictor,
            bits,
            format,
            little_endian: true,
            lsb_first: false,
            palette: None,
        }
    }

    #[test]
    fn lzw_without_an_end_code_is_complete_when_it_has_given_the_chunk() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let full = enc.encode(&data).unwrap();
        // The last byte holds (part of) the end code: without it, every sample is still there.
        let cut = &full[..full.len() - 1];
        assert_eq!(unlzw(cut, data.len()).unwrap(), data);
        assert_eq!(unlzw(&full, data.len()).unwrap(), data);
        // A stream cut short gives what it has; the caller refuses the short chunk.
        let short = unlzw(&full[..full.len() / 2], data.len()).unwrap();
        assert!(short.len() < data.len() && data.starts_with(&short));
    }

    #[test]
    fn packbits_runs_and_literals() {
        // PackBits' own example (Apple Technical Note TN1023).
        let raw = [
            0xFE, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7,
            0xAA,
        ];
        let want = [
            0xAA, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0xAA, 0xAA, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0x22,
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
        ];
        assert_eq!(unpackbits(&raw, want.len()), want);
    }

    #[test]
    fn predictors_are_undone_per_row() {
        // Two rows of two RGB u16 pixels, horizontally differenced, little-endian.
        let diffs: [u16; 12] = [1, 2, 3, 10, 10, 10, 5, 6, 7, 1, 1, 1];
        let bytes: Vec<u8> = diffs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = coding(1, 2, 16, 1);
        let DecodingResult::U16(v) = decode(&c, Some(&bytes), (2, 2, 3), 2, 0.0).unwrap() else {
            panic!()
        };
        assert_eq!(v, [1, 2, 3, 11, 12, 13, 5, 6, 7, 6, 7, 8]);
        // Edge tiles keep their first columns only.
        let DecodingResult::U16(v) = decode(&c, Some(&bytes), (2, 2, 3), 1, 0.0).unwrap() else {
            panic!()
        };
        assert_eq!(v, [1, 2, 3, 5, 6, 7]);
    }

    #[test]
    fn one_bit_rows_start_on_a_byte_and_sparse_chunks_are_the_fill() {
        let c = coding(1, 1, 1, 1);
        // 10 px a row: 2 bytes a row.
        let bytes = [0b1010_0000, 0b0100_0000, 0b1111_1111, 0b1100_0000];
        let DecodingResult::U8(v) = decode(&c, Some(&bytes), (10, 2, 1), 10, 0.0).unwrap() else {
            panic!()
        };
        assert_eq!(
            v,
            [1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        let DecodingResult::U8(v) = decode(&c, None, (10, 2, 1), 4, 7.0).unwrap() else {
            panic!()
        };
        assert_eq!(v, vec![7; 8]);
    }
}
