//! Runs the real `biaslab analyze all` on generated embeddings files and checks the report directory:
//! every Parquet/CSV with its columns and provenance, the plots, summary.md, and bad input reported.
use std::path::Path;

mod common;

use biaslab::analyze::embeddings::{write_embeddings, EmbeddingRow};
use biaslab::report::io::read_parquet;

/// Two datasets: `scenes` (4 crops of 4 labels per image, embedding = u_image + ½u_label + noise) and
/// `objects` (2 labels per image, u_label + noise); unit 39 marks `objects`; sets of 3 views.
fn rows() -> Vec<EmbeddingRow> {
    let mut out = Vec::new();
    let d = 40;
    for (ds, pull_image) in [("scenes", true), ("objects", false)] {
        for img in 0..24 {
            for c in 0..4 {
                let label = if pull_image { c } else { (img + c / 2) % 4 };
                let i = out.len();
                let emb: Vec<f32> = (0..d)
                    .map(|j| {
                        let noise = ((i * 31 + j * 17) as f64 * 0.77).sin() as f32 * 0.1;
                        let image_part = if pull_image && j == img { 1.0 } else { 0.0 };
                        let label_part = if j == 24 + label {
                            if pull_image {
                                0.5
                            } else {
                                1.0
                            }
                        } else {
                            0.0
                        };
                        noise
                            + image_part
                            + label_part
                            + if ds == "objects" && j == 39 { 0.7 } else { 0.0 }
                    })
                    .collect();
                out.push(EmbeddingRow {
                    id: format!("{ds}-{img}-{c}"),
                    image_id: format!("{ds}-{img}"),
                    label: Some(format!("l{label}")),
                    dataset: ds.to_string(),
                    kind: if pull_image { "scene" } else { "object" }.to_string(),
                    set_id: Some(format!("{ds}-set{}", i / 3)),
                    bbox: None,
                    prototype: Some(((img + c) % 5) as i32),
                    embedding: emb,
                });
            }
        }
    }
    out
}

fn biaslab(args: &[&str]) -> std::process::Output {
    common::run_biaslab(args, &[])
}

