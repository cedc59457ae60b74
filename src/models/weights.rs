//! Checked access to a checkpoint's tensors: every read names the tensor and the shape the
//! model expects, and a missing or mis-shaped tensor is an error that says which one and where.
//!
//! Models read through a [`Scope`], a view of the checkpoint at a key prefix (candle's
//! `VarBuilder::pp`): each sub-module is handed `scope.pp("layer_norm1")` and asks for
//! `"weight"`, so key paths are built in one place and read like the module tree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::reduced_precision::Precision;
use anyhow::{Context, Result, bail};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;

enum Source {
    /// `model.safetensors`, memory-mapped: shapes are checked before anything is copied.
    Safetensors(MmapedSafetensors),
    /// `pytorch_model.bin` / `.pt`: a pickled state dict, read whole.
    Loaded(HashMap<String, Tensor>),
    /// Every tensor asked for is made up: small normal noise (benchmarks with real shapes).
    Random,
    /// Fresh weights for training from scratch, seeded: see [`initial_value`].
    Init(Box<Mutex<rand::rngs::StdRng>>),
}

/// The tensors of one checkpoint file, read as f32 (or [`Weights::with_dtype`]'s type) on one
/// device.
///
/// In trainable mode ([`Weights::trainable`]) every tensor handed out is a [`Var`], recorded
/// under its checkpoint key: the models built from it are then the training graph, and
/// [`Weights::vars`] is what the optimiser updates and what a checkpoint saves.
pub struct Weights {
    source: Source,
    file: PathBuf,
    device: Device,
    vars: Option<Mutex<Vec<(String, Var)>>>,
    /// In trainable mode, only names starting with one of these are variables (all if empty).
    trainable_prefixes: Vec<String>,
    /// What the inference linear layers built from these weights compute in.
    precision: Precision,
    /// The type every tensor is handed out in (f32 unless [`Weights::with_dtype`]).
    dtype: DType,
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
            vars: None,
            trainable_prefixes: vec![],
            precision: Precision::F32,
            dtype: DType::F32,
        })
    }

    /// Wraps tensors already in memory (tests, models built from random weights).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Self {
        Self {
            source: Source::Loaded(tensors),
            file: PathBuf::from("<memory>"),
            device: device.clone(),
            vars: None,
            trainable_prefixes: vec![],
            precision: Precision::F32,
            dtype: DType::F32,
        }
    }

    /// A source that answers every request with random values of the requested shape: the
    /// model's real shapes without its weights, for speed measurements.
    pub fn random(device: &Device) -> Self {
        Self {
            source: Source::Random,
            file: PathBuf::from("<random>"),
            device: device.clone(),
            vars: None,
            trainable_prefixes: vec![],
            precision: Precision::F32,
            dtype: DType::F32,
        }
    }

    /// Fresh weights for training from scratch, drawn from `seed` (see [`initial_value`]).
    pub fn init(seed: u64, device: &Device) -> Self {
        Self {
            source: Source::Init(Box::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(
                seed,
            )))),
            file: PathBuf::from("<new>"),
            device: device.clone(),
            vars: None,
            trainable_prefixes: vec![],
            precision: Precision::F32,
            dtype: DType::F32,
        }
    }

    /// Builds the model to compute in `precision` (refused where this device cannot; see
    /// [`Precision::check`]): on a GPU, every tensor is handed out in its type.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        precision.check(&self.device)?;
        self.precision = precision;
        self.dtype = precision.compute_dtype(&self.device);
        Ok(self)
    }

    /// Hands out every tensor in `dtype`, on any device, unchecked: what [`Self::with_precision`]
    /// does on a GPU. On the CPU only f32 is fast (the models' fused kernels are f32), but
    /// candle computes in f16 and bf16 there too, which is how the tests check the half-precision
    /// model without a GPU. For inference: training computes in f32.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The type tensors are handed out in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Hands out every tensor as a trainable [`Var`].
    pub fn trainable(mut self) -> Self {
        self.vars = Some(Mutex::new(Vec::new()));
        self
    }

    /// Hands out the tensors whose names start with one of `prefixes` as trainable [`Var`]s,
    /// the others as constants (a frozen part of the model).
    pub fn trainable_under(mut self, prefixes: &[&str]) -> Self {
        self.vars = Some(Mutex::new(Vec::new()));
        self.trainable_prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        self
    }

    /// The variables handed out so far, in the order the model asked for them.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars
            .as_ref()
            .map(|v| v.lock().expect("weights lock").clone())
            .unwrap_or_default()
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
            Source::Random | Source::Init(_) => true,
        }
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.source {
            Source::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Source::Loaded(map) => map.keys().cloned().collect(),
            Source::Random | Source::Init(_) => vec![],
        };
        names.sort();
        names
    }

    /// The tensor `name`, which must have exactly `shape`, in [`Self::dtype`] on this device (a
    /// [`Var`] in trainable mode).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.read(name, shape)?;
        let Some(vars) = &self.vars else {
            return Ok(tensor);
        };
        if !self.trainable_prefixes.is_empty()
            && !self.trainable_prefixes.iter().any(|p| name.starts_with(p))
        {
            return Ok(tensor);
        }
        let mut vars = vars.lock().expect("weights lock");
        if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
            // Read twice (a tied weight): the same variable, so gradients add up.
            return Ok(v.as_tensor().clone());
        }
        let var = Var::from_tensor(&tensor)?;
        vars.push((name.to_string(), var.clone()));
        Ok(var.as_tensor().clone())
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let found: Vec<usize> = match &self.source {
            Source::Safetensors(st) => match st.get(name) {
                Ok(view) => view.shape().to_vec(),
                Err(_) => return Err(self.missing(name, shape)),
            },
            Source::Loaded(map) => match map.get(name) {
                Some(t) => t.dims().to_vec(),
                None => return Err(self.missing(name, shape)),
            },
            Source::Random => {
                let t = (Tensor::randn(0f32, 1.0, shape, &self.device)? * 0.02)?;
                return Ok(t.to_dtype(self.dtype)?);
            }
            Source::Init(rng) => {
                let mut rng = rng.lock().expect("weights rng lock");
                let values = initial_value(name, shape, &mut *rng);
                return Ok(Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?);
            }
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
            Source::Random | Source::Init(_) => unreachable!("answered above"),
        };
        Ok(tensor.to_dtype(self.dtype)?)
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
            Source::Random | Source::Init(_) => {
                bail!("new weights have no shapes of their own")
            }
        };
        Ok(t.to_dtype(DType::F32)?)
    }

    /// The whole checkpoint as a [`Scope`] with no prefix.
    pub fn root(&self) -> Scope<'_> {
        Scope {
            weights: self,
            path: String::new(),
        }
    }

    /// A view of the tensors under `prefix` (`w.pp("text_model")` reads `text_model.*`).
    pub fn pp(&self, prefix: &str) -> Scope<'_> {
        self.root().pp(prefix)
    }

    fn missing(&self, name: &str, shape: &[usize]) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: missing tensor '{name}' (expected shape {shape:?}); is this a checkpoint of the model its config.json describes?",
            self.file.display()
        )
    }
}

