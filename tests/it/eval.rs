//! `eval zero-shot`: dataset readers on real and generated data, the embedding cache, and an
//! end-to-end run whose per-image output recomputes to its summary.

use crate::common;

use std::path::Path;

use candle_core::Device;
use common::*;
use indicatif::ProgressBar;
use skyscribe::cache::EmbeddingCache;
use skyscribe::data::{self, ChipOptions, Dataset};
use skyscribe::encoder::ClipEncoder;
use skyscribe::imagery::DecodeOptions;

fn open(spec: &str, split: Option<&Path>) -> anyhow::Result<data::LabelledImages> {
    data::open(spec, split, &ChipOptions::default())
}

#[test]
fn eurosat_folder_with_split() {
    let Some(d) = data_root("eurosat_folder_with_split") else {
        return;
    };
    let ds = open(
        &format!("folder:{}", d.join("eurosat/images").display()),
        Some(&d.join("eurosat/splits/test-100-per-class.txt")),
    )
    .unwrap();
    assert_eq!(ds.classes().len(), 10);
    assert_eq!(ds.samples().len(), 1000);
    for c in ds.classes() {
        assert_eq!(
            ds.samples().iter().filter(|s| &s.labels[0] == c).count(),
            100,
            "{c}"
        );
    }
    assert!(!ds.multi_label());
}

#[test]
fn rsicd_scenes_and_dota_from_real_data() {
    let Some(d) = data_root("rsicd_scenes_and_dota_from_real_data") else {
        return;
    };
    let ds = open(
        &format!("rsicd-scenes:{}", d.join("rsicd/test").display()),
        None,
    )
    .unwrap();
    assert_eq!(ds.classes().len(), 30);
    assert!(ds.samples().len() >= 1000, "{}", ds.samples().len());
    let airport = ds
        .samples()
        .iter()
        .find(|s| s.image.path.ends_with("airport_348.jpg"))
        .unwrap();
    assert_eq!(airport.labels, vec!["Airport"]);

    let ds = open(&format!("dota:{}", d.join("dota").display()), None).unwrap();
    assert!(ds.multi_label());
    let mut expected = 0;
    for scene in ["P0706.png", "P1888.png"] {
        let (w, h) = image::image_dimensions(d.join("dota/images").join(scene)).unwrap();
        expected += (w / 300) * (h / 300);
    }
    assert_eq!(ds.samples().len(), expected as usize);
    assert!(
        ds.classes().iter().any(|c| c == "ship"),
        "{:?}",
        ds.classes()
    );
    assert!(
        ds.samples()
            .iter()
            .any(|s| s.labels.contains(&"ship".to_string()))
    );
    assert!(ds.samples().iter().all(|s| s.image.crop.is_some()));
}

fn write_rgb_tiff(path: &Path, w: u32, h: u32) {
    use tiff::encoder::{TiffEncoder, colortype::RGB8};
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 251) as u8, (i % 13) as u8 * 19, 90])
        .collect();
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    enc.write_image::<RGB8>(w, h, &data).unwrap();
}

