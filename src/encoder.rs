//! A CLIP model with everything needed to feed it — tokenizer and image preprocessor — and the
//! batched image pipeline: files are decoded and preprocessed in parallel (rayon) on a
//! producer thread while the model encodes the previous batch.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::data::ImageRef;
use crate::hub::{self, ModelDir};
use crate::imagery::{self, DecodeOptions, Preprocessor};
use crate::labels::Templates;
use crate::models::{ClipModel, Precision};
use crate::tokenizer::TextTokenizer;

/// CLIP ready to embed text and image files.
pub struct ClipEncoder {
    pub model: ClipModel,
    pub tokenizer: TextTokenizer,
    pub preprocessor: Preprocessor,
    pub source: ModelDir,
    /// What the model folder's `skyscribe.json` recommends (empty when it has none).
    pub defaults: ModelDefaults,
}

/// `skyscribe.json` beside a model's `config.json`: how the model is best used, as chosen on
/// its training data. Every field is optional.
///
/// ```json
/// {"templates": ["this is a {} ."], "describe_labels": "describe"}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// Prompt templates (or template set names) used when no `--template` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    /// The label set `describe` uses when no `--labels` is given (a preset, file or list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub describe_labels: Option<String>,
}

impl ModelDefaults {
    /// The templates to use: `given` (`--template` values) when there are any, else this
    /// model's own, else CLIP's default; and where they came from, for the user.
    pub fn templates(&self, given: &[String], model: &str) -> Result<(Templates, String)> {
        if !given.is_empty() {
            return Ok((Templates::parse(given)?, "--template".into()));
        }
        if !self.templates.is_empty() {
            let t = Templates::parse(&self.templates)
                .with_context(|| format!("{model}: {}", hub::DEFAULTS_FILE))?;
            return Ok((t, format!("{model}'s {}", hub::DEFAULTS_FILE)));
        }
        Ok((Templates::parse(&[])?, "CLIP's default".into()))
    }

    /// `dir/skyscribe.json`, or no defaults when the folder has none.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(hub::DEFAULTS_FILE);
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a skyscribe.json (fields: templates, describe_labels)",
                path.display()
            )
        })
    }
}

