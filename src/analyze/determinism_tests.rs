//! Regression: analyses are bit-identical from call to call and whatever the thread count. Uniformity's
//! alignment and invariance's label average once summed over a HashMap, whose iteration order is seeded
//! anew for every map, so two runs of one binary on one input differed in the last bits (and once in a
//! printed decimal); rayon's reductions added partial sums in an order set by work stealing.
use crate::analyze::embeddings::{from_rows, row, Embeddings};
use crate::analyze::invariance::invariance;
use crate::analyze::linear::LinearClassifier;
use crate::analyze::spectrum::spectrum;
use crate::analyze::uniformity::uniformity;

/// `n` rows of dimension 8 in 5-row images, 40 labels and sets of uneven size: many map keys, so a hash order
/// would differ between calls, and summands of mixed magnitude, so a different order changes the bits.
fn many_groups(n: usize) -> Embeddings {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            // sets of uneven sizes (about 4 rows), each set's label from its id
            let set = (i * i + 7 * i) % 1201;
            let label = format!("l{}", set % 40);
            let mut r = row(
                i,
                &format!("img{}", i / 5),
                Some(&label),
                None,
                (0..8)
                    .map(|j| {
                        let x = (0.37 * i as f64 * (j + 1) as f64 + j as f64).sin();
                        (x * 10f64.powi((i % 7) as i32 - 3)) as f32
                    })
                    .collect(),
            );
            r.set_id = Some(format!("s{set}"));
            r
        })
        .collect();
    from_rows(&rows).unwrap()
}

/// Every float the analyses report, as bits.
fn fingerprint(e: &Embeddings, rows: &[usize]) -> Vec<u64> {
    let u = uniformity(e, rows, 0, "t").unwrap();
    let inv = invariance(e, rows, "t").unwrap();
    let s = spectrum(e, rows, "t").unwrap();
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| e.row(r).iter().copied().chain([1.0]))
        .collect();
    let y: Vec<usize> = rows.iter().map(|&r| r % 3).collect();
    let lin = LinearClassifier::fit_steps(&x, &y, e.dim, 3, 3);
    let mut out = vec![u.alignment.to_bits(), u.uniformity.to_bits()];
    out.extend(inv.scores.iter().map(|(_, v)| v.to_bits()));
    out.extend([s.rankme.to_bits(), s.alpha_req.to_bits()]);
    out.extend(s.singular_values.iter().map(|v| v.to_bits()));
    out.extend(lin.weights.iter().map(|v| v.to_bits()));
    out
}

#[test]
fn analyses_are_bit_identical_across_calls_and_thread_counts() {
    // 5000 rows: more than one 4096-row spectrum chunk and several 1024-row gradient chunks.
    let e = many_groups(5000);
    let rows: Vec<usize> = (0..5000).collect();
    let first = fingerprint(&e, &rows);
    for threads in [1, 1, 4, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let again = pool.install(|| fingerprint(&e, &rows));
        assert_eq!(again, first, "{threads} thread(s)");
    }
}
