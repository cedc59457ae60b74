//! `embed`: projected CLIP embeddings of texts and images.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::common::{CommonArgs, for_each_image, gather};
use super::output::Out;

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// A text to embed; repeatable.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Image files or folders (walked recursively).
    inputs: Vec<PathBuf>,
}

pub fn run(a: EmbedArgs) -> Result<usize> {
    let common = &a.common;
    if a.texts.is_empty() && a.inputs.is_empty() {
        bail!("nothing to embed: give image files or folders, or --text");
    }
    let (paths, failed) = gather(&a.inputs);
    let clip = common.load_clip(&common.model())?;
    let mut out = Out::new();
    let emit = |out: &mut Out, input: &str, kind: &str, e: &[f32]| -> Result<()> {
        if common.jsonl {
            // A struct, not json!: f32 values print as f32 (json! widens them to f64 digits).
            #[derive(serde::Serialize)]
            struct Line<'a> {
                input: &'a str,
                kind: &'a str,
                embedding: &'a [f32],
            }
            out.json(&Line {
                input,
                kind,
                embedding: e,
            })
        } else {
            let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:.4}")).collect();
            out.line(&format!(
                "{kind:<5} {input}  [{}, … ({} values)]",
                head.join(", "),
                e.len()
            ))
        }
    };
    if !a.texts.is_empty() {
        for (t, e) in a
            .texts
            .iter()
            .zip(clip.embed_texts(&a.texts, common.batch_size)?)
        {
            emit(&mut out, t, "text", &e)?;
        }
    }
    for_each_image(&clip, &paths, common, failed, |path, e| {
        emit(&mut out, &path.display().to_string(), "image", &e)
    })
}
