//! Invariance score (Goodfellow et al. 2009) as Purushwalkam & Gupta (2020) compute it in
//! measure_invariances.py: per unit, how often a set of transformed views of one object keeps the unit
//! firing (above its global top-(100−p)% threshold) relative to how often it fires at all.
//! Embeddings are used as given (unit activations, not normalised).
use std::collections::BTreeMap;

use crate::analyze::embeddings::Embeddings;
use crate::error::{Error, Result};

/// Top-k units averaged (Purushwalkam & Gupta report k = 10 and 25).
pub const TOP_KS: [usize; 2] = [10, 25];
/// measure_invariances.py caps the firing percentile at 95.
pub const MAX_PERCENTILE: f64 = 95.0;
/// measure_invariances.py's guard against 0/0 in L(i) = sum / (count + 1e-20).
pub const COUNT_EPS: f64 = 1e-20;
/// Sets with fewer rows than this are skipped (measure_invariances.py).
pub const MIN_SET: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct InvarianceResult {
    /// (k, score) for k in TOP_KS.
    pub scores: Vec<(usize, f64)>,
    /// p used for the thresholds.
    pub percentile: f64,
    pub n_labels: usize,
    pub n_sets: usize,
}

/// Invariance of rows `rows` of `e`; `set_id` groups views, `label` gives C.
pub fn invariance(e: &Embeddings, rows: &[usize], name: &str) -> Result<InvarianceResult> {
    let d = e.dim;
    let n = rows.len();
    let labels: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|&r| e.labels[r].as_deref())
        .collect();
    let c = labels.len();
    if c == 0 || n == 0 {
        return Err(Error::Invalid(format!(
            "invariance `{name}`: column `label` has no non-null value"
        )));
    }
    let p = (100.0 * (1.0 - 1.0 / c as f64)).min(MAX_PERCENTILE);
    let at = ((n as f64 * p / 100.0).floor() as usize).min(n - 1);
    // Per-unit thresholds and global firing rates.
    let mut t_hi = vec![0.0f32; d];
    let mut t_lo = vec![0.0f32; d];
    let mut g = vec![0.0f64; d];
    let mut col = vec![0.0f32; n];
    for i in 0..d {
        for (k, &r) in rows.iter().enumerate() {
            col[k] = e.row(r)[i];
        }
        let mut sorted = col.clone();
        sorted.sort_by(f32::total_cmp);
        t_hi[i] = sorted[at];
        t_lo[i] = sorted[n - 1 - at]; // index `at` of the column sorted descending
        g[i] = col.iter().filter(|&&h| h >= t_hi[i]).count() as f64 / n as f64;
    }
    let mut sets: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &r in rows {
        if let Some(s) = e.set_ids[r].as_deref() {
            sets.entry(s).or_default().push(r);
        }
    }
    // Ordered by label: the score averages over labels in this map's order, and a HashMap's
    // per-process random order changed the last bits (and once a printed decimal) between runs.
    let mut sum: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut count: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut n_sets = 0;
    for (sid, members) in &sets {
        if members.len() < MIN_SET {
            continue;
        }
        let Some(label) = members.iter().find_map(|&r| e.labels[r].as_deref()) else {
            return Err(Error::Invalid(format!(
                "invariance `{name}`: set_id `{sid}` has no row with a `label`"
            )));
        };
        n_sets += 1;
        let s = sum.entry(label).or_insert_with(|| vec![0.0; d]);
        let cnt = count.entry(label).or_insert_with(|| vec![0.0; d]);
        for i in 0..d {
            let n_pos = members.iter().filter(|&&r| e.row(r)[i] > t_hi[i]).count();
            let n_neg = members.iter().filter(|&&r| e.row(r)[i] < t_lo[i]).count();
            let m = n_pos.max(n_neg);
            if m > 0 {
                s[i] += m as f64 / members.len() as f64;
                cnt[i] += 1.0;
            }
        }
    }
    if n_sets == 0 {
        return Err(Error::Invalid(format!(
            "invariance `{name}`: no `set_id` has at least {MIN_SET} rows (found {} set ids)",
            sets.len()
        )));
    }
    // Average over the labels that own at least one qualifying set.
    let scores = TOP_KS
        .iter()
        .map(|&k| {
            let mut total = 0.0;
            for (label, s) in &sum {
                let cnt = &count[label];
                let mut sc: Vec<f64> = (0..d).map(|i| s[i] / (cnt[i] + COUNT_EPS) / g[i]).collect();
                sc.sort_by(|a, b| b.total_cmp(a));
                let kk = k.min(d);
                total += sc[..kk].iter().sum::<f64>() / kk as f64;
            }
            (k, total / sum.len() as f64 * (100.0 - p))
        })
        .collect();
    Ok(InvarianceResult {
        scores,
        percentile: p,
        n_labels: c,
        n_sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    // H[i][j] = sin(0.37 i (j+1) + j) (f32), 12×4; labels x×6, y×6; set_id s{i//3}; C=2 → p=50, at=6
    // t = sort(H,0)[at]; tm = sort(H,0)[::-1][at]; G = (H>=t).mean(0)
    // per set: npos=(H[set]>t).sum(0), nneg=(H[set]<tm).sum(0), n=max; where n>0: sum+=n/3, count+=1
    // score = sort(sum/(count+1e-20)/G)[::-1][:min(k,4)].mean(), averaged over labels, ×(100-p)
    // -> 64.58333333333333 for k=10 and k=25 (both take all 4 units)
    #[test]
    fn invariance_matches_reference_definition() {
        let rows: Vec<_> = (0..12)
            .map(|i| {
                let mut r = row(
                    i,
                    &format!("i{i}"),
                    Some(if i < 6 { "x" } else { "y" }),
                    None,
                    (0..4)
                        .map(|j| (0.37 * i as f64 * (j + 1) as f64 + j as f64).sin() as f32)
                        .collect(),
                );
                r.set_id = Some(format!("s{}", i / 3));
                r
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = invariance(&e, &(0..12).collect::<Vec<_>>(), "t").unwrap();
        assert_eq!(r.percentile, 50.0);
        assert_eq!(r.n_sets, 4);
        assert_eq!(r.scores.len(), 2);
        for (k, s) in &r.scores {
            assert!((s - 64.58333333333333).abs() < 1e-9, "k={k}: {s}");
        }
    }

    // Thresholds use ≥ for G and > / < for n⁺/n⁻: with a constant column every row equals t, so G = 1
    // but no set row is strictly above or below → n = 0 → score 0.
    #[test]
    fn constant_unit_counts_as_firing_globally_but_never_in_a_set() {
        let rows: Vec<_> = (0..6)
            .map(|i| {
                let mut r = row(i, "a", Some(if i < 3 { "x" } else { "y" }), None, vec![0.5]);
                r.set_id = Some(format!("s{}", i / 3));
                r
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = invariance(&e, &(0..6).collect::<Vec<_>>(), "t").unwrap();
        assert_eq!(r.scores, vec![(10, 0.0), (25, 0.0)]);
    }

    #[test]
    fn no_qualifying_set_is_an_error() {
        let rows: Vec<_> = (0..4)
            .map(|i| row(i, "a", Some("x"), None, vec![i as f32]))
            .collect();
        let e = from_rows(&rows).unwrap();
        let err = invariance(&e, &[0, 1, 2, 3], "t").unwrap_err().to_string();
        assert!(err.contains("`set_id`"), "{err}");
    }
}
