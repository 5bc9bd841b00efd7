//! biaslab side of the loader benchmark: MultiCropLoader with SwAV's 2×224 + 6×96 crops over an image folder;
//! prints images/s with JPEGs decoded at full size or at the DCT reduction the crops allow. Run through
//! `benches/run.sh` (or `cargo bench --bench loader -- DIR [EPOCHS] [THREADS] [full|reduced] [MAX_IMAGES]`).
use std::path::PathBuf;
use std::time::Instant;

use biaslab::augment::MultiCropConfig;
use biaslab::data::source::samples_from_dir;
use biaslab::data::DatasetKind;
use biaslab::loader::{LoaderOptions, MultiCropLoader};

fn main() -> anyhow::Result<()> {
    // cargo bench passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("data/mate-backgrounds"),
    );
    let epochs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let decode = args.get(3).map(String::as_str).unwrap_or("reduced");
    anyhow::ensure!(
        matches!(decode, "full" | "reduced"),
        "decode is 'full' or 'reduced', not {decode:?}"
    );
    let max_images: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut samples = samples_from_dir(&dir, "bench", DatasetKind::Scene)?;
    anyhow::ensure!(!samples.is_empty(), "no images under {}", dir.display());
    if max_images > 0 {
        // The first files by path string, as benches/loader_bench.py --max-images picks them.
        samples.sort_by_key(|s| s.path.to_string_lossy().into_owned());
        samples.truncate(max_images);
    }
    let opts = LoaderOptions {
        // Same as benches/loader_bench.py.
        batch_size: 32,
        seed: 0,
        shuffle: true,
        drop_last: false,
        prefetch: 2,
        threads,
    };
    let loader = MultiCropLoader::new(samples, MultiCropConfig::swav(), opts)?
        .with_dct_reduction(decode == "reduced");
    let (mut n, mut skipped) = (0usize, 0usize);
    let t0 = Instant::now();
    for e in 0..epochs {
        for b in loader.epoch(e) {
            n += b.indices.len();
            skipped += b.skipped.len();
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "biaslab ({decode} decode): {n} images in {dt:.2} s = {:.1} images/s (threads {threads}, batch 32, {skipped} skipped)",
        n as f64 / dt
    );
    Ok(())
}
