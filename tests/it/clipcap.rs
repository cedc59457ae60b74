//! ClipCap: checkpoints in the reference layout, imported with `import-clipcap`, caption images
//! token for token as the reference's greedy decoding (`scripts/reference/make_clipcap_reference.py`).

use crate::common;

use std::path::PathBuf;

use candle_core::Device;
use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let r = skyscribe(args);
    (r.code, r.stdout, r.stderr)
}

/// The tiny GPT-2's directory: its config plus the real GPT-2 tokenizer.
fn gpt2_dir(name: &str, n_embd: Option<usize>) -> PathBuf {
    let dir = scratch(name);
    let mut config = read_json(&fixtures().join("clipcap/gpt2/config.json"));
    if let Some(n) = n_embd {
        config["n_embd"] = n.into();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        repo().join("assets/tokenizers/gpt2/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}

fn import(kind: &str, gpt2: &std::path::Path, out: &std::path::Path) -> (i32, String, String) {
    let e = read_json(&fixtures().join("clipcap/expected.json"));
    let c = &e["checkpoints"][kind];
    let weights = fixtures().join(format!("clipcap/{kind}.pt"));
    run(&[
        "import-clipcap",
        "--weights",
        weights.to_str().unwrap(),
        "--gpt2",
        gpt2.to_str().unwrap(),
        "--clip",
        tiny_clip("tiny-a").to_str().unwrap(),
        "--mapping",
        kind,
        "--prefix-length",
        &c["prefix_length"].to_string(),
        "--clip-length",
        &c["clip_length"].to_string(),
        "--num-layers",
        &c["num_layers"].to_string(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn imported_checkpoints_caption_like_the_reference() {
    let e = read_json(&fixtures().join("clipcap/expected.json"));
    let images: Vec<PathBuf> = e["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| fixtures().join(p.as_str().unwrap()))
        .collect();
    let gpt2 = gpt2_dir("clipcap-gpt2", None);
    for kind in ["mlp", "transformer"] {
        let out = scratch(&format!("captioner-{kind}")).join("captioner");
        let (code, _, err) = import(kind, &gpt2, &out);
        assert_eq!(code, 0, "{err}");
        let expected: Vec<Vec<u32>> = e["checkpoints"][kind]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(integers)
            .collect();
        assert_ne!(
            expected[0], expected[1],
            "the fixture's captions must depend on the image"
        );

        // Library: token ids, all images in one batch.
        let cap = skyscribe::caption::Captioner::load(&out, &Device::Cpu).unwrap();
        let clip = skyscribe::encoder::ClipEncoder::load(
            tiny_clip("tiny-a").to_str().unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        let embeds: Vec<Vec<f32>> = images
            .iter()
            .map(|p| {
                clip.embed_pixels(&[clip.load_pixels(p, &Default::default()).unwrap()])
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let ids = cap.greedy(&embeds, &Default::default()).unwrap();
        assert_eq!(ids, expected, "{kind}: greedy tokens");
        let beam_size = e["checkpoints"][kind]["beam_size"].as_u64().unwrap() as usize;
        for (i, want) in e["checkpoints"][kind]["beam_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let want: Vec<u32> = integers(want);
            assert_eq!(
                cap.beam(&embeds[i], beam_size, &Default::default())
                    .unwrap(),
                want,
                "{kind}: beam tokens of image {i}"
            );
        }
        // Sampling: repeatable with a seed; a vanishing nucleus leaves only the greedy choice.
        let a = cap.sample(&embeds[0], 0.9, 7, &Default::default()).unwrap();
        assert_eq!(
            a,
            cap.sample(&embeds[0], 0.9, 7, &Default::default()).unwrap()
        );
        assert_ne!(
            a,
            cap.sample(&embeds[0], 0.9, 8, &Default::default()).unwrap()
        );
        assert_eq!(
            cap.sample(&embeds[0], 1e-6, 7, &Default::default())
                .unwrap(),
            expected[0]
        );

        // Command line: the same captions as text.
        let mut args = vec![
            "caption",
            "--captioner",
            out.to_str().unwrap(),
            "--model",
            "",
            "--decode",
            "greedy",
            "--jsonl",
        ];
        let model = tiny_clip("tiny-a");
        args[4] = model.to_str().unwrap();
        let paths: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let (code, stdout, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), images.len());
        for ((line, path), ids) in lines.iter().zip(&paths).zip(&expected) {
            assert_eq!(line["input"], *path);
            assert_eq!(line["caption"], cap.decode_text(ids).unwrap());
        }
        // describe shows the caption under the labels, from the captioner's own CLIP model.
        let (code, stdout, err) = run(&[
            "describe",
            "--captioner",
            out.to_str().unwrap(),
            "--jsonl",
            &paths[0],
        ]);
        assert_eq!(code, 0, "{err}");
        let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(line["caption"], cap.decode_text(&expected[0]).unwrap());
        assert_eq!(line["labels"].as_array().unwrap().len(), 5);
    }
}

#[test]
fn import_refuses_wrong_checkpoints_and_writes_nothing() {
    let gpt2 = gpt2_dir("clipcap-gpt2-bad", None);
    let dir = scratch("clipcap-bad");
    // A PyTorch state dict that is not ClipCap's.
    let not_clipcap = fixtures().join("clip/tiny-b/pytorch_model.bin");
    let out = dir.join("a");
    let (code, _, err) = run(&[
        "import-clipcap",
        "--weights",
        not_clipcap.to_str().unwrap(),
        "--gpt2",
        gpt2.to_str().unwrap(),
        "--clip",
        tiny_clip("tiny-a").to_str().unwrap(),
        "--mapping",
        "mlp",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a ClipCap state dict"), "{err}");
    assert!(!out.exists());
    // A checkpoint trained with another GPT-2 width.
    let wide = gpt2_dir("clipcap-gpt2-wide", Some(32));
    let out = dir.join("b");
    let (code, _, err) = import("mlp", &wide, &out);
    assert_eq!(code, 2);
    assert!(err.contains("mlp.pt") && err.contains("shape"), "{err}");
    assert!(!out.exists());
}
