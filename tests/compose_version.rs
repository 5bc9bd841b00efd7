//! Composition as a recorded, versioned setting (issue 20, item 4): golden hashes of what each algorithm
//! version composes, the reuse check against `compose.json` (settings and version), and the shortcut-free
//! `sharp-crops` background rule.
use std::path::Path;

use biaslab::data::coco::CocoDataset;
use biaslab::data::compose::{
    compose, recorded_algorithm, ComposeConfig, ObjectBackground, ALGORITHM, ANNOTATIONS_FILE,
    COMPOSE_FILE,
};
use biaslab::data::index::{read_index, write_index};
use biaslab::data::kind::DatasetKind;
use image::{GrayImage, Rgb, RgbImage};
use sha2::{Digest, Sha256};

mod common;
use common::{fixtures, record, run_biaslab};

/// The tiny set every golden hash is taken over: [`fixtures`]' 15 cut-outs and 2 walls, 8 object and 6 scene
/// images of 48 px.
fn golden_config() -> ComposeConfig {
    ComposeConfig {
        objects: "stamps".into(),
        backgrounds: vec!["walls".into()],
        n_object: 8,
        n_scene: 6,
        size: 48,
        seed: 7,
        test_fraction: 0.3,
        prefix: "gold".into(),
        ..ComposeConfig::default()
    }
}

/// sha256 over what compose makes of the four sets: every image, mask and `annotations.json` (path,
/// length, bytes; sorted by path) and the index rows. The Parquet bytes and `compose.json` are left out:
/// the first depend on the polars writer, the second holds the settings, not the output.
fn output_hash(out: &Path, cfg: &ComposeConfig) -> String {
    let mut h = Sha256::new();
    for name in cfg.output_names() {
        let dir = out.join(&name);
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if !p.ends_with("index.parquet") && !p.ends_with("compose.json") {
                    files.push(p);
                }
            }
        }
        files.sort();
        for p in files {
            let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap();
            h.update(format!("{name}/{rel}\0{}\0", bytes.len()).as_bytes());
            h.update(&bytes);
        }
        for r in read_index(&dir).unwrap() {
            h.update(
                format!(
                    "{}\0{}\0{:?}\0{}\0{}\0{}x{}\n",
                    r.id, r.path, r.label, r.source, r.licence, r.width, r.height
                )
                .as_bytes(),
            );
        }
    }
    format!("{:x}", h.finalize())
}

fn composed_hash(cfg: &ComposeConfig) -> String {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    compose(tmp.path(), &out, cfg).unwrap();
    output_hash(&out, cfg)
}

// Golden hashes, one per algorithm version: what that version composes of `golden_config()`. A failure
// means the composed bytes changed. If that was meant, bump `ALGORITHM` in src/data/compose/record.rs, set
// `unchanged_since` for every rule whose output moved, pin the new hash here as a new version's test and
// keep the old one's constant in its comment; if not, the change is a bug. (The JPEG and PNG encoders and
// the resize filters are part of the bytes: an `image` or `imageproc` upgrade in Cargo.lock can move them.)

/// Version 1 (every set before `compose.json` recorded a version), and version 2 for `flat-or-blur`: this
/// constant was computed by the code before the rule became a setting, so it pins that version 2 composes
/// the default rule byte for byte as version 1 did.
const GOLDEN_V1_FLAT_OR_BLUR: &str =
    "d78567d848fb1be23d2b0126e73e64a0226c8922512cc8d0ff392307bf17a493";

/// Version 2's new rule, `sharp-crops`.
const GOLDEN_V2_SHARP_CROPS: &str =
    "84f59ad9154df1486af881820e56acb27c7383509f5c5092f466579402adb4f0";

#[test]
fn golden_hash_version_1_flat_or_blur() {
    assert_eq!(composed_hash(&golden_config()), GOLDEN_V1_FLAT_OR_BLUR);
}

