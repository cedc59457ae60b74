//! METEOR (Banerjee & Lavie; Meteor 1.5 as the COCO caption evaluation runs it: English,
//! `-norm`, default parameters α 0.85, β 0.2, γ 0.6, δ 0.75), with the *exact* and *stem*
//! matching modules (weights 1.0 and 0.6). Meteor's synonym (WordNet) and paraphrase modules are
//! not implemented, and the function-word list is this crate's own, not the jar's; docs/src/evaluation.md states
//! how far the scores land from the jar's.
//!
//! Per hypothesis the best-scoring reference counts; the corpus score is computed from the
//! summed statistics of those best references, as Meteor's `EVAL` line does.

use rust_stemmers::{Algorithm, Stemmer};

const ALPHA: f64 = 0.85;
const BETA: f64 = 0.2;
const GAMMA: f64 = 0.6;
const DELTA: f64 = 0.75;
/// Weights of the exact and stem modules.
const WEIGHTS: [f64; 2] = [1.0, 0.6];
const BEAM: usize = 64;

/// English function words: articles, pronouns, prepositions, conjunctions, auxiliaries.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no",
    "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over",
    "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until",
    "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
    "why", "will", "with", "would", "you", "your",
];

/// The counts METEOR's score is computed from (summable over a corpus).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeteorStats {
    pub test_len: f64,
    pub ref_len: f64,
    pub test_function: f64,
    pub ref_function: f64,
    /// Matched words per module, split into content and function words.
    pub test_content: [f64; 2],
    pub test_func: [f64; 2],
    pub ref_content: [f64; 2],
    pub ref_func: [f64; 2],
    pub matches: f64,
    pub chunks: f64,
}

impl MeteorStats {
    pub fn add(&mut self, o: &MeteorStats) {
        self.test_len += o.test_len;
        self.ref_len += o.ref_len;
        self.test_function += o.test_function;
        self.ref_function += o.ref_function;
        for m in 0..2 {
            self.test_content[m] += o.test_content[m];
            self.test_func[m] += o.test_func[m];
            self.ref_content[m] += o.ref_content[m];
            self.ref_func[m] += o.ref_func[m];
        }
        self.matches += o.matches;
        self.chunks += o.chunks;
    }

    pub fn score(&self) -> f64 {
        let weighted = |content: &[f64; 2], func: &[f64; 2]| -> f64 {
            (0..2)
                .map(|m| WEIGHTS[m] * (DELTA * content[m] + (1.0 - DELTA) * func[m]))
                .sum()
        };
        let t_den =
            DELTA * (self.test_len - self.test_function) + (1.0 - DELTA) * self.test_function;
        let r_den = DELTA * (self.ref_len - self.ref_function) + (1.0 - DELTA) * self.ref_function;
        if t_den <= 0.0 || r_den <= 0.0 || self.matches == 0.0 {
            return 0.0;
        }
        let p = weighted(&self.test_content, &self.test_func) / t_den;
        let r = weighted(&self.ref_content, &self.ref_func) / r_den;
        if p == 0.0 || r == 0.0 {
            return 0.0;
        }
        let fmean = p * r / (ALPHA * p + (1.0 - ALPHA) * r);
        let whole =
            self.matches == self.test_len && self.matches == self.ref_len && self.chunks == 1.0;
        let frag = if whole {
            0.0
        } else {
            self.chunks / self.matches
        };
        fmean * (1.0 - GAMMA * frag.powf(BETA))
    }
}

struct Word {
    text: String,
    stem: String,
    function: bool,
}

fn words(s: &str, stemmer: &Stemmer) -> Vec<Word> {
    s.split_whitespace()
        .map(|w| {
            let text = w.to_lowercase();
            Word {
                stem: stemmer.stem(&text).into_owned(),
                function: FUNCTION_WORDS.binary_search(&text.as_str()).is_ok(),
                text,
            }
        })
        .collect()
}

#[derive(Clone)]
struct Partial {
    /// `(test position, reference position, module)`.
    matches: Vec<(usize, usize, usize)>,
    used: Vec<bool>,
    chunks: usize,
    exact: usize,
    distance: usize,
}

impl Partial {
    /// Better first: more matches, fewer chunks, more exact matches, less displacement.
    fn key(
        &self,
    ) -> (
        std::cmp::Reverse<usize>,
        usize,
        std::cmp::Reverse<usize>,
        usize,
    ) {
        (
            std::cmp::Reverse(self.matches.len()),
            self.chunks,
            std::cmp::Reverse(self.exact),
            self.distance,
        )
    }
}

