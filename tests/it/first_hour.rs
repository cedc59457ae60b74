//! A new user's first hour: defaults that give the model's best answer, refusals instead of
//! silent changes, and output a person reads.

use std::path::{Path, PathBuf};

use crate::common::{self, *};

fn sample() -> String {
    repo()
        .join("assets/samples/eurosat-river.jpg")
        .display()
        .to_string()
}

fn tiny() -> String {
    tiny_clip("tiny-a").display().to_string()
}

fn refused(r: &Run, what: &str) {
    assert_eq!(r.code, 2, "expected a refusal: {}", r.stderr);
    assert!(r.stderr.contains(what), "expected {what:?} in {}", r.stderr);
    assert!(r.stdout.is_empty(), "nothing is printed: {}", r.stdout);
}

#[test]
fn options_that_make_no_sense_are_refused_at_start() {
    let s = sample();
    let t = tiny();
    let cases: [(&[&str], &str); 13] = [
        (
            &[
                "labels", "--model", &t, "--labels", "a,b", "--top-k", "0", &s,
            ],
            "--top-k",
        ),
        (
            &[
                "labels",
                "--model",
                &t,
                "--labels",
                "a,b",
                "--batch-size",
                "0",
                &s,
            ],
            "--batch-size",
        ),
        (&["describe", "--top-k", "0", &s], "--top-k"),
        (
            &["caption", "--decode", "beam", "--beam-size", "0", &s],
            "--beam-size",
        ),
        (&["caption", "--temperature=-1", &s], "--temperature"),
        // Options of another decoding than the one run are refused, not ignored.
        (&["caption", "--top-p", "0.9", &s], "--decode sample"),
        (
            &["caption", "--decode", "beam", "--seed", "3", &s],
            "--seed is for --decode sample",
        ),
        (
            &["caption", "--decode", "sample", "--beam-size", "3", &s],
            "--beam-size is for --decode beam",
        ),
        (
            &["caption", "--temperature", "0.5", &s],
            "--temperature is for --decode beam or sample",
        ),
        // A patch larger than the image (the sample is 64 × 64 px).
        (
            &["locate", "--text", "a river", "--patch", "128", &s],
            "64×64",
        ),
        (
            &[
                "labels", "--model", &t, "--labels", "a,b", "--bands", "4,3", &s,
            ],
            "three",
        ),
        (
            &[
                "labels", "--model", &t, "--labels", "a,b", "--bands", "0,1,2", &s,
            ],
            "numbered from 1",
        ),
        (
            &["embed", "--model", &t, "--bands", "x", &s],
            "not a band number",
        ),
    ];
    for (args, what) in cases {
        refused(&skyscribe(args), what);
    }
}

