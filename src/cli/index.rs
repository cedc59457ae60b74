//! `index build`, `index info`, `index optimize`, `search` and `locate`: archive search over a
//! Parquet index, and patch scores inside one image.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use skyscribe::data::ChipOptions;
use skyscribe::index::build::{BuildOptions, build, complete_parts};
use skyscribe::index::locate::locate;
use skyscribe::index::searcher::{Engine, QuerySpec, Searcher};
use skyscribe::index::sheet::{SheetEntry, contact_sheet};
use skyscribe::index::{IndexMeta, InputChange, Shard, gather_items, plan_inputs};

use super::common::{CommonArgs, DeviceArg, gather, note_bands, positive};
use super::output::{Out, fit, report};

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Embed images into an index folder (Parquet parts), incrementally and resumably; one
    /// shard of many with --shard I/N or a scheduler's array variables.
    #[command(after_help = super::shell::examples::INDEX_BUILD)]
    Build(BuildArgs),
    /// What an index holds: its model, dimension, parts complete and rows.
    #[command(after_help = super::shell::examples::INDEX_INFO)]
    Info(InfoArgs),
    /// Build the approximate (HNSW) search graph over every part, for archives too large to
    /// scan quickly; search uses it until the parts change.
    #[command(after_help = super::shell::examples::INDEX_OPTIMIZE)]
    Optimize(OptimizeArgs),
}

#[derive(Args)]
pub struct OptimizeArgs {
    /// The index folder (every part complete).
    #[arg(long)]
    index: PathBuf,
    /// Neighbours kept per node above level 0 (HNSW's M; twice as many at level 0), 2 to 255:
    /// more is slower to build, more exact to search.
    #[arg(long, default_value_t = 16, value_parser = positive)]
    connections: usize,
    /// Candidates explored per insertion (efConstruction).
    #[arg(long, default_value_t = 128, value_parser = positive)]
    ef_construction: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    jsonl: bool,
}

fn optimize(a: OptimizeArgs) -> Result<usize> {
    let meta = skyscribe::index::ann::optimize(
        &a.index,
        skyscribe::index::ann::AnnOptions {
            connections: a.connections,
            ef_construction: a.ef_construction,
        },
        false,
    )?;
    Out::new().record(a.jsonl, &meta, || {
        format!(
            "{}: HNSW graph over {} vectors (M {}, efConstruction {}) built in {:.1} s; {}",
            a.index.display(),
            meta.rows,
            meta.connections,
            meta.ef_construction,
            meta.build_s,
            ann_recall_words(&meta)
        )
    })?;
    Ok(0)
}

pub fn run(cmd: IndexCommand) -> Result<usize> {
    match cmd {
        IndexCommand::Build(a) => build_index(a),
        IndexCommand::Info(a) => info(a),
        IndexCommand::Optimize(a) => optimize(a),
    }
}

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The index folder (created when absent).
    #[arg(long)]
    index: PathBuf,
    /// Build only shard I of N (0-based). Without it, SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT (a Slurm job array), or JOB_COMPLETION_INDEX with --shards (a
    /// Kubernetes Indexed Job), choose the shard; else the whole input is one part.
    #[arg(long, value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// The shard count, for JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_parser = positive)]
    shards: Option<usize>,
    /// Rows encoded between two saves of the work in progress (what a kill can cost).
    #[arg(long, default_value_t = 512, value_parser = positive)]
    checkpoint_every: usize,
    /// Chip side for scene data sets (dota, xview) and tile side for scene: inputs.
    #[arg(long, default_value_t = 300, value_parser = positive)]
    chip_size: usize,
    /// Chip stride for scene data sets (default: the chip size).
    #[arg(long, value_parser = positive)]
    chip_stride: Option<usize>,
    /// Index these inputs as well as those the index was built over (an existing index's
    /// inputs are recorded in its index.json; other inputs are refused without this or
    /// --replace).
    #[arg(long, conflicts_with = "replace")]
    add: bool,
    /// Make these inputs the index's only inputs: rows of files they do not name are dropped.
    #[arg(long)]
    replace: bool,
    /// How the vectors search reads are stored: f32, or f16 (half the bytes and memory; exact
    /// search's top 10 then differs from f32's in about one result in a thousand or fewer,
    /// docs/src/search.md). Default: the index's own, f32 for a new one; another than an
    /// existing index's is refused.
    #[arg(long, value_parser = super::common::vector_dtype)]
    dtype: Option<skyscribe::index::VectorDtype>,
    /// Image files, folders (walked), or data sets KIND:PATH (folder, rsicd, rsicd-scenes,
    /// jsonl, dota, xview), or scene:PATH (a GeoTIFF scene or a folder of them, or a COG by
    /// URL: https://…, s3://…, gs://…, az://…, tiled as `scan` tiles them, each tile with its
    /// WGS 84 bounds), or STAC items' visual assets (stac:ITEM, stac-search:API_URL).
    #[arg(required = true)]
    inputs: Vec<String>,
}

