//! Integration tests of `datasets compose` (and `inspect` on its output) on generated cut-outs with known
//! masks and generated backgrounds; plus an ignored smoke test on the real tuxpaint / mate packages.
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use biaslab::data::coco::CocoDataset;
use biaslab::data::compose::{compose, ComposeConfig, ANNOTATIONS_FILE};
use biaslab::data::index::{read_index, write_index, ImageRecord};
use biaslab::data::kind::DatasetKind;

mod common;
use common::{fixtures, record};

fn config(seed: u64) -> ComposeConfig {
    ComposeConfig {
        objects: "stamps".into(),
        backgrounds: vec!["walls".into()],
        n_object: 12,
        n_scene: 12,
        size: 96,
        seed,
        test_fraction: 0.4,
        prefix: "cmp".into(),
        ..ComposeConfig::default()
    }
}

/// Every file under `dir` (relative path → bytes), sorted, except the Parquet index (compared separately).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x != "parquet") {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn boxes_are_tight_bboxes_of_the_visible_masks_and_json_revalidates() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let summary = compose(tmp.path(), &out, &config(1)).unwrap();
    assert_eq!(summary.skipped.len(), 1, "{:?}", summary.skipped);
    assert!(summary.skipped[0].path.ends_with("broken.png"));
    assert_eq!(summary.n_cutouts_train + summary.n_cutouts_test, 15);
    assert_eq!(
        summary.n_cutouts_test, 6,
        "40% of 5 per category = 2 × 3 categories"
    );
    let mut occluded_somewhere = false;
    for set in &summary.sets {
        let coco = CocoDataset::read(&set.dir.join(ANNOTATIONS_FILE)).unwrap();
        let index = read_index(&set.dir).unwrap();
        assert_eq!(index.len(), coco.images.len());
        assert_eq!(index.len(), set.n_images);
        let scene = set.name.contains("scenes");
        for (im, rec) in coco.images.iter().zip(&index) {
            assert_eq!(im.file_name, rec.path);
            assert_eq!(
                rec.kind,
                if scene {
                    DatasetKind::Scene
                } else {
                    DatasetKind::Object
                }
            );
            let pix = image::open(set.dir.join(&im.file_name)).unwrap();
            assert_eq!((pix.width(), pix.height()), (96, 96));
            let anns: Vec<_> = coco
                .annotations
                .iter()
                .filter(|a| a.image_id == im.id)
                .collect();
            if scene {
                assert!(
                    (2..=5).contains(&anns.len()),
                    "{} has {} objects",
                    im.file_name,
                    anns.len()
                );
                let cats: BTreeSet<u64> = anns.iter().map(|a| a.category_id).collect();
                assert!(cats.len() >= 2, "{} has one category", im.file_name);
                assert_eq!(rec.label, None);
            } else {
                assert_eq!(anns.len(), 1, "{}", im.file_name);
                assert_eq!(
                    rec.label.as_deref(),
                    coco.category_name(anns[0].category_id)
                );
            }
            for a in anns {
                let seg = a.segmentation.as_ref().unwrap();
                let mask = image::open(set.dir.join(seg["mask"].as_str().unwrap()))
                    .unwrap()
                    .to_luma8();
                let v = seg["value"].as_u64().unwrap() as u8;
                let pts: Vec<(u32, u32)> = mask
                    .enumerate_pixels()
                    .filter(|p| p.2 .0[0] == v)
                    .map(|p| (p.0, p.1))
                    .collect();
                let x0 = pts.iter().map(|p| p.0).min().unwrap();
                let x1 = pts.iter().map(|p| p.0).max().unwrap();
                let y0 = pts.iter().map(|p| p.1).min().unwrap();
                let y1 = pts.iter().map(|p| p.1).max().unwrap();
                assert_eq!(
                    a.bbox,
                    [
                        x0 as f64,
                        y0 as f64,
                        (x1 - x0 + 1) as f64,
                        (y1 - y0 + 1) as f64
                    ]
                );
                assert_eq!(a.area, pts.len() as f64);
                // Occlusion happened somewhere: a pixel of this object touches a pixel of a later paste.
                occluded_somewhere |= scene
                    && pts.iter().any(|&(x, y)| {
                        [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)]
                            .iter()
                            .any(|(dx, dy)| {
                                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                                nx >= 0
                                    && ny >= 0
                                    && nx < 96
                                    && ny < 96
                                    && mask.get_pixel(nx as u32, ny as u32).0[0] > v
                            })
                    });
                let inst = a.instance.as_deref().unwrap();
                assert!(
                    rec.source.contains(inst),
                    "source `{}` names {inst}",
                    rec.source
                );
            }
        }
        assert!(!set
            .dir
            .with_file_name(format!(".{}.partial", set.name))
            .exists());
    }
    assert!(
        occluded_somewhere,
        "12 scenes of up to 5 objects should contain an occlusion"
    );
}

