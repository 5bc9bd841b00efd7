//! Issue 20, context control: whole-box crops beside object-only crops (a box's object pixels alone on the
//! neutral fill) tell crops that land together because their objects merged from crops that share context.
use std::path::Path;

mod common;

use biaslab::analyze::embeddings::{from_rows, row, EmbeddingRow, OBJECT_ONLY};
use biaslab::analyze::run::{analyze_embeddings, Analysis, AnalyzeOptions};
use biaslab::report::io::read_parquet;

/// 30 scenes × 3 labelled objects. A whole box = u_label + `context`·u_image; its object-only crop =
/// u_label + `merge`·u_image; both with a little deterministic noise of their own.
fn planted(context: f32, merge: f32) -> biaslab::analyze::embeddings::Embeddings {
    let (n_img, d) = (30, 33);
    let mut rows: Vec<EmbeddingRow> = Vec::new();
    let mut transforms = Vec::new();
    for (pull, transform) in [(context, None), (merge, Some(OBJECT_ONLY))] {
        for img in 0..n_img {
            for l in 0..3 {
                let i = rows.len();
                let v = (0..d)
                    .map(|j| {
                        let noise = ((i * 37 + j * 11) as f64 * 0.91).sin() as f32 * 0.15;
                        noise
                            + if j == l { 1.0 } else { 0.0 }
                            + if j == 3 + img { pull } else { 0.0 }
                    })
                    .collect();
                rows.push(row(
                    i,
                    &format!("img{img}"),
                    Some(["a", "b", "c"][l]),
                    None,
                    v,
                ));
                transforms.push(transform.map(str::to_string));
            }
        }
    }
    let mut e = from_rows(&rows).unwrap();
    e.transforms = transforms;
    e
}

/// (pixels → (Δscene, lo, hi)), and the object-only row's context_delta_scene [lo, hi].
#[allow(clippy::type_complexity)]
fn measured(
    dir: &Path,
    context: f32,
    merge: f32,
) -> (Vec<(String, f64, f64, f64)>, (f64, f64, f64)) {
    let out = dir.join(format!("r-{context}-{merge}"));
    let opts = AnalyzeOptions {
        analyses: vec![Analysis::Collapse],
        plots: false,
        ..AnalyzeOptions::default()
    };
    analyze_embeddings(&planted(context, merge), &out, &opts).unwrap();
    let df = read_parquet(&out.join("collapse.parquet")).unwrap();
    let f = |c: &str| -> Vec<Option<f64>> { df.column(c).unwrap().f64().unwrap().iter().collect() };
    let pixels: Vec<String> = df
        .column("pixels")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    let (ds, lo, hi) = (f("delta_scene"), f("delta_scene_lo"), f("delta_scene_hi"));
    let rows = (0..df.height())
        .map(|i| {
            (
                pixels[i].clone(),
                ds[i].unwrap(),
                lo[i].unwrap(),
                hi[i].unwrap(),
            )
        })
        .collect();
    let k = pixels.iter().position(|p| p == OBJECT_ONLY).unwrap();
    let ctx = (
        f("context_delta_scene")[k].unwrap(),
        f("context_delta_scene_lo")[k].unwrap(),
        f("context_delta_scene_hi")[k].unwrap(),
    );
    let all = pixels.iter().position(|p| p == "all").unwrap();
    assert_eq!(
        f("context_delta_scene")[all],
        None,
        "the whole-box row has no context column"
    );
    (rows, ctx)
}

