//! `describe` (the default vocabulary, plus a caption) and `labels` (a label set): zero-shot
//! labels of each image, as a table or JSON Lines.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::json;

use skyscribe::caption::Captioner;
use skyscribe::encoder::ClipEncoder;
use skyscribe::labels::{LabelSet, Templates};
use skyscribe::zeroshot::{LabelScore, ZeroShotClassifier};

use super::common::{CommonArgs, for_each_image, gather};
use super::output::Out;

#[derive(Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// A captioner directory: also write a caption under the labels (default: the built-in
    /// skyscribe-mini-captioner when --model is not given).
    #[arg(long)]
    captioner: Option<String>,
    /// Labels only, no caption.
    #[arg(long, conflicts_with = "captioner")]
    no_caption: bool,
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct LabelsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// A preset (eurosat, eurosat-folders, eurosat-reduced, xview, rsicd, describe), a file
    /// (one label a line, or `label: wording | synonym`), or `a,b,c`.
    #[arg(long)]
    labels: String,
    /// A template with `{}` ("a satellite photo of {}.") or a template set (satellite,
    /// eurosat, aerial, plain, remote-sensing); repeat to ensemble.
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Keep the k best labels (default: all in JSON, 5 in the table).
    #[arg(long)]
    top_k: Option<usize>,
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn describe(a: DescribeArgs) -> Result<usize> {
    // The built-in captioner reads the built-in CLIP: it is the default only with it.
    let captioner = match (&a.captioner, &a.common.model, a.no_caption) {
        (_, _, true) => None,
        (Some(c), _, _) => Some(c.clone()),
        (None, None, false) => Some(skyscribe::builtin::MINI_CAPTIONER.to_string()),
        (None, Some(_), false) => None,
    };
    label_images(
        &a.common,
        LabelSet::parse("describe")?,
        Templates::parse(&[])?,
        Some(a.top_k),
        a.top_k,
        &a.inputs,
        captioner.as_deref(),
    )
}

pub fn labels(a: LabelsArgs) -> Result<usize> {
    let labels = LabelSet::parse(&a.labels)?;
    let templates = Templates::parse(&a.templates)?;
    label_images(&a.common, labels, templates, a.top_k, 5, &a.inputs, None)
}

/// Scores every image against `labels`; with a captioner, a caption under each.
fn label_images(
    common: &CommonArgs,
    labels: LabelSet,
    templates: Templates,
    top_k_json: Option<usize>,
    top_k_table: usize,
    inputs: &[PathBuf],
    captioner: Option<&str>,
) -> Result<usize> {
    let (paths, failed) = gather(inputs);
    let dev = common.device.device()?;
    let captioner = captioner
        .map(|c| Captioner::load_spec(c, &dev))
        .transpose()?;
    // With a captioner and no --model, use the CLIP model the captioner was trained with.
    let clip_spec = match &captioner {
        Some(c) if common.model.is_none() => c.clip_model_spec(),
        _ => common.model(),
    };
    let clip = ClipEncoder::load(&clip_spec, &dev)?;
    let classifier = ZeroShotClassifier::new(&clip, labels, templates)?;
    let top_k = if common.jsonl {
        top_k_json
    } else {
        Some(top_k_json.unwrap_or(top_k_table))
    };
    let mut out = Out::new();
    for_each_image(&clip, &paths, common, failed, |path, embedding| {
        let caption = match &captioner {
            Some(c) => {
                let ids = c.greedy(std::slice::from_ref(&embedding), &Default::default())?;
                Some(c.decode_text(&ids[0])?)
            }
            None => None,
        };
        print_labels(
            &mut out,
            common.jsonl,
            path,
            &classifier.ranked(&embedding, top_k),
            caption.as_deref(),
        )
    })
}

fn print_labels(
    out: &mut Out,
    jsonl: bool,
    path: &Path,
    labels: &[LabelScore],
    caption: Option<&str>,
) -> Result<()> {
    if jsonl {
        let mut v = json!({"input": path.display().to_string(), "labels": labels});
        if let Some(c) = caption {
            v["caption"] = c.into();
        }
        out.line(&v.to_string())
    } else {
        out.line(&path.display().to_string())?;
        for l in labels {
            out.line(&format!("  {:<40} {:>6.3}", l.label, l.score))?;
        }
        if let Some(c) = caption {
            out.line(&format!("  caption: {}", c.trim()))?;
        }
        Ok(())
    }
}
