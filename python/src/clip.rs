//! `skyscribe.Clip`: a CLIP model — image and text embeddings (the numbers `skyscribe embed`
//! prints), zero-shot labels (`skyscribe labels`), and the preprocessed input tensor.

use std::sync::Arc;

use numpy::ndarray::{Array2, Array4};
use numpy::{IntoPyArray, PyArray2, PyArray4};
use pyo3::prelude::*;
use pyo3::types::PyString;

use candle_core::Device;
use skyscribe::classify::Scorer;
use skyscribe::encoder::ClipEncoder;
use skyscribe::imagery::DecodeOptions;
use skyscribe::labels::{Label, LabelSet};
use skyscribe::models::Precision;
use skyscribe::zeroshot::ZeroShotClassifier;

use crate::classify::Classifier;
use crate::errors::{IntoPy, invalid};
use crate::images::{Images, decode_options, images_arg};

/// `cpu`, `cuda` (the first GPU, in a build with CUDA) or `auto` (CUDA when there is one).
pub fn device_of(name: &str) -> PyResult<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            crate::errors::Error::new_err(format!(
                "cannot use CUDA (was skyscribe built with --features cuda?): {e}"
            ))
        }),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        other => Err(invalid(format!(
            "device {other:?}: expected \"cpu\", \"cuda\" or \"auto\""
        ))),
    }
}

fn precision_of(name: &str) -> PyResult<Precision> {
    match name {
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        "f16" => Ok(Precision::F16),
        "int8" => Ok(Precision::Int8),
        other => Err(invalid(format!(
            "precision {other:?}: expected \"f32\", \"bf16\", \"f16\" or \"int8\""
        ))),
    }
}

pub fn positive(value: usize, name: &str) -> PyResult<usize> {
    if value == 0 {
        Err(invalid(format!("{name} must be at least 1")))
    } else {
        Ok(value)
    }
}

/// A list of texts: one `str`, or a list of them.
pub fn texts_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.extract::<String>()?]);
    }
    obj.extract::<Vec<String>>()
        .map_err(|_| invalid(format!("{what}: expected a str or a list of str")))
}

/// A CLIP model: the built-in `"skyscribe-mini"`, a folder in the Hugging Face layout, or a
/// hub id such as `"openai/clip-vit-base-patch32"`.
#[pyclass(frozen, module = "skyscribe._skyscribe")]
pub struct Clip {
    pub encoder: Arc<ClipEncoder>,
    /// The label sets' text embeddings of recent calls: a notebook labelling image after image
    /// with one label set embeds its prompts once, not once a call.
    labels_seen: LabelCache,
}

/// Zero-shot classifiers by their label set and templates, the last few kept.
#[derive(Default)]
pub struct LabelCache(std::sync::Mutex<Vec<(String, ZeroShotClassifier)>>);

impl LabelCache {
    /// Label sets × templates kept (each is a few kilobytes of embeddings).
    const KEEP: usize = 8;

    fn get_or_make(
        &self,
        key: String,
        make: impl FnOnce() -> anyhow::Result<ZeroShotClassifier>,
    ) -> anyhow::Result<ZeroShotClassifier> {
        let found = {
            let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter().find(|(k, _)| *k == key).map(|(_, z)| z.clone())
        };
        if let Some(z) = found {
            return Ok(z);
        }
        // Made without the lock (it runs the text tower): two threads may both make it; the
        // first to finish keeps it.
        let z = make()?;
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !kept.iter().any(|(k, _)| *k == key) {
            if kept.len() >= Self::KEEP {
                kept.remove(0);
            }
            kept.push((key, z.clone()));
        }
        Ok(z)
    }
}

impl Clip {
    /// A `Clip` over a loaded encoder.
    pub fn from_encoder(encoder: ClipEncoder) -> Self {
        Self {
            encoder: Arc::new(encoder),
            labels_seen: LabelCache::default(),
        }
    }

