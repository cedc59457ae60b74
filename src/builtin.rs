//! The mini models built into the binary, so that `skyscribe describe` works on a machine
//! without network or downloaded models: `skyscribe-mini` (a CLIP) and
//! `skyscribe-mini-captioner` (a ClipCap captioner on it), trained from scratch on RSICD's
//! training split by the commands in docs/src/mini-models.md (see `assets/models/README.md`).
//!
//! They are written out once to `builtin/<name>-<hash>/` under [`crate::cache_root`] (atomically: a
//! temporary folder renamed into place) and then load like any model folder.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The built-in CLIP.
pub const MINI_CLIP: &str = "skyscribe-mini";
/// The built-in captioner (reads [`MINI_CLIP`]'s embeddings).
pub const MINI_CAPTIONER: &str = "skyscribe-mini-captioner";

type Files = &'static [(&'static str, &'static [u8])];

const CLIP_FILES: Files = &[
    (
        "config.json",
        include_bytes!("../assets/models/mini-clip/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../assets/models/mini-clip/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../assets/models/mini-clip/tokenizer.json"),
    ),
    (
        "preprocessor_config.json",
        include_bytes!("../assets/models/mini-clip/preprocessor_config.json"),
    ),
    (
        "skyscribe.json",
        include_bytes!("../assets/models/mini-clip/skyscribe.json"),
    ),
];

const CAPTIONER_FILES: Files = &[
    (
        "config.json",
        include_bytes!("../assets/models/mini-captioner/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../assets/models/mini-captioner/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../assets/models/mini-captioner/tokenizer.json"),
    ),
];

/// CLIP's BPE as a `tokenizer.json` (openai/clip-vit-base-patch32's; OpenCLIP's tokenizer uses
/// the same vocabulary and merges).
pub static CLIP_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/tokenizers/clip/tokenizer.json");

/// CLIP's own `tokenizer.json` (openai/clip-vit-base-patch32's), for models built without a
/// folder (random-weight benchmarks).
pub fn clip_tokenizer() -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_bytes(CLIP_TOKENIZER_JSON)
        .map_err(|e| anyhow::anyhow!("the built-in CLIP tokenizer: {e}"))
}

/// The `tokenizer.json` of the CLIP model folder `dir`: its own, or — for repositories saved
/// with transformers' slow tokenizer only (`vocab.json` + `merges.txt`, as some older
/// fine-tunes are) — the built-in one, when those two files are exactly CLIP's vocabulary and
/// merges. Anything else is refused rather than tokenized wrongly.
pub fn clip_tokenizer_json(dir: &std::path::Path) -> Result<Vec<u8>> {
    let own = dir.join("tokenizer.json");
    if own.is_file() {
        return std::fs::read(&own).with_context(|| format!("{}: cannot read", own.display()));
    }
    let (vocab_path, merges_path) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !vocab_path.is_file() || !merges_path.is_file() {
        anyhow::bail!(
            "{}: no tokenizer.json (nor vocab.json + merges.txt) in this model directory",
            dir.display()
        );
    }
    let vocab: std::collections::HashMap<String, u32> = serde_json::from_slice(
        &std::fs::read(&vocab_path)
            .with_context(|| format!("{}: cannot read", vocab_path.display()))?,
    )
    .with_context(|| format!("{}: not a vocabulary", vocab_path.display()))?;
    let merges_text = std::fs::read_to_string(&merges_path)
        .with_context(|| format!("{}: cannot read", merges_path.display()))?;
    let merges: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let builtin: serde_json::Value =
        serde_json::from_slice(CLIP_TOKENIZER_JSON).context("the built-in CLIP tokenizer")?;
    let model = &builtin["model"];
    let same_vocab =
        serde_json::from_value::<std::collections::HashMap<String, u32>>(model["vocab"].clone())
            .is_ok_and(|v| v == vocab);
    let builtin_merges: Vec<String> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|pair| match pair {
                    serde_json::Value::String(s) => s.clone(),
                    other => other
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    if !same_vocab
        || builtin_merges.len() != merges.len()
        || builtin_merges.iter().zip(&merges).any(|(a, b)| a != b)
    {
        anyhow::bail!(
            "{}: no tokenizer.json, and its vocab.json / merges.txt are not CLIP's; save a fast \
             tokenizer into it (transformers: CLIPTokenizerFast.from_pretrained(DIR).save_pretrained(DIR))",
            dir.display()
        );
    }
    Ok(CLIP_TOKENIZER_JSON.to_vec())
}

/// The folder of built-in model `name`, written out on first use; `None` for other names.
pub fn model_dir(name: &str) -> Option<Result<PathBuf>> {
    let files = match name {
        MINI_CLIP => CLIP_FILES,
        MINI_CAPTIONER => CAPTIONER_FILES,
        _ => return None,
    };
    Some(write_out(name, files))
}

fn write_out(name: &str, files: Files) -> Result<PathBuf> {
    let mut h = blake3::Hasher::new();
    for (file, bytes) in files {
        h.update(file.as_bytes());
        h.update(bytes);
    }
    let hash = h.finalize().to_hex();
    let root = crate::cache_root().join("builtin");
    let dir = root.join(format!("{name}-{}", &hash[..12]));
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let folder = crate::atomic::NewDir::replacing(&dir)
        .with_context(|| format!("{}: cannot write the built-in model", dir.display()))?;
    for (file, bytes) in files {
        folder.write(file, bytes)?;
    }
    if let Err(e) = folder.commit() {
        // Another process may have written it first.
        if !dir.join("config.json").is_file() {
            return Err(e);
        }
    }
    Ok(dir)
}
