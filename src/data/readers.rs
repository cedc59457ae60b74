//! The dataset readers. Every error names the file (and line or feature) that is wrong.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::chips::{ChipOptions, LabelledBox, chip_grid, chip_labels, cover_grid};
use super::{ImageRef, LabelledImages, Sample};
use crate::imagery::images_under;

/// One subfolder per class (EuroSAT's layout).
pub fn folder(root: &Path) -> Result<LabelledImages> {
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .with_context(|| format!("{}: cannot list dataset folder", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!(
            "{}: no class subfolders (expected one folder per class)",
            root.display()
        );
    }
    let mut samples = Vec::new();
    for c in &classes {
        for p in images_under(&root.join(c)) {
            samples.push(Sample {
                image: ImageRef::file(p),
                labels: vec![c.clone()],
            });
        }
    }
    Ok(LabelledImages {
        name: String::new(),
        classes,
        samples,
        multi_label: false,
    })
}

/// RSICD's scene lists (`classes/<Class>.txt`, file names one a line) over an image folder.
/// The lists are looked for in `PATH/classes`, then `PATH/../classes`; images the lists name
/// that are not in the folder are skipped (the lists cover every split).
pub fn rsicd_scenes(images: &Path) -> Result<LabelledImages> {
    let lists = [images.join("classes"), images.join("../classes")]
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            anyhow!(
                "{}: no classes/ folder with RSICD scene lists beside or inside it",
                images.display()
            )
        })?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&lists)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut classes = Vec::new();
    let mut samples = Vec::new();
    for f in files {
        let class = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // playfields.txt is an extra list across scenes, not one of the 30 classes.
        if class == "playfields" {
            continue;
        }
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let p = images.join(name);
            if p.is_file() {
                samples.push(Sample {
                    image: ImageRef::file(p),
                    labels: vec![class.clone()],
                });
            }
        }
        classes.push(class);
    }
    Ok(LabelledImages {
        name: String::new(),
        classes,
        samples,
        multi_label: false,
    })
}

/// A manifest: `{"image": "path", "labels": ["..."]}` a line, paths relative to the file.
pub fn jsonl(path: &Path) -> Result<LabelledImages> {
    #[derive(serde::Deserialize)]
    struct Line {
        image: String,
        labels: Vec<String>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read manifest", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut samples = Vec::new();
    let mut classes = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: expected {{\"image\": ..., \"labels\": [...]}}",
                path.display(),
                i + 1
            )
        })?;
        let p = base.join(&l.image);
        if !p.is_file() {
            bail!(
                "{}:{}: image {} does not exist",
                path.display(),
                i + 1,
                p.display()
            );
        }
        classes.extend(l.labels.iter().cloned());
        samples.push(Sample {
            image: ImageRef::file(p),
            labels: l.labels,
        });
    }
    let multi_label = samples.iter().any(|s| s.labels.len() != 1);
    Ok(LabelledImages {
        name: String::new(),
        classes: classes.into_iter().collect(),
        samples,
        multi_label,
    })
}

fn scene_size(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path)
        .with_context(|| format!("{}: cannot read image size", path.display()))
}

/// DOTA: `images/<id>.png` with `labelTxt/<id>.txt` (`x1 y1 … x4 y4 class difficult` a line,
/// optional `imagesource:` / `gsd:` header lines), cut into chips. A box is the axis-aligned
/// hull of its oriented quadrilateral.
pub fn dota(root: &Path, chips: &ChipOptions) -> Result<LabelledImages> {
    let labels_dir = root.join("labelTxt");
    let images_dir = root.join("images");
    if !labels_dir.is_dir() || !images_dir.is_dir() {
        bail!(
            "{}: expected images/ and labelTxt/ folders (DOTA layout)",
            root.display()
        );
    }
    let mut label_files: Vec<PathBuf> = std::fs::read_dir(&labels_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    label_files.sort();
    let mut classes = BTreeSet::new();
    let mut samples = Vec::new();
    for lf in label_files {
        let stem = lf
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let image = ["png", "jpg", "tif", "tiff"]
            .iter()
            .map(|e| images_dir.join(format!("{stem}.{e}")))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "{}: no image {stem}.png (or .jpg/.tif) in {}",
                    lf.display(),
                    images_dir.display()
                )
            })?;
        let (w, h) = scene_size(&image)?;
        let text = std::fs::read_to_string(&lf)
            .with_context(|| format!("{}: cannot read", lf.display()))?;
        let mut boxes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("imagesource:") || line.starts_with("gsd:") {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 10 {
                bail!(
                    "{}:{}: expected 8 coordinates, a class and a difficulty flag, got {} fields",
                    lf.display(),
                    i + 1,
                    fields.len()
                );
            }
            let coords: Vec<f64> = fields[..8]
                .iter()
                .map(|f| f.parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| anyhow!("{}:{}: coordinates must be numbers", lf.display(), i + 1))?;
            let xs = [coords[0], coords[2], coords[4], coords[6]];
            let ys = [coords[1], coords[3], coords[5], coords[7]];
            let b = (
                xs.iter().copied().fold(f64::INFINITY, f64::min),
                ys.iter().copied().fold(f64::INFINITY, f64::min),
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            let class = fields[8].to_string();
            classes.insert(class.clone());
            boxes.push((b, class));
        }
        let grid = chip_grid(w, h, chips);
        for (c, labels) in grid.iter().zip(chip_labels(&grid, &boxes, chips)) {
            samples.push(Sample {
                image: ImageRef {
                    path: image.clone(),
                    crop: Some(*c),
                },
                labels,
            });
        }
    }
    Ok(LabelledImages {
        name: String::new(),
        classes: classes.into_iter().collect(),
        samples,
        multi_label: true,
    })
}

