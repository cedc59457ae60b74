//! `eval benchmark`: a suite of evaluations (zero-shot classification, image–text retrieval,
//! captioning) run for several models, one JSON result per (model, task) and merged tables in
//! the layout of the published ones — long CSV rows `dataset,task,metric,value,model` and a
//! Markdown table with a column per model, as CLIP_benchmark's `build` step makes them.
//!
//! A suite is a TOML file of `[[task]]` entries (the default is `benchmarks/default.toml`, built
//! in). `${DATA}` in a path is the shared data folder; other relative paths are relative to the
//! suite file. Results already in the output folder for the same model and task entry are
//! reused, so an interrupted run resumes where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cache::{EmbeddingCache, embed_images, embed_samples};
use crate::caption::{Captioner, DecodeOptions as CaptionDecode, Decoding};
use crate::data::ChipOptions;
use crate::encoder::ClipEncoder;
use crate::imagery::DecodeOptions;
use crate::labels::{Label, LabelSet};

/// The default suite, built into the binary.
pub const DEFAULT_SUITE: &str = include_str!("../../benchmarks/default.toml");

/// What a task measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Top-1 / top-5 accuracy and macro F1 (single-label) or mAP (multi-label).
    ZeroShot,
    /// Recall@1/5/10 both ways and their mean (mR).
    Retrieval,
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr-D of a captioner's greedy (or beam) captions.
    Captions,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::ZeroShot => "zero-shot",
            TaskKind::Retrieval => "retrieval",
            TaskKind::Captions => "captions",
        }
    }
}

/// One `[[task]]` of a suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The data set's name in the tables (`EuroSAT`, `RSICD`, …).
    pub dataset: String,
    pub task: TaskKind,
    /// `KIND:PATH`: for zero-shot a labelled data set (`folder:`, `rsicd-scenes:`, `jsonl:`, …),
    /// for retrieval and captions a captioned one (`rsicd:`, `coco:`, `parquet:`).
    pub data: String,
    /// Zero-shot: keep only the images this file lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Zero-shot: a label set (preset, file or `a,b,c`), or `classes` for the data set's own
    /// class names as words (`BaseballField` → "baseball field").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Zero-shot: templates or template sets, ensembled (default: the model's own, else
    /// "a satellite photo of {}.").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    /// Zero-shot: k of top-k (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Captions: `greedy` (default) or `beam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<String>,
    /// Captions: beams of `decode = "beam"` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beam_size: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    task: Vec<TaskSpec>,
}

/// A suite with its paths resolved.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub tasks: Vec<TaskSpec>,
}

impl Suite {
    /// The built-in default suite, over the data folder `data`.
    pub fn default_suite(data: &Path) -> Result<Self> {
        Self::parse(DEFAULT_SUITE, "the default suite", Path::new("."), data)
    }

    pub fn from_file(path: &Path, data: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read suite", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base, data)
    }

