//! What f16 and bf16 change when the whole model computes in them, as `--precision f16|bf16`
//! does on a CUDA GPU, measured on the CPU through candle's half-precision operations (the same
//! model code; on a GPU the kernels differ: cuBLAS, LayerNorm and softmax sum in f32 there,
//! candle's CPU softmax sums in the type itself). An estimate of the GPU's drift, not a GPU
//! measurement.
//!
//! ```sh
//! cargo run --release --example half_precision_drift -- ../shared/data/eurosat/images \
//!   ../shared/data/eurosat/splits/test.txt 1000 [MODEL]
//! ```
//!
//! Embeds the first N images of the split (spread over its classes in file order: every
//! `len / N`-th line) in f32, f16 and bf16 and prints, for each half type, the least and median
//! cosine of image embeddings to f32's and how many images keep f32's top-1 label among the
//! EuroSAT classes (the model's own templates).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use skyscribe::encoder::ClipEncoder;
use skyscribe::imagery::DecodeOptions;
use skyscribe::labels::LabelSet;
use skyscribe::models::{ClipConfig, ClipModel, Weights};
use skyscribe::zeroshot::{ZeroShotClassifier, cosine};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [images, split, n, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: half_precision_drift IMAGES SPLIT N [MODEL]");
    };
    let n: usize = n.parse().context("N: a count")?;
    let model = rest
        .first()
        .cloned()
        .unwrap_or_else(|| skyscribe::builtin::MINI_CLIP.to_string());
    let lines: Vec<String> = std::fs::read_to_string(split)
        .with_context(|| format!("{split}: cannot read"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let step = (lines.len() / n.max(1)).max(1);
    let paths: Vec<PathBuf> = lines
        .iter()
        .step_by(step)
        .take(n)
        .map(|l| PathBuf::from(images).join(l))
        .collect();
    let decode = DecodeOptions::default();
    let mut clip = ClipEncoder::load(&model, &Device::Cpu)?;
    let (templates, _) = clip.defaults.templates(&[], &model)?;
    let labels = LabelSet::parse("eurosat")?;
    let pixels: Vec<Vec<f32>> = paths
        .iter()
        .map(|p| clip.load_pixels(p, &decode))
        .collect::<Result<_>>()?;
    let run = |clip: &ClipEncoder| -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let classifier = ZeroShotClassifier::new(clip, labels.clone(), templates.clone())?;
        let mut embeddings = vec![];
        for chunk in pixels.chunks(64) {
            embeddings.extend(clip.embed_pixels(chunk)?);
        }
        let top1 = embeddings
            .iter()
            .map(|e| {
                let p = classifier.probabilities(e);
                (0..p.len())
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .unwrap_or(0)
            })
            .collect();
        Ok((embeddings, top1))
    };
    let (reference, reference_top1) = run(&clip)?;
    println!("{model}: {} images of {split}", paths.len());
    for dtype in [DType::F16, DType::BF16] {
        let dir = clip.source.dir.clone();
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::from_model_dir(&dir, &Device::Cpu)?.with_dtype(dtype);
        clip.model = ClipModel::new(config, &weights)?;
        let (ours, top1) = run(&clip)?;
        let mut cosines: Vec<f32> = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .collect();
        cosines.sort_by(f32::total_cmp);
        let same = top1
            .iter()
            .zip(&reference_top1)
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "{dtype:?}: cosine to f32 least {:.6}, median {:.6}; same top-1 label {same}/{}",
            cosines[0],
            cosines[cosines.len() / 2],
            ours.len()
        );
    }
    Ok(())
}
