//! Resize + centre crop against transformers' CLIPImageProcessor (PIL path) at CLIP's real
//! 224-pixel size: the expected 8-bit pixels are PNGs written by `scripts/reference/make_reference.py`.

use crate::common;

use common::*;
use skyscribe::imagery::{DecodeOptions, Preprocessor, load_rgb, load_rgb_at_least};

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

#[test]
fn jpeg_draft_decodes_and_preprocesses_as_pillows_draft_mode() {
    // scripts/reference/make_draft_reference.py: Pillow's `draft("RGB", (n, n))` (libjpeg's scaled
    // inverse DCT), then transformers' processor at n pixels; 4:2:0, 4:4:4 and grey JPEGs.
    let Some(data) = data_root("jpeg_draft_decodes_and_preprocesses_as_pillows_draft_mode") else {
        return;
    };
    let dir = fixtures().join("preprocess-draft");
    let draft = DecodeOptions {
        jpeg_draft: true,
        ..DecodeOptions::default()
    };
    let mut scaled = 0;
    for rec in read_json(&dir.join("index.json")).as_array().unwrap() {
        let key = rec["input"].as_str().unwrap();
        let n = rec["size"].as_u64().unwrap() as u32;
        let path = match key.strip_prefix("draft:") {
            Some(name) => dir.join("inputs").join(name),
            None => input_path(key, &data),
        };
        let pre = Preprocessor::clip_default(n);
        let size = pre.draft_size().unwrap();
        let img = load_rgb_at_least(&path, &draft, size).unwrap();
        let decoded = [img.width as u64, img.height as u64];
        assert_eq!(
            serde_json::json!(decoded),
            rec["decoded"],
            "{key} at {n}: decoded size"
        );
        let full = load_rgb(&path, &DecodeOptions::default()).unwrap();
        if (full.width, full.height) != (img.width, img.height) {
            scaled += 1;
        }
        // Without the option the same call decodes every pixel.
        let plain = load_rgb_at_least(&path, &DecodeOptions::default(), size).unwrap();
        assert_eq!(plain, full, "{key}: draft without --jpeg-draft");

        let ours = pre.resize_and_crop(&img).unwrap();
        let expected = image::open(dir.join(rec["expected"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (ours.width, ours.height),
            expected.dimensions(),
            "{key} at {n}"
        );
        let off = ours
            .pixels
            .iter()
            .zip(expected.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            off, 0,
            "{key} at {n}: {off} samples differ from Pillow's draft"
        );
    }
    assert!(
        scaled >= 8,
        "only {scaled} cases decoded at a reduced scale"
    );
}

/// Models imported from OpenCLIP preprocess as OpenCLIP does: the image resized in its own mode
/// (RGBA and LA premultiplied, palettes by nearest neighbour, as Pillow resizes them under
/// torchvision's `Resize`), cropped, and only then made RGB by dropping the alpha. Every float
/// of `open_clip.image_transform`'s output, from `scripts/reference/make_openclip_preprocess_reference.py`.
#[test]
fn openclip_models_resize_before_converting_to_rgb_as_open_clip_does() {
    use skyscribe::imagery::{ConvertRgb, DecodeOptions, Preprocessor, load_decoded};
    let dir = fixtures().join("openclip-preprocess");
    let r = read_json(&dir.join("reference.json"));
    let size = r["size"].as_u64().unwrap();
    // What import-openclip writes (convert_rgb left to its default: torchvision's offsets
    // mean an OpenCLIP pipeline), and the same with transformers' order.
    let config = |extra: &str| {
        let path = scratch("openclip-preprocess").join(format!("config{}.json", extra.len()));
        std::fs::write(
            &path,
            format!(
                r#"{{"size": {{"shortest_edge": {size}}}, "crop_size": {{"height": {size}, "width": {size}}},
                    "resample": 3, "crop_offsets": "torchvision"{extra}}}"#
            ),
        )
        .unwrap();
        Preprocessor::from_file(&path).unwrap()
    };
    let open_clip = config("");
    assert_eq!(open_clip.convert_rgb, ConvertRgb::Last);
    let transformers_order = config(r#", "convert_rgb": "first""#);
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    for f in files {
        let name = f["file"].as_str().unwrap();
        let want = floats(&f["pixels"]);
        let img = load_decoded(&dir.join(name), &DecodeOptions::default(), None).unwrap();
        assert_eq!(img.palette, f["mode"] == "P", "{name}");
        let got = open_clip.preprocess_decoded(img.clone()).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = max_abs_diff(&got, &want);
        assert!(worst < 1e-5, "{name}: largest difference {worst}");
        // Converting first is another picture (what the fixture's alternative order shows).
        let other = transformers_order.preprocess_decoded(img).unwrap();
        let moved = max_abs_diff(&other, &want);
        let expected = f["rgb_first_max_difference"].as_f64().unwrap() as f32;
        assert!(
            (moved - expected).abs() < 1e-4,
            "{name}: {moved} vs {expected}"
        );
    }
}

/// GIFs Pillow writes (interlaced, as Pillow 13 writes every GIF) decode to the pixels Pillow
/// reads back, every byte (`scripts/reference/make_gif_reference.py`). The `gif` crate under `image`
/// refused the 81 × 45 one as "image truncated".
#[test]
fn interlaced_gifs_from_pillow_decode_to_pillows_pixels() {
    use base64::Engine;
    let dir = fixtures().join("gif");
    let r = read_json(&dir.join("pixels.json"));
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for f in files {
        let name = f["file"].as_str().unwrap();
        assert_eq!(
            f["interlaced"], true,
            "{name}: the fixture must be interlaced"
        );
        let want = base64::engine::general_purpose::STANDARD
            .decode(f["rgb"].as_str().unwrap())
            .unwrap();
        let got = load_rgb(&dir.join(name), &DecodeOptions::default()).unwrap();
        assert_eq!(got.pixels.len(), want.len(), "{name}");
        assert!(got.pixels == want, "{name}: pixels differ from Pillow's");
    }
}
