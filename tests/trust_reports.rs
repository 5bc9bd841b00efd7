//! Issue 23 (Trust II) and 20, report side: `analyze --out` deletes nothing it did not write, never an
//! input; a killed analyze's temporaries go; plot names never collide; collapse prints its two parts and
//! the ratio only where it is defined.
use std::path::Path;

mod common;

use biaslab::analyze::embeddings::{write_embeddings, EmbeddingRow};
use biaslab::report::io::read_parquet;
use biaslab::report::owned::MARKER_FILE;

/// `n_img` scenes of 3 labelled crops each in dataset `ds`: embedding = u_image + b·u_label (+ a little
/// deterministic noise), so S_cat − S_base grows with `b` and is 0 (up to noise) at b = 0.
fn rows(ds: &str, n_img: usize, b: f32) -> Vec<EmbeddingRow> {
    let d = n_img + 3;
    let mut out = Vec::new();
    for img in 0..n_img {
        for l in 0..3 {
            let i = out.len();
            let embedding = (0..d)
                .map(|j| {
                    let noise = ((i * 31 + j * 17) as f64 * 0.77).sin() as f32 * 0.05;
                    noise + if j == img { 1.0 } else { 0.0 } + if j == n_img + l { b } else { 0.0 }
                })
                .collect();
            out.push(EmbeddingRow {
                id: format!("{ds}-{i}"),
                image_id: format!("{ds}-img{img}"),
                label: Some(format!("l{l}")),
                dataset: ds.into(),
                kind: "scene".into(),
                set_id: None,
                bbox: None,
                prototype: Some(l as i32),
                embedding,
            });
        }
    }
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn analyze(what: &str, inputs: &[&Path], out: &Path) -> std::process::Output {
    let mut args = vec!["analyze", what, "--embeddings"];
    args.extend(inputs.iter().map(|i| p(i)));
    args.extend(["--out", p(out), "--no-plots"]);
    common::run_biaslab(&args, &[])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// The reproduction: `op/docs` held summary.md, important.txt and sub/; analyze deleted them all.
#[test]
fn analyze_into_a_directory_with_a_summary_md_of_its_own_deletes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    write_embeddings(&emb, &rows("s", 8, 0.6)).unwrap();
    let docs = t.path().join("op/docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("summary.md"), "x").unwrap();
    std::fs::write(docs.join("important.txt"), "p").unwrap();
    std::fs::write(docs.join("sub/deep.txt"), "q").unwrap();
    let o = analyze("spectrum", &[&emb], &docs);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("was not written by biaslab"),
        "{}",
        text(&o)
    );
    assert_eq!(names(&docs), ["important.txt", "sub", "summary.md"]);
    assert_eq!(
        std::fs::read_to_string(docs.join("sub/deep.txt")).unwrap(),
        "q"
    );
    // nothing was left beside it either
    assert_eq!(names(&t.path().join("op")), ["docs"]);
}

// A biaslab report with one foreign file in a subfolder is refused with the file named; a clean one is
// replaced whole.
#[test]
fn a_report_with_a_nested_foreign_file_is_refused_and_a_clean_one_replaced() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    write_embeddings(&emb, &rows("s", 8, 0.6)).unwrap();
    let out = t.path().join("r");
    let o = analyze("uniformity", &[&emb], &out);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    assert!(out.join(MARKER_FILE).is_file());
    let marker = std::fs::read_to_string(out.join(MARKER_FILE)).unwrap();
    assert!(
        marker.contains("\"tool\": \"biaslab\"") && marker.contains("uniformity.parquet"),
        "{marker}"
    );

    // a clean report is replaced whole: the old analysis' file is gone
    let o = analyze("spectrum", &[&emb], &out);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let now = names(&out);
    assert!(
        now.contains(&"spectrum.parquet".into()) && !now.contains(&"uniformity.parquet".into()),
        "{now:?}"
    );

    std::fs::create_dir(out.join("mine")).unwrap();
    std::fs::write(out.join("mine/notes.txt"), "keep").unwrap();
    let before = names(&out);
    let o = analyze("uniformity", &[&emb], &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`mine/`") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(names(&out), before);
    assert_eq!(
        std::fs::read_to_string(out.join("mine/notes.txt")).unwrap(),
        "keep"
    );
}

// The reproduction: `--embeddings op/r/boxes.parquet --out op/r` deleted its own input.
#[test]
fn analyze_with_its_input_inside_out_refuses_and_keeps_the_input() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    write_embeddings(&emb, &rows("s", 8, 0.6)).unwrap();
    let out = t.path().join("r");
    let o = analyze("spectrum", &[&emb], &out);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let inside = out.join("boxes.parquet");
    std::fs::copy(&emb, &inside).unwrap();
    let o = analyze("spectrum", &[&inside], &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is inside --out"), "{}", text(&o));
    assert!(inside.is_file());
    // also when given through a glob
    let pattern = out.join("*.parquet");
    let o = analyze("spectrum", &[&pattern], &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(inside.is_file());
}

// Issue 23 item 7: a `.tmp-analyze-*` left by SIGKILL was never removed. One whose writer is gone goes;
// one holding a file biaslab did not write stays.
#[test]
fn stale_tmp_analyze_of_a_killed_run_is_removed_and_a_foreign_one_kept() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    write_embeddings(&emb, &rows("s", 8, 0.6)).unwrap();
    let stale = t.path().join(".tmp-analyze-AAAAAA");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("spectrum.parquet"), "half").unwrap();
    // a pid above the kernel's pid_max: a process that is certainly gone
    std::fs::write(
        stale.join(MARKER_FILE),
        r#"{"tool":"biaslab","version":"0.1.0","kind":"analyze","pid":1073741824,"files":["spectrum.parquet"]}"#,
    )
    .unwrap();
    let foreign = t.path().join(".tmp-analyze-mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "k").unwrap();
    let o = analyze("spectrum", &[&emb], &t.path().join("r"));
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    assert!(
        text(&o).contains("left by an interrupted analyze"),
        "{}",
        text(&o)
    );
    assert!(!stale.exists());
    assert!(foreign.join("keep.txt").is_file());
}

// Issue 23 item 5: datasets `a/b`, `a_b` and `a b` wrote one plot; 250 characters failed the report.
#[test]
fn datasets_whose_names_sanitise_alike_or_run_long_get_their_own_plots() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    let long = "d".repeat(250);
    let mut all = Vec::new();
    for ds in ["a/b", "a_b", "a b", long.as_str()] {
        all.extend(rows(ds, 6, 0.6));
    }
    write_embeddings(&emb, &all).unwrap();
    let out = t.path().join("r");
    let o = common::run_biaslab(
        &[
            "analyze",
            "prototypes",
            "--embeddings",
            p(&emb),
            "--out",
            p(&out),
        ],
        &[],
    );
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let plots: Vec<String> = names(&out)
        .into_iter()
        .filter(|n| n.starts_with("prototypes_"))
        .collect();
    assert_eq!(plots.len(), 4, "{plots:?}");
    assert!(plots.iter().all(|n| n.len() < 120), "{plots:?}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for n in &plots {
        assert_eq!(summary.matches(n.as_str()).count(), 1, "{n} in {summary}");
    }
}

