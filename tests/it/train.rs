//! Training: gradients reach every trained tensor, small runs on real RSICD captions learn,
//! interrupted-and-resumed runs end with the same weights, and bad input is refused clearly.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use skyscribe::caption::CaptionerConfig;
use skyscribe::models::gpt2::Gpt2Config;
use skyscribe::models::mapper::{MapperConfig, MappingType};
use skyscribe::models::weights::Weights;
use skyscribe::models::{ClipConfig, clip::l2_normalize};
use skyscribe::train::RunOptions;
use skyscribe::train::captioner::{
    CaptionerTrainOptions, ModelSource, build_model, train_captioner,
};
use skyscribe::train::clip::{CaptionPool, ClipTrainOptions, ClipTrainee, train_clip};

/// Asserts that every variable has a gradient with at least one non-zero value.
fn assert_all_grads(vars: &[(String, candle_core::Var)], grads: &candle_core::backprop::GradStore) {
    assert!(!vars.is_empty());
    for (name, v) in vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let max = g
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max > 0.0, "all-zero gradient for {name}");
    }
}

fn tiny_gpt2_config() -> Gpt2Config {
    Gpt2Config::from_file(&common::fixtures().join("gpt2/tiny/config.json")).unwrap()
}

fn captioner_config(mapping: MappingType) -> CaptionerConfig {
    let g = tiny_gpt2_config();
    CaptionerConfig {
        mapping: MapperConfig {
            mapping_type: mapping,
            prefix_size: 16,
            prefix_length: 4,
            clip_length: 3,
            num_layers: 2,
            gpt_width: g.n_embd,
        },
        normalize_prefix: true,
        clip_model: "test".into(),
        gpt2_model: "test".into(),
        gpt2_config: g,
    }
}

fn caption_batch() -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let embeds = (0..3)
        .map(|i| {
            (0..16)
                .map(|j| ((i * 16 + j) as f32 * 0.37).sin())
                .collect()
        })
        .collect();
    let tokens = vec![vec![5, 17, 200, 13], vec![9, 13], vec![1, 2, 3, 4, 5, 13]];
    (embeds, tokens)
}

#[test]
fn captioner_gradients_reach_every_trainable_tensor() {
    let dev = Device::Cpu;
    let gpt2_dir = common::fixtures().join("gpt2/tiny");
    for mapping in [MappingType::Mlp, MappingType::Transformer] {
        for train_gpt2 in [false, true] {
            let model = build_model(
                &captioner_config(mapping),
                ModelSource::Fresh {
                    gpt2_dir: Some(&gpt2_dir),
                },
                train_gpt2,
                7,
                &dev,
            )
            .unwrap();
            let gpt_vars = model
                .vars
                .iter()
                .filter(|(n, _)| n.starts_with("gpt."))
                .count();
            if train_gpt2 {
                // wte, wpe, ln_f ×2, and 12 tensors in each of the 2 blocks.
                assert_eq!(gpt_vars, 2 + 2 + 2 * 12, "{mapping:?}");
                assert!(model.frozen.is_empty());
            } else {
                assert_eq!(gpt_vars, 0, "a frozen GPT-2 has no variables");
                assert_eq!(model.frozen.len(), 2 + 2 + 2 * 12);
            }
            let (e, t) = caption_batch();
            let loss = model.loss(&e, &t).unwrap();
            let grads = loss.backward().unwrap();
            assert_all_grads(&model.vars, &grads);
        }
    }
}

#[test]
fn captioner_loss_is_the_reference_next_token_loss() {
    // The loss equals a hand computation from the logits of the full sequence: positions
    // K-1 .. K+T-2 predict the T tokens, padding ignored.
    let dev = Device::Cpu;
    let gpt2_dir = common::fixtures().join("gpt2/tiny");
    let config = captioner_config(MappingType::Mlp);
    let model = build_model(
        &config,
        ModelSource::Fresh {
            gpt2_dir: Some(&gpt2_dir),
        },
        false,
        3,
        &dev,
    )
    .unwrap();
    let (e, t) = caption_batch();
    let loss = model.loss(&e, &t).unwrap().to_scalar::<f32>().unwrap();
    let k = config.mapping.prefix_length;
    let mut total = 0f64;
    let mut count = 0usize;
    for (emb, toks) in e.iter().zip(&t) {
        let norm = skyscribe::zeroshot::normalized(emb);
        let prefix = model
            .mapper
            .forward(&Tensor::new(vec![norm], &dev).unwrap())
            .unwrap();
        let ids = Tensor::new(vec![toks.clone()], &dev).unwrap();
        let x = Tensor::cat(&[&prefix, &model.gpt2.embed_tokens(&ids).unwrap()], 1).unwrap();
        let logits = model
            .gpt2
            .forward_embeds(&x, &mut model.gpt2.new_cache())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (j, &tok) in toks.iter().enumerate() {
            let row = &logits[k - 1 + j];
            let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            total += lse - row[tok as usize] as f64;
            count += 1;
        }
    }
    let expected = total / count as f64;
    assert!(
        (loss as f64 - expected).abs() < 1e-4,
        "{loss} vs {expected}"
    );
}

