//! BLEU-1..4, ROUGE-L and CIDEr-D against pycocoevalcap on 300 RSICD test images
//! (`scripts/reference/make_caption_reference.py`), corpus and per image, to 1e-4.

use crate::common;

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

#[test]
fn eval_captions_command_reads_jsonl_and_coco_references() {
    let r = read_json(&fixtures().join("captions/rsicd_reference_scores.json"));
    let dir = scratch("eval-captions");
    let mut preds = String::new();
    let mut jsonl_refs = String::new();
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for (i, p) in r["pairs"].as_array().unwrap().iter().enumerate() {
        preds.push_str(
            &serde_json::json!({"input": format!("some/dir/{i}.jpg"), "caption": p["hypothesis"]})
                .to_string(),
        );
        preds.push('\n');
        jsonl_refs.push_str(
            &serde_json::json!({"filename": format!("{i}.jpg"), "captions": p["references"]})
                .to_string(),
        );
        jsonl_refs.push('\n');
        images.push(serde_json::json!({"id": i, "file_name": format!("{i}.jpg")}));
        for c in p["references"].as_array().unwrap() {
            annotations.push(serde_json::json!({"image_id": i, "caption": c}));
        }
    }
    std::fs::write(dir.join("pred.jsonl"), &preds).unwrap();
    std::fs::write(dir.join("refs.jsonl"), &jsonl_refs).unwrap();
    std::fs::write(
        dir.join("refs_coco.json"),
        serde_json::json!({"images": images, "annotations": annotations}).to_string(),
    )
    .unwrap();
    for refs in ["refs.jsonl", "refs_coco.json"] {
        let (pred, refs_file) = (dir.join("pred.jsonl"), dir.join(refs));
        let out = skyscribe(&[
            "eval",
            "captions",
            "--pretokenized",
            "--jsonl",
            "--predictions",
            pred.to_str().unwrap(),
            "--references",
            refs_file.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let stdout = out.stdout;
        let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(stdout.lines().count(), 301);
        let got = last["corpus"]["cider_d"].as_f64().unwrap();
        assert!(
            (got - r["corpus"]["cider_d"].as_f64().unwrap()).abs() < 1e-4,
            "{refs}: CIDEr-D {got}"
        );
        let got = last["corpus"]["bleu"][3].as_f64().unwrap();
        assert!(
            (got - r["corpus"]["bleu"][3].as_f64().unwrap()).abs() < 1e-4,
            "{refs}: BLEU-4 {got}"
        );
    }
    // A prediction without references, and an empty reference caption: clear errors.
    std::fs::write(
        dir.join("bad_pred.jsonl"),
        "{\"input\": \"nowhere.jpg\", \"caption\": \"a port\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("bad_refs.jsonl"), "{\"filename\": \"a.jpg\", \"captions\": [\"\"]}\n{\"filename\": \"b.jpg\", \"captions\": [\"x\"]}\n").unwrap();
    for (pred, refs, why) in [
        (
            "bad_pred.jsonl",
            "refs.jsonl",
            "no reference captions for nowhere.jpg",
        ),
        ("pred.jsonl", "bad_refs.jsonl", "empty caption for a.jpg"),
    ] {
        let (pred, refs) = (dir.join(pred), dir.join(refs));
        let out = skyscribe(&[
            "eval",
            "captions",
            "--predictions",
            pred.to_str().unwrap(),
            "--references",
            refs.to_str().unwrap(),
        ]);
        let stderr = out.stderr;
        assert_eq!(out.code, 2);
        assert!(stderr.contains(why), "{stderr}");
    }
}

/// METEOR against the Meteor 1.5 jar (pycocoevalcap) on the same 300 RSICD pairs. The jar also
/// matches WordNet synonyms and paraphrases and uses its own function-word list, which this
/// crate does not have: the scores are close, not equal (docs/src/evaluation.md states how close).
#[test]
fn meteor_is_close_to_the_meteor_jar() {
    let fixture = read_json(&fixtures().join("captions/rsicd_reference_scores.json"));
    let expected = read_json(&fixtures().join("captions/rsicd_meteor_scores.json"));
    let pairs: Vec<(String, Vec<String>)> = fixture["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["hypothesis"].as_str().unwrap().to_string(),
                p["references"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    let borrowed: Vec<(&str, Vec<&str>)> = pairs
        .iter()
        .map(|(h, r)| (h.as_str(), r.iter().map(String::as_str).collect()))
        .collect();
    let (corpus, per) = skyscribe::eval::meteor::meteor(&borrowed);
    let want = expected["corpus"].as_f64().unwrap();
    let want_per: Vec<f64> = expected["per_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mean_abs = per
        .iter()
        .zip(&want_per)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / per.len() as f64;
    let exact = per
        .iter()
        .zip(&want_per)
        .filter(|(a, b)| (*a - *b).abs() < 1e-3)
        .count();
    eprintln!(
        "METEOR corpus {corpus:.4} vs jar {want:.4}; per-image mean |diff| {mean_abs:.4}; {exact}/{} within 1e-3",
        per.len()
    );
    assert!((corpus - want).abs() < 0.03, "corpus {corpus} vs {want}");
    assert!(mean_abs < 0.04, "per-image mean abs diff {mean_abs}");
    assert!(exact >= 120, "{exact} of 300 equal to the jar's");
}
