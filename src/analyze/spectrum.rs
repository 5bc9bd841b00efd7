//! Spectrum of an embedding matrix: RankMe (Garrido et al. 2023) from the singular values of the matrix as
//! given, and dimensional collapse (Jing et al. 2022: dead dimensions) plus α-ReQ (Agrawal et al. 2022:
//! power-law decay) from the eigenvalues of the covariance of the centred embeddings.
//!
//! With n ≥ d rows, streams rows into the d×d Gram matrix XᵀX in f64 (memory O(d²), any n); σ_k =
//! √eig(XᵀX) and λ = eig((XᵀX − n·μμᵀ)/n). With n < d it works in the n×n Gram matrices instead, which
//! have the same nonzero eigenvalues (XXᵀ and XcXcᵀ/n for the centred Xc), so 4 rows of 100,000 dimensions
//! take 4×4 matrices, not an 80 GB covariance. Either way min(n, d) values are reported: the others are
//! zero by arithmetic. The memory either needs is planned first and refused over `budget::MEMORY_BYTES`.
//! Eigen-decompositions by tch (`linalg_eigvalsh`, double precision).
//!
//! With n rows the centred covariance has rank at most min(n − 1, d) (centring removes one degree of
//! freedom): eigenvalues beyond that cap are zero by arithmetic, not by collapse, so dead dimensions are
//! counted only among the first `rank_cap`, and a group with n ≤ d carries a note saying so.
use tch::{Kind, Tensor};

use crate::analyze::budget;
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
    /// The min(n, d) singular values of the uncentred matrix, descending.
    pub singular_values: Vec<f64>,
    /// The min(n, d) largest eigenvalues of the centred covariance (/n), descending (the other d − n are
    /// zero when n < d).
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

/// Rows summed per chunk (the covariance's partial Gram matrices, the column means).
const CHUNK: usize = 4096;
/// Columns per chunk of the n×n Gram matrix.
const COL_CHUNK: usize = 256;
/// Partial sums `reduce::ordered_sum` holds at once: its 16-chunk wave and its total.
const PARTIALS_HELD: u64 = 17;

/// Which matrices the eigenvalues come from: d×d when n ≥ d, else n×n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Covariance,
    Gram,
}

/// Bytes the spectrum of `n` rows × `d` dims allocates by `method`, embeddings aside: the partial sums
/// `ordered_sum` holds, the sum, and the matrices tch decomposes (copied in, plus LAPACK's workspace).
fn plan_bytes(n: usize, d: usize, method: Method) -> u64 {
    let (n, d) = (n as u64, d as u64);
    let side = match method {
        Method::Covariance => d,
        Method::Gram => n,
    };
    let matrix = side
        .saturating_mul(side)
        .saturating_add(side)
        .saturating_mul(8);
    matrix
        .saturating_mul(PARTIALS_HELD + 4)
        // the centred column block a Gram chunk works on, per chunk in flight
        .saturating_add(match method {
            Method::Covariance => 0,
            Method::Gram => (PARTIALS_HELD - 1) * n * COL_CHUNK as u64 * 8,
        })
}

/// The method for `n` × `d`, or an error with the memory even the smaller one would need.
fn plan(n: usize, d: usize, name: &str) -> Result<Method> {
    let method = if n < d {
        Method::Gram
    } else {
        Method::Covariance
    };
    let side = n.min(d);
    budget::check_memory(
        &format!("spectrum `{name}`: {n} rows × {d} dims ({side}×{side} matrices)"),
        plan_bytes(n, d, method),
    )?;
    Ok(method)
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
    let method = plan(n, d, name)?;
    spectrum_by(e, rows, method)
}

fn spectrum_by(e: &Embeddings, rows: &[usize], method: Method) -> Result<SpectrumResult> {
    let (n, d) = (rows.len(), e.dim);
    let (mut singular_values, mut eigenvalues) = match method {
        Method::Covariance => covariance_spectra(e, rows)?,
        Method::Gram => gram_spectra(e, rows)?,
    };
    singular_values.truncate(n.min(d));
    eigenvalues.truncate(n.min(d));
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

/// (singular values, covariance eigenvalues) from the d×d matrices, each descending, d of each.
fn covariance_spectra(e: &Embeddings, rows: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, d) = (rows.len(), e.dim);
    // Gram (first d·d values) and column sums (last d) in f64, accumulated in row chunks in parallel and
    // added in chunk order, so the bits do not depend on the thread count.
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
    Ok((singular_values, eigvalsh_desc(&cov, d)?))
}