fn geojson(features: &[(u32, &str, &str)]) -> String {
    let f: Vec<String> = features
        .iter()
        .map(|(t, b, img)| format!(r#"{{"type":"Feature","properties":{{"type_id":{t},"bounds_imcoords":"{b}","image_id":"{img}"}},"geometry":null}}"#))
        .collect();
    format!(
        r#"{{"type":"FeatureCollection","features":[{}]}}"#,
        f.join(",")
    )
}

#[test]
fn xview_geojson_chips_and_errors() {
    let dir = scratch("xview");
    write_rgb_tiff(&dir.join("100.tif"), 600, 300);
    // A small car inside chip 0, a building across the chip border (5/6 in chip 1), a barge
    // across it the other way (3/4 in chip 0).
    std::fs::write(
        dir.join("xView_train.geojson"),
        geojson(&[
            (18, "10,10,40,30", "100.tif"),
            (73, "280,100,400,200", "100.tif"),
            (45, "285,0,305,20", "100.tif"),
        ]),
    )
    .unwrap();
    let ds = open(&format!("xview:{}", dir.display()), None).unwrap();
    assert_eq!(ds.classes().len(), 60);
    assert_eq!(ds.samples().len(), 2);
    assert_eq!(ds.samples()[0].labels, vec!["Barge", "Small Car"]);
    assert_eq!(ds.samples()[1].labels, vec!["Building"]);

    std::fs::write(
        dir.join("xView_train.geojson"),
        geojson(&[(18, "500,250,700,290", "100.tif")]),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        open(&format!("xview:{}", dir.display()), None).unwrap_err()
    );
    assert!(
        err.contains("outside its 600×300 image") && err.contains("feature 0"),
        "{err}"
    );

    std::fs::write(
        dir.join("xView_train.geojson"),
        geojson(&[(99, "1,1,5,5", "100.tif")]),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        open(&format!("xview:{}", dir.display()), None).unwrap_err()
    );
    assert!(err.contains("unknown class id 99"), "{err}");
}

#[test]
fn dota_line_with_seven_numbers_and_split_with_missing_image() {
    let dir = scratch("dota-bad");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labelTxt")).unwrap();
    image::RgbImage::new(320, 320)
        .save(dir.join("images/x.png"))
        .unwrap();
    std::fs::write(
        dir.join("labelTxt/x.txt"),
        "imagesource:test\ngsd:0.5\n1 1 5 1 5 5 1 ship 0\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        open(&format!("dota:{}", dir.display()), None).unwrap_err()
    );
    assert!(
        err.contains("x.txt:3") && err.contains("got 9 fields"),
        "{err}"
    );

    let Some(d) = data_root("split_with_missing_image") else {
        return;
    };
    let split = dir.join("split.txt");
    std::fs::write(&split, "Forest/Forest_1.jpg\nForest/Forest_999999.jpg\n").unwrap();
    let err = format!(
        "{:#}",
        open(
            &format!("folder:{}", d.join("eurosat/images").display()),
            Some(&split)
        )
        .unwrap_err()
    );
    assert!(
        err.contains("split.txt:2") && err.contains("Forest_999999.jpg"),
        "{err}"
    );
}

#[test]
fn jsonl_manifest_and_missing_image() {
    let dir = scratch("jsonl");
    std::fs::copy(fixtures().join("images/wide.jpg"), dir.join("a.jpg")).unwrap();
    std::fs::write(
        dir.join("m.jsonl"),
        "{\"image\": \"a.jpg\", \"labels\": [\"port\", \"ship\"]}\n",
    )
    .unwrap();
    let ds = open(&format!("jsonl:{}", dir.join("m.jsonl").display()), None).unwrap();
    assert!(ds.multi_label());
    assert_eq!(ds.classes(), &["port", "ship"]);
    std::fs::write(dir.join("m.jsonl"), "{\"image\": \"a.jpg\", \"labels\": [\"port\"]}\n{\"image\": \"b.jpg\", \"labels\": [\"x\"]}\n").unwrap();
    let err = format!(
        "{:#}",
        open(&format!("jsonl:{}", dir.join("m.jsonl").display()), None).unwrap_err()
    );
    assert!(err.contains("m.jsonl:2") && err.contains("b.jpg"), "{err}");
}

/// Equal up to the float rounding that a different batch composition brings (gemm blocks rows
/// differently for different batch sizes).
fn assert_same(a: &[Option<Vec<f32>>], b: &[Option<Vec<f32>>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let d = max_abs_diff(x.as_ref().unwrap(), y.as_ref().unwrap());
        assert!(d < 1e-5, "embeddings differ by {d}");
    }
}

#[test]
fn cache_resumes_after_interruption_and_recomputes_corrupt_entries() {
    let Some(d) = data_root("cache_resumes") else {
        return;
    };
    let clip = ClipEncoder::load(tiny_clip("tiny-b").to_str().unwrap(), &Device::Cpu).unwrap();
    let ds = open(
        &format!("folder:{}", d.join("eurosat/images").display()),
        Some(&d.join("eurosat/splits/test-100-per-class.txt")),
    )
    .unwrap();
    let samples: Vec<_> = ds.samples().iter().step_by(50).cloned().collect();
    assert_eq!(samples.len(), 20);
    let decode = DecodeOptions::default();
    let bar = ProgressBar::hidden();
    let (reference, stats) =
        skyscribe::cache::embed_samples(&clip, &samples, None, 8, &decode, &bar).unwrap();
    assert_eq!(stats.encoded, 20);

    let dir = scratch("cache");
    let cache = EmbeddingCache::open(&dir, &clip, &decode).unwrap();
    // A run interrupted after 12 images left those 12 entries behind.
    let (_, first) =
        skyscribe::cache::embed_samples(&clip, &samples[..12], Some(&cache), 8, &decode, &bar)
            .unwrap();
    assert_eq!((first.encoded, first.from_cache), (12, 0));
    let (resumed, second) =
        skyscribe::cache::embed_samples(&clip, &samples, Some(&cache), 8, &decode, &bar).unwrap();
    assert_eq!((second.encoded, second.from_cache), (8, 12));
    assert_same(&resumed, &reference);

    // Damage one entry: it is detected, recomputed and rewritten.
    let entry = walkdir::WalkDir::new(cache.dir())
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "emb"))
        .unwrap();
    let mut bytes = std::fs::read(entry.path()).unwrap();
    bytes[12] ^= 0xFF;
    std::fs::write(entry.path(), bytes).unwrap();
    let (again, third) =
        skyscribe::cache::embed_samples(&clip, &samples, Some(&cache), 8, &decode, &bar).unwrap();
    assert_eq!(
        (third.encoded, third.from_cache, third.corrupt_entries),
        (1, 19, 1)
    );
    assert_same(&again, &reference);
}

