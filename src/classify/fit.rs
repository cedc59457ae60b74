//! Training a classifier from labelled embeddings: drawing K shots per class, the methods, and
//! the search for the regularisation on held-out examples (a stratified holdout for large
//! training sets, k-fold or leave-one-out for a few shots, as CLIP's paper and CLIP_benchmark
//! choose the penalty on data the fit did not see), followed by a refit on every example.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::logistic::{self, Fit, Problem, Stopping};
use super::{Candidate, Method, PriorInfo, Regularisation};
use crate::encoder::normalized;

/// Below this many training examples the search uses k-fold cross-validation; from it on, one
/// stratified 20 % holdout (each fit then sees thousands of examples, and k fits would cost k
/// times as much for little more information).
pub const HOLDOUT_FROM: usize = 2000;

/// Labelled, L2-normalised embeddings.
#[derive(Debug, Clone)]
pub struct Examples {
    pub classes: Vec<String>,
    pub dim: usize,
    /// `len × dim`, row-major, each row of unit length.
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    /// Each example's image, for messages.
    pub names: Vec<String>,
}

/// Every class's example indices, shuffled by `seed`.
fn shuffled_by_class(y: &[usize], n_classes: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut by_class = vec![Vec::new(); n_classes];
    for (i, &c) in y.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for v in &mut by_class {
        v.shuffle(&mut rng);
    }
    by_class
}

/// The indices of `k` examples of every class, drawn with `seed` from examples whose classes
/// (indices into `classes`) are `y`: class by class, in the order of `classes`. A class with
/// fewer than `k` is an error naming it. `train classifier --shots` draws with this before
/// embedding anything, so that 16 shots of a 100,000-image folder embed 16 images a class.
pub fn draw_shots(y: &[usize], classes: &[String], k: usize, seed: u64) -> Result<Vec<usize>> {
    if k == 0 {
        bail!("--shots must be at least 1");
    }
    let by_class = shuffled_by_class(y, classes.len(), seed);
    let short: Vec<String> = by_class
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() < k)
        .map(|(c, v)| format!("{} ({})", classes[c], v.len()))
        .collect();
    if !short.is_empty() {
        bail!(
            "--shots {k}: class(es) with fewer examples: {}",
            short.join(", ")
        );
    }
    Ok(by_class.iter().flat_map(|v| v[..k].to_vec()).collect())
}