    fn parse(text: &str, name: &str, base: &Path, data: &Path) -> Result<Self> {
        let file: SuiteFile =
            toml::from_str(text).with_context(|| format!("{name}: not a valid suite"))?;
        if file.task.is_empty() {
            bail!("{name}: the suite has no [[task]]");
        }
        let resolve = |p: &str| -> String {
            let p = p.replace("${DATA}", &data.display().to_string());
            if Path::new(&p).is_absolute() {
                p
            } else {
                base.join(p).display().to_string()
            }
        };
        let mut tasks = Vec::new();
        for (i, mut t) in file.task.into_iter().enumerate() {
            let what = format!("{name}: task {} ({} {})", i + 1, t.dataset, t.task.name());
            let Some((kind, path)) = t.data.split_once(':') else {
                bail!("{what}: data = {:?} is not KIND:PATH", t.data);
            };
            t.data = format!("{kind}:{}", resolve(path));
            t.split = t.split.as_deref().map(resolve);
            if let Some(l) = &t.labels {
                // A label file is found relative to the suite; presets and lists stay.
                let relative = resolve(l);
                if Path::new(&relative).is_file() {
                    t.labels = Some(relative);
                }
            }
            let zero_shot_only =
                t.split.is_some() || t.labels.is_some() || !t.templates.is_empty() || t.k.is_some();
            match t.task {
                TaskKind::ZeroShot if t.labels.is_none() => {
                    bail!(
                        "{what}: a zero-shot task needs labels (a preset, file, list or `classes`)"
                    )
                }
                TaskKind::Retrieval | TaskKind::Captions if zero_shot_only => {
                    bail!("{what}: split, labels, templates and k belong to zero-shot tasks")
                }
                _ => {}
            }
            if t.task != TaskKind::Captions && (t.decode.is_some() || t.beam_size.is_some()) {
                bail!("{what}: decode and beam_size belong to captions tasks");
            }
            if let Some(d) = &t.decode
                && d != "greedy"
                && d != "beam"
            {
                bail!("{what}: decode = {d:?}; expected greedy or beam");
            }
            if t.beam_size == Some(0) {
                bail!("{what}: beam_size must be positive");
            }
            tasks.push(t);
        }
        Ok(Self {
            name: name.to_string(),
            tasks,
        })
    }
}

/// The result of one task for one model: the per-(model, task) JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    /// The model as given (`--model` or the captioner for captions).
    pub model: String,
    pub dataset: String,
    pub task: TaskKind,
    /// Metric name → value: accuracy and recall in %, caption metrics as fractions (each as
    /// its literature reports it).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Images in the data set, and those evaluated (readable, with a labelled class).
    pub images: usize,
    pub evaluated: usize,
    pub seconds: f64,
    /// The suite entry it ran, paths resolved: a result is reused only for the same entry.
    pub spec: TaskSpec,
    pub skyscribe: String,
}

