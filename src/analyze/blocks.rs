//! Blocked similarity: query rows against a bank in tiles, so memory is bounded by a tile and never grows
//! as N×N. The only place analyses touch tch matmul; top-k on low-dimensional banks computes its dot
//! products in plain Rust instead (see `FUSED_MAX_DIM`).
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

/// Elements of one top-k tile of the tch path (2M f32 = 8 MiB): small enough that the tile the matmul writes
/// is still in the last-level cache when the scan reads it (32 MiB on the benchmark machine), large enough
/// that a matmul call does enough work to pay for its OpenMP start and barrier.
pub const TILE_ELEMS: usize = 1 << 21;
/// Query rows per tile when the bank is too large for whole rows (a tile is then 512 × 4096).
const TILE_QUERY_ROWS: usize = 512;
/// Dimensions up to which top-k computes dot products in Rust, fused with the scan and parallel over
/// queries with rayon. Measured at 10^6 × 2 (benches/analyze.rs knn): a matmul of K = 2 is too little work
/// per call, libtorch's OpenMP workers spun at their barriers for 74% of the samples (perf) and the tch
/// path ran 5× slower than one thread; at 128 dims MKL's sgemm is far ahead of a scalar loop.
pub const FUSED_MAX_DIM: usize = 16;
/// Bank rows per chunk of the fused path: a chunk (≤ 16 × 4096 f32 = 256 KiB) stays in L2 while each query of
/// a block is scored against it.
const FUSED_COLS: usize = 4096;
/// Queries per rayon task of the fused path: the bank is read from memory once per block, not per query.
const FUSED_QUERY_BLOCK: usize = 64;
/// Lanes of the branch-free "any candidate here?" test in the scan (a 64-byte cache line of f32).
const LANES: usize = 16;

