//! Issue 23 ("Trust II"), paths and feedback: a path written inside a data file (COCO `file_name`, index
//! `path`) or a symlink leading out of the dataset folder is skipped and listed, never opened; a COCO file
//! with a BOM parses; non-UTF-8 names keep distinct ids; `datasets check` counts every file it passes over;
//! `embed --run` on a folder that is no run says so once; an empty shard writes an empty file; `eval` on
//! unlabelled data fails before embedding. Regression tests are named after the bug they pin.
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use biaslab::analyze::embed::{dataset_samples, CropMode};
use biaslab::augment::EvalTransform;
use biaslab::data::coco::CocoDataset;
use biaslab::data::confine::{Outside, Root};
use biaslab::data::decode::SkipReason;
use biaslab::data::index::{read_index, write_index, NOT_UTF8_NAME};
use biaslab::data::kind::DatasetKind;
use biaslab::data::source::{samples_from_coco, samples_from_dir, Sample};
use biaslab::loader::EvalLoader;
use biaslab::pipeline::{evaluate, Env, EvalRequest, Progress, Protocol};
use biaslab::report::io::read_parquet;
use biaslab::run_dir::EmbedLayer;
use biaslab::train::Trainer;
use image::{Rgb, RgbImage};
use proptest::prelude::*;
use tch::Device;

/// A 40×40 picture (above the loader's 16 px minimum), its colour varied by `seed`.
fn picture(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(40, 40, |x, y| Rgb([seed, (x * 6) as u8, (y * 6) as u8]))
        .save(path)
        .unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An untrained (seeded) tiny run saved at `dir`: enough to embed with.
fn tiny_run(dir: &Path) {
    Trainer::new(common::tiny_train_config(), Device::Cpu)
        .unwrap()
        .save_checkpoint(dir)
        .unwrap();
}

/// `<tmp>/walls/{a,b}.png` inside the dataset, `<tmp>/secret/outside.png` (a real image) beside it.
fn walls_and_a_secret(tmp: &Path) -> (PathBuf, PathBuf) {
    let walls = tmp.join("walls");
    picture(&walls.join("a.png"), 10);
    picture(&walls.join("b.png"), 20);
    let secret = tmp.join("secret/outside.png");
    picture(&secret, 30);
    (walls, secret)
}

/// COCO JSON with one 30×30 box on each of `file_names` (declared 40×40).
fn coco_json(file_names: &[&str]) -> String {
    let images: Vec<String> = file_names
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::json!({"id": i + 1, "file_name": f, "width": 40, "height": 40}).to_string()
        })
        .collect();
    let anns: Vec<String> = (0..file_names.len())
        .map(|i| {
            format!(
                r#"{{"id":{},"image_id":{},"category_id":1,"bbox":[2,2,30,30]}}"#,
                100 + i,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"images":[{}],"annotations":[{}],"categories":[{{"id":1,"name":"cup"}}]}}"#,
        images.join(","),
        anns.join(",")
    )
}

/// Runs every sample through the evaluation loader; returns (rows read, skips as (path, reason)).
fn load_all(samples: Vec<Sample>) -> (usize, Vec<(PathBuf, SkipReason)>) {
    let loader = EvalLoader::new(samples, EvalTransform { size: 24 }, 4, 1).unwrap();
    let (mut n, mut skipped) = (0, Vec::new());
    for b in loader.batches() {
        n += b.indices.len();
        skipped.extend(b.skipped.into_iter().map(|s| (s.path, s.reason)));
    }
    (n, skipped)
}

#[test]
fn coco_file_name_leaving_the_root_is_skipped_and_listed_not_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, secret) = walls_and_a_secret(tmp.path());
    let absolute = secret.display().to_string();
    let missing_absolute = tmp
        .path()
        .join("secret/nothing-here.png")
        .display()
        .to_string();
    let json = coco_json(&[
        "a.png",
        "../secret/outside.png",
        "../../secret/outside.png",
        &absolute,
        &missing_absolute,
    ]);
    let coco = CocoDataset::from_slice(json.as_bytes(), Path::new("annotations.json")).unwrap();
    let samples = samples_from_coco(
        &walls,
        &coco,
        Path::new("annotations.json"),
        "walls",
        DatasetKind::Scene,
    )
    .unwrap();
    assert_eq!(samples.len(), 5);
    let refused: Vec<Option<Outside>> = samples.iter().map(|s| s.refused.clone()).collect();
    assert_eq!(
        refused,
        vec![
            // sorted by file name: `../..`, `..`, the missing absolute path, the existing one, a.png
            Some(Outside::ParentDir),
            Some(Outside::ParentDir),
            Some(Outside::Absolute),
            Some(Outside::Absolute),
            None,
        ]
    );
    let (read, skipped) = load_all(samples);
    assert_eq!(read, 1);
    assert_eq!(skipped.len(), 4);
    // A missing outside file and an existing one get the same reason: the answer says nothing about
    // what exists outside the dataset, because neither was looked at.
    let reasons: Vec<String> = skipped.iter().map(|(_, r)| r.to_string()).collect();
    assert_eq!(reasons[2], reasons[3], "{reasons:?}");
    assert_eq!(
        reasons[3], "absolute path: outside the dataset root, not opened",
        "{reasons:?}"
    );
    assert_eq!(
        reasons[0], "`..` leads out of the dataset root: not opened",
        "{reasons:?}"
    );
}