#[test]
fn golden_hash_version_2_sharp_crops() {
    let cfg = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        ..golden_config()
    };
    assert_eq!(ALGORITHM, 2, "a new version needs its own golden test");
    assert_eq!(composed_hash(&cfg), GOLDEN_V2_SHARP_CROPS);
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `compose.json` holds every setting and the version, and reads back as the same settings (TOML and
/// JSON both: an experiment's `[prepare.compose]` table is the same type).
#[test]
fn settings_and_version_round_trip_through_compose_json() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let cfg = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        object_backgrounds: Some(vec!["walls".into()]),
        ..golden_config()
    };
    compose(tmp.path(), &out, &cfg).unwrap();
    for name in cfg.output_names() {
        let dir = out.join(&name);
        let mut saved = read_json(&dir.join(COMPOSE_FILE));
        assert_eq!(saved["algorithm"], serde_json::json!(ALGORITHM));
        assert_eq!(saved["object_background"], "sharp-crops");
        assert_eq!(recorded_algorithm(&dir).unwrap(), ALGORITHM);
        saved.as_object_mut().unwrap().remove("algorithm");
        let back: ComposeConfig = serde_json::from_value(saved).unwrap();
        assert_eq!(back, cfg);
    }
    let table = "objects = \"stamps\"\nbackgrounds = [\"walls\"]\nn_object = 8\nn_scene = 6\nsize = 48\n\
                 seed = 7\ntest_fraction = 0.3\nprefix = \"gold\"\nobject_background = \"sharp-crops\"\n\
                 object_backgrounds = [\"walls\"]\n";
    assert_eq!(toml::from_str::<ComposeConfig>(table).unwrap(), cfg);
    let bad = table.replace("sharp-crops", "sharp");
    assert!(toml::from_str::<ComposeConfig>(&bad).is_err());
    // the same request is reused
    assert!(compose(tmp.path(), &out, &cfg).unwrap().already_present);
}

/// Rewrites every `compose.json` of `cfg`'s sets under `out` as `edit` makes it.
fn edit_records(
    out: &Path,
    cfg: &ComposeConfig,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) {
    for name in cfg.output_names() {
        let file = out.join(&name).join(COMPOSE_FILE);
        let mut v = read_json(&file);
        edit(v.as_object_mut().unwrap());
        std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

/// Sets from before the version field (and before the rule was a setting) are version 1 and reused when
/// their settings match; the new rule is not served from them, nor from another version's sets.
#[test]
fn compose_json_without_version_is_version_1_and_reused_when_settings_match() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let cfg = golden_config();
    compose(tmp.path(), &out, &cfg).unwrap();
    // what biaslab wrote before this version: no algorithm, no object_background(s)
    edit_records(&out, &cfg, |m| {
        for k in ["algorithm", "object_background", "object_backgrounds"] {
            assert!(m.remove(k).is_some(), "{k}");
        }
    });
    assert_eq!(
        recorded_algorithm(&out.join("gold-objects-train")).unwrap(),
        1
    );
    assert!(compose(tmp.path(), &out, &cfg).unwrap().already_present);
    let sharp = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        ..cfg.clone()
    };
    let e = compose(tmp.path(), &out, &sharp).unwrap_err().to_string();
    assert!(
        e.contains("composed by algorithm version 1, this biaslab composes version 2")
            && e.contains("object_background was \"flat-or-blur\", asked \"sharp-crops\"")
            && e.contains("--force"),
        "{e}"
    );
    // a version no rule of this biaslab composes as recorded
    edit_records(&out, &cfg, |m| {
        m.insert("algorithm".into(), serde_json::json!(ALGORITHM + 1));
    });
    let e = compose(tmp.path(), &out, &cfg).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "composed by algorithm version {}, this biaslab composes version {ALGORITHM}",
            ALGORITHM + 1
        )) && e.contains("rebuild with --force"),
        "{e}"
    );
    // sets from before compose.json at all: version 1's rule only
    for name in cfg.output_names() {
        std::fs::remove_file(out.join(&name).join(COMPOSE_FILE)).unwrap();
    }
    assert!(compose(tmp.path(), &out, &cfg).unwrap().already_present);
    let e = compose(tmp.path(), &out, &sharp).unwrap_err().to_string();
    assert!(
        e.contains("before compose.json") && e.contains("object_background"),
        "{e}"
    );
}

/// A changed rule or pool is refused, naming what differs; keys a newer biaslab recorded are differences.
#[test]
fn changed_background_rule_or_pool_is_refused_with_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures(tmp.path());
    let out = tmp.path().join("out");
    let cfg = golden_config();
    compose(tmp.path(), &out, &cfg).unwrap();
    let sharp = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        ..cfg.clone()
    };
    let e = compose(tmp.path(), &out, &sharp).unwrap_err().to_string();
    assert!(
        e.contains("gold-objects-train")
            && e.contains("composed with other settings")
            && e.contains("object_background was \"flat-or-blur\", asked \"sharp-crops\"")
            && e.contains("--force"),
        "{e}"
    );
    let pool = ComposeConfig {
        object_backgrounds: Some(vec!["walls".into()]),
        ..cfg.clone()
    };
    let e = compose(tmp.path(), &out, &pool).unwrap_err().to_string();
    assert!(
        e.contains("object_backgrounds was null, asked [\"walls\"]"),
        "{e}"
    );
    edit_records(&out, &cfg, |m| {
        m.insert("shadow".into(), serde_json::json!(true));
    });
    let e = compose(tmp.path(), &out, &cfg).unwrap_err().to_string();
    assert!(
        e.contains("shadow was true, unknown to this biaslab"),
        "{e}"
    );
    // --force rebuilds with the new rule and records it
    let forced = ComposeConfig {
        force: true,
        ..sharp.clone()
    };
    assert!(!compose(tmp.path(), &out, &forced).unwrap().already_present);
    assert!(compose(tmp.path(), &out, &sharp).unwrap().already_present);
}

