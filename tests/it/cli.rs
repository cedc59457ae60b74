//! The `skyscribe` command as other tools use it: JSON Lines contracts of `embed` and `labels`,
//! agreement with the reference, and clear errors (never a panic) on bad input.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

fn model(name: &str) -> String {
    tiny_clip(name).display().to_string()
}

/// `labels --model tiny-a --labels eurosat ARGS…`, as it ran.
fn tiny_eurosat_labels(args: &[&str]) -> Run {
    let m = model("tiny-a");
    let mut all = vec!["labels", "--model", &m, "--labels", "eurosat"];
    all.extend(args);
    skyscribe(&all)
}

/// `embed --model MODEL --device cpu --precision PRECISION IMAGE`.
fn embed_on_cpu_args<'a>(model: &'a str, precision: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "embed",
        "--model",
        model,
        "--device",
        "cpu",
        "--precision",
        precision,
        image,
    ]
}

fn good_image() -> PathBuf {
    fixtures().join("images/wide.jpg")
}

#[test]
fn embed_jsonl_matches_the_reference() {
    let dir = tiny_clip("tiny-b");
    let r = read_json(&dir.join("reference.json"));
    let text = r["texts"]["texts"][0].as_str().unwrap();
    let run = skyscribe(&[
        "embed",
        "--model",
        &model("tiny-b"),
        "--text",
        text,
        "--jsonl",
        good_image().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "text");
    assert_eq!(lines[0]["input"], text);
    let c = cosine(
        &floats(&lines[0]["embedding"]),
        &floats(&r["texts"]["text_embeds"][0]),
    );
    assert!(c >= 0.9999, "text cosine {c}");
    assert_eq!(lines[1]["kind"], "image");
    assert_eq!(lines[1]["input"], good_image().display().to_string());
    let reference = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["input"] == "fixture:wide.jpg")
        .unwrap();
    let c = cosine(
        &floats(&lines[1]["embedding"]),
        &floats(&reference["image_embeds"]),
    );
    assert!(c >= 0.9999, "image cosine {c}");
}

