//! `describe` (the default vocabulary, plus a caption) and `labels` (a label set): zero-shot
//! labels of each image, as a table or JSON Lines.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use skyscribe::caption::Captioner;
use skyscribe::classify::{Classifier, Scorer};
use skyscribe::labels::{LabelSet, Templates};
use skyscribe::zeroshot::{LabelScore, ZeroShotClassifier};

use super::common::{
    CaptionerArgs, CommonArgs, VocabularyArgs, clip_for, for_each_image, gather,
    labels_or_vocabulary, positive,
};
use super::output::{Out, fit, report};

#[derive(Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    vocabulary: VocabularyArgs,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    top_k: usize,
    #[command(flatten)]
    captioner: CaptionerArgs,
    /// A classifier from `train classifier`: its classes instead of the vocabulary.
    #[arg(long, conflicts_with_all = ["labels", "templates"])]
    classifier: Option<PathBuf>,
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
    #[arg(long, required_unless_present = "classifier")]
    labels: Option<String>,
    /// A classifier from `train classifier`, instead of --labels.
    #[arg(long, conflicts_with_all = ["labels", "templates"])]
    classifier: Option<PathBuf>,
    /// A template with `{}` ("a satellite photo of {}.") or a template set (satellite,
    /// eurosat, aerial, plain, remote-sensing); repeat to ensemble (default: the model's own,
    /// from its skyscribe.json, else "a satellite photo of {}.").
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Keep the k best labels (default: all in JSON, 5 in the table).
    #[arg(long, value_parser = positive)]
    top_k: Option<usize>,
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn describe(a: DescribeArgs) -> Result<usize> {
    let captioner = a.captioner.spec(a.common.model.as_deref());
    let run = LabelRun {
        labels: a.vocabulary.labels.as_deref(),
        templates: &a.vocabulary.templates,
        top_k_json: Some(a.top_k),
        top_k_table: a.top_k,
        captioner: captioner.as_deref(),
        force_clip: a.captioner.force_clip,
        classifier: a.classifier.as_deref(),
    };
    label_images(&a.common, &run, &a.inputs)
}

pub fn labels(a: LabelsArgs) -> Result<usize> {
    let run = LabelRun {
        labels: a.labels.as_deref(),
        templates: &a.templates,
        top_k_json: a.top_k,
        top_k_table: 5,
        captioner: None,
        force_clip: false,
        classifier: a.classifier.as_deref(),
    };
    label_images(&a.common, &run, &a.inputs)
}

/// What `describe` and `labels` ask of [`label_images`].
struct LabelRun<'a> {
    /// The label set; `None`: the model's describe vocabulary.
    labels: Option<&'a str>,
    templates: &'a [String],
    top_k_json: Option<usize>,
    top_k_table: usize,
    captioner: Option<&'a str>,
    force_clip: bool,
    /// A learned classifier instead of a label set.
    classifier: Option<&'a Path>,
}

/// Scores every image against the label set; with a captioner, a caption under each.
fn label_images(common: &CommonArgs, run: &LabelRun, inputs: &[PathBuf]) -> Result<usize> {
    // Options are checked before any model is loaded.
    let given_labels = run.labels.map(LabelSet::parse).transpose()?;
    if !run.templates.is_empty() {
        Templates::parse(run.templates)?;
    }
    let learned = run.classifier.map(Classifier::load).transpose()?;
    let (paths, failed) = gather(inputs);
    let dev = common.device.device()?;
    let captioner = run
        .captioner
        .map(|c| Captioner::load_spec(c, &dev))
        .transpose()?;
    let (clip, classifier) = match (learned, run.classifier) {
        (Some(c), Some(file)) => {
            // The classifier's CLIP (or --model, checked), and a captioner that reads it.
            let clip = super::classify::clip_for_classifier(common, &c, file)?;
            if let Some(cap) = &captioner {
                cap.check_clip(&clip, run.force_clip)?;
            }
            (clip, Scorer::Learned(c))
        }
        _ => {
            // With a captioner and no --model, the CLIP model the captioner was trained with.
            let clip = clip_for(common, captioner.as_ref(), run.force_clip, &dev)?;
            let labels = labels_or_vocabulary(given_labels, &clip)?;
            let (templates, origin) = clip.defaults.templates(run.templates, &clip.source.spec)?;
            report(&format!("templates ({origin}): {}", templates.describe()));
            let z = ZeroShotClassifier::new(&clip, labels, templates)?;
            (clip, Scorer::ZeroShot(z))
        }
    };
    let top_k = if common.jsonl {
        run.top_k_json
    } else {
        Some(run.top_k_json.unwrap_or(run.top_k_table))
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
        // A struct, not json!: scores print as f32 (json! widens them to f64 digits).
        #[derive(serde::Serialize)]
        struct Line<'a> {
            input: String,
            labels: &'a [LabelScore],
            #[serde(skip_serializing_if = "Option::is_none")]
            caption: Option<&'a str>,
        }
        out.json(&Line {
            input: path.display().to_string(),
            labels,
            caption,
        })
    } else {
        out.line(&path.display().to_string())?;
        for l in labels {
            out.line(&format!("  {} {:>6.3}", fit(&l.label, 40), l.score))?;
        }
        if let Some(c) = caption {
            out.line(&format!("  caption: {}", c.trim()))?;
        }
        Ok(())
    }
}
