//! The evaluation report a person reads: `report.md`, a self-contained `report.html` (pictures
//! inlined), `summary.json`, `predictions.jsonl`, `confusion.csv` and PNG plots (confusion
//! matrix, per-class bars, template sensitivity), all written atomically.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::metrics::{most_confused, spread};
use super::plot::{self, Titles};
use super::{Evaluation, GridResult};
use crate::atomic::write_file;

/// How much the wording moves the headline number.
#[derive(Debug, Clone, Serialize)]
pub struct Sensitivity {
    pub label_set: String,
    pub metric: &'static str,
    pub min: f64,
    pub max: f64,
    pub std: f64,
    /// `(class, lowest, highest)` of per-class recall (or AP) across templates, largest swing
    /// first.
    pub class_swings: Vec<(String, f64, f64)>,
}

pub fn sensitivity(eval: &Evaluation) -> Vec<Sensitivity> {
    let mut sets: Vec<&str> = eval.grid.iter().map(|g| g.labels.as_str()).collect();
    sets.dedup();
    sets.into_iter()
        .map(|set| {
            let cells: Vec<&GridResult> = eval
                .grid
                .iter()
                .filter(|g| g.labels == set && g.templates != "ensemble of all")
                .collect();
            let values: Vec<f64> = cells.iter().map(|c| c.headline()).collect();
            let (min, max, std) = spread(&values);
            let per_class: Vec<Vec<(String, f64)>> = cells
                .iter()
                .map(|c| match (&c.single, &c.multi) {
                    (Some(s), _) => s
                        .per_class
                        .iter()
                        .filter_map(|m| Some((m.class.clone(), m.recall?)))
                        .collect(),
                    (_, Some(m)) => m
                        .average_precision
                        .iter()
                        .filter_map(|(n, a)| Some((n.clone(), (*a)?)))
                        .collect(),
                    _ => vec![],
                })
                .collect();
            let mut class_swings: Vec<(String, f64, f64)> = per_class
                .first()
                .map(|first| {
                    first
                        .iter()
                        .map(|(name, _)| {
                            let vals: Vec<f64> = per_class
                                .iter()
                                .filter_map(|pc| pc.iter().find(|(n, _)| n == name).map(|x| x.1))
                                .collect();
                            let (lo, hi, _) = spread(&vals);
                            (name.clone(), lo, hi)
                        })
                        .collect()
                })
                .unwrap_or_default();
            class_swings.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
            Sensitivity {
                label_set: set.to_string(),
                metric: if eval.multi_label { "mAP" } else { "top-1" },
                min,
                max,
                std,
                class_swings,
            }
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// `` `a {}`, `b {}` ``, or `ensemble of all: …` listing what the ensemble holds.
fn templates_cell(g: &GridResult) -> String {
    let list: Vec<String> = g.template_list.iter().map(|t| format!("`{t}`")).collect();
    if list.is_empty() {
        g.templates.clone()
    } else if g.templates == "ensemble of all" {
        format!("ensemble of all: {}", list.join(", "))
    } else {
        list.join(", ")
    }
}

/// The main label set's headline: the ensemble (the main result) beside the best single
/// template, and chance, so a strong single wording is never hidden under a weaker ensemble.
fn headline(md: &mut String, eval: &Evaluation) {
    let metric = if eval.multi_label { "mAP" } else { "top-1" };
    let set = &eval.main.labels;
    let cells: Vec<&GridResult> = eval.grid.iter().filter(|g| &g.labels == set).collect();
    let singles: Vec<&&GridResult> = cells
        .iter()
        .filter(|g| g.templates != "ensemble of all")
        .collect();
    let _ = writeln!(md, "## Headline\n\n| `{set}` | {metric} |\n|---|---:|");
    if let Some(best) = singles
        .iter()
        .max_by(|a, b| a.headline().total_cmp(&b.headline()))
        .filter(|_| singles.len() > 1)
    {
        let _ = writeln!(
            md,
            "| ensemble of all {} templates (the main result below) | {} |",
            eval.main.template_list.len(),
            pct(eval.main.headline())
        );
        let _ = writeln!(
            md,
            "| best single template: {} | {} |",
            templates_cell(best),
            pct(best.headline())
        );
    } else {
        let _ = writeln!(
            md,
            "| {} | {} |",
            templates_cell(&eval.main),
            pct(eval.main.headline())
        );
    }
    if !eval.multi_label {
        let _ = writeln!(
            md,
            "| chance (one of {} labels) | {} |",
            eval.main.label_count,
            pct(1.0 / eval.main.label_count.max(1) as f64)
        );
    }
    md.push('\n');
}

fn markdown(eval: &Evaluation, sens: &[Sensitivity], plots: &[(&str, &str)]) -> String {
    let mut md = String::new();
    let m = &eval.main;
    let _ = writeln!(md, "# Zero-shot evaluation\n");
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    let _ = writeln!(md, "| dataset | `{}` |", eval.dataset);
    let _ = writeln!(md, "| model | `{}` |", eval.model);
    let _ = writeln!(
        md,
        "| label set | `{}` ({} labels) |",
        m.labels,
        eval.label_names.len()
    );
    let _ = writeln!(md, "| templates | {} |", templates_cell(m));
    let _ = writeln!(
        md,
        "| images | {} evaluated of {} ({} unreadable) |",
        eval.evaluated,
        eval.images,
        eval.encode.failed.len()
    );
    let _ = writeln!(
        md,
        "| embeddings | {} encoded, {} from cache, {} corrupt cache entries recomputed |\n",
        eval.encode.encoded, eval.encode.from_cache, eval.encode.corrupt_entries
    );
    if !eval.unmapped_classes.is_empty() {
        let _ = writeln!(
            md,
            "Dataset classes no label stands for (left out): {}\n",
            eval.unmapped_classes.join(", ")
        );
    }
    headline(&mut md, eval);
    if let Some(s) = &m.single {
        let _ = writeln!(md, "## Accuracy\n\n| metric | value |\n|---|---|");
        let _ = writeln!(
            md,
            "| top-1 accuracy | {} |\n| top-{} accuracy | {} |",
            pct(s.top1),
            s.k,
            pct(s.topk)
        );
        let _ = writeln!(
            md,
            "| macro precision / recall / F1 | {} / {} / {} |",
            pct(s.macro_precision),
            pct(s.macro_recall),
            pct(s.macro_f1)
        );
        let _ = writeln!(
            md,
            "| micro F1 (= top-1 for single-label data) | {} |\n",
            pct(s.micro_f1)
        );
        let _ = writeln!(
            md,
            "## Per class\n\n| class | examples | predicted | precision | recall | F1 |\n|---|---:|---:|---:|---:|---:|"
        );
        for c in &s.per_class {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                c.class,
                c.support,
                c.predicted,
                pct(c.precision),
                c.recall.map_or("–".into(), pct),
                pct(c.f1)
            );
        }
        let _ = writeln!(
            md,
            "\n## Most confused (true → predicted)\n\n| true | predicted | images |\n|---|---|---:|"
        );
        for (t, p, n) in most_confused(&eval.label_names, &s.confusion, 10) {
            let _ = writeln!(md, "| {t} | {p} | {n} |");
        }
    }
    if let Some(mm) = &m.multi {
        let _ = writeln!(
            md,
            "## Multi-label measures (k = {})\n\n| metric | value |\n|---|---|",
            mm.k
        );
        let _ = writeln!(
            md,
            "| at least one true label in top {} | {} |",
            mm.k,
            pct(mm.at_least_one_in_top_k)
        );
        let _ = writeln!(
            md,
            "| all true labels in top {} | {} |",
            mm.k,
            pct(mm.all_in_top_k)
        );
        let _ = writeln!(
            md,
            "| precision@{} / recall@{} | {} / {} |",
            mm.k,
            mm.k,
            pct(mm.precision_at_k),
            pct(mm.recall_at_k)
        );
        let _ = writeln!(
            md,
            "| mean average precision | {} |",
            pct(mm.mean_average_precision)
        );
        let _ = writeln!(
            md,
            "| images with no true label (left out above) | {} |\n",
            mm.without_labels
        );
        let _ = writeln!(md, "| label | AP |\n|---|---:|");
        for (n, ap) in &mm.average_precision {
            let _ = writeln!(md, "| {n} | {} |", ap.map_or("–".into(), pct));
        }
    }
    let _ = writeln!(
        md,
        "\n## Sensitivity to wording\n\n| label set | templates | {} |\n|---|---|---:|",
        if eval.multi_label { "mAP" } else { "top-1" }
    );
    for g in &eval.grid {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} |",
            g.labels,
            g.templates,
            pct(g.headline())
        );
    }
    for s in sens {
        let _ = writeln!(
            md,
            "\n`{}`: {} over templates from {} to {} (standard deviation {}).",
            s.label_set,
            s.metric,
            pct(s.min),
            pct(s.max),
            pct(s.std)
        );
        if s.class_swings.iter().any(|c| c.2 > c.1) {
            let _ = writeln!(md, "\n| class | lowest | highest |\n|---|---:|---:|");
            for (c, lo, hi) in s.class_swings.iter().take(5) {
                let _ = writeln!(md, "| {c} | {} | {} |", pct(*lo), pct(*hi));
            }
        }
    }
    for (title, file) in plots {
        let _ = writeln!(md, "\n## {title}\n\n![{title}]({file})");
    }
    let _ = writeln!(
        md,
        "\nPer-image predictions: `predictions.jsonl`; every number here recomputes from it."
    );
    md
}

