//! The gain of one model over another on the same test images, with a paired bootstrap interval.
//!
//! Two accuracies measured on the same queries are correlated: an image both models get right (or both get
//! wrong) says nothing about which is better. Resampling the *pairs* (model A right?, model B right?) keeps
//! that correlation, so the interval of the difference is far narrower than two independent Wilson
//! intervals laid side by side. This is how a trained network is read against the same network untrained.
use rand::Rng;

use crate::analyze::stats::percentile;
use crate::rng::{seeded_rng, Mixing};

/// Bootstrap resamples of the paired gain.
pub const RESAMPLES: usize = 10_000;
/// Random stream of the paired bootstrap.
const STREAM_PAIRED: u64 = 0x9a12;

/// Accuracy of `a` minus accuracy of `b` on the same queries, with its 95% percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedGain {
    pub gain: f64,
    pub lo: f64,
    pub hi: f64,
    /// Queries both were scored on.
    pub n: usize,
}

/// `hits[i] = (a right on query i, b right on query i)`; `None` without queries. Each resample draws
/// `n` queries with replacement (seeded by `seed`, so the interval is reproducible).
pub fn paired_gain(hits: &[(bool, bool)], resamples: usize, seed: u64) -> Option<PairedGain> {
    let n = hits.len();
    if n == 0 {
        return None;
    }
    // Only the discordant pairs move the difference: +1 when a alone is right, −1 when b alone is.
    let d: Vec<i64> = hits
        .iter()
        .map(|&(a, b)| i64::from(a) - i64::from(b))
        .collect();
    let gain = d.iter().sum::<i64>() as f64 / n as f64;
    let mut rng = seeded_rng(Mixing::Multiplicative, seed, STREAM_PAIRED, n as u64);
    let draws: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.gen_range(0..n)]).sum::<i64>() as f64 / n as f64)
        .collect();
    Some(PairedGain {
        gain,
        lo: percentile(&draws, 2.5),
        hi: percentile(&draws, 97.5),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_models_gain_nothing_and_the_interval_is_a_point() {
        let hits: Vec<_> = (0..50).map(|i| (i % 3 == 0, i % 3 == 0)).collect();
        let g = paired_gain(&hits, 1000, 1).unwrap();
        assert_eq!((g.gain, g.lo, g.hi, g.n), (0.0, 0.0, 0.0, 50));
    }

    #[test]
    fn the_gain_is_the_difference_of_accuracies_and_the_interval_holds_it() {
        // a right on 60 of 100, b on 50; 20 discordant pairs: a alone 15, b alone 5
        let mut hits = vec![(true, true); 45];
        hits.extend(vec![(true, false); 15]);
        hits.extend(vec![(false, true); 5]);
        hits.extend(vec![(false, false); 35]);
        let g = paired_gain(&hits, RESAMPLES, 7).unwrap();
        assert!((g.gain - 0.10).abs() < 1e-12, "{g:?}");
        assert!(g.lo < 0.10 && g.hi > 0.10, "{g:?}");
        // normal approximation of the paired difference: sd = sqrt((0.2 − 0.01) / 100) ≈ 0.0436
        assert!((g.lo - (0.10 - 1.96 * 0.0436)).abs() < 0.02, "{g:?}");
        assert!((g.hi - (0.10 + 1.96 * 0.0436)).abs() < 0.02, "{g:?}");
        // the same seed gives the same interval; the order of a and b flips the sign
        assert_eq!(paired_gain(&hits, RESAMPLES, 7), Some(g));
        let flipped: Vec<_> = hits.iter().map(|&(a, b)| (b, a)).collect();
        let f = paired_gain(&flipped, RESAMPLES, 7).unwrap();
        assert!((f.gain + 0.10).abs() < 1e-12);
    }

    #[test]
    fn pairing_narrows_the_interval_against_independent_ones() {
        // both right or both wrong on 85 of 100 queries, accuracies 0.55 and 0.50: unpaired, the difference
        // would have sd √(0.55·0.45/100 + 0.5·0.5/100) ≈ 0.0705, an interval 0.276 wide; paired, only the 15
        // discordant queries count: sd √((0.15 − 0.05²)/100) ≈ 0.0384, about 0.15 wide
        let mut hits = vec![(true, true); 45];
        hits.extend(vec![(true, false); 10]);
        hits.extend(vec![(false, true); 5]);
        hits.extend(vec![(false, false); 40]);
        let g = paired_gain(&hits, RESAMPLES, 3).unwrap();
        assert!(g.hi - g.lo > 0.12 && g.hi - g.lo < 0.18, "{g:?}");
        assert!(paired_gain(&[], 10, 0).is_none());
    }
}
