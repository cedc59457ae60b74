//! `eval zero-shot` (accuracy on labelled data, wording sensitivity, reports), `eval retrieval`,
//! `eval benchmark` (suites over several models) and
//! `eval captions` (BLEU, METEOR, ROUGE-L, CIDEr-D of captions against references).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use skyscribe::cache::{EmbeddingCache, embed_images};
use skyscribe::caption::Captioner;
use skyscribe::data::CaptionedImages;
use skyscribe::encoder::ClipEncoder;
use skyscribe::eval::captions::{
    match_references, nearest_neighbour_captions, read_predictions, read_references, references_of,
    score,
};
use skyscribe::imagery::DecodeOptions;
use skyscribe::labels::LabelSet;

use super::caption::DecodingArgs;
use super::common::{CacheArgs, CommonArgs, DeviceArg, positive};
use super::output::{Out, fit, report};

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum EvalCommand {
    /// BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of captions against references: from a predictions
    /// file, from a captioner run on a dataset, or from the nearest-neighbour baseline.
    #[command(after_help = super::shell::examples::EVAL_CAPTIONS)]
    Captions(CaptionsArgs),
    /// Zero-shot accuracy on a labelled dataset, with a grid of label wordings and templates.
    #[command(after_help = super::shell::examples::EVAL_ZERO_SHOT)]
    ZeroShot(ZeroShotArgs),
    /// A classifier from `train classifier` on a labelled dataset: the same lines, summary and
    /// report as zero-shot.
    #[command(after_help = super::shell::examples::EVAL_CLASSIFY)]
    Classify(super::classify::EvalClassifyArgs),
    /// Accuracy against shots per class for each method (mean ± std over seeds), beside
    /// zero-shot and the probe on all training data: a table, JSON Lines and a picture.
    #[command(after_help = super::shell::examples::EVAL_FEW_SHOT)]
    FewShot(super::classify::FewShotArgs),
    /// Image–text retrieval recall@1/5/10 both ways and their mean (the RemoteCLIP and
    /// GeoRSCLIP benchmark) on a captioned data set.
    #[command(after_help = super::shell::examples::EVAL_RETRIEVAL)]
    Retrieval(RetrievalArgs),
    /// A suite of zero-shot, retrieval and caption tasks for several models: one JSON per
    /// (model, task), merged into results.csv and results.md (the published tables' layout).
    #[command(after_help = super::shell::examples::EVAL_BENCHMARK)]
    Benchmark(BenchmarkArgs),
}

pub fn run(cmd: EvalCommand) -> Result<usize> {
    match cmd {
        EvalCommand::Captions(a) => captions(a),
        EvalCommand::ZeroShot(a) => zero_shot(a),
        EvalCommand::Classify(a) => super::classify::eval_classify(a),
        EvalCommand::FewShot(a) => super::classify::few_shot(a),
        EvalCommand::Retrieval(a) => retrieval(a),
        EvalCommand::Benchmark(a) => benchmark(a),
    }
}

#[derive(Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Captioned images: rsicd:DIR (captions.jsonl beside the images), coco:FILE.json or
    /// parquet:FILE.parquet.
    #[arg(long)]
    data: String,
    /// Write report.md and summary.json here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

