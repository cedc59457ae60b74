//! `skyscribe train …` from the command line: bad input is a clear error that names the file
//! and loses nothing, and a trained CLIP folder is a model every other command loads.

use crate::common;

use std::path::{Path, PathBuf};

use common::Run;

fn skyscribe(args: &[&str]) -> Run {
    let cache = common::repo().join("target/test-scratch/cache");
    common::skyscribe_env(args, &[("SKYSCRIBE_CACHE", &cache)])
}

fn fails_with(r: &Run, parts: &[&str]) {
    assert_ne!(r.code, 0, "expected failure, got stdout {}", r.stdout);
    for p in parts {
        assert!(r.stderr.contains(p), "stderr lacks {p:?}: {}", r.stderr);
    }
}

/// A captions folder: `(file, captions)` with the files copied from real RSICD images.
fn caption_folder(data: &Path, name: &str, rows: &[(&str, &[&str])]) -> PathBuf {
    let dir = common::scratch(name);
    let src = data.join("rsicd/train");
    let mut lines = Vec::new();
    for (i, (file, caps)) in rows.iter().enumerate() {
        // The first files exist; names starting with "missing" do not.
        if !file.starts_with("missing") {
            let real = [
                "airport_1.jpg",
                "airport_10.jpg",
                "beach_1.jpg",
                "forest_1.jpg",
            ][i % 4];
            std::fs::copy(src.join(real), dir.join(file)).unwrap();
        }
        lines.push(serde_json::json!({"filename": file, "captions": caps}).to_string());
    }
    std::fs::write(dir.join("captions.jsonl"), lines.join("\n")).unwrap();
    dir
}

fn tiny_gpt2_file(dir: &Path) -> String {
    let path = dir.join("tiny-gpt2.json");
    std::fs::write(
        &path,
        r#"{"vocab_size": 400, "n_positions": 40, "n_embd": 32, "n_layer": 1, "n_head": 4}"#,
    )
    .unwrap();
    path.display().to_string()
}

fn tiny_clip_file(dir: &Path, patch: usize) -> String {
    let path = dir.join("tiny-clip.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"text_config": {{"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32,
  "eos_token_id": 1}},
 "vision_config": {{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
  "num_attention_heads": 2, "image_size": 32, "patch_size": {patch}}},
 "projection_dim": 32}}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn train_captioner(data_dir: &Path, out: &Path, extra: &[&str]) -> Run {
    let clip = common::tiny_clip("tiny-a").display().to_string();
    let data = format!("rsicd:{}", data_dir.display());
    let gpt2 = tiny_gpt2_file(data_dir);
    let mut args = vec![
        "train",
        "captioner",
        "--data",
        &data,
        "--clip",
        &clip,
        "--gpt2-config",
        &gpt2,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--vocab-size",
        "300",
        "--prefix-length",
        "4",
        "--val-fraction",
        "0",
        "--no-cache",
    ];
    args.extend_from_slice(extra);
    skyscribe(&args)
}

#[test]
fn captioner_training_refuses_bad_captions() {
    let Some(data) = common::data_root("captioner_bad_input") else {
        return;
    };
    let ok: &[&str] = &["a plane ."];
    // A caption naming an image that does not exist.
    let dir = caption_folder(&data, "bad-missing", &[("a.jpg", ok), ("missing.jpg", ok)]);
    let out = common::scratch("bad-missing-out");
    let r = train_captioner(&dir, &out, &[]);
    fails_with(&r, &["captions.jsonl:2", "missing.jpg", "does not exist"]);
    // An empty caption.
    let dir = caption_folder(&data, "bad-empty", &[("a.jpg", ok), ("b.jpg", &["  "])]);
    let r = train_captioner(&dir, &common::scratch("bad-empty-out"), &[]);
    fails_with(&r, &["captions.jsonl:2", "b.jpg", "empty caption"]);
    // A caption longer than GPT-2's context after the prefix (40 - 4 positions).
    let long = "many ".repeat(60) + "planes .";
    let dir = caption_folder(
        &data,
        "bad-long",
        &[("a.jpg", ok), ("b.jpg", &[long.as_str()])],
    );
    let r = train_captioner(&dir, &common::scratch("bad-long-out"), &[]);
    fails_with(&r, &["b.jpg", "tokens long", "context of 40"]);
    // An image in the folder without captions.
    let dir = caption_folder(&data, "bad-orphan", &[("a.jpg", ok)]);
    std::fs::copy(dir.join("a.jpg"), dir.join("extra.jpg")).unwrap();
    let r = train_captioner(&dir, &common::scratch("bad-orphan-out"), &[]);
    fails_with(&r, &["have no captions", "extra.jpg"]);
}

