//! Every command line in the book runs as written. Each chapter's ```` ```sh ```` blocks run in
//! order, in one bash (variables carry from block to block, as in a reader's shell), from a
//! folder that looks like the repository's root (its top-level entries linked) but keeps what
//! the commands write, with the shared data in `SKYSCRIBE_DATA` and no network.
//!
//! A block the test cannot run says why in its fence, ```` ```sh,network ```` and the like (see
//! [`NOT_RUN`]); the book's text beside it says so too. The CLI's own parser still reads every
//! `skyscribe` line of those (`src/cli/mod.rs`).
//!
//! Two stand-ins, both here and nowhere else: `cargo run --release -- ARGS` runs the binary this
//! test run built (the same program, built without `--release`), and the serving chapter's port
//! 8080 becomes a free one (`SKYSCRIBE_ADDR` for the server, the URLs rewritten for its
//! clients), so that parallel tests do not collide.

use std::path::{Path, PathBuf};

use crate::common::repo;

/// Fence tags of blocks that are not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("network", "downloads models or packages from the internet"),
    ("build", "builds the project (cargo, maturin); .ci/run does"),
    (
        "benchmark",
        "minutes of measurement beside Python reference runtimes",
    ),
    ("cluster", "needs a Slurm cluster or Kubernetes"),
    ("gpu", "needs an NVIDIA GPU"),
];

/// Languages a fence may name: `sh` blocks are commands, the rest are shown, not run (Python
/// blocks run in the Python package's tests: python/tests/test_book.py).
const LANGUAGES: &[&str] = &["", "sh", "text", "json", "python", "sql", "toml"];

#[derive(Debug)]
struct Block {
    line: usize,
    language: String,
    tag: Option<String>,
    text: String,
}

/// The fenced code blocks of a Markdown file.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => out.push(block),
                None => {
                    let mut parts = info.trim().split(',');
                    let language = parts.next().unwrap_or("").to_string();
                    let tag = parts.next().map(str::to_string);
                    open = Some(Block {
                        line: i + 1,
                        language,
                        tag,
                        text: String::new(),
                    });
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.text.push_str(line);
            block.text.push('\n');
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    out
}

fn chapters() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// The chapters whose commands a test below runs; a chapter with runnable blocks and no test
/// fails [`every_block_is_run_or_says_why_not`].
const RUN: &[&str] = &[
    "getting-started.md",
    "labels.md",
    "evaluation.md",
    "classifiers.md",
    "captions.md",
    "training.md",
    "search.md",
    "scenes.md",
    "serving.md",
    "models.md",
    "mini-models.md",
];

#[test]
fn every_block_is_run_or_says_why_not() {
    let mut problems = Vec::new();
    let mut runnable = 0;
    for file in chapters() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut has_runnable = false;
        for b in blocks(&text) {
            let at = format!("docs/src/{name}:{}", b.line);
            if !LANGUAGES.contains(&b.language.as_str()) {
                problems.push(format!("{at}: fence language `{}`", b.language));
            }
            match (&b.language[..], &b.tag) {
                ("sh", None) => {
                    has_runnable = true;
                    runnable += 1;
                }
                ("sh", Some(tag)) if !NOT_RUN.iter().any(|(t, _)| t == tag) => {
                    problems.push(format!("{at}: unknown tag `{tag}`"))
                }
                _ => {}
            }
        }
        if has_runnable && !RUN.contains(&name.as_str()) {
            problems.push(format!("docs/src/{name} has commands no test runs"));
        }
        if !has_runnable && RUN.contains(&name.as_str()) {
            problems.push(format!(
                "docs/src/{name} is in RUN but has no runnable block"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(runnable >= 15, "only {runnable} runnable blocks found");
}

#[test]
fn fences_are_read_as_mdbook_reads_them() {
    let b = blocks("a\n```sh\nx=1\necho $x\n```\n\n```sh,network\ncurl x\n```\n```\nplain\n```\n");
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].line, &b[0].language[..], &b[0].tag), (2, "sh", &None));
    assert_eq!(b[0].text, "x=1\necho $x\n");
    assert_eq!(b[1].tag.as_deref(), Some("network"));
    assert_eq!(b[2].language, "");
}

