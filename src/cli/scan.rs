//! `scan`: whole scenes tiled and labelled, written as GeoJSON tiles, class-map GeoTIFFs and
//! heatmaps; one scene's failure is reported and the others still run. Scenes can be shared
//! out across a cluster's job array like `index build`'s inputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use skyscribe::caption::Captioner;
use skyscribe::classify::{Classifier, Scorer};
use skyscribe::encoder::ClipEncoder;
use skyscribe::imagery::heatmap::Scale;
use skyscribe::index::Shard;
use skyscribe::labels::{LabelSet, Templates};
use skyscribe::scan::ScanOptions;
use skyscribe::scan::maps::{self, ClassGrid, HeatmapScore, TileRecord};
use skyscribe::scene::stac::{StacQuery, StacScene};
use skyscribe::scene::{ReaderChoice, Scene, SceneOptions, Stretch};
use skyscribe::zeroshot::ZeroShotClassifier;

use super::common::{CommonArgs, VocabularyArgs, clip_for, labels_or_vocabulary, positive};
use super::output::{Out, fit, report};

#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    vocabulary: VocabularyArgs,
    /// A classifier from `train classifier`: its classes label the tiles, fill the class maps
    /// and heatmaps (class probabilities) instead of a label set's.
    #[arg(long, conflicts_with_all = ["labels", "templates"])]
    classifier: Option<PathBuf>,
    /// Tile side in scene pixels (tiles are resized to the model's input).
    #[arg(long, default_value_t = 224, value_parser = positive_u32)]
    tile: u32,
    /// Pixels between tile origins (under --tile: tiles overlap) [default: half of --tile,
    /// rounded up].
    #[arg(long, value_parser = positive_u32)]
    stride: Option<u32>,
    /// How bands become 0..255: p2-98 (the 2nd to 98th percentile of a decimated read), minmax,
    /// none (values as they are), or auto (none for 8-bit scenes, p2-98 for deeper ones).
    #[arg(long, default_value = "auto")]
    stretch: Stretch,
    /// Labels per tile.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    top_k: usize,
    /// Also caption every tile (ClipCap).
    #[arg(long)]
    caption: bool,
    /// The captioner for --caption (default: the built-in mini captioner).
    #[arg(long, requires = "caption")]
    captioner: Option<String>,
    /// The tiles as a GeoJSON FeatureCollection, or as GeoParquet 1.1 when the file ends in
    /// .parquet (a folder when scanning several scenes: one SCENE.geojson or SCENE.parquet
    /// each, as --out-format says).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The format of --out: geojson (the default) or geoparquet (WKB geometry, `geo` metadata,
    /// the GeoJSON's properties as columns). A file ending in .parquet is GeoParquet.
    #[arg(long, value_enum)]
    out_format: Option<OutFormat>,
    /// Class-map GeoTIFF, one score band per label on a grid of --stride pixels, plus
    /// NAME.argmax.tif with the best label in a colour table (a folder for several scenes).
    #[arg(long)]
    class_map: Option<PathBuf>,
    /// The label whose score --heatmap shows.
    #[arg(long, requires = "heatmap")]
    heatmap_label: Option<String>,
    /// PNG preview of the scene with --heatmap-label's score over it and a colour bar under it
    /// (a folder for several).
    #[arg(long, requires = "heatmap_label")]
    heatmap: Option<PathBuf>,
    /// What --heatmap colours: probability (the label's share of the softmax over the label
    /// set: low where another label wins) or similarity (the label's cosine similarity to each
    /// tile, on its own).
    #[arg(long, value_enum, default_value_t = HeatmapScoreArg::Probability, requires = "heatmap")]
    heatmap_score: HeatmapScoreArg,
    /// The scores --heatmap's colours span: LOW,HIGH (the same in every picture; scores outside
    /// are clamped), or auto (each scene stretched to its own range, as its legend says).
    #[arg(long, default_value = "0,1", requires = "heatmap")]
    heatmap_scale: Scale,
    /// Scenes without georeferencing are scanned in pixel coordinates (else refused).
    #[arg(long)]
    pixel_coords: bool,
    /// Scan only shard I of N of the scenes (0-based); else SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shards, choose.
    #[arg(long, value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// The shard count, for JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_parser = positive)]
    shards: Option<usize>,
    /// Scene files (GeoTIFF, or any image with --pixel-coords) or folders of them, GeoTIFFs
    /// (COGs) by URL: https://…, s3://…, gs://…, az://… (read by range requests; credentials
    /// from the usual environment variables), STAC items (stac:ITEM.json or stac:URL, or a
    /// saved item collection), or a STAC API's item search (stac-search:API_URL with --bbox,
    /// --datetime, --collections, --max-items).
    #[arg(required = true)]
    scenes: Vec<PathBuf>,
    /// The STAC assets read as red, green, blue (asset keys or band common names, e.g.
    /// red,green,blue or B04,B03,B02: one COG per band on one grid); default: the item's
    /// `visual` asset, else its red, green and blue bands.
    #[arg(long, value_delimiter = ',')]
    assets: Option<Vec<String>>,
    /// With stac-search: items whose footprint meets WEST,SOUTH,EAST,NORTH (degrees).
    #[arg(long, value_parser = parse_bbox, allow_hyphen_values = true)]
    bbox: Option<[f64; 4]>,
    /// With stac-search: items of an RFC 3339 instant or interval (2024-06-01T00:00:00Z,
    /// 2024-06-01/2024-06-30, ../2024-01-01).
    #[arg(long)]
    datetime: Option<String>,
    /// With stac-search: items of these collections (comma-separated, e.g. sentinel-2-l2a).
    #[arg(long, value_delimiter = ',')]
    collections: Vec<String>,
    /// With stac-search: the most items scanned, 100 unless given (pages are followed until
    /// then; what was left is said).
    #[arg(long, value_parser = positive)]
    max_items: Option<usize>,
    /// Anonymous requests to public buckets, as the AWS CLI's --no-sign-request.
    #[arg(long)]
    no_sign_request: bool,
    /// Which reader opens scenes: native (the built-in GeoTIFF/COG reader), gdal (every format
    /// GDAL reads, /vsi… paths, PROJ for every CRS; builds with the `gdal` feature), or auto
    /// (native for TIFFs and URLs, GDAL for other files when built with it).
    #[arg(long, default_value = "auto")]
    reader: ReaderChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeatmapScoreArg {
    Probability,
    Similarity,
}

