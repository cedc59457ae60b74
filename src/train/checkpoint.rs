//! `OUT/checkpoint/`: the weights, the optimiser's moments and the run's [`TrainState`], enough
//! to continue a run exactly. Written as one folder that replaces the previous one atomically
//! (see [`crate::atomic::NewDir::replace`]), so a crash leaves the old checkpoint or the new
//! one, never half of each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};

use super::run::TrainState;
use crate::atomic::NewDir;

/// `OUT/checkpoint`.
pub struct Checkpoint {
    dir: PathBuf,
}

/// What a checkpoint holds, read back.
pub struct Saved {
    pub state: TrainState,
    /// `model.safetensors` of the checkpoint.
    pub weights: PathBuf,
    /// `optimizer.safetensors`, and what it holds: AdamW's moments (`m.*`, `v.*`) and, with
    /// `--ema`, the moving average (`ema.*`).
    pub optimizer_file: PathBuf,
    pub moments: HashMap<String, Tensor>,
}

impl Checkpoint {
    pub fn new(out: &Path) -> Self {
        Self {
            dir: out.join("checkpoint"),
        }
    }

    pub fn exists(&self) -> bool {
        self.readable_dir().is_some()
    }

    /// The folder holding a whole checkpoint: `checkpoint/`, or `checkpoint.old/` after a crash
    /// between the two renames of a save.
    fn readable_dir(&self) -> Option<PathBuf> {
        [self.dir.clone(), NewDir::old(&self.dir)]
            .into_iter()
            .find(|d| d.join("state.json").is_file())
    }

    /// Writes weights, optimiser state (AdamW's moments, and the weights' moving average with
    /// `--ema`) and the run's state into a fresh folder, then swaps it in.
    pub fn save(
        &self,
        weights: &HashMap<String, Tensor>,
        optimizer: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<()> {
        let new = NewDir::replacing(&self.dir)?;
        new.write_safetensors("model.safetensors", weights)?;
        new.write_safetensors("optimizer.safetensors", optimizer)?;
        new.write("state.json", &serde_json::to_vec_pretty(state)?)?;
        new.replace()?;
        Ok(())
    }

    /// The saved state, weights and optimiser moments.
    pub fn load(&self, device: &Device) -> Result<Saved> {
        let Some(dir) = self.readable_dir() else {
            bail!(
                "{}: no checkpoint to resume from (no state.json); start without --resume",
                self.dir.display()
            );
        };
        let state_file = dir.join("state.json");
        let state: TrainState = serde_json::from_slice(
            &std::fs::read(&state_file)
                .with_context(|| format!("{}: cannot read", state_file.display()))?,
        )
        .with_context(|| format!("{}: not a training state", state_file.display()))?;
        let optimizer_file = dir.join("optimizer.safetensors");
        let moments =
            candle_core::safetensors::load(&optimizer_file, device).with_context(|| {
                format!("{}: cannot read optimiser state", optimizer_file.display())
            })?;
        Ok(Saved {
            state,
            weights: dir.join("model.safetensors"),
            optimizer_file,
            moments,
        })
    }
}

/// Refuses to resume a run whose shaping options differ from the checkpoint's, naming each
/// option that differs (`lr: 0.001 → 0.002`).
pub fn check_same_run(
    saved: &serde_json::Value,
    now: &serde_json::Value,
    dir: &Path,
) -> Result<()> {
    if saved == now {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let (a, b) = (
        saved.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} → {}", show(a.get(k)), show(b.get(k))))
        .collect();
    bail!(
        "{}: the checkpoint was made with other options ({}); resume with the same options or \
         start a new --out folder",
        dir.display(),
        diffs.join(", ")
    )
}

/// Refuses to start a new run over a folder that already holds one.
pub fn check_fresh_out(out: &Path) -> Result<()> {
    if Checkpoint::new(out).exists() {
        bail!(
            "{}: holds a training run already; pass --resume to continue it or choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create output folder", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_different_run_is_refused_naming_what_differs() {
        let saved = json!({"lr": 0.001, "epochs": 3, "seed": 1});
        let same = saved.clone();
        assert!(check_same_run(&saved, &same, Path::new("out")).is_ok());
        let now = json!({"lr": 0.002, "epochs": 3, "seed": 1, "augment": true});
        let msg = check_same_run(&saved, &now, Path::new("out"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("lr: 0.001 → 0.002"), "{msg}");
        assert!(msg.contains("augment: (none) → true"), "{msg}");
        assert!(!msg.contains("epochs"), "{msg}");
    }
}