fn html(md: &str, dir: &Path) -> Result<String> {
    // A small Markdown subset (headings, tables, paragraphs, images) is all the report uses.
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>skyscribe report</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}th{background:#f3f3f3}.num{text-align:right}code{background:#f3f3f3;padding:0 .2em}img{max-width:100%}</style>\n",
    );
    // Escaped text, with `code` spans as <code> (templates keep their visible edges).
    let esc = |s: &str| {
        let plain = s
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let mut out = String::new();
        for (i, part) in plain.split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(part);
            }
        }
        out
    };
    let split_row = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut in_table = false;
    let mut right: Vec<bool> = Vec::new();
    let lines: Vec<&str> = md.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = *line;
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            // The row above a table's `|---|` line is its header; `---:` aligns right.
            let header = match lines.get(i + 1).filter(|l| l.starts_with("|---")) {
                Some(rule) => {
                    right = split_row(rule).iter().map(|c| c.ends_with(':')).collect();
                    true
                }
                None => false,
            };
            if !in_table {
                out.push_str("<table>\n");
                in_table = true;
            }
            let cell = if header { "th" } else { "td" };
            let cells: Vec<String> = split_row(line)
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let align = if right.get(k) == Some(&true) {
                        " class=num"
                    } else {
                        ""
                    };
                    format!("<{cell}{align}>{}</{cell}>", esc(c))
                })
                .collect();
            let _ = writeln!(out, "<tr>{}</tr>", cells.join(""));
            continue;
        }
        if in_table {
            out.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", esc(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", esc(h));
        } else if let Some(rest) = line.strip_prefix("![") {
            let file = rest
                .split_once("](")
                .map(|(_, f)| f.trim_end_matches(')'))
                .unwrap_or("");
            let bytes = std::fs::read(dir.join(file))
                .with_context(|| format!("{}: cannot read plot", dir.join(file).display()))?;
            let _ = writeln!(
                out,
                "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                esc(file),
                base64(&bytes)
            );
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", esc(line));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    Ok(out)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Writes the report into `dir` (created if needed).
pub fn write(eval: &Evaluation, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create report folder", dir.display()))?;
    let sens = sensitivity(eval);
    let mut plots = Vec::new();
    let wording = match eval.main.template_list.as_slice() {
        // A learned classifier: no templates, its own name.
        [] => eval.main.templates.clone(),
        [one] => format!("\"{one}\""),
        many => format!("ensemble of {} templates", many.len()),
    };
    let subtitle = format!(
        "{} · {} · {} · {} images",
        eval.model, eval.dataset, wording, eval.evaluated
    );
    let titled = |title: &'static str| Titles {
        title,
        subtitle: &subtitle,
    };
    // Classes by score, best first (ties A→Z): the picture reads as a ranking.
    let ranked = |mut rows: Vec<(String, f64)>| {
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        rows
    };
    if let Some(s) = &eval.main.single {
        let mut csv = String::from("true\\predicted");
        for n in &eval.label_names {
            let _ = write!(csv, ",{}", n.replace(',', " "));
        }
        csv.push('\n');
        for (n, row) in eval.label_names.iter().zip(&s.confusion) {
            let _ = write!(csv, "{}", n.replace(',', " "));
            for c in row {
                let _ = write!(csv, ",{c}");
            }
            csv.push('\n');
        }
        write_file(&dir.join("confusion.csv"), csv.as_bytes())?;
        plot::confusion(
            &dir.join("confusion.png"),
            &titled("Confusion matrix"),
            &eval.label_names,
            &s.confusion,
        )?;
        plots.push(("Confusion matrix", "confusion.png"));
        let rows = s
            .per_class
            .iter()
            .map(|c| (c.class.clone(), c.recall.unwrap_or(0.0)))
            .collect();
        plot::bars(
            &dir.join("per_class.png"),
            &titled("Per-class accuracy (recall)"),
            &ranked(rows),
            Some(1.0 / eval.main.label_count.max(1) as f64),
        )?;
        plots.push(("Per-class accuracy", "per_class.png"));
    }
    if let Some(m) = &eval.main.multi {
        let rows = m
            .average_precision
            .iter()
            .filter_map(|(n, a)| Some((n.clone(), (*a)?)))
            .collect();
        plot::bars(
            &dir.join("per_class.png"),
            &titled("Average precision per label"),
            &ranked(rows),
            None,
        )?;
        plots.push(("Per-label average precision", "per_class.png"));
    }
    // One bar per wording; with a single wording there is nothing to compare.
    if eval.grid.len() > 1 {
        let rows: Vec<(String, f64)> = eval
            .grid
            .iter()
            .map(|g| (format!("{} · {}", g.labels, g.templates), g.headline()))
            .collect();
        let counts: Vec<usize> = eval.grid.iter().map(|g| g.label_count).collect();
        let chance = (!eval.multi_label && counts.iter().all(|&c| c == counts[0]))
            .then(|| 1.0 / counts[0].max(1) as f64);
        plot::bars(
            &dir.join("sensitivity.png"),
            &titled(if eval.multi_label {
                "mAP by wording (label set · template)"
            } else {
                "Top-1 accuracy by wording (label set · template)"
            }),
            &rows,
            chance,
        )?;
        plots.push(("Template sensitivity", "sensitivity.png"));
    } else {
        let _ = std::fs::remove_file(dir.join("sensitivity.png"));
    }

    let mut jsonl = String::new();
    for p in &eval.predictions {
        jsonl.push_str(&serde_json::to_string(p)?);
        jsonl.push('\n');
    }
    write_file(&dir.join("predictions.jsonl"), jsonl.as_bytes())?;
    let summary = serde_json::json!({"evaluation": eval, "sensitivity": sens});
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    let md = markdown(eval, &sens, &plots);
    write_file(&dir.join("report.md"), md.as_bytes())?;
    write_file(&dir.join("report.html"), html(&md, dir)?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
