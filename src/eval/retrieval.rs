//! Image–text retrieval, as the RemoteCLIP and GeoRSCLIP papers measure it on RSICD: every
//! image ranks every caption (a hit at k when any of the image's own captions is in its top
//! k), and every caption ranks every image (a hit when its own image is in the top k); recall
//! at 1, 5 and 10 both ways and their mean.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use crate::cache::{EmbeddingCache, embed_samples};
use crate::data::{CaptionedImages, ImageRef, Sample};
use crate::encoder::{ClipEncoder, normalized};
use crate::imagery::DecodeOptions;
use crate::index::search::dot;

/// Published mean recall on RSICD (real pretrained weights; not measurable offline), for
/// orientation beside a measured number: `(model, mR %, source)`.
pub const PUBLISHED_RSICD: &[(&str, f64, &str)] = &[
    (
        "CLIP ViT-B/32 (zero-shot)",
        15.7,
        "RemoteCLIP paper (Liu et al., 2024)",
    ),
    (
        "RemoteCLIP ViT-B/32",
        35.3,
        "RemoteCLIP paper (Liu et al., 2024)",
    ),
    (
        "GeoRSCLIP-FT ViT-B/32",
        38.9,
        "GeoRSCLIP / RS5M paper (Zhang et al., 2024)",
    ),
];

/// A retrieval run: the ranks, and which caption belongs to which image.
pub struct RetrievalRun {
    pub ranks: Ranks,
    /// `owner[t]`: the image of caption `t` (captions in data order).
    pub owner: Vec<usize>,
    pub captions: Vec<String>,
}

/// Embeds every image (through `cache`) and every caption of `data`, and ranks both ways. An
/// unreadable image is an error: a benchmark over part of its images is another benchmark.
pub fn evaluate(
    clip: &ClipEncoder,
    data: &CaptionedImages,
    cache: Option<&EmbeddingCache>,
    batch_size: usize,
    decode: &DecodeOptions,
    quiet: bool,
) -> Result<RetrievalRun> {
    let samples: Vec<Sample> = data
        .items
        .iter()
        .map(|i| Sample {
            image: ImageRef::file(i.path.clone()),
            labels: vec![],
        })
        .collect();
    let bar = crate::progress::items(samples.len(), "images", "CLIP embeddings", quiet);
    let (embeddings, stats) = embed_samples(clip, &samples, cache, batch_size, decode, &bar)?;
    bar.finish_and_clear();
    if let Some((image, why)) = stats.failed.first() {
        bail!("{image}: {why} (retrieval is measured over every image of the data set)");
    }
    let images: Vec<Vec<f32>> = embeddings
        .into_iter()
        .map(|e| normalized(&e.expect("every image was embedded")))
        .collect();
    let mut owner = Vec::new();
    let mut captions = Vec::new();
    for (i, item) in data.items.iter().enumerate() {
        for c in &item.captions {
            owner.push(i);
            captions.push(c.clone());
        }
    }
    // Each distinct sentence is embedded once: repeated captions (RSICD has many) then have
    // bit-identical embeddings and tie exactly, as they do in the reference, instead of
    // differing in their last bits with the batch they were padded in.
    let mut distinct: Vec<String> = captions.clone();
    distinct.sort();
    distinct.dedup();
    let embedded: Vec<Vec<f32>> = clip
        .embed_texts(&distinct, batch_size)?
        .iter()
        .map(|e| normalized(e))
        .collect();
    let texts: Vec<Vec<f32>> = captions
        .iter()
        .map(|c| {
            let i = distinct
                .binary_search(c)
                .expect("every caption is among the distinct");
            embedded[i].clone()
        })
        .collect();
    Ok(RetrievalRun {
        ranks: ranks(&images, &texts, &owner),
        owner,
        captions,
    })
}