impl Examples {
    pub fn new(classes: Vec<String>, dim: usize) -> Self {
        Self {
            classes,
            dim,
            x: Vec::new(),
            y: Vec::new(),
            names: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Adds one example; an embedding of the wrong size, with NaN or infinity, or of length
    /// zero is an error naming `name`.
    pub fn push(&mut self, name: &str, embedding: &[f32], class: usize) -> Result<()> {
        if embedding.len() != self.dim {
            bail!(
                "{name}: embedding of {} values, expected {}",
                embedding.len(),
                self.dim
            );
        }
        if embedding.iter().any(|v| !v.is_finite()) {
            bail!("{name}: its embedding holds NaN or infinity; the model or image is broken");
        }
        if embedding.iter().all(|&v| v == 0.0) {
            bail!("{name}: its embedding is all zeros");
        }
        self.x.extend(normalized(embedding));
        self.y.push(class);
        self.names.push(name.to_string());
        Ok(())
    }

    /// Examples of each class, in class order.
    pub fn per_class(&self) -> Vec<usize> {
        let mut n = vec![0; self.classes.len()];
        for &c in &self.y {
            n[c] += 1;
        }
        n
    }

    /// The examples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Examples {
        let mut out = Examples::new(self.classes.clone(), self.dim);
        for &i in idx {
            out.x
                .extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            out.y.push(self.y[i]);
            out.names.push(self.names[i].clone());
        }
        out
    }

    /// `k` examples of every class drawn with `seed`; a class with fewer is an error naming it.
    pub fn shots(&self, k: usize, seed: u64) -> Result<Examples> {
        Ok(self.subset(&draw_shots(&self.y, &self.classes, k, seed)?))
    }

    /// Refuses a class without examples, naming it.
    pub fn check_every_class_has_examples(&self, data: &str) -> Result<()> {
        let empty: Vec<&str> = self
            .per_class()
            .iter()
            .zip(&self.classes)
            .filter(|(n, _)| **n == 0)
            .map(|(_, c)| c.as_str())
            .collect();
        if self.is_empty() {
            bail!("{data}: no training examples");
        }
        if !empty.is_empty() {
            bail!(
                "{data}: class(es) without a training example: {}",
                empty.join(", ")
            );
        }
        if self.classes.len() < 2 {
            bail!("{data}: a classifier needs two classes or more");
        }
        Ok(())
    }
}

/// How much of CLIP's logit scale the prior keeps. The zero-shot classifier's own scale made
/// the prior too confident for the examples to move it (EuroSAT, 5 seeds, 1/2/4/8/16 shots:
/// 35.8 / 42.9 / 45.0 / 59.0 / 63.4 %); at 0.3 it gave 39.4 ± 1.9 % at one shot (the plain
/// probe 39.0 ± 6.9 %), at 0.1 40.4 ± 5.7 %. The scale changes no zero-shot ranking.
pub const PRIOR_SCALE: f32 = 0.3;

/// The zero-shot text classifier a few-shot fit starts from and is pulled towards: each
/// class's text embedding times CLIP's logit scale (times [`PRIOR_SCALE`]), so that at small C
/// the fit ranks as the zero-shot classifier does.
#[derive(Debug, Clone)]
pub struct Prior {
    /// `classes × dim`.
    pub weight: Vec<f32>,
    pub info: PriorInfo,
}

impl Prior {
    /// From unit text embeddings in class order.
    pub fn new(class_embeddings: &[Vec<f32>], info: PriorInfo) -> Self {
        let weight = class_embeddings
            .iter()
            .flat_map(|e| {
                normalized(e)
                    .into_iter()
                    .map(|v| v * info.logit_scale * PRIOR_SCALE)
            })
            .collect();
        Self { weight, info }
    }
}

/// How to train.
#[derive(Debug, Clone)]
pub struct Options {
    pub method: Method,
    /// A fixed C instead of the search.
    pub c: Option<f64>,
    /// Draws the holdout and the folds.
    pub seed: u64,
    /// CLIP's logit scale, the temperature of prototype scores.
    pub logit_scale: f32,
}

/// A trained linear map and how it was found.
#[derive(Debug, Clone)]
pub struct Trained {
    pub method: Method,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub regularisation: Option<Regularisation>,
    pub iterations: usize,
}

/// The method `auto` stands for, given the smallest class's examples and whether a text
/// prior was given; other methods as they are (a prior method without a prior is refused).
///
/// `auto` is `zero-shot-prior` at one example per class with a prior, else `linear`. Measured
/// on EuroSAT with the built-in model (5 seeds, docs/src/classifiers.md): at one shot the prior kept the fit
/// steady (39.4 ± 1.9 % against the plain probe's 39.0 ± 6.9 %, zero-shot 35.9 %); from two
/// shots on the plain probe, whose C is then chosen by cross-validation, was as good or better
/// (46.0 / 50.5 / 58.3 / 64.2 % against 43.7 / 47.6 / 58.6 / 64.3 % at 2 / 4 / 8 / 16).
pub fn resolve(method: Method, smallest_class: usize, has_prior: bool) -> Result<Method> {
    Ok(match method {
        Method::Auto if has_prior && smallest_class <= 1 => Method::ZeroShotPrior,
        Method::Auto => Method::Linear,
        Method::ZeroShotPrior if !has_prior => {
            bail!("--method zero-shot-prior needs --labels (the classes' wordings)")
        }
        m => m,
    })
}

/// Trains on `ex` (every class with an example; see [`Examples::check_every_class_has_examples`]).
pub fn train(ex: &Examples, prior: Option<&Prior>, opts: &Options) -> Result<Trained> {
    let smallest = ex.per_class().into_iter().min().unwrap_or(0);
    let method = resolve(opts.method, smallest, prior.is_some())?;
    let (k, d) = (ex.classes.len(), ex.dim);
    if method == Method::Prototype {
        let mut sums = vec![vec![0f32; d]; k];
        for (row, &c) in ex.x.chunks_exact(d).zip(&ex.y) {
            for (s, v) in sums[c].iter_mut().zip(row) {
                *s += v;
            }
        }
        let weight = sums
            .iter()
            .flat_map(|s| normalized(s).into_iter().map(|v| v * opts.logit_scale))
            .collect();
        return Ok(Trained {
            method,
            weight,
            bias: vec![0.0; k],
            regularisation: None,
            iterations: 0,
        });
    }
    let prior = if method == Method::ZeroShotPrior {
        prior
    } else {
        None
    };
    let (regularisation, start, stop) = match opts.c {
        Some(c) => (
            Regularisation {
                c,
                chosen_by: "fixed".into(),
                folds: 0,
                candidates: Vec::new(),
            },
            None,
            Stopping::default(),
        ),
        None => {
            let (r, start) = search(ex, prior, opts.seed)?;
            // From the held-out fit at the chosen C: most of the way there already.
            let stop = Stopping {
                gradient: 1e-5,
                max_iterations: 1000,
            };
            (r, start, stop)
        }
    };
    let fit = fit_one(ex, prior, regularisation.c, start.as_ref(), stop)?;
    Ok(Trained {
        method,
        weight: fit.weight,
        bias: fit.bias,
        regularisation: Some(regularisation),
        iterations: fit.iterations,
    })
}

fn fit_one(
    ex: &Examples,
    prior: Option<&Prior>,
    c: f64,
    start: Option<&Fit>,
    stop: Stopping,
) -> Result<Fit> {
    let zeros = vec![0f32; ex.classes.len()];
    let problem = Problem {
        x: &ex.x,
        y: &ex.y,
        dim: ex.dim,
        classes: ex.classes.len(),
        c,
        anchor: prior.map(|p| (p.weight.as_slice(), zeros.as_slice())),
        // Only where a class may be missing from the examples (one shot, held out): its
        // intercept would otherwise run to −∞. Elsewhere the intercept is free, as
        // scikit-learn's, and the fit runs whitened (see `logistic`).
        penalise_bias: prior.is_some() && ex.per_class().into_iter().min().unwrap_or(0) < 2,
    };
    logistic::fit(&problem, start, stop)
}

/// C values tried: half-decades. Pulled towards the prior, the grid starts where the fit is
/// still the zero-shot classifier.
/// Large training sets (a holdout) get decades: each fit there costs a pass over thousands of
/// examples per iteration.
fn grid(prior: bool, large: bool) -> Vec<f64> {
    let (lo, hi) = if prior { (-8, 6) } else { (-4, 10) };
    let step = if large { 2 } else { 1 };
    (lo..=hi)
        .filter(|e| e % step == 0)
        .map(|e| 10f64.powf(e as f64 / 2.0))
        .collect()
}

/// Stop the search once this many C values in a row did worse than the best.
const PATIENCE: usize = 3;

/// Chooses C on held-out examples: pooled accuracy over the folds, ties broken by held-out
/// log-loss, then by the smaller C (the stronger pull).
/// Returns the choice, and for a holdout the held-out fit at the chosen C (a start for the
/// refit on every example).
fn search(
    ex: &Examples,
    prior: Option<&Prior>,
    seed: u64,
) -> Result<(Regularisation, Option<Fit>)> {
    let by_class = shuffled_by_class(&ex.y, ex.classes.len(), seed ^ 0x5EA7C4);
    let smallest = by_class.iter().map(Vec::len).min().unwrap_or(0);
    // Each example's fold.
    let (folds, chosen_by): (Vec<Vec<usize>>, &str) = if ex.len() >= HOLDOUT_FROM {
        let held: Vec<usize> = by_class
            .iter()
            .flat_map(|v| v[..v.len().div_ceil(5)].to_vec())
            .collect();
        (vec![held], "holdout")
    } else if smallest >= 2 {
        let k = smallest.min(5);
        let mut folds = vec![Vec::new(); k];
        for v in &by_class {
            for (j, &i) in v.iter().enumerate() {
                folds[j % k].push(i);
            }
        }
        (folds, "k-fold")
    } else {
        // Nothing can be held out without losing a class entirely: scikit-learn's default.
        // (Leave-one-out with the prior was tried: holding out a class's only example leaves
        // just the prior to speak for it, so it always chose the prior — 36.0 % at one shot on
        // EuroSAT against 39.0 % with this default.)
        return Ok((
            Regularisation {
                c: 1.0,
                chosen_by: "default (a class has one example; nothing to hold out)".into(),
                folds: 0,
                candidates: Vec::new(),
            },
            None,
        ));
    };
    let parts: Vec<(Examples, Examples)> = folds
        .iter()
        .map(|held| {
            let mut is_held = vec![false; ex.len()];
            for &i in held {
                is_held[i] = true;
            }
            let train: Vec<usize> = (0..ex.len()).filter(|&i| !is_held[i]).collect();
            (ex.subset(&train), ex.subset(held))
        })
        .collect();
    // Held-out accuracy settles long before the weights do: the search's fits stop early.
    let stop = Stopping {
        gradient: 1e-4,
        max_iterations: 150,
    };
    let mut previous: Vec<Option<Fit>> = vec![None; parts.len()];
    let mut candidates = Vec::new();
    let mut best: Option<(usize, f64, f64)> = None; // (index, accuracy, log-loss)
    let mut worse_in_a_row = 0;
    let mut best_fit = None;
    let large = chosen_by == "holdout";
    for (ci, c) in grid(prior.is_some(), large).into_iter().enumerate() {
        let (mut correct, mut total, mut loss) = (0usize, 0usize, 0f64);
        for (p, (train, held)) in parts.iter().enumerate() {
            let fit = fit_one(train, prior, c, previous[p].as_ref(), stop)?;
            let z = logistic::logits(&held.x, ex.dim, &fit.weight, &fit.bias)?;
            for (row, &y) in z.chunks_exact(ex.classes.len()).zip(&held.y) {
                let best_class = super::argmax(row);
                correct += usize::from(best_class == y);
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&v| (v as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                loss += lse - row[y] as f64;
                total += 1;
            }
            previous[p] = Some(fit);
        }
        let accuracy = correct as f64 / total as f64;
        let loss = loss / total as f64;
        candidates.push(Candidate { c, accuracy });
        let better = match best {
            None => true,
            Some((_, a, l)) => accuracy > a || (accuracy == a && loss < l),
        };
        if better {
            best = Some((ci, accuracy, loss));
            if large {
                best_fit = previous[0].clone();
            }
            worse_in_a_row = 0;
        } else {
            worse_in_a_row += 1;
            if worse_in_a_row >= PATIENCE {
                break;
            }
        }
    }
    let (bi, _, _) = best.expect("the grid is not empty");
    Ok((
        Regularisation {
            c: candidates[bi].c,
            chosen_by: chosen_by.into(),
            folds: folds.len(),
            candidates,
        },
        best_fit,
    ))
}

/// Share of `ex` the classifier `(weight, bias)` labels right.
pub fn accuracy(ex: &Examples, weight: &[f32], bias: &[f32]) -> Result<f64> {
    if ex.is_empty() {
        return Ok(0.0);
    }
    let z = logistic::logits(&ex.x, ex.dim, weight, bias)?;
    let correct = z
        .chunks_exact(ex.classes.len())
        .zip(&ex.y)
        .filter(|(row, y)| super::argmax(row) == **y)
        .count();
    Ok(correct as f64 / ex.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_prior_at_one_shot_only() {
        assert_eq!(
            resolve(Method::Auto, 1, true).unwrap(),
            Method::ZeroShotPrior
        );
        assert_eq!(resolve(Method::Auto, 2, true).unwrap(), Method::Linear);
        assert_eq!(resolve(Method::Auto, 1, false).unwrap(), Method::Linear);
        assert_eq!(
            resolve(Method::Prototype, 1, true).unwrap(),
            Method::Prototype
        );
        let e = resolve(Method::ZeroShotPrior, 5, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --labels"), "{e}");
    }

    #[test]
    fn shots_are_drawn_per_class_and_a_short_class_is_named() {
        let mut ex = Examples::new(vec!["a".into(), "b".into()], 2);
        for i in 0..5 {
            ex.push(&format!("a{i}"), &[1.0, i as f32], 0).unwrap();
        }
        ex.push("b0", &[0.0, 1.0], 1).unwrap();
        ex.push("b1", &[0.5, 1.0], 1).unwrap();
        let two = ex.shots(2, 7).unwrap();
        assert_eq!(two.per_class(), vec![2, 2]);
        assert_eq!(
            two.names,
            ex.shots(2, 7).unwrap().names,
            "the same seed, the same draw"
        );
        let e = ex.shots(3, 0).unwrap_err().to_string();
        assert!(e.contains("b (2)"), "{e}");
        let e = ex.push("nan", &[f32::NAN, 1.0], 0).unwrap_err().to_string();
        assert!(e.contains("nan: its embedding holds NaN"), "{e}");
    }
}
