//! The library's modules depend one way: each may use only the modules before it in
//! [`ORDER`] (inputs → networks → running models → tasks → measuring and training → surfaces). docs/src/architecture.md's
//! layer table is this order; a new module takes its place in both.

use crate::common::repo;

/// Every top-level module of `src/`, lowest first.
#[rustfmt::skip]
const ORDER: &[&str] = &[
    "atomic", "progress", "simd", "canvas",       // 0 plumbing
    "geoparquet",
    "imagery", "tokenizer", "labels", "data",     // 1 inputs
    "scene",
    "models",                                     // 2 networks
    "builtin", "hub", "openclip", "encoder",      // 3 running models
    "cache",
    "zeroshot", "classify", "caption", "index",   // 4 tasks
    "scan",
    "eval", "train", "bench",                     // 5 measuring and training
    "serve",                                      // 6 surfaces (the CLI is the binary's)
];

/// The `crate::NAME` modules the files of module `name` use.
fn uses(name: &str) -> Vec<(String, String)> {
    let src = repo().join("src");
    let mut files = vec![src.join(format!("{name}.rs"))];
    let dir = src.join(name);
    if dir.is_dir() {
        for e in walkdir(&dir) {
            files.push(e);
        }
    }
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let used: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((f.display().to_string(), used));
        }
    }
    out
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn modules_depend_only_on_earlier_layers() {
    let lib = std::fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let m = line.trim_end_matches(';');
        assert!(
            ORDER.contains(&m),
            "module {m} has no place in the layer order"
        );
    }
    let mut wrong = Vec::new();
    for (rank, name) in ORDER.iter().enumerate() {
        for (file, used) in uses(name) {
            match ORDER.iter().position(|m| *m == used) {
                Some(r) if r > rank => wrong.push(format!("{file} uses crate::{used}")),
                Some(_) => {}
                // Crate-level items of lib.rs (data_root, cache_root).
                None => assert!(
                    lib.contains(&format!("pub fn {used}")),
                    "{file}: crate::{used} is neither a module nor a lib.rs item"
                ),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward dependencies:\n{}",
        wrong.join("\n")
    );
}