/// `report.md` and `summary.json` for a run, into the folder `dir` (replaced whole).
pub fn write_report(
    dir: &Path,
    data: &CaptionedImages,
    model: &str,
    run: &RetrievalRun,
) -> Result<()> {
    let s = run.ranks.summary();
    let pct = |v: f64| format!("{:.1}", v * 100.0);
    let mut md = format!(
        "# Image–text retrieval: {model} on {}\n\n{} images, {} captions. An image → text hit \
         at k: one of the image's own captions among the k captions most like it; a text → \
         image hit: the caption's own image among the k images most like it.\n\n",
        data.name,
        data.items.len(),
        run.captions.len()
    );
    md.push_str("| direction | R@1 | R@5 | R@10 |\n|---|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| image → text | {} | {} | {} |",
        pct(s.i2t_r1),
        pct(s.i2t_r5),
        pct(s.i2t_r10)
    );
    let _ = writeln!(
        md,
        "| text → image | {} | {} | {} |",
        pct(s.t2i_r1),
        pct(s.t2i_r5),
        pct(s.t2i_r10)
    );
    let _ = writeln!(
        md,
        "\n**Mean recall (mR): {}** (percent). Chance: R@k ≈ k / {} images.\n",
        pct(s.mean_recall),
        data.items.len()
    );
    md.push_str(
        "For orientation, published mR on RSICD with real pretrained weights (not measurable \
         offline; the papers count five captions per image, repeats included, where a data set without \
         repeats counts each distinct sentence once):\n\n| model | mR | source |\n|---|---:|---|\n",
    );
    for (m, v, src) in PUBLISHED_RSICD {
        let _ = writeln!(md, "| {m} | {v:.1} | {src} |");
    }
    let out = crate::atomic::NewDir::replacing(dir)?;
    out.write("report.md", md.as_bytes())?;
    out.write("summary.json", &serde_json::to_vec_pretty(&s)?)?;
    out.replace()?;
    Ok(())
}

/// Recall at 1, 5, 10 each way (fractions) and their mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetrievalSummary {
    pub i2t_r1: f64,
    pub i2t_r5: f64,
    pub i2t_r10: f64,
    pub t2i_r1: f64,
    pub t2i_r5: f64,
    pub t2i_r10: f64,
    pub mean_recall: f64,
}

/// Ranks, 1-based: for each image, the rank of its best own caption among all captions; for
/// each caption, the rank of its own image among all images. Candidates with equal scores rank
/// in data order, the lower index first (as a stable sort orders them): a duplicate of a
/// query's own caption that comes earlier in the data ranks ahead of it, as it does in the code
/// published numbers come from (CLIP_benchmark's `recall_at_k` over `torch.topk`; checked
/// against it by `scripts/reference/make_retrieval_reference.py`). RSICD has many identical captions,
/// so counting ties for the query (as this did before) inflated image → text recall.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranks {
    pub image_to_text: Vec<usize>,
    pub text_to_image: Vec<usize>,
}

/// The 1-based place of candidate `own` in `scores` sorted best first, equal scores in index
/// order.
fn place(scores: impl Iterator<Item = f32>, own: usize, own_score: f32) -> usize {
    1 + scores
        .enumerate()
        .filter(|&(j, s)| s > own_score || (s == own_score && j < own))
        .count()
}

/// `images` and `texts`: unit vectors; `owner[t]`: the image caption `t` describes.
pub fn ranks(images: &[Vec<f32>], texts: &[Vec<f32>], owner: &[usize]) -> Ranks {
    assert_eq!(texts.len(), owner.len());
    // One similarity row per image: images × texts.
    let sims: Vec<Vec<f32>> = images
        .par_iter()
        .map(|i| texts.iter().map(|t| dot(i, t)).collect())
        .collect();
    let image_to_text = sims
        .par_iter()
        .enumerate()
        .map(|(i, row)| {
            // The best own caption: the highest score, the first of equals.
            let best = row
                .iter()
                .zip(owner)
                .enumerate()
                .filter(|&(_, (_, &o))| o == i)
                .map(|(t, (&s, _))| (t, s))
                .fold(None, |best: Option<(usize, f32)>, (t, s)| match best {
                    Some((_, b)) if b >= s => best,
                    _ => Some((t, s)),
                });
            match best {
                Some((t, s)) => place(row.iter().copied(), t, s),
                // An image without captions is never found.
                None => row.len() + 1,
            }
        })
        .collect();
    let text_to_image = (0..texts.len())
        .into_par_iter()
        .map(|t| {
            let own = owner[t];
            place(sims.iter().map(|row| row[t]), own, sims[own][t])
        })
        .collect();
    Ranks {
        image_to_text,
        text_to_image,
    }
}

