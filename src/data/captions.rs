//! Captioned images for training: each image with one or more sentences.
//!
//! `--data KIND:PATH` picks the layout:
//! - `rsicd:DIR` — `DIR/captions.jsonl` (`{"filename", "captions": [...]}` a line) and the images
//!   beside it, as in `../shared/data/rsicd/{train,test}`;
//! - `coco:FILE.json` — COCO caption JSON (`images[].{id, file_name}`,
//!   `annotations[].{image_id, caption}`), image files relative to the JSON's folder;
//! - `parquet:FILE.parquet` — the Hugging Face `arampacha/rsicd` layout (`filename`, `captions`,
//!   `image.bytes`; uncompressed or snappy), whose images are unpacked once into
//!   `parquet/<hash>/` under [`crate::cache_root`] so that everything downstream reads files.
//!
//! Every problem is an error naming the file and the line or image: a caption naming an image
//! that does not exist, an empty caption, an image without captions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One image and its reference sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionedImage {
    pub path: PathBuf,
    pub captions: Vec<String>,
    /// Extra training sentences that are not references: RSICD's `augmented` paraphrases
    /// (back-translations standing in for the original's repeated sentences). Empty when the
    /// data has none.
    pub augmented: Vec<String>,
}

/// A captioned collection, in a stable order.
#[derive(Debug, Clone)]
pub struct CaptionedImages {
    pub name: String,
    pub items: Vec<CaptionedImage>,
}

impl CaptionedImages {
    /// `(item, caption)` index pairs: every sentence is a training example.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        self.items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| (0..item.captions.len()).map(move |c| (i, c)))
            .collect()
    }
}

/// Opens `rsicd:DIR` or `coco:FILE.json`.
pub fn open_captions(spec: &str) -> Result<CaptionedImages> {
    let Some((kind, path)) = spec.split_once(':') else {
        bail!("--data {spec:?}: expected KIND:PATH with KIND rsicd or coco");
    };
    let path = Path::new(path);
    let items = match kind {
        "rsicd" => rsicd(path)?,
        "coco" => coco(path)?,
        "parquet" => parquet(path)?,
        other => bail!("--data {spec}: unknown caption data kind {other:?} (rsicd, coco, parquet)"),
    };
    if items.is_empty() {
        bail!("{}: no captioned images", path.display());
    }
    Ok(CaptionedImages {
        name: spec.to_string(),
        items,
    })
}

#[derive(Deserialize)]
struct RsicdLine {
    filename: String,
    captions: Vec<String>,
    #[serde(default)]
    augmented: Vec<String>,
}

fn check_caption(file: &Path, line: usize, image: &str, caption: &str) -> Result<()> {
    if caption.trim().is_empty() {
        bail!(
            "{}:{line}: image {image} has an empty caption",
            file.display()
        );
    }
    Ok(())
}

fn rsicd(dir: &Path) -> Result<Vec<CaptionedImage>> {
    let file = dir.join("captions.jsonl");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: cannot read the captions file", file.display()))?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: RsicdLine = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{n}: not a {{\"filename\", \"captions\"}} line",
                file.display()
            )
        })?;
        if row.captions.is_empty() {
            bail!(
                "{}:{n}: image {} has no captions",
                file.display(),
                row.filename
            );
        }
        for c in row.captions.iter().chain(&row.augmented) {
            check_caption(&file, n, &row.filename, c)?;
        }
        let path = dir.join(&row.filename);
        if !path.is_file() {
            bail!(
                "{}:{n}: image {} does not exist",
                file.display(),
                path.display()
            );
        }
        items.push(CaptionedImage {
            path,
            captions: row.captions,
            augmented: row.augmented,
        });
    }
    // Images in the folder that no line captions are a sign of a wrong or partial file.
    let named: std::collections::HashSet<&Path> = items.iter().map(|i| i.path.as_path()).collect();
    let orphans: Vec<PathBuf> = crate::imagery::images_under(dir)
        .into_iter()
        .filter(|p| !named.contains(p.as_path()))
        .collect();
    if let Some(first) = orphans.first() {
        bail!(
            "{}: {} image(s) in {} have no captions (first: {})",
            file.display(),
            orphans.len(),
            dir.display(),
            first.display()
        );
    }
    Ok(items)
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: serde_json::Value,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: serde_json::Value,
    caption: String,
}