/// The tensors of a [`Weights`] under one key prefix: what a sub-module loads from.
#[derive(Clone)]
pub struct Scope<'a> {
    weights: &'a Weights,
    /// The key prefix without its trailing dot; empty at the root.
    path: String,
}

impl<'a> Scope<'a> {
    /// The scope one level down: `pp("fc1")` of `mlp` reads `mlp.fc1.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        Scope {
            weights: self.weights,
            path: self.key(&name.to_string()),
        }
    }

    /// The full checkpoint key of `name` in this scope.
    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The tensor `name` of this scope, which must have exactly `shape` (see [`Weights::get`]).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(&self.key(name), shape)
    }

    /// Whether the checkpoint holds `name` in this scope.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.key(name))
    }

    pub fn device(&self) -> &Device {
        self.weights.device()
    }

    pub fn precision(&self) -> Precision {
        self.weights.precision()
    }
}

/// The starting value of a parameter trained from scratch, chosen by its checkpoint key as
/// CLIP and GPT-2 start: biases 0, LayerNorm gains 1 (every 1-D `*.weight` in these models),
/// CLIP's `logit_scale` ln(1/0.07), everything else normal with standard deviation 0.02.
pub fn initial_value(name: &str, shape: &[usize], rng: &mut impl rand::Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with("bias") {
        return vec![0.0; n];
    }
    if name.ends_with(".weight") && shape.len() == 1 {
        return vec![1.0; n];
    }
    if name == "logit_scale" {
        return vec![(1.0f32 / 0.07).ln(); n];
    }
    // Box-Muller: two uniforms give two independent standard normals.
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt() * 0.02;
        let a = std::f32::consts::TAU * u2;
        out.push(r * a.cos());
        out.push(r * a.sin());
    }
    out.truncate(n);
    out
}