#[test]
fn coco_file_names_leaving_the_root_are_listed_by_embed_and_exit_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, secret) = walls_and_a_secret(tmp.path());
    tiny_run(&tmp.path().join("run"));
    let json = coco_json(&["a.png", "b.png", "../secret/outside.png", p(&secret)]);
    std::fs::write(tmp.path().join("boxes.json"), json).unwrap();
    let out = tmp.path().join("boxes.parquet");
    let o = common::run_biaslab(
        &[
            "embed",
            "--run",
            p(&tmp.path().join("run")),
            "--data",
            p(&walls),
            "--crops",
            "boxes",
            "--annotations",
            p(&tmp.path().join("boxes.json")),
            "--out",
            p(&out),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("2 unreadable image(s) skipped"), "{t}");
    assert_eq!(read_parquet(&out).unwrap().height(), 2);
    let listed = read_parquet(&out.with_extension("skipped.parquet")).unwrap();
    let paths: Vec<String> = listed
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect();
    assert!(
        paths.iter().any(|s| s.ends_with("../secret/outside.png")),
        "{paths:?}"
    );
    assert!(paths.contains(&secret.display().to_string()), "{paths:?}");
    let reasons = listed.column("reason").unwrap().str().unwrap().clone();
    assert!(
        reasons
            .iter()
            .flatten()
            .all(|r| r.contains("outside the dataset root") || r.contains("leads out of")),
        "{listed}"
    );
}

#[test]
fn index_path_leaving_the_root_is_skipped_and_listed_not_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, secret) = walls_and_a_secret(tmp.path());
    let rec = |id: &str, path: &str| common::record(id, path, None, DatasetKind::Scene, 40, 40);
    write_index(
        &walls,
        &[
            rec("a", "a.png"),
            rec("up", "../secret/outside.png"),
            rec("abs", p(&secret)),
        ],
    )
    .unwrap();
    let samples = samples_from_dir(&walls, "walls", DatasetKind::Scene).unwrap();
    let by_id: Vec<(&str, Option<&Outside>)> = samples
        .iter()
        .map(|s| (s.id.as_str(), s.refused.as_ref()))
        .collect();
    assert_eq!(
        by_id,
        vec![
            ("a", None),
            ("abs", Some(&Outside::Absolute)),
            ("up", Some(&Outside::ParentDir))
        ]
    );
    let (read, skipped) = load_all(samples);
    assert_eq!((read, skipped.len()), (1, 2));
}

#[cfg(unix)]
#[test]
fn symlinked_image_leaving_the_root_is_skipped_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, secret) = walls_and_a_secret(tmp.path());
    std::os::unix::fs::symlink(&secret, walls.join("link-out.png")).unwrap();
    std::os::unix::fs::symlink(walls.join("a.png"), walls.join("link-in.png")).unwrap();
    // on the fly (walked folder)
    let samples = samples_from_dir(&walls, "walls", DatasetKind::Scene).unwrap();
    let refused: Vec<(&str, bool)> = samples
        .iter()
        .map(|s| (s.id.as_str(), s.refused.is_some()))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("a.png", false),
            ("b.png", false),
            ("link-in.png", false),
            ("link-out.png", true)
        ]
    );
    let (read, skipped) = load_all(samples);
    assert_eq!(read, 3);
    assert_eq!(
        skipped,
        vec![(
            walls.join("link-out.png"),
            SkipReason::Outside(Outside::SymlinkOut)
        )]
    );
    // `datasets check` lists it as skipped without following it
    let o = common::run_biaslab(&["datasets", "check", p(&walls)], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("4 files, 3 ok, 1 skipped, 0 ignored"), "{t}");
    assert!(
        t.contains("link-out.png: symlink leads out of the dataset root"),
        "{t}"
    );
    // `datasets index` too, and the index it writes leaves it out
    let o = common::run_biaslab(&["datasets", "index", p(&walls)], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let ids: Vec<String> = read_index(&walls)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["a.png", "b.png", "link-in.png"]);
    // and a symlinked directory inside a named index path is resolved before use
    std::os::unix::fs::symlink(secret.parent().unwrap(), walls.join("secretdir")).unwrap();
    let root = Root::new(&walls);
    assert_eq!(root.join("secretdir/outside.png"), Err(Outside::SymlinkOut));
}

