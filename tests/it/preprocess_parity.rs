//! Resize + centre crop against transformers' CLIPImageProcessor (PIL path) at CLIP's real
//! 224-pixel size: the expected 8-bit pixels are PNGs written by `scripts/make_reference.py`.

use crate::common;

use common::*;
use skyscribe::imagery::{DecodeOptions, Preprocessor, load_rgb};

#[test]
fn resized_and_cropped_pixels_match_pillow() {
    let Some(data) = data_root("resized_and_cropped_pixels_match_pillow") else {
        return;
    };
    let dir = fixtures().join("preprocess");
    let index = read_json(&dir.join("index.json"));
    let pre = Preprocessor::clip_default(224);
    for rec in index.as_array().unwrap() {
        let key = rec["input"].as_str().unwrap();
        let img = load_rgb(&input_path(key, &data), &DecodeOptions::default()).unwrap();
        let ours = pre.resize_and_crop(&img).unwrap();
        let expected = image::open(dir.join(rec["expected"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        assert_eq!((ours.width, ours.height), expected.dimensions(), "{key}");
        let diffs: Vec<i32> = ours
            .pixels
            .iter()
            .zip(expected.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let off = diffs.iter().filter(|&&d| d > 0).count();
        eprintln!(
            "{key}: max difference {max}, {off} of {} samples differ",
            diffs.len()
        );
        // JPEG decoding (libjpeg-turbo) and resampling (Pillow's fixed point) are bit-exact.
        assert_eq!(max, 0, "{key}: {off} samples differ, by up to {max}");
    }
}
