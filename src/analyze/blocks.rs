//! Blocked similarity with tch: query rows against a bank in blocks of rows, so memory is bounded by
//! `BLOCK_ELEMS` and never grows as N×N. The only place analyses touch tch matmul.
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Elements of one similarity block (50M f32 = 200 MB); chosen to stay well inside the 4 GiB budget.
pub const BLOCK_ELEMS: usize = 50_000_000;

/// A row-major `[n, dim]` matrix as a CPU tensor of `kind`.
pub fn matrix(data: &[f32], n: usize, dim: usize, kind: Kind) -> Result<Tensor> {
    Tensor::from_slice(data)
        .f_view([n as i64, dim as i64])
        .and_then(|t| t.f_to_kind(kind))
        .map_err(|e| Error::tch("building embedding matrix", e))
}

fn block_rows(bank: usize) -> usize {
    (BLOCK_ELEMS / bank.max(1)).clamp(1, 4096)
}

/// For each query row `q` (an index into `bank`), the top-`k` bank rows by dot product, excluding rows
/// `j` where `exclude(q, j)` (e.g. itself, same image). Returns (indices, similarities) per query, best
/// first; fewer than k when fewer rows qualify. Ties go to the lower index (stable sort).
pub fn top_k(
    bank: &Tensor,
    queries: &[usize],
    k: usize,
    exclude: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<Vec<Vec<(usize, f32)>>> {
    let _guard = tch::no_grad_guard();
    let n = bank.size()[0] as usize;
    let mut out = Vec::with_capacity(queries.len());
    let bt = bank.f_tr().map_err(|e| Error::tch("transposing bank", e))?;
    for chunk in queries.chunks(block_rows(n)) {
        let idx: Vec<i64> = chunk.iter().map(|&q| q as i64).collect();
        let q = bank
            .f_index_select(0, &Tensor::from_slice(&idx).to_device(Device::Cpu))
            .and_then(|q| q.f_matmul(&bt))
            .and_then(|s| s.f_to_kind(Kind::Float))
            .map_err(|e| Error::tch("similarity block", e))?; // [b, n]
        let sims: Vec<f32> = Vec::<f32>::try_from(&q.contiguous().view([-1]))
            .map_err(|e| Error::tch("reading block", e))?;
        let rows: Vec<Vec<(usize, f32)>> = {
            use rayon::prelude::*;
            chunk
                .par_iter()
                .enumerate()
                .map(|(r, &qi)| {
                    let row = &sims[r * n..(r + 1) * n];
                    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
                    for (j, &s) in row.iter().enumerate() {
                        if exclude(qi, j) {
                            continue;
                        }
                        if best.len() == k && best.last().is_some_and(|b| !(s > b.1)) {
                            continue;
                        }
                        let pos = best.partition_point(|b| b.1 >= s);
                        best.insert(pos, (j, s));
                        best.truncate(k);
                    }
                    best
                })
                .collect()
        };
        out.extend(rows);
    }
    Ok(out)
}

/// Σ over unordered pairs i<j of f(xᵢ·xⱼ), exact, in row blocks of the upper triangle (f64).
pub fn sum_over_pairs(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let xt = x.f_tr().map_err(|e| Error::tch("transposing", e))?;
    let rows = block_rows(n as usize) as i64;
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        // Only columns j > i: the block's columns from `start` on, with the lower part masked by triu(1).
        let s = x
            .f_narrow(0, start, len)
            .and_then(|q| q.f_matmul(&xt.narrow(1, start, n - start)))
            .map_err(|e| Error::tch("pair block", e))?;
        let v = f(&s).triu(1);
        total += v.sum(Kind::Double).double_value(&[]);
        start += len;
    }
    Ok(total)
}
