//! `skyscribe.Index` and `skyscribe.build_index`: archive search (`skyscribe search`) and
//! index builds (`skyscribe index build`) over the same Parquet index folders.

use std::path::PathBuf;

use pyo3::prelude::*;

use skyscribe::data::ChipOptions;
use skyscribe::index::build::{BuildOptions, build};
use skyscribe::index::searcher::{Engine, QuerySpec, Searcher};
use skyscribe::index::{InputChange, Shard, gather_items, plan_inputs};

use crate::classify::Classifier;
use crate::clip::{device_of, positive, texts_arg};
use crate::errors::{IntoPy, invalid};
use crate::images::decode_options;

/// `obj` as JSON text, parsed by Python's `json` (the numbers the CLI's JSON Lines print).
fn to_python<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text =
        serde_json::to_string(value).map_err(|e| crate::errors::Error::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Paths (or `W:path` weighed) as strings: one, or a list.
fn paths_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(vec![p.display().to_string()]);
    }
    let list: Vec<PathBuf> = obj
        .extract()
        .map_err(|_| invalid(format!("{what}: expected a path or a list of paths")))?;
    Ok(list.iter().map(|p| p.display().to_string()).collect())
}

fn optional_texts(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Vec<String>> {
    obj.map(|o| texts_arg(o, what))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn optional_paths(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Vec<String>> {
    obj.map(|o| paths_arg(o, what))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// An index folder opened for search with the model that built it (`model` must be the same
/// model, e.g. its local folder).
#[pyclass(frozen, module = "skyscribe._skyscribe")]
pub struct Index {
    searcher: Searcher,
}

#[pymethods]
impl Index {
    #[new]
    #[pyo3(signature = (index, *, model = None, device = "cpu"))]
    fn new(py: Python<'_>, index: PathBuf, model: Option<String>, device: &str) -> PyResult<Self> {
        let dev = device_of(device)?;
        let searcher = py
            .detach(|| Searcher::open(&index, model.as_deref(), &dev, false))
            .py()?;
        Ok(Self { searcher })
    }

    fn __len__(&self) -> usize {
        self.searcher.index.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Index({:?}, {} vectors, model {})",
            self.searcher.dir.display().to_string(),
            self.searcher.index.len(),
            self.searcher.index.meta.model.spec
        )
    }

    /// Parts skipped when the index was opened (unfinished, missing or damaged), each with why.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.searcher.index.warnings.clone()
    }

    /// The best `top_k` images for a query, as `skyscribe search --jsonl` prints them: a list
    /// of dicts (rank, id, path, score, chip, and bounds for scene tiles). `text` and `image`
    /// (one or a list; `"W:…"` weighs one) add up; `negative_text` and `negative_image` are
    /// looked away from. `engine`: "auto", "exact" or "ann"; `class_name` with `classifier`
    /// (a `Classifier` or its file) searches among the images it puts in that class.
    #[pyo3(signature = (text = None, image = None, *, negative_text = None, negative_image = None, top_k = 10, engine = "auto", ef = 128, class_name = None, classifier = None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        text: Option<&Bound<'py, PyAny>>,
        image: Option<&Bound<'py, PyAny>>,
        negative_text: Option<&Bound<'py, PyAny>>,
        negative_image: Option<&Bound<'py, PyAny>>,
        top_k: usize,
        engine: &str,
        ef: usize,
        class_name: Option<String>,
        classifier: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let engine = Engine::parse(engine).arg()?;
        positive(top_k, "top_k")?;
        positive(ef, "ef")?;
        let spec = QuerySpec {
            texts: optional_texts(text, "text")?,
            images: optional_paths(image, "image")?,
            negative_texts: optional_texts(negative_text, "negative_text")?,
            negative_images: optional_paths(negative_image, "negative_image")?,
        };
        if spec.texts.is_empty() && spec.images.is_empty() {
            return Err(invalid("an empty query: give at least one text or image"));
        }
        let filter = match (class_name, classifier) {
            (Some(class), Some(c)) => {
                let (c, source) = match c.cast::<Classifier>() {
                    Ok(c) => (c.get().inner.clone(), PathBuf::from(&c.get().source)),
                    Err(_) => {
                        let path: PathBuf = c.extract().map_err(|_| {
                            invalid("classifier: a skyscribe.Classifier or a classifier file")
                        })?;
                        (skyscribe::classify::Classifier::load(&path).py()?, path)
                    }
                };
                Some(self.searcher.class_filter(c, &source, &class).arg()?)
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "class_name and classifier go together: the classifier decides the class",
                ));
            }
        };
        let searcher = &self.searcher;
        let hits = py
            .detach(|| {
                let q = searcher.query(&spec)?;
                searcher.search(&q, top_k, engine, ef, filter.as_ref(), |_| {})
            })
            .py()?;
        hits.iter()
            .enumerate()
            .map(|(rank, &(row, score))| to_python(py, &searcher.hit(rank + 1, row, score)))
            .collect()
    }
}

