//! SwAV prototype usage: how many of the K prototypes the argmax codes actually use. A collapsed SwAV run
//! puts every crop on one or a few prototypes (entropy → 0, perplexity/K → 1/K).
//!
//! K is the run's (column `n_prototypes`, written by `embed` from the run's configuration, or
//! `--num-prototypes`), so runs trained with one K are compared on one K whatever codes happened to be
//! used. Only when neither gives K is it the largest code + 1, and then codes above
//! [`MAX_INFERRED_K`] are refused: a stray value such as 2147483647 would otherwise define K.
//! Counts are kept per used code, so memory never depends on K.
use std::collections::BTreeMap;

use crate::analyze::embeddings::Embeddings;
use crate::error::{Error, Result};

/// Largest K inferred from the codes alone (SwAV uses K = 3000 on ImageNet, 30k for its largest runs;
/// Caron et al. 2020, appendix): a code above this with no stated K is an input error.
pub const MAX_INFERRED_K: usize = 65_536;

#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeResult {
    /// Crops per used prototype, (code, count) by code; every other code of 0..K is unused.
    pub used: Vec<(usize, u64)>,
    /// Shannon entropy of the usage distribution, nats.
    pub entropy: f64,
    /// exp(entropy) / K: 1 = uniform use, 1/K = one prototype.
    pub perplexity_ratio: f64,
    /// Prototypes no crop uses.
    pub dead: usize,
    pub k: usize,
    /// Where K came from: `option`, `column n_prototypes` or `largest code + 1`.
    pub k_source: &'static str,
    /// Rows with a code.
    pub n: usize,
}

/// Whether any of `rows` carries a prototype code (false for SimCLR runs and user files without codes:
/// no usage table then).
pub fn has_codes(e: &Embeddings, rows: &[usize]) -> bool {
    rows.iter().any(|&r| e.prototypes[r].is_some())
}

/// Usage of rows `rows`; `k` = number of prototypes from the user (None: the rows' `n_prototypes`, else
/// the largest code + 1).
pub fn prototypes(
    e: &Embeddings,
    rows: &[usize],
    k: Option<usize>,
    name: &str,
) -> Result<PrototypeResult> {
    let stated: std::collections::BTreeSet<i64> = rows
        .iter()
        .filter_map(|&r| e.n_prototypes.get(r).copied().flatten())
        .collect();
    let (k, k_source) = match (k, stated.len()) {
        (Some(k), _) => (Some(k), "option"),
        (None, 0) => (None, "largest code + 1"),
        (None, 1) => {
            let v = stated.first().copied().unwrap_or_default();
            if v < 1 {
                return Err(Error::Invalid(format!(
                    "prototypes `{name}`: column `n_prototypes` is {v}; K must be at least 1"
                )));
            }
            (Some(v as usize), "column n_prototypes")
        }
        (None, _) => {
            return Err(Error::Invalid(format!(
                "prototypes `{name}`: rows come from runs with different K ({}); group by file or pass --num-prototypes",
                stated.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let limit = k.unwrap_or(MAX_INFERRED_K);
    let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
    for &r in rows {
        let Some(c) = e.prototypes[r] else { continue };
        if c < 0 || c as usize >= limit {
            let why = match k {
                Some(k) => format!("outside 0..{k} (K from {k_source})"),
                None => format!(
                    "outside 0..{MAX_INFERRED_K}, and no K is stated (column `n_prototypes` or --num-prototypes)"
                ),
            };
            return Err(Error::Invalid(format!(
                "prototypes `{name}`: column `prototype`: row id `{}` has code {c}, {why}",
                e.ids[r]
            )));
        }
        *counts.entry(c as usize).or_default() += 1;
    }
    let n: u64 = counts.values().sum();
    if n == 0 {
        return Err(Error::Invalid(format!(
            "prototypes `{name}`: column `prototype` is null in every row"
        )));
    }
    let k = k.unwrap_or_else(|| counts.keys().next_back().map_or(1, |m| m + 1));
    let entropy: f64 = counts
        .values()
        .map(|&h| {
            let p = h as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    Ok(PrototypeResult {
        dead: k - counts.len(),
        perplexity_ratio: entropy.exp() / k as f64,
        entropy,
        used: counts.into_iter().collect(),
        k,
        k_source,
        n: n as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    fn codes(c: &[i32]) -> Embeddings {
        let rows: Vec<_> = c
            .iter()
            .enumerate()
            .map(|(i, &c)| row(i, "a", None, Some(c), vec![1.0]))
            .collect();
        from_rows(&rows).unwrap()
    }

    // Codes [0,0,1,3] with K=4: p = (.5,.25,0,.25), H = -(.5 ln .5 + 2·.25 ln .25) = 1.5 ln 2, dead = 1.
    #[test]
    fn usage_by_hand() {
        let e = codes(&[0, 0, 1, 3]);
        let r = prototypes(&e, &[0, 1, 2, 3], None, "t").unwrap();
        assert_eq!(r.used, vec![(0, 2), (1, 1), (3, 1)]);
        assert_eq!((r.k, r.k_source, r.n), (4, "largest code + 1", 4));
        assert!((r.entropy - 1.5 * 2f64.ln()).abs() < 1e-12);
        assert!((r.perplexity_ratio - (1.5 * 2f64.ln()).exp() / 4.0).abs() < 1e-12);
        assert_eq!(r.dead, 1);
        let r8 = prototypes(&e, &[0, 1, 2, 3], Some(8), "t").unwrap();
        assert_eq!(r8.dead, 5);
        assert!(prototypes(&e, &[0, 1, 2, 3], Some(3), "t").is_err());
    }

    // Issue 12: a run trained with K = 50 whose codes reach only 38 is measured against K = 50.
    #[test]
    fn k_comes_from_the_n_prototypes_column() {
        let mut e = codes(&[0, 5, 38, 38]);
        e.n_prototypes = vec![Some(50); 4];
        let r = prototypes(&e, &[0, 1, 2, 3], None, "t").unwrap();
        assert_eq!((r.k, r.k_source, r.dead), (50, "column n_prototypes", 47));
        e.n_prototypes[3] = Some(100);
        let err = prototypes(&e, &[0, 1, 2, 3], None, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("different K (50, 100)"), "{err}");
        assert_eq!(prototypes(&e, &[0, 1, 2, 3], Some(64), "t").unwrap().k, 64);
    }

    // Issue 13: one row with prototype = 2147483647 made `analyze` allocate 16 GiB and abort.
    #[test]
    fn huge_prototype_id_is_an_error_naming_the_row() {
        let e = codes(&[0, 1, i32::MAX]);
        let err = prototypes(&e, &[0, 1, 2], None, "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row id `c2`") && err.contains("2147483647"),
            "{err}"
        );
        let mut e = codes(&[0, 1, i32::MAX]);
        e.n_prototypes = vec![Some(3000); 3];
        let err = prototypes(&e, &[0, 1, 2], None, "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row id `c2`") && err.contains("0..3000"),
            "{err}"
        );
        // A huge stated K allocates nothing either: counts are per used code.
        e.n_prototypes = vec![Some(i32::MAX as i64 + 1); 3];
        let r = prototypes(&e, &[0, 1, 2], None, "t").unwrap();
        assert_eq!(r.dead, i32::MAX as usize + 1 - 3);
        let neg = codes(&[0, -1]);
        assert!(prototypes(&neg, &[0, 1], None, "t")
            .unwrap_err()
            .to_string()
            .contains("code -1"));
    }
}