#[test]
fn labels_jsonl_matches_the_reference_probabilities() {
    let dir = tiny_clip("tiny-a");
    let r = read_json(&dir.join("reference.json"));
    let z = &r["zero_shot"];
    let wordings: Vec<&str> = z["wordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let scratch = scratch("labels-jsonl");
    let label_file = scratch.join("labels.txt");
    std::fs::write(&label_file, wordings.join("\n")).unwrap();
    let i = z["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .position(|k| k == "fixture:wide.jpg")
        .unwrap();
    let expected = floats(&z["single_probs"][i]);
    let run = skyscribe(&[
        "labels",
        "--model",
        &model("tiny-a"),
        "--labels",
        label_file.to_str().unwrap(),
        "--template",
        "a satellite photo of {}.",
        "--jsonl",
        good_image().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["input"], good_image().display().to_string());
    let labels = lines[0]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), wordings.len());
    let mut last = f64::INFINITY;
    for l in labels {
        let score = l["score"].as_f64().unwrap();
        assert!(score <= last, "not sorted");
        last = score;
        let k = wordings
            .iter()
            .position(|w| *w == l["label"].as_str().unwrap())
            .unwrap();
        assert!(
            (score as f32 - expected[k]).abs() < 1e-3,
            "{}: {score} vs {}",
            wordings[k],
            expected[k]
        );
    }
    // --top-k keeps the best k, in the same order.
    let run = skyscribe(&[
        "labels",
        "--model",
        &model("tiny-a"),
        "--labels",
        label_file.to_str().unwrap(),
        "--template",
        "a satellite photo of {}.",
        "--jsonl",
        "--top-k",
        "3",
        good_image().to_str().unwrap(),
    ]);
    let top = json_lines(&run.stdout)[0]["labels"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(top.len(), 3);
    assert_eq!(top[..], labels[..3]);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend(data);
    png.extend((data.len() as u32).to_be_bytes());
    png.extend(&body);
    png.extend(crc32(&body).to_be_bytes());
}

/// A well-formed PNG whose header claims `w`×`h` pixels, with a few bytes of image data.
pub fn huge_png_header(path: &Path, w: u32, h: u32) {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

#[test]
fn unreadable_files_are_reported_skipped_and_fail_the_run() {
    let dir = scratch("bad-files");
    let text = dir.join("notes.jpg");
    std::fs::write(&text, "these are field notes, not an image\n").unwrap();
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let jpeg = std::fs::read(good_image()).unwrap();
    let truncated = dir.join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    let huge = dir.join("huge.png");
    huge_png_header(&huge, 100_000, 100_000);
    let empty_dir = dir.join("no-images");
    std::fs::create_dir_all(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("readme.txt"), "nothing").unwrap();
    let missing = dir.join("missing.jpg");

    let cases: [(&Path, &str); 6] = [
        (&text, "not an image"),
        (&empty, "empty file"),
        (&truncated, "truncated JPEG"),
        (&huge, "exceeds the limit"),
        (&empty_dir, "folder has no images"),
        (&missing, "no such file"),
    ];
    let mut args: Vec<String> = vec![
        "labels".into(),
        "--model".into(),
        model("tiny-a"),
        "--labels".into(),
        "eurosat".into(),
        "--jsonl".into(),
    ];
    args.push(good_image().display().to_string());
    for (p, _) in &cases {
        args.push(p.display().to_string());
    }
    args.push(fixtures().join("images/gray.png").display().to_string());
    let run = skyscribe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Every good image still has its result.
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert_eq!(
        lines[1]["input"],
        fixtures().join("images/gray.png").display().to_string()
    );
    for (p, why) in cases {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&*p.display().to_string()));
        let line = line.unwrap_or_else(|| panic!("{} not reported: {}", p.display(), run.stderr));
        assert!(
            line.contains(why),
            "{}: expected {why:?} in {line:?}",
            p.display()
        );
    }
    // The last line says what was written: here the two good images' results.
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("6 inputs could not be read") && last.contains("the others were written"),
        "{last}"
    );
    // Only bad inputs: nothing was written, and the last line says so.
    let run = tiny_eurosat_labels(&[&text.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.ends_with("1 input could not be read (named above); nothing was written"),
        "{last}"
    );
}

/// A 1 × 1,000,000 PNG (3 KB; resized whole it would need 150 GB) beside a good image: both
/// get their labels, and the skinny one those of its centre crop.
#[test]
fn a_skinny_image_is_labelled_from_its_centre_crop_beside_a_good_one() {
    let dir = scratch("skinny");
    let skinny = dir.join("skinny.png");
    std::fs::write(&skinny, crate::serve::skinny_png(1, 1_000_000)).unwrap();
    let strip = dir.join("strip.png");
    std::fs::write(&strip, crate::serve::skinny_png(224, 224)).unwrap();
    let run = skyscribe(&[
        "labels",
        "--labels",
        "eurosat",
        "--jsonl",
        &skinny.display().to_string(),
        &good_image().display().to_string(),
        &strip.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    // Its centre crop is 224 × 224 of the same grey: the same scores as a grey square.
    assert_eq!(lines[0]["labels"], lines[2]["labels"]);
}

/// An output path that cannot be written is refused before the work, not after it.
#[test]
fn an_unwritable_output_is_refused_before_the_scan() {
    let scene = fixtures().join("scenes/utm33n-u8-tiled-deflate.tif");
    let dir = scratch("unwritable");
    let out = dir.join("missing-dir/x.geojson");
    let run = skyscribe(&[
        "scan",
        "--out",
        &out.display().to_string(),
        &scene.display().to_string(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not exist (create it first)"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("scanning") && run.stdout.is_empty(),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_options_are_clear_errors() {
    let img = good_image().display().to_string();
    let m = model("tiny-a");
    for (args, why) in [
        (
            vec!["labels", "--model", &m, "--labels", "eurosatt", &img],
            "not a label preset",
        ),
        (
            vec!["labels", "--model", &m, "--labels", "", &img],
            "empty label list",
        ),
        (
            vec!["labels", "--model", &m, "--labels", " , ", &img],
            "empty",
        ),
        (
            vec![
                "labels",
                "--model",
                &m,
                "--labels",
                "forest,river",
                "--template",
                "a photo of",
                &img,
            ],
            "has no {}",
        ),
        (
            vec![
                "labels",
                "--model",
                "/nonexistent/model-dir",
                "--labels",
                "eurosat",
                &img,
            ],
            "no such model directory",
        ),
        (
            vec![
                "labels",
                "--model",
                "some-org/some-model-not-cached",
                "--labels",
                "eurosat",
                &img,
            ],
            "pass that folder with --model",
        ),
        (vec!["embed", "--model", &m], "nothing to embed"),
        (
            vec![
                "labels", "--model", &m, "--labels", "eurosat", "--bands", "5,6,7", &img,
            ],
            "band 5 does not exist",
        ),
        (
            vec!["bench", "--clip-step", "--precision", "bf16"],
            "training steps compute in f32",
        ),
        (embed_on_cpu_args(&m, "f16", &img), "f16 runs on CUDA GPUs"),
        (
            vec!["bench", "--gemm", "--device", "cpu", "--precision", "f16"],
            "f16 runs on CUDA GPUs",
        ),
    ] {
        let run = skyscribe(&args);
        assert_ne!(run.code, 0, "{args:?} succeeded");
        assert!(
            run.stderr.contains(why),
            "{args:?}: expected {why:?} in {}",
            run.stderr
        );
    }
}

#[test]
fn a_model_directory_with_a_missing_tensor_is_refused() {
    let src = tiny_clip("tiny-b");
    let dir = scratch("model-missing-tensor");
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut tensors = candle_core::pickle::read_all(src.join("pytorch_model.bin")).unwrap();
    tensors.retain(|(n, _)| n != "visual_projection.weight");
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
    let run = skyscribe(&[
        "embed",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        "harbor",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("missing tensor 'visual_projection.weight'"),
        "{}",
        run.stderr
    );
}

#[test]
fn multi_band_16_bit_tiff_with_band_choice() {
    use tiff::encoder::{TiffEncoder, colortype::RGBA16};
    let dir = scratch("tiff");
    let path = dir.join("scene.tif");
    let (w, h) = (40u32, 30u32);
    // Band 4 (near infrared) is bright where band 1 is dark.
    let data: Vec<u16> = (0..w * h)
        .flat_map(|i| {
            let x = (i % w) as u16;
            [
                1000 + 50 * x,
                3000,
                2000 + (i / w) as u16 * 10,
                9000 - 100 * x,
            ]
        })
        .collect();
    let mut enc = TiffEncoder::new(std::fs::File::create(&path).unwrap()).unwrap();
    enc.write_image::<RGBA16>(w, h, &data).unwrap();
    let opts = skyscribe::imagery::DecodeOptions::default();
    let rgb = skyscribe::imagery::load_rgb(&path, &opts).unwrap();
    // Bands 1-3 stretched jointly over their range 1000..3000: (1000, 3000, 2000) at (0, 0).
    assert_eq!(&rgb.pixels[..3], &[0, 255, 128]);
    let nir = skyscribe::imagery::DecodeOptions {
        bands: Some(vec![4, 3, 2]),
        ..opts
    };
    let rgb = skyscribe::imagery::load_rgb(&path, &nir).unwrap();
    assert_eq!(rgb.pixels[0], 255);
    let run = tiny_eurosat_labels(&["--bands", "4,3,2", "--jsonl", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        json_lines(&run.stdout)[0]["labels"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert!(!run.stderr.contains("were used"), "{}", run.stderr);
    // Without --bands the default choice is said, once per run.
    let run = tiny_eurosat_labels(&[path.to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let notes = run.stderr.matches("bands 1, 2, 3 were used").count();
    assert_eq!(notes, 1, "{}", run.stderr);
    assert!(run.stderr.contains("4 bands"), "{}", run.stderr);
}

#[test]
fn describe_prints_a_table_of_five_labels() {
    let sample = repo().join("assets/samples/eurosat-river.jpg");
    let run = skyscribe(&[
        "describe",
        "--model",
        &model("tiny-a"),
        sample.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", run.stdout);
    assert_eq!(lines[0], sample.display().to_string());
    let scores: Vec<f32> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

#[test]
fn describe_works_offline_with_the_built_in_models() {
    // A fresh machine: no hub cache, no skyscribe cache, no network.
    let sample = repo().join("assets/samples/eurosat-river.jpg");
    let empty_home = scratch("empty-hf-home-builtin");
    let cache = empty_home.join("skyscribe");
    let r = skyscribe_env(
        &["describe", "--jsonl", sample.to_str().unwrap()],
        &[("HF_HOME", &empty_home), ("SKYSCRIBE_CACHE", &cache)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 5);
    let caption = v["caption"].as_str().unwrap();
    assert!(caption.ends_with('.') && caption.len() > 10, "{caption:?}");
}

#[test]
fn describe_with_an_uncached_hub_model_offline_says_what_to_do() {
    let sample = repo().join("assets/samples/eurosat-river.jpg");
    let empty_home = scratch("empty-hf-home");
    let r = skyscribe_env(
        &[
            "describe",
            "--model",
            "openai/clip-vit-base-patch32",
            sample.to_str().unwrap(),
        ],
        &[("HF_HOME", &empty_home)],
    );
    let stderr = r.stderr;
    assert_eq!(r.code, 2);
    assert!(
        stderr.contains("openai/clip-vit-base-patch32")
            && stderr.contains("huggingface-cli download openai/clip-vit-base-patch32")
            && stderr.contains("pass that folder with --model"),
        "{stderr}"
    );
    // A placeholder copied as written: said to be neither a folder nor a built-in model.
    let r = skyscribe(&[
        "describe",
        "--model",
        "DIR",
        &good_image().display().to_string(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("'DIR' is not a folder here nor a built-in model (skyscribe-mini"),
        "{}",
        r.stderr
    );
    // The benchmark without its data names where it looked and how to say where the data is.
    let r = skyscribe(&["eval", "benchmark", "--data", "/nonexistent-data"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("read under /nonexistent-data (--data DIR, else SKYSCRIBE_DATA"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_image_too_large_for_memory_fails_alone() {
    // With the pixel cap raised, a 100,000 × 100,000 PNG header asks for 30 GB: that image
    // fails with its reason, and the other images of the run keep their results.
    let dir = scratch("too-large-for-memory");
    let huge = dir.join("huge.png");
    huge_png_header(&huge, 100_000, 100_000);
    let run = skyscribe(&[
        "embed",
        "--model",
        &model("tiny-a"),
        "--jsonl",
        "--max-pixels",
        "100000000000",
        good_image().to_str().unwrap(),
        huge.to_str().unwrap(),
        fixtures().join("images/gray.png").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(json_lines(&run.stdout).len(), 2, "{}", run.stdout);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("huge.png"))
        .unwrap_or_else(|| panic!("huge.png not reported: {}", run.stderr));
    assert!(line.contains("30.0 GB"), "{line}");
}

/// Runs the binary in `cwd` with stdout closed before it writes anything.
fn run_with_closed_stdout(args: &[&str], cwd: &Path) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_skyscribe"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_runs_anywhere_and_survives_a_closed_pipe() {
    // An installed binary: run from a folder outside the checkout (the CLIP tokenizer is
    // built in), its report written to a reader that has gone away.
    let elsewhere = std::env::temp_dir();
    let images = fixtures().join("images").display().to_string();
    let (code, stderr) = run_with_closed_stdout(
        &[
            "bench",
            "--images",
            &images,
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ],
        &elsewhere,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let run = skyscribe(&["bench", "--captioner-step", "--steps", "0"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--steps"), "{}", run.stderr);
}

#[test]
fn bench_preprocess_reports_what_it_decoded() {
    let images = fixtures().join("images");
    let run = skyscribe(&[
        "bench",
        "--preprocess",
        "--images",
        &images.display().to_string(),
        "--jsonl",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let n = skyscribe::imagery::images_under(&images).len();
    assert_eq!(r["images"], n);
    // CLIP's preprocessor at 224 pixels when no model is given.
    assert_eq!(r["output_size"], serde_json::json!([224, 224]));
    let pixels: u64 = skyscribe::imagery::images_under(&images)
        .iter()
        .map(|p| {
            image::image_dimensions(p)
                .map(|(w, h)| w as u64 * h as u64)
                .unwrap()
        })
        .sum();
    let mean = r["mean_megapixels"].as_f64().unwrap();
    assert!(
        (mean - pixels as f64 / n as f64 / 1e6).abs() < 1e-9,
        "{mean}"
    );
    assert!(r["device"].as_str().unwrap().starts_with("Cpu ("), "{r}");

    let run = skyscribe(&["bench", "--preprocess", "--precision", "bf16"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("--preprocess do not run a model"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_embedding_cache_lives_under_skyscribe_cache() {
    // SKYSCRIBE_CACHE is skyscribe's cache root: embeddings go to its embeddings/ folder.
    let dir = scratch("cache-root");
    let list = dir.join("set.jsonl");
    std::fs::write(
        &list,
        format!(
            "{{\"image\": \"{}\", \"labels\": [\"Forest\"]}}\n{{\"image\": \"{}\", \"labels\": [\"River\"]}}\n",
            good_image().display(),
            fixtures().join("images/gray.png").display()
        ),
    )
    .unwrap();
    let root = dir.join("cache");
    let dataset = format!("jsonl:{}", list.display());
    let r = skyscribe_env(
        &[
            "eval",
            "zero-shot",
            "--model",
            &model("tiny-a"),
            "--dataset",
            &dataset,
            "--labels",
            "forest,river",
        ],
        &[("SKYSCRIBE_CACHE", &root)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let entries = |d: &Path| -> usize {
        fn count(d: &Path) -> usize {
            std::fs::read_dir(d).map_or(0, |rd| {
                rd.map(|e| e.unwrap().path())
                    .map(|p| if p.is_dir() { count(&p) } else { 1 })
                    .sum()
            })
        }
        count(d)
    };
    assert_eq!(entries(&root.join("embeddings")), 2);
    assert_eq!(entries(&root), 2, "only embeddings are written");
    let help = skyscribe(&["eval", "zero-shot", "--help"]).stdout;
    assert!(
        help.contains("embeddings/ under $SKYSCRIBE_CACHE"),
        "{help}"
    );
}

/// `--precision int8` as users ask for it: on a CPU with AVX512-VNNI, the embeddings of
/// `embed --jsonl` stay close to f32's (and moved: int8 ran); elsewhere a refusal naming what is
/// missing, exit 1, nothing printed.
#[test]
fn embed_in_int8_is_close_to_f32_or_refused_with_the_reason() {
    let m = model("tiny-a");
    let img = good_image().display().to_string();
    let run = |precision: &str| {
        let mut args = embed_on_cpu_args(&m, precision, &img);
        args.insert(1, "--jsonl");
        skyscribe(&args)
    };
    let embedding = |r: &Run| -> Vec<f32> {
        let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
        v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let int8 = run("int8");
    if !skyscribe::models::int8::int8_available() {
        assert_eq!(int8.code, 1, "{}", int8.stderr);
        assert!(int8.stdout.is_empty());
        assert!(
            int8.stderr.contains("AVX512-VNNI") || int8.stderr.contains("AVX-512 code"),
            "{}",
            int8.stderr
        );
        return;
    }
    assert_eq!(int8.code, 0, "{}", int8.stderr);
    let f32_run = run("f32");
    let (a, b) = (embedding(&f32_run), embedding(&int8));
    let c = cosine(&a, &b);
    assert!(c > 0.998 && a != b, "cosine {c}");
}
