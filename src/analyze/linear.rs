//! Multinomial logistic regression on L2-normalised embeddings (plus a bias), trained by full-batch gradient
//! descent from zero weights: the one linear classifier of biaslab, used by name-that-dataset (which dataset
//! did a crop come from?) and by the linear probe (which label?). Zero initialisation, a convex loss and a
//! gradient summed in fixed row chunks in chunk order make the result a deterministic function of the rows,
//! bit for bit, whatever the thread count.
use std::collections::BTreeMap;

use crate::analyze::embeddings::Embeddings;
use crate::analyze::reduce::ordered_sum;
use crate::analyze::stats::wilson_interval;
use crate::error::{Error, Result};

/// Gradient-descent steps and step size: the loss is convex and ‖x‖² ≤ 2 (unit vector + bias), so the
/// gradient is 1-Lipschitz and a step of 1.0 is safe.
pub const STEPS: usize = 500;
pub const LR: f64 = 1.0;
/// Steps of the linear probe: many classes with few examples each need longer to fit.
pub const PROBE_STEPS: usize = 1500;

/// Weights `[classes, dim + 1]` (the last column is the bias).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifier {
    pub classes: usize,
    pub dim: usize,
    pub weights: Vec<f64>,
}

/// L2-normalised rows of `e` with a trailing 1 (the bias input), row-major `[rows.len(), dim + 1]`.
pub fn features(e: &Embeddings, rows: &[usize]) -> Vec<f32> {
    let x = e.gather(rows, true);
    let mut out = Vec::with_capacity(rows.len() * (e.dim + 1));
    for v in x.chunks(e.dim) {
        out.extend_from_slice(v);
        out.push(1.0);
    }
    out
}

impl LinearClassifier {
    fn logits(&self, x: &[f32]) -> Vec<f64> {
        let d = self.dim + 1;
        (0..self.classes)
            .map(|k| {
                self.weights[k * d..(k + 1) * d]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * *b as f64)
                    .sum()
            })
            .collect()
    }

    /// Trains on `x` (`[n, dim + 1]`, see [`features`]) with targets `y` in `0..classes`, `STEPS` steps.
    pub fn fit(x: &[f32], y: &[usize], dim: usize, classes: usize) -> Self {
        Self::fit_steps(x, y, dim, classes, STEPS)
    }

    pub fn fit_steps(x: &[f32], y: &[usize], dim: usize, classes: usize, steps: usize) -> Self {
        let d = dim + 1;
        let mut m = Self {
            classes,
            dim,
            weights: vec![0.0; classes * d],
        };
        if y.is_empty() {
            return m;
        }
        for _ in 0..steps {
            let grad = ordered_sum(y.len().div_ceil(1024), classes * d, |c| {
                let (xs, ys) = (
                    &x[c * 1024 * d..((c + 1) * 1024 * d).min(x.len())],
                    &y[c * 1024..((c + 1) * 1024).min(y.len())],
                );
                let mut g = vec![0.0f64; classes * d];
                for (x, &t) in xs.chunks(d).zip(ys) {
                    let z = m.logits(x);
                    let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let ez: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
                    let s: f64 = ez.iter().sum();
                    for k in 0..classes {
                        let coef = ez[k] / s - if k == t { 1.0 } else { 0.0 };
                        for (gi, xi) in g[k * d..(k + 1) * d].iter_mut().zip(x) {
                            *gi += coef * *xi as f64;
                        }
                    }
                }
                g
            });
            let scale = LR / y.len() as f64;
            m.weights
                .iter_mut()
                .zip(&grad)
                .for_each(|(wi, gi)| *wi -= scale * gi);
        }
        m
    }

    /// Arg-max class (ties to the lower index).
    pub fn predict(&self, x: &[f32]) -> usize {
        let z = self.logits(x);
        (0..self.classes)
            .max_by(|&a, &b| z[a].total_cmp(&z[b]).then(b.cmp(&a)))
            .unwrap_or(0)
    }

    /// Share of rows of `x` predicted as their target.
    pub fn accuracy(&self, x: &[f32], y: &[usize]) -> f64 {
        if y.is_empty() {
            return f64::NAN;
        }
        let d = self.dim + 1;
        let correct = x
            .chunks(d)
            .zip(y)
            .filter(|(x, &t)| self.predict(x) == t)
            .count();
        correct as f64 / y.len() as f64
    }
}