fn coco(file: &Path) -> Result<Vec<CaptionedImage>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the COCO caption file", file.display()))?;
    let coco: CocoFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not COCO caption JSON (images + annotations)",
            file.display()
        )
    })?;
    let root = file.parent().unwrap_or(Path::new("."));
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut items = Vec::new();
    for img in &coco.images {
        let path = root.join(&img.file_name);
        if !path.is_file() {
            bail!(
                "{}: image {} (id {}) does not exist",
                file.display(),
                path.display(),
                img.id
            );
        }
        by_id.insert(img.id.to_string(), items.len());
        items.push(CaptionedImage {
            path,
            captions: vec![],
            augmented: vec![],
        });
    }
    let mut extra: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, a) in coco.annotations.iter().enumerate() {
        let Some(&idx) = by_id.get(&a.image_id.to_string()) else {
            bail!(
                "{}: annotation {i} names image id {}, which is not in `images`",
                file.display(),
                a.image_id
            );
        };
        check_caption(file, i, &items[idx].path.display().to_string(), &a.caption)?;
        extra.entry(idx).or_default().push(a.caption.clone());
    }
    for (idx, caps) in extra {
        items[idx].captions = caps;
    }
    if let Some(bare) = items.iter().find(|i| i.captions.is_empty()) {
        bail!(
            "{}: image {} has no captions",
            file.display(),
            bare.path.display()
        );
    }
    Ok(items)
}

fn parquet(file: &Path) -> Result<Vec<CaptionedImage>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let f = std::fs::File::open(file)
        .with_context(|| format!("{}: cannot read the parquet file", file.display()))?;
    let reader = SerializedFileReader::new(f)
        .with_context(|| format!("{}: not a readable parquet file", file.display()))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(file)?)?;
    let dir = crate::cache_root()
        .join("parquet")
        .join(&hasher.finalize().to_hex()[..16]);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut items = Vec::new();
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: cannot read rows", file.display()))?;
    for (i, row) in rows.enumerate() {
        let row = row.with_context(|| format!("{}: row {i} is unreadable", file.display()))?;
        let (mut name, mut captions, mut bytes) = (None, None, None);
        for (column, field) in row.get_column_iter() {
            match (column.as_str(), field) {
                ("filename", Field::Str(s)) => name = Some(s.clone()),
                ("captions", Field::ListInternal(list)) => {
                    captions = Some(
                        list.elements()
                            .iter()
                            .map(|e| match e {
                                Field::Str(s) => Ok(s.clone()),
                                _ => {
                                    bail!("{}: row {i}: a caption is not a string", file.display())
                                }
                            })
                            .collect::<Result<Vec<_>>>()?,
                    )
                }
                ("image", Field::Group(image)) => {
                    for (k, v) in image.get_column_iter() {
                        if let ("bytes", Field::Bytes(b)) = (k.as_str(), v) {
                            bytes = Some(b.data().to_vec());
                        }
                    }
                }
                _ => {}
            }
        }
        let (Some(name), Some(captions), Some(bytes)) = (name, captions, bytes) else {
            bail!(
                "{}: row {i} lacks `filename`, `captions` or `image.bytes` (the arampacha/rsicd layout)",
                file.display()
            );
        };
        if captions.is_empty() {
            bail!("{}: row {i}: image {name} has no captions", file.display());
        }
        for c in &captions {
            check_caption(file, i, &name, c)?;
        }
        let safe = Path::new(&name)
            .file_name()
            .with_context(|| format!("{}: row {i}: bad file name {name:?}", file.display()))?;
        let path = dir.join(safe);
        if !path.is_file() {
            crate::atomic::write_file(&path, &bytes)?;
        }
        items.push(CaptionedImage {
            path,
            captions,
            augmented: vec![],
        });
    }
    Ok(items)
}

/// The sentence a captioner learns for a reference caption: trimmed, with RSICD's detached
/// final " ." joined to the last word and a "." added when missing, so that every training
/// sentence ends in the token greedy decoding stops at.
pub fn training_sentence(caption: &str) -> String {
    let mut s = caption.split_whitespace().collect::<Vec<_>>().join(" ");
    while s.ends_with(" .") {
        s.truncate(s.len() - 2);
        s.push('.');
    }
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_in_the_hugging_face_layout() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captions/rsicd-3.parquet");
        let data = open_captions(&format!("parquet:{}", file.display())).unwrap();
        let names: Vec<String> = data
            .items
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["airport_348.jpg", "forest_72.jpg", "river_410.jpg"]);
        assert!(data.items.iter().all(|i| !i.captions.is_empty()));
        // The unpacked images decode.
        for item in &data.items {
            crate::imagery::load_rgb(&item.path, &Default::default()).unwrap();
        }
        // Same captions and bytes as the RSICD folder they were made from.
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/rsicd/test");
        if folder.is_dir() {
            let rsicd = open_captions(&format!("rsicd:{}", folder.display())).unwrap();
            for (item, name) in data.items.iter().zip(&names) {
                let twin = rsicd.items.iter().find(|i| i.path.ends_with(name)).unwrap();
                assert_eq!(item.captions, twin.captions);
                assert_eq!(
                    std::fs::read(&item.path).unwrap(),
                    std::fs::read(&twin.path).unwrap()
                );
            }
        }
    }

    #[test]
    fn training_sentences_end_in_one_period() {
        assert_eq!(
            training_sentence("many planes are parked ."),
            "many planes are parked."
        );
        assert_eq!(training_sentence("  a  river  "), "a river.");
        assert_eq!(training_sentence("done."), "done.");
    }
}