#[test]
fn train_and_test_share_no_instance() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let s = compose(tmp.path(), &out, &config(5)).unwrap();
    let instances = |name: &str| -> HashSet<String> {
        let coco = CocoDataset::read(&out.join(name).join(ANNOTATIONS_FILE)).unwrap();
        coco.annotations
            .iter()
            .map(|a| a.instance.clone().unwrap())
            .collect()
    };
    for kind in ["objects", "scenes"] {
        let train = instances(&format!("cmp-{kind}-train"));
        let test = instances(&format!("cmp-{kind}-test"));
        assert!(!train.is_empty() && !test.is_empty());
        assert!(
            train.is_disjoint(&test),
            "{kind}: {:?}",
            train.intersection(&test).collect::<Vec<_>>()
        );
    }
    let sizes: Vec<usize> = s.sets.iter().map(|x| x.n_images).collect();
    // round(12 · 0.4) = 5 test images of each kind.
    assert_eq!(sizes, vec![7, 5, 7, 5]);
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    compose(tmp.path(), &a, &config(7)).unwrap();
    compose(tmp.path(), &b, &config(7)).unwrap();
    compose(tmp.path(), &c, &config(8)).unwrap();
    let fa = files(&a);
    assert!(fa.len() > 40);
    assert_eq!(fa, files(&b));
    assert_ne!(fa, files(&c));
    for name in config(7).output_names() {
        assert_eq!(
            read_index(&a.join(&name)).unwrap(),
            read_index(&b.join(&name)).unwrap()
        );
    }
}

#[test]
fn existing_outputs_are_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let first = compose(tmp.path(), &out, &config(2)).unwrap();
    assert!(!first.already_present);
    let again = compose(tmp.path(), &out, &config(2)).unwrap();
    assert!(again.already_present && again.skipped.is_empty());
    let forced = compose(
        tmp.path(),
        &out,
        &ComposeConfig {
            force: true,
            seed: 3,
            ..config(2)
        },
    )
    .unwrap();
    assert!(!forced.already_present);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "no .partial left: {names:?}");
    let rec = &read_index(&out.join("cmp-objects-train")).unwrap()[0];
    assert!(
        rec.source.contains("seed=3"),
        "forced rebuild used the new seed: {}",
        rec.source
    );
}

#[test]
fn scenes_need_two_categories() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    // Only the disc category: object-centric works, scenes must fail with a config error naming `objects`.
    let stamps = tmp.path().join("stamps");
    let discs: Vec<ImageRecord> = read_index(&stamps)
        .unwrap()
        .into_iter()
        .filter(|r| r.label.as_deref() == Some("disc"))
        .collect();
    write_index(&stamps, &discs).unwrap();
    let err = compose(tmp.path(), &tmp.path().join("out"), &config(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("objects") && err.contains("2 categories"),
        "{err}"
    );
}

#[test]
fn inspect_reads_object_share_from_the_composed_boxes() {
    use biaslab::data::inspect::{inspect, COL_N_IMAGES, COL_OBJECT_AREA_SHARE};
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    compose(tmp.path(), &out, &config(4)).unwrap();
    let objects = inspect(&out.join("cmp-objects-train")).unwrap();
    let scenes = inspect(&out.join("cmp-scenes-train")).unwrap();
    let share = |r: &biaslab::data::inspect::InspectReport| -> Vec<f64> {
        r.per_image
            .column(COL_OBJECT_AREA_SHARE)
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    };
    let (so, ss) = (share(&objects), share(&scenes));
    assert_eq!(
        objects
            .summary
            .column(COL_N_IMAGES)
            .unwrap()
            .u64()
            .unwrap()
            .get(0),
        Some(7)
    );
    assert!(so.iter().chain(&ss).all(|&s| s > 0.0 && s <= 1.0));
    // One object at 40–70% of the side vs 2–5 at 10–35%: the object-centric set has larger boxes.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&so) > mean(&ss),
        "objects {} vs scenes {}",
        mean(&so),
        mean(&ss)
    );
}

