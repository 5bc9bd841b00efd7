//! Name that dataset (Torralba & Efros 2011): can a linear classifier tell from an embedding which dataset
//! a crop came from? Multinomial logistic regression on L2-normalised embeddings (plus a bias), trained by
//! full-batch gradient descent from zero weights; held-out accuracy against chance (the share of the
//! largest dataset among held-out rows). The split is by image_id so crops of one image never straddle it.
use std::collections::BTreeMap;

use rand::Rng;
use rayon::prelude::*;

use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embeddings::Embeddings;
use crate::analyze::stats::seeded_rng;
use crate::error::{Error, Result};

/// Share of image_ids held out for testing.
pub const TEST_SHARE: f64 = 0.2;
/// Gradient-descent steps and step size: the loss is convex and ‖x‖² ≤ 2 (unit vector + bias), so the
/// gradient is 1-Lipschitz and a step of 1.0 is safe.
pub const STEPS: usize = 500;
pub const LR: f64 = 1.0;
/// Training rows above this are subsampled (seeded) to bound time.
pub const MAX_TRAIN: usize = 20_000;
const STREAM_SPLIT: u64 = 31;
const STREAM_TRAIN: u64 = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct NameThatDatasetResult {
    pub accuracy: f64,
    pub chance: f64,
    pub n_classes: usize,
    pub n_train: usize,
    pub n_test: usize,
}

fn fnv1a(s: &str) -> u64 {
    // FNV-1a 64-bit offset basis and prime (Fowler–Noll–Vo reference).
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn name_that_dataset(e: &Embeddings, seed: u64) -> Result<NameThatDatasetResult> {
    let classes: BTreeMap<&str, usize> = {
        let set: std::collections::BTreeSet<&str> = e.datasets.iter().map(String::as_str).collect();
        set.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
    };
    let c = classes.len();
    if c < 2 {
        return Err(Error::Invalid(format!(
            "name-that-dataset: column `dataset` has {c} distinct value(s); needs at least two"
        )));
    }
    let is_test =
        |r: usize| seeded_rng(seed, STREAM_SPLIT, fnv1a(&e.image_ids[r])).gen::<f64>() < TEST_SHARE;
    let (test, mut train): (Vec<usize>, Vec<usize>) = (0..e.len()).partition(|&r| is_test(r));
    if train.len() > MAX_TRAIN {
        train = sample_without_replacement(train.len(), MAX_TRAIN, seed, STREAM_TRAIN)
            .into_iter()
            .map(|i| train[i])
            .collect();
    }
    if test.is_empty() || train.is_empty() {
        return Err(Error::Invalid(format!(
            "name-that-dataset: the image_id split left {} train and {} test rows",
            train.len(),
            test.len()
        )));
    }
    let d = e.dim + 1;
    let feats = |rows: &[usize]| -> Vec<f32> {
        let x = e.gather(rows, true);
        let mut out = Vec::with_capacity(rows.len() * d);
        for v in x.chunks(e.dim) {
            out.extend_from_slice(v);
            out.push(1.0);
        }
        out
    };
    let y = |rows: &[usize]| -> Vec<usize> {
        rows.iter()
            .map(|&r| classes[e.datasets[r].as_str()])
            .collect()
    };
    let (xtr, ytr) = (feats(&train), y(&train));
    let mut w = vec![0.0f64; c * d];
    let logits = |w: &[f64], x: &[f32]| -> Vec<f64> {
        (0..c)
            .map(|k| {
                w[k * d..(k + 1) * d]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * *b as f64)
                    .sum()
            })
            .collect()
    };
    for _ in 0..STEPS {
        let grad = xtr
            .par_chunks(d * 1024)
            .zip(ytr.par_chunks(1024))
            .map(|(xs, ys)| {
                let mut g = vec![0.0f64; c * d];
                for (x, &t) in xs.chunks(d).zip(ys) {
                    let z = logits(&w, x);
                    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let ez: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = ez.iter().sum();
                    for k in 0..c {
                        let coef = ez[k] / s - if k == t { 1.0 } else { 0.0 };
                        for (gi, xi) in g[k * d..(k + 1) * d].iter_mut().zip(x) {
                            *gi += coef * *xi as f64;
                        }
                    }
                }
                g
            })
            .reduce(
                || vec![0.0; c * d],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let scale = LR / train.len() as f64;
        w.iter_mut()
            .zip(&grad)
            .for_each(|(wi, gi)| *wi -= scale * gi);
    }
    let (xte, yte) = (feats(&test), y(&test));
    let correct = xte
        .chunks(d)
        .zip(&yte)
        .filter(|(x, &t)| {
            let z = logits(&w, x);
            let best = (0..c)
                .max_by(|&a, &b| z[a].total_cmp(&z[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            best == t
        })
        .count();
    let mut counts = vec![0usize; c];
    yte.iter().for_each(|&t| counts[t] += 1);
    let chance = counts.iter().copied().max().unwrap_or(0) as f64 / yte.len() as f64;
    Ok(NameThatDatasetResult {
        accuracy: correct as f64 / yte.len() as f64,
        chance,
        n_classes: c,
        n_train: train.len(),
        n_test: test.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    #[test]
    fn separable_datasets_are_named_and_single_dataset_is_an_error() {
        let rows: Vec<_> = (0..200)
            .map(|i| {
                let c = i % 2;
                let j = (i as f32 * 0.7).sin() * 0.3;
                let mut r = row(
                    i,
                    &format!("i{i}"),
                    None,
                    None,
                    if c == 0 {
                        vec![1.0, j, 0.2]
                    } else {
                        vec![j, 1.0, 0.2]
                    },
                );
                r.dataset = ["objects", "scenes"][c].to_string();
                r
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = name_that_dataset(&e, 3).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert!(r.chance < 0.75 && r.n_test > 10 && r.n_train + r.n_test == 200);
        let one = from_rows(&rows[..1]).unwrap();
        assert!(name_that_dataset(&one, 3)
            .unwrap_err()
            .to_string()
            .contains("`dataset`"));
    }
}