    /// The embeddings of `images` in input order; the first unreadable image is an error that
    /// names it. Runs without the GIL.
    pub fn embed(
        &self,
        py: Python<'_>,
        images: &Images,
        batch_size: usize,
        decode: &DecodeOptions,
        progress: bool,
    ) -> PyResult<Vec<Vec<f32>>> {
        let clip = &*self.encoder;
        let n = images.len();
        py.detach(|| -> anyhow::Result<Vec<Vec<f32>>> {
            let bar = skyscribe::progress::items(n, "images", "encoding", !progress);
            let mut out = Vec::with_capacity(n);
            let mut sink = |i: usize, r: anyhow::Result<Vec<f32>>| -> anyhow::Result<()> {
                bar.inc(1);
                let name = images.name(i);
                let e = r.map_err(|e| {
                    // Decoding errors name their file; pixels in memory are named here.
                    if e.to_string().contains(&name) {
                        e
                    } else {
                        e.context(name)
                    }
                })?;
                out.push(e);
                Ok(())
            };
            match images {
                Images::Paths(p) => clip.embed_files(p, batch_size, decode, |i, _, r| sink(i, r)),
                Images::Pixels(p) => clip.embed_batched(
                    p,
                    batch_size,
                    |img| clip.preprocessor.preprocess(img),
                    &mut sink,
                ),
            }?;
            bar.finish_and_clear();
            Ok(out)
        })
        .py()
    }
}

/// A label set's zero-shot classifier over `clip` (`labels`: a preset, file or "a,b,c", or a
/// list of names; default: the model's describe vocabulary; `templates` as `--template`), or
/// the learned `classifier`, checked against `clip`. Label sets already embedded come from
/// `cache` when one is given.
pub fn scorer(
    py: Python<'_>,
    clip: &ClipEncoder,
    labels: Option<&Bound<'_, PyAny>>,
    templates: Option<&Bound<'_, PyAny>>,
    classifier: Option<&Classifier>,
    cache: Option<&LabelCache>,
) -> PyResult<Scorer> {
    if let Some(c) = classifier {
        if labels.is_some() || templates.is_some() {
            return Err(invalid(
                "give labels (and templates) or a classifier, not both: a classifier has its \
                 own classes",
            ));
        }
        c.inner
            .check_model(clip, std::path::Path::new(&c.source))
            .arg()?;
        return Ok(Scorer::Learned(c.inner.clone()));
    }
    let set = match labels {
        None => clip.describe_labels().arg()?,
        Some(l) if l.is_instance_of::<PyString>() => {
            LabelSet::parse(&l.extract::<String>()?).arg()?
        }
        Some(l) => {
            let names: Vec<String> = l.extract().map_err(|_| {
                invalid("labels: a preset name, a file, \"a,b,c\" or a list of str")
            })?;
            let labels = names.iter().map(|n| Label::plain(n)).collect();
            LabelSet::new("labels", labels).arg()?
        }
    };
    let given = match templates {
        None => vec![],
        Some(t) => texts_arg(t, "templates")?,
    };
    let (templates, _) = clip.defaults.templates(&given, &clip.source.spec).arg()?;
    // The resolved set (names, wordings, classes) and templates: a file's label set is keyed
    // by what it says, not by its name.
    let key = format!("{:?}\u{0}{:?}", set.labels, templates.0);
    let make = || ZeroShotClassifier::new(clip, set, templates);
    py.detach(|| match cache {
        Some(c) => c.get_or_make(key, make),
        None => make(),
    })
    .py()
    .map(Scorer::ZeroShot)
}

#[pymethods]
impl Clip {
    #[new]
    #[pyo3(signature = (model = "skyscribe-mini", device = "cpu", precision = "f32"))]
    fn new(py: Python<'_>, model: &str, device: &str, precision: &str) -> PyResult<Self> {
        let device = device_of(device)?;
        let precision = precision_of(precision)?;
        precision.check(&device).arg()?;
        let encoder = py
            .detach(|| ClipEncoder::load_in(model, &device, precision))
            .py()?;
        Ok(Self::from_encoder(encoder))
    }

    /// The model as given (a built-in name, folder or hub id).
    #[getter]
    fn model(&self) -> String {
        self.encoder.source.spec.clone()
    }

    /// The embeddings' length (the projection dimension).
    #[getter]
    fn dim(&self) -> usize {
        self.encoder.model.config().projection_dim
    }

    /// The side of the square image the vision tower takes.
    #[getter]
    fn image_size(&self) -> usize {
        self.encoder.model.image_size()
    }

    fn __repr__(&self) -> String {
        format!(
            "Clip(model={:?}, dim={}, image_size={})",
            self.encoder.source.spec,
            self.dim(),
            self.image_size()
        )
    }