#[test]
fn eval_report_and_per_image_lines_recompute_to_the_summary() {
    let Some(d) = data_root("eval_end_to_end") else {
        return;
    };
    let dir = scratch("eval-e2e");
    let split = dir.join("split.txt");
    let lines: Vec<String> =
        std::fs::read_to_string(d.join("eurosat/splits/test-100-per-class.txt"))
            .unwrap()
            .lines()
            .step_by(10)
            .map(String::from)
            .collect();
    std::fs::write(&split, lines.join("\n")).unwrap();
    let report = dir.join("report");
    // The wording grid: a second label set and a second template from a grid file.
    let grid = dir.join("grid.txt");
    std::fs::write(
        &grid,
        "# wordings to compare\nlabels: eurosat-reduced\ntemplate: eurosat\n",
    )
    .unwrap();
    let (model, dataset) = (
        tiny_clip("tiny-a").display().to_string(),
        format!("folder:{}", d.join("eurosat/images").display()),
    );
    // The tiny model on the split, uncached, with a report in `report`; `extra` adds wordings.
    let evaluate = |extra: &[&str], report: &Path| {
        let mut args = vec![
            "eval",
            "zero-shot",
            "--model",
            &model,
            "--dataset",
            &dataset,
            "--split",
            split.to_str().unwrap(),
            "--labels",
            "eurosat",
            "--no-cache",
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        skyscribe(&args)
    };
    let out = evaluate(
        &[
            "--labels",
            "eurosat-reduced",
            "--template",
            "satellite",
            "--template",
            "eurosat",
            "--jsonl",
        ],
        &report,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = json_lines(&out.stdout);
    let (summary, images) = rows.split_last().unwrap();
    assert_eq!(images.len(), 100);
    let main = &summary["summary"]["main"];
    assert_eq!(main["templates"], "ensemble of all");
    let correct = images
        .iter()
        .filter(|r| r["predicted"][0]["label"] == r["true"][0])
        .count();
    let top1 = main["single"]["top1"].as_f64().unwrap();
    assert!(
        (top1 - correct as f64 / 100.0).abs() < 1e-12,
        "{top1} vs {correct}"
    );
    let k = main["single"]["k"].as_u64().unwrap() as usize;
    let topk = images
        .iter()
        .filter(|r| {
            r["predicted"].as_array().unwrap()[..k]
                .iter()
                .any(|p| p["label"] == r["true"][0])
        })
        .count();
    assert!((main["single"]["topk"].as_f64().unwrap() - topk as f64 / 100.0).abs() < 1e-12);
    // Per-class recall of one class from the lines.
    let forest: Vec<_> = images.iter().filter(|r| r["true"][0] == "Forest").collect();
    let forest_hits = forest
        .iter()
        .filter(|r| r["predicted"][0]["label"] == "Forest")
        .count();
    let per_class = main["single"]["per_class"].as_array().unwrap();
    let f = per_class.iter().find(|c| c["class"] == "Forest").unwrap();
    assert_eq!(f["support"].as_u64().unwrap() as usize, forest.len());
    assert!(
        (f["recall"].as_f64().unwrap() - forest_hits as f64 / forest.len() as f64).abs() < 1e-12
    );
    // The reduced label set evaluates 5 labels over the same images.
    let grid = summary["summary"]["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 6);
    let reduced = grid
        .iter()
        .find(|g| g["labels"] == "eurosat-reduced")
        .unwrap();
    assert_eq!(reduced["single"]["per_class"].as_array().unwrap().len(), 5);
    assert_eq!(reduced["single"]["n"], 100);
    for f in [
        "report.md",
        "report.html",
        "confusion.csv",
        "confusion.png",
        "per_class.png",
        "sensitivity.png",
        "predictions.jsonl",
        "summary.json",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let png = image::open(report.join("confusion.png")).unwrap();
    assert!(png.width() > 300);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains(&format!("{:.1} %", 100.0 * top1)), "{md}");
    // The headline names the ensemble's templates and the best single one beside it.
    assert!(md.contains("## Headline"), "{md}");
    assert!(
        md.contains(
            "ensemble of all: `a satellite photo of {}.`, `a centered satellite photo of {}.`"
        ),
        "{md}"
    );
    assert!(md.contains("| best single template: "), "{md}");
    // HTML tables open with a header row, never an empty one.
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<table>\n<tr><th>").count(),
        html.matches("<table>").count()
    );
    assert!(!html.contains("<th></th><th></th>"));
    assert_eq!(
        std::fs::read_to_string(report.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .count(),
        100
    );
    // One label set, one template: nothing to compare, so no sensitivity picture.
    let single = dir.join("report-single");
    let out = evaluate(&[], &single);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(single.join("confusion.png").is_file());
    assert!(!single.join("sensitivity.png").exists());
    let md = std::fs::read_to_string(single.join("report.md")).unwrap();
    assert!(!md.contains("best single template"), "{md}");
    assert!(md.contains("chance (one of 10 labels) | 10.0 %"), "{md}");
}

/// Retrieval recall as CLIP_benchmark computes it (`scripts/reference/make_retrieval_reference.py`):
/// equal to its `recall_at_k` digit for digit where no query ties, and in data order (a stable
/// sort, the lower index first) where captions repeat, as RSICD's do.
#[test]
fn retrieval_recall_matches_clip_benchmark_and_ranks_ties_in_data_order() {
    use skyscribe::eval::retrieval::ranks;
    let r = read_json(&fixtures().join("retrieval/reference.json"));
    let vectors = |v: &serde_json::Value| -> Vec<Vec<f32>> {
        v.as_array().unwrap().iter().map(floats).collect()
    };
    let recalls = |set: &serde_json::Value| {
        let owner: Vec<usize> = integers(&set["owner"]);
        let s = ranks(&vectors(&set["images"]), &vectors(&set["texts"]), &owner).summary();
        [
            ("i2t_r1", s.i2t_r1),
            ("i2t_r5", s.i2t_r5),
            ("i2t_r10", s.i2t_r10),
            ("t2i_r1", s.t2i_r1),
            ("t2i_r5", s.t2i_r5),
            ("t2i_r10", s.t2i_r10),
        ]
    };
    let distinct = &r["distinct"];
    assert_eq!(distinct["queries_with_a_tie"], 0);
    for (k, ours) in recalls(distinct) {
        let theirs = distinct["clip_benchmark"][k].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 1e-6,
            "{k}: {ours} vs CLIP_benchmark {theirs}"
        );
    }
    let ties = &r["ties"];
    assert!(ties["queries_with_a_tie"].as_u64().unwrap() > 100);
    for (k, ours) in recalls(ties) {
        assert_eq!(ours, ties["stable_sort"][k].as_f64().unwrap(), "{k}");
        // R@1 is where counting ties for the query inflated recall; CLIP_benchmark agrees there.
        if k.ends_with("_r1") {
            let old = ties["ties_count_for_the_query"][k].as_f64().unwrap();
            assert!(ours < old, "{k}: {ours} vs {old}");
            let cb = ties["clip_benchmark"][k].as_f64().unwrap();
            assert!(
                (ours - cb).abs() < 1e-6,
                "{k}: {ours} vs CLIP_benchmark {cb}"
            );
        }
    }
}