#[test]
fn a_planted_context_effect_and_a_planted_object_merge_are_told_apart() {
    let t = tempfile::tempdir().unwrap();
    // Context: whole boxes of one scene pull together, their objects alone do not.
    let (rows, (c, lo, hi)) = measured(t.path(), 0.8, 0.0);
    let get =
        |rows: &[(String, f64, f64, f64)], p: &str| rows.iter().find(|r| r.0 == p).unwrap().clone();
    let (_, ds_all, all_lo, _) = get(&rows, "all");
    let (_, _, obj_lo, obj_hi) = get(&rows, OBJECT_ONLY);
    assert!(
        all_lo > 0.1,
        "boxes pull together: Δscene {ds_all} [{all_lo}, …]"
    );
    assert!(
        obj_lo < 0.0 && obj_hi > 0.0 || obj_hi < 0.05,
        "objects alone do not: [{obj_lo}, {obj_hi}]"
    );
    assert!(lo > 0.1, "context explains the pull: {c} [{lo}, {hi}]");

    // Merge: the objects themselves carry the scene, with or without their context.
    let (rows, (c, lo, hi)) = measured(t.path(), 0.8, 0.8);
    let (_, _, obj_lo, _) = get(&rows, OBJECT_ONLY);
    assert!(obj_lo > 0.1, "objects alone pull together: [{obj_lo}, …]");
    assert!(
        lo < 0.0 && hi > 0.0,
        "context explains none of it: {c} [{lo}, {hi}]"
    );
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// The user's path: a composed scene set (masks beside the images), a tiny run, `embed --crops boxes` and
// `--crops object-only`, one `analyze collapse` over both files.
#[test]
fn object_only_crops_of_a_composed_set_pair_with_its_boxes_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::composed(&data);
    let cfg = t.path().join("small.toml");
    std::fs::write(
        &cfg,
        "nmb_crops = [2]\nsize_crops = [24]\nmin_scale_crops = [0.3]\nmax_scale_crops = [1.0]\n\
         nmb_prototypes = [8]\nqueue_length = 0\nbatch_size = 4\nwarmup_epochs = 0\nwidth = 4\n\
         hidden_mlp = 16\nfeat_dim = 8\n",
    )
    .unwrap();
    let env = [("BIASLAB_DATA", data.to_str().unwrap())];
    let run = t.path().join("run");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let o = common::run_biaslab(
        &[
            "train",
            "--data",
            "t-scenes-train",
            "--out",
            &p(&run),
            "--config",
            &p(&cfg),
            "--max-steps",
            "1",
        ],
        &env,
    );
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let (boxes, only) = (
        t.path().join("boxes.parquet"),
        t.path().join("only.parquet"),
    );
    for (crops, out) in [("boxes", &boxes), ("object-only", &only)] {
        let o = common::run_biaslab(
            &[
                "embed",
                "--run",
                &p(&run),
                "--data",
                "t-scenes-test",
                "--crops",
                crops,
                "--out",
                &p(out),
            ],
            &env,
        );
        assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    }
    let (b, o_) = (read_parquet(&boxes).unwrap(), read_parquet(&only).unwrap());
    assert_eq!(b.height(), o_.height(), "one object-only crop per box");
    assert_eq!(
        b.column("id").unwrap(),
        o_.column("id").unwrap(),
        "the same ids, in the same order"
    );
    let tr: Vec<Option<&str>> = o_
        .column("transform")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    assert!(tr.iter().all(|t| *t == Some(OBJECT_ONLY)));
    // the pixels differ: an object-only crop is not its box
    let (eb, eo) = (
        b.column("embedding").unwrap(),
        o_.column("embedding").unwrap(),
    );
    assert_ne!(eb, eo);

    let report = t.path().join("report");
    let o = common::run_biaslab(
        &[
            "analyze",
            "collapse",
            "--embeddings",
            &p(&boxes),
            &p(&only),
            "--out",
            &p(&report),
            "--no-plots",
        ],
        &env,
    );
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let c = read_parquet(&report.join("collapse.parquet")).unwrap();
    let pixels: Vec<Option<&str>> = c.column("pixels").unwrap().str().unwrap().iter().collect();
    assert_eq!(pixels, [Some("all"), Some(OBJECT_ONLY)]);
    let ctx: Vec<Option<f64>> = c
        .column("context_delta_scene")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert!(ctx[0].is_none() && ctx[1].is_some(), "{ctx:?}");
}

// A box without a segmentation is skipped and listed, not embedded as its whole box.
#[test]
fn object_only_crops_without_a_mask_are_skipped_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::composed(&data);
    let ann = data.join("t-scenes-test/annotations.json");
    let mut coco: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ann).unwrap()).unwrap();
    coco["annotations"][0]
        .as_object_mut()
        .unwrap()
        .remove("segmentation");
    coco["annotations"][1]["segmentation"] =
        serde_json::json!({"mask": "../../outside.png", "value": 1});
    std::fs::write(&ann, serde_json::to_vec(&coco).unwrap()).unwrap();
    let ds = biaslab::analyze::embed::dataset_samples(
        &data.join("t-scenes-test"),
        "t",
        biaslab::analyze::embed::CropMode::ObjectOnly,
        None,
    )
    .unwrap()
    .0;
    let loader = biaslab::loader::EvalLoader::new(
        ds.clone(),
        biaslab::augment::EvalTransform { size: 16 },
        64,
        1,
    )
    .unwrap()
    .with_object_only(true);
    let skipped: Vec<String> = loader
        .batches()
        .flat_map(|b| b.skipped)
        .map(|s| s.reason.to_string())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().any(|r| r.contains("has no `segmentation`")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|r| r.contains("leads out of the dataset root")),
        "{skipped:?}"
    );
}