    /// Image embeddings (projected, not normalised), `float32` of shape `(N, dim)`: the numbers
    /// `skyscribe embed --jsonl` prints.
    #[pyo3(signature = (images, *, batch_size = 32, bands = None, max_pixels = None, progress = false))]
    fn embed_images<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        batch_size: usize,
        bands: Option<Vec<usize>>,
        max_pixels: Option<u64>,
        progress: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let batch_size = positive(batch_size, "batch_size")?;
        let decode = decode_options(bands, max_pixels)?;
        let images = images_arg(images)?;
        let rows = self.embed(py, &images, batch_size, &decode, progress)?;
        Ok(matrix(rows, self.dim()).into_pyarray(py))
    }

    /// Text embeddings (projected, not normalised), `float32` of shape `(N, dim)`.
    #[pyo3(signature = (texts, *, batch_size = 32))]
    fn embed_texts<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let batch_size = positive(batch_size, "batch_size")?;
        let texts = texts_arg(texts, "texts")?;
        let clip = &*self.encoder;
        let rows = py.detach(|| clip.embed_texts(&texts, batch_size)).py()?;
        Ok(matrix(rows, self.dim()).into_pyarray(py))
    }

    /// Zero-shot labels of each image, best first: a list (one per image) of `(label, score)`
    /// lists, as `skyscribe labels --jsonl`. `labels`: a preset ("eurosat", "xview", …), a
    /// file, "a,b,c" or a list of names (default: the model's describe vocabulary);
    /// `templates`: a template with `{}`, a template set name or a list (default: the model's
    /// own); `classifier`: a `skyscribe.Classifier` instead of labels; `top_k=None` keeps all.
    #[pyo3(signature = (images, labels = None, *, templates = None, classifier = None, top_k = Some(5), batch_size = 32, bands = None, progress = false))]
    #[allow(clippy::too_many_arguments)]
    fn labels(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        templates: Option<&Bound<'_, PyAny>>,
        classifier: Option<&Bound<'_, Classifier>>,
        top_k: Option<usize>,
        batch_size: usize,
        bands: Option<Vec<usize>>,
        progress: bool,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        if let Some(k) = top_k {
            positive(k, "top_k")?;
        }
        let batch_size = positive(batch_size, "batch_size")?;
        let decode = decode_options(bands, None)?;
        let scorer = scorer(
            py,
            &self.encoder,
            labels,
            templates,
            classifier.map(|c| c.get()),
            Some(&self.labels_seen),
        )?;
        let images = images_arg(images)?;
        let rows = self.embed(py, &images, batch_size, &decode, progress)?;
        Ok(rows
            .iter()
            .map(|e| {
                scorer
                    .ranked(e, top_k)
                    .into_iter()
                    .map(|l| (l.label, l.score))
                    .collect()
            })
            .collect())
    }

    /// The model's input: each image decoded, resized, cropped and normalised as CLIP's
    /// preprocessor does, `float32` of shape `(N, 3, S, S)`.
    #[pyo3(signature = (images, *, bands = None))]
    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        bands: Option<Vec<usize>>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let decode = decode_options(bands, None)?;
        let images = images_arg(images)?;
        let clip = &*self.encoder;
        let s = clip.model.image_size();
        let pixels = py
            .detach(|| -> anyhow::Result<Vec<f32>> {
                use rayon::prelude::*;
                let each: Vec<anyhow::Result<Vec<f32>>> = (0..images.len())
                    .into_par_iter()
                    .map(|i| match &images {
                        Images::Paths(p) => clip.load_pixels(&p[i], &decode),
                        Images::Pixels(p) => clip.preprocessor.preprocess(&p[i]),
                    })
                    .collect();
                let mut flat = Vec::with_capacity(images.len() * 3 * s * s);
                for (i, p) in each.into_iter().enumerate() {
                    flat.extend(p.map_err(|e| e.context(images.name(i)))?);
                }
                Ok(flat)
            })
            .py()?;
        let a = Array4::from_shape_vec((images.len(), 3, s, s), pixels)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(a.into_pyarray(py))
    }
}

/// Rows of equal length as an `(N, dim)` array (`(0, dim)` for none).
pub fn matrix(rows: Vec<Vec<f32>>, dim: usize) -> Array2<f32> {
    let n = rows.len();
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Array2::from_shape_vec((n, dim), flat).expect("every embedding has the model's dimension")
}
