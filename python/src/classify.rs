//! `skyscribe.Classifier`: classifiers learned from labelled embeddings (`skyscribe train
//! classifier`), saved in the same file the CLI, `scan` and `serve` read.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use skyscribe::classify::fit::Examples;
use skyscribe::classify::{Method, Provenance, TrainSettings};

use crate::clip::{Clip, texts_arg};
use crate::errors::{IntoPy, invalid};

fn method_of(name: &str) -> PyResult<Method> {
    match name {
        "auto" => Ok(Method::Auto),
        "linear" => Ok(Method::Linear),
        "prototype" => Ok(Method::Prototype),
        "zero-shot-prior" => Ok(Method::ZeroShotPrior),
        other => Err(invalid(format!(
            "method {other:?}: expected \"auto\", \"linear\", \"prototype\" or \"zero-shot-prior\""
        ))),
    }
}

/// A trained classifier over CLIP image embeddings.
#[pyclass(frozen, module = "skyscribe._skyscribe")]
pub struct Classifier {
    pub inner: skyscribe::classify::Classifier,
    /// The file it was read from, or what stands for it in messages.
    pub source: String,
}

impl Classifier {
    fn rows(&self, embeddings: &PyReadonlyArray2<'_, f32>) -> PyResult<Vec<Vec<f32>>> {
        let a = embeddings.as_array();
        if a.ncols() != self.inner.dim() {
            return Err(invalid(format!(
                "embeddings of dimension {}; this classifier reads {} ({})",
                a.ncols(),
                self.inner.dim(),
                self.inner.info.model.spec
            )));
        }
        Ok(a.rows().into_iter().map(|r| r.to_vec()).collect())
    }
}

#[pymethods]
impl Classifier {
    /// Reads a classifier file (from `skyscribe train classifier` or `Classifier.save`).
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        let inner = skyscribe::classify::Classifier::load(&path).py()?;
        Ok(Self {
            inner,
            source: path.display().to_string(),
        })
    }

    /// Trains on `embeddings` (`(N, dim)` from `clip.embed_images`) and each row's class name
    /// in `labels`, as `skyscribe train classifier` does. `method`: "auto", "linear",
    /// "prototype" or "zero-shot-prior" (with `prior_labels`, the classes' wordings, and
    /// optionally `templates`); `c` fixes scikit-learn's C instead of searching it; `classes`
    /// orders the classes (default: sorted); `shots` keeps k examples a class drawn with
    /// `seed`.
    #[staticmethod]
    #[pyo3(signature = (embeddings, labels, clip, *, method = "auto", c = None, seed = 0, prior_labels = None, templates = None, classes = None, shots = None))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        embeddings: PyReadonlyArray2<'_, f32>,
        labels: Vec<String>,
        clip: &Bound<'_, Clip>,
        method: &str,
        c: Option<f64>,
        seed: u64,
        prior_labels: Option<String>,
        templates: Option<&Bound<'_, PyAny>>,
        classes: Option<Vec<String>>,
        shots: Option<usize>,
    ) -> PyResult<Self> {
        let settings = TrainSettings {
            method: method_of(method)?,
            c,
            seed,
            labels: prior_labels,
            templates: match templates {
                Some(t) => texts_arg(t, "templates")?,
                None => vec![],
            },
        };
        settings.check().arg()?;
        let a = embeddings.as_array();
        if a.nrows() != labels.len() {
            return Err(invalid(format!(
                "{} embeddings but {} labels: give one label per row",
                a.nrows(),
                labels.len()
            )));
        }
        let encoder = clip.get().encoder.clone();
        let dim = encoder.model.config().projection_dim;
        if a.ncols() != dim {
            return Err(invalid(format!(
                "embeddings of dimension {}; {} makes {dim}",
                a.ncols(),
                encoder.source.spec
            )));
        }
        let classes = match classes {
            Some(c) => c,
            None => {
                let mut c = labels.clone();
                c.sort();
                c.dedup();
                c
            }
        };
        if classes.len() < 2 {
            return Err(invalid(format!(
                "a classifier needs two classes or more; the labels name {}",
                classes.len()
            )));
        }
        let mut ex = Examples::new(classes.clone(), dim);
        for (i, (row, label)) in a.rows().into_iter().zip(&labels).enumerate() {
            let Some(class) = classes.iter().position(|c| c == label) else {
                return Err(invalid(format!(
                    "labels[{i}] is {label:?}, not one of classes {classes:?}"
                )));
            };
            ex.push(&format!("row {i}"), &row.to_vec(), class).arg()?;
        }
        if let Some(k) = shots {
            ex = ex.shots(k, seed).arg()?;
        }
        let provenance = Provenance {
            data: "arrays from Python".into(),
            split: None,
            shots,
        };
        let inner = py
            .detach(|| {
                skyscribe::classify::train_classifier(&encoder, &ex, &settings, &provenance, |_| {})
            })
            .arg()?;
        Ok(Self {
            inner,
            source: "a classifier trained in Python".into(),
        })
    }

    /// Writes the classifier file (atomically).
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.inner.save(&path).py()
    }

    /// The classes, in the order of `predict_proba`'s columns.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes().to_vec()
    }

    /// Everything the file says about how it was trained (method, C and its search, model,
    /// examples), as a dict.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(&self.inner.info)
            .map_err(|e| crate::errors::Error::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (text,))
    }

    fn __repr__(&self) -> String {
        format!(
            "Classifier({} classes, method {}, model {})",
            self.inner.classes().len(),
            self.inner.info.method.name(),
            self.inner.info.model.spec
        )
    }

    /// The best class of each embedding.
    fn predict(
        &self,
        py: Python<'_>,
        embeddings: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Vec<String>> {
        let rows = self.rows(&embeddings)?;
        let c = &self.inner;
        Ok(py.detach(|| {
            rows.iter()
                .map(|e| c.classes()[skyscribe::classify::argmax(&c.logits(e))].clone())
                .collect()
        }))
    }

    /// Each embedding's class probabilities, `float32` of shape `(N, classes)`.
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        embeddings: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let rows = self.rows(&embeddings)?;
        let k = self.inner.classes().len();
        let c = &self.inner;
        let flat: Vec<f32> = py.detach(|| rows.iter().flat_map(|e| c.probabilities(e)).collect());
        Ok(Array2::from_shape_vec((rows.len(), k), flat)
            .map_err(|e| invalid(e.to_string()))?
            .into_pyarray(py))
    }
}