impl From<HeatmapScoreArg> for HeatmapScore {
    fn from(a: HeatmapScoreArg) -> Self {
        match a {
            HeatmapScoreArg::Probability => HeatmapScore::Probability,
            HeatmapScoreArg::Similarity => HeatmapScore::Similarity,
        }
    }
}

fn parse_bbox(s: &str) -> Result<[f64; 4], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [w, south, e, n]: [f64; 4] = v
        .try_into()
        .map_err(|_| "four numbers: WEST,SOUTH,EAST,NORTH".to_string())?;
    if !(-180.0..=180.0).contains(&w)
        || !(-180.0..=180.0).contains(&e)
        || !(-90.0..=90.0).contains(&south)
        || !(-90.0..=90.0).contains(&n)
        || south > n
    {
        return Err(format!(
            "{s}: longitudes in -180..180, latitudes in -90..90, south ≤ north"
        ));
    }
    Ok([w, south, e, n])
}

fn positive_u32(s: &str) -> Result<u32, String> {
    positive(s).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
}

/// Where one kind of output goes: a file for one scene, a folder of `SCENE.EXT` for several.
struct Target {
    path: PathBuf,
    folder: bool,
}

/// What `--out` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    Geojson,
    Geoparquet,
}

impl Target {
    fn new(path: &Path, scenes: usize, flag: &str) -> Result<Self> {
        let folder = path.is_dir() || path.to_string_lossy().ends_with('/');
        if !folder && scenes > 1 {
            bail!(
                "{flag} {}: {scenes} scenes need a folder (an existing one, or a path ending in /)",
                path.display()
            );
        }
        if folder {
            std::fs::create_dir_all(path)
                .with_context(|| format!("{flag} {}: cannot create the folder", path.display()))?;
        } else {
            // Before the scan, not after it: a missing folder must not cost the whole run.
            skyscribe::atomic::check_writable(path, flag)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            folder,
        })
    }

    fn for_scene(&self, scene: &Path, ext: &str) -> PathBuf {
        if self.folder {
            let stem = scene.file_stem().unwrap_or_default().to_string_lossy();
            self.path.join(format!("{stem}.{ext}"))
        } else {
            self.path.clone()
        }
    }
}