fn retrieval(a: RetrievalArgs) -> Result<usize> {
    use skyscribe::eval::retrieval;
    let common = &a.common;
    let data = skyscribe::data::open_captions(&a.data)?;
    let clip = common.load_clip(&common.model())?;
    let decode = common.decode();
    let cache = a.cache.open(&clip, &decode)?;
    let run = retrieval::evaluate(
        &clip,
        &data,
        cache.as_ref(),
        common.batch_size,
        &decode,
        false,
    )?;
    super::common::note_bands(&decode);
    let s = run.ranks.summary();
    let mut out = Out::new();
    if common.jsonl {
        #[derive(serde::Serialize)]
        struct Caption<'a> {
            caption: &'a str,
            t2i_rank: usize,
        }
        #[derive(serde::Serialize)]
        struct Line<'a> {
            image: String,
            i2t_rank: usize,
            captions: Vec<Caption<'a>>,
        }
        for (i, item) in data.items.iter().enumerate() {
            let captions = (0..run.captions.len())
                .filter(|&t| run.owner[t] == i)
                .map(|t| Caption {
                    caption: &run.captions[t],
                    t2i_rank: run.ranks.text_to_image[t],
                })
                .collect();
            out.json(&Line {
                image: item.path.display().to_string(),
                i2t_rank: run.ranks.image_to_text[i],
                captions,
            })?;
        }
        out.json(&json!({ "summary": s }))?;
    } else {
        let pct = |v: f64| format!("{:>6.2}", v * 100.0);
        out.line(&format!(
            "{}: {} images, {} captions, model {}",
            data.name,
            data.items.len(),
            run.captions.len(),
            clip.source.spec
        ))?;
        out.line(&format!(
            "{:<14} {:>6} {:>6} {:>6}",
            "recall %", "@1", "@5", "@10"
        ))?;
        out.line(&format!(
            "{:<14} {} {} {}",
            "image → text",
            pct(s.i2t_r1),
            pct(s.i2t_r5),
            pct(s.i2t_r10)
        ))?;
        out.line(&format!(
            "{:<14} {} {} {}",
            "text → image",
            pct(s.t2i_r1),
            pct(s.t2i_r5),
            pct(s.t2i_r10)
        ))?;
        out.line(&format!("mean recall (mR) {}", pct(s.mean_recall).trim()))?;
    }
    if let Some(dir) = &a.report {
        retrieval::write_report(dir, &data, &clip.source.spec, &run)?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// KIND:PATH — folder:DIR, rsicd-scenes:IMAGES, jsonl:FILE, dota:DIR, xview:DIR|GEOJSON.
    #[arg(long)]
    dataset: String,
    /// Keep only the images this file lists (paths relative to the dataset, one a line).
    #[arg(long)]
    split: Option<PathBuf>,
    /// A label set (preset, file, or a,b,c); repeat to compare wordings. The first is the
    /// main one.
    #[arg(long = "labels", required_unless_present = "grid")]
    labels: Vec<String>,
    /// A grid file: `labels: SPEC` and `template: SPEC` lines, added after the options.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// A template or template set; repeat to compare (and ensemble) them.
    #[arg(long = "template")]
    templates: Vec<String>,
    /// k of top-k measures (default 5 single-label, 10 multi-label).
    #[arg(long)]
    k: Option<usize>,
    /// Write report.md, report.html, plots, CSV and JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    chips: super::common::ChipArgs,
}

fn zero_shot(a: ZeroShotArgs) -> Result<usize> {
    let common = &a.common;
    let (mut labels, mut templates) = (a.labels, a.templates);
    if let Some(grid) = &a.grid {
        skyscribe::eval::read_grid(grid, &mut labels, &mut templates)?;
    }
    let chips = a.chips.options();
    let ds = skyscribe::data::open(&a.dataset, a.split.as_deref(), &chips)?;
    let label_sets: Vec<LabelSet> = labels
        .iter()
        .map(|l| LabelSet::parse(l))
        .collect::<Result<_>>()?;
    skyscribe::eval::template_variants(&templates)?;
    skyscribe::eval::check_label_sets(&ds, &label_sets)?;
    let clip = common.load_clip(&common.model())?;
    if templates.is_empty() && !clip.defaults.templates.is_empty() {
        templates = clip.defaults.templates.clone();
        report(&format!(
            "templates ({}'s {}): {}",
            clip.source.spec,
            skyscribe::hub::DEFAULTS_FILE,
            skyscribe::labels::Templates::parse(&templates)?.describe()
        ));
    }
    let (embeddings, stats) =
        super::common::embed_labelled(&clip, common, &a.cache, &ds.samples, false)?;
    let failed = stats.failed.len();
    if failed == ds.samples.len() {
        // No summary of nothing: the run fails (exit 1) with the count.
        report(&format!(
            "none of the {failed} images of {} could be read; nothing to evaluate",
            ds.name
        ));
        return Ok(failed);
    }
    let eval =
        skyscribe::eval::evaluate(&clip, &ds, &embeddings, &label_sets, &templates, a.k, stats)?;
    if let Some(dir) = &a.report {
        skyscribe::eval::report::write(&eval, dir)?;
    }
    let mut out = Out::new();
    if common.jsonl {
        for p in &eval.predictions {
            out.json(p)?;
        }
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            summary: &'a skyscribe::eval::Evaluation,
        }
        out.json(&Summary { summary: &eval })?;
    } else {
        out.line(&format!(
            "{} — {} images evaluated of {}",
            eval.dataset, eval.evaluated, eval.images
        ))?;
        out.line(&format!(
            "embeddings: {} encoded, {} from cache, {} corrupt entries recomputed",
            eval.encode.encoded, eval.encode.from_cache, eval.encode.corrupt_entries
        ))?;
        for g in &eval.grid {
            let what = match (&g.single, &g.multi) {
                (Some(s), _) => format!(
                    "top-1 {:.1} %  top-{} {:.1} %  macro F1 {:.1} %",
                    100.0 * s.top1,
                    s.k,
                    100.0 * s.topk,
                    100.0 * s.macro_f1
                ),
                (_, Some(m)) => format!(
                    "mAP {:.1} %  ≥1 in top-{} {:.1} %  all in top-{} {:.1} %",
                    100.0 * m.mean_average_precision,
                    m.k,
                    100.0 * m.at_least_one_in_top_k,
                    m.k,
                    100.0 * m.all_in_top_k
                ),
                _ => String::new(),
            };
            out.line(&format!(
                "  {} {} {what}",
                fit(&g.labels, 28),
                fit(&g.templates, 40)
            ))?;
        }
        if let Some(dir) = &a.report {
            out.line(&format!("report: {}", dir.join("report.md").display()))?;
        }
    }
    Ok(failed)
}

