//! Caption metrics as the COCO caption evaluation code (pycocoevalcap) computes them, on
//! pre-tokenised captions (tokens separated by spaces): BLEU-1..4 (closest reference length),
//! ROUGE-L (β = 1.2) and CIDEr-D (σ = 6, clipped, ×10). Corpus and per-image scores.
//!
//! References are counted as given: a sentence repeated among an image's references counts
//! twice, exactly as the reference scorers count it.

use std::collections::HashMap;

use serde::Serialize;

type Ngram<'a> = Vec<&'a str>;

fn ngram_counts<'a>(words: &[&'a str], n: usize) -> HashMap<Ngram<'a>, usize> {
    let mut counts = HashMap::new();
    for k in 1..=n {
        for w in words.windows(k) {
            *counts.entry(w.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// One image's hypothesis and references.
pub struct CaptionPair<'a> {
    pub hypothesis: &'a str,
    pub references: Vec<&'a str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptionScores {
    pub bleu: [f64; 4],
    /// Exact + stem modules only (see [`super::meteor`]): close to, not equal to, the jar's.
    pub meteor: f64,
    pub rouge_l: f64,
    pub cider_d: f64,
}

/// Per-image and corpus BLEU-1..4: `(corpus, per_image)`.
pub fn bleu(pairs: &[CaptionPair]) -> ([f64; 4], Vec<[f64; 4]>) {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let n = 4;
    let (mut test_total, mut ref_total) = (0f64, 0f64);
    let mut guess_total = [0f64; 4];
    let mut correct_total = [0f64; 4];
    let mut per_image = Vec::with_capacity(pairs.len());
    for p in pairs {
        let words: Vec<&str> = p.hypothesis.split_whitespace().collect();
        let counts = ngram_counts(&words, n);
        let mut max_ref: HashMap<Ngram, usize> = HashMap::new();
        let mut ref_lens = Vec::new();
        for r in &p.references {
            let rw: Vec<&str> = r.split_whitespace().collect();
            ref_lens.push(rw.len());
            for (g, c) in ngram_counts(&rw, n) {
                let e = max_ref.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let testlen = words.len();
        // "closest": the reference length nearest the hypothesis', the shorter on a tie.
        let reflen = ref_lens
            .iter()
            .map(|&l| ((l as i64 - testlen as i64).abs(), l))
            .min()
            .map_or(0, |x| x.1);
        let guess: [f64; 4] = std::array::from_fn(|k| (testlen as i64 - k as i64).max(0) as f64);
        let mut correct = [0f64; 4];
        for (g, c) in &counts {
            correct[g.len() - 1] += (*c).min(*max_ref.get(g).unwrap_or(&0)) as f64;
        }
        test_total += testlen as f64;
        ref_total += reflen as f64;
        let mut scores = [0f64; 4];
        let mut b = 1.0;
        for k in 0..n {
            guess_total[k] += guess[k];
            correct_total[k] += correct[k];
            b *= (correct[k] + TINY) / (guess[k] + SMALL);
            scores[k] = b.powf(1.0 / (k + 1) as f64);
        }
        let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
        if ratio < 1.0 {
            for s in &mut scores {
                *s *= (1.0 - 1.0 / ratio).exp();
            }
        }
        per_image.push(scores);
    }
    let mut corpus = [0f64; 4];
    let mut b = 1.0;
    for k in 0..n {
        b *= (correct_total[k] + TINY) / (guess_total[k] + SMALL);
        corpus[k] = b.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_total + TINY) / (ref_total + SMALL);
    if ratio < 1.0 {
        for s in &mut corpus {
            *s *= (1.0 - 1.0 / ratio).exp();
        }
    }
    (corpus, per_image)
}

fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    for x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ROUGE-L per image (the corpus score is their mean). Tokens are split on single spaces,
/// as the reference does.
pub fn rouge_l(pairs: &[CaptionPair]) -> (f64, Vec<f64>) {
    const BETA: f64 = 1.2;
    let scores: Vec<f64> = pairs
        .iter()
        .map(|p| {
            let c: Vec<&str> = p.hypothesis.split(' ').collect();
            let (mut pmax, mut rmax) = (0f64, 0f64);
            for r in &p.references {
                let t: Vec<&str> = r.split(' ').collect();
                let l = lcs(&t, &c) as f64;
                pmax = pmax.max(l / c.len() as f64);
                rmax = rmax.max(l / t.len() as f64);
            }
            if pmax != 0.0 && rmax != 0.0 {
                (1.0 + BETA * BETA) * pmax * rmax / (rmax + BETA * BETA * pmax)
            } else {
                0.0
            }
        })
        .collect();
    (mean(&scores), scores)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// CIDEr's n-gram vectors: term frequency × (log #images − log document frequency), per n,
/// with their norms and the bigram count (CIDEr-D's length term).
#[allow(clippy::type_complexity)]
fn tf_idf<'a>(
    counts: &HashMap<Ngram<'a>, usize>,
    df: &HashMap<&Ngram, f64>,
    ref_len: f64,
) -> (Vec<HashMap<Ngram<'a>, f64>>, [f64; 4], usize) {
    let mut vec: Vec<HashMap<Ngram<'a>, f64>> = vec![HashMap::new(); 4];
    let mut norm = [0f64; 4];
    let mut length = 0;
    for (g, &tf) in counts {
        let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
        let n = g.len() - 1;
        let w = tf as f64 * (ref_len - d);
        vec[n].insert(g.clone(), w);
        norm[n] += w * w;
        if n == 1 {
            length += tf;
        }
    }
    (vec, norm.map(f64::sqrt), length)
}

/// CIDEr-D per image (the corpus score is their mean). Document frequencies come from the
/// references of all images given.
pub fn cider_d(pairs: &[CaptionPair]) -> (f64, Vec<f64>) {
    const N: usize = 4;
    const SIGMA: f64 = 6.0;
    let refs: Vec<Vec<HashMap<Ngram, usize>>> = pairs
        .iter()
        .map(|p| {
            p.references
                .iter()
                .map(|r| ngram_counts(&r.split_whitespace().collect::<Vec<_>>(), N))
                .collect()
        })
        .collect();
    let mut df: HashMap<&Ngram, f64> = HashMap::new();
    for image in &refs {
        let mut seen: std::collections::HashSet<&Ngram> = std::collections::HashSet::new();
        for r in image {
            seen.extend(r.keys());
        }
        for g in seen {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let ref_len = (pairs.len() as f64).ln();
    let scores: Vec<f64> = pairs
        .iter()
        .zip(&refs)
        .map(|(p, image_refs)| {
            let hyp = ngram_counts(&p.hypothesis.split_whitespace().collect::<Vec<_>>(), N);
            let (vh, nh, lh) = tf_idf(&hyp, &df, ref_len);
            let mut score = [0f64; N];
            for r in image_refs {
                let (vr, nr, lr) = tf_idf(r, &df, ref_len);
                let delta = lh as f64 - lr as f64;
                for n in 0..N {
                    let mut val: f64 = vh[n]
                        .iter()
                        .map(|(g, &w)| {
                            w.min(*vr[n].get(g).unwrap_or(&0.0)) * vr[n].get(g).unwrap_or(&0.0)
                        })
                        .sum();
                    if nh[n] != 0.0 && nr[n] != 0.0 {
                        val /= nh[n] * nr[n];
                    }
                    score[n] += val * (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                }
            }
            mean(&score) / image_refs.len() as f64 * 10.0
        })
        .collect();
    (mean(&scores), scores)
}

/// All metrics, corpus-level and per image.
pub fn score(pairs: &[CaptionPair]) -> (CaptionScores, Vec<CaptionScores>) {
    let (b, bs) = bleu(pairs);
    let (r, rs) = rouge_l(pairs);
    let (c, cs) = cider_d(pairs);
    let m_pairs: Vec<(&str, Vec<&str>)> = pairs
        .iter()
        .map(|p| (p.hypothesis, p.references.clone()))
        .collect();
    let (m, ms) = super::meteor::meteor(&m_pairs);
    let per = bs
        .into_iter()
        .zip(rs)
        .zip(cs)
        .zip(ms)
        .map(|(((bleu, rouge_l), cider_d), meteor)| CaptionScores {
            bleu,
            meteor,
            rouge_l,
            cider_d,
        })
        .collect();
    (
        CaptionScores {
            bleu: b,
            meteor: m,
            rouge_l: r,
            cider_d: c,
        },
        per,
    )
}

/// Lower case, words and numbers kept, punctuation dropped — an approximation of the PTB
/// tokenisation that the COCO evaluation applies before scoring.
pub fn simple_tokenize(s: &str) -> String {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in s.to_lowercase().chars() {
        if ch.is_alphanumeric() || ch == '\'' {
            word.push(ch);
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out.join(" ")
}

/// Reference captions by image file name, from RSICD's `captions.jsonl`
/// (`{"filename", "captions"}` lines) or a COCO caption JSON (`images` + `annotations`).
pub fn read_references(path: &std::path::Path) -> anyhow::Result<HashMap<String, Vec<String>>> {
    use anyhow::{Context, anyhow, bail};
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read references", path.display()))?;
    let mut refs: HashMap<String, Vec<String>> = HashMap::new();
    if text.trim_start().starts_with('{')
        && text.lines().filter(|l| !l.trim().is_empty()).count() > 1
    {
        for (i, v) in json_lines(path, &text)? {
            let name = v["filename"]
                .as_str()
                .ok_or_else(|| anyhow!("{}:{}: no \"filename\"", path.display(), i + 1))?;
            let caps = v["captions"]
                .as_array()
                .ok_or_else(|| anyhow!("{}:{}: no \"captions\" list", path.display(), i + 1))?;
            let caps: Vec<String> = caps
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect();
            if caps.is_empty() || caps.iter().any(|c| c.trim().is_empty()) {
                bail!("{}:{}: empty caption for {name}", path.display(), i + 1);
            }
            refs.insert(name.to_string(), caps);
        }
    } else {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let images = v["images"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no \"images\" (COCO caption format)", path.display()))?;
        let names: HashMap<String, String> = images
            .iter()
            .filter_map(|im| Some((im["id"].to_string(), im["file_name"].as_str()?.to_string())))
            .collect();
        for a in v["annotations"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no \"annotations\"", path.display()))?
        {
            let id = a["image_id"].to_string();
            let name = names.get(&id).ok_or_else(|| {
                anyhow!("{}: annotation for unknown image id {id}", path.display())
            })?;
            let cap = a["caption"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: annotation without caption", path.display()))?;
            refs.entry(name.clone()).or_default().push(cap.to_string());
        }
    }
    if refs.is_empty() {
        bail!("{}: no reference captions", path.display());
    }
    Ok(refs)
}

/// The non-blank lines of a JSON Lines file, parsed, with their 0-based line index; a line
/// that is not JSON is an error naming the file and line.
fn json_lines(
    path: &std::path::Path,
    text: &str,
) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    use anyhow::Context;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            Ok((i, v))
        })
        .collect()
}

/// `{"input", "caption"}` lines, as `caption --jsonl` writes them.
pub fn read_predictions(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::{Context, bail};
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read predictions", path.display()))?;
    let mut rows = Vec::new();
    for (i, v) in json_lines(path, &text)? {
        let input = v["input"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"input\"", path.display(), i + 1))?;
        let caption = v["caption"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"caption\"", path.display(), i + 1))?;
        rows.push((input.to_string(), caption.to_string()));
    }
    if rows.is_empty() {
        bail!("{}: no predictions", path.display());
    }
    Ok(rows)
}

/// The references of a captioned data set by image file name, as [`read_references`] gives.
pub fn references_of(data: &crate::data::CaptionedImages) -> HashMap<String, Vec<String>> {
    data.items
        .iter()
        .map(|i| {
            let name = i.path.file_name().map(|n| n.to_string_lossy().into_owned());
            (name.unwrap_or_default(), i.captions.clone())
        })
        .collect()
}

/// A prediction matched to its references, tokenised for scoring.
#[derive(Debug, Clone)]
pub struct ScoredCaption {
    pub input: String,
    pub hypothesis: String,
    pub references: Vec<String>,
}

impl ScoredCaption {
    pub fn pair(&self) -> CaptionPair<'_> {
        CaptionPair {
            hypothesis: &self.hypothesis,
            references: self.references.iter().map(String::as_str).collect(),
        }
    }
}

/// Matches `(input, caption)` predictions to `refs` by file name and tokenises both
/// ([`simple_tokenize`], unless `pretokenized`); a prediction without references, or a second
/// prediction for the same image, is an error naming it and `refs_name`. References without a
/// prediction are left out (their count is `refs.len()` minus the rows).
pub fn match_references(
    predictions: &[(String, String)],
    refs: &HashMap<String, Vec<String>>,
    refs_name: &str,
    pretokenized: bool,
) -> anyhow::Result<Vec<ScoredCaption>> {
    use anyhow::{Context, bail};
    let tok = |s: &str| {
        if pretokenized {
            s.to_string()
        } else {
            simple_tokenize(s)
        }
    };
    let mut rows = Vec::with_capacity(predictions.len());
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (input, caption) in predictions {
        let name = std::path::Path::new(input)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = seen.insert(name.clone(), input) {
            bail!(
                "{input}: a second prediction for {name} (the first is {first}); predict each image once"
            );
        }
        let r = refs
            .get(&name)
            .with_context(|| format!("{input}: no reference captions for {name} in {refs_name}"))?;
        rows.push(ScoredCaption {
            input: input.clone(),
            hypothesis: tok(caption),
            references: r.iter().map(|c| tok(c)).collect(),
        });
    }
    if rows.is_empty() {
        bail!("no predictions to score");
    }
    Ok(rows)
}

/// The nearest-neighbour caption baseline: each query gets the first caption of the most
/// similar (cosine; lower index on ties) training image. Embeddings need not be normalised.
pub fn nearest_neighbour_captions(
    train: &[Vec<f32>],
    train_captions: &[&str],
    queries: &[Vec<f32>],
) -> Vec<String> {
    use rayon::prelude::*;
    let norm = |v: &[Vec<f32>]| -> Vec<Vec<f32>> {
        v.iter().map(|e| crate::encoder::normalized(e)).collect()
    };
    let (train, queries) = (norm(train), norm(queries));
    queries
        .par_iter()
        .map(|q| {
            let best = train
                .iter()
                .enumerate()
                .map(|(i, t)| (i, q.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i);
            train_captions[best].to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokenizer_drops_punctuation() {
        assert_eq!(
            super::simple_tokenize("Many  planes, parked at the AIRPORT."),
            "many planes parked at the airport"
        );
    }

    use super::*;

    #[test]
    fn identical_captions_score_perfectly_on_bleu_and_rouge() {
        let pairs = vec![CaptionPair {
            hypothesis: "a large airport with many planes",
            references: vec!["a large airport with many planes"],
        }];
        let (b, _) = bleu(&pairs);
        assert!(b.iter().all(|&x| (x - 1.0).abs() < 1e-9), "{b:?}");
        assert!((rouge_l(&pairs).0 - 1.0).abs() < 1e-12);
        assert_eq!(lcs(&["a", "b", "c", "d"], &["b", "d", "e"]), 2);
    }

    #[test]
    fn nearest_neighbour_takes_the_most_similar_training_caption() {
        let train = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![0.0, 1.0]];
        let caps = ["east", "north", "north again"];
        let q = vec![vec![5.0, 0.1], vec![0.2, 3.0], vec![-1.0, 0.0]];
        // Scale does not matter; ties go to the first; the least dissimilar wins.
        assert_eq!(
            nearest_neighbour_captions(&train, &caps, &q),
            vec!["east", "north", "north"]
        );
    }

    #[test]
    fn predictions_match_references_by_file_name() {
        let refs: HashMap<String, Vec<String>> =
            [("a.jpg".to_string(), vec!["Two planes.".to_string()])].into();
        let rows = match_references(
            &[("dir/a.jpg".into(), "A Plane!".into())],
            &refs,
            "refs",
            false,
        )
        .unwrap();
        assert_eq!(rows[0].hypothesis, "a plane");
        assert_eq!(rows[0].references, vec!["two planes"]);
        let err = match_references(&[("b.jpg".into(), "x".into())], &refs, "refs", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.jpg") && err.contains("refs"), "{err}");
        let twice = [
            ("x/a.jpg".into(), "one".into()),
            ("y/a.jpg".into(), "two".into()),
        ];
        let err = match_references(&twice, &refs, "refs", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("second prediction for a.jpg"), "{err}");
    }
}
