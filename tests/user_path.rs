//! The path a new user takes first (issue 12), run with the real binary from a temp working directory: their
//! own folders (ImageFolder and flat, relative with a trailing slash and absolute) through train, embed,
//! eval and invariance; `datasets index`; embeddings written by Python with only the required columns;
//! every method with no config and `--epochs 1`, its per-epoch lines reaching a redirected stdout and
//! train.log; case-insensitive values; "did you mean"; the embedded manifests from another directory.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use biaslab::report::io::read_parquet;
use image::{Rgb, RgbImage};

/// A SwAV run small enough for a test (as tests/cli.rs): width-8 ResNet-18, 2×32 + 1×16 crops.
const SMALL_TOML: &str = r#"
nmb_crops = [2, 1]
size_crops = [32, 16]
min_scale_crops = [0.3, 0.1]
max_scale_crops = [1.0, 0.3]
nmb_prototypes = [10]
queue_length = 0
batch_size = 4
warmup_epochs = 0
freeze_prototypes_niters = 1
width = 8
hidden_mlp = 32
feat_dim = 16
"#;

/// Runs `biaslab ARGS` in `cwd` with stdout and stderr redirected to files (never a terminal), with no
/// data dir but `cwd/data`; returns the output read back from the files.
fn biaslab_in(cwd: &Path, args: &[&str]) -> Output {
    let (so, se) = (cwd.join(".stdout"), cwd.join(".stderr"));
    let status = Command::new(env!("CARGO_BIN_EXE_biaslab"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BIASLAB_DATA")
        .stdout(Stdio::from(std::fs::File::create(&so).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&se).unwrap()))
        .status()
        .expect("the biaslab binary runs");
    let out = Output {
        status,
        stdout: std::fs::read(&so).unwrap(),
        stderr: std::fs::read(&se).unwrap(),
    };
    eprintln!(
        "$ (cd {} && biaslab {})\n--- stdout\n{}--- stderr\n{}",
        cwd.display(),
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A 40×40 image of one colour with a seeded speckle, so crops differ.
fn picture(path: &Path, colour: [u8; 3], seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(40, 40, |x, y| {
        let n = ((x * 7 + y * 13 + seed * 31) % 17) as u8 * 3;
        Rgb([
            colour[0].saturating_add(n),
            colour[1].saturating_add(n),
            colour[2].saturating_add(n),
        ])
    });
    img.save(path).unwrap();
}

/// `root/imgs/{red,blue}/*.png` (ImageFolder, 6 per class, plus one broken file) and `root/flat/*.png`
/// (8 unlabelled scenes) with `root/coco.json` boxing two objects in each.
fn user_folders(root: &Path) {
    for i in 0..6 {
        picture(&root.join(format!("imgs/red/r{i}.png")), [200, 20, 20], i);
        picture(&root.join(format!("imgs/blue/b{i}.png")), [20, 20, 200], i);
    }
    std::fs::write(root.join("imgs/blue/broken.png"), b"not a png").unwrap();
    let mut images = Vec::new();
    let mut anns = Vec::new();
    for i in 0..8u32 {
        picture(&root.join(format!("flat/s{i}.png")), [90, 160, 60], i);
        images.push(format!(
            r#"{{"id":{i},"file_name":"s{i}.png","width":40,"height":40}}"#
        ));
        for (k, (cat, x)) in [(1, 2), (2, 20)].into_iter().enumerate() {
            anns.push(format!(
                r#"{{"id":{},"image_id":{i},"category_id":{cat},"bbox":[{x},4,16,30]}}"#,
                i * 2 + k as u32
            ));
        }
    }
    std::fs::write(
        root.join("coco.json"),
        format!(
            r#"{{"images":[{}],"annotations":[{}],"categories":[{{"id":1,"name":"cup"}},{{"id":2,"name":"plant"}}]}}"#,
            images.join(","),
            anns.join(",")
        ),
    )
    .unwrap();
    std::fs::write(root.join("small.toml"), SMALL_TOML).unwrap();
}

fn rows(path: &Path) -> usize {
    read_parquet(path).unwrap().height()
}

#[test]
fn own_folders_go_through_train_embed_eval_and_invariance() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    user_folders(root);

    // ImageFolder, relative with a trailing slash: the broken file is skipped, listed, exit status 1.
    let o = biaslab_in(
        root,
        &[
            "train",
            "--data",
            "imgs/",
            "--out",
            "run",
            "--config",
            "small.toml",
            "--epochs",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        read_parquet(&root.join("run/skipped.parquet"))
            .unwrap()
            .height()
            >= 1
    );
    assert!(root.join("run/latest").exists());

    // A flat folder by its absolute path trains too.
    let flat_abs = root.join("flat");
    let o = biaslab_in(
        root,
        &[
            "train",
            "--data",
            flat_abs.to_str().unwrap(),
            "--out",
            "run-flat",
            "--config",
            "small.toml",
            "--epochs",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));

    let o = biaslab_in(
        root,
        &[
            "embed",
            "--run",
            "run",
            "--data",
            "imgs/",
            "--out",
            "imgs.parquet",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "the broken file is skipped");
    let df = read_parquet(&root.join("imgs.parquet")).unwrap();
    assert_eq!(df.height(), 12);
    let datasets = df
        .column("dataset")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .map(str::to_string);
    assert_eq!(
        datasets.as_deref(),
        Some("imgs"),
        "named by the folder, not `imgs/`"
    );
    assert!(root.join("imgs.skipped.parquet").is_file());

    // Flat folder + COCO boxes from a file elsewhere: file_names resolve against the folder.
    let o = biaslab_in(
        root,
        &[
            "embed",
            "--run",
            "run",
            "--data",
            "flat/",
            "--crops",
            "Boxes",
            "--annotations",
            "coco.json",
            "--out",
            "boxes.parquet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(rows(&root.join("boxes.parquet")), 16);

    let o = biaslab_in(
        root,
        &[
            "eval",
            "knn",
            "--run",
            "run",
            "--train-data",
            "imgs/",
            "--out",
            "knn.parquet",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(rows(&root.join("knn.parquet")), 1);
    let o = biaslab_in(
        root,
        &[
            "eval",
            "linear",
            "--run",
            "run",
            "--train-data",
            "flat",
            "--crops",
            "boxes",
            "--annotations",
            "coco.json",
            "--out",
            "linear.parquet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lin = read_parquet(&root.join("linear.parquet")).unwrap();
    assert_eq!(
        lin.column("n_classes").unwrap().f64().unwrap().get(0),
        Some(2.0)
    );

    let o = biaslab_in(
        root,
        &[
            "invariance",
            "--run",
            "run",
            "--data",
            "imgs/",
            "--out",
            "inv",
            "--max-objects",
            "4",
        ],
    );
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        text(&o.stderr)
    );
    assert!(rows(&root.join("inv/invariance.parquet")) > 0);

    // `datasets index` writes the index once; the folder then reads it, with the same sample ids.
    let o = biaslab_in(root, &["datasets", "index", "imgs/", "--kind", "Scene"]);
    assert_eq!(o.status.code(), Some(1), "the broken file is listed");
    assert!(
        text(&o.stdout).contains("12 images, 2 labels"),
        "{}",
        text(&o.stdout)
    );
    assert!(root.join("imgs/index.parquet").is_file());
    let o = biaslab_in(root, &["datasets", "index", "imgs"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    let o = biaslab_in(
        root,
        &[
            "embed",
            "--run",
            "run",
            "--data",
            "imgs",
            "--out",
            "indexed.parquet",
        ],
    );
    assert!(o.status.success(), "the index lists only readable images");
    let ids = |p: &str| -> Vec<String> {
        let df = read_parquet(&root.join(p)).unwrap();
        let c = df.column("id").unwrap().str().unwrap().clone();
        c.iter().map(|v| v.unwrap().to_string()).collect()
    };
    assert_eq!(ids("indexed.parquet"), ids("imgs.parquet"));
    let kind = read_parquet(&root.join("indexed.parquet")).unwrap();
    assert_eq!(
        kind.column("kind").unwrap().str().unwrap().get(0),
        Some("scene")
    );
}

#[test]
fn unknown_dataset_names_the_closest_one() {
    let tmp = tempfile::tempdir().unwrap();
    picture(&tmp.path().join("data/kitchen-scenes/a.png"), [1, 2, 3], 0);
    let o = biaslab_in(
        tmp.path(),
        &["train", "--data", "kitchen-scene", "--out", "r"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("did you mean `kitchen-scenes`?"),
        "{}",
        text(&o.stderr)
    );
    // A shipped dataset not fetched yet is suggested as well.
    let o = biaslab_in(
        tmp.path(),
        &["embed", "--run", "r", "--data", "emoji-gogle", "--out", "x"],
    );
    assert!(
        text(&o.stderr).contains("did you mean `emoji-google`?"),
        "{}",
        text(&o.stderr)
    );
    // Spelled right but not fetched: the way out is fetching, not a suggestion of the same name.
    let o = biaslab_in(
        tmp.path(),
        &[
            "embed",
            "--run",
            "r",
            "--data",
            "emoji-google",
            "--out",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("`emoji-google` is known but not fetched")
            && err.contains("biaslab datasets fetch emoji-google")
            && !err.contains("did you mean"),
        "{err}"
    );
    let o = biaslab_in(tmp.path(), &["train", "--data", "zzz", "--out", "r"]);
    assert!(
        !text(&o.stderr).contains("did you mean"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn datasets_list_works_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let o = biaslab_in(tmp.path(), &["datasets", "list", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for name in ["emoji-google", "gcompris-photos", "memes"] {
        assert!(out.contains(name), "{out}");
    }
}

/// Each method with no `--config` and one epoch (warm-up clipped with a note; SimCLR and MoCo on two views, each with its own normaliser), its
/// values in any case, and the epoch line in the redirected stdout and in train.log.
#[test]
fn every_method_runs_with_no_config_and_one_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for i in 0..8 {
        picture(
            &root.join(format!("pics/p{i}.png")),
            [30 * i as u8, 90, 200],
            i,
        );
    }
    for (method, normaliser) in [
        ("SwAV", "loss/ln K"),
        ("simclr", "loss/ln(2B-1)"),
        ("MoCo", "loss/ln(1+moco_k)"),
        ("dino", "loss/ln K"),
    ] {
        let run = format!("run-{method}");
        let o = biaslab_in(
            root,
            &[
                "train",
                "--data",
                "pics",
                "--out",
                &run,
                "--method",
                method,
                "--epochs",
                "1",
                "--batch-size",
                "4",
            ],
        );
        assert!(o.status.success(), "{method}: {}", text(&o.stderr));
        let stdout = text(&o.stdout);
        assert!(
            stdout.contains("note: warmup_epochs 5 exceeds the run's 1 epoch(s); using 0"),
            "{stdout}"
        );
        let log = std::fs::read_to_string(root.join(&run).join("train.log")).unwrap();
        for out in [&stdout, &log] {
            let line = out
                .lines()
                .find(|l| l.starts_with("epoch   1/1: loss "))
                .unwrap_or_else(|| panic!("{method}: no epoch line in\n{out}"));
            assert!(
                line.contains(normaliser) && line.contains(", lr ") && line.contains("images/s"),
                "{line}"
            );
        }
    }
    let help = biaslab_in(root, &["train", "--help"]);
    let help = text(&help.stdout);
    for d in [
        "[default: 100",
        "[default: 32",
        "[default: 31",
        "[default: swav",
    ] {
        assert!(help.contains(d), "{d} missing in\n{help}");
    }
}

/// A user's embeddings with only the four required columns, written by Python polars, through `analyze
/// all`: the analyses needing `label`, `set_id` or `prototype` are skipped and named (exit status 1), the
/// others written. Then the README's torchvision example, run as it is, into `analyze all`.
#[test]
fn user_embeddings_from_python_run_through_analyze_all() {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root_dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup`",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let minimal = r#"
import numpy as np, polars as pl
rng = np.random.default_rng(0)
n = 60
pl.DataFrame({
    "id": [f"c{i}" for i in range(n)],
    "image_id": [f"img{i // 2}" for i in range(n)],
    "dataset": ["mine" if i < 30 else "theirs" for i in range(n)],
    "embedding": rng.normal(size=(n, 16)).astype(np.float32).tolist(),
}).write_parquet("minimal.parquet")
"#;
    let st = Command::new(&python)
        .args(["-c", minimal])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success());
    let o = biaslab_in(
        root,
        &[
            "analyze",
            "all",
            "--embeddings",
            "minimal.parquet",
            "--out",
            "rep",
            "--no-plots",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    for skipped in [
        "collapse skipped: needs column `label`",
        "invariance skipped: needs column `label` and `set_id`",
        "prototypes skipped: needs column `prototype`",
        "knn skipped: needs column `label`",
    ] {
        assert!(err.contains(skipped), "{skipped} missing in\n{err}");
    }
    for written in [
        "spectrum.parquet",
        "uniformity.parquet",
        "name_that_dataset.parquet",
    ] {
        assert!(root.join("rep").join(written).is_file(), "{written}");
    }
    assert!(!root.join("rep/collapse.parquet").exists());
    let summary = std::fs::read_to_string(root.join("rep/summary.md")).unwrap();
    assert!(summary.contains("Skipped analyses"), "{summary}");

    // The README example, byte for byte, on an ImageFolder tree.
    let example = root_dir.join("examples/torchvision_embeddings.py");
    let readme = std::fs::read_to_string(root_dir.join("README.md")).unwrap();
    let code = std::fs::read_to_string(&example).unwrap();
    assert!(
        readme.contains(code.trim_end()),
        "README must show {} as it is",
        example.display()
    );
    for i in 0..4 {
        picture(&root.join(format!("imgs/red/r{i}.png")), [200, 20, 20], i);
        picture(&root.join(format!("imgs/blue/b{i}.png")), [20, 20, 200], i);
    }
    let st = Command::new(&python)
        .arg(&example)
        .args(["imgs", "tv.parquet"])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success());
    let o = biaslab_in(
        root,
        &[
            "analyze",
            "all",
            "--embeddings",
            "tv.parquet",
            "--out",
            "tv",
            "--no-plots",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("prototypes skipped"),
        "{}",
        text(&o.stderr)
    );
    // `label` is there, so kNN ran (its level on 8 random-init features is not the point here).
    let knn = read_parquet(&root.join("tv/knn.parquet")).unwrap();
    let acc = knn.column("accuracy").unwrap().f64().unwrap().get(0);
    assert!(acc.is_some_and(|a| (0.0..=1.0).contains(&a)), "{acc:?}");
}

/// Files other tools write: polars' fixed-size `Array` embeddings, and extra columns of types this build
/// of polars has no feature for (decimal, duration, time). The lazy scan panicked on both (rc 101); the
/// embeddings must be read and the extra columns ignored, as any column analyses do not use.
#[test]
fn embeddings_with_fixed_size_arrays_and_foreign_extra_columns_are_read() {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root_dir.join(".venv/bin/python");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let script = r#"
from decimal import Decimal
import numpy as np, polars as pl
rng = np.random.default_rng(1)
n, d = 40, 8
base = pl.DataFrame({
    "id": [f"c{i}" for i in range(n)],
    "image_id": [f"img{i // 2}" for i in range(n)],
    "dataset": ["a" if i < 20 else "b" for i in range(n)],
    "label": [["fridge", "chair"][i % 2] for i in range(n)],
    "embedding": rng.normal(size=(n, d)).tolist(),
})
base.write_parquet("list.parquet")
base.with_columns(pl.col("embedding").cast(pl.Array(pl.Float32, d))).write_parquet("array.parquet")
base.with_columns(
    pl.Series("price", [Decimal("1.50")] * n, dtype=pl.Decimal(10, 2)),
    pl.Series("took", [5] * n).cast(pl.Duration("ms")),
).write_parquet("extra.parquet")
"#;
    let st = Command::new(&python)
        .args(["-c", script])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success());
    let want = biaslab::analyze::embeddings::read_embeddings(&root.join("list.parquet")).unwrap();
    for file in ["array.parquet", "extra.parquet"] {
        let got = biaslab::analyze::embeddings::read_embeddings(&root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((got.len(), got.dim), (want.len(), want.dim), "{file}");
        for i in 0..want.len() {
            for (a, b) in got.row(i).iter().zip(want.row(i)) {
                // list.parquet holds f64, array.parquet f32: equal after the reader's cast to f32
                assert_eq!(a, b, "{file} row {i}");
            }
        }
        let o = biaslab_in(
            root,
            &[
                "analyze",
                "collapse",
                "--embeddings",
                file,
                "--out",
                &format!("rep-{file}"),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{file}: {}", text(&o.stderr));
    }
}