/// Real data: `BIASLAB_REAL_TUX` / `BIASLAB_REAL_MATE` point at the extracted packages' roots
/// (`ar p F data.tar.xz | tar -xJ -C DIR`); `BIASLAB_REAL_OUT` keeps the output to look at.
/// Run: cargo test --release --test compose real_packages -- --ignored --nocapture
#[test]
#[ignore]
fn real_packages_compose_20_plus_20() {
    let tux =
        PathBuf::from(std::env::var("BIASLAB_REAL_TUX").unwrap()).join("usr/share/tuxpaint/stamps");
    let mate =
        PathBuf::from(std::env::var("BIASLAB_REAL_MATE").unwrap()).join("usr/share/backgrounds");
    let work = PathBuf::from(std::env::var("BIASLAB_REAL_OUT").unwrap());
    // A quick normalised view of each package: index only, paths pointing into the extracted tree.
    let walk = |root: &Path, exts: &[&str]| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .is_some_and(|x| exts.contains(&x.to_str().unwrap()))
                {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    };
    let stamps_dir = work.join("tuxpaint-stamps");
    std::fs::create_dir_all(&stamps_dir).unwrap();
    let recs: Vec<ImageRecord> = walk(&tux, &["png"])
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(&tux).unwrap().to_string_lossy().into_owned();
            !rel.starts_with("symbols/") && !rel.contains("/cartoon/")
        })
        .map(|p| {
            let rel = p.strip_prefix(&tux).unwrap();
            let cat = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            let id = rel.with_extension("").to_string_lossy().replace('/', "_");
            record(
                &id,
                p.to_str().unwrap(),
                Some(&cat),
                DatasetKind::Object,
                0,
                0,
            )
        })
        .collect();
    write_index(&stamps_dir, &recs).unwrap();
    let mate_dir = work.join("mate-backgrounds");
    std::fs::create_dir_all(&mate_dir).unwrap();
    let recs: Vec<ImageRecord> = walk(&mate, &["jpg", "png"])
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            record(
                &format!("mate{i}"),
                p.to_str().unwrap(),
                None,
                DatasetKind::Scene,
                0,
                0,
            )
        })
        .collect();
    write_index(&mate_dir, &recs).unwrap();
    let cfg = ComposeConfig {
        objects: "tuxpaint-stamps".into(),
        backgrounds: vec!["mate-backgrounds".into()],
        n_object: 20,
        n_scene: 20,
        force: true,
        ..ComposeConfig::default()
    };
    let t = std::time::Instant::now();
    let s = compose(&work, &work.join("out"), &cfg).unwrap();
    println!("compose took {:.1?}", t.elapsed());
    println!(
        "cut-outs {} train / {} test, {} categories, {} backgrounds, {} skipped",
        s.n_cutouts_train,
        s.n_cutouts_test,
        s.n_categories,
        s.n_backgrounds,
        s.skipped.len()
    );
    for k in &s.skipped {
        println!("  skipped {}: {}", k.path.display(), k.reason);
    }
    for set in &s.sets {
        println!(
            "{}: {} images {} boxes",
            set.name, set.n_images, set.n_annotations
        );
        let t = std::time::Instant::now();
        let rep = biaslab::data::inspect::inspect(&set.dir).unwrap();
        println!("inspect took {:.1?}\n{}", t.elapsed(), rep.summary);
    }
    let t = std::time::Instant::now();
    let rep = biaslab::data::inspect::inspect(&stamps_dir).unwrap();
    println!(
        "inspect tuxpaint took {:.1?}\n{}\n{}",
        t.elapsed(),
        rep.summary,
        rep.per_label
    );
}

/// Sets composed with other settings are not reused silently: compose.json records the settings, a
/// different request is refused with what differs and how to rebuild; sets from before compose.json are
/// checked by their image counts.
#[test]
fn existing_outputs_composed_otherwise_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    compose(tmp.path(), &out, &config(2)).unwrap();
    for name in config(2).output_names() {
        let saved = std::fs::read_to_string(out.join(&name).join("compose.json")).unwrap();
        assert!(saved.contains("\"n_object\": 12"), "{saved}");
    }
    let bigger = ComposeConfig {
        n_object: 20,
        ..config(2)
    };
    let e = compose(tmp.path(), &out, &bigger).unwrap_err().to_string();
    assert!(
        e.contains("cmp-objects-train")
            && e.contains("n_object was 12, asked 20")
            && e.contains("--force"),
        "{e}"
    );
    let e = compose(tmp.path(), &out, &config(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed was 2, asked 5"), "{e}");
    // the same request is still reused
    assert!(
        compose(tmp.path(), &out, &config(2))
            .unwrap()
            .already_present
    );
    // sets from before compose.json: their image counts decide
    for name in config(2).output_names() {
        std::fs::remove_file(out.join(&name).join("compose.json")).unwrap();
    }
    assert!(
        compose(tmp.path(), &out, &config(2))
            .unwrap()
            .already_present
    );
    let e = compose(tmp.path(), &out, &bigger).unwrap_err().to_string();
    assert!(e.contains("12 images in train + test, asked 20"), "{e}");
    // --force rebuilds and records the new settings
    let forced = ComposeConfig {
        force: true,
        ..bigger.clone()
    };
    assert!(!compose(tmp.path(), &out, &forced).unwrap().already_present);
    assert!(compose(tmp.path(), &out, &bigger).unwrap().already_present);
}