/// xView: `xView_train.geojson` (features with `type_id`, `bounds_imcoords`, `image_id`) over
/// its GeoTIFF scenes (in `train_images/` or beside the geojson), cut into chips to every edge
/// (and read window by window, as `scan` reads scenes). Class names
/// come from `xview_class_labels.txt` (`id:name` lines) when it is there, else the built-in
/// list of the 60 classes.
pub fn xview(path: &Path, chips: &ChipOptions) -> Result<LabelledImages> {
    let geojson = if path.is_file() {
        path.to_path_buf()
    } else {
        path.join("xView_train.geojson")
    };
    let root = geojson.parent().unwrap_or(Path::new(".")).to_path_buf();
    let images_dir = if root.join("train_images").is_dir() {
        root.join("train_images")
    } else {
        root.clone()
    };
    let names: HashMap<u64, String> =
        match std::fs::read_to_string(root.join("xview_class_labels.txt")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter_map(|(id, n)| Some((id.trim().parse().ok()?, n.trim().to_string())))
                .collect(),
            Err(_) => crate::labels::XVIEW
                .iter()
                .map(|(id, n)| (*id as u64, n.to_string()))
                .collect(),
        };
    let text = std::fs::read_to_string(&geojson)
        .with_context(|| format!("{}: cannot read", geojson.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", geojson.display()))?;
    let features = doc["features"]
        .as_array()
        .ok_or_else(|| anyhow!("{}: no \"features\" array", geojson.display()))?;
    let mut per_image: std::collections::BTreeMap<String, Vec<LabelledBox>> = Default::default();
    let mut sizes: HashMap<String, (u32, u32)> = HashMap::new();
    for (i, f) in features.iter().enumerate() {
        let p = &f["properties"];
        let where_ = || format!("{}: feature {i}", geojson.display());
        let image_id = p["image_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no image_id", where_()))?
            .to_string();
        let type_id = p["type_id"]
            .as_u64()
            .or_else(|| p["type_id"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| anyhow!("{}: no type_id", where_()))?;
        let class = names
            .get(&type_id)
            .ok_or_else(|| anyhow!("{}: unknown class id {type_id}", where_()))?
            .clone();
        let bounds: Vec<f64> = p["bounds_imcoords"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no bounds_imcoords", where_()))?
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| anyhow!("{}: bounds_imcoords must be four numbers", where_()))?;
        let [x0, y0, x1, y1] = bounds[..] else {
            bail!("{}: bounds_imcoords must be four numbers", where_())
        };
        let scene = images_dir.join(&image_id);
        if !sizes.contains_key(&image_id) {
            if !scene.is_file() {
                bail!("{}: image {} does not exist", where_(), scene.display());
            }
            sizes.insert(image_id.clone(), scene_size(&scene)?);
        }
        let (w, h) = sizes[&image_id];
        if x0 < 0.0 || y0 < 0.0 || x1 > w as f64 || y1 > h as f64 || x1 < x0 || y1 < y0 {
            bail!(
                "{}: box {x0},{y0},{x1},{y1} lies outside its {w}×{h} image {image_id}",
                where_()
            );
        }
        per_image
            .entry(image_id)
            .or_default()
            .push(((x0, y0, x1, y1), class));
    }
    let mut samples = Vec::new();
    for (image_id, boxes) in per_image {
        let (w, h) = sizes[&image_id];
        // Tiled as `scan` tiles scenes: to every edge (xView's own chipper drops the partial
        // windows at the right and bottom, and with them the objects there).
        let grid = cover_grid(w, h, chips.size, chips.stride);
        let scene = images_dir.join(&image_id);
        for (c, labels) in grid.iter().zip(chip_labels(&grid, &boxes, chips)) {
            samples.push(Sample {
                image: ImageRef {
                    path: scene.clone(),
                    crop: Some(*c),
                },
                labels,
            });
        }
    }
    let mut ids: Vec<(&u64, &String)> = names.iter().collect();
    ids.sort();
    Ok(LabelledImages {
        name: String::new(),
        classes: ids.into_iter().map(|(_, n)| n.clone()).collect(),
        samples,
        multi_label: true,
    })
}
