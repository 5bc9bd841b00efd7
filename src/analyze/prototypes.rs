//! SwAV prototype usage: how many of the K prototypes the argmax codes actually use. A collapsed SwAV run
//! puts every crop on one or a few prototypes (entropy → 0, perplexity/K → 1/K).
use crate::analyze::embeddings::Embeddings;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeResult {
    /// Crops per prototype 0..K.
    pub histogram: Vec<u64>,
    /// Shannon entropy of the usage distribution, nats.
    pub entropy: f64,
    /// exp(entropy) / K: 1 = uniform use, 1/K = one prototype.
    pub perplexity_ratio: f64,
    /// Prototypes no crop uses.
    pub dead: usize,
    pub k: usize,
}

/// Usage of rows `rows`; `k` = number of prototypes (None: max code + 1).
pub fn prototypes(
    e: &Embeddings,
    rows: &[usize],
    k: Option<usize>,
    name: &str,
) -> Result<PrototypeResult> {
    let mut codes = Vec::with_capacity(rows.len());
    for &r in rows {
        match e.prototypes[r] {
            Some(c) if c >= 0 => codes.push(c as usize),
            Some(c) => {
                return Err(Error::Invalid(format!(
                    "prototypes `{name}`: column `prototype`: row id `{}` has negative code {c}",
                    e.ids[r]
                )))
            }
            None => {}
        }
    }
    if codes.is_empty() {
        return Err(Error::Invalid(format!(
            "prototypes `{name}`: column `prototype` is null in every row"
        )));
    }
    let max = codes.iter().copied().max().unwrap_or(0);
    let k = k.unwrap_or(max + 1);
    if max >= k {
        return Err(Error::Invalid(format!(
            "prototypes `{name}`: column `prototype` has code {max} ≥ K = {k}"
        )));
    }
    let mut histogram = vec![0u64; k];
    for c in &codes {
        histogram[*c] += 1;
    }
    let n = codes.len() as f64;
    let entropy: f64 = histogram
        .iter()
        .filter(|&&h| h > 0)
        .map(|&h| {
            let p = h as f64 / n;
            -p * p.ln()
        })
        .sum();
    Ok(PrototypeResult {
        dead: histogram.iter().filter(|&&h| h == 0).count(),
        perplexity_ratio: entropy.exp() / k as f64,
        entropy,
        histogram,
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    // Codes [0,0,1,3] with K=4: p = (.5,.25,0,.25), H = -(.5 ln .5 + 2·.25 ln .25) = 1.5 ln 2, dead = 1.
    #[test]
    fn usage_by_hand() {
        let rows: Vec<_> = [0, 0, 1, 3]
            .iter()
            .enumerate()
            .map(|(i, &c)| row(i, "a", None, Some(c), vec![1.0]))
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = prototypes(&e, &[0, 1, 2, 3], None, "t").unwrap();
        assert_eq!(r.histogram, vec![2, 1, 0, 1]);
        assert!((r.entropy - 1.5 * 2f64.ln()).abs() < 1e-12);
        assert!((r.perplexity_ratio - (1.5 * 2f64.ln()).exp() / 4.0).abs() < 1e-12);
        assert_eq!(r.dead, 1);
        let r8 = prototypes(&e, &[0, 1, 2, 3], Some(8), "t").unwrap();
        assert_eq!(r8.dead, 5);
        assert!(prototypes(&e, &[0, 1, 2, 3], Some(3), "t").is_err());
    }
}