/// Two textured walls (6-px checkerboards in two colours, plus a diagonal stripe so no crop is
/// symmetric), as a scene dataset `tex`; cut-outs from [`fixtures`].
fn textured(data: &Path) {
    fixtures(data);
    let dir = data.join("tex");
    std::fs::create_dir_all(dir.join("images/_unlabelled")).unwrap();
    let mut recs = Vec::new();
    for i in 0..2u32 {
        let ink = [[230, 60, 30], [30, 90, 220]][i as usize];
        let img = RgbImage::from_fn(240, 180, |x, y| {
            if (x / 6 + y / 6) % 2 == 0 || (x + 2 * y) % 37 < 3 {
                Rgb(ink)
            } else {
                Rgb([20, 20, 20])
            }
        });
        let rel = format!("images/_unlabelled/tex{i}.png");
        img.save(dir.join(&rel)).unwrap();
        recs.push(record(
            &format!("tex{i}"),
            &rel,
            None,
            DatasetKind::Scene,
            240,
            180,
        ));
    }
    write_index(&dir, &recs).unwrap();
}

/// Background pixels of an object image (mask 0, away from the object's blended rim).
fn background_pixels(img: &RgbImage, mask: &GrayImage) -> Vec<[u8; 3]> {
    let (w, h) = img.dimensions();
    let near_object = |x: u32, y: u32| {
        (x.saturating_sub(2)..(x + 3).min(w)).any(|xx| {
            (y.saturating_sub(2)..(y + 3).min(h)).any(|yy| mask.get_pixel(xx, yy).0[0] != 0)
        })
    };
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| !near_object(x, y))
        .map(|(x, y)| img.get_pixel(x, y).0)
        .collect()
}

