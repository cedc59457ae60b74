//! A contact sheet of search results: one self-contained HTML file (thumbnails inlined as
//! JPEG data URIs) that can be mailed or opened anywhere, each result with its rank, score and
//! id, chips cut out of their scenes.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use base64::Engine;

use crate::data::ImageRef;
use crate::imagery::{self, DecodeOptions};
use crate::scene::{SceneOptions, SharedTiles};

/// One result on the sheet.
pub struct SheetEntry<'a> {
    pub rank: usize,
    pub score: f32,
    pub id: &'a str,
    pub path: &'a str,
    pub chip: Option<[u32; 4]>,
}

/// Longest side of a thumbnail, in pixels.
const THUMB: u32 = 192;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A JPEG thumbnail of an image or chip, at most [`THUMB`] pixels a side. Chips of TIFF
/// scenes are read window by window through `tiles` (as `scan` and `index build` read them:
/// a large scene is never decoded whole); chips of other images are cut from the whole.
pub fn thumbnail(image: &ImageRef, decode: &DecodeOptions, tiles: &SharedTiles) -> Result<Vec<u8>> {
    let img = match image.crop {
        None => imagery::load_rgb(&image.path, decode)?,
        Some(rect) if crate::scene::is_tiff(&image.path) => {
            let opts = SceneOptions {
                bands: decode.bands.clone(),
                ..Default::default()
            };
            tiles
                .tile(&image.path, rect, &opts)?
                .ok_or_else(|| anyhow::anyhow!("{}: a wholly nodata tile", image.display()))?
        }
        Some(rect) => imagery::crop(&imagery::load_rgb(&image.path, decode)?, rect)?,
    };
    let scale = (THUMB as f32 / img.width.max(img.height) as f32).min(1.0);
    let (w, h) = (
        ((img.width as f32 * scale).round() as u32).max(1),
        ((img.height as f32 * scale).round() as u32).max(1),
    );
    let small = imagery::resize_rgb(&img, w, h, 3)?;
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode(
        &small.pixels,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// The sheet's HTML. `title` says what was searched; an image that cannot be read shows its
/// reason in place of the picture.
pub fn contact_sheet(title: &str, entries: &[SheetEntry], decode: &DecodeOptions) -> String {
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:1.5em}}\
         .grid{{display:flex;flex-wrap:wrap;gap:12px}}\
         figure{{margin:0;width:{THUMB}px}}\
         figure .img{{width:{THUMB}px;height:{THUMB}px;display:flex;align-items:center;justify-content:center;background:#eee}}\
         figure img{{max-width:{THUMB}px;max-height:{THUMB}px}}\
         figcaption{{font-size:12px;word-break:break-all}}.score{{font-weight:bold}}\
         .missing{{font-size:11px;color:#a00;padding:4px}}</style>\n<h1>{t}</h1>\n<div class=grid>\n",
        t = escape(title)
    );
    let tiles = SharedTiles::default();
    let thumbs: Vec<Result<Vec<u8>>> = {
        use rayon::prelude::*;
        entries
            .par_iter()
            .map(|e| {
                let image = ImageRef {
                    path: Path::new(e.path).to_path_buf(),
                    crop: e.chip.map(|[x, y, w, h]| (x, y, w, h)),
                };
                thumbnail(&image, decode, &tiles)
            })
            .collect()
    };
    for (e, thumb) in entries.iter().zip(thumbs) {
        let picture = match thumb {
            Ok(jpeg) => format!(
                "<img alt=\"{}\" src=\"data:image/jpeg;base64,{}\">",
                escape(e.id),
                base64::engine::general_purpose::STANDARD.encode(jpeg)
            ),
            Err(err) => format!("<span class=missing>{}</span>", escape(&format!("{err:#}"))),
        };
        let _ = writeln!(
            html,
            "<figure><div class=img>{picture}</div><figcaption>#{} <span class=score>{:.4}</span><br>{}</figcaption></figure>",
            e.rank,
            e.score,
            escape(e.id)
        );
    }
    html.push_str("</div>\n");
    html
}
