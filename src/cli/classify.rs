//! `train classifier`, `eval classify` and `eval few-shot`: classifiers learned from labelled
//! examples (see [`skyscribe::classify`]), measured as `eval zero-shot` measures label sets.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use skyscribe::classify::fit::{Examples, Options, draw_shots, train};
use skyscribe::classify::{
    Classifier, Method, Provenance, TrainSettings, train_classifier as train_classifier_on,
};
use skyscribe::data::{ChipOptions, Sample};
use skyscribe::encoder::ClipEncoder;
use skyscribe::labels::LabelSet;
use skyscribe::scan::ScanOptions;
use skyscribe::scene::{Scene, SceneOptions};

use super::common::{CacheArgs, ChipArgs, CommonArgs};
use super::output::{Out, report};

#[derive(Args)]
pub struct TrainClassifierArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Labelled images: folder:DIR (class subfolders), jsonl:FILE, rsicd-scenes:IMAGES,
    /// dota:DIR, xview:DIR|GEOJSON (one class per image or chip), or
    /// polygons:AREAS.geojson@SCENE.tif (training areas drawn over a scene: the tiles whose
    /// centre falls in a Polygon, or that hold a Point, of a feature with a `class` or `label`
    /// property become that class's examples).
    #[arg(long)]
    data: String,
    /// Keep only the images this file lists (paths relative to the data set, one a line).
    #[arg(long)]
    split: Option<PathBuf>,
    /// The classes' wordings (a preset, file or a,b,c): their zero-shot classifier is the prior
    /// a few-shot fit starts from and is pulled towards.
    #[arg(long)]
    labels: Option<String>,
    /// Template(s) for --labels (default: the model's own, else CLIP's).
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Train on K examples of every class, drawn with --seed (a class with fewer is an error).
    #[arg(long, value_name = "K")]
    shots: Option<usize>,
    /// Seed of the shots drawn and of the held-out examples of the search for C.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto (zero-shot-prior at one shot with --labels, else linear: as measured best),
    /// linear, prototype or zero-shot-prior (needs --labels).
    #[arg(long, value_enum, default_value_t = Method::Auto)]
    method: Method,
    /// A fixed C (scikit-learn's inverse penalty) instead of the search on held-out examples.
    #[arg(long)]
    c: Option<f64>,
    /// The classifier file to write (safetensors).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    chips: ChipArgs,
    /// polygons: tile side in scene pixels (default 224, as `scan`; train and scan with the
    /// same tiles).
    #[arg(long)]
    tile: Option<u32>,
    /// polygons: pixels between tile origins (default: half the tile, as `scan`).
    #[arg(long)]
    stride: Option<u32>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Labelled images ready to embed: samples with one class each, and the classes in a stable
/// order.
struct Labelled {
    name: String,
    classes: Vec<String>,
    samples: Vec<Sample>,
}

/// Opens `--data` (a data set kind) as single-label samples; classes no image uses are left
/// out (with a note), images with several labels refused.
fn open_labelled(spec: &str, split: Option<&Path>, chips: &ChipOptions) -> Result<Labelled> {
    let ds = skyscribe::data::open(spec, split, chips)?;
    let several = ds.samples.iter().filter(|s| s.labels.len() != 1).count();
    if several > 0 {
        let first = ds
            .samples
            .iter()
            .find(|s| s.labels.len() != 1)
            .expect("counted");
        bail!(
            "{spec}: {several} image(s) have {} labels (e.g. {}: {:?}); a classifier learns one \
             class per image — keep one label per image",
            if first.labels.is_empty() {
                "no"
            } else {
                "several"
            },
            first.image.display(),
            first.labels
        );
    }
    let used: Vec<String> = ds
        .classes
        .iter()
        .filter(|c| ds.samples.iter().any(|s| &s.labels[0] == *c))
        .cloned()
        .collect();
    if used.len() < ds.classes.len() {
        let unused: Vec<&str> = ds
            .classes
            .iter()
            .filter(|c| !used.contains(c))
            .map(String::as_str)
            .collect();
        report(&format!(
            "{spec}: no image of class(es) {}; the classifier leaves them out",
            unused.join(", ")
        ));
    }
    Ok(Labelled {
        name: ds.name,
        classes: used,
        samples: ds.samples,
    })
}