/// A free loopback port (the OS's choice, released before the server takes it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the runnable blocks of `docs/src/CHAPTER` as one bash script; returns the folder it ran
/// in, for the caller to check what was made.
fn run_chapter(chapter: &str) -> Option<PathBuf> {
    let test = format!("book {chapter}");
    let data = crate::common::data_root(&test)?;
    let text = std::fs::read_to_string(repo().join("docs/src").join(chapter)).unwrap();
    let mut script = String::from(
        // A server a chapter started stops with the script, even when a command fails.
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
         cargo() { if [ \"$1 $2 $3\" = 'run --release --' ]; then shift 3; skyscribe \"$@\"; \
         else echo \"book test: cargo $* is not run here\" >&2; return 1; fi; }\n",
    );
    for b in blocks(&text) {
        if b.language == "sh" && b.tag.is_none() {
            script.push_str(&format!("# docs/src/{chapter}:{}\n", b.line));
            script.push_str(&b.text);
        }
    }
    // The server's port: a free one, given to `serve` through SKYSCRIBE_ADDR and to the clients.
    let port = free_port();
    let script = script.replace("8080", &port.to_string());
    let stem = chapter.trim_end_matches(".md");
    let dir = crate::common::scratch(&format!("book-{stem}"));
    // The repository's root as a reader sees it, without its build outputs.
    for entry in std::fs::read_dir(repo()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name != "target" && name != ".git" {
            std::os::unix::fs::symlink(&path, dir.join(name)).unwrap();
        }
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_skyscribe")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // One embedding cache for every chapter: what one chapter embedded, the next reads.
    let cache = repo().join("target/test-scratch/book-cache");
    let out = std::process::Command::new("bash")
        .args(["-euxo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .env("PATH", &path)
        .env("SKYSCRIBE_DATA", &data)
        .env("SKYSCRIBE_CACHE", &cache)
        .env("SKYSCRIBE_PROGRESS_EVERY", "0")
        .env("HF_HUB_OFFLINE", "1")
        .env("SKYSCRIBE_ADDR", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the commands of docs/src/{chapter} stopped ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

/// Asserts that `dir` holds each of `files` after a chapter ran.
fn made(dir: &Path, files: &[&str]) {
    for f in files {
        assert!(dir.join(f).exists(), "the chapter's commands made no {f}");
    }
}

#[test]
fn getting_started_runs() {
    run_chapter("getting-started.md");
}

#[test]
fn labels_runs() {
    run_chapter("labels.md");
}

#[test]
fn evaluation_runs() {
    if let Some(dir) = run_chapter("evaluation.md") {
        made(dir.as_path(), &["report/report.md", "bench/results.md"]);
    }
}

#[test]
fn classifiers_runs() {
    if let Some(dir) = run_chapter("classifiers.md") {
        made(
            &dir,
            &["eurosat.safetensors", "areas.safetensors", "areas-map.tif"],
        );
    }
}

#[test]
fn captions_runs() {
    if let Some(dir) = run_chapter("captions.md") {
        made(
            &dir,
            &["predictions.jsonl", "captioner-mini/model.safetensors"],
        );
    }
}

#[test]
fn training_runs() {
    if let Some(dir) = run_chapter("training.md") {
        made(
            &dir,
            &["clip-mini/config.json", "clip-mini-f16/model.safetensors"],
        );
    }
}

#[test]
fn search_runs() {
    if let Some(dir) = run_chapter("search.md") {
        made(
            &dir,
            &[
                "idx/index.json",
                "idx/ann",
                "sheet.html",
                "heat",
                "retrieval/summary.json",
            ],
        );
    }
}

#[test]
fn scenes_runs() {
    if let Some(dir) = run_chapter("scenes.md") {
        made(&dir, &["mosaic.geojson", "mosaic.tif", "forest.png"]);
    }
}

#[test]
fn serving_runs() {
    run_chapter("serving.md");
}

#[test]
fn models_runs() {
    if let Some(dir) = run_chapter("models.md") {
        made(&dir, &["tiny-openclip/config.json"]);
    }
}

#[test]
fn mini_models_runs() {
    run_chapter("mini-models.md");
}