#[test]
fn coco_file_with_a_utf8_bom_failed_at_line_1_column_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, _) = walls_and_a_secret(tmp.path());
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(coco_json(&["a.png"]).as_bytes());
    let path = tmp.path().join("bom.json");
    std::fs::write(&path, bytes).unwrap();
    let (samples, _) = dataset_samples(&walls, "walls", CropMode::Boxes, Some(&path)).unwrap();
    assert_eq!(samples.len(), 1);
}

#[test]
fn every_coco_file_name_missing_said_only_no_image_could_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, _) = walls_and_a_secret(tmp.path());
    let path = tmp.path().join("annotations.json");
    std::fs::write(
        &path,
        coco_json(&["x/a.png", "x/b.png", "../secret/outside.png"]),
    )
    .unwrap();
    let err = dataset_samples(&walls, "walls", CropMode::Boxes, Some(&path))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: none of the 3 annotated file_names were found under {} (1 lead out of it and were not \
             looked up); first: \"x/a.png\"",
            path.display(),
            walls.display()
        )
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_became_duplicate_ids_in_datasets_index() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    picture(&dir.join("ok.png"), 1);
    // two names that differ only in invalid bytes: both read "a\u{FFFD}.png" when converted lossily
    let bad = [
        dir.join(OsStr::from_bytes(b"a\xff.png")),
        dir.join(OsStr::from_bytes(b"a\xfe.png")),
    ];
    for (i, b) in bad.iter().enumerate() {
        picture(b, 50 + i as u8);
    }
    // read on the fly: distinct ids, lossy text kept for a reader
    let samples = samples_from_dir(&dir, "imgs", DatasetKind::Scene).unwrap();
    let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[1], "{ids:?}");
    assert!(
        ids[..2].iter().all(|i| i.starts_with("a\u{FFFD}.png~")),
        "{ids:?}"
    );
    // indexed: the index stores paths as text, so both are skipped and listed with the reason
    let o = common::run_biaslab(&["datasets", "index", p(&dir)], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert_eq!(t.matches(NOT_UTF8_NAME).count(), 2, "{t}");
    let ids: Vec<String> = read_index(&dir)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["ok.png"]);
    // listed with their invalid bytes escaped, so the two entries are told apart
    let listed = read_parquet(&dir.join("index.skipped.parquet")).unwrap();
    let paths: Vec<String> = listed
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect();
    assert_eq!(paths.len(), 2);
    assert!(
        paths[0].contains("a\\xFE.png") && paths[1].contains("a\\xFF.png"),
        "{paths:?}"
    );
}

#[test]
fn datasets_check_of_svgs_and_a_txt_said_0_files_0_ok_0_skipped_and_exit_0() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svgonly");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..9 {
        std::fs::write(dir.join(format!("icon{i}.svg")), b"<svg/>").unwrap();
    }
    std::fs::write(dir.join("README.txt"), b"icons").unwrap();
    let o = common::run_biaslab(&["datasets", "check", p(&dir)], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("10 files, 0 ok, 0 skipped, 10 ignored"), "{t}");
    assert!(t.contains("not an image extension (.svg)"), "{t}");
    assert!(
        t.contains("no image could be read: 10 other file(s) passed over (9 .svg, 1 .txt)"),
        "{t}"
    );
    assert!(t.contains("SVG is a vector format"), "{t}");
    // an empty folder is no success either
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = common::run_biaslab(&["datasets", "check", p(&empty)], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("the folder is empty"), "{}", text(&o));
}