#[derive(Args)]
pub struct CaptionsArgs {
    /// `{"input": "<path>", "caption": "..."}` lines, as `caption --jsonl` writes them.
    #[arg(long, conflicts_with_all = ["captioner", "nearest_neighbour"])]
    predictions: Option<PathBuf>,
    /// RSICD `captions.jsonl` or COCO caption JSON; matched to predictions by file name
    /// (default: the captions of --data).
    #[arg(long)]
    references: Option<PathBuf>,
    /// Caption the images of --data with this captioner directory (or
    /// skyscribe-mini-captioner).
    #[arg(long, conflicts_with = "nearest_neighbour")]
    captioner: Option<String>,
    /// Baseline: caption each image of --data with the first caption of the most similar
    /// image (cosine of CLIP image embeddings) of this captioned set, e.g. rsicd:TRAIN.
    #[arg(long)]
    nearest_neighbour: Option<String>,
    /// The images to caption and their references: rsicd:DIR, coco:FILE.json or
    /// parquet:FILE.parquet.
    #[arg(long)]
    data: Option<String>,
    /// CLIP model (default: the captioner's own; for --nearest-neighbour, the built-in
    /// skyscribe-mini).
    #[arg(long)]
    clip: Option<String>,
    /// Use --clip with the captioner even though it was trained on another CLIP.
    #[arg(long)]
    force_clip: bool,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Also write the generated captions here (JSON Lines).
    #[arg(long)]
    save_predictions: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Where the models run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Score the captions as they are, without lower-casing or dropping punctuation.
    #[arg(long)]
    pretokenized: bool,
    /// Per-image scores as JSON Lines, then the corpus scores.
    #[arg(long)]
    jsonl: bool,
}

fn captions(a: CaptionsArgs) -> Result<usize> {
    let (predictions, refs, refs_name) = match &a.predictions {
        Some(file) => {
            let references = a
                .references
                .as_deref()
                .context("--predictions needs --references (the reference captions)")?;
            (
                read_predictions(file)?,
                read_references(references)?,
                references.display().to_string(),
            )
        }
        None => {
            if a.captioner.is_none() && a.nearest_neighbour.is_none() {
                bail!("give --predictions FILE, --captioner DIR or --nearest-neighbour DATA");
            }
            let (rows, data) = generate_captions(&a)?;
            match &a.references {
                Some(r) => (rows, read_references(r)?, r.display().to_string()),
                None => (
                    rows,
                    references_of(&data),
                    a.data.clone().unwrap_or_default(),
                ),
            }
        }
    };
    let rows = match_references(&predictions, &refs, &refs_name, a.pretokenized)?;
    let uncovered = refs.len() - rows.len();
    if uncovered > 0 {
        report(&format!(
            "{uncovered} of the {} reference images in {refs_name} have no prediction; scoring \
             the {} that do",
            refs.len(),
            rows.len()
        ));
    }
    let pairs: Vec<_> = rows.iter().map(|r| r.pair()).collect();
    let (corpus, per) = score(&pairs);
    let mut out = Out::new();
    if a.jsonl {
        for (r, s) in rows.iter().zip(&per) {
            out.line(&json!({"input": r.input, "scores": s}).to_string())?;
        }
        out.line(
            &json!({"corpus": corpus, "images": rows.len(), "references_without_prediction": uncovered})
                .to_string(),
        )?;
    } else {
        let note = if uncovered > 0 {
            format!(" ({uncovered} reference images without a prediction left out)")
        } else {
            String::new()
        };
        out.line(&format!("{} images{note}", rows.len()))?;
        for (k, b) in corpus.bleu.iter().enumerate() {
            out.line(&format!("  BLEU-{}   {:.4}", k + 1, b))?;
        }
        out.line(&format!(
            "  METEOR   {:.4}  (exact + stem modules)\n  ROUGE-L  {:.4}\n  CIDEr-D  {:.4}",
            corpus.meteor, corpus.rouge_l, corpus.cider_d
        ))?;
    }
    Ok(0)
}

