//! Where model files come from: a local directory in the Hugging Face layout, a built-in model
//! by name, or a hub id resolved through `hf-hub` and its cache (honouring `HF_HOME`,
//! `HF_ENDPOINT` and `HF_HUB_OFFLINE`); and [`export`], a model folder copied without its
//! training checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

/// The real CLIP most users want (`--model openai/clip-vit-base-patch32`); without `--model`
/// the built-in mini model ([`crate::builtin::MINI_CLIP`]) is used.
pub const DEFAULT_CLIP: &str = "openai/clip-vit-base-patch32";

/// `skyscribe.json`: a model's own usage defaults (see `encoder::ModelDefaults`), beside
/// `config.json`.
pub const DEFAULTS_FILE: &str = "skyscribe.json";

/// The files of one model, all present on disk.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// What the user asked for (a path or a hub id), for messages and cache keys.
    pub spec: String,
    /// The directory holding `config.json` and the rest.
    pub dir: PathBuf,
}

impl ModelDir {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Resolves `spec` (a directory, or a hub id such as `openai/clip-vit-base-patch32`) to local
/// files, downloading what is missing unless offline. `required` files must exist;
/// `weights` lists alternatives of which one must exist.
pub fn resolve(spec: &str, required: &[&str], weights: &[&str]) -> Result<ModelDir> {
    if let Some(dir) = crate::builtin::model_dir(spec) {
        return Ok(ModelDir {
            spec: spec.to_string(),
            dir: dir?,
        });
    }
    let path = Path::new(spec);
    if path.is_dir() {
        for f in required {
            if !path.join(f).is_file() {
                bail!("{}: model directory has no {f}", path.display());
            }
        }
        if !weights.is_empty() && !weights.iter().any(|w| path.join(w).is_file()) {
            bail!(
                "{}: model directory has none of {}",
                path.display(),
                weights.join(", ")
            );
        }
        return Ok(ModelDir {
            spec: spec.to_string(),
            dir: path.to_path_buf(),
        });
    }
    if path.exists() {
        bail!("{spec}: not a model directory");
    }
    if spec.starts_with('.')
        || spec.starts_with('/')
        || spec.contains('\\')
        || spec.split('/').count() > 2
    {
        bail!("{spec}: no such model directory");
    }
    resolve_hub(spec, required, weights)
}

fn hint(spec: &str) -> String {
    format!(
        "'{spec}' is not a folder here nor a built-in model ({}, {}), so it was taken for a \
         Hugging Face hub id, and skyscribe could not get it from the hub or its cache. With no \
         network, download it elsewhere (e.g. `huggingface-cli download {spec}`) and pass that \
         folder with --model: a directory with config.json, model.safetensors, tokenizer.json \
         and preprocessor_config.json",
        crate::builtin::MINI_CLIP,
        crate::builtin::MINI_CAPTIONER
    )
}

fn resolve_hub(spec: &str, required: &[&str], weights: &[&str]) -> Result<ModelDir> {
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(spec.to_string());
    let from_cache = |name: &str| cached.get(name);
    let mut dir: Option<PathBuf> = None;
    let fetch = |name: &str| -> Result<PathBuf> {
        if let Some(p) = from_cache(name) {
            return Ok(p);
        }
        if offline() {
            bail!("{name} is not in the local cache and HF_HUB_OFFLINE is set");
        }
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| anyhow!("cannot start the hub client: {e}"))?;
        api.model(spec.to_string())
            .get(name)
            .map_err(|e| anyhow!("cannot download {name}: {e}"))
    };
    for name in required {
        let p = fetch(name).map_err(|e| anyhow!("{e}\n{}", hint(spec)))?;
        dir.get_or_insert_with(|| p.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    if !weights.is_empty() {
        let mut last_err = None;
        let mut found = false;
        for w in weights {
            match fetch(w) {
                Ok(_) => {
                    found = true;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if !found {
            let e = last_err.unwrap_or_else(|| anyhow!("no weights"));
            bail!("{e}\n{}", hint(spec));
        }
    }
    let dir = dir.ok_or_else(|| anyhow!("{spec}: nothing to resolve"))?;
    Ok(ModelDir {
        spec: spec.to_string(),
        dir,
    })
}

/// A CLIP model: config, tokenizer, preprocessor and one weights file.
pub fn resolve_clip(spec: &str) -> Result<ModelDir> {
    let dir = resolve(
        spec,
        &["config.json", "preprocessor_config.json"],
        &["model.safetensors", "pytorch_model.bin"],
    )?;
    // tokenizer.json, else the slow tokenizer's files (older repositories; see
    // `builtin::clip_tokenizer_json`, which checks they are CLIP's).
    if resolve(spec, &["tokenizer.json"], &[]).is_err() {
        resolve(spec, &["vocab.json", "merges.txt"], &[]).map_err(|_| {
            anyhow!(
                "{}: model directory has no tokenizer.json (nor vocab.json + merges.txt)",
                dir.dir.display()
            )
        })?;
    }
    Ok(dir)
}

/// The folder of any model spec: a local folder as it is (a CLIP or a captioner), a built-in
/// model written out, or a hub CLIP downloaded with its tokenizer and preprocessor.
pub fn resolve_model_folder(spec: &str) -> Result<PathBuf> {
    if let Some(dir) = crate::builtin::model_dir(spec) {
        return dir;
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    Ok(resolve_clip(spec)?.dir)
}

/// The precision `export` writes weights in (models compute in f32 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsDtype {
    F16,
    F32,
}

/// Copies the model or captioner folder `from` to the new folder `to` without its training
/// checkpoint, weights converted to `dtype`; `to` appears whole or not at all.
pub fn export(from: &Path, to: &Path, dtype: WeightsDtype) -> Result<()> {
    use anyhow::Context;
    let weights = from.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu)
        .with_context(|| format!("{}: cannot read", weights.display()))?;
    let dtype = match dtype {
        WeightsDtype::F16 => candle_core::DType::F16,
        WeightsDtype::F32 => candle_core::DType::F32,
    };
    let converted = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let folder = crate::atomic::NewDir::create(to)?;
    folder.write_safetensors("model.safetensors", &converted)?;
    for f in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        DEFAULTS_FILE,
    ] {
        if from.join(f).is_file() {
            folder.copy(&from.join(f), f)?;
        }
    }
    folder.commit()?;
    Ok(())
}