/// Mean absolute difference of horizontally adjacent background pixels (all channels): ≈ 0 on a flat
/// colour or a heavy blur, large on a sharp checkerboard.
fn edge_energy(img: &RgbImage, mask: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in 0..h {
        for x in 0..w - 1 {
            if mask.get_pixel(x, y).0[0] != 0 || mask.get_pixel(x + 1, y).0[0] != 0 {
                continue;
            }
            let (a, b) = (img.get_pixel(x, y).0, img.get_pixel(x + 1, y).0);
            sum += (0..3)
                .map(|c| (a[c] as f64 - b[c] as f64).abs())
                .sum::<f64>();
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

struct ObjectImage {
    source: String,
    image: RgbImage,
    mask: GrayImage,
    mask_bytes: Vec<u8>,
}

fn object_images(dir: &Path) -> Vec<ObjectImage> {
    read_index(dir)
        .unwrap()
        .into_iter()
        .map(|r| {
            let mask_path = dir.join("masks").join(format!("{}.png", r.id));
            ObjectImage {
                source: r.source,
                image: image::open(dir.join(&r.path)).unwrap().to_rgb8(),
                mask: image::open(&mask_path).unwrap().to_luma8(),
                mask_bytes: std::fs::read(&mask_path).unwrap(),
            }
        })
        .collect()
}

/// `sharp-crops` puts objects on sharp background crops that differ (flip, hue) even from the same
/// wallpaper; `flat-or-blur` of the same seed has flat or blurred ones, the same objects at the same places
/// (the background has its own stream), and the scenes are byte for byte the same.
#[test]
fn sharp_crops_are_sharp_varied_and_leave_object_placement_alone() {
    let tmp = tempfile::tempdir().unwrap();
    textured(tmp.path());
    let base = ComposeConfig {
        objects: "stamps".into(),
        backgrounds: vec!["tex".into()],
        n_object: 24,
        n_scene: 4,
        size: 64,
        seed: 11,
        test_fraction: 0.25,
        ..ComposeConfig::default()
    };
    let sharp_cfg = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        prefix: "sharp".into(),
        ..base.clone()
    };
    let blur_cfg = ComposeConfig {
        prefix: "blur".into(),
        ..base.clone()
    };
    let out = tmp.path().join("out");
    let s = compose(tmp.path(), &out, &sharp_cfg).unwrap();
    assert_eq!(s.n_object_backgrounds, 2);
    compose(tmp.path(), &out, &blur_cfg).unwrap();
    let sharp = object_images(&out.join("sharp-objects-train"));
    let blurred = object_images(&out.join("blur-objects-train"));
    assert_eq!(sharp.len(), 18);

    for im in &sharp {
        assert!(
            im.source.contains("background=sharp tex:tex"),
            "{}",
            im.source
        );
        let e = edge_energy(&im.image, &im.mask);
        assert!(
            e > 20.0,
            "a sharp checkerboard crop: edge energy {e:.1}, {}",
            im.source
        );
    }
    for im in &blurred {
        let e = edge_energy(&im.image, &im.mask);
        assert!(
            e < 6.0,
            "flat or blurred: edge energy {e:.1}, {}",
            im.source
        );
    }
    // flips and hue rotations are drawn: both flip states and several hues per wallpaper
    assert!(sharp.iter().any(|i| i.source.contains(" flipped")));
    assert!(sharp.iter().any(|i| !i.source.contains(" flipped")));
    for wall in ["tex:tex0", "tex:tex1"] {
        let same: Vec<&ObjectImage> = sharp.iter().filter(|i| i.source.contains(wall)).collect();
        assert!(same.len() >= 2, "{wall}: {} images", same.len());
        // the ink colour of each image: the mean of its brighter background pixels
        let inks: Vec<[f64; 3]> = same
            .iter()
            .map(|i| {
                let px: Vec<[u8; 3]> = background_pixels(&i.image, &i.mask)
                    .into_iter()
                    .filter(|p| p.iter().map(|&c| c as u32).sum::<u32>() > 150)
                    .collect();
                let mut m = [0.0; 3];
                for p in &px {
                    for c in 0..3 {
                        m[c] += p[c] as f64 / px.len() as f64;
                    }
                }
                m
            })
            .collect();
        let spread = (0..3)
            .map(|c| {
                let v: Vec<f64> = inks.iter().map(|m| m[c]).collect();
                v.iter().cloned().fold(f64::MIN, f64::max)
                    - v.iter().cloned().fold(f64::MAX, f64::min)
            })
            .fold(0.0, f64::max);
        assert!(
            spread > 40.0,
            "{wall}: one ink colour under hue rotation? {inks:?}"
        );
    }
    // same seed, other rule: the same objects in the same places (masks and annotations), other backgrounds
    assert_eq!(sharp.len(), blurred.len());
    for (a, b) in sharp.iter().zip(&blurred) {
        assert_eq!(a.mask_bytes, b.mask_bytes, "{} vs {}", a.source, b.source);
    }
    for set in ["objects-train", "objects-test"] {
        let a =
            CocoDataset::read(&out.join(format!("sharp-{set}")).join(ANNOTATIONS_FILE)).unwrap();
        let b = CocoDataset::read(&out.join(format!("blur-{set}")).join(ANNOTATIONS_FILE)).unwrap();
        let boxes = |c: &CocoDataset| {
            c.annotations
                .iter()
                .map(|a| (a.bbox.map(|v| v as i64), a.category_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(boxes(&a), boxes(&b));
    }
    for set in ["scenes-train", "scenes-test"] {
        let a = object_images(&out.join(format!("sharp-{set}")));
        let b = object_images(&out.join(format!("blur-{set}")));
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.image == y.image && x.mask_bytes == y.mask_bytes));
    }
}

/// `sharp-crops` without any background dataset is a settings error, not a panic.
#[test]
fn sharp_crops_without_backgrounds_is_refused() {
    let cfg = ComposeConfig {
        object_background: ObjectBackground::SharpCrops,
        object_backgrounds: Some(vec![]),
        n_scene: 0,
        ..golden_config()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("object_backgrounds") && e.contains("sharp-crops"),
        "{e}"
    );
    // flat-or-blur with an empty object pool: flat colours only, a valid choice
    let flat = ComposeConfig {
        object_background: ObjectBackground::FlatOrBlur,
        ..cfg
    };
    assert!(flat.validate().is_ok());
}

/// `datasets compose --object-background sharp-crops --object-backgrounds …` reaches the settings.
#[test]
fn cli_object_background_flags_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    textured(tmp.path());
    let data = tmp.path().to_str().unwrap();
    let out = run_biaslab(
        &[
            "datasets",
            "compose",
            "--data-dir",
            data,
            "--objects",
            "stamps",
            "--backgrounds",
            "walls",
            "--object-backgrounds",
            "tex,walls",
            "--object-background",
            "sharp-crops",
            "--n-object",
            "4",
            "--n-scene",
            "4",
            "--size",
            "48",
            "--prefix",
            "cli",
        ],
        &[],
    );
    assert!(out.status.success());
    let saved = read_json(&tmp.path().join("cli-objects-train").join(COMPOSE_FILE));
    assert_eq!(saved["object_background"], "sharp-crops");
    assert_eq!(
        saved["object_backgrounds"],
        serde_json::json!(["tex", "walls"])
    );
    assert_eq!(saved["algorithm"], serde_json::json!(ALGORITHM));
    let bad = run_biaslab(
        &[
            "datasets",
            "compose",
            "--data-dir",
            data,
            "--object-background",
            "sharp",
        ],
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("flat-or-blur"));
}
