//! `import-openclip`: an OpenCLIP checkpoint (RemoteCLIP, GeoRSCLIP, open_clip fine-tunes) into
//! a Hugging Face CLIP folder that every command loads with `--model DIR`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use skyscribe::openclip::{self, OpenClipConfig};

use super::output::Out;

#[derive(Args)]
pub struct ImportArgs {
    /// The checkpoint: a torch.save'd state dict or open_clip training checkpoint (.pt, .pth,
    /// .bin) or .safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// OpenCLIP's architecture name: ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14
    /// (NAME-quickgelu for QuickGELU).
    #[arg(
        long,
        required_unless_present = "arch_config",
        conflicts_with = "arch_config"
    )]
    arch: Option<String>,
    /// A model config in OpenCLIP's JSON format, for architectures not built in.
    #[arg(long)]
    arch_config: Option<PathBuf>,
    /// The model folder to write (must not exist; written atomically).
    #[arg(long)]
    out: PathBuf,
    /// What was written, as one JSON line.
    #[arg(long)]
    jsonl: bool,
}

pub fn import(a: ImportArgs) -> Result<usize> {
    let (config, arch) = match (&a.arch, &a.arch_config) {
        (Some(name), _) => (OpenClipConfig::builtin(name)?, name.clone()),
        (None, Some(file)) => (OpenClipConfig::from_file(file)?, file.display().to_string()),
        (None, None) => unreachable!("clap requires one"),
    };
    let bar = skyscribe::progress::spinner(&format!("importing {}", a.weights.display()), a.jsonl);
    let done = openclip::import(&a.weights, &config, &arch, &a.out);
    bar.finish_and_clear();
    let done = done?;
    let mut out = Out::new();
    if a.jsonl {
        out.json(&done)?;
    } else {
        out.line(&format!(
            "wrote {} ({arch}, {} from a {}: {} tensors, {:.1} M parameters, {}; activation {})",
            done.out.display(),
            a.weights.display(),
            done.form,
            done.tensors,
            done.parameters as f64 / 1e6,
            done.dtype,
            serde_json::to_value(done.hidden_act)?
                .as_str()
                .unwrap_or("?"),
        ))?;
        out.line(&format!(
            "use it with --model {} (e.g. skyscribe labels --model {} IMAGE)",
            done.out.display(),
            done.out.display()
        ))?;
    }
    Ok(0)
}