/// Builds or updates an index folder from image files, folders or data sets (`KIND:PATH`,
/// `scene:PATH`), as `skyscribe index build` does, incrementally and resumably; returns its
/// summary (`index build --jsonl`) as a dict. `shard` ("I/N") builds one shard of many;
/// `dtype` ("f32" or "f16") is `--dtype`.
#[pyfunction]
#[pyo3(signature = (index, inputs, *, model = None, device = "cpu", batch_size = 32, chip_size = 300, chip_stride = None, add = false, replace = false, shard = None, shards = None, checkpoint_every = 512, bands = None, dtype = None, progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn build_index<'py>(
    py: Python<'py>,
    index: PathBuf,
    inputs: &Bound<'py, PyAny>,
    model: Option<String>,
    device: &str,
    batch_size: usize,
    chip_size: usize,
    chip_stride: Option<usize>,
    add: bool,
    replace: bool,
    shard: Option<String>,
    shards: Option<usize>,
    checkpoint_every: usize,
    bands: Option<Vec<usize>>,
    dtype: Option<String>,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let inputs = paths_arg(inputs, "inputs")?;
    let dtype = dtype
        .map(|d| {
            skyscribe::index::VectorDtype::parse(&d).map_err(|e| invalid(format!("dtype: {e}")))
        })
        .transpose()?;
    positive(batch_size, "batch_size")?;
    positive(chip_size, "chip_size")?;
    positive(checkpoint_every, "checkpoint_every")?;
    if let Some(s) = chip_stride {
        positive(s, "chip_stride")?;
    }
    if add && replace {
        return Err(invalid(
            "add and replace contradict each other: add keeps the recorded inputs",
        ));
    }
    let shard = shard
        .map(|s| Shard::parse(&s).map_err(|e| invalid(format!("shard {s:?}: {e}"))))
        .transpose()?;
    let shard = Shard::resolve(shard, shards, |k| std::env::var(k).ok()).arg()?;
    let decode = decode_options(bands, None)?;
    let dev = device_of(device)?;
    let chips = ChipOptions {
        size: chip_size as u32,
        stride: chip_stride.unwrap_or(chip_size) as u32,
        ..ChipOptions::default()
    };
    let change = match (add, replace) {
        (true, _) => InputChange::Add,
        (_, true) => InputChange::Replace,
        _ => InputChange::Same,
    };
    let spec = model.unwrap_or_else(|| skyscribe::builtin::MINI_CLIP.to_string());
    let report = py
        .detach(|| -> anyhow::Result<_> {
            let inputs = plan_inputs(&index, &inputs, change)?;
            let (items, errors) = gather_items(&inputs, &chips)?;
            if let Some(e) = errors.into_iter().next() {
                return Err(e);
            }
            if items.is_empty() {
                anyhow::bail!("no images to index in {}", inputs.join(" "));
            }
            let clip = skyscribe::encoder::ClipEncoder::load(&spec, &dev)?;
            let options = BuildOptions {
                shard,
                batch_size,
                decode,
                checkpoint_every,
                quiet: !progress,
                inputs: Some(inputs),
                dtype,
            };
            build(&index, &clip, &spec, &items, &options)
        })
        .py()?;
    to_python(py, &report)
}