fn columns(path: &Path) -> Vec<String> {
    read_parquet(path)
        .unwrap()
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn analyze_all_writes_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    write_embeddings(&emb, &rows()).unwrap();
    let out = dir.path().join("report");
    let o = biaslab(&[
        "analyze",
        "all",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "5",
    ]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let collapse = read_parquet(&out.join("collapse.parquet")).unwrap();
    assert_eq!(collapse.height(), 2);
    for c in [
        "dataset",
        "n_images",
        "n_crops",
        "s_scene",
        "s_cat",
        "s_base",
        "collapse_index",
        "auroc",
        "scene_leak_at_1",
        "code_agreement_scene",
        "code_agreement_cat",
        "collapse_index_lo",
        "collapse_index_hi",
        "auroc_lo",
        "auroc_hi",
        "pairs",
        "n_pairs",
        "input_file",
        "input_sha256",
        "seed",
    ] {
        assert!(collapse.column(c).is_ok(), "collapse.parquet lacks {c}");
    }
    let ds = collapse.column("dataset").unwrap().str().unwrap().clone();
    let ci = collapse
        .column("collapse_index")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let auroc = collapse.column("auroc").unwrap().f64().unwrap().clone();
    let idx = |name: &str| (0..2).find(|&i| ds.get(i) == Some(name)).unwrap();
    let (s, o_) = (idx("scenes"), idx("objects"));
    // Scenes are pulled toward their image: a crop is closer to its scene-mates than to its category.
    assert!(
        ci.get(s).unwrap() > 1.0 && auroc.get(s).unwrap() > 0.9,
        "scenes ci {:?} auroc {:?}",
        ci.get(s),
        auroc.get(s)
    );
    assert!(
        ci.get(o_).unwrap() < 0.5 && auroc.get(o_).unwrap() < 0.5,
        "objects ci {:?} auroc {:?}",
        ci.get(o_),
        auroc.get(o_)
    );
    let lo = collapse
        .column("collapse_index_lo")
        .unwrap()
        .f64()
        .unwrap()
        .get(s)
        .unwrap();
    let hi = collapse
        .column("collapse_index_hi")
        .unwrap()
        .f64()
        .unwrap()
        .get(s)
        .unwrap();
    assert!(lo <= ci.get(s).unwrap() && ci.get(s).unwrap() <= hi);
    assert_eq!(
        collapse.column("pairs").unwrap().str().unwrap().get(0),
        Some("exact")
    );
    assert_eq!(
        collapse.column("seed").unwrap().i64().unwrap().get(0),
        Some(5)
    );
    assert_eq!(
        collapse
            .column("input_sha256")
            .unwrap()
            .str()
            .unwrap()
            .get(0)
            .unwrap()
            .len(),
        64
    );

    for (file, cols) in [
        (
            "spectrum.parquet",
            &["dataset", "n", "dim", "rankme", "alpha_req", "n_dead"][..],
        ),
        ("singular_values.parquet", &["dataset", "rank", "value"][..]),
        (
            "uniformity.parquet",
            &["dataset", "alignment", "uniformity"][..],
        ),
        (
            "invariance.parquet",
            &["dataset", "transform", "k", "score"][..],
        ),
        (
            "prototypes.parquet",
            &["dataset", "entropy", "perplexity_ratio", "dead"][..],
        ),
        ("knn.parquet", &["dataset", "k", "accuracy"][..]),
        ("name_that_dataset.parquet", &["accuracy", "chance"][..]),
    ] {
        let have = columns(&out.join(file));
        for c in cols.iter().chain(&["input_file", "input_sha256", "seed"]) {
            assert!(have.iter().any(|h| h == c), "{file} lacks {c}: {have:?}");
        }
    }
    let sv = read_parquet(&out.join("singular_values.parquet")).unwrap();
    assert_eq!(sv.height(), 2 * 40);
    let inv = read_parquet(&out.join("invariance.parquet")).unwrap();
    assert_eq!(inv.height(), 4); // 2 datasets × k ∈ {10, 25}
    let ntd = read_parquet(&out.join("name_that_dataset.parquet")).unwrap();
    let acc = ntd
        .column("accuracy")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    let chance = ntd.column("chance").unwrap().f64().unwrap().get(0).unwrap();
    assert!(acc > chance, "{acc} vs {chance}"); // unit 39 separates the datasets

    for png in [
        "collapse_hist_scenes.png",
        "collapse_hist_objects.png",
        "spectrum.png",
        "invariance.png",
        "prototypes_scenes.png",
    ] {
        let img = image::open(out.join(png)).unwrap();
        assert_eq!((img.width(), img.height()), (900, 560), "{png}");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("sha256")
            && summary.contains("seed: 5")
            && summary.contains("Collapse across crops")
    );
    // CI is stated with its interval.
    assert!(
        summary.contains(&format!("{:.4} [{:.4}, {:.4}]", ci.get(s).unwrap(), lo, hi)),
        "{summary}"
    );
}

#[test]
fn csv_flag_writes_csv() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    write_embeddings(&emb, &rows()).unwrap();
    let out = dir.path().join("r");
    let o = biaslab(&[
        "analyze",
        "spectrum",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--csv",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("spectrum.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("dataset,n,dim,rank_cap,rankme,alpha_req,n_dead"));
    assert_eq!(csv.lines().count(), 3);
    assert!(!out.join("collapse.csv").exists());
}

#[test]
fn single_label_dataset_gets_a_note_and_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    let mut r = rows();
    r.iter_mut()
        .filter(|r| r.dataset == "objects")
        .for_each(|r| r.label = Some("only".into()));
    write_embeddings(&emb, &r).unwrap();
    let out = dir.path().join("r");
    let o = biaslab(&[
        "analyze",
        "collapse",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let df = read_parquet(&out.join("collapse.parquet")).unwrap();
    let notes = df.column("note").unwrap().str().unwrap().clone();
    let ds = df.column("dataset").unwrap().str().unwrap().clone();
    let i = (0..2).find(|&i| ds.get(i) == Some("objects")).unwrap();
    assert!(
        notes.get(i).unwrap().contains("`label`"),
        "{:?}",
        notes.get(i)
    );
    assert!(df
        .column("collapse_index")
        .unwrap()
        .f64()
        .unwrap()
        .get(i)
        .is_none());
    assert!(notes.get(1 - i).is_none());
}

#[test]
fn missing_file_fails_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = biaslab(&[
        "analyze",
        "all",
        "--embeddings",
        "/nonexistent/e.parquet",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/e.parquet"));
}

#[test]
fn shards_read_through_a_glob_give_the_one_file_report() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows();
    let whole = dir.path().join("whole.parquet");
    write_embeddings(&whole, &all).unwrap();
    // three contiguous shards, one with a column the analyses do not read
    let shards = dir.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    for (k, part) in all.chunks(all.len().div_ceil(3)).enumerate() {
        let path = shards.join(format!("emb-{k}.parquet"));
        write_embeddings(&path, part).unwrap();
        if k == 1 {
            let mut df = read_parquet(&path).unwrap();
            let extra = vec!["anything"; df.height()];
            df.with_column(polars::prelude::Column::new("user_note".into(), extra))
                .unwrap();
            biaslab::report::io::write_parquet(&mut df, &path).unwrap();
        }
    }
    let report = |input: &str, out: &Path| {
        let o = biaslab(&[
            "analyze",
            "collapse",
            "--embeddings",
            input,
            "--out",
            out.to_str().unwrap(),
            "--no-plots",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_parquet(&out.join("collapse.parquet")).unwrap()
    };
    let a = report(whole.to_str().unwrap(), &dir.path().join("a"));
    let pattern = shards.join("emb-*.parquet");
    let b = report(pattern.to_str().unwrap(), &dir.path().join("b"));
    assert_eq!(a.height(), 2);
    for c in [
        "n_crops",
        "collapse_index",
        "collapse_index_lo",
        "collapse_index_hi",
        "auroc",
    ] {
        assert!(
            a.column(c).unwrap().equals(b.column(c).unwrap()),
            "column {c} differs"
        );
    }
    // a pattern that matches nothing is named
    let o = biaslab(&[
        "analyze",
        "collapse",
        "--embeddings",
        shards.join("nothing-*.parquet").to_str().unwrap(),
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing-*.parquet") && err.contains("no file matches"),
        "{err}"
    );
}

// Issue 13: one row with prototype = 2147483647 made `analyze` allocate 16 GiB and abort. Now the row is
// named in a note and the other analyses run (exit status 1: finished, something did not apply).
#[test]
fn huge_prototype_id_is_a_note_naming_the_row_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    let mut r = rows();
    r[5].prototype = Some(i32::MAX);
    let bad = r[5].id.clone();
    write_embeddings(&emb, &r).unwrap();
    let out = dir.path().join("r");
    let o = biaslab(&[
        "analyze",
        "all",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let df = read_parquet(&out.join("prototypes.parquet")).unwrap();
    let notes: Vec<String> = df
        .column("note")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("row id `{bad}`")) && n.contains("2147483647")),
        "{notes:?}"
    );
    assert!(out.join("spectrum.parquet").is_file() && out.join("summary.md").is_file());
}

// Issue 12: summary.md rows and plot legends were 100-character paths; spectrum hid n ≤ d; no chance or
// interval beside accuracies; "CI" meant the collapse index.
#[test]
fn report_by_file_names_rows_by_cell_and_states_chance_intervals_and_rank_cap() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows();
    let mut files = Vec::new();
    for (cell, part) in [
        "objects__swav__multicrop__base__seed31",
        "scenes__simclr__two-large__base__seed31",
    ]
    .iter()
    .zip(all.chunks(all.len() / 2))
    {
        let d = dir.path().join("reports/demo/quickstart/cells").join(cell);
        std::fs::create_dir_all(&d).unwrap();
        let mut part = part.to_vec();
        if cell.contains("simclr") {
            // SimCLR has no prototypes: no codes, no row in the prototype table.
            part.iter_mut().for_each(|r| r.prototype = None);
        }
        let f = d.join("boxes.parquet");
        write_embeddings(&f, &part).unwrap();
        files.push(f);
    }
    let out = dir.path().join("r");
    let mut args = vec!["analyze", "all", "--group-by", "file", "--embeddings"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    let o = biaslab(&args);
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| objects__swav__multicrop__base__seed31 |"),
        "{summary}"
    );
    assert!(!summary.contains("| /"), "a row named by a path: {summary}");
    assert!(
        summary.contains("collapse index Δscene/Δcat [95% CI]")
            && summary.contains("| Δcat [95% CI] |")
            && !summary.contains("| CI |"),
        "{summary}"
    );
    assert!(
        summary.contains("chance (majority)") && summary.contains("rank cap"),
        "{summary}"
    );
    // 96 rows of 40 dimensions: n > d, no note; the prototype table has the SwAV cell only.
    let p = read_parquet(&out.join("prototypes.parquet")).unwrap();
    assert_eq!(p.height(), 1);
    assert!(summary.contains("no prototype codes"), "{summary}");
    let knn = read_parquet(&out.join("knn.parquet")).unwrap();
    for c in ["accuracy_lo", "accuracy_hi", "chance"] {
        assert!(
            knn.column(c).unwrap().f64().unwrap().get(0).is_some(),
            "{c}"
        );
    }
    let s = read_parquet(&out.join("spectrum.parquet")).unwrap();
    assert_eq!(
        s.column("rank_cap").unwrap().i64().unwrap().get(0),
        Some(40)
    );
    for png in [
        "spectrum.png",
        "invariance.png",
        "prototypes_objects__swav__multicrop__base__seed31.png",
    ] {
        assert!(out.join(png).is_file(), "{png}");
    }
}