fn build_index(a: BuildArgs) -> Result<usize> {
    let shard = Shard::resolve(a.shard, a.shards, |k| std::env::var(k).ok())?;
    let chips = ChipOptions {
        size: a.chip_size as u32,
        stride: a.chip_stride.unwrap_or(a.chip_size) as u32,
        ..ChipOptions::default()
    };
    let change = match (a.add, a.replace) {
        (true, _) => InputChange::Add,
        (_, true) => InputChange::Replace,
        _ => InputChange::Same,
    };
    let inputs = plan_inputs(&a.index, &a.inputs, change)?;
    let (items, errors) = gather_items(&inputs, &chips)?;
    for e in &errors {
        report(&format!("{e:#}"));
    }
    if items.is_empty() {
        bail!("no images to index in {}", inputs.join(" "));
    }
    let spec = a.common.model();
    let clip = a.common.load_clip(&spec)?;
    let decode = a.common.decode();
    let options = BuildOptions {
        shard,
        batch_size: a.common.batch_size,
        decode: decode.clone(),
        checkpoint_every: a.checkpoint_every,
        quiet: false,
        inputs: Some(inputs),
        dtype: a.dtype,
    };
    let r = build(&a.index, &clip, &spec, &items, &options)?;
    note_bands(&decode);
    for w in &r.warnings {
        report(w);
    }
    for (image, why) in &r.failed {
        report(&format!("{image}: {why}"));
    }
    Out::new().record(a.common.jsonl, &r, || {
        format!(
            "shard {}: {} images — {} encoded, {} unchanged, {} resumed, {} dropped, {} unreadable{}\n\
             {}: {} of {} parts complete, {} vectors",
            r.shard,
            r.items,
            r.encoded,
            r.reused,
            r.resumed,
            r.dropped,
            r.failed.len(),
            if r.nodata > 0 {
                format!(", {} scene tiles wholly nodata (not indexed)", r.nodata)
            } else {
                String::new()
            },
            r.index,
            r.parts_complete,
            r.parts,
            r.count
        )
    })?;
    Ok(errors.len() + r.failed.len())
}

#[derive(Args)]
pub struct InfoArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
    /// Print one JSON line instead of text.
    #[arg(long)]
    jsonl: bool,
}

/// What a graph's measured recall means for `search --engine auto`, in words.
fn ann_recall_words(meta: &skyscribe::index::ann::AnnMeta) -> String {
    use skyscribe::index::ann::MIN_RECALL;
    match &meta.recall {
        Some(r) => format!(
            "recall@10 {:.3} at ef {} over {} sampled queries: `search --engine auto` {}",
            r.recall_at_10,
            r.ef,
            r.queries,
            if r.recall_at_10 >= MIN_RECALL {
                "uses it".to_string()
            } else {
                format!("searches exactly (under {MIN_RECALL})")
            }
        ),
        None => "recall never measured: `search --engine auto` searches exactly".into(),
    }
}

