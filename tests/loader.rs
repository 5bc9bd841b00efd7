//! The multi-crop and eval loaders on generated images: tensor shapes per crop group, bytes identical across
//! thread counts, epochs differ, and bad files are skipped and reported while the epoch goes on.
use std::path::Path;

use biaslab::augment::{EvalTransform, MultiCropConfig};
use biaslab::data::decode::SkipReason;
use biaslab::data::source::samples_from_dir;
use biaslab::data::DatasetKind;
use biaslab::loader::{Batch, EvalLoader, LoaderOptions, MultiCropLoader};
use image::RgbImage;

/// 10 good images in two classes (varied sizes so crops differ) plus two bad files.
fn fixture(dir: &Path) {
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
    }
    for i in 0..10u32 {
        let (w, h) = (40 + 7 * i, 60 - 2 * i);
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 5 + i * 20) as u8, (y * 4) as u8, (x ^ y) as u8])
        });
        let class = if i % 2 == 0 { "cat" } else { "dog" };
        let ext = if i % 3 == 0 { "jpg" } else { "png" };
        img.save(dir.join(class).join(format!("{i:02}.{ext}")))
            .unwrap();
    }
    std::fs::write(dir.join("cat/zz_text.jpg"), b"not an image at all").unwrap();
    std::fs::write(dir.join("dog/zz_empty.png"), b"").unwrap();
}

fn opts(threads: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size: 4,
        seed: 11,
        shuffle: true,
        drop_last: false,
        prefetch: 1,
        threads,
    }
}

fn flat(batches: &[Batch]) -> Vec<Vec<f32>> {
    batches
        .iter()
        .flat_map(|b| {
            b.crops
                .iter()
                .map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
        })
        .collect()
}

#[test]
fn shapes_skips_and_determinism_across_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let samples = samples_from_dir(d.path(), "pets", DatasetKind::Object).unwrap();
    assert_eq!(samples.len(), 12);
    let cfg = MultiCropConfig::scaled(32, 2, 16, 3);

    let one = MultiCropLoader::new(samples.clone(), cfg.clone(), opts(1)).unwrap();
    let two = MultiCropLoader::new(samples.clone(), cfg.clone(), opts(2)).unwrap();
    let e0_1: Vec<Batch> = one.epoch(0).collect();
    let e0_2: Vec<Batch> = two.epoch(0).collect();
    assert_eq!(e0_1.len(), 3); // 12 samples / 4, drop_last = false

    // Every good image once, both bad files reported, none silently lost.
    let mut seen: Vec<usize> = e0_1.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    let good: Vec<usize> = (0..12)
        .filter(|&i| !samples[i].id.contains("zz_"))
        .collect();
    assert_eq!(seen, good);
    let mut skipped: Vec<(String, SkipReason)> = e0_1
        .iter()
        .flat_map(|b| {
            b.skipped.iter().map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.reason.clone(),
                )
            })
        })
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        vec![
            ("zz_empty.png".into(), SkipReason::Empty),
            ("zz_text.jpg".into(), SkipReason::NotAnImage)
        ]
    );

    // Shapes: 5 crops per batch, [B, 3, 32, 32] ×2 then [B, 3, 16, 16] ×3, B = rows kept.
    for b in &e0_1 {
        assert_eq!(b.crops.len(), 5);
        let n = b.indices.len() as i64;
        assert_eq!(n + b.skipped.len() as i64, 4);
        for (k, t) in b.crops.iter().enumerate() {
            let s = if k < 2 { 32 } else { 16 };
            assert_eq!(t.size(), vec![n, 3, s, s]);
            assert_eq!(t.kind(), tch::Kind::Float);
        }
    }

    // Same seed → identical bytes with 1 or 2 threads; another epoch → another order and other crops.
    assert_eq!(
        e0_1.iter().map(|b| b.indices.clone()).collect::<Vec<_>>(),
        e0_2.iter().map(|b| b.indices.clone()).collect::<Vec<_>>()
    );
    assert_eq!(flat(&e0_1), flat(&e0_2));
    let e1: Vec<Batch> = one.epoch(1).collect();
    assert_ne!(flat(&e0_1), flat(&e1));
    // Values are normalised pixels: finite, and within the range [0,1] maps to.
    for v in flat(&e0_1).concat() {
        assert!(v.is_finite() && v > -2.2 && v < 2.7, "{v}");
    }
}

#[test]
fn drop_last_and_early_drop_of_the_iterator() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let samples = samples_from_dir(d.path(), "pets", DatasetKind::Object).unwrap();
    let o = LoaderOptions {
        batch_size: 5,
        drop_last: true,
        ..opts(2)
    };
    let l = MultiCropLoader::new(samples, MultiCropConfig::simclr(24), o).unwrap();
    assert_eq!(l.num_batches(), 2);
    assert_eq!(l.epoch(0).count(), 2);
    // Taking one batch and dropping the iterator must not hang.
    let first = l.epoch(3).next().unwrap();
    assert_eq!(first.crops.len(), 2);
}

#[test]
fn invalid_config_and_options_are_errors() {
    let mut cfg = MultiCropConfig::swav();
    cfg.recipe.size_crops.pop();
    assert!(MultiCropLoader::new(vec![], cfg, opts(1)).is_err());
    assert!(MultiCropLoader::new(
        vec![],
        MultiCropConfig::swav(),
        LoaderOptions {
            batch_size: 0,
            ..opts(1)
        }
    )
    .is_err());
}

#[test]
fn eval_loader_is_ordered_and_deterministic() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let samples = samples_from_dir(d.path(), "pets", DatasetKind::Object).unwrap();
    let l = EvalLoader::new(samples, EvalTransform { size: 20 }, 5, 2).unwrap();
    let a: Vec<_> = l.batches().collect();
    let b: Vec<_> = l.batches().collect();
    assert_eq!(a.len(), 3);
    let idx: Vec<usize> = a.iter().flat_map(|x| x.indices.clone()).collect();
    assert_eq!(idx.len(), 10);
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.images.size()[1..], [3, 20, 20]);
        assert!(x.images.equal(&y.images));
    }
    assert_eq!(a.iter().map(|x| x.skipped.len()).sum::<usize>(), 2);
}