impl ClipEncoder {
    /// Loads a CLIP directory or hub id (see [`hub::resolve_clip`]).
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        Self::load_in(spec, device, Precision::F32)
    }

    /// [`Self::load`] with the model's linear layers computing in `precision`.
    pub fn load_in(spec: &str, device: &Device, precision: Precision) -> Result<Self> {
        precision.check(device)?;
        let source = hub::resolve_clip(spec)?;
        let model = ClipModel::load_dir_in(&source.dir, device, precision)?;
        let json = crate::builtin::clip_tokenizer_json(&source.dir)?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&json).map_err(|e| {
            anyhow::anyhow!("{}: not a valid tokenizer.json: {e}", source.dir.display())
        })?;
        let tokenizer = TextTokenizer::new(tokenizer, model.context_length());
        let preprocessor = Preprocessor::from_file(&source.file("preprocessor_config.json"))?;
        let defaults = ModelDefaults::read(&source.dir)?;
        let mut encoder = Self::from_parts(model, tokenizer, preprocessor, source)?;
        encoder.defaults = defaults;
        Ok(encoder)
    }

    pub fn from_parts(
        model: ClipModel,
        tokenizer: TextTokenizer,
        preprocessor: Preprocessor,
        source: ModelDir,
    ) -> Result<Self> {
        let s = model.image_size() as u32;
        let (h, w) = preprocessor.output_size(s, s);
        if (h, w) != (s, s) {
            bail!(
                "{}: preprocessor_config.json makes {w}×{h} images, but the model takes {s}×{s}",
                source.dir.display()
            );
        }
        if preprocessor.crop.is_none()
            && !matches!(preprocessor.resize, imagery::Resize::Exact { .. })
        {
            bail!(
                "{}: preprocessor_config.json neither crops nor resizes to a fixed size",
                source.dir.display()
            );
        }
        Ok(Self {
            model,
            tokenizer,
            preprocessor,
            source,
            defaults: ModelDefaults::default(),
        })
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The label set `describe` and `scan` use when none is given: the model's own (its
    /// `skyscribe.json`), else the `describe` preset.
    pub fn describe_labels(&self) -> Result<crate::labels::LabelSet> {
        crate::labels::LabelSet::parse(
            self.defaults
                .describe_labels
                .as_deref()
                .unwrap_or("describe"),
        )
    }

    /// Projected text embeddings (not normalised), `batch_size` texts per forward pass.
    ///
    /// Texts are batched by token length (shortest first) and the results put back in input
    /// order: a batch is padded to its longest row, so grouping similar lengths cuts the padding
    /// that label sets × templates otherwise carry. Causal attention makes padding invisible to
    /// the pooled token, so the embeddings are those of unsorted batches.
    pub fn embed_texts(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let batch = self.tokenizer.pad(&rows);
            let features = self.model.text_features(&batch)?.to_vec2::<f32>()?;
            for (&i, f) in chunk.iter().zip(features) {
                out[i] = f;
            }
        }
        Ok(out)
    }

    /// Decodes and preprocesses one file into the `(3, S, S)` floats the vision tower takes.
    /// With [`DecodeOptions::jpeg_draft`], a large JPEG decodes only as large as the
    /// preprocessing needs.
    pub fn load_pixels(&self, path: &Path, decode: &DecodeOptions) -> Result<Vec<f32>> {
        let img = imagery::load_decoded(path, decode, self.preprocessor.draft_size())?;
        self.preprocessor.preprocess_decoded(img)
    }

    /// Projected image embeddings (not normalised) of preprocessed images.
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        if pixels.is_empty() {
            return Ok(vec![]);
        }
        let s = self.model.image_size();
        let flat: Vec<f32> = pixels.iter().flat_map(|p| p.iter().copied()).collect();
        let t = Tensor::from_vec(flat, (pixels.len(), 3, s, s), self.device())?;
        Ok(self.model.image_features(&t)?.to_vec2::<f32>()?)
    }

    /// Embeds image files in batches, calling `sink` in input order with each file's embedding or
    /// the reason it could not be read. Decoding of batch n+1 overlaps encoding of batch n.
    pub fn embed_files(
        &self,
        paths: &[PathBuf],
        batch_size: usize,
        decode: &DecodeOptions,
        mut sink: impl FnMut(usize, &Path, Result<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        self.embed_batched(
            paths,
            batch_size,
            |p| self.load_pixels(p, decode),
            |i, r| sink(i, &paths[i], r),
        )
    }

    /// Decodes and preprocesses an image or a chip of it; `scenes` keeps the last decoded
    /// scene so that consecutive chips of one scene decode it once. Chips of TIFF scenes are
    /// read window by window through [`crate::scene`], as `scan` reads them (same bands,
    /// stretch and nodata); a wholly nodata one is a [`crate::scene::NodataTile`] error.
    pub fn load_pixels_ref(
        &self,
        image: &ImageRef,
        decode: &DecodeOptions,
        scenes: &SceneCache,
    ) -> Result<Vec<f32>> {
        match image.crop {
            None => self.load_pixels(&image.path, decode),
            Some(rect) if scenes.is_tiff(&image.path) => {
                let opts = crate::scene::SceneOptions {
                    bands: decode.bands.clone(),
                    ..Default::default()
                };
                match scenes.tiles.tile(&image.path, rect, &opts)? {
                    Some(chip) => self.preprocessor.preprocess(&chip),
                    None => Err(anyhow::Error::new(crate::scene::NodataTile))
                        .with_context(|| image.display()),
                }
            }
            Some(rect) => {
                let scene = scenes.get(&image.path, decode)?;
                let chip = imagery::crop(&scene, rect).with_context(|| image.display())?;
                self.preprocessor.preprocess(&chip)
            }
        }
    }

    /// The batched pipeline over any items: `load` turns an item into pixels (in parallel, on
    /// a producer thread), the model encodes whole batches, and `sink` gets every result in
    /// input order.
    pub fn embed_batched<T: Sync>(
        &self,
        items: &[T],
        batch_size: usize,
        load: impl Fn(&T) -> Result<Vec<f32>> + Sync,
        mut sink: impl FnMut(usize, Result<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        let batch_size = batch_size.max(1);
        let load = &load;
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::sync_channel::<(usize, Vec<Result<Vec<f32>>>)>(1);
            scope.spawn(move || {
                for (b, chunk) in items.chunks(batch_size).enumerate() {
                    let pixels: Vec<Result<Vec<f32>>> = chunk.par_iter().map(load).collect();
                    if tx.send((b * batch_size, pixels)).is_err() {
                        break; // the consumer stopped early (an error); stop decoding.
                    }
                }
            });
            for (start, pixels) in rx {
                let good: Vec<Vec<f32>> = pixels
                    .iter()
                    .filter_map(|p| p.as_ref().ok().cloned())
                    .collect();
                let mut embeds = self.embed_pixels(&good)?.into_iter();
                for (i, p) in pixels.into_iter().enumerate() {
                    let result = match p {
                        Ok(_) => Ok(embeds.next().expect("one embedding per decoded image")),
                        Err(e) => Err(e),
                    };
                    sink(start + i, result)?;
                }
            }
            Ok(())
        })
    }
}

/// The most recently decoded large scene, shared by the decoding threads; TIFF scenes are
/// read a band of rows at a time instead.
#[derive(Default)]
pub struct SceneCache {
    last: Mutex<Option<(PathBuf, Arc<imagery::RgbImage>)>>,
    tiles: crate::scene::SharedTiles,
    /// Which files are TIFFs (asked once a file).
    tiff: Mutex<Option<(PathBuf, bool)>>,
}

impl SceneCache {
    fn is_tiff(&self, path: &Path) -> bool {
        let mut known = self.tiff.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, t)) = known.as_ref()
            && p == path
        {
            return *t;
        }
        // Scenes by URL are read only as GeoTIFFs, window by window.
        let t =
            crate::scene::source::is_remote(&path.to_string_lossy()) || crate::scene::is_tiff(path);
        *known = Some((path.to_path_buf(), t));
        t
    }

    pub fn get(&self, path: &Path, decode: &DecodeOptions) -> Result<Arc<imagery::RgbImage>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, img)) = last.as_ref()
            && p == path
        {
            return Ok(img.clone());
        }
        let img = Arc::new(imagery::load_rgb(path, decode)?);
        *last = Some((path.to_path_buf(), img.clone()));
        Ok(img)
    }
}

/// Expands files and directories (walked recursively, images only, sorted) into image paths.
/// Inputs that do not exist and directories without images come back as errors naming them,
/// so the caller can report them and still process everything else.
pub fn collect_images(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<anyhow::Error>) {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let found = imagery::images_under(input);
            if found.is_empty() {
                errors.push(anyhow::anyhow!(
                    "{}: folder has no images (looked for .jpg .jpeg .png .webp .tif .tiff .bmp .gif)",
                    input.display()
                ));
            }
            paths.extend(found);
        } else if input.exists() {
            paths.push(input.clone());
        } else {
            errors.push(anyhow::anyhow!(
                "{}: no such file or directory",
                input.display()
            ));
        }
    }
    (paths, errors)
}

/// `x / |x|` (zero stays zero).
pub fn normalized(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        x.to_vec()
    } else {
        x.iter().map(|v| v / norm).collect()
    }
}
