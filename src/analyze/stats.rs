//! Small shared statistics: the Mann–Whitney AUROC with ties counted ½,
//! percentile intervals (numpy's default linear interpolation) and the Wilson interval of an accuracy.

/// AUROC = P(pos > neg) + ½ P(pos = neg) over all (pos, neg) pairs, by sorting (Mann–Whitney U / n⁺n⁻).
/// `None` when either side is empty.
pub fn auroc(pos: &[f32], neg: &[f32]) -> Option<f64> {
    let w_pos = vec![1.0; pos.len()];
    let w_neg = vec![1.0; neg.len()];
    weighted_auroc(pos, &w_pos, neg, &w_neg)
}

/// AUROC where each value carries a weight (bootstrap multiplicities): `Σ w⁺w⁻([p>n] + ½[p=n]) / Σw⁺ Σw⁻`.
pub fn weighted_auroc(pos: &[f32], w_pos: &[f64], neg: &[f32], w_neg: &[f64]) -> Option<f64> {
    let mut p: Vec<(f32, f64)> = pos
        .iter()
        .copied()
        .zip(w_pos.iter().copied())
        .filter(|x| x.1 > 0.0)
        .collect();
    let mut n: Vec<(f32, f64)> = neg
        .iter()
        .copied()
        .zip(w_neg.iter().copied())
        .filter(|x| x.1 > 0.0)
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    n.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (pv, pw): (Vec<f32>, Vec<f64>) = p.into_iter().unzip();
    let (nv, nw): (Vec<f32>, Vec<f64>) = n.into_iter().unzip();
    weighted_auroc_sorted(&pv, &pw, &nv, &nw)
}

/// [`weighted_auroc`] on values already sorted ascending (weights may be 0): the bootstrap sorts each kind
/// of pair once and only reweighs it per resample, instead of sorting 10⁵ pairs a thousand times.
pub fn weighted_auroc_sorted(p: &[f32], wp: &[f64], n: &[f32], wn: &[f64]) -> Option<f64> {
    let total_p: f64 = wp.iter().sum();
    let total_n: f64 = wn.iter().sum();
    if total_p <= 0.0 || total_n <= 0.0 {
        return None;
    }
    // Two pointers over both sorted lists: weight of negatives strictly below and equal to each positive.
    let (mut below, mut j) = (0.0f64, 0usize);
    let mut acc = 0.0f64;
    let mut i = 0;
    while i < p.len() {
        let v = p[i];
        while j < n.len() && n[j] < v {
            below += wn[j];
            j += 1;
        }
        let mut k = j;
        let mut equal = 0.0;
        while k < n.len() && n[k] == v {
            equal += wn[k];
            k += 1;
        }
        while i < p.len() && p[i] == v {
            acc += wp[i] * (below + 0.5 * equal);
            i += 1;
        }
    }
    Some(acc / (total_p * total_n))
}

/// The q-th percentile (0–100) of `values` with numpy's default linear interpolation; NaNs are dropped.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// z of the two-sided 95% normal interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// 95% Wilson score interval of a proportion `correct / n` (Wilson 1927; Brown, Cai & DasGupta 2001
/// recommend it over the normal interval for small n and accuracies near 0 or 1). `(NaN, NaN)` for n = 0.
pub fn wilson_interval(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (k, n) = (correct as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Share of the most frequent value among `values`: the accuracy of always guessing the majority class.
pub fn majority_share<T: Ord>(values: impl IntoIterator<Item = T>) -> f64 {
    let mut counts = std::collections::BTreeMap::new();
    let mut n = 0usize;
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    counts.values().copied().max().unwrap_or(0) as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // sklearn-free reference by brute force: mean over all pairs of [p>n] + 0.5[p==n].
    #[test]
    fn auroc_counts_ties_as_half() {
        let pos = [0.5f32, 0.7, 0.7, 0.1];
        let neg = [0.7f32, 0.2, 0.5];
        let mut brute = 0.0f64;
        for p in pos {
            for n in neg {
                brute += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        brute /= 12.0;
        // by hand: 0.5 → 1 + .5 = 1.5; 0.7 → .5+1+1 = 2.5 (twice); 0.1 → 0  ⇒ 6.5/12
        assert!((brute - 6.5 / 12.0).abs() < 1e-12);
        assert!((auroc(&pos, &neg).unwrap() - brute).abs() < 1e-12);
        assert_eq!(auroc(&[], &neg), None);
    }

    #[test]
    fn weighted_auroc_equals_duplicated_lists() {
        let pos = [0.3f32, 0.9];
        let neg = [0.3f32, 0.5];
        let w = weighted_auroc(&pos, &[2.0, 1.0], &neg, &[1.0, 3.0]).unwrap();
        let d = auroc(&[0.3, 0.3, 0.9], &[0.3, 0.5, 0.5, 0.5]).unwrap();
        assert!((w - d).abs() < 1e-12);
    }

    // numpy: np.percentile([1,2,3,4,10], [2.5, 97.5]) -> [1.1, 9.4]
    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [4.0, 1.0, 10.0, 3.0, 2.0];
        assert!((percentile(&v, 2.5) - 1.1).abs() < 1e-12);
        assert!((percentile(&v, 97.5) - 9.4).abs() < 1e-12);
    }

    // Wilson's closed form evaluated in Python: p = 7/20, z = 1.959963984540054,
    // c = (p + z²/2n)/(1 + z²/n), h = z/(1 + z²/n)·√(p(1−p)/n + z²/4n²) → (c − h, c + h) = (0.181192, 0.567146)
    #[test]
    fn wilson_interval_matches_the_closed_form() {
        let (lo, hi) = wilson_interval(7, 20);
        assert!(
            (lo - 0.181_192).abs() < 1e-5 && (hi - 0.567_146).abs() < 1e-5,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson_interval(20, 20);
        assert!(hi == 1.0 && lo > 0.8 && lo < 0.85, "{lo}");
        assert!(wilson_interval(0, 0).0.is_nan());
    }

    #[test]
    fn majority_share_is_the_largest_class_share() {
        assert_eq!(majority_share(["a", "b", "a", "c"]), 0.5);
        assert!(majority_share(Vec::<u8>::new()).is_nan());
    }
}