// Issue 20: the ratio printed `28.216 [-2122.121, 384.597]` where S_cat ≈ S_base. With no label signal
// (b = 0) it is withheld with the reason; with one (b = 0.6) it is given; Δscene and Δcat always are.
#[test]
fn collapse_gives_its_two_parts_and_the_ratio_only_where_delta_cat_is_clear_of_zero() {
    let t = tempfile::tempdir().unwrap();
    let emb = t.path().join("emb.parquet");
    let mut all = rows("nolabel", 12, 0.0);
    all.extend(rows("label", 12, 0.6));
    write_embeddings(&emb, &all).unwrap();
    let out = t.path().join("r");
    let o = analyze("collapse", &[&emb], &out);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let df = read_parquet(&out.join("collapse.parquet")).unwrap();
    let get =
        |c: &str| -> Vec<Option<f64>> { df.column(c).unwrap().f64().unwrap().iter().collect() };
    let ds: Vec<String> = df
        .column("dataset")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    let row = |name: &str| ds.iter().position(|d| d == name).unwrap();
    let (nl, l) = (row("nolabel"), row("label"));
    for c in [
        "delta_scene",
        "delta_scene_lo",
        "delta_scene_hi",
        "delta_cat",
        "delta_cat_lo",
        "delta_cat_hi",
    ] {
        assert!(get(c)[nl].is_some() && get(c)[l].is_some(), "{c}");
    }
    let (ss, sc, sb) = (
        get("s_scene")[l].unwrap(),
        get("s_cat")[l].unwrap(),
        get("s_base")[l].unwrap(),
    );
    assert!((get("delta_scene")[l].unwrap() - (ss - sb)).abs() < 1e-12);
    assert!((get("delta_cat")[l].unwrap() - (sc - sb)).abs() < 1e-12);
    assert!(get("delta_cat_lo")[nl].unwrap() <= 0.0 && get("delta_cat_hi")[nl].unwrap() >= 0.0);
    assert_eq!(get("collapse_index")[nl], None);
    assert_eq!(get("collapse_index_lo")[nl], None);
    let ci = get("collapse_index")[l].unwrap();
    assert!((ci - (ss - sb) / (sc - sb)).abs() < 1e-9, "{ci}");
    let notes: Vec<Option<String>> = df
        .column("collapse_index_note")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect();
    assert!(notes[nl]
        .as_deref()
        .unwrap()
        .starts_with("undefined (S_cat ≈ S_base)"));
    assert_eq!(notes[l], None);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("undefined (S_cat ≈ S_base)") && summary.contains("Δscene"),
        "{summary}"
    );
}
