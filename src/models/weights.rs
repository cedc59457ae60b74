//! Checked access to a checkpoint's tensors: every read names the tensor and the shape the
//! model expects, and a missing or mis-shaped tensor is an error that says which one and where.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

enum Source {
    /// `model.safetensors`, memory-mapped: shapes are checked before anything is copied.
    Safetensors(MmapedSafetensors),
    /// `pytorch_model.bin` / `.pt`: a pickled state dict, read whole.
    Loaded(HashMap<String, Tensor>),
    /// Every tensor asked for is made up: small normal noise (benchmarks with real shapes).
    Random,
}

/// The tensors of one checkpoint file, read as f32 on one device.
pub struct Weights {
    source: Source,
    file: PathBuf,
    device: Device,
}

impl Weights {
    /// `model.safetensors` in `dir`, else `pytorch_model.bin`.
    pub fn from_model_dir(dir: &Path, device: &Device) -> Result<Self> {
        let safetensors = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        if safetensors.is_file() {
            Self::from_file(&safetensors, device)
        } else if bin.is_file() {
            Self::from_file(&bin, device)
        } else {
            bail!(
                "{}: no model.safetensors or pytorch_model.bin in this model directory",
                dir.display()
            )
        }
    }

    /// A `.safetensors` file, or a PyTorch pickle (`.bin`, `.pt`, `.pth`).
    pub fn from_file(path: &Path, device: &Device) -> Result<Self> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let source = if is_safetensors {
            // SAFETY: the file is mapped read-only; like every reader of model files we assume
            // nobody truncates it while we run.
            let st = unsafe { MmapedSafetensors::new(path) }
                .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
            Source::Safetensors(st)
        } else {
            let tensors = candle_core::pickle::read_all(path).with_context(|| {
                format!("{}: not a readable PyTorch state dict", path.display())
            })?;
            Source::Loaded(tensors.into_iter().collect())
        };
        Ok(Self {
            source,
            file: path.to_path_buf(),
            device: device.clone(),
        })
    }

    /// Wraps tensors already in memory (tests, models built from random weights).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Self {
        Self {
            source: Source::Loaded(tensors),
            file: PathBuf::from("<memory>"),
            device: device.clone(),
        }
    }

    /// A source that answers every request with random values of the requested shape: the
    /// model's real shapes without its weights, for speed measurements.
    pub fn random(device: &Device) -> Self {
        Self {
            source: Source::Random,
            file: PathBuf::from("<random>"),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether the checkpoint holds `name` (of any shape).
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors(st) => st.get(name).is_ok(),
            Source::Loaded(map) => map.contains_key(name),
            Source::Random => true,
        }
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.source {
            Source::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Source::Loaded(map) => map.keys().cloned().collect(),
            Source::Random => vec![],
        };
        names.sort();
        names
    }

    /// The tensor `name`, which must have exactly `shape`, as f32 on this device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let found: Vec<usize> = match &self.source {
            Source::Safetensors(st) => match st.get(name) {
                Ok(view) => view.shape().to_vec(),
                Err(_) => return Err(self.missing(name, shape)),
            },
            Source::Loaded(map) => match map.get(name) {
                Some(t) => t.dims().to_vec(),
                None => return Err(self.missing(name, shape)),
            },
            Source::Random => return Ok((Tensor::randn(0f32, 1.0, shape, &self.device)? * 0.02)?),
        };
        if found != shape {
            bail!(
                "{}: tensor '{name}' has shape {found:?}, but the model's config.json needs {shape:?}",
                self.file.display()
            );
        }
        let tensor = match &self.source {
            Source::Safetensors(st) => st.load(name, &self.device)?,
            Source::Loaded(map) => map[name].to_device(&self.device)?,
            Source::Random => unreachable!("answered above"),
        };
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// The tensor `name` with whatever shape it has, as f32 on this device.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        let t = match &self.source {
            Source::Safetensors(st) => st
                .load(name, &self.device)
                .map_err(|_| self.missing(name, &[]))?,
            Source::Loaded(map) => map
                .get(name)
                .ok_or_else(|| self.missing(name, &[]))?
                .to_device(&self.device)?,
            Source::Random => bail!("random weights have no shapes of their own"),
        };
        Ok(t.to_dtype(DType::F32)?)
    }

    fn missing(&self, name: &str, shape: &[usize]) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: missing tensor '{name}' (expected shape {shape:?}); is this a checkpoint of the model its config.json describes?",
            self.file.display()
        )
    }
}
