//! `export`: a model or captioner folder copied without its training checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use skyscribe::hub::WeightsDtype;

use super::output::report;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F16,
    F32,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The model or captioner: a folder, a built-in name (skyscribe-mini,
    /// skyscribe-mini-captioner) or a hub id, as --model takes.
    #[arg(long)]
    from: String,
    /// The new folder to write (must not exist).
    #[arg(long)]
    to: PathBuf,
    /// Precision of the written weights.
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    dtype: DtypeArg,
}

pub fn run(a: ExportArgs) -> Result<usize> {
    let dtype = match a.dtype {
        DtypeArg::F16 => WeightsDtype::F16,
        DtypeArg::F32 => WeightsDtype::F32,
    };
    let from = skyscribe::hub::resolve_model_folder(&a.from)?;
    skyscribe::hub::export(&from, &a.to, dtype)?;
    report(&format!("wrote {}", a.to.display()));
    Ok(0)
}