fn tiny_clip_config(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-clip-config.json");
    std::fs::write(
        &path,
        r#"{
  "text_config": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 32,
    "hidden_act": "quick_gelu", "eos_token_id": 1},
  "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu"},
  "projection_dim": 32
}"#,
    )
    .unwrap();
    path
}

#[test]
fn clip_gradients_reach_every_tensor() {
    let dev = Device::Cpu;
    let dir = common::scratch("clip-grads");
    let config = ClipConfig::from_file(&tiny_clip_config(&dir)).unwrap();
    let trainee = ClipTrainee::new(config, Weights::init(1, &dev)).unwrap();
    let pixels = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &dev).unwrap();
    let ids = vec![
        vec![0, 5, 9, 1],
        vec![0, 7, 1, 1],
        vec![0, 300, 12, 1],
        vec![0, 44, 45, 1],
    ];
    let (img, txt) = trainee.embed(&pixels, &ids).unwrap();
    let loss = trainee.loss(&img, &txt).unwrap();
    let grads = loss.backward().unwrap();
    assert_all_grads(&trainee.vars, &grads);
    // Every tensor of the checkpoint layout is a variable (nothing frozen, nothing invented).
    assert!(trainee.vars.iter().any(|(n, _)| n == "logit_scale"));
    assert!(
        trainee
            .vars
            .iter()
            .any(|(n, _)| n == "vision_model.embeddings.patch_embedding.weight")
    );
}

/// A captions.jsonl folder with `n` RSICD training images spread over the whole file (so over
/// many scene classes), symlinked.
fn rsicd_subset(data: &Path, name: &str, n: usize) -> PathBuf {
    let dir = common::scratch(name);
    let src = data.join("rsicd/train");
    let text = std::fs::read_to_string(src.join("captions.jsonl")).unwrap();
    let mut lines = Vec::new();
    let all: Vec<&str> = text.lines().collect();
    let stride = all.len() / n;
    for line in all.iter().step_by(stride).take(n) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = v["filename"].as_str().unwrap();
        std::os::unix::fs::symlink(src.join(f).canonicalize().unwrap(), dir.join(f)).unwrap();
        lines.push(
            serde_json::json!({"filename": f, "captions": v["captions"], "augmented": v["augmented"]})
                .to_string(),
        );
    }
    std::fs::write(dir.join("captions.jsonl"), lines.join("\n")).unwrap();
    dir
}

fn tiny_gpt2_file(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-gpt2.json");
    std::fs::write(
        &path,
        r#"{"vocab_size": 400, "n_positions": 96, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
    path
}

/// A short, quiet run on the captions of `data_dir` into `out`, saved at epoch ends only.
fn run_options(
    data_dir: &Path,
    out: &Path,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    seed: u64,
) -> RunOptions {
    RunOptions {
        data: format!("rsicd:{}", data_dir.display()),
        vocab_size: 300,
        epochs,
        batch_size,
        lr,
        warmup: 5,
        weight_decay: 0.0,
        val_fraction: 0.0,
        seed,
        save_every: 0,
        out: out.to_path_buf(),
        quiet: true,
        ..RunOptions::default()
    }
}

fn captioner_options(data_dir: &Path, out: &Path, epochs: usize) -> CaptionerTrainOptions {
    CaptionerTrainOptions {
        run: run_options(data_dir, out, epochs, 4, 3e-3, 11),
        clip: common::tiny_clip("tiny-a").display().to_string(),
        gpt2: None,
        gpt2_config: Some(tiny_gpt2_file(data_dir).display().to_string()),
        mapping: MappingType::Mlp,
        prefix_length: 4,
        clip_length: 4,
        num_layers: 1,
        normalize_prefix: true,
        train_gpt2: true,
        cache: None,
    }
}

fn read_weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (read_weights(a), read_weights(b));
    assert_eq!(wa.len(), wb.len());
    for (name, ta) in &wa {
        let diff = max_abs_diff(ta, &wb[name]);
        assert_eq!(diff, 0.0, "{name} differs after resume");
    }
}

