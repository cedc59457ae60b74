//! `import-openclip` against OpenCLIP itself: the built-in architectures against open_clip's own
//! configs and state dicts, tiny random models in three checkpoint forms against the features
//! open_clip computed (`scripts/reference/make_openclip_reference.py`), and refusals of what does not fit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use skyscribe::imagery::Preprocessor;
use skyscribe::openclip::{ARCHS, Checkpoint, OpenClipConfig, load_converted};

use crate::common::{cosine, fixtures, floats, json_lines, read_json, rows, scratch, skyscribe};

/// The tiny models and the checkpoint file each is saved in.
const TINY: &[(&str, &str)] = &[
    ("tiny-b32-quickgelu", "open_clip_model.pt"),
    ("tiny-l14-336-gelu", "epoch_3.pt"),
    ("tiny-h14-gelu", "open_clip_model.safetensors"),
];

fn dir() -> PathBuf {
    fixtures().join("openclip")
}

fn tiny_config(name: &str) -> OpenClipConfig {
    OpenClipConfig::from_file(&dir().join(name).join("open_clip_config.json")).unwrap()
}

/// Every `--arch` is OpenCLIP's model of that name: the same config, and the state dict
/// open_clip builds from it has exactly the names and shapes the import expects.
#[test]
fn built_in_architectures_are_openclips() {
    let archs = read_json(&dir().join("archs.json"));
    let archs = archs.as_object().unwrap();
    for (name, _) in ARCHS {
        assert!(
            archs.contains_key(*name),
            "{name} has no OpenCLIP reference"
        );
    }
    for (name, want) in archs {
        let ours = OpenClipConfig::builtin(name).unwrap();
        let theirs = OpenClipConfig::from_json(want["config"].clone()).unwrap();
        assert_eq!(ours, theirs, "{name}: config differs from open_clip's");
        let shapes: BTreeMap<String, Vec<usize>> =
            serde_json::from_value(want["shapes"].clone()).unwrap();
        assert_eq!(
            ours.state_dict_shapes(),
            shapes,
            "{name}: state dict differs"
        );
        let pp = &want["preprocess"];
        let mean: Vec<f64> = serde_json::from_value(pp["mean"].clone()).unwrap();
        let std: Vec<f64> = serde_json::from_value(pp["std"].clone()).unwrap();
        assert_eq!(ours.preprocess.mean.to_vec(), mean, "{name} mean");
        assert_eq!(ours.preprocess.std.to_vec(), std, "{name} std");
        assert_eq!(
            (pp["interpolation"].as_str(), ours.preprocess.resample),
            (Some("bicubic"), 3)
        );
        assert_eq!(pp["resize_mode"], "shortest");
        // transformers' activation name for what open_clip builds.
        let quick = name.ends_with("-quickgelu");
        let act = serde_json::to_value(ours.clip_config().vision_config.hidden_act).unwrap();
        assert_eq!(act, if quick { "quick_gelu" } else { "gelu" }, "{name}");
    }
    // ViT-H-14's heads come from head_width 80, not 64.
    let h = OpenClipConfig::builtin("ViT-H-14").unwrap();
    assert_eq!((h.vision.heads, h.vision.mlp, h.text.heads), (16, 5120, 16));
}

