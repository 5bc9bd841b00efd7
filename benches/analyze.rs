//! Analyzer scale benchmark: collapse, kNN or spectrum on N synthetic crops × D dims (seeded: 4 crops per
//! image, each of one of 20 categories around a category centre plus an image effect; no split column, so
//! kNN is leave-one-image-out), printing wall time and the process's peak resident memory. One analysis and
//! size per process, so the peak is that run's own; run through `benches/run.sh` (or
//! `cargo bench --bench analyze -- collapse|knn|spectrum N [D]`).
use std::time::Instant;

use biaslab::analyze::collapse::collapse;
use biaslab::analyze::embeddings::{from_rows, row};
use biaslab::analyze::knn::{knn, K};
use biaslab::analyze::spectrum::spectrum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Peak resident set size of this process (Linux `VmHWM`), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    // cargo bench passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let which = args.first().map(String::as_str).unwrap_or("collapse");
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let dim: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(128);

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    let mut rows = Vec::with_capacity(n);
    let mut image_effect = vec![0f32; dim];
    for i in 0..n {
        if i % 4 == 0 {
            image_effect = (0..dim).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
        }
        let c = rng.gen_range(0..20usize);
        let v: Vec<f32> = (0..dim)
            .map(|j| centres[c][j] + image_effect[j] + rng.gen_range(-0.3f32..0.3))
            .collect();
        let label = format!("c{c}");
        rows.push(row(
            i,
            &format!("im{}", i / 4),
            Some(&label),
            Some(c as i32),
            v,
        ));
    }
    let e = from_rows(&rows)?;
    drop(rows);
    let all: Vec<usize> = (0..e.len()).collect();
    let t = Instant::now();
    let detail = match which {
        "collapse" => {
            let r = collapse(&e, &all, 0, "bench")?;
            format!(
                "delta_scene={:.4} delta_cat={:.4} collapse_index={}",
                r.delta_scene,
                r.delta_cat,
                r.collapse_index
                    .map_or_else(|| "undefined".into(), |c| format!("{c:.4}"))
            )
        }
        "knn" => {
            let r = knn(&e, &all, K, 0, "bench")?;
            format!(
                "accuracy={:.4} [{:.4}, {:.4}] n_queries={} n_bank={} queries={}",
                r.accuracy,
                r.accuracy_lo,
                r.accuracy_hi,
                r.n_queries,
                r.n_bank,
                if r.sampled { "sampled" } else { "exact" }
            )
        }
        "spectrum" => {
            let r = spectrum(&e, &all, "bench")?;
            format!("rankme={:.2}", r.rankme)
        }
        other => anyhow::bail!("unknown analysis {other:?} (collapse, knn or spectrum)"),
    };
    println!(
        "analyze {which} n={n} dim={dim} seconds={:.2} peak_rss_mib={:.0} {detail}",
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}