#[test]
fn captioner_overfits_real_rsicd_captions_and_decodes_them() {
    let Some(data) = common::data_root("captioner_overfits") else {
        return;
    };
    let dir = rsicd_subset(&data, "cap-overfit-data", 6);
    let out = common::scratch("cap-overfit-out");
    let summary = train_captioner(&captioner_options(&dir, &out, 150), &Device::Cpu).unwrap();
    assert!(summary.finished);
    let first = summary.history.first().unwrap().train_loss;
    let last = summary.history.last().unwrap().train_loss;
    // Starting near ln(vocab) ≈ 5.7, a handful of captions are learned nearly by heart.
    assert!(first > 4.0, "first epoch loss {first}");
    assert!(last < 0.5, "last epoch loss {last} (first {first})");
    // The folder is a captioner: greedy decoding of a training image gives one of its captions.
    let cap = skyscribe::caption::Captioner::load(&out, &Device::Cpu).unwrap();
    let clip = skyscribe::encoder::ClipEncoder::load(
        &common::tiny_clip("tiny-a").display().to_string(),
        &Device::Cpu,
    )
    .unwrap();
    let data = skyscribe::data::open_captions(&format!("rsicd:{}", dir.display())).unwrap();
    let mut right = 0;
    for item in &data.items {
        let e = clip
            .embed_pixels(&[clip.load_pixels(&item.path, &Default::default()).unwrap()])
            .unwrap();
        let ids = cap.greedy(&e, &Default::default()).unwrap().remove(0);
        let text = cap.decode_text(&ids).unwrap();
        let refs: Vec<String> = item
            .captions
            .iter()
            .map(|c| skyscribe::data::training_sentence(c))
            .collect();
        if refs.contains(&text) {
            right += 1;
        }
    }
    assert!(
        right >= 4,
        "{right} of 6 training images captioned with their own caption"
    );
}

#[test]
fn captioner_resume_ends_with_the_same_weights() {
    let Some(data) = common::data_root("captioner_resume") else {
        return;
    };
    let dir = rsicd_subset(&data, "cap-resume-data", 6);
    let straight = common::scratch("cap-resume-straight");
    let o = captioner_options(&dir, &straight, 3);
    train_captioner(&o, &Device::Cpu).unwrap();

    let resumed = common::scratch("cap-resume-resumed");
    let mut o = captioner_options(&dir, &resumed, 3);
    o.run.stop_after = Some(4); // mid-epoch (3 steps an epoch)
    let s = train_captioner(&o, &Device::Cpu).unwrap();
    assert!(!s.finished && s.steps == 4);
    o.run.stop_after = None;
    o.run.resume = true;
    let s = train_captioner(&o, &Device::Cpu).unwrap();
    assert!(s.finished);
    assert_same_weights(
        &straight.join("model.safetensors"),
        &resumed.join("model.safetensors"),
    );
    assert_eq!(s.history.len(), 3);
}

