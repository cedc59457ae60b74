//! `skyscribe.Captioner`: ClipCap captions of images (`skyscribe caption`).

use std::sync::Arc;

use pyo3::prelude::*;

use skyscribe::caption::{DecodeKind, DecodingRequest};
use skyscribe::encoder::ClipEncoder;

use crate::clip::{Clip, device_of, positive};
use crate::errors::{IntoPy, invalid};
use crate::images::{decode_options, images_arg};

/// A ClipCap captioner (a folder, or the built-in `"skyscribe-mini-captioner"`) with the CLIP
/// model it reads: its own, unless `clip` gives another (checked, as the CLI checks `--model`).
#[pyclass(frozen, module = "skyscribe._skyscribe")]
pub struct Captioner {
    pub captioner: Arc<skyscribe::caption::Captioner>,
    clip: Py<Clip>,
}

#[pymethods]
impl Captioner {
    #[new]
    #[pyo3(signature = (spec = "skyscribe-mini-captioner", *, clip = None, device = "cpu", force_clip = false))]
    fn new(
        py: Python<'_>,
        spec: &str,
        clip: Option<Py<Clip>>,
        device: &str,
        force_clip: bool,
    ) -> PyResult<Self> {
        let dev = device_of(device)?;
        let captioner = py
            .detach(|| skyscribe::caption::Captioner::load_spec(spec, &dev))
            .py()?;
        let clip = match clip {
            Some(c) => c,
            None => {
                let spec = captioner.clip_model_spec();
                let encoder = py.detach(|| ClipEncoder::load(&spec, &dev)).py()?;
                Py::new(py, Clip::from_encoder(encoder))?
            }
        };
        captioner
            .check_clip(&clip.get().encoder, force_clip)
            .arg()?;
        Ok(Self {
            captioner: Arc::new(captioner),
            clip,
        })
    }

    /// The CLIP model the captions are read from.
    #[getter]
    fn clip(&self, py: Python<'_>) -> Py<Clip> {
        self.clip.clone_ref(py)
    }

    /// One caption per image, as `skyscribe caption --jsonl` prints them. `decode`: "greedy",
    /// "beam" (`beam_size`, default 5) or "sample" (`top_p`, default 0.9; `seed`, image `i`
    /// uses `seed + i`); `temperature` for beam and sample. An option of another decoding is
    /// refused, as the CLI refuses it.
    #[pyo3(signature = (images, *, decode = "greedy", beam_size = None, top_p = None, temperature = None, seed = None, max_tokens = 67, batch_size = 32, bands = None, progress = false))]
    #[allow(clippy::too_many_arguments)]
    fn caption(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        decode: &str,
        beam_size: Option<usize>,
        top_p: Option<f32>,
        temperature: Option<f32>,
        seed: Option<u64>,
        max_tokens: usize,
        batch_size: usize,
        bands: Option<Vec<usize>>,
        progress: bool,
    ) -> PyResult<Vec<String>> {
        let request = DecodingRequest {
            decode: DecodeKind::parse(decode).arg()?,
            beam_size,
            top_p,
            temperature,
            seed,
            max_tokens,
        };
        let (how, opts) = request.resolve().arg()?;
        let batch_size = positive(batch_size, "batch_size")?;
        let decode_opts = decode_options(bands, None)?;
        let images = images_arg(images)?;
        let embeddings = self
            .clip
            .get()
            .embed(py, &images, batch_size, &decode_opts, progress)?;
        let cap = &*self.captioner;
        py.detach(|| {
            let mut out = Vec::with_capacity(embeddings.len());
            // Batches as the CLI's: image i keeps its number for sampling seeds.
            for chunk in embeddings.chunks(batch_size) {
                out.extend(cap.captions(chunk, how, &opts, out.len() as u64)?);
            }
            Ok(out)
        })
        .py()
    }

    /// Captions of CLIP image embeddings (`(N, dim)`, e.g. from `Clip.embed_images`), greedy.
    fn caption_embeddings(
        &self,
        py: Python<'_>,
        embeddings: numpy::PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Vec<String>> {
        let a = embeddings.as_array();
        let dim = self.clip.get().encoder.model.config().projection_dim;
        if a.ncols() != dim {
            return Err(invalid(format!(
                "embeddings of dimension {}; this captioner reads {dim}",
                a.ncols()
            )));
        }
        let rows: Vec<Vec<f32>> = a.rows().into_iter().map(|r| r.to_vec()).collect();
        let cap = &*self.captioner;
        py.detach(|| {
            let opts = Default::default();
            let mut out = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(32) {
                out.extend(cap.captions(
                    chunk,
                    skyscribe::caption::Decoding::Greedy,
                    &opts,
                    out.len() as u64,
                )?);
            }
            Ok(out)
        })
        .py()
    }
}