/// For each query row `q` (an index into `bank`), the top-`k` bank rows by dot product, excluding rows
/// `j` where `exclude(q, j)` (e.g. itself, same image). Returns (indices, similarities) per query, best
/// first; fewer than k when fewer rows qualify. Ties go to the lower index (as a stable sort would).
///
/// Time is O(queries · bank · dim) and memory O(tile + queries · k): similarities are made tile by tile
/// and each query keeps a sorted list of at most k, so no queries × bank matrix exists. `exclude` is only
/// asked about rows that would enter a query's list.
pub fn top_k(
    bank: &Tensor,
    queries: &[usize],
    k: usize,
    exclude: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<Vec<Vec<(usize, f32)>>> {
    let size = bank.size();
    let (n, dim) = (size[0] as usize, size.get(1).copied().unwrap_or(1) as usize);
    if k == 0 || n == 0 {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    // dim = 0 (all similarities 0) goes to tch, whose matmul handles it.
    if (1..=FUSED_MAX_DIM).contains(&dim) {
        let data = Vec::<f32>::try_from(
            &bank
                .f_to_kind(Kind::Float)
                .and_then(|b| b.f_contiguous())
                .and_then(|b| b.f_view([-1]))
                .map_err(|e| Error::tch("reading bank", e))?,
        )
        .map_err(|e| Error::tch("reading bank", e))?;
        Ok(top_k_fused(&data, n, dim, queries, k, exclude, FUSED_COLS))
    } else {
        top_k_tch(bank, queries, k, exclude, TILE_ELEMS)
    }
}

/// The tch path of `top_k`: matmul tiles of at most `tile_elems`, each scanned on this thread.
fn top_k_tch(
    bank: &Tensor,
    queries: &[usize],
    k: usize,
    exclude: &(dyn Fn(usize, usize) -> bool + Sync),
    tile_elems: usize,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let _guard = tch::no_grad_guard();
    let n = bank.size()[0] as usize;
    // Whole bank rows when they fit (small banks: one matmul per block of queries, as before tiling);
    // otherwise TILE_QUERY_ROWS queries against as many bank rows as the tile holds.
    let cols = n.min((tile_elems / TILE_QUERY_ROWS).max(1));
    let rows = (tile_elems / cols).clamp(1, 4096);
    let mut out: Vec<Vec<(usize, f32)>> = Vec::with_capacity(queries.len());
    let mut sims: Vec<f32> = vec![0.0; rows * cols];
    for chunk in queries.chunks(rows) {
        let idx: Vec<i64> = chunk.iter().map(|&q| q as i64).collect();
        let q = bank
            .f_index_select(0, &Tensor::from_slice(&idx).to_device(Device::Cpu))
            .map_err(|e| Error::tch("gathering query rows", e))?; // [b, dim]
        let mut best: Vec<Best> = chunk.iter().map(|&qi| Best::new(qi, k)).collect();
        let mut c0 = 0;
        while c0 < n {
            let len = cols.min(n - c0);
            let s = bank
                .f_narrow(0, c0 as i64, len as i64)
                .and_then(|b| q.f_matmul(&b.f_tr()?))
                .and_then(|s| s.f_to_kind(Kind::Float))
                .and_then(|s| s.f_contiguous())
                .map_err(|e| Error::tch("similarity tile", e))?; // [b, len]
            let tile = &mut sims[..chunk.len() * len];
            s.f_copy_data(tile, chunk.len() * len)
                .map_err(|e| Error::tch("reading similarity tile", e))?;
            // On this thread: libtorch's OpenMP workers spin after each matmul, and rayon workers
            // scanning beside them ran at a third of the speed.
            for (b, row) in best.iter_mut().zip(tile.chunks(len)) {
                b.scan(row, c0, exclude);
            }
            c0 += len;
        }
        out.extend(best.into_iter().map(|b| b.list));
    }
    Ok(out)
}

/// The fused path of `top_k` on a row-major `[n, dim]` bank: blocks of queries in parallel (rayon), each
/// scoring its queries against chunks of `cols` bank rows (column-major copy, so the inner loop runs over
/// bank rows) and scanning each chunk at once. A dot product is summed over dimensions in order, so the
/// result does not depend on the thread count.
fn top_k_fused(
    data: &[f32],
    n: usize,
    dim: usize,
    queries: &[usize],
    k: usize,
    exclude: &(dyn Fn(usize, usize) -> bool + Sync),
    cols: usize,
) -> Vec<Vec<(usize, f32)>> {
    use rayon::prelude::*;
    // [dim, n]: dimension t of every bank row is contiguous.
    let mut by_dim = vec![0f32; dim * n];
    for (i, row) in data.chunks_exact(dim).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            by_dim[t * n + i] = v;
        }
    }
    queries
        .par_chunks(FUSED_QUERY_BLOCK)
        .flat_map_iter(|block| {
            let mut best: Vec<Best> = block.iter().map(|&qi| Best::new(qi, k)).collect();
            let mut sims = vec![0f32; cols.min(n)];
            let mut c0 = 0;
            while c0 < n {
                let len = cols.min(n - c0);
                let sims = &mut sims[..len];
                for b in &mut best {
                    let q = &data[b.query * dim..(b.query + 1) * dim];
                    let first = &by_dim[c0..c0 + len];
                    for (s, &x) in sims.iter_mut().zip(first) {
                        *s = q[0] * x;
                    }
                    for (t, &qt) in q.iter().enumerate().skip(1) {
                        let column = &by_dim[t * n + c0..t * n + c0 + len];
                        for (s, &x) in sims.iter_mut().zip(column) {
                            *s += qt * x;
                        }
                    }
                    b.scan(sims, c0, exclude);
                }
                c0 += len;
            }
            best.into_iter().map(|b| b.list)
        })
        .collect()
}

/// One query's k best so far, best first, and the similarity a row must beat to enter once it is full.
struct Best {
    query: usize,
    k: usize,
    list: Vec<(usize, f32)>,
}

impl Best {
    fn new(query: usize, k: usize) -> Self {
        Best {
            query,
            k,
            list: Vec::with_capacity(k + 1),
        }
    }