impl TaskResult {
    fn new(model: &str, spec: &TaskSpec) -> Self {
        Self {
            model: model.to_string(),
            dataset: spec.dataset.clone(),
            task: spec.task,
            metrics: Default::default(),
            images: 0,
            evaluated: 0,
            seconds: 0.0,
            spec: spec.clone(),
            skyscribe: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn put(&mut self, name: &str, value: f64) {
        // Four decimals, as tables print them; the JSON stays readable.
        let v = (value * 1e4).round() / 1e4;
        self.metrics.insert(name.to_string(), serde_json::json!(v));
    }

    /// `<model>--<dataset>--<task>.json`, each part reduced to file-name characters.
    pub fn file_name(model: &str, spec: &TaskSpec) -> String {
        format!(
            "{}--{}--{}.json",
            slug(&model_name(model)),
            slug(&spec.dataset),
            spec.task.name()
        )
    }
}

/// A model's name in tables: a folder's last component, else the spec (built-in or hub id).
pub fn model_name(spec: &str) -> String {
    let p = Path::new(spec);
    if p.is_dir() {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string())
    } else {
        spec.to_string()
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A result already in `out` for this model and entry, if any (an unreadable or different one
/// is recomputed).
pub fn existing(out: &Path, model: &str, spec: &TaskSpec) -> Option<TaskResult> {
    let path = out.join(TaskResult::file_name(model, spec));
    let text = std::fs::read_to_string(path).ok()?;
    let r: TaskResult = serde_json::from_str(&text).ok()?;
    (r.model == model && &r.spec == spec).then_some(r)
}

/// Writes one result atomically into `out`.
pub fn save(out: &Path, r: &TaskResult) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let path = out.join(TaskResult::file_name(&r.model, &r.spec));
    crate::atomic::write_file(&path, &serde_json::to_vec_pretty(r)?)
}

/// Shared settings of a run.
pub struct RunOptions<'a> {
    pub batch_size: usize,
    pub decode: &'a DecodeOptions,
    pub quiet: bool,
}

/// Zero-shot classification of `spec` with `clip`.
pub fn zero_shot(
    clip: &ClipEncoder,
    model: &str,
    spec: &TaskSpec,
    cache: Option<&EmbeddingCache>,
    o: &RunOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let split = spec.split.as_deref().map(Path::new);
    let ds = crate::data::open(&spec.data, split, &ChipOptions::default())?;
    let labels = match spec.labels.as_deref() {
        Some("classes") => labels_from_classes(&ds.classes, &spec.data)?,
        Some(l) => LabelSet::parse(l)?,
        None => bail!("{}: a zero-shot task needs labels", spec.dataset),
    };
    super::check_label_sets(&ds, std::slice::from_ref(&labels))?;
    let templates = if spec.templates.is_empty() {
        clip.defaults.templates.clone()
    } else {
        spec.templates.clone()
    };
    let bar = crate::progress::items(ds.samples.len(), "images", &spec.dataset, o.quiet);
    let (embeddings, stats) =
        embed_samples(clip, &ds.samples, cache, o.batch_size, o.decode, &bar)?;
    bar.finish_and_clear();
    if stats.failed.len() == ds.samples.len() {
        bail!(
            "{}: none of its {} images could be read",
            spec.data,
            ds.samples.len()
        );
    }
    let eval = super::evaluate(
        clip,
        &ds,
        &embeddings,
        std::slice::from_ref(&labels),
        &templates,
        spec.k,
        stats,
    )?;
    // The main configuration ensembles all templates, as published zero-shot numbers do.
    let mut r = TaskResult::new(model, spec);
    r.images = eval.images;
    r.evaluated = eval.evaluated;
    match (&eval.main.single, &eval.main.multi) {
        (Some(s), _) => {
            r.put("top1", 100.0 * s.top1);
            r.put(&format!("top{}", s.k), 100.0 * s.topk);
            r.put("macro_f1", 100.0 * s.macro_f1);
        }
        (_, Some(m)) => {
            r.put("mAP", 100.0 * m.mean_average_precision);
            r.put(
                &format!("one_in_top{}", m.k),
                100.0 * m.at_least_one_in_top_k,
            );
        }
        _ => bail!("{}: nothing was evaluated", spec.dataset),
    }
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// A label set of the data set's own classes, as words.
fn labels_from_classes(classes: &[String], data: &str) -> Result<LabelSet> {
    let labels = classes
        .iter()
        .map(|c| {
            let mut l = Label::plain(&class_words(c));
            l.classes = vec![c.clone()];
            l
        })
        .collect();
    LabelSet::new(&format!("classes of {data}"), labels)
}

/// `BaseballField` → "baseball field", `dense_residential` → "dense residential".
pub fn class_words(class: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in class.chars() {
        if c == '_' || c == '-' || c == ' ' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_lowercase());
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Image–text retrieval of `spec` with `clip`.
pub fn retrieval(
    clip: &ClipEncoder,
    model: &str,
    spec: &TaskSpec,
    cache: Option<&EmbeddingCache>,
    o: &RunOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let data = crate::data::open_captions(&spec.data)?;
    let run = super::retrieval::evaluate(clip, &data, cache, o.batch_size, o.decode, o.quiet)?;
    let s = run.ranks.summary();
    let mut r = TaskResult::new(model, spec);
    r.images = data.items.len();
    r.evaluated = data.items.len();
    for (name, v) in [
        ("i2t_R@1", s.i2t_r1),
        ("i2t_R@5", s.i2t_r5),
        ("i2t_R@10", s.i2t_r10),
        ("t2i_R@1", s.t2i_r1),
        ("t2i_R@5", s.t2i_r5),
        ("t2i_R@10", s.t2i_r10),
        ("mR", s.mean_recall),
    ] {
        r.put(name, 100.0 * v);
    }
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Captions of `spec`'s images by `captioner` (on its own CLIP), scored against their
/// references.
pub fn captions(
    captioner: &str,
    spec: &TaskSpec,
    cache_dir: Option<&Path>,
    device: &candle_core::Device,
    o: &RunOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let data = crate::data::open_captions(&spec.data)?;
    let cap = Captioner::load_spec(captioner, device)?;
    let clip = ClipEncoder::load(&cap.clip_model_spec(), device)?;
    cap.check_clip(&clip, false)?;
    let cache = cache_dir
        .map(|d| EmbeddingCache::open(d, &clip, &DecodeOptions::default()))
        .transpose()?;
    let paths: Vec<PathBuf> = data.items.iter().map(|i| i.path.clone()).collect();
    let embeds = embed_images(&clip, &paths, cache.as_ref(), o.quiet)?;
    let how = match spec.decode.as_deref() {
        Some("beam") => Decoding::Beam {
            size: spec.beam_size.unwrap_or(5),
        },
        _ => Decoding::Greedy,
    };
    let opts = CaptionDecode {
        max_tokens: 67,
        temperature: 1.0,
    };
    let generated = cap.captions_with_progress(&embeds, how, &opts, o.quiet)?;
    let refs = super::captions::references_of(&data);
    let predictions: Vec<(String, String)> = data
        .items
        .iter()
        .map(|i| i.path.display().to_string())
        .zip(generated)
        .collect();
    let rows = super::captions::match_references(&predictions, &refs, &spec.data, false)?;
    let pairs: Vec<_> = rows.iter().map(|r| r.pair()).collect();
    let (corpus, _) = super::captions::score(&pairs);
    let mut r = TaskResult::new(captioner, spec);
    r.images = data.items.len();
    r.evaluated = rows.len();
    for (k, b) in corpus.bleu.iter().enumerate() {
        r.put(&format!("BLEU-{}", k + 1), *b);
    }
    r.put("METEOR", corpus.meteor);
    r.put("ROUGE-L", corpus.rouge_l);
    r.put("CIDEr-D", corpus.cider_d);
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// `results.csv` (`dataset,task,metric,value,model`, one row per number) and `results.md` (a
/// row per dataset, task and metric; a column per model), written atomically into `out`.
pub fn write_tables(out: &Path, results: &[TaskResult]) -> Result<()> {
    let mut csv = String::from("dataset,task,metric,value,model\n");
    for r in results {
        for (metric, v) in &r.metrics {
            csv += &format!(
                "{},{},{},{},{}\n",
                csv_field(&r.dataset),
                r.task.name(),
                csv_field(metric),
                v,
                csv_field(&model_name(&r.model))
            );
        }
    }
    crate::atomic::write_file(&out.join("results.csv"), csv.as_bytes())?;

    let mut models: Vec<String> = Vec::new();
    for r in results {
        let m = model_name(&r.model);
        if !models.contains(&m) {
            models.push(m);
        }
    }
    // Rows in suite order: (dataset, task, metric) as first met.
    let mut rows: Vec<(String, &'static str, String)> = Vec::new();
    let mut cells: BTreeMap<(String, &'static str, String, String), String> = BTreeMap::new();
    for r in results {
        for (metric, v) in &r.metrics {
            let key = (r.dataset.clone(), r.task.name(), metric.clone());
            if !rows.contains(&key) {
                rows.push(key.clone());
            }
            // Percentages to 2 decimals, caption metrics (fractions) to 3.
            let value = match (v.as_f64(), r.task) {
                (Some(x), TaskKind::Captions) => format!("{x:.3}"),
                (Some(x), _) => format!("{x:.2}"),
                (None, _) => String::new(),
            };
            cells.insert((key.0, key.1, key.2, model_name(&r.model)), value);
        }
    }
    let mut md = format!("| dataset | task | metric | {} |\n", models.join(" | "));
    md += &format!("|---|---|---|{}\n", "---:|".repeat(models.len()));
    for (d, t, m) in &rows {
        let vals: Vec<String> = models
            .iter()
            .map(|model| {
                cells
                    .get(&(d.clone(), *t, m.clone(), model.clone()))
                    .cloned()
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        md += &format!("| {d} | {t} | {m} | {} |\n", vals.join(" | "));
    }
    md += "\nAccuracy, F1, mAP and recall in %; caption metrics as fractions (BLEU, METEOR, \
           ROUGE-L, CIDEr-D), as their papers report them.\n";
    crate::atomic::write_file(&out.join("results.md"), md.as_bytes())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_become_words() {
        assert_eq!(class_words("BaseballField"), "baseball field");
        assert_eq!(class_words("dense_residential"), "dense residential");
        assert_eq!(class_words("SeaLake"), "sea lake");
        assert_eq!(class_words("storage-tanks"), "storage tanks");
        assert_eq!(class_words("airport"), "airport");
    }

    #[test]
    fn the_default_suite_parses_and_resolves_data() {
        let s = Suite::default_suite(Path::new("/data")).unwrap();
        let kinds: Vec<TaskKind> = s.tasks.iter().map(|t| t.task).collect();
        assert!(kinds.contains(&TaskKind::ZeroShot));
        assert!(kinds.contains(&TaskKind::Retrieval));
        assert!(kinds.contains(&TaskKind::Captions));
        assert!(
            s.tasks.iter().all(|t| t.data.contains(":/data/")),
            "{:?}",
            s.tasks
        );
    }

    #[test]
    fn suites_refuse_options_of_other_tasks() {
        let bad = [
            "[[task]]\ndataset = 'x'\ntask = 'retrieval'\ndata = 'rsicd:d'\nlabels = 'eurosat'\n",
            "[[task]]\ndataset = 'x'\ntask = 'zero-shot'\ndata = 'folder:d'\n",
            "[[task]]\ndataset = 'x'\ntask = 'zero-shot'\ndata = 'folder:d'\nlabels = 'a,b'\ndecode = 'beam'\n",
            "[[task]]\ndataset = 'x'\ntask = 'captions'\ndata = 'rsicd:d'\ndecode = 'nucleus'\n",
            "[[task]]\ndataset = 'x'\ntask = 'retrieval'\ndata = 'rsicd:d'\ncolour = 'red'\n",
            "[[task]]\ndataset = 'x'\ntask = 'ranking'\ndata = 'rsicd:d'\n",
            "[[task]]\ndataset = 'x'\ntask = 'retrieval'\ndata = 'nokind'\n",
        ];
        for text in bad {
            assert!(
                Suite::parse(text, "t", Path::new("."), Path::new("/data")).is_err(),
                "accepted: {text}"
            );
        }
        let ok = Suite::parse(
            "[[task]]\ndataset = 'UCM'\ntask = 'zero-shot'\ndata = 'folder:ucm/images'\nlabels = 'classes'\n",
            "t",
            Path::new("/suites"),
            Path::new("/data"),
        )
        .unwrap();
        assert_eq!(ok.tasks[0].data, "folder:/suites/ucm/images");
    }

    fn result(model: &str, dataset: &str, metric: &str, v: f64) -> TaskResult {
        let spec = TaskSpec {
            dataset: dataset.into(),
            task: TaskKind::Retrieval,
            data: "rsicd:/d".into(),
            split: None,
            labels: None,
            templates: vec![],
            k: None,
            decode: None,
            beam_size: None,
        };
        let mut r = TaskResult::new(model, &spec);
        r.put(metric, v);
        r
    }

    #[test]
    fn tables_have_a_row_per_number_and_a_column_per_model() {
        let dir =
            std::env::temp_dir().join(format!("skyscribe-bench-tables-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let results = [
            result("a", "RSICD", "mR", 12.345),
            result("b,c", "RSICD", "mR", 20.0),
            result("a", "UCM", "mR", 1.0),
        ];
        write_tables(&dir, &results).unwrap();
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        assert_eq!(
            csv,
            "dataset,task,metric,value,model\nRSICD,retrieval,mR,12.345,a\n\
             RSICD,retrieval,mR,20.0,\"b,c\"\nUCM,retrieval,mR,1.0,a\n"
        );
        let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
        assert!(md.starts_with("| dataset | task | metric | a | b,c |\n|---|---|---|---:|---:|\n"));
        assert!(
            md.contains("| RSICD | retrieval | mR | 12.35 | 20.00 |\n"),
            "{md}"
        );
        assert!(md.contains("| UCM | retrieval | mR | 1.00 | — |\n"), "{md}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