fn info(a: InfoArgs) -> Result<usize> {
    let meta = IndexMeta::read(&a.index)?;
    let (complete, count) = complete_parts(&a.index.join("parts"), &meta)?;
    let ann: Option<skyscribe::index::ann::AnnMeta> =
        std::fs::read(skyscribe::index::ann::ann_dir(&a.index).join("ann.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let mut out = Out::new();
    if a.jsonl {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            meta: &'a IndexMeta,
            parts_complete_now: usize,
            count_now: usize,
            /// The HNSW graph's record (`ann/ann.json`), when `index optimize` made one.
            ann: Option<&'a skyscribe::index::ann::AnnMeta>,
        }
        out.json(&Info {
            meta: &meta,
            parts_complete_now: complete,
            count_now: count,
            ann: ann.as_ref(),
        })?;
    } else {
        out.line(&format!(
            "{}: {count} vectors of dimension {} ({}, {} bytes a vector searched), {complete} of {} \
             parts complete",
            a.index.display(),
            meta.dim,
            meta.dtype,
            meta.vector_dtype().map_or(0, |d| d.bytes() * meta.dim),
            meta.shards
        ))?;
        out.line(&format!(
            "model {} (key {}), built by skyscribe {}",
            meta.model.spec,
            &meta.model.key[..16.min(meta.model.key.len())],
            meta.skyscribe_version
        ))?;
        out.line(&match &ann {
            Some(g) => format!(
                "engine: HNSW graph (M {}, efConstruction {}, {} vectors, built in {:.1} s); {}",
                g.connections,
                g.ef_construction,
                g.rows,
                g.build_s,
                ann_recall_words(g)
            ),
            None => "engine: exact (no HNSW graph; `index optimize` builds one)".into(),
        })?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct SearchArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
    /// A text to look for; repeatable. `W:TEXT` weighs it (rclip's syntax, e.g. `2:harbour`;
    /// write `1:10:30` for a text that starts with a number and a colon).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// An image to look for similar ones of; repeatable. `W:PATH` weighs it.
    #[arg(long = "image")]
    images: Vec<String>,
    /// A text to look away from (subtracted from the query); repeatable, `W:TEXT` weighs it.
    #[arg(long = "negative-text")]
    negative_texts: Vec<String>,
    /// An image to look away from; repeatable, `W:PATH` weighs it.
    #[arg(long = "negative-image")]
    negative_images: Vec<String>,
    /// How many results.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    top_k: usize,
    /// Print JSON Lines instead of a table.
    #[arg(long)]
    jsonl: bool,
    /// Also write a self-contained HTML contact sheet of the results here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// The CLIP model (default: the one that built the index; another is refused).
    #[arg(long)]
    model: Option<String>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Which engine answers.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    /// Candidates the HNSW graph explores per query (more: slower, nearer exact).
    #[arg(long, default_value_t = skyscribe::index::searcher::DEFAULT_EF, value_parser = positive)]
    ef: usize,
    /// Keep only images --classifier puts in this class (its best class), searched exactly
    /// among them.
    #[arg(long, requires = "classifier")]
    class: Option<String>,
    /// A classifier from `train classifier` (of the index's CLIP model), for --class.
    #[arg(long, requires = "class")]
    classifier: Option<std::path::PathBuf>,
}

pub fn search(a: SearchArgs) -> Result<usize> {
    if a.texts.is_empty() && a.images.is_empty() {
        bail!("an empty query: give at least one --text or --image");
    }
    if a.engine == Engine::Ann && a.class.is_some() {
        bail!("--class searches exactly among the class's images; leave out --engine ann");
    }
    let searcher = Searcher::open(
        &a.index,
        a.model.as_deref(),
        &a.device.device()?,
        a.engine == Engine::Exact,
    )?;
    let filter = match (&a.class, &a.classifier) {
        (Some(class), Some(file)) => {
            let classifier = skyscribe::classify::Classifier::load(file)?;
            Some(searcher.class_filter(classifier, file, class)?)
        }
        _ => None,
    };
    let q = searcher.query(&QuerySpec {
        texts: a.texts.clone(),
        images: a.images.clone(),
        negative_texts: a.negative_texts.clone(),
        negative_images: a.negative_images.clone(),
    })?;
    let index = &searcher.index;
    for w in &index.warnings {
        report(w);
    }
    let hits = searcher.search(&q, a.top_k, a.engine, a.ef, filter.as_ref(), report)?;
    let mut out = Out::new();
    if !a.jsonl {
        out.line(&format!(
            "{:>4}  {:>6}  id  (of {} vectors)",
            "rank",
            "score",
            index.len()
        ))?;
    }
    for (rank, &(row, score)) in hits.iter().enumerate() {
        if a.jsonl {
            out.json(&searcher.hit(rank + 1, row, score))?;
        } else {
            out.line(&format!(
                "{:>4}  {score:>6.4}  {}",
                rank + 1,
                index.ids[row]
            ))?;
        }
    }
    if let Some(html) = &a.html {
        let entries: Vec<SheetEntry> = hits
            .iter()
            .enumerate()
            .map(|(rank, &(row, score))| SheetEntry {
                rank: rank + 1,
                score,
                id: &index.ids[row],
                path: &index.paths[row],
                chip: index.chips[row],
            })
            .collect();
        let mut title: Vec<String> = a.texts.iter().map(|t| format!("“{t}”")).collect();
        title.extend(a.images.iter().cloned());
        title.extend(a.negative_texts.iter().map(|t| format!("not “{t}”")));
        title.extend(a.negative_images.iter().map(|t| format!("not {t}")));
        let page = contact_sheet(&title.join(" + "), &entries, &searcher.decode);
        skyscribe::atomic::write_file(html, page.as_bytes())?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct LocateArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// What to look for.
    #[arg(long)]
    text: String,
    /// Patch side in pixels (default: a third of the image's shorter side, at least 32).
    #[arg(long, value_parser = positive)]
    patch: Option<usize>,
    /// Pixels between patches (default: half the patch).
    #[arg(long, value_parser = positive)]
    stride: Option<usize>,
    /// Write a heatmap PNG of each image here (`<name>.heatmap.png`), with a colour bar.
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// The cosines --heatmap's colours span: auto (each image stretched to its own patches'
    /// range, as its legend says) or LOW,HIGH (the same in every picture).
    #[arg(long, default_value = "auto", requires = "heatmap")]
    heatmap_scale: skyscribe::imagery::heatmap::Scale,
    /// Images or folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn locate_text(a: LocateArgs) -> Result<usize> {
    if a.text.trim().is_empty() {
        bail!("--text: an empty text");
    }
    if a.common.jpeg_draft {
        bail!("--jpeg-draft does not apply to locate: its patches are cut from every pixel");
    }
    let (paths, mut failed) = gather(&a.inputs);
    let clip = a.common.load_clip(&a.common.model())?;
    let decode = a.common.decode();
    let text = clip
        .embed_texts(std::slice::from_ref(&a.text), 1)?
        .remove(0);
    if let Some(dir) = &a.heatmap {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut out = Out::new();
    for path in &paths {
        let img = match skyscribe::imagery::load_rgb(path, &decode) {
            Ok(img) => img,
            Err(e) => {
                report(&format!("{e:#}"));
                failed += 1;
                continue;
            }
        };
        let patch = match a.patch {
            // Larger than the image, it would be cut to the image and scored as one patch of
            // another size than asked for.
            Some(p) if p as u32 > img.width.min(img.height) => bail!(
                "--patch {p}: {input} is {}×{} px, smaller than one patch; give --patch {} or \
                 less",
                img.width,
                img.height,
                img.width.min(img.height),
                input = path.display()
            ),
            Some(p) => p as u32,
            None => (img.width.min(img.height) / 3).max(32),
        };
        let stride = a.stride.map_or((patch / 2).max(1), |s| s as u32);
        let scores = locate(&clip, &img, &text, patch, stride, a.common.batch_size)?;
        let input = path.display().to_string();
        if a.common.jsonl {
            #[derive(Serialize)]
            struct Line<'a> {
                input: &'a str,
                patch: [u32; 4],
                score: f32,
            }
            for s in &scores {
                let (x, y, w, h) = s.patch;
                out.json(&Line {
                    input: &input,
                    patch: [x, y, w, h],
                    score: s.score,
                })?;
            }
        } else {
            let mut best: Vec<_> = scores.iter().collect();
            best.sort_by(|a, b| b.score.total_cmp(&a.score));
            out.line(&format!(
                "{input}: {} patches of {patch} px, best for “{}”:",
                scores.len(),
                a.text
            ))?;
            for s in best.iter().take(5) {
                let (x, y, w, h) = s.patch;
                out.line(&format!(
                    "  {:>6.4}  {}",
                    s.score,
                    fit(&format!("x {x} y {y} {w}×{h}"), 24)
                ))?;
            }
        }
        if let Some(dir) = &a.heatmap {
            let cells: Vec<_> = scores.iter().map(|s| (s.patch, s.score)).collect();
            use skyscribe::imagery::heatmap::{Scale, overlay, with_colour_bar};
            let (pic, (low, high)) = overlay(&img, &cells, 0.6, a.heatmap_scale);
            let legend = format!(
                "mean cosine similarity of the patches to {:?}; {}",
                a.text,
                match a.heatmap_scale {
                    Scale::Auto => "stretched to this image's range",
                    Scale::Fixed { .. } => "fixed scale",
                }
            );
            let pic = with_colour_bar(&pic, (low, high), &legend);
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            let file = dir.join(format!("{stem}.heatmap.png"));
            pic.save_png(&file)?;
            super::output::wrote_file();
            report(&format!(
                "heatmap {}: {legend}, {low:.4} (dark purple) to {high:.4} (bright yellow)",
                file.display()
            ));
        }
    }
    note_bands(&decode);
    Ok(failed)
}