    /// Offers bank rows `c0..c0 + row.len()` in index order. A row enters when the list is not full or it
    /// beats the current k-th strictly (so an equal later row never displaces an earlier one), and goes
    /// after rows of equal similarity (lower index first).
    fn scan(&mut self, row: &[f32], c0: usize, exclude: &(dyn Fn(usize, usize) -> bool + Sync)) {
        let offer = |list: &mut Vec<(usize, f32)>, j: usize, s: f32| {
            // Not greater (equal, smaller or NaN): the row stays out.
            let beats = |b: &(usize, f32)| s.partial_cmp(&b.1) == Some(std::cmp::Ordering::Greater);
            if list.len() == self.k && !list.last().is_some_and(beats) {
                return;
            }
            if exclude(self.query, j) {
                return;
            }
            let pos = list.partition_point(|b| b.1 >= s);
            list.insert(pos, (j, s));
            list.truncate(self.k);
        };
        let mut lanes = row.chunks_exact(LANES);
        let mut j = c0;
        for lane in &mut lanes {
            // Once the list is full almost no row enters: test a whole lane without branches first.
            let full = self.list.len() == self.k;
            let floor = self.list.last().map_or(f32::NEG_INFINITY, |b| b.1);
            if full && !lane.iter().fold(false, |any, &s| any | (s > floor)) {
                j += LANES;
                continue;
            }
            for &s in lane {
                offer(&mut self.list, j, s);
                j += 1;
            }
        }
        for &s in lanes.remainder() {
            offer(&mut self.list, j, s);
            j += 1;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Best-first top-k by a stable sort over every admissible row: the definition `top_k` must meet.
    fn by_sorting(
        data: &[f32],
        dim: usize,
        queries: &[usize],
        k: usize,
        exclude: &dyn Fn(usize, usize) -> bool,
    ) -> Vec<Vec<(usize, f32)>> {
        let n = data.len() / dim;
        let dot = |a: usize, b: usize| -> f32 {
            (0..dim)
                .map(|t| data[a * dim + t] * data[b * dim + t])
                .sum()
        };
        queries
            .iter()
            .map(|&q| {
                let mut all: Vec<(usize, f32)> = (0..n)
                    .filter(|&j| !exclude(q, j))
                    .map(|j| (j, dot(q, j)))
                    .collect();
                // partial_cmp: −0 and +0 tie, as they do in the scan.
                all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
                all.truncate(k);
                all
            })
            .collect()
    }

    /// `n` rows of `dim` values from {−1, −½, 0, ½, 1}: every product and sum is exact in f32, so both
    /// paths give the same similarities and the many ties test the lower-index rule.
    fn coarse(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| ((i * 7919 + i / 3) % 5) as f32 * 0.5 - 1.0)
            .collect()
    }

    #[test]
    fn both_paths_match_a_stable_sort_across_tile_edges() {
        let exclude = |q: usize, j: usize| q == j || j % 7 == q % 7;
        let queries: Vec<usize> = (0..300).step_by(3).chain([5, 5, 299]).collect();
        for dim in [1, 3, 20] {
            let data = coarse(300, dim);
            let bank = matrix(&data, 300, dim, Kind::Float).unwrap();
            for k in [1, 5, 300] {
                let want = by_sorting(&data, dim, &queries, k, &exclude);
                assert_eq!(
                    top_k(&bank, &queries, k, &exclude).unwrap(),
                    want,
                    "dim {dim} k {k}"
                );
                // Chunks of 37 and 1 bank rows: tile edges inside runs of ties and lane remainders.
                for cols in [37, 1, 4096] {
                    let fused = top_k_fused(&data, 300, dim, &queries, k, &exclude, cols);
                    assert_eq!(fused, want, "fused dim {dim} k {k} cols {cols}");
                    let tch =
                        top_k_tch(&bank, &queries, k, &exclude, cols * TILE_QUERY_ROWS).unwrap();
                    assert_eq!(tch, want, "tch dim {dim} k {k} cols {cols}");
                }
            }
        }
        // Fewer admissible rows than k: all of them; k = 0: none.
        let data = coarse(10, 2);
        let bank = matrix(&data, 10, 2, Kind::Float).unwrap();
        let r = top_k(&bank, &[0, 1], 20, &|q, j| q == j).unwrap();
        assert!(r.iter().all(|l| l.len() == 9));
        assert!(top_k(&bank, &[0], 0, &|_, _| false).unwrap()[0].is_empty());
    }
}
