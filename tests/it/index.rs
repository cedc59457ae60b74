//! `index build`, `search`, `locate` and `eval retrieval` end to end: incremental builds, a
//! killed build resumed, three shards equal to one process, model mismatch, each bad input,
//! and retrieval recall recomputed from `embed`'s own vectors.

use std::path::{Path, PathBuf};
use std::process::Command;

use skyscribe::index::parts::{self, Row};

use crate::common::{
    Run, cosine, data_root, fixtures, floats, json_lines, read_json, scratch, skyscribe,
    skyscribe_env, tiny_clip,
};

/// `n` small PNGs, each its own pattern (colour ramps and stripes from its number), named
/// `img-000.png`…; returns their paths.
fn synthetic_images(dir: &Path, n: usize, size: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(size, size, |x, y| {
                let k = i as u32;
                image::Rgb([
                    ((x * (k % 7 + 1) * 9 + k * 37) % 256) as u8,
                    ((y * (k % 5 + 1) * 11 + k * 53) % 256) as u8,
                    (((x + y) * (k % 3 + 1) * 5 + k * 17) % 256) as u8,
                ])
            });
            let p = dir.join(format!("img-{i:03}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

/// A scratch folder `name` with `n` synthetic 40-px images in `images/` and the tiny model
/// `tiny-a`: `(folder, images folder, image paths, model)`.
fn archive(name: &str, n: usize) -> (PathBuf, PathBuf, Vec<PathBuf>, PathBuf) {
    let dir = scratch(name);
    let images = dir.join("images");
    let paths = synthetic_images(&images, n, 40);
    (dir, images, paths, tiny_clip("tiny-a"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every row of every complete part, by id.
fn index_rows(index: &Path) -> Vec<Row> {
    let meta = skyscribe::index::IndexMeta::read(index).unwrap();
    let mut rows = Vec::new();
    for i in 0..meta.shards {
        let (r, _) = parts::read_part(&index.join("parts"), i, meta.shards, &meta.model.key)
            .unwrap_or_else(|e| panic!("part {i}: {e:?}"));
        rows.extend(r);
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// `index build --index INDEX --model MODEL --jsonl EXTRA… INPUTS…`, as it ran.
fn build_run(index: &Path, model: &Path, extra: &[&str], inputs: &[&Path]) -> Run {
    let mut args = vec![
        "index",
        "build",
        "--index",
        s(index),
        "--model",
        s(model),
        "--jsonl",
    ];
    args.extend(extra);
    args.extend(inputs.iter().map(|p| s(p)));
    skyscribe(&args)
}

/// [`build_run`], which must succeed: its summary line.
fn build(index: &Path, model: &Path, extra: &[&str], inputs: &[&Path]) -> serde_json::Value {
    let r = build_run(index, model, extra, inputs);
    assert_eq!(r.code, 0, "{}", r.stderr);
    json_lines(&r.stdout).pop().unwrap()
}

/// A build over other inputs than the index's is refused (it would drop the archive), unless it
/// says --add or --replace; the inputs live in index.json.
#[test]
fn a_build_over_other_inputs_is_refused_unless_it_adds_or_replaces() {
    let dir = scratch("index-inputs");
    let (a, b) = (dir.join("archive"), dir.join("samples"));
    let archive = synthetic_images(&a, 9, 40);
    synthetic_images(&dir.join("b-src"), 12, 40);
    std::fs::create_dir_all(&b).unwrap();
    for i in 9..12 {
        let name = format!("img-{i:03}.png");
        std::fs::copy(dir.join("b-src").join(&name), b.join(&name)).unwrap();
    }
    let model = tiny_clip("tiny-a");
    let index = dir.join("ix");
    assert_eq!(build(&index, &model, &[], &[&a])["count"], 9);
    let meta = read_json(&index.join("index.json"));
    let canonical = std::fs::canonicalize(&a).unwrap();
    assert_eq!(
        meta["inputs"],
        serde_json::json!([canonical.display().to_string()])
    );
    // The same inputs, written another way (relative, with a trailing slash): no change.
    let relative = format!("{}/", a.display());
    let again = build(&index, &model, &[], &[Path::new(&relative)]);
    assert_eq!(
        (again["reused"].as_u64(), again["dropped"].as_u64()),
        (Some(9), Some(0))
    );

    // Other inputs: refused, naming both ways on, and the index is as it was.
    let before = index_rows(&index);
    let refused = |input: &Path| {
        let r = build_run(&index, &model, &[], &[input]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        r
    };
    let r = refused(&b);
    for words in [
        "--add",
        "--replace",
        "is built over",
        &canonical.display().to_string(),
    ] {
        assert!(r.stderr.contains(words), "{words:?} in {}", r.stderr);
    }
    assert_eq!(index_rows(&index), before);
    // --add: both, the archive's rows kept.
    let added = build(&index, &model, &["--add"], &[&b]);
    assert_eq!(
        (added["encoded"].as_u64(), added["reused"].as_u64()),
        (Some(3), Some(9))
    );
    assert_eq!(added["count"], 12);
    assert_eq!(
        read_json(&index.join("index.json"))["inputs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Now the archive alone is "other inputs" too.
    let r = refused(&a);
    assert!(r.stderr.contains("not given"), "{}", r.stderr);
    // A file gone from a recorded input is still dropped by a plain rebuild.
    std::fs::remove_file(&archive[4]).unwrap();
    let rebuilt = build(&index, &model, &[], &[&a, &b]);
    assert_eq!(
        (rebuilt["dropped"].as_u64(), rebuilt["count"].as_u64()),
        (Some(1), Some(11))
    );
    // --replace: the samples alone; the archive's rows go.
    let replaced = build(&index, &model, &["--replace"], &[&b]);
    assert_eq!(
        (replaced["dropped"].as_u64(), replaced["count"].as_u64()),
        (Some(8), Some(3))
    );
    let r = skyscribe(&[
        "index",
        "build",
        "--index",
        s(&index),
        "--add",
        "--replace",
        s(&b),
    ]);
    assert_eq!(r.code, 2, "--add with --replace: {}", r.stderr);
}

#[test]
fn incremental_builds_encode_only_new_and_changed_files() {
    let (dir, images, paths, model) = archive("index-incremental", 12);
    let index = dir.join("ix");
    let first = build(&index, &model, &[], &[&images]);
    assert_eq!(
        (first["items"].as_u64(), first["encoded"].as_u64()),
        (Some(12), Some(12))
    );
    let rows = index_rows(&index);
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[0].id, "img-000.png");
    assert!(
        rows.iter()
            .all(|r| r.chip.is_none() && r.content_hash.len() == 64)
    );
    for r in &rows {
        let norm: f32 = r.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{} has norm {norm}", r.id);
    }

    let again = build(&index, &model, &[], &[&images]);
    assert_eq!(again["encoded"], 0);
    assert_eq!(again["reused"], 12);
    assert_eq!(
        index_rows(&index),
        rows,
        "an unchanged rebuild changed the index"
    );

    // One file changed, one removed, one added.
    std::fs::copy(&paths[5], &paths[3]).unwrap();
    std::fs::remove_file(&paths[7]).unwrap();
    synthetic_images(&dir.join("more"), 13, 40);
    std::fs::copy(dir.join("more/img-012.png"), images.join("img-012.png")).unwrap();
    let third = build(&index, &model, &[], &[&images]);
    assert_eq!(third["encoded"], 2, "{third}");
    assert_eq!(third["reused"], 10);
    assert_eq!(third["dropped"], 1);
    assert_eq!(third["count"], 12);
    let after = index_rows(&index);
    let ids: Vec<&str> = after.iter().map(|r| r.id.as_str()).collect();
    assert!(ids.contains(&"img-012.png") && !ids.contains(&"img-007.png"));
    // The changed file now has the embedding of the file it was copied from.
    let of = |id: &str| after.iter().find(|r| r.id == id).unwrap().embedding.clone();
    assert!(crate::common::max_abs_diff(&of("img-003.png"), &of("img-005.png")) < 1e-6);

    // An image query finds itself first, with a cosine of 1.
    let r = skyscribe(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&images.join("img-009.png")),
        "--top-k",
        "3",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits = json_lines(&r.stdout);
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["rank"], 1);
    assert_eq!(hits[0]["id"], "img-009.png");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert!(hits[0]["chip"].is_null());
    assert!(hits[0]["score"].as_f64() >= hits[1]["score"].as_f64());
    assert!(
        Path::new(hits[0]["path"].as_str().unwrap()).is_absolute(),
        "{}",
        hits[0]["path"]
    );
}

#[test]
fn a_killed_build_resumes_and_encodes_only_the_rest() {
    let dir = scratch("index-resume");
    let images = dir.join("images");
    let n = 1200;
    synthetic_images(&images, n, 48);
    let model = skyscribe::builtin::MINI_CLIP;
    let index = dir.join("ix");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skyscribe"))
        .args([
            "index",
            "build",
            "--index",
            s(&index),
            "--model",
            model,
            "--checkpoint-every",
            "32",
            "--batch-size",
            "16",
            s(&images),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = index.join("parts").join(parts::pending_name(0, 1));
    let chunks = |p: &Path| {
        std::fs::read_dir(p).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
                .count()
        })
    };
    let started = std::time::Instant::now();
    while chunks(&pending) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build finished before it could be killed; give it more images"
        );
        assert!(started.elapsed().as_secs() < 300, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Ctrl-C, as a user stops it: exit 130 and a line saying a rerun resumes.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted; the images encoded so far are saved: rerun the same command"),
        "{stderr}"
    );
    assert!(
        !index.join("parts").join(parts::marker_name(0, 1)).exists(),
        "killed before the end, yet the part is marked complete"
    );
    let (saved, problems) = parts::read_pending(&pending);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        saved.len() >= 96 && saved.len() < n,
        "{} saved",
        saved.len()
    );

    // The index is readable (not yet searchable: no part complete) and says so.
    let r = skyscribe(&["search", "--index", s(&index), "--text", "x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no complete part"), "{}", r.stderr);

    let m = Path::new(model);
    let resumed = build(&index, m, &[], &[&images]);
    assert_eq!(
        resumed["resumed"].as_u64(),
        Some(saved.len() as u64),
        "{resumed}"
    );
    assert_eq!(resumed["encoded"].as_u64(), Some((n - saved.len()) as u64));
    assert_eq!(resumed["rows"].as_u64(), Some(n as u64));
    assert!(!pending.exists(), "the pending rows were not cleared");

    // Same vectors as one uninterrupted build.
    let fresh = dir.join("fresh");
    build(&fresh, m, &[], &[&images]);
    let (a, b) = (index_rows(&index), index_rows(&fresh));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.id, &x.content_hash), (&y.id, &y.content_hash));
        assert!(crate::common::max_abs_diff(&x.embedding, &y.embedding) < 1e-6);
    }
}

/// Search results as `(id, score)`: the best 8, by the default engine.
fn top(index: &Path, text: &str) -> Vec<(String, f64)> {
    hits(index, text, 8, "auto")
}

/// The best `top_k` results for `text` by `engine`, as `(id, score)`.
fn hits(index: &Path, text: &str, top_k: usize, engine: &str) -> Vec<(String, f64)> {
    let top_k = top_k.to_string();
    let r = skyscribe(&[
        "search",
        "--index",
        s(index),
        "--text",
        text,
        "--top-k",
        &top_k,
        "--engine",
        engine,
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    id_scores(&r.stdout)
}

/// `search --jsonl`'s lines as `(id, score)`.
fn id_scores(stdout: &str) -> Vec<(String, f64)> {
    json_lines(stdout)
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn three_shards_from_scheduler_variables_equal_one_process() {
    let (dir, images, _, model) = archive("index-shards", 30);
    let whole = dir.join("whole");
    build(&whole, &model, &[], &[&images]);

    for (name, env) in [
        (
            "slurm",
            vec!["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"],
        ),
        ("k8s", vec!["JOB_COMPLETION_INDEX"]),
    ] {
        let index = dir.join(name);
        let children: Vec<_> = (0..3)
            .map(|i| {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_skyscribe"));
                cmd.args(["index", "build", "--index", s(&index), "--model", s(&model)]);
                if name == "k8s" {
                    cmd.args(["--shards", "3"]);
                }
                cmd.arg(s(&images)).env("HF_HUB_OFFLINE", "1");
                cmd.env(env[0], i.to_string());
                if let Some(count) = env.get(1) {
                    cmd.env(count, "3");
                }
                cmd.output_async()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let meta = skyscribe::index::IndexMeta::read(&index).unwrap();
        assert_eq!(
            (meta.shards, meta.parts_complete, meta.count),
            (3, 3, 30),
            "{name}"
        );
        for i in 0..3 {
            assert!(index.join("parts").join(parts::part_name(i, 3)).exists());
            assert!(index.join("parts").join(parts::marker_name(i, 3)).exists());
        }
        let (a, b) = (index_rows(&index), index_rows(&whole));
        let ids = |r: &[Row]| r.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "{name}");
        for (x, y) in a.iter().zip(&b) {
            assert!(crate::common::max_abs_diff(&x.embedding, &y.embedding) < 1e-6);
        }
        for q in ["a red square", "green stripes"] {
            let (x, y) = (top(&index, q), top(&whole, q));
            assert_eq!(
                x.iter().map(|h| &h.0).collect::<Vec<_>>(),
                y.iter().map(|h| &h.0).collect::<Vec<_>>()
            );
            for (p, q) in x.iter().zip(&y) {
                assert!((p.1 - q.1).abs() < 1e-6);
            }
        }
    }
}

/// `Command::spawn` with output captured, for children run side by side.
trait SpawnCaptured {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnCaptured for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn another_model_and_bad_input_are_refused_clearly() {
    let dir = scratch("index-bad");
    let images = dir.join("images");
    synthetic_images(&images, 6, 32);
    let (a, b) = (tiny_clip("tiny-a"), tiny_clip("tiny-b"));
    let index = dir.join("ix");
    build(&index, &a, &["--shard", "0/2"], &[&images]);
    build(&index, &a, &["--shard", "1/2"], &[&images]);
    let ix = s(&index);
    let refused = |args: &[&str], says: &str| {
        let r = skyscribe(args);
        assert_ne!(r.code, 0, "{args:?} was accepted");
        assert!(
            r.stderr.contains(says),
            "{args:?}: expected {says:?} in {}",
            r.stderr
        );
    };
    // Another model, building or searching.
    let img = s(&images);
    let bm = s(&b);
    refused(
        &[
            "index", "build", "--index", ix, "--model", bm, "--shard", "0/2", img,
        ],
        "this index was built with model",
    );
    refused(
        &["search", "--index", ix, "--model", bm, "--text", "x"],
        "this index was built with model",
    );
    // Another shard count, a shard spec out of range, --shards without its variable.
    refused(
        &[
            "index",
            "build",
            "--index",
            ix,
            "--model",
            s(&a),
            "--shard",
            "0/3",
            img,
        ],
        "built in 2 shards",
    );
    refused(
        &["index", "build", "--index", ix, "--shard", "3/2", img],
        "0 to 1",
    );
    refused(
        &["index", "build", "--index", ix, "--shards", "2", img],
        "JOB_COMPLETION_INDEX",
    );
    // Missing and foreign folders.
    let missing = dir.join("nope");
    refused(
        &["search", "--index", s(&missing), "--text", "x"],
        "no such index folder",
    );
    refused(
        &["search", "--index", img, "--text", "x"],
        "not a skyscribe index",
    );
    refused(
        &["index", "build", "--index", img, "--model", s(&a), img],
        "holds other files but no index.json",
    );
    // Queries: empty, empty text, unreadable image, --top-k 0.
    refused(&["search", "--index", ix], "empty query");
    refused(&["search", "--index", ix, "--text", " "], "empty text");
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    refused(&["search", "--index", ix, "--image", s(&junk)], "junk.png");
    refused(
        &["search", "--index", ix, "--text", "x", "--top-k", "0"],
        "at least 1",
    );

    // A damaged part is named and skipped; the other part is still searched.
    let part = index.join("parts").join(parts::part_name(1, 2));
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
    let r = skyscribe(&[
        "search", "--index", ix, "--text", "x", "--jsonl", "--top-k", "6",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("part-1-of-2.parquet") && r.stderr.contains("cut short"));
    let (good, _) = parts::read_part(&index.join("parts"), 0, 2, &read_key(&index)).unwrap();
    assert_eq!(json_lines(&r.stdout).len(), good.len().min(6));
    // Building that shard again repairs it.
    let repaired = build(&index, &a, &["--shard", "1/2"], &[&images]);
    assert_eq!(repaired["reused"], 0);
    assert_eq!(repaired["count"], 6);
    assert!(
        repaired["warnings"][0]
            .as_str()
            .unwrap()
            .contains("encoded again")
    );
    // A garbled index.json.
    std::fs::write(index.join("index.json"), b"{").unwrap();
    refused(
        &["search", "--index", ix, "--text", "x"],
        "not a skyscribe index.json",
    );
}

fn read_key(index: &Path) -> String {
    skyscribe::index::IndexMeta::read(index).unwrap().model.key
}

#[test]
fn searching_eurosat_by_text_finds_the_class() {
    let Some(data) = data_root("searching_eurosat_by_text_finds_the_class") else {
        return;
    };
    let dir = scratch("index-eurosat");
    let index = dir.join("ix");
    let root = data.join("eurosat/images");
    // 25 images of each of four classes, linked into one folder (ids `Class/file.jpg`).
    let sub = dir.join("eurosat");
    for c in ["Forest", "SeaLake", "Industrial", "Highway"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(c))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        files.sort();
        std::fs::create_dir_all(sub.join(c)).unwrap();
        for f in files.iter().take(25) {
            std::os::unix::fs::symlink(root.join(c).join(f), sub.join(c).join(f)).unwrap();
        }
    }
    let r = skyscribe(&["index", "build", "--index", s(&index), s(&sub)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits = top(&index, "this is a forest .");
    assert_eq!(hits.len(), 8);
    assert!(hits[0].0.starts_with("Forest/"), "{hits:?}");
    let forests = hits.iter().filter(|h| h.0.starts_with("Forest/")).count();
    // Chance is 2 of 8, and 5 or more of 8 by chance has a probability of 2 % (25 of the 100
    // images are forests: hypergeometric). The built-in model confuses dark lakes with forest
    // (docs/src/mini-models.md), so some lakes rank among the forests.
    assert!(forests >= 5, "{forests} of 8 forests: {hits:?}");
    let industry = top(&index, "this is an industrial area .");
    let factories = industry
        .iter()
        .filter(|h| h.0.starts_with("Industrial/"))
        .count();
    assert!(factories >= 5, "{factories} of 8 industrial: {industry:?}");
}

#[test]
fn locate_scores_patches_that_cover_the_image() {
    let dir = scratch("locate");
    let images = synthetic_images(&dir.join("images"), 1, 100);
    let model = tiny_clip("tiny-a");
    let heat = dir.join("heat");
    let r = skyscribe(&[
        "locate",
        "--model",
        s(&model),
        "--text",
        "a red roof",
        "--patch",
        "40",
        "--stride",
        "30",
        "--heatmap",
        s(&heat),
        "--jsonl",
        s(&images[0]),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    // x and y starts 0, 30, 60 (the last moved inward to end at 100): 3 × 3 patches.
    assert_eq!(lines.len(), 9);
    let patches: Vec<Vec<u64>> = lines
        .iter()
        .map(|l| {
            l["patch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(patches[0], vec![0, 0, 40, 40]);
    assert_eq!(patches[8], vec![60, 60, 40, 40]);
    assert!(
        lines
            .iter()
            .all(|l| l["input"] == s(&images[0]) && l["score"].as_f64().unwrap().abs() <= 1.0)
    );
    let png = image::open(heat.join("img-000.heatmap.png")).unwrap();
    // The 100 × 100 image, centred over a legend 360 px wide and 62 px high.
    assert_eq!((png.width(), png.height()), (360, 162));
    // Patch scores differ, so the heatmap is not one colour.
    let px = png.to_rgb8();
    assert_ne!(px.get_pixel(130 + 5, 5), px.get_pixel(130 + 95, 95));
    // The colour bar runs from the ramp's dark end to its bright end.
    let (dark, bright) = (px.get_pixel(14, 131), px.get_pixel(345, 131));
    let lum = |p: &image::Rgb<u8>| p.0.iter().map(|&v| v as u32).sum::<u32>();
    assert!(lum(dark) < 30 && lum(bright) > 600, "{dark:?} {bright:?}");
}

#[test]
fn retrieval_recall_matches_ranks_computed_from_embed() {
    let dir = scratch("retrieval");
    let paths = synthetic_images(&dir, 5, 40);
    let captions = [
        vec!["a red field", "red squares"],
        vec!["green stripes"],
        vec!["a blue lake", "blue water", "a lake"],
        vec!["a grey road"],
        vec!["a forest"],
    ];
    let mut jsonl = String::new();
    for (p, c) in paths.iter().zip(&captions) {
        let name = p.file_name().unwrap().to_string_lossy();
        jsonl.push_str(&serde_json::json!({"filename": name, "captions": c}).to_string());
        jsonl.push('\n');
    }
    std::fs::write(dir.join("captions.jsonl"), jsonl).unwrap();
    let model = tiny_clip("tiny-a");
    let data = format!("rsicd:{}", dir.display());
    let r = skyscribe_env(
        &[
            "eval",
            "retrieval",
            "--data",
            &data,
            "--model",
            s(&model),
            "--jsonl",
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    let summary = &lines.last().unwrap()["summary"];

    // The same ranks from `embed`'s vectors, by brute force.
    let mut args = vec!["embed", "--model", s(&model), "--jsonl"];
    let texts: Vec<&str> = captions.iter().flatten().copied().collect();
    for t in &texts {
        args.extend(["--text", t]);
    }
    args.extend(paths.iter().map(|p| s(p)));
    let e = skyscribe(&args);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let vecs: Vec<Vec<f32>> = json_lines(&e.stdout)
        .iter()
        .map(|l| crate::common::floats(&l["embedding"]))
        .collect();
    let (tv, iv) = vecs.split_at(texts.len());
    let owner: Vec<usize> = captions
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i, c.len()))
        .collect();
    let cos = crate::common::cosine;
    let mut i2t = vec![0usize; iv.len()];
    for (i, img) in iv.iter().enumerate() {
        let best = (0..tv.len())
            .filter(|&t| owner[t] == i)
            .map(|t| cos(img, &tv[t]))
            .fold(f32::MIN, f32::max);
        i2t[i] = 1
            + (0..tv.len())
                .filter(|&t| cos(img, &tv[t]) > best + 1e-6)
                .count();
    }
    let mut t2i = vec![0usize; tv.len()];
    for (t, txt) in tv.iter().enumerate() {
        let own = cos(&iv[owner[t]], txt);
        t2i[t] = 1
            + (0..iv.len())
                .filter(|&i| cos(&iv[i], txt) > own + 1e-6)
                .count();
    }
    for (i, l) in lines[..5].iter().enumerate() {
        assert_eq!(l["i2t_rank"].as_u64(), Some(i2t[i] as u64), "image {i}");
    }
    let at = |r: &[usize], k: usize| r.iter().filter(|&&x| x <= k).count() as f64 / r.len() as f64;
    for (key, want) in [
        ("i2t_r1", at(&i2t, 1)),
        ("i2t_r5", at(&i2t, 5)),
        ("t2i_r1", at(&t2i, 1)),
        ("t2i_r5", at(&t2i, 5)),
    ] {
        assert!(
            (summary[key].as_f64().unwrap() - want).abs() < 1e-9,
            "{key}: {} vs {want}",
            summary[key]
        );
    }
    // With five images, every hit is in the top 5 and top 10.
    assert_eq!(summary["i2t_r10"], 1.0);
    assert_eq!(summary["t2i_r5"], 1.0);
    let mean: f64 = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
        .iter()
        .map(|k| summary[k].as_f64().unwrap())
        .sum::<f64>()
        / 6.0;
    assert!((summary["mean_recall"].as_f64().unwrap() - mean).abs() < 1e-12);
}

/// The Slurm path on a real Slurm: `deploy/slurm/index.sbatch` as a 3-task job array equals a
/// one-process build. Needs a running cluster: `scripts/checks/slurm-check.sh` starts a one-node one,
/// sets SKYSCRIBE_SLURM=1 and runs this test (`.ci/run` calls it).
#[test]
fn a_slurm_job_array_builds_the_same_index_as_one_process() {
    if std::env::var("SKYSCRIBE_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED a_slurm_job_array_builds_the_same_index_as_one_process: needs a Slurm \
             cluster (scripts/checks/slurm-check.sh starts one and runs this test)"
        );
        return;
    }
    let (dir, images, _, model) = archive("index-slurm", 30);
    let whole = dir.join("whole");
    build(&whole, &model, &[], &[&images]);
    let index = dir.join("slurm");
    let out = Command::new("sbatch")
        .args(["--array=0-2", "--wait", "--quiet"])
        .arg(format!("--output={}/task-%a.out", dir.display()))
        .arg(crate::common::repo().join("deploy/slurm/index.sbatch"))
        .args([s(&index), s(&images)])
        .env("SKYSCRIBE", env!("CARGO_BIN_EXE_skyscribe"))
        .env("SKYSCRIBE_MODEL", &model)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("sbatch could not be started");
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(dir.join(format!("task-{i}.out"))).unwrap_or_default())
        .collect();
    assert!(
        out.status.success(),
        "sbatch: {}\n{logs}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert!(
            logs.contains(&format!("shard {i}/3:")),
            "task {i} did not build shard {i}/3:\n{logs}"
        );
    }
    let meta = skyscribe::index::IndexMeta::read(&index).unwrap();
    assert_eq!((meta.shards, meta.parts_complete, meta.count), (3, 3, 30));
    let (a, b) = (index_rows(&index), index_rows(&whole));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.id, y.id);
        assert!(crate::common::max_abs_diff(&x.embedding, &y.embedding) < 1e-6);
    }
    assert_eq!(top(&index, "a red square"), top(&whole, "a red square"));
}

#[test]
fn the_hnsw_graph_answers_like_exact_search_until_the_parts_change() {
    let (dir, images, paths, model) = archive("index-ann", 40);
    let index = dir.join("ix");
    build(&index, &model, &[], &[&images]);
    let ix = s(&index);
    let search = |engine: &str| {
        skyscribe(&[
            "search",
            "--index",
            ix,
            "--text",
            "red and green",
            "--top-k",
            "5",
            "--jsonl",
            "--engine",
            engine,
        ])
    };
    let r = search("ann");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("index optimize"), "{}", r.stderr);
    let o = skyscribe(&["index", "optimize", "--index", ix, "--jsonl"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(json_lines(&o.stdout)[0]["rows"], 40);
    let (exact, ann) = (search("exact"), search("ann"));
    assert_eq!(ann.code, 0, "{}", ann.stderr);
    let ids = |r: &Run| id_scores(&r.stdout);
    // Forty vectors: the graph finds the exact answer.
    let (e, a) = (ids(&exact), ids(&ann));
    assert_eq!(
        e.iter().map(|x| &x.0).collect::<Vec<_>>(),
        a.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for (x, y) in e.iter().zip(&a) {
        assert!((x.1 - y.1).abs() < 1e-5);
    }
    let names = |r: &Run| ids(r).into_iter().map(|x| x.0).collect::<Vec<_>>();
    // Optimize measured the graph's recall (forty vectors: all found) and says auto uses it.
    let made = &json_lines(&o.stdout)[0];
    assert_eq!(made["recall"]["recall_at_10"], 1.0);
    assert_eq!(made["recall"]["ef"], 128);
    assert!(!made["files"].as_array().unwrap().is_empty());
    let info = skyscribe(&["index", "info", "--index", ix]);
    assert!(info.stdout.contains("recall@10 1.000"), "{}", info.stdout);
    assert!(
        info.stdout.contains("`search --engine auto` uses it"),
        "{}",
        info.stdout
    );
    let info = skyscribe(&["index", "info", "--index", ix, "--jsonl"]);
    assert_eq!(
        json_lines(&info.stdout)[0]["ann"]["recall"]["recall_at_10"],
        1.0
    );
    assert!(!search("auto").stderr.contains("exactly"));

    // A graph whose measured recall is under 0.95 is not used by auto (said), only by --engine ann.
    let ann_json = index.join("ann/ann.json");
    let good_json = std::fs::read_to_string(&ann_json).unwrap();
    let mut low: serde_json::Value = serde_json::from_str(&good_json).unwrap();
    low["recall"]["recall_at_10"] = serde_json::json!(0.5);
    std::fs::write(&ann_json, low.to_string()).unwrap();
    let auto = search("auto");
    assert_eq!(auto.code, 0, "{}", auto.stderr);
    assert!(
        auto.stderr.contains("recall@10 measured at build is 0.500"),
        "{}",
        auto.stderr
    );
    assert_eq!(names(&auto), names(&exact));
    let info = skyscribe(&["index", "info", "--index", ix]);
    assert!(
        info.stdout.contains("searches exactly (under 0.95)"),
        "{}",
        info.stdout
    );
    std::fs::write(&ann_json, &good_json).unwrap();

    // A graph file cut short: auto searches exactly and names the file; --engine ann refuses.
    let data = index.join("ann/graph.bin");
    let whole = std::fs::read(&data).unwrap();
    std::fs::write(&data, &whole[..whole.len() / 2]).unwrap();
    let auto = search("auto");
    assert_eq!(auto.code, 0, "{}", auto.stderr);
    assert!(auto.stderr.contains("damaged"), "{}", auto.stderr);
    assert!(auto.stderr.contains("graph.bin"), "{}", auto.stderr);
    assert_eq!(names(&auto), names(&exact));
    let r = search("ann");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    // The same size but links past the last row (a file of another index copied over it):
    // found when the graph is loaded, not when a search walks off the end.
    let mut foreign = whole.clone();
    let last = foreign.len() - 4;
    foreign[last..].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&data, &foreign).unwrap();
    let auto = search("auto");
    assert!(auto.stderr.contains("past the end"), "{}", auto.stderr);
    assert_eq!(names(&auto), names(&exact));
    std::fs::write(&data, &whole).unwrap();

    // A graph an older skyscribe made (hnsw_rs's files): not read, and optimize is asked for.
    let mut old: serde_json::Value = serde_json::from_str(&good_json).unwrap();
    old["engine"] = serde_json::json!("hnsw_rs 0.3 (HNSW, inner product on unit vectors)");
    std::fs::write(&ann_json, old.to_string()).unwrap();
    let auto = search("auto");
    assert!(auto.stderr.contains("older skyscribe"), "{}", auto.stderr);
    assert_eq!(names(&auto), names(&exact));
    let r = search("ann");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("index optimize"), "{}", r.stderr);
    std::fs::write(&ann_json, &good_json).unwrap();

    // An optimize killed half-way leaves its temporary folder beside the graph, never in it:
    // the graph in place is still used, and the next optimize clears the leftover.
    let leftover = index.join(".ann.999999-0.tmp");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("graph.bin"), &whole[..100]).unwrap();
    let auto = search("auto");
    assert_eq!(
        (auto.code, names(&auto)),
        (0, names(&exact)),
        "{}",
        auto.stderr
    );
    assert!(!auto.stderr.contains("exactly"), "{}", auto.stderr);
    let o = skyscribe(&["index", "optimize", "--index", ix]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !leftover.exists(),
        "the killed optimize's folder is still there"
    );

    // A changed file makes the graph stale: auto falls back to exact and says so.
    std::fs::copy(&paths[1], &paths[0]).unwrap();
    build(&index, &model, &[], &[&images]);
    let auto = search("auto");
    assert_eq!(auto.code, 0, "{}", auto.stderr);
    assert!(auto.stderr.contains("stale"), "{}", auto.stderr);
    assert_eq!(search("ann").code, 2);
}

/// `index build --dtype f16`: the matrix search reads holds two bytes a value, every score is
/// within half precision's rounding of the f32 index's, the order differs only among scores that
/// close, and a build asking another dtype of an existing index is refused.
#[test]
fn an_f16_index_halves_the_matrix_and_ranks_as_f32_does() {
    let (dir, images, _, model) = archive("index-f16", 40);
    let (ix32, ix16) = (dir.join("ix32"), dir.join("ix16"));
    build(&ix32, &model, &[], &[&images]);
    let made = build(&ix16, &model, &["--dtype", "f16"], &[&images]);
    assert_eq!(made["rows"], 40);
    let meta = read_json(&ix16.join("index.json"));
    assert_eq!(meta["dtype"], "f16");
    let dim = meta["dim"].as_u64().unwrap();
    let parts_dir = ix16.join("parts");
    let matrix = parts_dir.join("_part-0-of-1.f16");
    assert_eq!(std::fs::metadata(&matrix).unwrap().len(), 40 * dim * 2);
    assert!(!parts_dir.join("_part-0-of-1.f32").exists());
    assert_eq!(
        std::fs::metadata(ix32.join("parts/_part-0-of-1.f32"))
            .unwrap()
            .len(),
        40 * dim * 4
    );

    let all = |index: &Path, engine: &str| hits(index, "red and green", 40, engine);
    let (full, half) = (all(&ix32, "exact"), all(&ix16, "exact"));
    assert_eq!(half.len(), 40);
    let score32 = |id: &str| full.iter().find(|x| x.0 == id).unwrap().1;
    // A unit vector's values rounded to f16 move a cosine by at most 2^-11 ≈ 0.00049.
    let worst = half
        .iter()
        .map(|(id, s16)| (s16 - score32(id)).abs())
        .fold(0f64, f64::max);
    assert!(worst < 1e-3, "an f16 score is {worst} from its f32 one");
    assert!(worst > 0.0, "the f16 index holds unrounded values");
    for (i, a) in half.iter().enumerate() {
        for b in &half[i + 1..] {
            assert!(
                score32(&a.0) + 1e-3 >= score32(&b.0),
                "{} ranks before {} in f16, but is far behind it in f32",
                a.0,
                b.0
            );
        }
    }

    // Another dtype than the index's is refused; none keeps the index's.
    let r = build_run(&ix16, &model, &["--dtype", "f32"], &[&images]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("stores its vectors as f16, not f32"),
        "{}",
        r.stderr
    );
    let again = build(&ix16, &model, &[], &[&images]);
    assert_eq!(
        (again["reused"].as_u64(), again["encoded"].as_u64()),
        (Some(40), Some(0))
    );
    assert_eq!(read_json(&ix16.join("index.json"))["dtype"], "f16");
    let info = skyscribe(&["index", "info", "--index", s(&ix16)]);
    assert!(
        info.stdout
            .contains(&format!("(f16, {} bytes a vector searched)", 2 * dim)),
        "{}",
        info.stdout
    );
    let r = build_run(
        &dir.join("ix-bad"),
        &model,
        &["--dtype", "bf16"],
        &[&images],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("f32 or f16"), "{}", r.stderr);

    // The graph over an f16 index answers as its exact search does.
    let o = skyscribe(&["index", "optimize", "--index", s(&ix16), "--jsonl"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let names = |hits: &[(String, f64)]| hits.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&all(&ix16, "ann")[..10]), names(&half[..10]));

    // A matrix cut short is damaged, named with what it lacks.
    let whole = std::fs::read(&matrix).unwrap();
    std::fs::write(&matrix, &whole[..whole.len() - 2]).unwrap();
    let r = skyscribe(&[
        "search",
        "--index",
        s(&ix16),
        "--text",
        "red",
        "--engine",
        "exact",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains(&format!("40 rows of {dim} f16 need {}", 40 * dim * 2)),
        "{}",
        r.stderr
    );
}

#[test]
fn jpeg_draft_is_opt_in_and_keyed_apart() {
    let model = tiny_clip("tiny-a");
    // 480 × 360: decodes at 1/8 for tiny-a.
    let big = fixtures().join("preprocess-draft/inputs/dota-420.jpg");
    let small = fixtures().join("images/river.webp"); // not a JPEG: decoded in full either way
    let embed = |extra: &[&str]| -> Vec<Vec<f32>> {
        let mut args = vec!["embed", "--model", s(&model), "--jsonl"];
        args.extend(extra);
        args.extend([s(&big), s(&small)]);
        let r = skyscribe(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        json_lines(&r.stdout)
            .iter()
            .map(|l| floats(&l["embedding"]))
            .collect()
    };
    let (full, draft) = (embed(&[]), embed(&["--jpeg-draft"]));
    assert_ne!(full[0], draft[0], "--jpeg-draft changed nothing");
    let c = cosine(&full[0], &draft[0]);
    assert!(c > 0.9, "draft embedding cosine {c}");
    assert_eq!(full[1], draft[1]);

    // An index built with it says so, and reads query images the same way.
    let dir = scratch("index-jpeg-draft");
    let index = dir.join("ix");
    build(&index, &model, &["--jpeg-draft"], &[&big, &small]);
    assert_eq!(read_json(&index.join("index.json"))["jpeg_draft"], true);
    let r = skyscribe(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&big),
        "--top-k",
        "1",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hit = json_lines(&r.stdout).remove(0);
    assert_eq!(hit["id"], "dota-420.jpg");
    assert!(hit["score"].as_f64().unwrap() > 0.9999, "{hit}");
    // Its vectors are not those of a full decode: adding to it without the option is refused.
    let r = build_run(&index, &model, &[], &[&big]);
    assert_ne!(r.code, 0, "a full-decode build joined a draft index");

    let r = skyscribe(&["locate", "--jpeg-draft", "--text", "a ship", s(&big)]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--jpeg-draft does not apply to locate"),
        "{}",
        r.stderr
    );
}

/// A float32 `.npy` (format 1.0) of `rows` × `dim`, written as numpy's `np.save` writes it.
fn write_npy(path: &Path, descr: &str, values: &[u8], rows: usize, dim: usize) {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, then '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bench_measures_search_over_vectors_from_a_npy_file() {
    let dir = scratch("bench-npy");
    let (n, dim) = (300, 8);
    // Unnormalised rows (they are normalised on load): a few clusters.
    let mut state = 12345u64;
    let x: Vec<f32> = (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let base = dir.join("base.npy");
    write_npy(&base, "<f4", &bytes, n, dim);
    let queries = dir.join("queries.npy");
    write_npy(&queries, "<f4", &bytes[..5 * dim * 4], 5, dim);
    // `bench --jsonl` over these vectors and queries, with `extra`.
    let bench_over = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--search-vectors-file",
            s(&base),
            "--search-queries-file",
            s(&queries),
            "--jsonl",
        ];
        args.extend(extra);
        skyscribe(&args)
    };
    let r = bench_over(&["--ann"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    // Exact, one line per ef (32, 64, 128, 256), then the summary at the default ef.
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    assert_eq!(lines[0]["vectors"], 300);
    assert_eq!(lines[0]["queries"], 5);
    let summary = &lines[5]["summary"];
    for key in [
        "vectors",
        "dim",
        "engine",
        "build_s",
        "recall_at_10",
        "p50_ms",
        "p95_ms",
        "bytes_per_vector",
    ] {
        assert!(!summary[key].is_null(), "no {key} in {summary}");
    }
    assert_eq!(summary["engine"], "ann");
    assert_eq!(summary["dim"], 8);
    assert_eq!(summary["recall_at_10"], lines[3]["recall_at_10"]);
    // Three hundred vectors: the graph finds every true neighbour.
    assert_eq!(summary["recall_at_10"], 1.0);

    // Not float32, not a matrix, a zero row: refused naming the file.
    let f64s = dir.join("f64.npy");
    let wide: Vec<u8> = x.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
    write_npy(&f64s, "<f8", &wide, n, dim);
    let r = skyscribe(&["bench", "--search-vectors-file", s(&f64s)]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("f64.npy: dtype '<f8'; want float32"),
        "{}",
        r.stderr
    );
    let zero = dir.join("zero.npy");
    write_npy(&zero, "<f4", &vec![0u8; 2 * dim * 4], 2, dim);
    let r = skyscribe(&["bench", "--search-vectors-file", s(&zero)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("zero.npy: row 0 is zero"), "{}", r.stderr);
    let r = skyscribe(&["bench", "--search-queries-file", s(&queries)]);
    assert_eq!(r.code, 2);

    // The same vectors stored as f16: two bytes a value, and the share of the f32 exact top 10
    // it keeps is measured (8-d rows rounded to f16 keep nearly all of it).
    let r = bench_over(&["--search-dtype", "f16"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[0]["dtype"], "f16");
    assert_eq!(lines[0]["matrix_bytes_per_vector"], 16.0);
    let agreement = lines[0]["top10_agreement_with_f32"].as_f64().unwrap();
    assert!((0.9..=1.0).contains(&agreement), "{agreement}");
    let summary = &lines[1]["summary"];
    assert_eq!(
        (&summary["engine"], &summary["dtype"]),
        (&serde_json::json!("exact"), &serde_json::json!("f16"))
    );
    assert_eq!(summary["recall_at_10"].as_f64(), Some(agreement));
    let r = skyscribe(&["bench", "--search-index", s(&dir), "--search-dtype", "f16"]);
    assert_eq!(r.code, 2);
    let r = skyscribe(&["bench", "--search-dtype", "f16"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--search-dtype goes with"),
        "{}",
        r.stderr
    );
}
