//! Alignment and uniformity (Wang & Isola 2020) on L2-normalised embeddings: alignment = mean ‖fᵢ − fⱼ‖²
//! over unordered pairs of rows with one image_id; uniformity = log mean exp(−2‖fᵢ − fⱼ‖²) over all
//! unordered pairs. Uniformity is exact (blocked matmul) up to `EXACT_ROWS` rows, else a seeded sample.
//! A row of norm 0 has no direction, so a group holding one has no alignment or uniformity: an error the
//! report turns into a note.
use std::collections::BTreeMap;

use rand::Rng;
use tch::Kind;

use crate::analyze::blocks;
use crate::analyze::embeddings::Embeddings;
use crate::analyze::reduce::ordered_sum;
use crate::error::{Error, Result};
use crate::rng::{seeded_rng, Mixing};

/// Rows up to which uniformity uses every pair (2·10⁸ pairs); a design choice.
pub const EXACT_ROWS: usize = 20_000;
/// Random pairs sampled above `EXACT_ROWS`.
pub const SAMPLE_PAIRS: usize = 2_000_000;
/// Wang & Isola's t = 2 in exp(−t‖fᵢ − fⱼ‖²).
pub const UNIFORMITY_T: f64 = 2.0;
const STREAM_PAIRS: u64 = 11;
/// Norms below this count as zero: `Embeddings::gather` divides by at least this when normalising.
const ZERO_NORM: f64 = 1e-12;

#[derive(Debug, Clone, PartialEq)]
pub struct UniformityResult {
    pub alignment: f64,
    pub uniformity: f64,
    pub n_align_pairs: usize,
    pub sampled: bool,
}

pub fn uniformity(
    e: &Embeddings,
    rows: &[usize],
    seed: u64,
    name: &str,
) -> Result<UniformityResult> {
    let n = rows.len();
    if n < 2 {
        return Err(Error::Invalid(format!(
            "uniformity `{name}`: needs at least 2 rows, got {n}"
        )));
    }
    let d = e.dim;
    // A row of norm 0 has no direction: normalising leaves it at the origin, where every distance to the
    // sphere is 1 and all-zero embeddings came out as uniformity −4, as if orthogonal. Undefined instead.
    let zero: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&r| {
            e.row(r)
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt()
                < ZERO_NORM
        })
        .collect();
    if let Some(&first) = zero.first() {
        return Err(Error::Invalid(format!(
            "uniformity `{name}`: undefined, {} of {n} rows have zero norm (first: id `{}`); they have no \
             direction to normalise",
            zero.len(),
            e.ids[first]
        )));
    }
    let x = e.gather(rows, true);
    let xr = |i: usize| &x[i * d..(i + 1) * d];
    let sq = |i: usize, j: usize| -> f64 {
        xr(i)
            .iter()
            .zip(xr(j))
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum()
    };
    // Ordered by image id so the f64 sum below adds in the same order on every run (a HashMap's
    // iteration order is randomised per process and changed the last bits of the alignment).
    let mut by_image: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, &r) in rows.iter().enumerate() {
        by_image.entry(e.image_ids[r].as_str()).or_default().push(i);
    }
    let (mut align_sum, mut align_n) = (0.0, 0usize);
    for mem in by_image.values() {
        for (a, &i) in mem.iter().enumerate() {
            for &j in &mem[a + 1..] {
                align_sum += sq(i, j);
                align_n += 1;
            }
        }
    }
    let alignment = if align_n > 0 {
        align_sum / align_n as f64
    } else {
        f64::NAN
    };
    let sampled = n > EXACT_ROWS;
    let mean_exp = if sampled {
        const CHUNK: usize = 10_000;
        let total = ordered_sum(SAMPLE_PAIRS.div_ceil(CHUNK), 1, |c| {
            let mut rng = seeded_rng(Mixing::Multiplicative, seed, STREAM_PAIRS, c as u64);
            let mut s = 0.0;
            for _ in 0..CHUNK {
                let i = rng.gen_range(0..n);
                let mut j = rng.gen_range(0..n - 1);
                if j >= i {
                    j += 1;
                }
                s += (-UNIFORMITY_T * sq(i, j)).exp();
            }
            vec![s]
        })[0];
        total / (SAMPLE_PAIRS.div_ceil(CHUNK) * CHUNK) as f64
    } else {
        let t = blocks::matrix(&x, n, d, Kind::Double)?;
        // ‖a − b‖² = 2 − 2 a·b on the unit sphere.
        let s = blocks::sum_over_pairs(&t, |dot| {
            (dot * (2.0 * UNIFORMITY_T) - 2.0 * UNIFORMITY_T).exp()
        })?;
        s / (n as f64 * (n as f64 - 1.0) / 2.0)
    };
    Ok(UniformityResult {
        alignment,
        uniformity: mean_exp.ln(),
        n_align_pairs: align_n,
        sampled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    // Y[i][j] = cos(0.9 i + 0.3 j), 6×3, image ids [0,0,1,1,1,2]; F = normalize(Y)
    // alignment = mean ||F_i - F_j||^2 over same-image pairs -> 0.20723022340045974
    // uniformity = torch.pdist(F).pow(2).mul(-2).exp().mean().log() -> -1.6792253756740305
    #[test]
    fn alignment_uniformity_match_torch() {
        let img = [0, 0, 1, 1, 1, 2];
        let rows: Vec<_> = (0..6)
            .map(|i| {
                row(
                    i,
                    &format!("i{}", img[i]),
                    None,
                    None,
                    (0..3)
                        .map(|j| (0.9 * i as f64 + 0.3 * j as f64).cos() as f32)
                        .collect(),
                )
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = uniformity(&e, &(0..6).collect::<Vec<_>>(), 0, "t").unwrap();
        assert!(
            (r.alignment - 0.20723022340045974).abs() < 1e-5,
            "{}",
            r.alignment
        );
        assert!(
            (r.uniformity - -1.6792253756740305).abs() < 1e-5,
            "{}",
            r.uniformity
        );
        assert_eq!(r.n_align_pairs, 4);
        assert!(!r.sampled);
    }

    // Issue 23: all-zero embeddings gave uniformity −4.0, as if every pair were orthogonal.
    #[test]
    fn zero_norm_rows_make_uniformity_undefined() {
        let rows: Vec<_> = (0..4)
            .map(|i| {
                let v = if i == 2 {
                    vec![0.0, 0.0]
                } else {
                    vec![1.0, i as f32]
                };
                row(i, "a", None, None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let err = uniformity(&e, &[0, 1, 2, 3], 0, "g")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("uniformity `g`: undefined")
                && err.contains("1 of 4 rows have zero norm")
                && err.contains("id `c2`"),
            "{err}"
        );
        assert!(uniformity(&e, &[0, 1, 3], 0, "g").is_ok());
    }

    // Identical embeddings: every distance 0 → alignment 0, uniformity log(1) = 0.
    #[test]
    fn identical_embeddings_are_not_uniform() {
        let rows: Vec<_> = (0..4)
            .map(|i| row(i, "a", None, None, vec![1.0, 2.0]))
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = uniformity(&e, &[0, 1, 2, 3], 0, "t").unwrap();
        // f32 storage of the normalised rows limits exactness to ~1e-7.
        assert!(
            r.alignment.abs() < 1e-6 && r.uniformity.abs() < 1e-6,
            "{r:?}"
        );
    }
}