#[test]
fn resume_needs_a_checkpoint_and_a_finished_run_is_not_overwritten() {
    let Some(data) = common::data_root("resume_empty") else {
        return;
    };
    let ok: &[&str] = &["a plane is parked ."];
    let dir = caption_folder(
        &data,
        "resume-data",
        &[("a.jpg", ok), ("b.jpg", ok), ("c.jpg", ok)],
    );
    let empty = common::scratch("resume-empty-out");
    let r = train_captioner(&dir, &empty, &["--resume"]);
    fails_with(&r, &["no checkpoint to resume from"]);
    assert!(
        std::fs::read_dir(&empty).unwrap().next().is_none(),
        "nothing written"
    );

    let out = common::scratch("resume-done-out");
    let r = train_captioner(&dir, &out, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let r = train_captioner(&dir, &out, &[]);
    fails_with(&r, &["holds a training run already", "--resume"]);
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    // Resuming a finished run changes nothing either.
    let r = train_captioner(&dir, &out, &["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    // Resuming with other options is refused.
    let r = train_captioner(&dir, &out, &["--resume", "--seed", "9"]);
    fails_with(&r, &["other options"]);
}

fn train_clip(data_dir: &Path, out: &Path, config: &str, epochs: &str) -> Run {
    let data = format!("rsicd:{}", data_dir.display());
    skyscribe(&[
        "train",
        "clip",
        "--data",
        &data,
        "--config",
        config,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        epochs,
        "--batch-size",
        "4",
        "--vocab-size",
        "300",
        "--val-fraction",
        "0.25",
        "--jsonl",
    ])
}

#[test]
fn clip_training_refuses_bad_input() {
    let Some(data) = common::data_root("clip_bad_input") else {
        return;
    };
    let ok: &[&str] = &["a plane is parked ."];
    let rows: Vec<(&str, &[&str])> =
        vec![("a.jpg", ok), ("b.jpg", ok), ("c.jpg", ok), ("d.jpg", ok)];
    // A config with impossible shapes: 32-pixel images in 5-pixel patches.
    let dir = caption_folder(&data, "clip-bad-config", &rows);
    let cfg = tiny_clip_file(&dir, 5);
    let r = train_clip(&dir, &common::scratch("clip-bad-config-out"), &cfg, "1");
    fails_with(&r, &["tiny-clip.json", "not a multiple of patch_size"]);
    // Captions naming images that are not there.
    let dir = caption_folder(&data, "clip-missing", &[("a.jpg", ok), ("missing.jpg", ok)]);
    let cfg = tiny_clip_file(&dir, 8);
    let r = train_clip(&dir, &common::scratch("clip-missing-out"), &cfg, "1");
    fails_with(&r, &["missing.jpg", "does not exist"]);
    // A folder of unreadable images.
    let dir = caption_folder(&data, "clip-unreadable", &rows);
    for (f, _) in &rows {
        std::fs::write(dir.join(f), b"not a jpeg at all").unwrap();
    }
    let cfg = tiny_clip_file(&dir, 8);
    let r = train_clip(&dir, &common::scratch("clip-unreadable-out"), &cfg, "1");
    // Images decode in parallel: the error names whichever of the four failed first.
    fails_with(
        &r,
        &["clip-unreadable/", ".jpg: not an image in a known format"],
    );
}

#[test]
fn a_trained_clip_folder_round_trips_through_every_command() {
    let Some(data) = common::data_root("clip_round_trip") else {
        return;
    };
    let caps: [&[&str]; 4] = [
        &["many planes are parked in an airport ."],
        &["an airport with a long runway ."],
        &["waves reach a yellow beach ."],
        &["dense green trees in a forest ."],
    ];
    let rows: Vec<(String, &[&str])> = (0..8)
        .map(|i| (format!("img{i}.jpg"), caps[i % 4]))
        .collect();
    let rows_ref: Vec<(&str, &[&str])> = rows.iter().map(|(f, c)| (f.as_str(), *c)).collect();
    let dir = caption_folder(&data, "round-trip-data", &rows_ref);
    let cfg = tiny_clip_file(&dir, 8);
    let model = common::scratch("round-trip-clip");
    let r = train_clip(&dir, &model, &cfg, "2");
    assert_eq!(r.code, 0, "{}", r.stderr);
    // --jsonl: one history line an epoch, with validation recalls.
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1]["metrics"]["image_to_text_r@1"].as_f64().is_some());
    // Each epoch is reported once: on stdout, not again on stderr.
    assert!(!r.stderr.contains("epoch 1"), "{}", r.stderr);
    // Weights are readable by others on a shared machine, as config.json is.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(model.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("model.safetensors"), mode("config.json"));
        assert_eq!(
            mode("model.safetensors") & 0o044,
            0o044,
            "not readable by others"
        );
    }
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(model.join(f).is_file(), "{f}");
    }
    let m = model.to_str().unwrap();
    let img = dir.join("img0.jpg");
    let img = img.to_str().unwrap();

    let r = skyscribe(&["embed", "--model", m, "--jsonl", "--text", "a beach", img]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 2);

    let r = skyscribe(&[
        "labels",
        "--model",
        m,
        "--labels",
        "airport,beach,forest",
        "--jsonl",
        img,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 3);

    let split = dir.join("split.txt");
    std::fs::write(
        &split,
        "Forest/Forest_1.jpg\nRiver/River_1.jpg\nSeaLake/SeaLake_1.jpg\n",
    )
    .unwrap();
    let dataset = format!("folder:{}", data.join("eurosat/images").display());
    let r = skyscribe(&[
        "eval",
        "zero-shot",
        "--model",
        m,
        "--dataset",
        &dataset,
        "--split",
        split.to_str().unwrap(),
        "--labels",
        "eurosat",
        "--no-cache",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let out = common::scratch("round-trip-captioner");
    let data_spec = format!("rsicd:{}", dir.display());
    let gpt2 = tiny_gpt2_file(&dir);
    let r = skyscribe(&[
        "train",
        "captioner",
        "--data",
        &data_spec,
        "--clip",
        m,
        "--gpt2-config",
        &gpt2,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--vocab-size",
        "300",
        "--prefix-length",
        "4",
        "--no-cache",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = skyscribe(&[
        "caption",
        "--captioner",
        out.to_str().unwrap(),
        "--jsonl",
        img,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["input"], img);
    assert!(v["caption"].is_string());
    // The captioner scored on its data, and the nearest-neighbour baseline on the same.
    let r = skyscribe(&[
        "eval",
        "captions",
        "--captioner",
        out.to_str().unwrap(),
        "--data",
        &data_spec,
        "--jsonl",
        "--no-cache",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["images"], 8);
    let r = skyscribe(&[
        "eval",
        "captions",
        "--nearest-neighbour",
        &data_spec,
        "--clip",
        m,
        "--data",
        &data_spec,
        "--jsonl",
        "--no-cache",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    // Each image's nearest neighbour in its own set is itself: its caption is a reference.
    assert!(last["corpus"]["cider_d"].as_f64().unwrap() > 3.0, "{last}");
}

/// Four real images, each with the same two captions.
fn four_captioned_images(data: &Path, name: &str) -> PathBuf {
    let ok: &[&str] = &["a plane is parked .", "an airport ."];
    let rows: Vec<(&str, &[&str])> =
        vec![("a.jpg", ok), ("b.jpg", ok), ("c.jpg", ok), ("d.jpg", ok)];
    caption_folder(data, name, &rows)
}

#[test]
fn from_scratch_runs_get_from_scratch_defaults_and_a_warm_up_warning() {
    let Some(data) = common::data_root("from_scratch_defaults") else {
        return;
    };
    let dir = four_captioned_images(&data, "scratch-defaults");
    // GPT-2 from scratch: lr 1e-3 after 300 warm-up steps, not the fine-tuning 2e-5 / 5,000.
    let out = common::scratch("scratch-defaults-captioner");
    let r = train_captioner(&dir, &out, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = common::read_json(&out.join("checkpoint/state.json"));
    assert_eq!(state["options"]["lr"], 1e-3);
    assert_eq!(state["options"]["warmup"], 300);
    // Both trainers say before starting that the warm-up outlasts the run.
    assert!(r.stderr.contains("warm-up (300 steps)"), "{}", r.stderr);
    let cfg = tiny_clip_file(&dir, 8);
    let r = train_clip(&dir, &common::scratch("scratch-defaults-clip"), &cfg, "1");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warm-up (200 steps)"), "{}", r.stderr);
}

#[test]
fn fine_tuning_keeps_the_models_usage_defaults() {
    let Some(data) = common::data_root("fine_tune_defaults") else {
        return;
    };
    let dir = four_captioned_images(&data, "fine-tune-defaults");
    let out = common::scratch("fine-tune-defaults-out");
    let r = skyscribe(&[
        "train",
        "clip",
        "--data",
        &format!("rsicd:{}", dir.display()),
        "--init",
        "skyscribe-mini",
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--val-fraction",
        "0",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let defaults = common::read_json(&out.join("skyscribe.json"));
    assert_eq!(defaults["templates"][0], "this is a {} .");
}
