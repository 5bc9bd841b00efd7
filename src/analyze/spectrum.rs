//! Spectrum of an embedding matrix: RankMe (Garrido et al. 2023) from the singular values of the matrix as
//! given, and dimensional collapse (Jing et al. 2022: dead dimensions) plus α-ReQ (Agrawal et al. 2022:
//! power-law decay) from the eigenvalues of the covariance of the centred embeddings.
//!
//! Streams rows into the d×d Gram matrix XᵀX in f64 (memory O(d²), any N); σ_k = √eig(XᵀX) and
//! λ = eig((XᵀX − n·μμᵀ)/n), eigen-decompositions by tch (`linalg_eigvalsh`, double precision).
//!
//! With n rows the centred covariance has rank at most min(n − 1, d) (centring removes one degree of
//! freedom): eigenvalues beyond that cap are zero by arithmetic, not by collapse, so dead dimensions are
//! counted only among the first `rank_cap`, and a group with n ≤ d carries a note saying so.
use tch::{Kind, Tensor};

use crate::analyze::embeddings::Embeddings;
use crate::analyze::reduce::ordered_sum;
use crate::error::{Error, Result};

/// RankMe's ε added to each p_k (Garrido et al. 2023, eq. 1).
pub const RANKME_EPS: f64 = 1e-7;
/// A covariance eigenvalue below this fraction of the largest is dead (Jing et al. 2022 use a log-spectrum
/// cliff; shared/DESIGN.md fixes 1e-6·λ₁).
pub const DEAD_RATIO: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumResult {
    pub n: usize,
    pub dim: usize,
    /// min(n − 1, d): the largest rank the centred covariance can have; `n_dead` counts within it.
    pub rank_cap: usize,
    pub rankme: f64,
    pub alpha_req: f64,
    pub n_dead: usize,
    /// Singular values of the uncentred matrix, descending.
    pub singular_values: Vec<f64>,
    /// Eigenvalues of the centred covariance (/n), descending.
    pub eigenvalues: Vec<f64>,
}

impl SpectrumResult {
    /// A caution for the report when there are no more rows than dimensions, else None.
    pub fn note(&self) -> Option<String> {
        (self.n <= self.dim).then(|| {
            format!(
                "n = {} ≤ d = {}: the centred covariance has rank ≤ {}, so dead dimensions are counted among {} ranks only and {} more are zero by construction",
                self.n,
                self.dim,
                self.rank_cap,
                self.rank_cap,
                self.dim - self.rank_cap
            )
        })
    }
}

fn eigvalsh_desc(m: &[f64], d: usize) -> Result<Vec<f64>> {
    let t = Tensor::from_slice(m)
        .f_view([d as i64, d as i64])
        .and_then(|t| t.f_linalg_eigvalsh("L"))
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(|e| Error::tch("eigenvalues of the Gram matrix", e))?;
    let mut v = Vec::<f64>::try_from(&t).map_err(|e| Error::tch("reading eigenvalues", e))?;
    v.sort_by(|a, b| b.total_cmp(a));
    Ok(v)
}

