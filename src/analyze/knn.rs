//! Weighted kNN accuracy on frozen embeddings (Wu et al. 2018, as in DINO's eval_knn: k = 20, τ = 0.07):
//! each neighbour votes for its label with weight exp(cos/τ); the label with the largest sum wins.
//!
//! Two protocols: when the `split` column has both `train` and `test` rows, test rows query the train
//! rows; otherwise leave-one-image-out: every labelled row queries all labelled rows of *other* images
//! (crops of one image would otherwise vote for each other). Above `MAX_QUERIES` queries a seeded sample.
use std::collections::BTreeMap;

use tch::Kind;

use crate::analyze::blocks;
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embeddings::Embeddings;
use crate::analyze::stats::{majority_share, wilson_interval};
use crate::error::{Error, Result};

/// Neighbours (DINO eval_knn.py default k = 20).
pub const K: usize = 20;
/// Temperature (DINO eval_knn.py default T = 0.07).
pub const TAU: f64 = 0.07;
/// Queries up to which every row is queried; above, a seeded sample of this many.
pub const MAX_QUERIES: usize = 20_000;
const STREAM_QUERIES: u64 = 21;

#[derive(Debug, Clone, PartialEq)]
pub struct KnnResult {
    pub k: usize,
    pub accuracy: f64,
    /// 95% Wilson interval of `accuracy` over the `n_queries` queries.
    pub accuracy_lo: f64,
    pub accuracy_hi: f64,
    /// Share of the most frequent label among the queries: the accuracy of always guessing it.
    pub chance: f64,
    pub n_queries: usize,
    pub n_bank: usize,
    /// `split` or `leave-one-image-out`.
    pub protocol: &'static str,
    pub sampled: bool,
    /// Each query's row of the embeddings and the label it was given (the paired comparison of two models
    /// on the same queries reads these).
    pub predictions: Vec<(usize, String)>,
}