/// Embeds `data` (through the cache) into examples; unreadable images are reported and left
/// out.
fn embed_examples(
    clip: &ClipEncoder,
    common: &CommonArgs,
    cache: &CacheArgs,
    data: &Labelled,
    quiet: bool,
) -> Result<Examples> {
    let (embeddings, stats) =
        super::common::embed_labelled(clip, common, cache, &data.samples, quiet)?;
    let dim = clip.model.config().projection_dim;
    let mut ex = Examples::new(data.classes.clone(), dim);
    for (s, e) in data.samples.iter().zip(&embeddings) {
        let Some(e) = e else { continue };
        let Some(c) = data.classes.iter().position(|c| c == &s.labels[0]) else {
            continue;
        };
        ex.push(&s.image.display(), e, c)?;
    }
    if !stats.failed.is_empty() {
        report(&format!(
            "{}: {} of {} images could not be read and were left out",
            data.name,
            stats.failed.len(),
            data.samples.len()
        ));
    }
    Ok(ex)
}

pub fn train_classifier(a: TrainClassifierArgs) -> Result<usize> {
    let settings = TrainSettings {
        method: a.method,
        c: a.c,
        seed: a.seed,
        labels: a.labels.clone(),
        templates: a.templates.clone(),
    };
    settings.check()?;
    if a.shots == Some(0) {
        bail!("--shots must be at least 1");
    }
    skyscribe::atomic::check_writable(&a.out, "--out")?;
    let chips = a.chips.options();
    let clip = a.common.load_clip(&a.common.model())?;
    let data = if let Some(rest) = a.data.strip_prefix("polygons:") {
        if a.split.is_some() {
            bail!("--split applies to data sets of images, not to polygons:");
        }
        let tile = a.tile.unwrap_or(224);
        let scan = ScanOptions {
            tile,
            stride: a.stride.unwrap_or(tile.div_ceil(2)),
            batch_size: a.common.batch_size,
        };
        if scan.tile == 0 || scan.stride == 0 {
            bail!("--tile and --stride must be at least 1 pixel");
        }
        polygon_examples(rest, &clip, &a.common, &scan)?
    } else {
        if a.tile.is_some() || a.stride.is_some() {
            bail!(
                "--tile and --stride cut the scene of polygons: data; use --chip-size for dota/xview"
            );
        }
        let mut d = open_labelled(&a.data, a.split.as_deref(), &chips)?;
        if let Some(k) = a.shots {
            // The shots are drawn from the list, before anything is embedded.
            let (idx, y): (Vec<usize>, Vec<usize>) = d
                .samples
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, d.classes.iter().position(|c| c == &s.labels[0])?)))
                .unzip();
            let drawn = draw_shots(&y, &d.classes, k, a.seed)
                .with_context(|| format!("{}: cannot draw the shots", d.name))?;
            d.samples = drawn.iter().map(|&j| d.samples[idx[j]].clone()).collect();
        }
        let ex = embed_examples(&clip, &a.common, &a.cache, &d, a.common.jsonl)?;
        (d.name, ex)
    };
    let (name, mut ex) = data;
    ex.check_every_class_has_examples(&name)?;
    if let (Some(k), true) = (a.shots, a.data.starts_with("polygons:")) {
        ex = ex
            .shots(k, a.seed)
            .with_context(|| format!("{name}: cannot draw the shots"))?;
    }
    let provenance = Provenance {
        data: a.data.clone(),
        split: a.split.as_ref().map(|p| p.display().to_string()),
        shots: a.shots,
    };
    let classifier = train_classifier_on(&clip, &ex, &settings, &provenance, report)?;
    let seconds = classifier.info.training.seconds;
    classifier.save(&a.out)?;
    let mut out = Out::new();
    if a.common.jsonl {
        out.json(&json!({ "classifier": a.out.display().to_string(), "info": classifier.info }))?;
    } else {
        let info = &classifier.info;
        out.line(&format!(
            "{}: {} classes, {} examples, method {}",
            a.out.display(),
            info.classes.len(),
            info.training.examples,
            info.method.name()
        ))?;
        if let Some(r) = &info.regularisation {
            let how = if r.folds > 1 {
                format!("{} ({} folds)", r.chosen_by, r.folds)
            } else {
                r.chosen_by.clone()
            };
            out.line(&format!("  C = {} (chosen by {how})", r.c))?;
        }
        out.line(&format!(
            "  training accuracy {:.1} %, fitted in {:.2} s ({} iterations)",
            100.0 * info.training.training_accuracy,
            seconds,
            info.training.iterations
        ))?;
    }
    Ok(0)
}

