//! BLEU-1..4, ROUGE-L and CIDEr-D against pycocoevalcap on 300 RSICD test images
//! (`scripts/make_caption_reference.py`), corpus and per image, to 1e-4.

mod common;

use common::*;
use skyscribe::eval::captions::{CaptionPair, score};

#[test]
fn caption_metrics_match_pycocoevalcap() {
    let r = read_json(&fixtures().join("captions/rsicd_reference_scores.json"));
    let pairs: Vec<CaptionPair> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| CaptionPair {
            hypothesis: p["hypothesis"].as_str().unwrap(),
            references: p["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect(),
        })
        .collect();
    assert_eq!(pairs.len(), 300);
    assert!(
        pairs
            .iter()
            .any(|p| p.references.len() > 1 && p.references[0] == *p.references.last().unwrap()),
        "the fixture must repeat references"
    );
    let (corpus, per) = score(&pairs);
    let c = &r["corpus"];
    for k in 0..4 {
        let want = c["bleu"][k].as_f64().unwrap();
        assert!(
            (corpus.bleu[k] - want).abs() < 1e-4,
            "BLEU-{}: {} vs {want}",
            k + 1,
            corpus.bleu[k]
        );
    }
    assert!(
        (corpus.rouge_l - c["rouge_l"].as_f64().unwrap()).abs() < 1e-4,
        "ROUGE-L {}",
        corpus.rouge_l
    );
    assert!(
        (corpus.cider_d - c["cider_d"].as_f64().unwrap()).abs() < 1e-4,
        "CIDEr-D {}",
        corpus.cider_d
    );
    let pi = &r["per_image"];
    for (i, s) in per.iter().enumerate() {
        for k in 0..4 {
            let want = pi["bleu"][i][k].as_f64().unwrap();
            assert!(
                (s.bleu[k] - want).abs() < 1e-4,
                "image {i} BLEU-{}: {} vs {want}",
                k + 1,
                s.bleu[k]
            );
        }
        assert!(
            (s.rouge_l - pi["rouge_l"][i].as_f64().unwrap()).abs() < 1e-4,
            "image {i} ROUGE-L"
        );
        assert!(
            (s.cider_d - pi["cider_d"][i].as_f64().unwrap()).abs() < 1e-4,
            "image {i} CIDEr-D {} vs {}",
            s.cider_d,
            pi["cider_d"][i]
        );
    }
}