impl Ranks {
    pub fn summary(&self) -> RetrievalSummary {
        let at = |ranks: &[usize], k: usize| {
            ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len().max(1) as f64
        };
        let (i, t) = (&self.image_to_text, &self.text_to_image);
        let r = [at(i, 1), at(i, 5), at(i, 10), at(t, 1), at(t, 5), at(t, 10)];
        RetrievalSummary {
            i2t_r1: r[0],
            i2t_r5: r[1],
            i2t_r10: r[2],
            t2i_r1: r[3],
            t2i_r5: r[4],
            t2i_r10: r[5],
            mean_recall: r.iter().sum::<f64>() / 6.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(a: f32) -> Vec<f32> {
        vec![a.cos(), a.sin()]
    }

    /// Three images at angles 0, 1, 2 and four captions, worked out by hand:
    /// - image 0 owns captions 0 (angle 0.1) and 1 (angle 1.9);
    /// - image 1 owns caption 2 (angle 2.1); image 2 owns caption 3 (angle 0.95).
    #[test]
    fn ranks_and_recall_by_hand() {
        let images = vec![unit(0.0), unit(1.0), unit(2.0)];
        let texts = vec![unit(0.1), unit(1.9), unit(2.1), unit(0.95)];
        let owner = vec![0, 0, 1, 2];
        let r = ranks(&images, &texts, &owner);
        // Image 0: caption 0 is nearest (0.1 away) → rank 1.
        // Image 1 (angle 1): distances 0.9, 0.9, 1.1, 0.05 → its caption 2 is 4th.
        // Image 2 (angle 2): distances 1.9, 0.1, 0.1, 1.05 → caption 3 is 3rd.
        assert_eq!(r.image_to_text, vec![1, 4, 3]);
        // Caption 0 (0.1): image 0 nearest → 1. Caption 1 (1.9): image 2 (0.1) beats image 0
        // (1.9) and image 1 (0.9) too → 3. Caption 2 (2.1): image 2 (0.1), image 1 (1.1) → 2.
        // Caption 3 (0.95): image 1 (0.05), image 0 (0.95), image 2 (1.05) → 3.
        assert_eq!(r.text_to_image, vec![1, 3, 2, 3]);
        let s = r.summary();
        assert!((s.i2t_r1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.i2t_r5 - 1.0).abs() < 1e-12);
        assert!((s.t2i_r1 - 0.25).abs() < 1e-12);
        assert!((s.t2i_r5 - 1.0).abs() < 1e-12);
        let mean = (1.0 / 3.0 + 1.0 + 1.0 + 0.25 + 1.0 + 1.0) / 6.0;
        assert!((s.mean_recall - mean).abs() < 1e-12);
    }

    #[test]
    fn equal_scores_rank_in_data_order() {
        // Captions 0 and 2 are the same text; image 1 owns caption 2, image 0 caption 0 and 1.
        let images = vec![unit(0.0), unit(0.5)];
        let texts = vec![unit(0.5), unit(3.0), unit(0.5)];
        let owner = vec![0, 0, 1];
        let r = ranks(&images, &texts, &owner);
        // Image 1: captions 0 and 2 tie at cosine 1; caption 0 comes first, so its own is 2nd.
        // Image 0: its best own caption is 0 (cosine 0.88), tied with caption 2, first: 1st.
        assert_eq!(r.image_to_text, vec![1, 2]);
        // Caption 0 (angle 0.5) is nearest image 1, then its own image 0: 2nd. Caption 2 ties
        // nowhere: image 1 is nearest. Two identical images would rank the first first.
        assert_eq!(r.text_to_image, vec![2, 2, 1]);
        let twins = ranks(&[unit(0.2), unit(0.2)], &[unit(0.2), unit(0.2)], &[0, 1]);
        assert_eq!(twins.text_to_image, vec![1, 2]);
        assert_eq!(twins.image_to_text, vec![1, 2]);
    }
}