pub fn knn(e: &Embeddings, rows: &[usize], k: usize, seed: u64, name: &str) -> Result<KnnResult> {
    let labelled: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&r| e.labels[r].is_some())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = labelled
        .iter()
        .filter_map(|&r| e.labels[r].as_deref())
        .collect();
    if distinct.len() < 2 {
        return Err(Error::Invalid(format!(
            "knn `{name}`: column `label` has {} distinct non-null value(s); needs at least two",
            distinct.len()
        )));
    }
    let is = |r: usize, s: &str| e.splits[r].as_deref() == Some(s);
    let has_split =
        labelled.iter().any(|&r| is(r, "train")) && labelled.iter().any(|&r| is(r, "test"));
    let (bank_rows, query_pos, protocol): (Vec<usize>, Vec<usize>, &'static str) = if has_split {
        let bank: Vec<usize> = labelled
            .iter()
            .copied()
            .filter(|&r| !is(r, "test"))
            .collect();
        let tests: Vec<usize> = labelled
            .iter()
            .copied()
            .filter(|&r| is(r, "test"))
            .collect();
        // Queries go into the matrix after the bank; their positions index the combined matrix.
        let nb = bank.len();
        let all: Vec<usize> = bank.iter().chain(&tests).copied().collect();
        (all, (nb..nb + tests.len()).collect(), "split")
    } else {
        let n = labelled.len();
        (labelled.clone(), (0..n).collect(), "leave-one-image-out")
    };
    let n_bank_only = if has_split {
        bank_rows.len() - query_pos.len()
    } else {
        bank_rows.len()
    };
    let sampled = query_pos.len() > MAX_QUERIES;
    let queries: Vec<usize> = if sampled {
        sample_without_replacement(query_pos.len(), MAX_QUERIES, seed, STREAM_QUERIES)
            .into_iter()
            .map(|i| query_pos[i])
            .collect()
    } else {
        query_pos.clone()
    };
    let x = e.gather(&bank_rows, true);
    let t = blocks::matrix(&x, bank_rows.len(), e.dim, Kind::Float)?;
    let img: Vec<&str> = bank_rows.iter().map(|&r| e.image_ids[r].as_str()).collect();
    let exclude = |q: usize, j: usize| j >= n_bank_only || (!has_split && img[q] == img[j]);
    let nn = blocks::top_k(&t, &queries, k, &exclude)?;
    let label = |p: usize| e.labels[bank_rows[p]].as_deref().unwrap_or_default();
    let mut correct = 0usize;
    let mut predictions = Vec::with_capacity(queries.len());
    for (&q, neigh) in queries.iter().zip(&nn) {
        let mut votes: BTreeMap<&str, f64> = BTreeMap::new();
        for &(j, s) in neigh {
            *votes.entry(label(j)).or_default() += (s as f64 / TAU).exp();
        }
        // Highest vote; ties broken by label name so the result is deterministic.
        let best = votes
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(l, _)| *l);
        if best == Some(label(q)) {
            correct += 1;
        }
        predictions.push((bank_rows[q], best.unwrap_or_default().to_string()));
    }
    let (accuracy_lo, accuracy_hi) = wilson_interval(correct, queries.len());
    Ok(KnnResult {
        k,
        accuracy: correct as f64 / queries.len().max(1) as f64,
        accuracy_lo,
        accuracy_hi,
        chance: majority_share(queries.iter().map(|&q| label(q))),
        n_queries: queries.len(),
        n_bank: n_bank_only,
        protocol,
        sampled,
        predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    // Two well-separated clusters (around +x and +y), one crop per image: every query's 20 nearest
    // other-image rows are its own cluster → accuracy 1. Swapping half the labels makes it 0.5-ish.
    #[test]
    fn separable_clusters_are_classified() {
        let rows: Vec<_> = (0..60)
            .map(|i| {
                let c = i % 2;
                let jitter = (i as f32 * 0.37).sin() * 0.1;
                let v = if c == 0 {
                    vec![1.0, jitter]
                } else {
                    vec![jitter, 1.0]
                };
                row(i, &format!("i{i}"), Some(["a", "b"][c]), None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = knn(&e, &(0..60).collect::<Vec<_>>(), K, 0, "t").unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert_eq!((r.n_queries, r.protocol), (60, "leave-one-image-out"));
        assert_eq!(r.chance, 0.5);
        assert_eq!((r.accuracy_lo, r.accuracy_hi), wilson_interval(60, 60));
        // one prediction per query, each the query's own cluster
        assert_eq!(r.predictions.len(), 60);
        assert!(r
            .predictions
            .iter()
            .all(|(row, p)| e.labels[*row].as_deref() == Some(p.as_str())));
        // Labels independent of the clusters: kNN cannot beat chance by much.
        let shuffled: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                r.label = Some(["a", "b"][(i / 2) % 2].to_string());
                r
            })
            .collect();
        let e = from_rows(&shuffled).unwrap();
        let r = knn(&e, &(0..60).collect::<Vec<_>>(), K, 0, "t").unwrap();
        assert!(r.accuracy < 0.8, "{}", r.accuracy);
    }

    // Leave-one-image-out: a crop's only neighbour from its own image is never used.
    #[test]
    fn same_image_neighbours_are_excluded() {
        let rows = vec![
            row(0, "i0", Some("a"), None, vec![1.0, 0.0]),
            row(1, "i0", Some("a"), None, vec![1.0, 0.01]),
            row(2, "i1", Some("b"), None, vec![0.9, 0.1]),
            row(3, "i2", Some("b"), None, vec![0.0, 1.0]),
        ];
        let e = from_rows(&rows).unwrap();
        let r = knn(&e, &[0, 1, 2, 3], 1, 0, "t").unwrap();
        // 0 → 2 (b, wrong), 1 → 2 (wrong), 2 → 1 or 0 (a, wrong), 3 → 2 (b, right)
        assert_eq!(r.accuracy, 0.25);
        let given: Vec<(usize, &str)> = r
            .predictions
            .iter()
            .map(|(q, p)| (*q, p.as_str()))
            .collect();
        assert_eq!(given[0], (0, "b"));
        assert_eq!(given[3], (3, "b"));
        assert_eq!(r.chance, 0.5);
        assert_eq!((r.accuracy_lo, r.accuracy_hi), wilson_interval(1, 4));
    }
}
