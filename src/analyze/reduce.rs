//! Parallel float sums whose result does not depend on thread count or scheduling: partial sums are
//! computed in parallel over fixed chunks and added in chunk order. rayon's own `sum`/`reduce` combine
//! partials in an order set by work stealing, which changes the last bits of an f64 sum between runs.
use rayon::prelude::*;

/// Chunks computed in parallel at a time; bounds memory at `WAVE` partials of `len` values.
const WAVE: usize = 16;

/// Element-wise Σ over chunks `0..n_chunks` of `partial(c)` (each of length `len`), added in chunk
/// order, so the same inputs give the same bits on every run and with any number of threads.
pub fn ordered_sum(
    n_chunks: usize,
    len: usize,
    partial: impl Fn(usize) -> Vec<f64> + Sync,
) -> Vec<f64> {
    let mut total = vec![0.0; len];
    for start in (0..n_chunks).step_by(WAVE) {
        let wave: Vec<Vec<f64>> = (start..n_chunks.min(start + WAVE))
            .into_par_iter()
            .map(&partial)
            .collect();
        for p in &wave {
            debug_assert_eq!(p.len(), len);
            total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose f64 sum depends on the order of addition: the ordered sum must equal the
    /// sequential left-to-right sum bit for bit, whatever the pool size.
    #[test]
    fn ordered_sum_is_the_sequential_sum_with_any_thread_count() {
        let vals: Vec<f64> = (0..1000)
            .map(|i| ((i as f64) * 0.7123).sin() * 10f64.powi(i % 17 - 8))
            .collect();
        let chunk = |c: usize| vec![vals[c * 10..(c + 1) * 10].iter().sum::<f64>(), c as f64];
        let mut expect = [0.0f64; 2];
        for c in 0..100 {
            let p = chunk(c);
            expect[0] += p[0];
            expect[1] += p[1];
        }
        for threads in [1, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| ordered_sum(100, 2, chunk));
            assert_eq!(got[0].to_bits(), expect[0].to_bits(), "{threads} threads");
            assert_eq!(got[1], 4950.0);
        }
    }
}