/// (singular values, covariance eigenvalues) from the n×n matrices, each descending, n of each: the
/// centred Gram XcXcᵀ is summed over column chunks of the centred rows (better conditioned than centring
/// XXᵀ afterwards), then XXᵀ = XcXcᵀ + a1ᵀ + 1aᵀ + ‖μ‖²11ᵀ with aᵢ = (xᵢ − μ)·μ.
fn gram_spectra(e: &Embeddings, rows: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, d) = (rows.len(), e.dim);
    let nf = n as f64;
    let mean: Vec<f64> = ordered_sum(n.div_ceil(CHUNK), d, |c| {
        let mut s = vec![0.0f64; d];
        for &r in &rows[c * CHUNK..((c + 1) * CHUNK).min(n)] {
            s.iter_mut()
                .zip(e.row(r))
                .for_each(|(s, v)| *s += *v as f64);
        }
        s
    })
    .into_iter()
    .map(|s| s / nf)
    .collect();
    // Lower triangle of XcXcᵀ, summed over column chunks in chunk order (thread-count independent).
    let mut centred = ordered_sum(d.div_ceil(COL_CHUNK), n * n, |c| {
        let cols = c * COL_CHUNK..((c + 1) * COL_CHUNK).min(d);
        let w = cols.len();
        let block: Vec<f64> = rows
            .iter()
            .flat_map(|&r| {
                e.row(r)[cols.clone()]
                    .iter()
                    .zip(&mean[cols.clone()])
                    .map(|(v, m)| *v as f64 - m)
            })
            .collect(); // [n, w]
        let mut g = vec![0.0f64; n * n];
        for i in 0..n {
            let bi = &block[i * w..(i + 1) * w];
            for j in 0..=i {
                let bj = &block[j * w..(j + 1) * w];
                g[i * n + j] = bi.iter().zip(bj).map(|(a, b)| a * b).sum();
            }
        }
        g
    });
    for i in 0..n {
        for j in 0..i {
            centred[j * n + i] = centred[i * n + j];
        }
    }
    let mu2: f64 = mean.iter().map(|m| m * m).sum();
    let a: Vec<f64> = rows
        .iter()
        .map(|&r| {
            e.row(r)
                .iter()
                .zip(&mean)
                .map(|(v, m)| (*v as f64 - m) * m)
                .sum()
        })
        .collect();
    let uncentred: Vec<f64> = (0..n * n)
        .map(|ij| centred[ij] + a[ij / n] + a[ij % n] + mu2)
        .collect();
    let singular_values: Vec<f64> = eigvalsh_desc(&uncentred, n)?
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    centred.iter_mut().for_each(|g| *g /= nf);
    Ok((singular_values, eigvalsh_desc(&centred, n)?))
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
        assert_eq!(r.n_dead, 0, "{:?}", &r.eigenvalues[40..]);
        let note = r.note().unwrap();
        assert!(
            note.contains("n = 45 ≤ d = 128") && note.contains("84 more"),
            "{note}"
        );
        assert_eq!(fixture_result().note(), None);
    }

    /// `n` × `d` pseudo-random rows (a fixed LCG) with a mean far from 0, as embeddings have.
    fn random(n: usize, d: usize) -> Embeddings {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let rows: Vec<_> = (0..n)
            .map(|i| {
                let v = (0..d)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (state >> 40) as f32 / (1u64 << 24) as f32 + 0.5
                    })
                    .collect();
                row(i, &format!("i{i}"), None, None, v)
            })
            .collect();
        from_rows(&rows).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    // Issue 23: the n×n Gram path gives what the d×d covariance gives when both fit.
    #[test]
    fn gram_and_covariance_paths_agree_when_rows_are_fewer_than_dims() {
        for (n, d) in [(6, 20), (2, 9), (30, 31)] {
            let e = random(n, d);
            let rows: Vec<usize> = (0..n).collect();
            let g = spectrum_by(&e, &rows, Method::Gram).unwrap();
            let c = spectrum_by(&e, &rows, Method::Covariance).unwrap();
            assert_eq!(g.singular_values.len(), n);
            assert_eq!(c.singular_values.len(), n);
            for (a, b) in g.singular_values.iter().zip(&c.singular_values) {
                assert!(close(*a, *b), "{n}×{d} σ {a} vs {b}");
            }
            // the last eigenvalue is centring's zero: compare the ranks within the cap
            for (a, b) in g.eigenvalues[..n - 1].iter().zip(&c.eigenvalues[..n - 1]) {
                assert!(close(*a, *b), "{n}×{d} λ {a} vs {b}");
            }
            assert!(close(g.rankme, c.rankme), "{} vs {}", g.rankme, c.rankme);
            assert_eq!((g.n_dead, g.rank_cap), (c.n_dead, c.rank_cap));
            assert!(
                close(g.alpha_req, c.alpha_req) || (g.alpha_req.is_nan() && c.alpha_req.is_nan()),
                "{} vs {}",
                g.alpha_req,
                c.alpha_req
            );
            assert_eq!(plan(n, d, "t").unwrap(), Method::Gram);
        }
        // Identical rows have every rank dead on either path.
        let rows: Vec<_> = (0..3)
            .map(|i| row(i, "x", None, None, vec![0.3; 10]))
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = spectrum(&e, &[0, 1, 2], "t").unwrap();
        assert_eq!((r.n_dead, r.rank_cap), (2, 2));
    }

    // Issue 23: 4 rows × 100,000 dims aborted allocating an 80 GB covariance.
    #[test]
    fn four_rows_of_100k_dims_do_not_allocate_a_covariance() {
        let e = random(4, 100_000);
        let r = spectrum(&e, &[0, 1, 2, 3], "t").unwrap();
        assert_eq!((r.n, r.dim, r.rank_cap), (4, 100_000, 3));
        assert_eq!(r.singular_values.len(), 4);
        assert_eq!(r.n_dead, 0);
        assert!(plan_bytes(4, 100_000, Method::Gram) < 1 << 20);
        // When even the smaller side is too big, the refusal gives the size needed.
        let err = plan(200_000, 100_000, "g").unwrap_err().to_string();
        assert!(
            err.contains("spectrum `g`")
                && err.contains("100000×100000")
                && err.contains("GiB")
                && err.contains("more than the 4.0 GiB"),
            "{err}"
        );
        assert_eq!(plan(100_000, 2048, "g").unwrap(), Method::Covariance);
    }

    fn fixture_result() -> SpectrumResult {
        spectrum(&fixture(), &(0..8).collect::<Vec<_>>(), "t").unwrap()
    }
}
