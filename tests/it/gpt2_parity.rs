//! GPT-2 logits against transformers' GPT2LMHeadModel on a tiny random model: token input,
//! an embedding prefix (as ClipCap feeds it), and step-by-step decoding through the KV cache.

use crate::common;

use candle_core::{Device, Tensor};
use common::*;
use skyscribe::models::gpt2::Gpt2;

fn load() -> (Gpt2, serde_json::Value) {
    let dir = fixtures().join("gpt2/tiny");
    (
        Gpt2::load_dir(&dir, &Device::Cpu).unwrap(),
        read_json(&dir.join("reference.json")),
    )
}

fn ids(r: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<u32>> = r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(integers)
        .collect();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

#[test]
fn logits_match_for_tokens_and_for_an_embedding_prefix() {
    let (gpt2, r) = load();
    let ids = ids(&r);
    let logits = gpt2.forward_ids(&ids, &mut gpt2.new_cache()).unwrap();
    let d = max_abs_diff(
        &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["logits"]),
    );
    assert!(d < 1e-4, "token logits differ by {d}");

    let prefix = tensor(&r["prefix"], &r["prefix_shape"]);
    let embeds = Tensor::cat(&[&prefix, &gpt2.embed_tokens(&ids).unwrap()], 1).unwrap();
    let logits = gpt2.forward_embeds(&embeds, &mut gpt2.new_cache()).unwrap();
    let d = max_abs_diff(
        &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["logits_with_prefix"]),
    );
    assert!(d < 1e-4, "prefix logits differ by {d}");
}

#[test]
fn cached_steps_equal_the_full_pass() {
    let (gpt2, r) = load();
    let ids = ids(&r);
    let full = floats(&r["logits"]);
    let (b, t) = ids.dims2().unwrap();
    let vocab = gpt2.config().vocab_size;
    let mut cache = gpt2.new_cache();
    // The first 4 tokens at once, then one at a time.
    let first = gpt2
        .forward_ids(&ids.narrow(1, 0, 4).unwrap(), &mut cache)
        .unwrap();
    let mut steps = vec![first];
    for i in 4..t {
        steps.push(
            gpt2.forward_ids(&ids.narrow(1, i, 1).unwrap(), &mut cache)
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), t);
    let all = Tensor::cat(&steps, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(all.len(), b * t * vocab);
    let d = max_abs_diff(&all, &full);
    assert!(d < 1e-4, "cached logits differ by {d}");
}