/// A one-to-one alignment of test words to reference words (exact, then stem matches)
/// with the most matches, then the fewest chunks, found by beam search.
fn align(test: &[Word], reference: &[Word]) -> Partial {
    let mut beam = vec![Partial {
        matches: vec![],
        used: vec![false; reference.len()],
        chunks: 0,
        exact: 0,
        distance: 0,
    }];
    for (i, w) in test.iter().enumerate() {
        let mut next = Vec::new();
        for p in &beam {
            next.push(p.clone());
            for (j, r) in reference.iter().enumerate() {
                if p.used[j] {
                    continue;
                }
                let module = if w.text == r.text {
                    0
                } else if w.stem == r.stem {
                    1
                } else {
                    continue;
                };
                let mut q = p.clone();
                let continues = p
                    .matches
                    .last()
                    .is_some_and(|&(pi, pj, _)| pi + 1 == i && pj + 1 == j);
                if !continues {
                    q.chunks += 1;
                }
                q.used[j] = true;
                q.matches.push((i, j, module));
                q.exact += usize::from(module == 0);
                q.distance += i.abs_diff(j);
                next.push(q);
            }
        }
        next.sort_by_key(|p| p.key());
        next.truncate(BEAM);
        beam = next;
    }
    beam.into_iter()
        .min_by_key(|p| p.key())
        .expect("the beam is never empty")
}

fn stats(test: &[Word], reference: &[Word]) -> MeteorStats {
    let a = align(test, reference);
    let mut s = MeteorStats {
        test_len: test.len() as f64,
        ref_len: reference.len() as f64,
        test_function: test.iter().filter(|w| w.function).count() as f64,
        ref_function: reference.iter().filter(|w| w.function).count() as f64,
        matches: a.matches.len() as f64,
        chunks: a.chunks as f64,
        ..Default::default()
    };
    for &(i, j, m) in &a.matches {
        if test[i].function {
            s.test_func[m] += 1.0;
        } else {
            s.test_content[m] += 1.0;
        }
        if reference[j].function {
            s.ref_func[m] += 1.0;
        } else {
            s.ref_content[m] += 1.0;
        }
    }
    s
}

/// Corpus METEOR and per-hypothesis scores of `(hypothesis, references)` pairs of
/// pre-tokenised, space-separated captions.
pub fn meteor(pairs: &[(&str, Vec<&str>)]) -> (f64, Vec<f64>) {
    let stemmer = Stemmer::create(Algorithm::English);
    let mut total = MeteorStats::default();
    let mut per = Vec::with_capacity(pairs.len());
    for (hyp, refs) in pairs {
        let h = words(hyp, &stemmer);
        let best = refs
            .iter()
            .map(|r| stats(&h, &words(r, &stemmer)))
            .max_by(|a, b| a.score().total_cmp(&b.score()))
            .unwrap_or_default();
        per.push(best.score());
        total.add(&best);
    }
    (total.score(), per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_words_are_sorted_for_binary_search() {
        assert!(FUNCTION_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn identical_sentences_score_fmean_without_penalty() {
        let (c, _) = meteor(&[("many planes are parked", vec!["many planes are parked"])]);
        assert!((c - 1.0).abs() < 1e-12, "{c}");
    }

    #[test]
    fn hand_worked_score_with_a_stem_match_and_two_chunks() {
        // test: "planes parked near buildings", ref: "plane is parked near a building"
        // matches: planes~plane (stem), parked (exact), near (exact), buildings~building (stem)
        // chunks: [planes] [parked near] [buildings]... planes→0, parked→2, near→3, buildings→5
        // = 3 chunks ("planes" alone, "parked near", "buildings").
        let (c, _) = meteor(&[(
            "planes parked near buildings",
            vec!["plane is parked near a building"],
        )]);
        // test: 4 words, function: "near" is not in the list → 0 function words.
        let t_den = DELTA * 4.0;
        let p = (0.6 * DELTA * 2.0 + 1.0 * DELTA * 2.0) / t_den;
        // ref: 6 words, function: "is", "a" → 2.
        let r_den = DELTA * 4.0 + (1.0 - DELTA) * 2.0;
        let r = (0.6 * DELTA * 2.0 + 1.0 * DELTA * 2.0) / r_den;
        let fmean = p * r / (ALPHA * p + (1.0 - ALPHA) * r);
        let expected = fmean * (1.0 - GAMMA * (3.0f64 / 4.0).powf(BETA));
        assert!((c - expected).abs() < 1e-12, "{c} vs {expected}");
    }

    #[test]
    fn best_reference_counts() {
        let (_, per) = meteor(&[("a beach", vec!["a river", "a beach"])]);
        assert!((per[0] - 1.0).abs() < 1e-12);
    }
}