#[test]
fn embed_run_nope_said_no_such_file_or_directory_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, _) = walls_and_a_secret(tmp.path());
    let nope = tmp.path().join("runs/nope");
    let out = tmp.path().join("e.parquet");
    let o = common::run_biaslab(
        &[
            "embed",
            "--run",
            p(&nope),
            "--data",
            p(&walls),
            "--out",
            p(&out),
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    let says = format!("{}: not a run directory (no such directory", nope.display());
    assert_eq!(t.matches(&says).count(), 1, "{t}");
    assert!(!t.contains("os error"), "{t}");
    // a folder that exists but holds no checkpoint names what is missing
    std::fs::create_dir_all(&nope).unwrap();
    let o = common::run_biaslab(
        &[
            "embed",
            "--run",
            p(&nope),
            "--data",
            p(&walls),
            "--out",
            p(&out),
        ],
        &[],
    );
    assert!(
        text(&o).contains("not a run directory (no `latest` checkpoint file in it"),
        "{}",
        text(&o)
    );
}

#[test]
fn embed_shard_with_no_sample_exited_2_instead_of_writing_an_empty_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, _) = walls_and_a_secret(tmp.path());
    let run = tmp.path().join("run");
    tiny_run(&run);
    let embed = |shard: &str, out: &Path| {
        common::run_biaslab(
            &[
                "embed",
                "--run",
                p(&run),
                "--data",
                p(&walls),
                "--out",
                p(out),
                "--shard",
                shard,
                "--split",
                "train",
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
            &[],
        )
    };
    let (full, empty) = (tmp.path().join("s0.parquet"), tmp.path().join("s7.parquet"));
    let o = embed("0/8", &full);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // two images, eight shards: shard 7 has none
    let o = embed("7/8", &empty);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("shard 7/8: no sample falls in this shard (2 samples in all)"),
        "{t}"
    );
    let (full, empty) = (read_parquet(&full).unwrap(), read_parquet(&empty).unwrap());
    assert_eq!((full.height(), empty.height()), (1, 0));
    // the same columns with the same types: it pools with the other shards
    assert_eq!(full.schema(), empty.schema());
}

/// Counts the samples a stage said it would embed.
#[derive(Default)]
struct Counted(usize);

impl Progress for Counted {
    fn start(&mut self, total: usize) {
        self.0 += total;
    }
}

#[test]
fn eval_on_unlabelled_data_embedded_before_saying_labels_are_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (walls, _) = walls_and_a_secret(tmp.path());
    let run = tmp.path().join("run");
    tiny_run(&run);
    let req = EvalRequest {
        protocol: Protocol::Knn,
        run,
        train_data: p(&walls).to_string(),
        train_annotations: None,
        test_data: None,
        test_annotations: None,
        test_fraction: 0.4,
        crops: CropMode::Image,
        layer: EmbedLayer::Backbone,
        size: None,
        batch_size: 4,
        k: 5,
        seed: 1,
        out: tmp.path().join("knn.parquet"),
    };
    let mut seen = Counted::default();
    let err = evaluate(&Env::cpu(tmp.path(), 1), &req, &mut seen)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "evaluation needs at least 2 distinct label(s), and none of its 2 samples has a label"
        ),
        "{err}"
    );
    assert_eq!(
        seen.0, 0,
        "nothing may be embedded before the labels are checked"
    );
}

/// Values a hostile `file_name` might take: escapes, absolute paths, odd text.
fn file_names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.png".to_string()),
        Just("../../secret/outside.png".to_string()),
        Just("/etc/passwd".to_string()),
        Just("C:\\Windows\\win.ini".to_string()),
        Just(String::new()),
        Just(".".to_string()),
        "[a-z./\\\\]{0,12}",
        any::<String>(),
    ]
}

/// A JSON number of any magnitude or sign (ids and box values must be refused, not trusted).
fn numbers() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        (-100.0f64..100.0).prop_map(serde_json::Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random values for file_name, box numbers and ids, then random byte edits of the text: the COCO reader
    /// and the samples built from it answer Ok or a clean Err, and no usable sample's path leaves the root.
    #[test]
    fn mutated_coco_json_is_ok_or_a_clean_error_and_never_leaves_the_root(
        names in proptest::collection::vec(file_names(), 1..4),
        bbox in proptest::collection::vec(numbers(), 4),
        ids in proptest::collection::vec(numbers(), 3),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let images: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, f)| serde_json::json!({"id": i + 1, "file_name": f, "width": 40, "height": 40}))
            .collect();
        let doc = serde_json::json!({
            "images": images,
            "annotations": [
                {"id": ids[0], "image_id": 1, "category_id": 1, "bbox": [2, 2, 30, 30]},
                {"id": ids[1], "image_id": ids[2], "category_id": 1, "bbox": bbox},
            ],
            "categories": [{"id": 1, "name": "cup"}],
        });
        let mut bytes = doc.to_string().into_bytes();
        for (at, b) in &edits {
            if !bytes.is_empty() {
                let k = at % bytes.len();
                bytes[k] = *b;
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        picture(&root.join("a.png"), 1);
        if let Ok(coco) = CocoDataset::from_slice(&bytes, Path::new("m.json")) {
            if let Ok(samples) =
                samples_from_coco(&root, &coco, Path::new("m.json"), "m", DatasetKind::Scene)
            {
                for s in samples.iter().filter(|s| s.refused.is_none()) {
                    prop_assert!(s.path.starts_with(&root), "{}", s.path.display());
                    prop_assert!(
                        !s.path.components().any(|c| c == std::path::Component::ParentDir),
                        "{}",
                        s.path.display()
                    );
                }
            }
        }
    }
}