/// One scene to scan: a file or URL, or a STAC item's assets.
pub enum SceneInput {
    File(PathBuf),
    Stac(StacScene),
}

impl SceneInput {
    /// The name outputs and messages use: the path or URL, or `stac:ID`.
    fn name(&self) -> String {
        match self {
            SceneInput::File(p) => p.display().to_string(),
            SceneInput::Stac(s) => format!("stac:{}", s.id),
        }
    }

    /// What a folder of outputs names this scene's files after.
    fn stem(&self) -> PathBuf {
        match self {
            SceneInput::File(p) => p.clone(),
            SceneInput::Stac(s) => PathBuf::from(&s.id),
        }
    }

    fn open(&self, opts: &SceneOptions) -> Result<Scene> {
        match self {
            SceneInput::File(p) => Scene::open(p, opts),
            SceneInput::Stac(s) if s.hrefs.len() == 1 => {
                let mut scene = Scene::open(Path::new(&s.hrefs[0]), opts)
                    .with_context(|| format!("STAC item {}", s.id))?;
                scene.path = PathBuf::from(self.name());
                Ok(scene)
            }
            SceneInput::Stac(s) => Scene::open_bands(&self.name(), &s.hrefs, opts),
        }
    }

    /// The item's id, datetime and collection, for every feature of a STAC scene.
    fn stac_properties(&self) -> Vec<(&'static str, serde_json::Value)> {
        match self {
            SceneInput::File(_) => vec![],
            SceneInput::Stac(s) => vec![
                ("stac_item", serde_json::json!(s.id)),
                ("datetime", serde_json::json!(s.datetime)),
                ("collection", serde_json::json!(s.collection)),
            ],
        }
    }
}