/// `AREAS.geojson@SCENE`: the training areas file and the scene (the first `@` after which
/// the part before names an existing file).
fn split_polygons_spec(spec: &str) -> Result<(PathBuf, String)> {
    for (i, _) in spec.match_indices('@') {
        let (areas, scene) = (&spec[..i], &spec[i + 1..]);
        if Path::new(areas).is_file() && !scene.is_empty() {
            return Ok((PathBuf::from(areas), scene.to_string()));
        }
    }
    match spec.split_once('@') {
        Some((areas, _)) => bail!("polygons:{spec}: {areas}: no such training areas file"),
        None => bail!("polygons:{spec}: expected polygons:AREAS.geojson@SCENE.tif"),
    }
}

/// The examples of training areas over a scene: every tile `scan` lays (same tile and
/// stride) whose centre is in a class's polygon, or that holds a class's point. Tiles in
/// areas of two classes, and wholly nodata tiles, are left out and counted.
fn polygon_examples(
    spec: &str,
    clip: &ClipEncoder,
    common: &CommonArgs,
    scan: &ScanOptions,
) -> Result<(String, Examples)> {
    use skyscribe::classify::polygons::TrainingAreas;
    let (areas_file, scene_name) = split_polygons_spec(spec)?;
    let areas = TrainingAreas::read(&areas_file)?;
    let opts = SceneOptions {
        bands: common.bands.as_ref().map(|b| b.0.clone()),
        ..Default::default()
    };
    let mut scene = Scene::open(Path::new(&scene_name), &opts)?;
    let georef = scene.georef.clone().with_context(|| {
        format!(
            "{scene_name}: the scene has no georeferencing ({}): training areas cannot be placed \
             on it",
            scene.no_georef.as_deref().unwrap_or("no transform and CRS")
        )
    })?;
    if let Some(note) = &georef.datum_note {
        report(&format!("{scene_name}: warning: {note}"));
    }
    // Tiles first, so that areas outside the scene are named before anything is embedded.
    let grid = skyscribe::scan::tile_grid(&scene, scan)?;
    let mut wanted: std::collections::HashMap<skyscribe::scan::Rect, usize> = Default::default();
    let mut ambiguous = 0;
    for &rect in &grid {
        let Some(ring) = skyscribe::scan::maps::tile_ring(Some(&georef), rect)? else {
            continue;
        };
        let (cx, cy) = (
            rect.0 as f64 + rect.2 as f64 / 2.0,
            rect.1 as f64 + rect.3 as f64 / 2.0,
        );
        let Ok((lon, lat)) = georef.pixel_to_lon_lat(cx, cy) else {
            continue;
        };
        match areas.classes_of_tile([lon, lat], &ring).as_slice() {
            [] => {}
            [c] => {
                wanted.insert(rect, *c);
            }
            _ => ambiguous += 1,
        }
    }
    let counts: Vec<usize> = (0..areas.classes.len())
        .map(|c| wanted.values().filter(|&&v| v == c).count())
        .collect();
    if wanted.is_empty() {
        let b = areas.bounds;
        bail!(
            "{}: no training area covers a tile of {scene_name} (the areas span longitude {:.5} \
             to {:.5}, latitude {:.5} to {:.5}); are they drawn over this scene?",
            areas_file.display(),
            b[0],
            b[2],
            b[1],
            b[3]
        );
    }
    let missing: Vec<&str> = counts
        .iter()
        .zip(&areas.classes)
        .filter(|(n, _)| **n == 0)
        .map(|(_, c)| c.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: class(es) {} cover no tile's centre of {scene_name} (tile {} px, stride {}): \
             draw their areas inside the scene, larger than a tile",
            areas_file.display(),
            missing.join(", "),
            scan.tile,
            scan.stride
        );
    }
    if ambiguous > 0 {
        report(&format!(
            "{}: {ambiguous} tile(s) lie in areas of two classes and were left out",
            areas_file.display()
        ));
    }
    let dim = clip.model.config().projection_dim;
    let mut ex = Examples::new(areas.classes.clone(), dim);
    let bar = skyscribe::progress::items(grid.len(), "tiles", "encoding", common.jsonl);
    let mut nodata = 0;
    skyscribe::scan::scan_scene(clip, &mut scene, scan, |rect, e| {
        bar.inc(1);
        if let Some(&c) = wanted.get(&rect) {
            match e {
                Some(e) => ex.push(
                    &format!("{scene_name}#{},{},{},{}", rect.0, rect.1, rect.2, rect.3),
                    &e,
                    c,
                )?,
                None => nodata += 1,
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if nodata > 0 {
        report(&format!(
            "{scene_name}: {nodata} tile(s) in training areas are wholly nodata; left out"
        ));
    }
    Ok((format!("polygons:{spec}"), ex))
}

/// `--model`, else the model the classifier was trained on; loaded and checked.
pub fn clip_for_classifier(
    common: &CommonArgs,
    classifier: &Classifier,
    file: &Path,
) -> Result<ClipEncoder> {
    let spec = common
        .model
        .clone()
        .unwrap_or_else(|| classifier.info.model.spec.clone());
    let clip = common.load_clip(&spec)?;
    classifier.check_model(&clip, file)?;
    Ok(clip)
}

#[derive(Args)]
pub struct EvalClassifyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// A classifier file from `train classifier`.
    #[arg(long)]
    classifier: PathBuf,
    /// KIND:PATH — folder:DIR, rsicd-scenes:IMAGES, jsonl:FILE, dota:DIR, xview:DIR|GEOJSON.
    #[arg(long)]
    dataset: String,
    /// Keep only the images this file lists (paths relative to the dataset, one a line).
    #[arg(long)]
    split: Option<PathBuf>,
    /// k of top-k measures (default 5 single-label, 10 multi-label).
    #[arg(long)]
    k: Option<usize>,
    /// Write report.md, report.html, plots, CSV and JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    chips: ChipArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn eval_classify(a: EvalClassifyArgs) -> Result<usize> {
    let classifier = Classifier::load(&a.classifier)?;
    let ds = skyscribe::data::open(&a.dataset, a.split.as_deref(), &a.chips.options())?;
    let set = LabelSet::new(
        &a.classifier.display().to_string(),
        classifier
            .classes()
            .iter()
            .map(|c| skyscribe::labels::Label::plain(c))
            .collect(),
    )?;
    skyscribe::eval::check_label_sets(&ds, std::slice::from_ref(&set))?;
    let clip = clip_for_classifier(&a.common, &classifier, &a.classifier)?;
    let (embeddings, stats) =
        super::common::embed_labelled(&clip, &a.common, &a.cache, &ds.samples, false)?;
    let failed = stats.failed.len();
    if failed == ds.samples.len() {
        report(&format!(
            "none of the {failed} images of {} could be read; nothing to evaluate",
            ds.name
        ));
        return Ok(failed);
    }
    let what = format!(
        "classifier {} ({})",
        a.classifier.display(),
        classifier.info.method.name()
    );
    let eval = skyscribe::eval::evaluate_scorer(
        &clip.source.spec,
        &ds,
        &embeddings,
        &set,
        &what,
        &|e| classifier.probabilities(e),
        a.k,
        stats,
    )?;
    if let Some(dir) = &a.report {
        skyscribe::eval::report::write(&eval, dir)?;
    }
    let mut out = Out::new();
    if a.common.jsonl {
        for p in &eval.predictions {
            out.json(p)?;
        }
        out.json(&json!({ "summary": &eval }))?;
    } else {
        out.line(&format!(
            "{} — {} images evaluated of {}",
            eval.dataset, eval.evaluated, eval.images
        ))?;
        match (&eval.main.single, &eval.main.multi) {
            (Some(s), _) => out.line(&format!(
                "  {what}: top-1 {:.1} %  top-{} {:.1} %  macro F1 {:.1} %",
                100.0 * s.top1,
                s.k,
                100.0 * s.topk,
                100.0 * s.macro_f1
            ))?,
            (_, Some(m)) => out.line(&format!(
                "  {what}: mAP {:.1} %  ≥1 in top-{} {:.1} %",
                100.0 * m.mean_average_precision,
                m.k,
                100.0 * m.at_least_one_in_top_k
            ))?,
            _ => {}
        }
        if let Some(dir) = &a.report {
            out.line(&format!("report: {}", dir.join("report.md").display()))?;
        }
    }
    Ok(failed)
}

#[derive(Args)]
pub struct FewShotArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// KIND:PATH — folder:DIR, rsicd-scenes:IMAGES, jsonl:FILE, dota:DIR, xview:DIR|GEOJSON.
    #[arg(long)]
    dataset: String,
    /// The images shots are drawn from (paths relative to the dataset, one a line).
    #[arg(long)]
    train_split: PathBuf,
    /// The images every classifier is measured on.
    #[arg(long)]
    test_split: PathBuf,
    /// The classes' wordings: zero-shot as a line, and the zero-shot-prior method.
    #[arg(long)]
    labels: Option<String>,
    /// Template(s) for --labels (default: the model's own, else CLIP's).
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Shots per class to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16", value_parser = super::common::positive)]
    shots: Vec<usize>,
    /// Draws of the shots per K (seeds 0, 1, …).
    #[arg(long, default_value_t = 5, value_parser = super::common::positive)]
    seeds: usize,
    /// Methods to measure (default: linear, prototype, and with --labels zero-shot-prior and
    /// auto).
    #[arg(long, value_enum, value_delimiter = ',')]
    methods: Vec<Method>,
    /// Write few-shot.png, few-shot.csv, summary.json and report.md here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    chips: ChipArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// One point of the curve: a method at K shots over the seeds.
#[derive(serde::Serialize, Clone)]
pub struct CurvePoint {
    method: &'static str,
    shots: usize,
    mean: f64,
    std: f64,
    runs: usize,
}

pub fn few_shot(a: FewShotArgs) -> Result<usize> {
    let methods: Vec<Method> = if a.methods.is_empty() {
        let mut m = vec![Method::Linear, Method::Prototype];
        if a.labels.is_some() {
            m.extend([Method::ZeroShotPrior, Method::Auto]);
        }
        m
    } else {
        a.methods.clone()
    };
    if a.labels.is_none()
        && let Some(m) = methods.iter().find(|m| **m == Method::ZeroShotPrior)
    {
        bail!(
            "--methods {}: needs --labels (the classes' wordings)",
            m.name()
        );
    }
    let chips = a.chips.options();
    let train_data = open_labelled(&a.dataset, Some(&a.train_split), &chips)?;
    let test_data = open_labelled(&a.dataset, Some(&a.test_split), &chips)?;
    let clip = a.common.load_clip(&a.common.model())?;
    let quiet = a.common.jsonl;
    let train_ex = embed_examples(&clip, &a.common, &a.cache, &train_data, quiet)?;
    train_ex.check_every_class_has_examples(&train_data.name)?;
    let test_all = embed_examples(&clip, &a.common, &a.cache, &test_data, quiet)?;
    // The test examples in the training classes' order.
    let mut test = Examples::new(train_ex.classes.clone(), train_ex.dim);
    for i in 0..test_all.len() {
        let class = &test_all.classes[test_all.y[i]];
        let Some(c) = train_ex.classes.iter().position(|x| x == class) else {
            bail!(
                "{}: {} is of class {class}, which the training split has no image of",
                a.test_split.display(),
                test_all.names[i]
            );
        };
        test.x
            .extend_from_slice(&test_all.x[i * test_all.dim..(i + 1) * test_all.dim]);
        test.y.push(c);
        test.names.push(test_all.names[i].clone());
    }
    let prior = a
        .labels
        .as_deref()
        .map(|l| skyscribe::classify::text_prior(&clip, l, &a.templates, &train_ex.classes))
        .transpose()?
        .map(|(p, note)| {
            report(&note);
            p
        });
    let zeros = vec![0f32; train_ex.classes.len()];
    let zero_shot = prior
        .as_ref()
        .map(|p| skyscribe::classify::fit::accuracy(&test, &p.weight, &zeros))
        .transpose()?;
    let logit_scale = clip.model.logit_scale_exp();
    let mut out = Out::new();
    let runs = methods.len() * a.shots.len() * a.seeds;
    let bar = skyscribe::progress::items(runs, "fits", "few-shot", quiet);
    let mut points: Vec<CurvePoint> = Vec::new();
    let mut skipped = Vec::new();
    for &method in &methods {
        for &k in &a.shots {
            let mut accs = Vec::new();
            for seed in 0..a.seeds as u64 {
                bar.inc(1);
                let ex = match train_ex.shots(k, seed) {
                    Ok(ex) => ex,
                    Err(e) => {
                        skipped.push(format!("{k} shots: {e:#}"));
                        break;
                    }
                };
                let opts = Options {
                    method,
                    c: None,
                    seed,
                    logit_scale,
                };
                let t = train(&ex, prior.as_ref(), &opts)?;
                let acc = skyscribe::classify::fit::accuracy(&test, &t.weight, &t.bias)?;
                if quiet {
                    bar.suspend(|| {
                        out.json(&json!({
                            "method": method.name(),
                            "fitted": t.method.name(),
                            "shots": k,
                            "seed": seed,
                            "accuracy": acc,
                            "c": t.regularisation.as_ref().map(|r| r.c),
                        }))
                    })?;
                }
                accs.push(acc);
            }
            if accs.is_empty() {
                continue;
            }
            let n = accs.len() as f64;
            let mean = accs.iter().sum::<f64>() / n;
            let std = (accs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            points.push(CurvePoint {
                method: method.name(),
                shots: k,
                mean,
                std,
                runs: accs.len(),
            });
        }
    }
    bar.finish_and_clear();
    skipped.dedup();
    for s in &skipped {
        report(s);
    }
    // The probe on every training image, with its search for C, timed.
    let started = Instant::now();
    let all = train(
        &train_ex,
        None,
        &Options {
            method: Method::Linear,
            c: None,
            seed: 0,
            logit_scale,
        },
    )?;
    let all_seconds = started.elapsed().as_secs_f64();
    let all_acc = skyscribe::classify::fit::accuracy(&test, &all.weight, &all.bias)?;
    let all_c = all.regularisation.as_ref().map(|r| r.c);
    let all_data = json!({
        "examples": train_ex.len(),
        "accuracy": all_acc,
        "c": all_c,
        "seconds": all_seconds,
    });
    let summary = json!({
        "dataset": a.dataset,
        "model": clip.source.spec,
        "train_split": a.train_split.display().to_string(),
        "test_split": a.test_split.display().to_string(),
        "test_images": test.len(),
        "seeds": a.seeds,
        "zero_shot": zero_shot,
        "all_data": all_data,
        "curve": points,
    });
    if quiet {
        for p in &points {
            out.json(p)?;
        }
        out.json(&json!({ "summary": summary }))?;
    } else {
        out.line(&format!(
            "{} — {} test images, {} seeds; top-1 % (mean ± std)",
            a.dataset,
            test.len(),
            a.seeds
        ))?;
        let mut header = format!("{:<16}", "method");
        for k in &a.shots {
            header.push_str(&format!(" {:>12}", format!("{k}-shot")));
        }
        out.line(&header)?;
        for &method in &methods {
            let mut row = format!("{:<16}", method.name());
            for &k in &a.shots {
                let cell = points
                    .iter()
                    .find(|p| p.method == method.name() && p.shots == k)
                    .map(|p| format!("{:.1} ± {:.1}", 100.0 * p.mean, 100.0 * p.std))
                    .unwrap_or_else(|| "—".into());
                row.push_str(&format!(" {cell:>12}"));
            }
            out.line(&row)?;
        }
        if let Some(z) = zero_shot {
            out.line(&format!("zero-shot        {:.1}", 100.0 * z))?;
        }
        out.line(&format!(
            "all {} training images (linear, C = {}): {:.1}, fitted in {:.2} s",
            train_ex.len(),
            all_c.map_or("?".into(), |c| c.to_string()),
            100.0 * all_acc,
            all_seconds
        ))?;
    }
    if let Some(dir) = &a.report {
        write_few_shot_report(
            dir,
            &summary,
            &points,
            &methods,
            zero_shot,
            (train_ex.len(), all_acc),
        )?;
        if !quiet {
            out.line(&format!("report: {}", dir.join("report.md").display()))?;
        }
    }
    Ok(0)
}

/// few-shot.png, few-shot.csv, summary.json and report.md in `dir`.
fn write_few_shot_report(
    dir: &Path,
    summary: &serde_json::Value,
    points: &[CurvePoint],
    methods: &[Method],
    zero_shot: Option<f64>,
    (all_examples, all_acc): (usize, f64),
) -> Result<()> {
    use skyscribe::atomic::write_file;
    use skyscribe::eval::plot;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create report folder", dir.display()))?;
    let mut csv = String::from("method,shots,mean,std,runs\n");
    for p in points {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{}\n",
            p.method, p.shots, p.mean, p.std, p.runs
        ));
    }
    write_file(&dir.join("few-shot.csv"), csv.as_bytes())?;
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(summary)?.as_bytes(),
    )?;
    let series: Vec<plot::Series> = methods
        .iter()
        .map(|m| plot::Series {
            name: m.name().to_string(),
            points: points
                .iter()
                .filter(|p| p.method == m.name())
                .map(|p| (p.shots as f64, p.mean, p.std))
                .collect(),
        })
        .collect();
    let mut lines = Vec::new();
    if let Some(z) = zero_shot {
        lines.push(("zero-shot".to_string(), z));
    }
    let subtitle = format!(
        "{} · {} · mean ± std over {} seeds · test {} images",
        summary["model"].as_str().unwrap_or(""),
        summary["dataset"].as_str().unwrap_or(""),
        summary["seeds"],
        summary["test_images"]
    );
    plot::curves(
        &dir.join("few-shot.png"),
        &plot::Titles {
            title: "Accuracy against shots per class",
            subtitle: &subtitle,
        },
        &series,
        &lines,
        Some((format!("all {all_examples} (linear)"), all_acc)),
    )?;
    let mut md = String::from("# Few-shot classifiers\n\n");
    md.push_str(&format!(
        "`{}` on `{}`; trained on shots of `{}`, measured on `{}`.\n\n",
        summary["model"].as_str().unwrap_or(""),
        summary["dataset"].as_str().unwrap_or(""),
        summary["train_split"].as_str().unwrap_or(""),
        summary["test_split"].as_str().unwrap_or("")
    ));
    md.push_str("![accuracy against shots](few-shot.png)\n\n| method |");
    let mut shots: Vec<usize> = points.iter().map(|p| p.shots).collect();
    shots.sort();
    shots.dedup();
    for k in &shots {
        md.push_str(&format!(" {k}-shot |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(shots.len()));
    md.push('\n');
    for m in methods {
        md.push_str(&format!("| {} |", m.name()));
        for k in &shots {
            match points
                .iter()
                .find(|p| p.method == m.name() && p.shots == *k)
            {
                Some(p) => md.push_str(&format!(" {:.1} ± {:.1} |", 100.0 * p.mean, 100.0 * p.std)),
                None => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    if let Some(z) = zero_shot {
        md.push_str(&format!("\nZero-shot: {:.1} %. ", 100.0 * z));
    }
    md.push_str(&format!(
        "Linear probe on all {all_examples} training images: {:.1} %.\n",
        100.0 * all_acc
    ));
    write_file(&dir.join("report.md"), md.as_bytes())
}