/// `(input, caption)` pairs generated for `--data` by a captioner or the nearest-neighbour
/// baseline, and the `--data` set itself (its captions are the default references).
fn generate_captions(a: &CaptionsArgs) -> Result<(Vec<(String, String)>, CaptionedImages)> {
    let spec = a
        .data
        .as_deref()
        .context("--captioner and --nearest-neighbour need --data (the images to caption)")?;
    let data = skyscribe::data::open_captions(spec)?;
    let dev = a.device.device()?;
    let open_cache = |clip: &ClipEncoder| -> Result<Option<EmbeddingCache>> {
        a.cache
            .dir()
            .map(|dir| EmbeddingCache::open(&dir, clip, &DecodeOptions::default()))
            .transpose()
    };
    let paths =
        |d: &CaptionedImages| -> Vec<PathBuf> { d.items.iter().map(|i| i.path.clone()).collect() };
    let captions: Vec<String> = if let Some(spec) = &a.captioner {
        let cap = Captioner::load_spec(spec, &dev)?;
        let clip_spec = a.clip.clone().unwrap_or_else(|| cap.clip_model_spec());
        let clip = ClipEncoder::load(&clip_spec, &dev)?;
        cap.check_clip(&clip, a.force_clip)?;
        let embeds = embed_images(&clip, &paths(&data), open_cache(&clip)?.as_ref(), false)?;
        let (how, opts) = a.decoding.resolve()?;
        cap.captions_with_progress(&embeds, how, &opts, false)?
    } else {
        let train_spec = a.nearest_neighbour.as_deref().expect("one source is given");
        let clip_spec = a.clip.as_deref().unwrap_or(skyscribe::builtin::MINI_CLIP);
        let clip = ClipEncoder::load(clip_spec, &dev)?;
        let cache = open_cache(&clip)?;
        let train = skyscribe::data::open_captions(train_spec)?;
        let train_e = embed_images(&clip, &paths(&train), cache.as_ref(), false)?;
        let test_e = embed_images(&clip, &paths(&data), cache.as_ref(), false)?;
        let first: Vec<&str> = train.items.iter().map(|i| i.captions[0].as_str()).collect();
        nearest_neighbour_captions(&train_e, &first, &test_e)
    };
    let rows: Vec<(String, String)> = data
        .items
        .iter()
        .map(|i| i.path.display().to_string())
        .zip(captions)
        .collect();
    if let Some(path) = &a.save_predictions {
        save_predictions(path, &rows)?;
    }
    Ok((rows, data))
}

fn save_predictions(path: &Path, rows: &[(String, String)]) -> Result<()> {
    let text: String = rows
        .iter()
        .map(|(i, c)| format!("{}\n", json!({"input": i, "caption": c})))
        .collect();
    skyscribe::atomic::write_file(path, text.as_bytes())
}

#[derive(Args)]
pub struct BenchmarkArgs {
    /// A CLIP model to measure (folder, built-in name or hub id); repeat to compare. Default:
    /// the built-in skyscribe-mini.
    #[arg(long = "model")]
    models: Vec<String>,
    /// A captioner (folder or built-in name) for the suite's captions tasks, which are skipped
    /// without one.
    #[arg(long)]
    captioner: Option<String>,
    /// The suite, a TOML file of [[task]] entries (default: the built-in
    /// benchmarks/default.toml).
    #[arg(long)]
    suite: Option<PathBuf>,
    /// The results folder: a JSON per (model, task), results.csv, results.md.
    #[arg(long, default_value = "benchmark")]
    out: PathBuf,
    /// The data folder `${DATA}` stands for (default: SKYSCRIBE_DATA, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run every task again, even those whose result is already in --out.
    #[arg(long)]
    rerun: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch_size: usize,
    #[command(flatten)]
    cache: CacheArgs,
    /// Where the models run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Print each result as a JSON line instead of the table.
    #[arg(long)]
    jsonl: bool,
}

/// What became of one task of `eval benchmark`.
enum Outcome {
    /// Found in `--out` for the same model and suite entry.
    Reused(skyscribe::eval::benchmark::TaskResult),
    Ran(Result<skyscribe::eval::benchmark::TaskResult>),
}