#[test]
fn caption_defaults_to_the_built_in_captioner_and_temperature_zero_is_greedy() {
    let s = sample();
    let greedy = skyscribe(&["caption", "--jsonl", &s]);
    assert_eq!(greedy.code, 0, "{}", greedy.stderr);
    let caption = json_lines(&greedy.stdout)[0]["caption"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(caption.ends_with('.') && caption.len() > 10, "{caption:?}");
    let cold = skyscribe(&[
        "caption",
        "--jsonl",
        "--decode",
        "sample",
        "--temperature",
        "0",
        "--seed",
        "3",
        &s,
    ]);
    assert_eq!(cold.code, 0, "{}", cold.stderr);
    assert_eq!(json_lines(&cold.stdout)[0]["caption"], caption.as_str());
}

#[test]
fn a_captioner_refuses_a_clip_it_was_not_trained_on() {
    let s = sample();
    // Another width: never usable.
    let r = skyscribe(&["caption", "--model", &tiny(), &s]);
    refused(&r, "wide");
    // The same model in another precision: a different file, so a different model to the
    // captioner's check; refused unless --force-clip.
    let dir = scratch("other-clip");
    let other = dir.join("mini-f32");
    let r = skyscribe(&[
        "export",
        "--from",
        "skyscribe-mini",
        "--to",
        other.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        other.join("skyscribe.json").is_file(),
        "defaults travel with the model"
    );
    let o = other.to_str().unwrap();
    refused(&skyscribe(&["caption", "--model", o, &s]), "--force-clip");
    refused(
        &skyscribe(&[
            "describe",
            "--model",
            o,
            "--captioner",
            "skyscribe-mini-captioner",
            &s,
        ]),
        "--force-clip",
    );
    let forced = skyscribe(&["caption", "--model", o, "--force-clip", "--jsonl", &s]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    // The exported copy is the same model: the same labels, to f16 rounding.
    let a = skyscribe(&["labels", "--labels", "rsicd", "--jsonl", &s]);
    let b = skyscribe(&["labels", "--model", o, "--labels", "rsicd", "--jsonl", &s]);
    let first = |r: &Run| json_lines(&r.stdout)[0]["labels"][0]["label"].clone();
    assert_eq!(first(&a), first(&b));
}

#[test]
fn the_models_own_templates_are_the_default_and_are_named() {
    let s = sample();
    let implicit = skyscribe(&["labels", "--labels", "rsicd", "--jsonl", &s]);
    assert_eq!(implicit.code, 0, "{}", implicit.stderr);
    assert!(
        implicit.stderr.contains("skyscribe.json") && implicit.stderr.contains("this is a {} ."),
        "{}",
        implicit.stderr
    );
    let explicit = skyscribe(&[
        "labels",
        "--labels",
        "rsicd",
        "--template",
        "this is a {} .",
        "--jsonl",
        &s,
    ]);
    assert_eq!(implicit.stdout, explicit.stdout);
    assert!(
        explicit.stderr.contains("--template"),
        "{}",
        explicit.stderr
    );
    // A model without skyscribe.json keeps CLIP's default.
    let plain = skyscribe(&["labels", "--model", &tiny(), "--labels", "a,b", &s]);
    assert!(plain.stderr.contains("CLIP's default"), "{}", plain.stderr);
    // describe takes --labels and --template too; its vocabulary can say "river".
    let d = skyscribe(&[
        "describe",
        "--labels",
        "river,forest,highway",
        "--template",
        "a satellite photo of {}.",
        "--no-caption",
        "--jsonl",
        &s,
    ]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(
        json_lines(&d.stdout)[0]["labels"].as_array().unwrap().len(),
        3
    );
    let vocab = skyscribe(&["describe", "--top-k", "100", "--no-caption", "--jsonl", &s]);
    let labels: Vec<String> = json_lines(&vocab.stdout)[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap().to_string())
        .collect();
    assert!(labels.iter().any(|l| l == "river"), "{labels:?}");
}

#[test]
fn json_lines_start_with_the_input() {
    let s = sample();
    let r = skyscribe(&[
        "embed",
        "--model",
        &tiny(),
        "--text",
        "a harbor",
        "--jsonl",
        &s,
    ]);
    for line in r.stdout.lines() {
        assert!(line.starts_with("{\"input\":"), "{line}");
    }
    let r = skyscribe(&[
        "labels",
        "--model",
        &tiny(),
        "--labels",
        "a,b",
        "--jsonl",
        &s,
    ]);
    let line = r.stdout.lines().next().unwrap();
    assert!(line.starts_with("{\"input\":"), "{line}");
    // Scores are f32 and print as f32, without f64 digits.
    let score = line.split("\"score\":").nth(1).unwrap();
    let digits: String = score
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    assert!(digits.len() <= 12, "{digits}");
}

#[test]
fn an_evaluation_of_only_unreadable_images_has_no_summary() {
    let dir = scratch("all-unreadable");
    let bad = dir.join("bad.jpg");
    std::fs::write(&bad, "not an image").unwrap();
    let list = dir.join("set.jsonl");
    std::fs::write(
        &list,
        format!(
            "{{\"image\": \"{}\", \"labels\": [\"a\"]}}\n{{\"image\": \"{}\", \"labels\": [\"b\"]}}\n",
            bad.display(),
            bad.display()
        ),
    )
    .unwrap();
    let dataset = format!("jsonl:{}", list.display());
    let r = skyscribe(&[
        "eval",
        "zero-shot",
        "--model",
        &tiny(),
        "--dataset",
        &dataset,
        "--labels",
        "a,b",
        "--no-cache",
        "--jsonl",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stdout.contains("summary"), "{}", r.stdout);
    assert!(r.stderr.contains("none of the 2 images"), "{}", r.stderr);
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn caption_scores_say_what_they_cover_and_refuse_duplicates() {
    let dir = scratch("partial-predictions");
    let refs = write(
        &dir.join("refs.jsonl"),
        "{\"filename\": \"a.jpg\", \"captions\": [\"a plane on a runway .\"]}\n\
         {\"filename\": \"b.jpg\", \"captions\": [\"a ship in a port .\"]}\n\
         {\"filename\": \"c.jpg\", \"captions\": [\"trees in a forest .\"]}\n",
    );
    let partial = write(
        &dir.join("partial.jsonl"),
        "{\"input\": \"x/a.jpg\", \"caption\": \"a plane on a runway .\"}\n",
    );
    let r = skyscribe(&[
        "eval",
        "captions",
        "--predictions",
        partial.to_str().unwrap(),
        "--references",
        refs.to_str().unwrap(),
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("2 of the 3 reference images"),
        "{}",
        r.stderr
    );
    let last = json_lines(&r.stdout).pop().unwrap();
    assert_eq!(last["images"], 1);
    assert_eq!(last["references_without_prediction"], 2);
    let twice = write(
        &dir.join("twice.jsonl"),
        "{\"input\": \"x/a.jpg\", \"caption\": \"a plane .\"}\n\
         {\"input\": \"y/a.jpg\", \"caption\": \"a runway .\"}\n",
    );
    let r = skyscribe(&[
        "eval",
        "captions",
        "--predictions",
        twice.to_str().unwrap(),
        "--references",
        refs.to_str().unwrap(),
    ]);
    refused(&r, "second prediction for a.jpg");
}

#[test]
fn nearest_neighbour_captions_default_to_the_built_in_clip() {
    let Some(data) = common::data_root("nearest_neighbour_default") else {
        return;
    };
    // Three test images captioned from three training images, without --clip.
    let pick = |split: &str, name: &str| -> PathBuf {
        let dir = scratch(name);
        let src = data.join("rsicd").join(split);
        let text = std::fs::read_to_string(src.join("captions.jsonl")).unwrap();
        let mut lines = Vec::new();
        for line in text.lines().take(3) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let f = v["filename"].as_str().unwrap();
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
            lines.push(line.to_string());
        }
        std::fs::write(dir.join("captions.jsonl"), lines.join("\n")).unwrap();
        dir
    };
    let (train, test) = (pick("train", "nn-train"), pick("test", "nn-test"));
    let r = skyscribe(&[
        "eval",
        "captions",
        "--nearest-neighbour",
        &format!("rsicd:{}", train.display()),
        "--data",
        &format!("rsicd:{}", test.display()),
        "--no-cache",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout).pop().unwrap()["images"], 3);
}