/// Whether `s` looks like a GDAL connection string: `DRIVER:rest`, the driver name in capitals
/// (`SENTINEL2_L2A:`, `NETCDF:`, `HDF5:`, `GTIFF_DIR:`).
fn is_gdal_connection(s: &str) -> bool {
    s.split_once(':').is_some_and(|(driver, rest)| {
        driver.len() > 1
            && !rest.is_empty()
            && driver
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The scenes among `inputs` (folders walked for images, sorted; STAC items and searches
/// resolved to their items); inputs that fail are reported and counted.
fn gather_scenes(inputs: &[PathBuf], query: &StacQuery) -> (Vec<SceneInput>, usize) {
    let mut found = Vec::new();
    let mut failed = 0;
    let mut paths = Vec::new();
    // URLs pass as they are (the reader reaches them); paths are walked for images.
    let mut urls = Vec::new();
    for p in inputs {
        let s = p.to_string_lossy();
        if skyscribe::scene::stac::is_stac(&s) {
            match skyscribe::scene::stac::resolve(&s, query) {
                Ok((items, notes)) => {
                    for n in notes {
                        report(&n);
                    }
                    found.extend(items.into_iter().map(SceneInput::Stac));
                }
                Err(e) => {
                    failed += 1;
                    report(&format!("{e:#}"));
                }
            }
        } else if skyscribe::scene::source::is_remote(&s)
            || s.starts_with("/vsi")
            || (skyscribe::scene::HAS_GDAL && is_gdal_connection(&s) && !p.exists())
        {
            // GDAL's connection strings (SENTINEL2_L2A:…:10m:EPSG_32633, NETCDF:file.nc:var)
            // name subdatasets, not files: the GDAL reader opens them.
            urls.push(p.clone());
        } else {
            paths.push(p.clone());
        }
    }
    let (files, errors) = skyscribe::encoder::collect_images(&paths);
    for e in &errors {
        report(&format!("{e:#}"));
    }
    let mut all: Vec<SceneInput> = files.into_iter().map(SceneInput::File).collect();
    all.extend(urls.into_iter().map(SceneInput::File));
    all.extend(found);
    (all, failed + errors.len())
}

pub fn run(a: ScanArgs) -> Result<usize> {
    // Options first, before any model is loaded or scene read.
    let given_labels = a
        .vocabulary
        .labels
        .as_deref()
        .map(LabelSet::parse)
        .transpose()?;
    if !a.vocabulary.templates.is_empty() {
        Templates::parse(&a.vocabulary.templates)?;
    }
    let learned = a.classifier.as_deref().map(Classifier::load).transpose()?;
    let shard = Shard::resolve(a.shard, a.shards, |k| std::env::var(k).ok())?;
    let remote = skyscribe::scene::source::RemoteOptions {
        no_sign_request: a.no_sign_request,
    };
    let inputs: Vec<String> = a.scenes.iter().map(|p| p.display().to_string()).collect();
    let any_stac = inputs.iter().any(|i| skyscribe::scene::stac::is_stac(i));
    let any_search = inputs.iter().any(|i| i.starts_with("stac-search:"));
    if a.assets.is_some() && !any_stac {
        bail!("--assets names a STAC item's assets: give a stac: or stac-search: input");
    }
    for (given, flag) in [
        (a.bbox.is_some(), "--bbox"),
        (a.datetime.is_some(), "--datetime"),
        (!a.collections.is_empty(), "--collections"),
        (a.max_items.is_some(), "--max-items"),
    ] {
        if given && !any_search {
            bail!("{flag} filters a STAC API's item search: give a stac-search:API_URL input");
        }
    }
    let query = StacQuery {
        assets: a.assets.clone(),
        bbox: a.bbox,
        datetime: a.datetime.clone(),
        collections: a.collections.clone(),
        max_items: a.max_items.unwrap_or(100),
        remote: remote.clone(),
    };
    let (all, mut failed) = gather_scenes(&a.scenes, &query);
    let out = a
        .out
        .as_deref()
        .map(|p| Target::new(p, all.len(), "--out"))
        .transpose()?;
    let out_format = match (&out, a.out_format) {
        (Some(t), f) if !t.folder => {
            let parquet = t.path.extension().is_some_and(|e| e == "parquet");
            match (parquet, f) {
                (true, Some(OutFormat::Geojson)) | (false, Some(OutFormat::Geoparquet)) => bail!(
                    "--out {} and --out-format {:?} disagree: name the file .parquet for \
                     GeoParquet, anything else for GeoJSON",
                    t.path.display(),
                    f.expect("matched")
                ),
                (true, _) => OutFormat::Geoparquet,
                (false, _) => OutFormat::Geojson,
            }
        }
        (Some(_), f) => f.unwrap_or(OutFormat::Geojson),
        (None, Some(_)) => bail!("--out-format needs --out"),
        (None, None) => OutFormat::Geojson,
    };
    let class_map = a
        .class_map
        .as_deref()
        .map(|p| Target::new(p, all.len(), "--class-map"))
        .transpose()?;
    let heat = a
        .heatmap
        .as_deref()
        .map(|p| Target::new(p, all.len(), "--heatmap"))
        .transpose()?;
    // Ids as given on the command line: every task of an array computes the same ones.
    let scenes: Vec<&SceneInput> = all.iter().filter(|p| shard.owns(&p.name())).collect();
    if shard != Shard::WHOLE {
        report(&format!(
            "shard {shard}: {} of {} scenes",
            scenes.len(),
            all.len()
        ));
    }

    let dev = a.common.device.device()?;
    let captioner = if a.caption {
        let spec = a
            .captioner
            .clone()
            .unwrap_or_else(|| skyscribe::builtin::MINI_CAPTIONER.to_string());
        Some(Captioner::load_spec(&spec, &dev)?)
    } else {
        None
    };
    let (clip, labels) = match (learned, &a.classifier) {
        (Some(c), Some(file)) => {
            let clip = super::classify::clip_for_classifier(&a.common, &c, file)?;
            if let Some(cap) = &captioner {
                cap.check_clip(&clip, false)?;
            }
            (clip, Err(c))
        }
        _ => {
            let clip = clip_for(&a.common, captioner.as_ref(), false, &dev)?;
            let labels = labels_or_vocabulary(given_labels, &clip)?;
            (clip, Ok(labels))
        }
    };
    let names: Vec<String> = match &labels {
        Ok(l) => l.names().iter().map(|s| s.to_string()).collect(),
        Err(c) => c.classes().to_vec(),
    };
    let heat_label = match &a.heatmap_label {
        Some(l) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Some(skyscribe::labels::find_name(&names, l, "--heatmap-label")?)
        }
        None => None,
    };
    let classifier = match labels {
        Ok(labels) => {
            let (templates, origin) = clip
                .defaults
                .templates(&a.vocabulary.templates, &clip.source.spec)?;
            report(&format!("templates ({origin}): {}", templates.describe()));
            Scorer::ZeroShot(ZeroShotClassifier::new(&clip, labels, templates)?)
        }
        Err(c) => Scorer::Learned(c),
    };
    let scene_opts = SceneOptions {
        bands: a.common.bands.as_ref().map(|b| b.0.clone()),
        stretch: a.stretch,
        remote,
        reader: a.reader,
    };
    let scan = ScanOptions {
        tile: a.tile,
        stride: a.stride.unwrap_or(a.tile.div_ceil(2)),
        batch_size: a.common.batch_size,
    };
    let mut printer = Out::new();
    for path in scenes {
        let job = SceneJob {
            a: &a,
            clip: &clip,
            classifier: &classifier,
            captioner: captioner.as_ref(),
            names: &names,
            heat_label,
            scene_opts: &scene_opts,
            scan: &scan,
            out: out.as_ref(),
            out_format,
            class_map: class_map.as_ref(),
            heat: heat.as_ref(),
        };
        if let Err(e) = job.run(path, &mut printer) {
            failed += 1;
            report(&format!("{e:#}"));
        }
    }
    Ok(failed)
}

/// What scanning one scene needs.
struct SceneJob<'a> {
    a: &'a ScanArgs,
    clip: &'a ClipEncoder,
    classifier: &'a Scorer,
    captioner: Option<&'a Captioner>,
    names: &'a [String],
    heat_label: Option<usize>,
    scene_opts: &'a SceneOptions,
    scan: &'a ScanOptions,
    out: Option<&'a Target>,
    out_format: OutFormat,
    class_map: Option<&'a Target>,
    heat: Option<&'a Target>,
}

impl SceneJob<'_> {
    fn run(&self, input: &SceneInput, printer: &mut Out) -> Result<()> {
        let mut scene = input.open(self.scene_opts)?;
        let stem = input.stem();
        let path = stem.as_path();
        let name = input.name();
        let item_props = input.stac_properties();
        if scene.georef.is_none() && !self.a.pixel_coords {
            bail!(
                "{name}: the scene has no georeferencing ({}); pass --pixel-coords to scan it in \
                 pixel coordinates",
                scene
                    .no_georef
                    .as_deref()
                    .unwrap_or("no GeoTIFF transform and CRS")
            );
        }
        if let Some(note) = scene.georef.as_ref().and_then(|g| g.datum_note.as_ref()) {
            report(&format!("{name}: warning: {note}"));
        }
        for n in &scene.notes {
            report(&format!("{name}: {n}"));
        }
        if let Some(n) = skyscribe::scan::tiles_cut_note(&scene, self.scan) {
            report(&format!("{name}: {n}"));
        }
        let georef = scene.georef.clone();
        let grid_len = skyscribe::scan::tile_grid(&scene, self.scan)?.len();
        let bar = skyscribe::progress::items(grid_len, "tiles", "scanning", false);
        let mut records: Vec<TileRecord> = Vec::new();
        let mut features = Vec::new();
        let jsonl = self.a.common.jsonl;
        let scoring = skyscribe::scan::TileScoring {
            scorer: self.classifier,
            captioner: self.captioner,
            top_k: self.a.top_k,
        };
        let each = |rec: TileRecord| -> Result<()> {
            let rect = rec.rect;
            let ring = maps::tile_ring(georef.as_ref(), rect)?;
            if jsonl {
                #[derive(serde::Serialize)]
                struct Line<'a> {
                    scene: &'a str,
                    tile: [u32; 4],
                    /// `null` for a tile off the Earth.
                    bounds: Option<[f64; 4]>,
                    labels: &'a [skyscribe::zeroshot::LabelScore],
                    #[serde(skip_serializing_if = "Option::is_none")]
                    caption: Option<&'a str>,
                    #[serde(flatten)]
                    item: serde_json::Map<String, serde_json::Value>,
                }
                bar.suspend(|| {
                    printer.json(&Line {
                        scene: &name,
                        tile: [rect.0, rect.1, rect.2, rect.3],
                        bounds: ring.as_deref().map(maps::bounds),
                        labels: &rec.labels,
                        caption: rec.caption.as_deref(),
                        item: item_props
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.clone()))
                            .collect(),
                    })
                })?;
            }
            if self.out.is_some() {
                let mut f = maps::feature(&name, &rec, ring);
                if let Some(p) = f.properties.as_mut() {
                    for (k, v) in &item_props {
                        p.insert(k.to_string(), v.clone());
                    }
                }
                features.push(f);
            }
            records.push(rec);
            Ok(())
        };
        let counts =
            skyscribe::scan::score_scene(self.clip, &mut scene, self.scan, &scoring, each, || {
                bar.inc(1)
            })?;
        bar.finish_and_clear();
        let coordinates = maps::coordinates(georef.as_ref());
        let mut written = Vec::new();
        if let Some(t) = self.out {
            let parquet = self.out_format == OutFormat::Geoparquet;
            let file = if t.folder {
                t.for_scene(path, if parquet { "parquet" } else { "geojson" })
            } else {
                t.path.clone()
            };
            let mut info =
                maps::scene_info(&name, &scene, self.scan, counts, &self.clip.source.spec);
            if let SceneInput::Stac(item) = input {
                info["stac"] = serde_json::json!({
                    "item": item.item,
                    "id": item.id,
                    "datetime": item.datetime,
                    "collection": item.collection,
                    "assets": item.assets,
                    "hrefs": item.hrefs,
                });
            }
            if parquet {
                let coordinates = match &georef {
                    Some(g) if g.datum_note.is_none() => skyscribe::geoparquet::Coordinates::Wgs84,
                    _ => skyscribe::geoparquet::Coordinates::Undefined,
                };
                maps::write_geoparquet(&file, &features, &info, coordinates)?;
            } else {
                let fc = maps::collection(std::mem::take(&mut features), info);
                skyscribe::atomic::write_file(&file, fc.to_string().as_bytes())?;
            }
            written.push(file);
        }
        if let Some(t) = self.class_map {
            let file = t.for_scene(path, "classmap.tif");
            let grid = ClassGrid::new(
                scene.width,
                scene.height,
                self.scan.stride,
                &records,
                self.names.len(),
            );
            let argmax = maps::write_class_map(&file, &grid, self.names, georef.as_ref())?;
            written.push(file);
            written.push(argmax);
        }
        if let (Some(t), Some(label)) = (self.heat, self.heat_label) {
            let file = t.for_scene(path, "heatmap.png");
            let (preview, step) = scene.preview(1024)?;
            let score = HeatmapScore::from(self.a.heatmap_score);
            let scale = self.a.heatmap_scale;
            let (img, span) = maps::heatmap(&preview, step, &records, label, score, scale);
            let legend = score.legend(&self.names[label], self.names.len(), scale);
            let img = skyscribe::imagery::heatmap::with_colour_bar(&img, span, &legend);
            img.save_png(&file)?;
            report(&format!(
                "{}: {legend}, {:.4} (dark) to {:.4} (bright)",
                file.display(),
                span.0,
                span.1
            ));
            written.push(file);
        }
        for _ in &written {
            super::output::wrote_file();
        }
        if !jsonl {
            self.summary(printer, &scene, &records, counts, coordinates, &written)?;
        } else {
            for f in &written {
                report(&format!("wrote {}", f.display()));
            }
        }
        Ok(())
    }

    /// For people: the scene, its tiles, the labels that win most tiles, the files written.
    fn summary(
        &self,
        printer: &mut Out,
        scene: &Scene,
        records: &[TileRecord],
        counts: skyscribe::scan::ScanCounts,
        coordinates: &str,
        written: &[PathBuf],
    ) -> Result<()> {
        printer.line(&format!("{} — {}", scene.path.display(), scene.describe()))?;
        printer.line(&format!(
            "  {} tiles of {} px every {} px ({} wholly nodata, skipped); coordinates: {coordinates}",
            counts.tiles, self.scan.tile, self.scan.stride, counts.nodata
        ))?;
        let mut wins = vec![0usize; self.names.len()];
        for r in records {
            if let Some(best) = r.labels.first()
                && let Some(i) = self.names.iter().position(|n| *n == best.label)
            {
                wins[i] += 1;
            }
        }
        let mut order: Vec<usize> = (0..wins.len()).filter(|&i| wins[i] > 0).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(wins[i]));
        for &i in order.iter().take(self.a.top_k) {
            printer.line(&format!(
                "  {} best in {:>5} tiles ({:.0}%)",
                fit(&self.names[i], 30),
                wins[i],
                100.0 * wins[i] as f64 / records.len().max(1) as f64
            ))?;
        }
        for f in written {
            printer.line(&format!("  wrote {}", f.display()))?;
        }
        Ok(())
    }
}