/// RankMe from singular values: p_k = σ_k/Σσ + ε, exp(−Σ p_k log p_k).
pub fn rankme(singular_values: &[f64]) -> f64 {
    let total: f64 = singular_values.iter().sum();
    if total <= 0.0 {
        return f64::NAN;
    }
    let h: f64 = singular_values
        .iter()
        .map(|s| {
            let p = s / total + RANKME_EPS;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

/// (n_dead, α-ReQ) from covariance eigenvalues sorted descending.
pub fn dead_and_alpha(eig: &[f64]) -> (usize, f64) {
    let top = eig.first().copied().unwrap_or(0.0);
    let alive: Vec<f64> = eig
        .iter()
        .copied()
        .filter(|&l| l >= DEAD_RATIO * top && l > 0.0)
        .collect();
    let n_dead = eig.len() - alive.len();
    // α = −slope of least squares log λ_k = a − α log k, k = 1.. over the live ranks.
    if alive.len() < 2 {
        return (n_dead, f64::NAN);
    }
    let xs: Vec<f64> = (1..=alive.len()).map(|k| (k as f64).ln()).collect();
    let ys: Vec<f64> = alive.iter().map(|l| l.ln()).collect();
    let mx = xs.iter().sum::<f64>() / xs.len() as f64;
    let my = ys.iter().sum::<f64>() / ys.len() as f64;
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    (n_dead, -sxy / sxx)
}

/// Spectrum of rows `rows` of `e` (embeddings as given, not normalised).
pub fn spectrum(e: &Embeddings, rows: &[usize], name: &str) -> Result<SpectrumResult> {
    let d = e.dim;
    let n = rows.len();
    if n < 2 || d == 0 {
        return Err(Error::Invalid(format!(
            "spectrum `{name}`: needs at least 2 rows with embeddings, got {n}"
        )));
    }
    // Gram (first d·d values) and column sums (last d) in f64, accumulated in row chunks in parallel and
    // added in chunk order, so the bits do not depend on the thread count.
    const CHUNK: usize = 4096;
    let mut gram = ordered_sum(n.div_ceil(CHUNK), d * d + d, |c| {
        let mut gs = vec![0.0f64; d * d + d];
        let (g, s) = gs.split_at_mut(d * d);
        for &r in &rows[c * CHUNK..((c + 1) * CHUNK).min(n)] {
            let v = e.row(r);
            for a in 0..d {
                let va = v[a] as f64;
                s[a] += va;
                let ga = &mut g[a * d..(a + 1) * d];
                for b in 0..=a {
                    ga[b] += va * v[b] as f64;
                }
            }
        }
        gs
    });
    let sum = gram.split_off(d * d);
    let mut full = gram;
    for a in 0..d {
        for b in 0..a {
            full[b * d + a] = full[a * d + b];
        }
    }
    let singular_values: Vec<f64> = eigvalsh_desc(&full, d)?
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    let nf = n as f64;
    let cov: Vec<f64> = (0..d * d)
        .map(|ij| (full[ij] - sum[ij / d] * sum[ij % d] / nf) / nf)
        .collect();
    let eigenvalues: Vec<f64> = eigvalsh_desc(&cov, d)?;
    let rank_cap = (n - 1).min(d);
    let (n_dead, alpha_req) = dead_and_alpha(&eigenvalues[..rank_cap]);
    Ok(SpectrumResult {
        n,
        dim: d,
        rank_cap,
        rankme: rankme(&singular_values),
        alpha_req,
        n_dead,
        singular_values,
        eigenvalues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    fn fixture() -> Embeddings {
        let rows: Vec<_> = (0..8)
            .map(|i| {
                let (a, b, c) = (
                    ((i + 1) as f64).sin(),
                    (2.0 * i as f64).cos(),
                    i as f64 / 7.0,
                );
                let v = vec![a as f32, b as f32, c as f32, (2.0 * a - b + 0.5) as f32];
                row(i, &format!("i{i}"), None, None, v)
            })
            .collect();
        from_rows(&rows).unwrap()
    }

    // X[i] = [sin(i+1), cos(2i), i/7, 2 sin(i+1) - cos(2i) + 0.5] (f32), i = 0..8
    // s = torch.linalg.svdvals(torch.tensor(X, dtype=torch.float64)); p = s/s.sum() + 1e-7
    // rankme = exp(-(p*log p).sum()) -> 2.9219466465126938
    // lam = sort(eigvalsh(Xc.T@Xc/n))[::-1]; alive = lam[lam >= 1e-6*lam[0]] -> n_dead 1
    // alpha = -np.polyfit(log(1..), log(alive), 1)[0] -> 2.916494433665369
    #[test]
    fn spectrum_matches_torch_and_numpy() {
        let e = fixture();
        let r = spectrum(&e, &(0..8).collect::<Vec<_>>(), "t").unwrap();
        assert!((r.rankme - 2.9219466465126938).abs() < 1e-5, "{}", r.rankme);
        assert_eq!(r.n_dead, 1);
        assert!(
            (r.alpha_req - 2.916494433665369).abs() < 1e-4,
            "{}",
            r.alpha_req
        );
        assert!((r.eigenvalues[0] - 2.8118215866595033).abs() < 1e-5);
    }

    // Orthonormal rows: all d singular values equal 1 → p_k = 1/d + 1e-7 → RankMe ≈ d.
    #[test]
    fn orthogonal_embeddings_have_full_rankme() {
        let rows: Vec<_> = (0..4)
            .map(|i| {
                let mut v = vec![0.0; 4];
                v[i] = 1.0;
                row(i, "x", None, None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = spectrum(&e, &[0, 1, 2, 3], "t").unwrap();
        assert!((r.rankme - 4.0).abs() < 1e-4, "{}", r.rankme);
    }

    // Identical rows: one singular value, covariance all zero → every dimension dead, RankMe ≈ 1.
    #[test]
    fn identical_embeddings_collapse() {
        let rows: Vec<_> = (0..5)
            .map(|i| row(i, "x", None, None, vec![0.3, -0.2, 0.9]))
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = spectrum(&e, &[0, 1, 2, 3, 4], "t").unwrap();
        assert!((r.rankme - 1.0).abs() < 1e-3, "{}", r.rankme);
        assert_eq!(r.n_dead, 3);
        assert!(r.alpha_req.is_nan());
    }

    // Issue 12: 45 rows in 128 dimensions reported 84 = 128 − 44 dead dimensions, all of them the
    // arithmetic zeros beyond rank n − 1. Rows spread over every direction of their span have none.
    #[test]
    fn fewer_rows_than_dimensions_count_dead_dims_within_the_rank_cap() {
        let rows: Vec<_> = (0..45)
            .map(|i| {
                let v: Vec<f32> = (0..128)
                    .map(|j| {
                        (((i * 131 + j * 17) % 97) as f32 / 97.0 - 0.5)
                            + if j == i { 3.0 } else { 0.0 }
                    })
                    .collect();
                row(i, &format!("i{i}"), None, None, v)
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = spectrum(&e, &(0..45).collect::<Vec<_>>(), "t").unwrap();
        assert_eq!((r.n, r.dim, r.rank_cap), (45, 128, 44));
        assert_eq!(r.n_dead, 0, "{:?}", &r.eigenvalues[40..48]);
        let note = r.note().unwrap();
        assert!(
            note.contains("n = 45 ≤ d = 128") && note.contains("84 more"),
            "{note}"
        );
        assert_eq!(fixture_result().note(), None);
    }

    fn fixture_result() -> SpectrumResult {
        spectrum(&fixture(), &(0..8).collect::<Vec<_>>(), "t").unwrap()
    }
}