fn benchmark(a: BenchmarkArgs) -> Result<usize> {
    use skyscribe::eval::benchmark::{self as bench, RunOptions, Suite, TaskKind, TaskResult};
    let data = a.data.clone().unwrap_or_else(skyscribe::data_root);
    let suite = match &a.suite {
        Some(path) => Suite::from_file(path, &data)?,
        None => Suite::default_suite(&data)?,
    };
    let models = if a.models.is_empty() {
        vec![skyscribe::builtin::MINI_CLIP.to_string()]
    } else {
        a.models.clone()
    };
    let device = a.device.device()?;
    let decode = DecodeOptions::default();
    let opts = RunOptions {
        batch_size: a.batch_size,
        decode: &decode,
        quiet: a.jsonl,
    };
    let mut results: Vec<TaskResult> = Vec::new();
    let mut failed = 0;
    let mut out = Out::new();
    // A result is saved as soon as it exists (one found in --out is kept as it is); a failure
    // is reported and the suite goes on.
    let mut finish = |outcome: Outcome, what: &str| -> Result<()> {
        match outcome {
            Outcome::Reused(r) => {
                report(&format!("{what}: already in {}", a.out.display()));
                results.push(r);
            }
            Outcome::Ran(Ok(r)) => {
                bench::save(&a.out, &r)?;
                let summary: Vec<String> =
                    r.metrics.iter().map(|(k, v)| format!("{k} {v}")).collect();
                report(&format!(
                    "{what}: {} ({:.1} s)",
                    summary.join(", "),
                    r.seconds
                ));
                results.push(r);
            }
            Outcome::Ran(Err(e)) => {
                failed += 1;
                report(&format!("{what}: failed: {e:#}"));
            }
        }
        Ok(())
    };
    let reuse = |model: &str, spec: &bench::TaskSpec| -> Option<TaskResult> {
        if a.rerun {
            None
        } else {
            bench::existing(&a.out, model, spec)
        }
    };
    for model in &models {
        let mut clip: Option<(ClipEncoder, Option<EmbeddingCache>)> = None;
        let mut load_error: Option<String> = None;
        for spec in suite.tasks.iter().filter(|t| t.task != TaskKind::Captions) {
            let what = format!("{} {} — {model}", spec.dataset, spec.task.name());
            if let Some(r) = reuse(model, spec) {
                finish(Outcome::Reused(r), &what)?;
                continue;
            }
            if clip.is_none() && load_error.is_none() {
                match ClipEncoder::load(model, &device)
                    .and_then(|c| Ok((a.cache.open(&c, &decode)?, c)))
                {
                    Ok((cache, c)) => clip = Some((c, cache)),
                    Err(e) => load_error = Some(format!("{e:#}")),
                }
            }
            let r = match (&clip, &load_error) {
                (Some((c, cache)), _) => match spec.task {
                    TaskKind::ZeroShot => bench::zero_shot(c, model, spec, cache.as_ref(), &opts),
                    _ => bench::retrieval(c, model, spec, cache.as_ref(), &opts),
                },
                (None, e) => Err(anyhow::anyhow!(
                    "the model does not load: {}",
                    e.as_deref().unwrap_or("?")
                )),
            };
            finish(Outcome::Ran(r), &what)?;
        }
    }
    for spec in suite.tasks.iter().filter(|t| t.task == TaskKind::Captions) {
        let Some(captioner) = &a.captioner else {
            report(&format!(
                "{} captions: skipped (give --captioner to run it)",
                spec.dataset
            ));
            continue;
        };
        let what = format!("{} captions — {captioner}", spec.dataset);
        if let Some(r) = reuse(captioner, spec) {
            finish(Outcome::Reused(r), &what)?;
            continue;
        }
        let r = bench::captions(captioner, spec, a.cache.dir().as_deref(), &device, &opts);
        finish(Outcome::Ran(r), &what)?;
    }
    if results.is_empty() {
        bail!(
            "no task of {} could be run: its data sets are read under {} (--data DIR, else \
             SKYSCRIBE_DATA, else ../shared/data); get EuroSAT and RSICD as the README's tour \
             section says, or give --suite FILE with tasks over data you have",
            suite.name,
            data.display()
        );
    }
    bench::write_tables(&a.out, &results)?;
    if a.jsonl {
        for r in &results {
            out.json(r)?;
        }
    } else {
        let md = std::fs::read_to_string(a.out.join("results.md"))?;
        out.line(md.trim_end())?;
        out.line(&format!(
            "\nwrote {} (and a JSON per model and task)",
            a.out.join("results.csv").display()
        ))?;
    }
    Ok(failed)
}
