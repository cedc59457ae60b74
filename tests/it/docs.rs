//! The README and the book (docs/, an mdBook): every relative link and anchor resolves, every
//! chapter is in the book's summary, and the README stays a front door (≤ 250 lines).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::common::repo;

/// A heading's anchor as mdBook and GitHub make it: lower case, spaces to `-`, only letters,
/// digits, `-` and `_` kept.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks); repeated headings get
/// `-1`, `-2`, … as both renderers number them.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
        }
        if code || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut id = base.clone();
        let mut n = 0;
        while !seen.insert(id.clone()) {
            n += 1;
            id = format!("{base}-{n}");
        }
    }
    seen
}

/// `(line, target)` of every Markdown link and image outside code blocks and inline code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut code = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            code = !code;
        }
        if code {
            continue;
        }
        // Inline code spans hold no links.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(p) = rest.find("](") {
            let after = &rest[p + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let src = repo().join("docs/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved: PathBuf = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            let name = format!(
                "{}:{line}: {target}",
                file.strip_prefix(repo()).unwrap().display()
            );
            if !resolved.exists() {
                broken.push(format!("{name} (no such file)"));
                continue;
            }
            if !anchor.is_empty() {
                let text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{name} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 50,
        "only {checked} links found: is the parser reading them?"
    );
}

#[test]
fn every_chapter_is_in_the_summary() {
    let src = repo().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: HashSet<String> = links(&summary).into_iter().map(|(_, t)| t).collect();
    for file in markdown_files().iter().skip(1) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if name != "SUMMARY.md" {
            assert!(
                listed.contains(&name),
                "docs/src/{name} is not in SUMMARY.md"
            );
        }
    }
    for l in &listed {
        assert!(
            Path::new(&src.join(l)).is_file(),
            "SUMMARY.md lists {l}, which is missing"
        );
    }
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; the rest belongs in docs/"
    );
    // The two commands, as `.ci/run` and a newcomer use them.
    assert!(readme.contains("cargo run --release -- describe assets/samples/eurosat-river.jpg"));
    assert!(readme.contains("\ncargo test\n"));
}

#[test]
fn slugs_are_the_renderers() {
    assert_eq!(slug("Whole scenes: `scan`"), "whole-scenes-scan");
    assert_eq!(
        slug("AVX2 code on the same AMD host (what an AVX2-only CPU runs)"),
        "avx2-code-on-the-same-amd-host-what-an-avx2-only-cpu-runs"
    );
    let a = anchors("# A\n## B\n```\n# not a heading\n```\n## B\n");
    assert_eq!(
        a,
        HashSet::from(["a".to_string(), "b".to_string(), "b-1".to_string()])
    );
}

/// The README's tour runs as written (from the repository's root, the data in
/// `SKYSCRIBE_DATA`), all but `serve`, which runs until stopped: a labelled image, an
/// evaluation report, a searched archive and a mapped GeoTIFF.
#[test]
fn the_readme_tour_runs_as_written() {
    let Some(data) = crate::common::data_root("the_readme_tour_runs_as_written") else {
        return;
    };
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tour = readme
        .split("## A tour over real data")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's tour and its code block");
    let commands: Vec<String> = tour
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.split(" # ").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(commands.iter().any(|c| c.starts_with("skyscribe scan")));
    let dir = crate::common::scratch("readme-tour");
    std::os::unix::fs::symlink(repo().join("assets"), dir.join("assets")).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_skyscribe")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script: Vec<&str> = commands
        .iter()
        .map(String::as_str)
        .filter(|c| !c.starts_with("skyscribe serve"))
        .collect();
    // One shell, as a reader types them: the tour's variables carry from line to line.
    let out = std::process::Command::new("bash")
        .args(["-euxc", &script.join("\n")])
        .current_dir(&dir)
        .env("PATH", &path)
        .env("SKYSCRIBE_DATA", &data)
        .env("SKYSCRIBE_CACHE", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the tour stopped:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for made in [
        "report/report.md",
        "idx/index.json",
        "tiles.geojson",
        "classes.tif",
    ] {
        assert!(dir.join(made).is_file(), "the tour made no {made}");
    }
}

/// scripts/README.md says what every file under scripts/ is for (each is named in it).
#[test]
fn every_script_is_in_the_scripts_readme() {
    let scripts = repo().join("scripts");
    let readme = std::fs::read_to_string(scripts.join("README.md")).unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    for group in std::fs::read_dir(&scripts).unwrap() {
        let group = group.unwrap().path();
        if !group.is_dir() {
            continue;
        }
        let heading = format!("## `{}/`", group.file_name().unwrap().to_string_lossy());
        assert!(
            readme.contains(&heading),
            "scripts/README.md has no {heading}"
        );
        for file in std::fs::read_dir(&group).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().to_string();
            if name.starts_with("__") || name.starts_with('.') {
                continue; // __pycache__ of a script that was run
            }
            seen += 1;
            let named = format!("`{name}`");
            let named_dir = format!("`{name}/`");
            if !readme.contains(&named) && !readme.contains(&named_dir) {
                missing.push(format!("{}/{name}", group.display()));
            }
        }
    }
    assert!(seen >= 30, "only {seen} scripts found");
    assert!(missing.is_empty(), "not in scripts/README.md: {missing:?}");
}
