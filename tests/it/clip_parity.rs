//! CLIP parity with transformers: tiny random models of the real architecture, reference
//! outputs from `scripts/reference/make_reference.py`.

use crate::common;

use candle_core::{DType, Device, Tensor};
use common::*;
use skyscribe::encoder::ClipEncoder;
use skyscribe::imagery::DecodeOptions;
use skyscribe::labels::{Label, LabelSet, Templates};
use skyscribe::models::{ClipConfig, ClipModel, Precision, Weights};
use skyscribe::zeroshot::ZeroShotClassifier;

const MODELS: &[&str] = &["tiny-a", "tiny-b"];

fn load(name: &str) -> (ClipEncoder, serde_json::Value) {
    let dir = tiny_clip(name);
    let clip = ClipEncoder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let reference = read_json(&dir.join("reference.json"));
    (clip, reference)
}

/// The reference's `random_pixels` as the model's input tensor.
fn reference_pixels(rp: &serde_json::Value) -> Tensor {
    tensor(&rp["pixel_values"], &rp["shape"])
}

/// The reference's texts.
fn reference_texts(t: &serde_json::Value) -> Vec<String> {
    t["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn image_embeddings_match_for_identical_pixels() {
    for name in MODELS {
        let (clip, r) = load(name);
        let rp = &r["random_pixels"];
        let pixels = reference_pixels(rp);
        let ours = clip
            .model
            .image_features(&pixels)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let expected = rows(&rp["image_embeds"]);
        for (o, e) in ours.iter().zip(&expected) {
            let d = max_abs_diff(o, e);
            assert!(d < 1e-4, "{name}: image embedding differs by {d}");
        }
    }
}

/// `Precision::Bf16` on a CPU with AVX512-BF16: the linear layers round to bf16, so the
/// embeddings move off the f32 reference, but only by bf16's rounding. Elsewhere it is refused.
#[test]
fn bf16_embeddings_stay_within_rounding_of_the_reference() {
    let available = skyscribe::models::reduced_precision::bf16_available();
    reduced_precision_stays_near_the_reference(Precision::Bf16, available, "AVX512-BF16", 0.999);
}

/// `Precision::Int8` on a CPU with AVX512-VNNI: the linear layers' weights quantised per
/// channel, their inputs per row; the embeddings move more than bf16's (worst cosine 0.9996
/// measured on these models), within a bound. Drift on a trained model is measured by
/// `scripts/bench/precision_drift.py`. Elsewhere it is refused.
#[test]
fn int8_embeddings_stay_within_quantisation_of_the_reference() {
    let available = skyscribe::models::int8::int8_available();
    reduced_precision_stays_near_the_reference(Precision::Int8, available, "AVX512-VNNI", 0.998);
}

/// Loads each tiny model in `precision` (refused, naming `feature`, where the CPU lacks it) and
/// holds its image and text embeddings to `least_cosine` of transformers' f32 ones, moved by the
/// rounding; the cache keys the precision apart, the index does not.
fn reduced_precision_stays_near_the_reference(
    precision: Precision,
    available: bool,
    feature: &str,
    least_cosine: f32,
) {
    let label = precision.name();
    for name in MODELS {
        let dir = tiny_clip(name);
        let r = read_json(&dir.join("reference.json"));
        let clip = match ClipEncoder::load_in(dir.to_str().unwrap(), &Device::Cpu, precision) {
            Ok(clip) => clip,
            Err(e) => {
                assert!(!available);
                assert!(format!("{e:#}").contains(feature), "{e:#}");
                continue;
            }
        };
        assert!(available);
        assert_eq!(clip.model.precision(), precision);
        let rp = &r["random_pixels"];
        let pixels = reference_pixels(rp);
        let ours = clip.model.image_features(&pixels).unwrap();
        let ours = ours.to_vec2::<f32>().unwrap();
        let t = &r["texts"];
        let texts = reference_texts(t);
        let ours_t = clip.embed_texts(&texts, 4).unwrap();
        let pairs = ours
            .iter()
            .zip(rows(&rp["image_embeds"]))
            .chain(ours_t.iter().zip(rows(&t["text_embeds"])));
        let mut moved = 0f32;
        let mut worst = 1f32;
        for (o, e) in pairs {
            worst = worst.min(cosine(o, &e));
            moved = moved.max(max_abs_diff(o, &e));
        }
        eprintln!("{name} {label}: worst cosine to f32 {worst}, largest change {moved}");
        assert!(
            worst > least_cosine,
            "{name}: {label} embedding's cosine to f32 {worst}"
        );
        // f32 matches to 1e-5 (the test above): the reduced precision must show.
        assert!(moved > 1e-4, "{name}: {label} changed nothing ({moved})");
        // Comparable with f32 (an index built in either answers the other's queries), but
        // never cached as f32 embeddings.
        let f32_clip = ClipEncoder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
        let decode = DecodeOptions::default();
        let key = |c: &ClipEncoder| skyscribe::cache::model_key(c, &decode).unwrap();
        assert_eq!(key(&clip), key(&f32_clip));
        let root = scratch(&format!("{label}-cache-{name}"));
        let cache = |c: &ClipEncoder| {
            skyscribe::cache::EmbeddingCache::open(&root, c, &decode)
                .unwrap()
                .dir()
                .to_path_buf()
        };
        assert_ne!(cache(&clip), cache(&f32_clip));
    }
}

/// The model as a GPU runs it in `--precision f16` or `bf16`: every weight and activation in
/// that type, through candle's composed operations (not the CPU's f32 kernels). candle computes
/// in both types on the CPU too, so the path is checked here without a GPU: embeddings come
/// back as f32, within the type's rounding of transformers' f32 ones, and moved by it.
#[test]
fn half_precision_model_stays_within_rounding_of_the_reference() {
    for name in MODELS {
        let dir = tiny_clip(name);
        let r = read_json(&dir.join("reference.json"));
        let rp = &r["random_pixels"];
        let pixels = reference_pixels(rp);
        let t = &r["texts"];
        let texts = reference_texts(t);
        // (dtype, least cosine to f32, least change): f16 keeps 11 significant bits, bf16 8.
        for (dtype, least_cosine, least_moved) in
            [(DType::F16, 0.9999, 1e-5), (DType::BF16, 0.999, 1e-4)]
        {
            let mut clip = ClipEncoder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
            let config = ClipConfig::from_file(&dir.join("config.json")).unwrap();
            let weights = Weights::from_model_dir(&dir, &Device::Cpu)
                .unwrap()
                .with_dtype(dtype);
            clip.model = ClipModel::new(config, &weights).unwrap();
            assert_eq!(clip.model.dtype(), dtype);
            let ours = clip.model.image_features(&pixels).unwrap();
            assert_eq!(ours.dtype(), DType::F32, "embeddings come back as f32");
            let ours = ours.to_vec2::<f32>().unwrap();
            let ours_t = clip.embed_texts(&texts, 4).unwrap();
            let pairs = ours
                .iter()
                .zip(rows(&rp["image_embeds"]))
                .chain(ours_t.iter().zip(rows(&t["text_embeds"])));
            let (mut worst, mut moved) = (1f32, 0f32);
            for (o, e) in pairs {
                worst = worst.min(cosine(o, &e));
                moved = moved.max(max_abs_diff(o, &e));
            }
            eprintln!("{name} {dtype:?}: least cosine {worst}, largest change {moved}");
            assert!(
                worst > least_cosine,
                "{name}: {dtype:?} embedding's cosine to f32's {worst}"
            );
            assert!(
                moved > least_moved,
                "{name}: {dtype:?} changed nothing ({moved})"
            );
        }
    }
}

/// f16 is for GPUs: on a CPU it is refused with the reason, never run slowly or silently
/// turned into f32.
#[test]
fn f16_is_refused_on_the_cpu() {
    let dir = tiny_clip("tiny-a");
    let err = ClipEncoder::load_in(dir.to_str().unwrap(), &Device::Cpu, Precision::F16)
        .err()
        .expect("f16 on the CPU must be refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("f16 runs on CUDA GPUs"), "{msg}");
}

#[test]
fn text_embeddings_and_token_ids_match() {
    for name in MODELS {
        let (clip, r) = load(name);
        let t = &r["texts"];
        let texts = reference_texts(t);
        for (text, ids) in texts.iter().zip(t["input_ids"].as_array().unwrap()) {
            let ours = clip.tokenizer.encode(text).unwrap();
            let theirs: Vec<u32> = integers(ids);
            assert_eq!(&theirs[..ours.len()], &ours[..], "{name}: ids of {text:?}");
            // The reference pads to 77 with the end token.
            assert!(theirs[ours.len()..].iter().all(|&i| i == 49407));
        }
        let ours = clip.embed_texts(&texts, 4).unwrap();
        for ((o, e), text) in ours.iter().zip(rows(&t["text_embeds"])).zip(&texts) {
            let d = max_abs_diff(o, &e);
            assert!(
                d < 1e-4,
                "{name}: text embedding of {text:?} differs by {d}"
            );
        }
        // Batches are formed by token length and results put back in input order: any order
        // of the inputs gives each text its own embedding.
        let reversed: Vec<String> = texts.iter().rev().cloned().collect();
        let lengths: Vec<usize> = reversed
            .iter()
            .map(|t| clip.tokenizer.encode(t).unwrap().len())
            .collect();
        assert!(!lengths.is_sorted(), "{name}: the texts need mixed lengths");
        for (o, r) in ours
            .iter()
            .rev()
            .zip(clip.embed_texts(&reversed, 3).unwrap())
        {
            assert!(
                max_abs_diff(o, &r) < 1e-5,
                "{name}: order changed an embedding"
            );
        }
    }
}

#[test]
fn image_files_match_end_to_end() {
    let Some(data) = data_root("image_files_match_end_to_end") else {
        return;
    };
    for name in MODELS {
        let (clip, r) = load(name);
        for rec in r["images"].as_array().unwrap() {
            let key = rec["input"].as_str().unwrap();
            let pixels = clip
                .load_pixels(&input_path(key, &data), &DecodeOptions::default())
                .unwrap();
            let ours = clip.embed_pixels(&[pixels]).unwrap().remove(0);
            let c = cosine(&ours, &floats(&rec["image_embeds"]));
            assert!(c >= 0.9999, "{name}: {key}: cosine {c}");
        }
    }
}

#[test]
fn zero_shot_probabilities_match() {
    let Some(data) = data_root("zero_shot_probabilities_match") else {
        return;
    };
    for name in MODELS {
        let (clip, r) = load(name);
        let z = &r["zero_shot"];
        let wordings: Vec<&str> = z["wordings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let labels =
            LabelSet::new("test", wordings.iter().map(|w| Label::plain(w)).collect()).unwrap();
        let single = ZeroShotClassifier::new(
            &clip,
            labels.clone(),
            Templates::parse(&[z["single_template"].as_str().unwrap().into()]).unwrap(),
        )
        .unwrap();
        let ens_templates: Vec<String> = z["ensemble_templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().into())
            .collect();
        let ensemble =
            ZeroShotClassifier::new(&clip, labels, Templates::parse(&ens_templates).unwrap())
                .unwrap();
        let inputs = z["inputs"].as_array().unwrap();
        let mut spread = 0f32;
        for (i, key) in inputs.iter().enumerate() {
            let path = input_path(key.as_str().unwrap(), &data);
            let pixels = clip.load_pixels(&path, &DecodeOptions::default()).unwrap();
            let emb = clip.embed_pixels(&[pixels]).unwrap().remove(0);
            for (classifier, field) in [(&single, "single_probs"), (&ensemble, "ensemble_probs")] {
                let ours = classifier.probabilities(&emb);
                let expected = floats(&z[field][i]);
                let d = max_abs_diff(&ours, &expected);
                assert!(d < 1e-3, "{name}: {key} {field}: differs by {d}");
                spread = spread.max(expected.iter().copied().fold(0.0, f32::max));
            }
        }
        // The fixture is only a test if the model prefers some labels strongly.
        assert!(
            spread > 0.5,
            "{name}: reference probabilities are too flat to test anything"
        );
    }
}

#[test]
fn model_directory_must_hold_every_tensor_with_its_shape() {
    use std::collections::HashMap;
    let dir = tiny_clip("tiny-a");
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    for (case, edit) in [
        ("missing", "vision_model.embeddings.class_embedding"),
        ("missing", "logit_scale"),
        ("shape", "text_model.encoder.layers.1.mlp.fc1.weight"),
    ] {
        let broken = scratch(&format!("broken-{case}-{}", edit.replace('.', "_")));
        for f in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
            std::fs::copy(dir.join(f), broken.join(f)).unwrap();
        }
        let mut t: HashMap<String, Tensor> = tensors.clone();
        if case == "missing" {
            t.remove(edit);
        } else {
            t.insert(
                edit.to_string(),
                Tensor::zeros((3, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        }
        candle_core::safetensors::save(&t, broken.join("model.safetensors")).unwrap();
        let err = match ClipEncoder::load(broken.to_str().unwrap(), &Device::Cpu) {
            Ok(_) => panic!("{edit}: a broken model loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(edit), "{err}");
        assert!(err.contains("model.safetensors"), "{err}");
        if case == "shape" {
            assert!(err.contains("[3, 5]") && err.contains("[48, 24]"), "{err}");
        }
    }
}
