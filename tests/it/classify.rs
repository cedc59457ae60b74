//! Classifiers learned from labelled examples: parity of the linear probe with scikit-learn
//! (committed fixture), `train classifier` / `eval classify` / `eval few-shot` on EuroSAT,
//! training areas over the EuroSAT mosaic with `scan --classifier`, and the refusals.

use std::path::Path;

use skyscribe::classify::logistic::{Problem, Stopping, fit, logits};
use skyscribe::zeroshot::softmax;

use crate::common::{
    data_root, fixtures, json_lines, read_json, repo, scratch, skyscribe, tiny_clip,
};

/// On 60 committed mini-CLIP embeddings, at three fixed C values (strong to weak penalty), the
/// probe's probabilities equal scikit-learn's `LogisticRegression` within 1e-3 and its
/// predictions agree.
#[test]
fn linear_probe_matches_scikit_learn() {
    let dir = fixtures().join("classifier");
    let expected = read_json(&dir.join("sklearn-expected.json"));
    let classes: Vec<String> = expected["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let text = std::fs::read_to_string(dir.join("embeddings.jsonl")).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut dim = 0;
    for row in json_lines(&text) {
        let e: Vec<f32> = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        dim = e.len();
        x.extend(skyscribe::encoder::normalized(&e));
        y.push(
            classes
                .iter()
                .position(|c| c == row["class"].as_str().unwrap())
                .unwrap(),
        );
    }
    for case in expected["cases"].as_array().unwrap() {
        let c = case["c"].as_f64().unwrap();
        let problem = Problem {
            x: &x,
            y: &y,
            dim,
            classes: classes.len(),
            c,
            anchor: None,
            penalise_bias: false,
        };
        let f = fit(&problem, None, Stopping::default()).unwrap();
        let z = logits(&x, dim, &f.weight, &f.bias).unwrap();
        let mut worst = 0f32;
        for (i, (row, want)) in z
            .chunks(classes.len())
            .zip(case["probabilities"].as_array().unwrap())
            .enumerate()
        {
            let p = softmax(row);
            let want: Vec<f32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            for (a, b) in p.iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
            assert_eq!(
                skyscribe::classify::argmax(&p),
                case["predicted"][i].as_u64().unwrap() as usize,
                "C = {c}: row {i} predicted differently"
            );
        }
        assert!(worst < 1e-3, "C = {c}: probabilities differ by {worst}");
    }
}

/// A small EuroSAT split: `per_class` training images of each class (from the train split)
/// and the balanced 1,000-image test subset.
fn eurosat_splits(dir: &Path, data: &Path, per_class: usize) -> (String, String, String) {
    let e = data.join("eurosat");
    let train: Vec<String> = std::fs::read_to_string(e.join("splits/train.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut picked = Vec::new();
    let mut counts = std::collections::HashMap::new();
    for l in &train {
        let class = l.split('/').next().unwrap().to_string();
        let n = counts.entry(class).or_insert(0);
        if *n < per_class {
            *n += 1;
            picked.push(l.clone());
        }
    }
    let split = dir.join("train.txt");
    std::fs::write(&split, picked.join("\n")).unwrap();
    (
        format!("folder:{}", e.join("images").display()),
        split.display().to_string(),
        e.join("splits/test-100-per-class.txt")
            .display()
            .to_string(),
    )
}

fn summary(stdout: &str) -> serde_json::Value {
    json_lines(stdout)
        .into_iter()
        .find_map(|l| l.get("summary").cloned())
        .expect("a summary line")
}

/// Trained on 40 images a class, the linear probe beats zero-shot on the 1,000 test images;
/// `eval classify` prints zero-shot's per-image lines and summary; the file says what it is.
#[test]
fn a_linear_probe_on_eurosat_beats_zero_shot() {
    let Some(data) = data_root("a_linear_probe_on_eurosat_beats_zero_shot") else {
        return;
    };
    let dir = scratch("classify-eurosat");
    let (dataset, train, test) = eurosat_splits(&dir, &data, 40);
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();
    let out = dir.join("probe.safetensors");
    let r = skyscribe(&[
        "train",
        "classifier",
        "--data",
        &dataset,
        "--split",
        &train,
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache,
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info = &json_lines(&r.stdout)[0]["info"];
    assert_eq!(info["method"], "linear");
    assert_eq!(info["classes"].as_array().unwrap().len(), 10);
    assert_eq!(info["training"]["examples"], 400);
    assert_eq!(info["regularisation"]["chosen_by"], "k-fold");
    assert_eq!(info["model"]["spec"], "skyscribe-mini");
    let report = dir.join("report");
    let r = skyscribe(&[
        "eval",
        "classify",
        "--classifier",
        out.to_str().unwrap(),
        "--dataset",
        &dataset,
        "--split",
        &test,
        "--cache",
        cache,
        "--jsonl",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[0]["predicted"].as_array().unwrap().len(), 10);
    assert_eq!(lines[0]["true"].as_array().unwrap().len(), 1);
    let probe = summary(&r.stdout)["main"]["single"]["top1"]
        .as_f64()
        .unwrap();
    assert!(report.join("confusion.png").is_file());
    let r = skyscribe(&[
        "eval",
        "zero-shot",
        "--labels",
        "eurosat",
        "--dataset",
        &dataset,
        "--split",
        &test,
        "--cache",
        cache,
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let zero_shot = summary(&r.stdout)["main"]["single"]["top1"]
        .as_f64()
        .unwrap();
    assert!(
        probe > zero_shot + 0.1,
        "probe {probe} against zero-shot {zero_shot}"
    );

    // Prototypes: class means, no C.
    let protos = dir.join("protos.safetensors");
    let shots_cache = dir.join("cache-shots");
    let r = skyscribe(&[
        "train",
        "classifier",
        "--data",
        &dataset,
        "--split",
        &train,
        "--method",
        "prototype",
        "--shots",
        "5",
        "--out",
        protos.to_str().unwrap(),
        "--cache",
        shots_cache.to_str().unwrap(),
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info = &json_lines(&r.stdout)[0]["info"];
    assert_eq!(info["method"], "prototype");
    assert_eq!(info["training"]["examples"], 50);
    // The shots were drawn before embedding: the cache holds the 50 drawn images, no others.
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| {
            rd.map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { files(&p) } else { 1 })
                .sum()
        })
    }
    assert_eq!(files(&shots_cache), 50);
    assert!(info["regularisation"].is_null());

    // The classifier labels images like a label set does.
    let river = repo().join("assets/samples/eurosat-river.jpg");
    let r = skyscribe(&[
        "labels",
        "--classifier",
        out.to_str().unwrap(),
        river.to_str().unwrap(),
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let labels = &json_lines(&r.stdout)[0]["labels"];
    assert_eq!(labels.as_array().unwrap().len(), 10);
    let total: f64 = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["score"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4);

    // A classifier of another CLIP model is refused by fingerprint.
    let other = tiny_clip("tiny-a");
    let r = skyscribe(&[
        "labels",
        "--classifier",
        out.to_str().unwrap(),
        "--model",
        other.to_str().unwrap(),
        river.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("reads the embeddings of CLIP model skyscribe-mini"),
        "{}",
        r.stderr
    );

    // The few-shot curve: every method at every K, zero-shot and the all-data point.
    let curve = dir.join("curve");
    let r = skyscribe(&[
        "eval",
        "few-shot",
        "--dataset",
        &dataset,
        "--train-split",
        &train,
        "--test-split",
        &test,
        "--labels",
        "eurosat",
        "--shots",
        "1,4",
        "--seeds",
        "2",
        "--cache",
        cache,
        "--jsonl",
        "--report",
        curve.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = summary(&r.stdout);
    let points = s["curve"].as_array().unwrap();
    assert_eq!(points.len(), 4 * 2, "{points:?}");
    assert!((s["zero_shot"].as_f64().unwrap() - zero_shot).abs() < 1e-9);
    assert!(
        s["all_data"]["accuracy"].as_f64().unwrap() > s["zero_shot"].as_f64().unwrap(),
        "{s}"
    );
    assert!(curve.join("few-shot.png").is_file());
    assert!(curve.join("few-shot.csv").is_file());
}

/// Refusals, each naming the problem, and nothing written.
#[test]
fn bad_training_input_is_refused_by_name() {
    let Some(data) = data_root("bad_training_input_is_refused_by_name") else {
        return;
    };
    let dir = scratch("classify-refusals");
    let (dataset, train, _) = eurosat_splits(&dir, &data, 3);
    let out = dir.join("c.safetensors");
    let out_s = out.to_str().unwrap();
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--shots", "4"],
            "--shots 4: class(es) with fewer examples: AnnualCrop (3)",
        ),
        (
            vec!["--method", "zero-shot-prior", "--labels", "a,b"],
            "no label stands for the class(es)",
        ),
        (vec!["--method", "zero-shot-prior"], "needs --labels"),
        (
            vec!["--method", "prototype", "--c", "1"],
            "prototype has none",
        ),
        (vec!["--c=-1"], "--c must be a positive number"),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "train",
            "classifier",
            "--data",
            &dataset,
            "--split",
            &train,
            "--out",
            out_s,
            "--cache",
            cache,
        ];
        args.extend(extra.iter().copied());
        let r = skyscribe(&args);
        assert_ne!(r.code, 0, "{extra:?} was accepted");
        assert!(r.stderr.contains(want), "{extra:?}: {}", r.stderr);
        assert!(!out.exists(), "{extra:?} wrote a file");
    }

    // Training areas: outside the scene, and in a CRS that cannot be read.
    let mosaic = repo().join("assets/samples/eurosat-mosaic.tif");
    let far = dir.join("far.geojson");
    std::fs::write(
        &far,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"class":"Forest"},
           "geometry":{"type":"Polygon","coordinates":[[[100,10],[101,10],[101,11],[100,11],[100,10]]]}}]}"#,
    )
    .unwrap();
    let bad_crs = dir.join("bad-crs.geojson");
    std::fs::write(
        &bad_crs,
        r#"{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::9999"}},
           "features":[{"type":"Feature","properties":{"class":"Forest"},
           "geometry":{"type":"Point","coordinates":[500000,5300000]}}]}"#,
    )
    .unwrap();
    for (areas, want) in [
        (&far, "no training area covers a tile"),
        (&bad_crs, "its CRS EPSG:9999 cannot be transformed"),
    ] {
        let spec = format!("polygons:{}@{}", areas.display(), mosaic.display());
        let r = skyscribe(&["train", "classifier", "--data", &spec, "--out", out_s]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains(want), "{}", r.stderr);
        assert!(!out.exists());
    }
}

/// A classifier trained on the mosaic's training areas (32 tiles of 64 px, 8 classes), written
/// to `dir/mosaic.safetensors`.
pub fn mosaic_classifier(dir: &Path) -> std::path::PathBuf {
    let mosaic = repo().join("assets/samples/eurosat-mosaic.tif");
    let areas = fixtures().join("polygons/mosaic-areas.geojson");
    let out = dir.join("mosaic.safetensors");
    let spec = format!("polygons:{}@{}", areas.display(), mosaic.display());
    let r = skyscribe(&[
        "train",
        "classifier",
        "--data",
        &spec,
        "--tile",
        "64",
        "--stride",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    out
}

/// `serve --classifier`: `/v1/classify` answers as `labels --classifier` does, `/v1/models`
/// lists it, unknown names and a server without one are told so, and a classifier of another
/// CLIP model stops the server from starting.
#[test]
fn the_server_classifies_with_a_learned_classifier() {
    use crate::serve::{Server, get, post};
    let dir = scratch("classify-serve");
    let file = mosaic_classifier(&dir);
    let river = repo().join("assets/samples/eurosat-river.jpg");
    let bytes = std::fs::read(&river).unwrap();
    let cli = skyscribe(&[
        "labels",
        "--classifier",
        file.to_str().unwrap(),
        "--jsonl",
        river.to_str().unwrap(),
    ]);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    let want = &json_lines(&cli.stdout)[0]["labels"];

    let server = Server::start(&["--classifier", file.to_str().unwrap(), "--no-caption"]);
    let r = post(&server.url("/v1/classify?top_k=8"), "image/jpeg", &bytes);
    assert_eq!(r.status, 200);
    let answer = r.json();
    assert_eq!(answer["classifier"], "mosaic");
    let got = answer["labels"].as_array().unwrap();
    assert_eq!(got.len(), 8);
    for (g, w) in got.iter().zip(want.as_array().unwrap()) {
        assert_eq!(g["label"], w["label"]);
        let (a, b) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{g} against {w}");
    }
    let total: f64 = got.iter().map(|l| l["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4);
    let models = get(&server.url("/v1/models"), None).json();
    assert_eq!(models["classifiers"][0]["name"], "mosaic");
    assert_eq!(
        models["classifiers"][0]["classes"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let r = post(
        &server.url("/v1/classify?classifier=nope"),
        "image/jpeg",
        &bytes,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("served: mosaic")
    );
    drop(server);

    let bare = Server::start(&["--no-caption"]);
    let r = post(&bare.url("/v1/classify"), "image/jpeg", &bytes);
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--classifier FILE")
    );
    drop(bare);

    let other = tiny_clip("tiny-a");
    let r = skyscribe(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--model",
        other.to_str().unwrap(),
        "--no-caption",
        "--classifier",
        file.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("reads the embeddings of CLIP model"),
        "{}",
        r.stderr
    );
}

/// Training areas drawn over one half of the EuroSAT mosaic (a checkerboard of its 64 cells),
/// written by GDAL in Web Mercator while the scene is in UTM 32N: the classifier they train,
/// through `scan --classifier`, labels the other half's cells better than zero-shot does.
#[test]
fn training_areas_over_the_mosaic_make_a_better_class_map() {
    let dir = scratch("classify-polygons");
    let mosaic = repo().join("assets/samples/eurosat-mosaic.tif");
    let out = mosaic_classifier(&dir);
    let info = skyscribe::classify::Classifier::load(&out).unwrap().info;
    // 32 training cells: 30 polygons and 2 points, 8 classes; the areas were read in EPSG:3857.
    assert_eq!(info.training.examples, 32, "{info:?}");
    assert_eq!(info.classes.len(), 8);
    assert_eq!(info.training.per_class.iter().sum::<usize>(), 32);
    let truth: std::collections::HashMap<Vec<u64>, String> =
        read_json(&fixtures().join("polygons/mosaic-truth.json"))
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["tile"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect(),
                    t["class"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    let accuracy = |stdout: &str| -> f64 {
        let mut right = 0;
        let mut seen = 0;
        for l in json_lines(stdout) {
            let tile: Vec<u64> = l["tile"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            if let Some(t) = truth.get(&tile) {
                seen += 1;
                right += usize::from(l["labels"][0]["label"] == t.as_str());
            }
        }
        assert_eq!(seen, 32);
        right as f64 / seen as f64
    };
    let class_map = dir.join("classes.tif");
    let r = skyscribe(&[
        "scan",
        "--classifier",
        out.to_str().unwrap(),
        "--tile",
        "64",
        "--stride",
        "64",
        "--jsonl",
        "--class-map",
        class_map.to_str().unwrap(),
        mosaic.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let learned = accuracy(&r.stdout);
    assert!(class_map.is_file());
    assert!(dir.join("classes.argmax.tif").is_file());
    let r = skyscribe(&[
        "scan",
        "--labels",
        "eurosat",
        "--tile",
        "64",
        "--stride",
        "64",
        "--jsonl",
        mosaic.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let zero_shot = accuracy(&r.stdout);
    assert!(
        learned >= 0.55 && learned > zero_shot + 0.1,
        "held-out cells: classifier {learned}, zero-shot {zero_shot}"
    );
}

/// `search --class C --classifier F`: every result is an image the classifier puts in C (as
/// `scan --classifier` labels the same tiles), ranked by the query among them.
#[test]
fn search_keeps_the_images_of_a_class() {
    let dir = scratch("classify-search");
    let file = mosaic_classifier(&dir);
    let mosaic = repo().join("assets/samples/eurosat-mosaic.tif");
    let index = dir.join("index");
    let scene = format!("scene:{}", mosaic.display());
    let r = skyscribe(&[
        "index",
        "build",
        "--index",
        index.to_str().unwrap(),
        "--chip-size",
        "64",
        &scene,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = skyscribe(&[
        "scan",
        "--classifier",
        file.to_str().unwrap(),
        "--tile",
        "64",
        "--stride",
        "64",
        "--jsonl",
        "--top-k",
        "1",
        mosaic.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rivers: Vec<serde_json::Value> = json_lines(&r.stdout)
        .into_iter()
        .filter(|l| l["labels"][0]["label"] == "River")
        .map(|l| l["tile"].clone())
        .collect();
    assert!(rivers.len() >= 2, "{rivers:?}");
    let r = skyscribe(&[
        "search",
        "--index",
        index.to_str().unwrap(),
        "--text",
        "a river",
        "--class",
        "river",
        "--classifier",
        file.to_str().unwrap(),
        "--top-k",
        "64",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits = json_lines(&r.stdout);
    assert_eq!(hits.len(), rivers.len(), "{}", r.stderr);
    for h in &hits {
        assert!(rivers.contains(&h["chip"]), "{h} is not a River tile");
    }
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    let r = skyscribe(&[
        "search",
        "--index",
        index.to_str().unwrap(),
        "--text",
        "a river",
        "--class",
        "Lake",
        "--classifier",
        file.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--class \"Lake\" is not"), "{}", r.stderr);
}