/// Converted in memory and run on the pixels and token ids open_clip was given.
#[test]
fn tiny_models_match_openclip_on_identical_inputs() {
    for (name, file) in TINY {
        let reference = read_json(&dir().join(name).join("reference.json"));
        let config = tiny_config(name);
        let ckpt = Checkpoint::read(&dir().join(name).join(file)).unwrap();
        ckpt.check(&config).unwrap();
        let model = load_converted(ckpt.to_hf(&config).unwrap(), &config).unwrap();

        let shape: Vec<usize> = serde_json::from_value(reference["pixels_shape"].clone()).unwrap();
        let pixels = Tensor::from_vec(floats(&reference["pixels"]), shape, &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = model.image_features(&pixels).unwrap().to_vec2().unwrap();
        let want = rows(&reference["image_features"]);
        for (g, w) in got.iter().zip(&want) {
            let c = cosine(g, w);
            assert!(c >= 0.9999, "{name}: image features cosine {c}");
        }

        let ids: Vec<Vec<u32>> = serde_json::from_value(reference["ids"].clone()).unwrap();
        let got: Vec<Vec<f32>> = model.text_features(&ids).unwrap().to_vec2().unwrap();
        let want = rows(&reference["text_features"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let c = cosine(g, w);
            assert!(c >= 0.9999, "{name}: text features cosine {c}");
        }
    }
}

fn import(name: &str, file: &str, out: &Path) {
    let cfg = dir().join(name).join("open_clip_config.json");
    let r = skyscribe(&[
        "import-openclip",
        "--weights",
        dir().join(name).join(file).to_str().unwrap(),
        "--arch-config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
}

/// Imported with the command, then used by `embed` on image files and texts: OpenCLIP's
/// preprocessing (including torchvision's crop rounding) and tokenizer, end to end.
#[test]
fn imported_folders_match_openclip_end_to_end() {
    let scratch = scratch("openclip-import");
    for (name, file) in TINY {
        let out = scratch.join(name);
        import(name, file, &out);
        let reference = read_json(&dir().join(name).join("reference.json"));
        let pre = Preprocessor::from_file(&out.join("preprocessor_config.json")).unwrap();
        let mut args = vec!["embed", "--jsonl", "--model", out.to_str().unwrap()];
        let files: Vec<String> = reference["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                dir()
                    .join(f["file"].as_str().unwrap())
                    .display()
                    .to_string()
            })
            .collect();
        args.extend(files.iter().map(|s| s.as_str()));
        let r = skyscribe(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let lines = json_lines(&r.stdout);
        for (f, path) in reference["files"].as_array().unwrap().iter().zip(&files) {
            // The preprocessed pixels themselves: their sum and a corner.
            let img = skyscribe::imagery::load_rgb(Path::new(path), &Default::default()).unwrap();
            let px = pre.preprocess(&img).unwrap();
            let sum: f64 = px.iter().map(|&v| v as f64).sum();
            let want_sum = f["pixels_sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() < 1e-2,
                "{path}: pixel sum {sum} vs {want_sum}"
            );
            let n = (px.len() / 3) as f64;
            let side = n.sqrt() as usize;
            let corner: Vec<f32> = (0..3)
                .flat_map(|c| {
                    let px = &px;
                    [0, 1, side, side + 1].map(move |i| px[c * side * side + i])
                })
                .collect();
            let want_corner = floats(&f["pixels_corner"]);
            assert!(
                crate::common::max_abs_diff(&corner, &want_corner) < 1e-5,
                "{path}: corner"
            );

            let line = lines.iter().find(|l| l["input"] == path.as_str()).unwrap();
            let c = cosine(&floats(&line["embedding"]), &floats(&f["features"]));
            assert!(c >= 0.9999, "{name} {path}: cosine {c}");
        }
        if let Some(texts) = reference["texts"].as_array() {
            let tok =
                skyscribe::tokenizer::TextTokenizer::from_file(&out.join("tokenizer.json"), 77)
                    .unwrap();
            let mut args = vec!["embed", "--jsonl", "--model", out.to_str().unwrap()];
            for t in texts {
                let text = t["text"].as_str().unwrap();
                let ids: Vec<u32> = serde_json::from_value(t["ids"].clone()).unwrap();
                assert_eq!(tok.encode(text).unwrap(), ids, "token ids of {text:?}");
                args.extend(["--text", text]);
            }
            let r = skyscribe(&args);
            assert_eq!(r.code, 0, "{}", r.stderr);
            let lines = json_lines(&r.stdout);
            assert_eq!(lines.len(), texts.len());
            for (l, t) in lines.iter().zip(texts) {
                let c = cosine(&floats(&l["embedding"]), &floats(&t["features"]));
                assert!(c >= 0.9999, "{name} {:?}: cosine {c}", t["text"]);
            }
        }
        let config = read_json(&out.join("config.json"));
        let quick = name.contains("quickgelu");
        assert_eq!(
            config["vision_config"]["hidden_act"],
            if quick { "quick_gelu" } else { "gelu" }
        );
        assert_eq!(
            read_json(&out.join("preprocessor_config.json"))["crop_offsets"],
            "torchvision"
        );
    }
}

/// Runs `import-openclip --weights WEIGHTS ARCH... --out OUT` and checks that it is refused with
/// every one of `needles` in its message.
fn refused(weights: &Path, arch: &[&str], out: &Path, needles: &[&str]) {
    let mut args = vec!["import-openclip", "--weights", weights.to_str().unwrap()];
    args.extend_from_slice(arch);
    args.extend(["--out", out.to_str().unwrap()]);
    let r = skyscribe(&args);
    assert_ne!(r.code, 0, "{args:?} was accepted");
    for n in needles {
        assert!(r.stderr.contains(n), "{args:?}: {n:?} not in: {}", r.stderr);
    }
}

/// `--arch-config FILE`, as `refused` takes it.
fn config(file: &Path) -> [&str; 2] {
    ["--arch-config", file.to_str().unwrap()]
}

#[test]
fn refuses_what_it_cannot_convert() {
    let scratch = scratch("openclip-refusals");
    let out = scratch.join("out");
    let h14 = dir().join("tiny-h14-gelu");
    let w = h14.join("open_clip_model.safetensors");
    let h14_cfg = h14.join("open_clip_config.json");
    let write_config = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let mut cfg = read_json(&h14_cfg);
        edit(&mut cfg);
        let path = scratch.join(name);
        std::fs::write(&path, cfg.to_string()).unwrap();
        path
    };

    // ResNet towers, by name and by config.
    refused(&w, &["--arch", "RN50"], &out, &["RN50", "ResNet"]);
    let rn = scratch.join("rn.json");
    std::fs::write(
        &rn,
        r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": null}, "text_cfg": {}}"#,
    )
    .unwrap();
    refused(&w, &config(&rn), &out, &["rn.json", "ResNet"]);
    // An option that changes the computation, and one nobody knows.
    let ls = write_config("ls.json", &|c| {
        c["vision_cfg"]["ls_init_value"] = 0.1.into()
    });
    refused(
        &w,
        &config(&ls),
        &out,
        &["vision_cfg.ls_init_value", "layer scale"],
    );
    let unknown = write_config("unknown.json", &|c| c["text_cfg"]["rope"] = true.into());
    refused(
        &w,
        &config(&unknown),
        &out,
        &["text_cfg.rope", "unknown option"],
    );
    // The wrong architecture for the weights: names what is missing and mis-shaped, and says
    // what the checkpoint holds.
    let l14_cfg = dir().join("tiny-l14-336-gelu/open_clip_config.json");
    refused(
        &w,
        &config(&l14_cfg),
        &out,
        &[
            "open_clip_model.safetensors",
            "missing tensor(s): transformer.resblocks.2",
            "wrong shape",
        ],
    );
    refused(
        &w,
        &["--arch", "ViT-B-32"],
        &out,
        &[
            "an image tower of width 48, patch 7, 3 layers, 28 px; a text tower of width 24, 2 \
             layers, context 12, vocabulary 700",
            "visual.conv1.weight is [48, 3, 7, 7], expected [768, 3, 32, 32]",
        ],
    );
    // One tensor renamed and one reshaped.
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    let t = tensors.remove("ln_final.bias").unwrap();
    tensors.insert("ln_final.beta".into(), t);
    let p = tensors["visual.proj"].t().unwrap().contiguous().unwrap();
    tensors.insert("visual.proj".into(), p);
    let broken = scratch.join("broken.safetensors");
    candle_core::safetensors::save(&tensors, &broken).unwrap();
    refused(
        &broken,
        &config(&h14_cfg),
        &out,
        &[
            "unknown tensor(s): ln_final.beta",
            "missing tensor(s): ln_final.bias",
            "visual.proj is [20, 48], expected [48, 20]",
        ],
    );
    // Not a checkpoint at all.
    let junk = scratch.join("junk.pt");
    std::fs::write(&junk, b"not a zip").unwrap();
    refused(
        &junk,
        &["--arch", "ViT-B-32"],
        &out,
        &["junk.pt", "not a PyTorch checkpoint"],
    );
    // Nothing was left behind by any refusal, and an existing folder is never overwritten.
    assert!(!out.exists());
    let names: Vec<String> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("out")),
        "left behind: {names:?}"
    );
    std::fs::create_dir(&out).unwrap();
    refused(&w, &config(&h14_cfg), &out, &["already exists"]);
    // --arch and --arch-config together make no sense.
    let both = [&["--arch", "ViT-B-32"][..], &config(&h14_cfg)[..]].concat();
    refused(&w, &both, &out, &["cannot be used with"]);
}

/// A small RSICD-layout set in `dir`: the first `n` test images (symlinked) and their
/// captions.
fn small_rsicd(data: &Path, dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(data.join("rsicd/test/captions.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let f = v["filename"].as_str().unwrap();
        std::os::unix::fs::symlink(data.join("rsicd/test").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("captions.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn last_json(stdout: &str) -> serde_json::Value {
    json_lines(stdout).pop().unwrap()
}

fn metric(out: &Path, file: &str, name: &str) -> f64 {
    read_json(&out.join(file))["metrics"][name]
        .as_f64()
        .unwrap()
}

/// `eval benchmark` over the built-in model and an imported OpenCLIP model gives, per task, what
/// the dedicated commands give; writes the JSONs and tables; resumes; keeps going past a task
/// that fails.
#[test]
fn benchmark_runs_the_suite_and_matches_the_single_commands() {
    let Some(data) = crate::common::data_root("benchmark_runs_the_suite") else {
        return;
    };
    let s = scratch("openclip-benchmark");
    let rsicd = s.join("rsicd-small");
    small_rsicd(&data, &rsicd, 40);
    // Five EuroSAT test images of each class.
    let split_text = std::fs::read_to_string(data.join("eurosat/splits/test.txt")).unwrap();
    let mut per_class: BTreeMap<String, usize> = BTreeMap::new();
    let split: Vec<&str> = split_text
        .lines()
        .filter(|l| {
            let n = per_class
                .entry(l.split('/').next().unwrap().to_string())
                .or_default();
            *n += 1;
            *n <= 5
        })
        .collect();
    std::fs::write(s.join("split.txt"), split.join("\n") + "\n").unwrap();
    let suite = s.join("suite.toml");
    std::fs::write(
        &suite,
        "[[task]]\ndataset = \"EuroSAT\"\ntask = \"zero-shot\"\ndata = \"folder:${DATA}/eurosat/images\"\n\
         split = \"split.txt\"\nlabels = \"classes\"\n\n\
         [[task]]\ndataset = \"RSICD\"\ntask = \"retrieval\"\ndata = \"rsicd:rsicd-small\"\n\n\
         [[task]]\ndataset = \"RSICD\"\ntask = \"captions\"\ndata = \"rsicd:rsicd-small\"\n"
    )
    .unwrap();
    let imported = s.join("tiny-openclip");
    import("tiny-b32-quickgelu", "open_clip_model.pt", &imported);
    let out = s.join("results");
    let cache = s.join("cache");
    let (out_s, cache_s, data_s) = (
        out.to_str().unwrap(),
        cache.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let args = [
        "eval",
        "benchmark",
        "--suite",
        suite.to_str().unwrap(),
        "--data",
        data_s,
        "--model",
        "skyscribe-mini",
        "--model",
        imported.to_str().unwrap(),
        "--captioner",
        "skyscribe-mini-captioner",
        "--out",
        out_s,
        "--cache",
        cache_s,
    ];
    let r = skyscribe(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "results.csv",
            "results.md",
            "skyscribe-mini--EuroSAT--zero-shot.json",
            "skyscribe-mini--RSICD--retrieval.json",
            "skyscribe-mini-captioner--RSICD--captions.json",
            "tiny-openclip--EuroSAT--zero-shot.json",
            "tiny-openclip--RSICD--retrieval.json",
        ]
    );

    // Each number is the dedicated command's.
    let split_s = s.join("split.txt");
    // The class folder names as words, as `labels = "classes"` makes them.
    let labels_file = s.join("classes.txt");
    let lines: Vec<String> = per_class
        .keys()
        .map(|c| format!("{} => {c}", skyscribe::eval::benchmark::class_words(c)))
        .collect();
    std::fs::write(&labels_file, lines.join("\n")).unwrap();
    for model in ["skyscribe-mini", imported.to_str().unwrap()] {
        let name = skyscribe::eval::benchmark::model_name(model);
        let z = skyscribe(&[
            "eval",
            "zero-shot",
            "--jsonl",
            "--model",
            model,
            "--dataset",
            &format!("folder:{data_s}/eurosat/images"),
            "--split",
            split_s.to_str().unwrap(),
            "--labels",
            labels_file.to_str().unwrap(),
            "--cache",
            cache_s,
        ]);
        assert_eq!(z.code, 0, "{}", z.stderr);
        let top1 = last_json(&z.stdout)["summary"]["main"]["single"]["top1"]
            .as_f64()
            .unwrap();
        let got = metric(&out, &format!("{name}--EuroSAT--zero-shot.json"), "top1");
        assert!(
            (got - 100.0 * top1).abs() < 1e-3,
            "{model}: {got} vs {top1}"
        );

        let rr = skyscribe(&[
            "eval",
            "retrieval",
            "--jsonl",
            "--model",
            model,
            "--data",
            &format!("rsicd:{}", rsicd.display()),
            "--cache",
            cache_s,
        ]);
        assert_eq!(rr.code, 0, "{}", rr.stderr);
        let mr = last_json(&rr.stdout)["summary"]["mean_recall"]
            .as_f64()
            .unwrap();
        let got = metric(&out, &format!("{name}--RSICD--retrieval.json"), "mR");
        assert!((got - 100.0 * mr).abs() < 1e-3, "{model}: {got} vs {mr}");
    }
    let c = skyscribe(&[
        "eval",
        "captions",
        "--jsonl",
        "--captioner",
        "skyscribe-mini-captioner",
        "--data",
        &format!("rsicd:{}", rsicd.display()),
        "--cache",
        cache_s,
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let cider = last_json(&c.stdout)["corpus"]["cider_d"].as_f64().unwrap();
    let got = metric(
        &out,
        "skyscribe-mini-captioner--RSICD--captions.json",
        "CIDEr-D",
    );
    assert!((got - cider).abs() < 1e-3, "{got} vs {cider}");

    // The tables hold every number once.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("dataset,task,metric,value,model"));
    // 3 zero-shot + 7 retrieval metrics per model, 7 caption metrics.
    assert_eq!(lines.count(), 2 * (3 + 7) + 7);
    assert!(csv.contains(&format!(
        "RSICD,captions,CIDEr-D,{},skyscribe-mini-captioner",
        got
    )));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.starts_with(
        "| dataset | task | metric | skyscribe-mini | tiny-openclip | skyscribe-mini-captioner |"
    ));

    // Run again: every result is reused, nothing recomputed.
    let before =
        std::fs::read_to_string(out.join("skyscribe-mini--RSICD--retrieval.json")).unwrap();
    let again = skyscribe(&args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.stderr.matches("already in").count(),
        5,
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read_to_string(out.join("skyscribe-mini--RSICD--retrieval.json")).unwrap(),
        before
    );

    // A task whose data is missing fails alone: the others still run and are written.
    let broken = s.join("broken.toml");
    std::fs::write(
        &broken,
        "[[task]]\ndataset = \"Gone\"\ntask = \"retrieval\"\ndata = \"rsicd:no-such-dir\"\n\n\
         [[task]]\ndataset = \"RSICD\"\ntask = \"retrieval\"\ndata = \"rsicd:rsicd-small\"\n",
    )
    .unwrap();
    let out2 = s.join("results2");
    // So does a model that does not load.
    let not_a_model = s.join("not-a-model");
    std::fs::create_dir_all(&not_a_model).unwrap();
    let r = skyscribe(&[
        "eval",
        "benchmark",
        "--suite",
        broken.to_str().unwrap(),
        "--model",
        not_a_model.to_str().unwrap(),
        "--model",
        "skyscribe-mini",
        "--out",
        out2.to_str().unwrap(),
        "--cache",
        cache_s,
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("Gone retrieval — skyscribe-mini: failed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no-such-dir"), "{}", r.stderr);
    assert!(
        r.stderr.contains("the model does not load") && r.stderr.contains("has no config.json"),
        "{}",
        r.stderr
    );
    assert!(out2.join("skyscribe-mini--RSICD--retrieval.json").is_file());
    assert!(!out2.join("not-a-model--RSICD--retrieval.json").exists());
}

/// Older Hugging Face CLIP repositories (some remote-sensing fine-tunes) carry only the slow
/// tokenizer's vocab.json + merges.txt: CLIP's are accepted as the built-in tokenizer.json,
/// anything else is refused.
#[test]
fn hf_folders_with_only_the_slow_tokenizer_files_load() {
    let with_json = crate::common::tiny_clip("tiny-a");
    let s = scratch("openclip-slow-tokenizer");
    let slow = s.join("tiny-a-slow");
    std::fs::create_dir_all(&slow).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(with_json.join(f), slow.join(f)).unwrap();
    }
    let tok = read_json(&with_json.join("tokenizer.json"));
    std::fs::write(slow.join("vocab.json"), tok["model"]["vocab"].to_string()).unwrap();
    let merges: Vec<String> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    let merges_txt = format!("#version: 0.2\n{}\n", merges.join("\n"));
    std::fs::write(slow.join("merges.txt"), &merges_txt).unwrap();
    let embed = |dir: &Path| {
        let r = skyscribe(&[
            "embed",
            "--jsonl",
            "--model",
            dir.to_str().unwrap(),
            "--text",
            "a dense residential area with trees",
            "--text",
            "harbour",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    assert_eq!(embed(&slow), embed(&with_json));

    // Other merges are not CLIP's: refused, with what to do.
    std::fs::write(
        slow.join("merges.txt"),
        merges_txt.replacen("i n\n", "n i\n", 1),
    )
    .unwrap();
    let r = skyscribe(&["embed", "--model", slow.to_str().unwrap(), "--text", "x"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("are not CLIP's") && r.stderr.contains("tiny-a-slow"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(slow.join("merges.txt")).unwrap();
    let r = skyscribe(&["embed", "--model", slow.to_str().unwrap(), "--text", "x"]);
    assert!(
        r.stderr
            .contains("no tokenizer.json (nor vocab.json + merges.txt)"),
        "{}",
        r.stderr
    );
}
