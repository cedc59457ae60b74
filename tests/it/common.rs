//! Helpers shared by the integration tests: running the binary, fixture models, the shared
//! data folder, JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run of the `skyscribe` binary printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `skyscribe ARGS` offline; a panic is a test failure whatever the test expects.
pub fn skyscribe(args: &[&str]) -> Run {
    skyscribe_env(args, &[])
}

/// [`skyscribe`] with extra environment variables.
pub fn skyscribe_env(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skyscribe"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    r
}

pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The shared data folder (`SKYSCRIBE_DATA` or `../shared/data`), or `None` when it is absent:
/// the test then says loudly that it skipped. Under `CI=true` a missing data set fails the run
/// instead: CI must not pass by skipping what it is meant to check.
pub fn data_root(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("SKYSCRIBE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"));
    if root.join("eurosat").is_dir() {
        return Some(root);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: no data folder at {} (set SKYSCRIBE_DATA); CI=true requires the shared data",
        root.display()
    );
    eprintln!(
        "SKIPPED {test}: no data folder at {} (set SKYSCRIBE_DATA)",
        root.display()
    );
    None
}

/// A scratch directory unique to one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A complete model directory for the tiny fixture model `name`: its committed files plus the
/// shared CLIP tokenizer.json (committed once, not per model).
pub fn tiny_clip(name: &str) -> PathBuf {
    // Tests run in parallel threads: copy under a lock so nobody reads a half-written file.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = fixtures().join("clip").join(name);
    let dir = repo().join("target/test-models").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let to = dir.join(entry.file_name());
        if !to.exists() {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    let tok = dir.join("tokenizer.json");
    if !tok.exists() {
        std::fs::copy(repo().join("assets/tokenizers/clip/tokenizer.json"), &tok).unwrap();
    }
    dir
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

/// A JSON array of non-negative integers (token ids, shapes, pixel boxes) as `T`.
pub fn integers<T: TryFrom<u64>>(v: &serde_json::Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

/// A reference tensor written as its flat `values` and its `shape`, on the CPU.
pub fn tensor(values: &serde_json::Value, shape: &serde_json::Value) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(
        floats(values),
        integers::<usize>(shape),
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

/// Resolves a reference input key: `data:<path under the data folder>` or `fixture:<file>`.
pub fn input_path(key: &str, data: &Path) -> PathBuf {
    if let Some(rest) = key.strip_prefix("data:") {
        data.join(rest)
    } else if let Some(rest) = key.strip_prefix("fixture:") {
        fixtures().join("images").join(rest)
    } else {
        panic!("unknown input key {key}")
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length differs");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