/// Standardises each feature column (not the bias) with the train rows' mean and standard deviation, then
/// scales by 1/√dim so a row's squared norm is about 1 and a step of `LR` stays stable. Self-supervised
/// features share a large common direction (cosine ≈ 0.85 between unrelated images in small runs); without
/// this the classifier spends its steps on it and under-fits even the train rows.
pub fn standardise(train: &mut [f32], test: &mut [f32], dim: usize) {
    let d = dim + 1;
    let n = (train.len() / d).max(1) as f64;
    let scale = 1.0 / (dim.max(1) as f64).sqrt();
    for j in 0..dim {
        let mean = train.chunks(d).map(|r| r[j] as f64).sum::<f64>() / n;
        let var = train
            .chunks(d)
            .map(|r| (r[j] as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = scale / (var.sqrt() + 1e-6);
        for r in train.chunks_mut(d).chain(test.chunks_mut(d)) {
            r[j] = ((r[j] as f64 - mean) * inv) as f32;
        }
    }
}

/// Linear probe result: a label classifier trained on `train` rows, scored on `test` rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbeResult {
    pub accuracy: f64,
    /// 95% Wilson interval of `accuracy` over the `n_test` test rows.
    pub accuracy_lo: f64,
    pub accuracy_hi: f64,
    pub train_accuracy: f64,
    /// Share of the most frequent label among test rows.
    pub chance: f64,
    pub n_classes: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// Test rows whose label never occurs in train: always counted wrong.
    pub n_unseen: usize,
    /// Each labelled test row and the label the classifier gave it, in test order.
    pub predictions: Vec<(usize, String)>,
}

/// Linear probe on frozen embeddings: labelled `train` rows fit the classifier on standardised
/// L2-normalised features (see [`standardise`]), labelled `test` rows score it.
pub fn linear_probe(e: &Embeddings, train: &[usize], test: &[usize]) -> Result<LinearProbeResult> {
    let labelled = |rows: &[usize]| -> Vec<usize> {
        rows.iter()
            .copied()
            .filter(|&r| e.labels[r].is_some())
            .collect()
    };
    let (train, test) = (labelled(train), labelled(test));
    let classes: BTreeMap<&str, usize> = {
        let set: std::collections::BTreeSet<&str> = train
            .iter()
            .filter_map(|&r| e.labels[r].as_deref())
            .collect();
        set.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
    };
    if classes.len() < 2 {
        return Err(Error::Invalid(format!(
            "linear probe: the train rows have {} distinct label(s); needs at least two",
            classes.len()
        )));
    }
    if test.is_empty() {
        return Err(Error::Invalid(
            "linear probe: no labelled test rows".to_string(),
        ));
    }
    let c = classes.len();
    let ytr: Vec<usize> = train
        .iter()
        .map(|&r| classes[e.labels[r].as_deref().unwrap_or_default()])
        .collect();
    let mut xtr = features(e, &train);
    let mut xte = features(e, &test);
    standardise(&mut xtr, &mut xte, e.dim);
    let model = LinearClassifier::fit_steps(&xtr, &ytr, e.dim, c, PROBE_STEPS);
    // An unseen test label gets class index `c`, which no prediction can equal.
    let yte: Vec<usize> = test
        .iter()
        .map(|&r| {
            classes
                .get(e.labels[r].as_deref().unwrap_or_default())
                .copied()
                .unwrap_or(c)
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &r in &test {
        *counts
            .entry(e.labels[r].as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    let names: Vec<&str> = classes.keys().copied().collect();
    let predicted: Vec<usize> = xte.chunks(e.dim + 1).map(|x| model.predict(x)).collect();
    let correct = predicted.iter().zip(&yte).filter(|(p, t)| p == t).count();
    let accuracy = correct as f64 / test.len() as f64;
    let (accuracy_lo, accuracy_hi) = wilson_interval(correct, test.len());
    Ok(LinearProbeResult {
        accuracy,
        accuracy_lo,
        accuracy_hi,
        train_accuracy: model.accuracy(&xtr, &ytr),
        chance: counts.values().copied().max().unwrap_or(0) as f64 / test.len() as f64,
        n_classes: c,
        n_train: train.len(),
        n_test: test.len(),
        n_unseen: yte.iter().filter(|&&t| t == c).count(),
        predictions: test
            .iter()
            .zip(&predicted)
            .map(|(&r, &p)| (r, names[p].to_string()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    /// Three labels on three orthogonal directions with a small seeded wobble: linearly separable.
    fn clusters(n: usize) -> Embeddings {
        let rows: Vec<_> = (0..n)
            .map(|i| {
                let c = i % 3;
                let mut v = vec![0.05 * ((i * 7 % 11) as f32 / 11.0 - 0.5); 4];
                v[c] += 1.0;
                row(i, &format!("im{i}"), Some(["a", "b", "c"][c]), None, v)
            })
            .collect();
        from_rows(&rows).unwrap()
    }

    #[test]
    fn separable_labels_are_probed_exactly() {
        let e = clusters(60);
        let train: Vec<usize> = (0..45).collect();
        let test: Vec<usize> = (45..60).collect();
        let r = linear_probe(&e, &train, &test).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.train_accuracy, 1.0);
        assert_eq!(
            (r.n_classes, r.n_train, r.n_test, r.n_unseen),
            (3, 45, 15, 0)
        );
        assert!((r.chance - 5.0 / 15.0).abs() < 1e-12);
        assert_eq!((r.accuracy_lo, r.accuracy_hi), wilson_interval(15, 15));
        assert_eq!(r.predictions.len(), 15);
        assert!(r
            .predictions
            .iter()
            .all(|(row, p)| e.labels[*row].as_deref() == Some(p.as_str())));
        assert!(r.accuracy_lo > 0.75 && r.accuracy_lo < 0.85, "{r:?}");
    }

    #[test]
    fn standardise_centres_and_scales_train_columns_only_by_train_statistics() {
        // dim 2 + bias; train column 0 = 1, 3 (mean 2, sd 1); column 1 constant 5
        let mut tr = vec![1.0, 5.0, 1.0, 3.0, 5.0, 1.0];
        let mut te = vec![2.0, 7.0, 1.0];
        standardise(&mut tr, &mut te, 2);
        let s = 1.0 / 2f32.sqrt();
        assert!(
            (tr[0] + s).abs() < 1e-5 && (tr[3] - s).abs() < 1e-5,
            "{tr:?}"
        );
        assert_eq!((tr[2], tr[5], te[2]), (1.0, 1.0, 1.0), "bias untouched");
        assert!(te[0].abs() < 1e-6, "test row at the train mean → 0");
        assert!(
            tr[1].abs() < 1e-6 && te[1] > 1e5,
            "constant column: centred, not divided by 0"
        );
    }

    #[test]
    fn a_shared_direction_does_not_stop_the_probe_fitting_many_classes() {
        // 40 classes × 3 rows: a common vector of norm 10 plus a small class-specific one-hot, the shape of
        // small self-supervised features; the probe must fit its train rows.
        let rows: Vec<_> = (0..120)
            .map(|i| {
                let c = i % 40;
                let mut v = vec![10.0f32; 48];
                v[c] += 0.3 + 0.01 * (i / 40) as f32;
                row(i, &format!("im{i}"), Some(&format!("c{c}")), None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let all: Vec<usize> = (0..120).collect();
        let r = linear_probe(&e, &all, &all).unwrap();
        assert!(r.train_accuracy > 0.95, "{r:?}");
    }

    #[test]
    fn unseen_test_labels_count_wrong_and_one_label_is_an_error() {
        let e = clusters(60);
        // train only on labels a and b (rows i % 3 != 2); test on everything: the c rows are unseen
        let train: Vec<usize> = (0..45).filter(|i| i % 3 != 2).collect();
        let test: Vec<usize> = (45..60).collect();
        let r = linear_probe(&e, &train, &test).unwrap();
        assert_eq!(r.n_unseen, 5);
        assert!((r.accuracy - 10.0 / 15.0).abs() < 1e-12, "{r:?}");
        let only_a: Vec<usize> = (0..45).filter(|i| i % 3 == 0).collect();
        let err = linear_probe(&e, &only_a, &test).unwrap_err().to_string();
        assert!(err.contains("1 distinct label"), "{err}");
    }
}