#[test]
fn each_save_point_writes_the_checkpoint_once() {
    let Some(data) = common::data_root("save_points") else {
        return;
    };
    let dir = rsicd_subset(&data, "save-points-data", 6);
    let out = common::scratch("save-points-out");
    // Saved at each of the 3 epoch ends, and at no other step.
    let mut o = captioner_options(&dir, &out, 3);
    let s = train_captioner(&o, &Device::Cpu).unwrap();
    assert!(s.finished);
    assert_eq!(s.checkpoints_written, 3);
    // Resuming a finished run trains nothing and rewrites nothing.
    let modified = || {
        std::fs::metadata(out.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = modified();
    o.run.resume = true;
    let s = train_captioner(&o, &Device::Cpu).unwrap();
    assert!(s.finished);
    assert_eq!(s.checkpoints_written, 0);
    assert_eq!(before, modified());
}

fn clip_options(data_dir: &Path, out: &Path, epochs: usize) -> ClipTrainOptions {
    ClipTrainOptions {
        run: run_options(data_dir, out, epochs, 16, 2e-3, 5),
        init: None,
        config: Some(tiny_clip_config(data_dir).display().to_string()),
        augment: true,
        ..ClipTrainOptions::default()
    }
}

#[test]
fn clip_contrastive_training_learns_on_real_pairs() {
    let Some(data) = common::data_root("clip_learns") else {
        return;
    };
    let dir = rsicd_subset(&data, "clip-learn-data", 48);
    let out = common::scratch("clip-learn-out");
    // Without augmentation, so that a few dozen pairs are learned in seconds.
    let mut o = clip_options(&dir, &out, 100);
    o.augment = false;
    let summary = train_clip(&o, &Device::Cpu).unwrap();
    let first = summary.history.first().unwrap().train_loss;
    let last = summary.history.last().unwrap().train_loss;
    // ln(16) ≈ 2.77 is the loss of a model that cannot tell the 16 pairs of a batch apart.
    assert!(first > 2.5, "first epoch {first}");
    assert!(last < 1.5, "last epoch {last} (first {first})");

    // In-batch retrieval with the saved model, through the ordinary loading path.
    let clip =
        skyscribe::encoder::ClipEncoder::load(&out.display().to_string(), &Device::Cpu).unwrap();
    let data = skyscribe::data::open_captions(&format!("rsicd:{}", dir.display())).unwrap();
    let items = &data.items[..16];
    let pixels: Vec<Vec<f32>> = items
        .iter()
        .map(|i| clip.load_pixels(&i.path, &Default::default()).unwrap())
        .collect();
    let texts: Vec<String> = items.iter().map(|i| i.captions[0].clone()).collect();
    let img =
        l2_normalize(&Tensor::new(clip.embed_pixels(&pixels).unwrap(), &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
    let txt =
        l2_normalize(&Tensor::new(clip.embed_texts(&texts, 16).unwrap(), &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
    let recalls = skyscribe::train::clip::retrieval_recalls(&img, &txt);
    let r1 = recalls["image_to_text_r@1"];
    // Chance is 1/16.
    assert!(r1 >= 0.25, "image→text R@1 {r1} on 16 training pairs");
}

#[test]
fn clip_resume_ends_with_the_same_weights() {
    let Some(data) = common::data_root("clip_resume") else {
        return;
    };
    let dir = rsicd_subset(&data, "clip-resume-data", 32);
    let straight = common::scratch("clip-resume-straight");
    train_clip(&clip_options(&dir, &straight, 2), &Device::Cpu).unwrap();
    let resumed = common::scratch("clip-resume-resumed");
    let mut o = clip_options(&dir, &resumed, 2);
    o.run.stop_after = Some(3); // 2 steps an epoch: stops inside the second epoch
    train_clip(&o, &Device::Cpu).unwrap();
    o.run.stop_after = None;
    o.run.resume = true;
    let s = train_clip(&o, &Device::Cpu).unwrap();
    assert!(s.finished && s.steps == 4);
    assert_same_weights(
        &straight.join("model.safetensors"),
        &resumed.join("model.safetensors"),
    );
}

#[test]
fn clip_resume_with_ema_smoothing_and_augmented_captions_ends_with_the_same_weights() {
    let Some(data) = common::data_root("clip_resume_recipe") else {
        return;
    };
    let dir = rsicd_subset(&data, "clip-recipe-data", 32);
    let recipe = |out: &Path| {
        let mut o = clip_options(&dir, out, 2);
        o.run.ema = Some(0.9);
        o.label_smoothing = 0.1;
        o.captions = CaptionPool::Both;
        o.low_res_views = 0.5;
        o
    };
    let straight = common::scratch("clip-recipe-straight");
    train_clip(&recipe(&straight), &Device::Cpu).unwrap();
    let resumed = common::scratch("clip-recipe-resumed");
    let mut o = recipe(&resumed);
    o.run.stop_after = Some(3);
    train_clip(&o, &Device::Cpu).unwrap();
    // The checkpoint records the recipe: resuming without it is refused, naming what differs.
    let mut other = recipe(&resumed);
    other.run.resume = true;
    other.run.ema = None;
    let msg = train_clip(&other, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("ema: 0.9 → (none)"), "{msg}");
    let mut other = recipe(&resumed);
    other.run.resume = true;
    other.low_res_views = 0.0;
    let msg = train_clip(&other, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("low_res_views: 0.5 → (none)"), "{msg}");
    let mut other = recipe(&resumed);
    other.augment = false;
    let msg = train_clip(&other, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("--no-augment"), "{msg}");
    o.run.stop_after = None;
    o.run.resume = true;
    assert!(train_clip(&o, &Device::Cpu).unwrap().finished);
    assert_same_weights(
        &straight.join("model.safetensors"),
        &resumed.join("model.safetensors"),
    );
    assert_same_weights(
        &straight.join("checkpoint/model.safetensors"),
        &resumed.join("checkpoint/model.safetensors"),
    );
    // The saved model is the average, the checkpoint the trained weights.
    let (avg, trained) = (
        read_weights(&straight.join("model.safetensors")),
        read_weights(&straight.join("checkpoint/model.safetensors")),
    );
    let name = "vision_model.embeddings.patch_embedding.weight";
    let diff = max_abs_diff(&avg[name], &trained[name]);
    assert!(diff > 0.0, "the saved model is not the moving average");
}
