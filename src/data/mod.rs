//! Labelled image collections behind one small trait. A dataset is a list of samples — an image
//! (a file, or a chip cut from a large scene) and its class names — plus the class vocabulary.
//!
//! `--dataset KIND:PATH` picks a reader: `folder`, `rsicd-scenes`, `jsonl`, `dota`, `xview`.

mod captions;
mod chips;
mod readers;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use captions::{CaptionedImage, CaptionedImages, open_captions, training_sentence};
pub use chips::{ChipOptions, chip_grid, cover_grid};
pub use readers::{dota, folder, jsonl, rsicd_scenes, xview};

/// Where a sample's pixels come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub path: PathBuf,
    /// `(x, y, width, height)` of a chip inside the image, if only part of it is meant.
    pub crop: Option<(u32, u32, u32, u32)>,
}

impl ImageRef {
    pub fn file(path: PathBuf) -> Self {
        Self { path, crop: None }
    }

    /// `path` for whole images, `path#x,y,w,h` for chips.
    pub fn display(&self) -> String {
        match self.crop {
            None => self.path.display().to_string(),
            Some((x, y, w, h)) => format!("{}#{x},{y},{w},{h}", self.path.display()),
        }
    }
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub image: ImageRef,
    /// Class names, as the dataset spells them. One for single-label data.
    pub labels: Vec<String>,
}

/// A labelled collection.
pub trait Dataset {
    /// `KIND:PATH`, for reports.
    fn name(&self) -> &str;
    /// Every class name the dataset knows, in a stable order.
    fn classes(&self) -> &[String];
    fn samples(&self) -> &[Sample];
    /// Whether images carry several labels (measured with top-k hit rates and mAP).
    fn multi_label(&self) -> bool;
}

/// The one implementation all readers fill.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    pub name: String,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    pub multi_label: bool,
}

impl Dataset for LabelledImages {
    fn name(&self) -> &str {
        &self.name
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn samples(&self) -> &[Sample] {
        &self.samples
    }
    fn multi_label(&self) -> bool {
        self.multi_label
    }
}

/// Opens `KIND:PATH`, keeping only the images a split file lists (paths relative to the
/// dataset's image folder, one a line) when `split` is given.
pub fn open(spec: &str, split: Option<&Path>, chips: &ChipOptions) -> Result<LabelledImages> {
    let Some((kind, path)) = spec.split_once(':') else {
        bail!(
            "--dataset {spec:?}: expected KIND:PATH (kinds: folder, rsicd-scenes, jsonl, dota, xview)"
        );
    };
    let path = Path::new(path);
    if !path.exists() {
        bail!("{}: no such dataset path", path.display());
    }
    let mut ds = match kind {
        "folder" => folder(path)?,
        "rsicd-scenes" => rsicd_scenes(path)?,
        "jsonl" => jsonl(path)?,
        "dota" => dota(path, chips)?,
        "xview" => xview(path, chips)?,
        other => bail!("unknown dataset kind '{other}' (folder, rsicd-scenes, jsonl, dota, xview)"),
    };
    ds.name = spec.to_string();
    if let Some(split) = split {
        apply_split(&mut ds, path, split)?;
    }
    if ds.samples.is_empty() {
        bail!("{spec}: the dataset has no images");
    }
    Ok(ds)
}

fn apply_split(ds: &mut LabelledImages, root: &Path, split: &Path) -> Result<()> {
    let text = std::fs::read_to_string(split)
        .with_context(|| format!("{}: cannot read split file", split.display()))?;
    let root = if root.is_file() {
        root.parent().unwrap_or(Path::new("."))
    } else {
        root
    };
    let mut by_path: std::collections::HashMap<PathBuf, Vec<Sample>> =
        std::collections::HashMap::new();
    for s in ds.samples.drain(..) {
        by_path.entry(s.image.path.clone()).or_default().push(s);
    }
    let mut kept = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let rel = line.trim();
        if rel.is_empty() || rel.starts_with('#') {
            continue;
        }
        let p = root.join(rel);
        match by_path.remove(&p) {
            Some(samples) => kept.extend(samples),
            None if p.is_file() => bail!(
                "{}:{}: {rel} is not part of the dataset (no label for it)",
                split.display(),
                i + 1
            ),
            None => bail!(
                "{}:{}: {rel}: no such image under {}",
                split.display(),
                i + 1,
                root.display()
            ),
        }
    }
    ds.samples = kept;
    Ok(())
}
