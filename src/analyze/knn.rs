//! Weighted kNN accuracy on frozen embeddings (Wu et al. 2018, as in DINO's eval_knn: k = 20, τ = 0.07):
//! each neighbour votes for its label with weight exp(cos/τ); the label with the largest sum wins.
//!
//! Two protocols: when the `split` column gives both bank and query rows, the query rows are classified
//! against the bank; otherwise leave-one-image-out: every labelled row queries all labelled rows of *other*
//! images (crops of one image would otherwise vote for each other). Above `MAX_QUERIES` queries a seeded
//! sample.
//!
//! Split values, in any case and with surrounding spaces ignored: `train` rows are the bank; `test`, `val`,
//! `valid` and `validation` rows are the queries (held-out rows, whichever name the dataset gives them).
//! Any other value, or a null beside rows that have a split, is an error naming the values: such rows once
//! joined the bank silently (`Test`, `val`, null), so a held-out row could vote for itself.
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

/// Split values that make a row a query (any case, spaces around ignored); `train` makes it bank.
pub const QUERY_SPLITS: [&str; 4] = ["test", "val", "valid", "validation"];
pub const BANK_SPLIT: &str = "train";

/// For each of `labelled` rows, whether its split makes it a query (true) or bank (false); None when no
/// labelled row has a split (leave-one-image-out). An unknown value, or a null beside rows that have a
/// split, is an error naming the values and how many rows carry them.
fn split_roles(e: &Embeddings, labelled: &[usize], name: &str) -> Result<Option<Vec<bool>>> {
    if labelled.iter().all(|&r| e.splits[r].is_none()) {
        return Ok(None);
    }
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let roles: Vec<bool> = labelled
        .iter()
        .map(|&r| {
            let v = e.splits[r].as_deref().map(|v| v.trim().to_lowercase());
            match v.as_deref() {
                Some(BANK_SPLIT) => false,
                Some(v) if QUERY_SPLITS.contains(&v) => true,
                _ => {
                    let shown = e.splits[r]
                        .as_deref()
                        .map_or_else(|| "null".to_string(), |v| format!("`{v}`"));
                    *unknown.entry(shown).or_default() += 1;
                    false
                }
            }
        })
        .collect();
    if unknown.is_empty() {
        return Ok(Some(roles));
    }
    // A few values suffice to recognise the mistake; a column of ids must not make a megabyte message.
    let mut listed: Vec<String> = unknown
        .iter()
        .take(5)
        .map(|(v, k)| format!("{v} ({k} rows)"))
        .collect();
    if unknown.len() > 5 {
        listed.push(format!("{} more values", unknown.len() - 5));
    }
    Err(Error::Invalid(format!(
        "knn `{name}`: column `split` has {}; expected `{BANK_SPLIT}` (the bank) or {} (queries), any case, in every labelled row",
        listed.join(", "),
        QUERY_SPLITS.map(|s| format!("`{s}`")).join("/")
    )))
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
    let roles = split_roles(e, &labelled, name)?;
    let has_split = roles
        .as_ref()
        .is_some_and(|roles| roles.iter().any(|&q| !q) && roles.iter().any(|&q| q));
    let is_query = |i: usize| roles.as_ref().is_some_and(|roles| roles[i]);
    let (bank_rows, query_pos, protocol): (Vec<usize>, Vec<usize>, &'static str) = if has_split {
        let pick = |query: bool| -> Vec<usize> {
            (0..labelled.len())
                .filter(|&i| is_query(i) == query)
                .map(|i| labelled[i])
                .collect()
        };
        let (bank, tests) = (pick(false), pick(true));
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

    /// 40 rows in two clusters, one image each; `split[i]` per row.
    fn with_splits(split: impl Fn(usize) -> Option<&'static str>) -> Embeddings {
        let rows: Vec<_> = (0..40)
            .map(|i| {
                let c = i % 2;
                let v = if c == 0 {
                    vec![1.0, 0.1]
                } else {
                    vec![0.1, 1.0]
                };
                row(i, &format!("i{i}"), Some(["a", "b"][c]), None, v)
            })
            .collect();
        let mut e = from_rows(&rows).unwrap();
        e.splits = (0..40).map(|i| split(i).map(str::to_string)).collect();
        e
    }

    // Issue 23: split values other than exactly `test` (`Test`, `val`, null) silently joined the kNN bank.
    #[test]
    fn split_values_test_val_in_any_case_are_queries_and_others_are_refused() {
        let all: Vec<usize> = (0..40).collect();
        for held_out in ["test", "Test", " VAL ", "valid", "Validation"] {
            let e = with_splits(|i| Some(if i < 30 { "Train" } else { held_out }));
            let r = knn(&e, &all, 5, 0, "t").unwrap();
            assert_eq!(
                (r.protocol, r.n_bank, r.n_queries),
                ("split", 30, 10),
                "{held_out}"
            );
            assert!(r.predictions.iter().all(|(q, _)| *q >= 30));
        }
        // train, val and test together: both held-out sets are queries.
        let e = with_splits(|i| Some(["train", "train", "val", "test"][i % 4]));
        let r = knn(&e, &all, 5, 0, "t").unwrap();
        assert_eq!((r.n_bank, r.n_queries), (20, 20));
        // Unknown values and nulls beside a split are named, with their counts.
        let e = with_splits(|i| match i {
            0..=29 => Some("train"),
            30..=34 => Some("holdout"),
            _ => None,
        });
        let err = knn(&e, &all, 5, 0, "t").unwrap_err().to_string();
        assert!(
            err.contains("`holdout` (5 rows)") && err.contains("null (5 rows)"),
            "{err}"
        );
        // No split at all, or only one side of it: leave-one-image-out as before.
        for e in [with_splits(|_| None), with_splits(|_| Some("train"))] {
            let r = knn(&e, &all, 5, 0, "t").unwrap();
            assert_eq!((r.protocol, r.n_queries), ("leave-one-image-out", 40));
        }
    }

    // Above MAX_QUERIES queries, a seeded sample of MAX_QUERIES distinct rows against the whole bank; the
    // accuracy and its Wilson interval are over the sampled queries, and the result says `sampled`.
    #[test]
    fn above_max_queries_a_seeded_sample_is_scored() {
        let n = MAX_QUERIES + 10;
        let rows: Vec<_> = (0..n)
            .map(|i| {
                let c = i % 2;
                let along = (i as f32 * 0.001).sin() * 0.2;
                let v = if c == 0 {
                    vec![1.0, along]
                } else {
                    vec![along, 1.0]
                };
                // Every fifth row carries the other cluster's label, so accuracy is below 1.
                let label = ["a", "b"][if i % 5 == 0 { 1 - c } else { c }];
                row(i, &format!("i{i}"), Some(label), None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let all: Vec<usize> = (0..n).collect();
        let r = knn(&e, &all, K, 7, "t").unwrap();
        assert!(r.sampled);
        assert_eq!((r.n_queries, r.n_bank), (MAX_QUERIES, n));
        let queried: std::collections::BTreeSet<usize> =
            r.predictions.iter().map(|(q, _)| *q).collect();
        assert_eq!(queried.len(), MAX_QUERIES);
        let correct = r
            .predictions
            .iter()
            .filter(|(q, p)| e.labels[*q].as_deref() == Some(p.as_str()))
            .count();
        assert!(correct < MAX_QUERIES * 9 / 10, "{correct}");
        assert_eq!(r.accuracy, correct as f64 / MAX_QUERIES as f64);
        assert_eq!(
            (r.accuracy_lo, r.accuracy_hi),
            wilson_interval(correct, MAX_QUERIES)
        );
        assert_eq!(knn(&e, &all, K, 7, "t").unwrap(), r);
        let other: std::collections::BTreeSet<usize> = knn(&e, &all, K, 8, "t")
            .unwrap()
            .predictions
            .iter()
            .map(|(q, _)| *q)
            .collect();
        assert_ne!(other, queried);
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
