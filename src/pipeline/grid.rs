//! The grid runner: every cell of an ablation grid — train, embed the object boxes, analyze collapse /
//! spectrum / prototypes, kNN and a linear probe, the invariance table — by calling the stage functions,
//! each cell's numbers taken from what they return; then one ablation table (Parquet + Markdown, CSV,
//! LaTeX) with each metric's mean and 95% interval over seeds. A finished cell (`cell.json`, done) is not
//! redone on `resume`, an interrupted one resumes its training; a failed cell is reported and the others
//! go on. The data is expected in place (`biaslab experiment run` fetches and composes it first).
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use polars::prelude::*;

use super::backgrounds::{backgrounds, BackgroundsRequest, BackgroundsRow};
use super::invariance::{invariance, InvarianceRequest};
use super::train::{fitted_config, train, TrainRequest};
use super::{embed, evaluate, EmbedRequest, Env, EvalRequest, Progress, Protocol};
use crate::analyze::embed::{dataset_samples, CropMode};
use crate::analyze::invariance_sets::Transform;
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions};
use crate::data::compose::{resolve_dataset, ANNOTATIONS_FILE};
use crate::error::{Error, Result};
use crate::experiment::{
    aggregate, render_latex, render_markdown, table_metrics, table_rows, Cell, CellResult,
    CellStatus, ExperimentSpec, Shown, INTERVAL_NOTE, INVARIANCE_PREFIX, UNTRAINED,
};
use crate::report::columns as cols;
use crate::report::io::{read_parquet, write_atomic, write_parquet};
use crate::run_dir::{has_checkpoint, EmbedLayer};
use crate::train::TrainConfig;

/// Per-cell result file.
pub const CELL_FILE: &str = "cell.json";
/// Images per forward pass of the cells' embeddings.
const BATCH: usize = 64;

/// The grid to run and where.
#[derive(Debug, Clone)]
pub struct GridRequest {
    pub spec: ExperimentSpec,
    /// The experiment file: named in the cells' reasons, copied into `out` as experiment.toml.
    pub file: PathBuf,
    /// Output directory: `cells/<cell>/…`, cells.parquet, ablation.parquet, ablation.md, .csv, .tex.
    pub out: PathBuf,
    /// Keep finished cells and resume interrupted ones (else `out` must hold no experiment).
    pub resume: bool,
    /// Cells run at once; the environment's threads are shared between them.
    pub jobs: usize,
}

/// What the grid did: every cell's result in the grid's order (the cells that ran, when stopped).
#[derive(Debug, Clone)]
pub struct GridResult {
    pub cells: Vec<CellResult>,
    /// Stopped by the environment's stop flag: no table written, finished cells kept for `resume`.
    pub interrupted: bool,
    /// The tables (empty when interrupted).
    pub written: Vec<PathBuf>,
    /// ablation.md's text (empty when interrupted).
    pub markdown: String,
    /// What could not be measured across cells, each naming the file and the reason (a probe's predictions
    /// that could not be read, so no gain over the untrained network for that cell).
    pub notes: Vec<String>,
}

impl GridResult {
    /// Cells with this status.
    pub fn count(&self, status: CellStatus) -> usize {
        self.cells.iter().filter(|r| r.status == status).count()
    }
}

/// What the grid tells its caller as it goes; shared by the cells running at once.
pub trait GridProgress: Sync {
    /// A cell is over: `finished` of `total` so far.
    fn cell_done(&self, _finished: usize, _total: usize, _cell: &Cell, _result: &CellResult) {}
    /// The progress a cell's stage reports to (one per stage call).
    fn stage(&self, _cell: &Cell) -> Box<dyn Progress + '_> {
        Box::new(())
    }
}

/// No display.
impl GridProgress for () {}

/// Runs (or resumes) every cell of `req.spec` and writes the ablation table.
pub fn run_grid(env: &Env, req: &GridRequest, progress: &dyn GridProgress) -> Result<GridResult> {
    let origin = req.file.display().to_string();
    let cells = req.spec.cells(&origin);
    let cells_dir = req.out.join("cells");
    // One experiment per directory: a second one would train the same cells' runs at once.
    let _lock = crate::train::run_lock::RunLock::acquire(&req.out)?;
    if cells_dir.exists() && !req.resume {
        return Err(Error::Invalid(format!(
            "{}: holds an experiment already; pass --resume to continue it or choose another --out",
            req.out.display()
        )));
    }
    std::fs::create_dir_all(&cells_dir).map_err(|e| Error::io(&cells_dir, e))?;
    std::fs::copy(&req.file, req.out.join("experiment.toml"))
        .map_err(|e| Error::io(req.out.join("experiment.toml"), e))?;

    let jobs = req.jobs.max(1);
    let cell_env = Env {
        threads: (env.threads / jobs).max(1),
        ..env.clone()
    };
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CellResult>>> = Mutex::new(vec![None; cells.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= cells.len() || env.stopped() {
                    break;
                }
                let r = run_cell(
                    &req.spec, &cells[i], &cells_dir, &cell_env, req.resume, progress,
                );
                let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                progress.cell_done(n, cells.len(), &cells[i], &r);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let mut results: Vec<CellResult> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    if env.stopped() {
        return Ok(GridResult {
            cells: results,
            interrupted: true,
            written: Vec::new(),
            markdown: String::new(),
            notes: Vec::new(),
        });
    }
    // every cell has run: each result sits at its cell's index
    let notes = super::gain::add_gains(&cells, &mut results, &cells_dir);
    let (written, markdown) = write_tables(&req.spec, &results, &req.out)?;
    Ok(GridResult {
        cells: results,
        interrupted: false,
        written,
        markdown,
        notes,
    })
}

/// One cell: its result as kept (`resume`), not applicable, or measured; written to its `cell.json`
/// unless the stop flag was raised (so a resume picks it up).
fn run_cell(
    spec: &ExperimentSpec,
    cell: &Cell,
    cells_dir: &Path,
    env: &Env,
    resume: bool,
    progress: &dyn GridProgress,
) -> CellResult {
    let dir = cells_dir.join(cell.id());
    let mut result = CellResult {
        cell: cell.id(),
        data: cell.data.clone(),
        method: cell.method.clone(),
        crops: cell.crops.clone(),
        variant: cell.variant.clone(),
        seed: cell.seed,
        status: CellStatus::Done,
        reason: None,
        metrics: BTreeMap::new(),
        skipped_inputs: 0,
    };
    if resume {
        adopt_legacy_dir(cell, cells_dir, progress);
        if let Some(done) = std::fs::read(dir.join(CELL_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<CellResult>(&b).ok())
            .filter(|r| r.status.is_done())
        {
            // a cell.json from before the key was kept names its cell by where it lies
            return CellResult {
                cell: cell.id(),
                ..done
            };
        }
    }
    let cfg = match &cell.config {
        Ok(cfg) => cfg,
        Err(why) => {
            result.status = CellStatus::NotApplicable;
            result.reason = Some(why.clone());
            return result;
        }
    };
    if cell.object_crops {
        // Object-aware crops need boxes: data without them (emoji, memes) has no such cell.
        if let Some(d) = cell.datasets().iter().find(|d| {
            !resolve_dataset(&env.data_dir, d)
                .map(|dir| dir.join(ANNOTATIONS_FILE).is_file())
                .unwrap_or(false)
        }) {
            result.status = CellStatus::NotApplicable;
            result.reason = Some(format!(
                "crop policy {} draws crops inside COCO boxes and {d} has none",
                cell.crops
            ));
            return result;
        }
    }
    match measure_cell(spec, cell, cfg, &dir, env, progress) {
        Ok(m) => {
            result.metrics = m.metrics;
            result.skipped_inputs = m.skipped.len();
            if !m.skipped.is_empty() {
                result.status = CellStatus::DoneWithSkips;
            }
        }
        Err(e) => {
            result.status = CellStatus::Failed;
            result.reason = Some(e.to_string());
        }
    }
    // An interrupted cell is neither done nor failed: leave no cell.json, so a resume picks it up, and say
    // so rather than the status its stages reached (a cell is `done` only once its cell.json is written).
    if env.stopped() {
        result.status = CellStatus::Interrupted;
        result.reason =
            Some("stopped before its cell.json was written; --resume runs it again".into());
        return result;
    }
    let json = serde_json::to_vec_pretty(&result).unwrap_or_default();
    if let Err(e) = write_atomic(&dir.join(CELL_FILE), |f| {
        f.write_all(&json)
            .map_err(|e| Error::format(dir.join(CELL_FILE), e.to_string()))
    }) {
        // measured, but a resume would not find it: not done
        result.status = CellStatus::Failed;
        result.reason = Some(format!("its {CELL_FILE} could not be written: {e}"));
    }
    result
}

/// On resume, moves a finished cell of an experiment written before [`crate::experiment::dir_part`] from
/// its old directory (the axes made filesystem-safe, nothing else) to its own, with a note: only when its
/// own directory does not exist yet and the old one's cell.json names exactly this cell, so a directory
/// two cells once shared (`a/b`, `a_b`) is never given to the wrong one.
fn adopt_legacy_dir(cell: &Cell, cells_dir: &Path, progress: &dyn GridProgress) {
    let (id, legacy) = (cell.id(), cell.legacy_id());
    let (dir, old) = (cells_dir.join(&id), cells_dir.join(&legacy));
    if id == legacy || dir.exists() {
        return;
    }
    let same_cell = std::fs::read(old.join(CELL_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<CellResult>(&b).ok())
        .is_some_and(|r| {
            (&r.data, &r.method, &r.crops, &r.variant, r.seed)
                == (
                    &cell.data,
                    &cell.method,
                    &cell.crops,
                    &cell.variant,
                    cell.seed,
                )
        });
    if !same_cell {
        return;
    }
    let note = match std::fs::rename(&old, &dir) {
        Ok(()) => format!(
            "cell {id}: moved from {legacy} (directory names carry a hash where an axis needed \
             sanitising)"
        ),
        Err(e) => format!(
            "cell {id}: could not move its earlier results from {}: {e}; running it again",
            old.display()
        ),
    };
    progress.stage(cell).note(&note);
}

/// A measured cell: metric name → value, and the input files some stage could not read.
struct Measured {
    metrics: BTreeMap<String, f64>,
    skipped: BTreeSet<PathBuf>,
}

/// The first value of a column of an analysis table, as a number.
/// A cell's embeddings of the boxes of `boxes`, whole or object-only: `boxes.parquet` is analysed in
/// `analysis/`, and context control pairs the object-only file with it.
const BOXES_FILE: &str = "boxes.parquet";

/// The embedding request for `boxes`' box crops (`crops`: whole or object-only) with the cell's run.
fn box_embedding(run: &Path, boxes: &str, crops: CropMode, out: PathBuf) -> EmbedRequest {
    EmbedRequest {
        run: run.to_path_buf(),
        dataset: boxes.to_string(),
        crops,
        layer: EmbedLayer::Backbone,
        size: None,
        batch_size: BATCH,
        annotations: None,
        shard: None,
        split: None,
        out,
    }
}

/// Context control (issue 20), where every box of `boxes` has a usable object mask: the same boxes' object
/// pixels alone, embedded beside `boxes.parquet` and measured with it; the cell gains the object-only
/// Δscene / Δcat and `context_delta_scene` (boxes minus object-only, paired interval). Data without masks
/// (user COCO files without `segmentation`) has no such numbers, rather than a cell of skipped inputs.
fn context_control(
    env: &Env,
    cell: &Cell,
    run: &Path,
    boxes: &str,
    dir: &Path,
    progress: &dyn GridProgress,
    m: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let data = resolve_dataset(&env.data_dir, boxes)?;
    let (samples, _) = dataset_samples(&data, boxes, CropMode::ObjectOnly, None)?;
    if !samples.iter().all(|s| matches!(s.mask, Some(Ok(_)))) {
        return Ok(());
    }
    let emb = embed(
        env,
        &box_embedding(
            run,
            boxes,
            CropMode::ObjectOnly,
            dir.join("object-only.parquet"),
        ),
        &mut *progress.stage(cell),
    )?;
    let report = dir.join("analysis-context");
    let opts = AnalyzeOptions {
        analyses: vec![Analysis::Collapse],
        seed: cell.seed,
        plots: false,
        ..AnalyzeOptions::default()
    };
    analyze(&[dir.join(BOXES_FILE), emb.out], &report, &opts)?;
    let c = read_parquet(&report.join("collapse.parquet"))?;
    // Row 1 is the object-only one (row 0: the boxes, as in `analysis/`).
    let object_only = c.slice(1, 1);
    for (name, as_name) in [
        (cols::DELTA_SCENE, "delta_scene_object_only"),
        (cols::DELTA_SCENE_LO, "delta_scene_object_only_lo"),
        (cols::DELTA_SCENE_HI, "delta_scene_object_only_hi"),
        (cols::DELTA_CAT, "delta_cat_object_only"),
        (cols::DELTA_CAT_LO, "delta_cat_object_only_lo"),
        (cols::DELTA_CAT_HI, "delta_cat_object_only_hi"),
        (cols::CONTEXT_DELTA_SCENE, cols::CONTEXT_DELTA_SCENE),
        (cols::CONTEXT_DELTA_SCENE_LO, cols::CONTEXT_DELTA_SCENE_LO),
        (cols::CONTEXT_DELTA_SCENE_HI, cols::CONTEXT_DELTA_SCENE_HI),
    ] {
        if let Some(v) = first_f64(&object_only, name) {
            m.insert(as_name.to_string(), v);
        }
    }
    Ok(())
}

fn first_f64(df: &DataFrame, name: &str) -> Option<f64> {
    df.column(name)
        .ok()?
        .cast(&DataType::Float64)
        .ok()?
        .f64()
        .ok()?
        .get(0)
}

/// Train, then every measurement the spec asks for.
fn measure_cell(
    spec: &ExperimentSpec,
    cell: &Cell,
    cfg: &TrainConfig,
    dir: &Path,
    env: &Env,
    progress: &dyn GridProgress,
) -> Result<Measured> {
    // libtorch's threads: the cell's share, as for every stage of it.
    tch::set_num_threads(env.threads as i32);
    let run = dir.join("run");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // The cell's recipe as a file beside its run, read back as `train --config` would read it.
    let config = dir.join("config.toml");
    let text = toml::to_string(cfg)
        .map_err(|e| Error::Invalid(format!("serialising the cell's config: {e}")))?;
    std::fs::write(&config, &text).map_err(|e| Error::io(&config, e))?;
    let cfg = TrainConfig::from_toml(&text, None)
        .map_err(|e| Error::format(&config, format!("invalid training config: {e}")))?;
    let (cfg, notes) = fitted_config(
        cfg,
        &format!("{} (with command-line flags)", config.display()),
    )?;
    let mut shown = progress.stage(cell);
    for n in &notes {
        shown.note(n);
    }
    let ev = &spec.evaluate;
    let trained = train(
        env,
        &TrainRequest {
            data: cell.datasets(),
            out: run.clone(),
            config: cfg,
            compare: None,
            resume: has_checkpoint(&run),
            // The untrained floor: the network as initialised, checkpointed at step 0.
            max_steps: (cell.method == UNTRAINED).then_some(0),
            checkpoint_every: None,
            knn_train: ev.knn_every_epoch.then(|| ev.knn_train.clone()).flatten(),
            knn_test: ev.knn_every_epoch.then(|| ev.knn_test.clone()).flatten(),
            knn_test_fraction: ev.test_fraction,
            object_crops: cell.object_crops,
            max_images: spec.max_images,
        },
        &mut *shown,
    )?;
    drop(shown);
    if env.stopped() {
        return Err(Error::Invalid("interrupted".into()));
    }
    let mut m = BTreeMap::new();
    let mut skipped: BTreeSet<PathBuf> = trained
        .skipped
        .iter()
        .map(|(_, s)| s.path.clone())
        .collect();
    // The last epoch's mean loss / ln K (≈ 1 means the codes carry no information) and the wall time.
    if let Some(v) = trained.final_loss_over_ln_k {
        m.insert("final_loss_over_ln_k".into(), v);
    }
    m.insert("train_seconds".into(), trained.train_seconds);

    if let Some(boxes) = &ev.boxes {
        let emb = embed(
            env,
            &box_embedding(&run, boxes, CropMode::Boxes, dir.join(BOXES_FILE)),
            &mut *progress.stage(cell),
        )?;
        skipped.extend(emb.skipped.iter().map(|s| s.path.clone()));
        // The analysis stage's results are its tables: the numbers are read from them.
        let report = dir.join("analysis");
        let opts = AnalyzeOptions {
            analyses: vec![Analysis::Collapse, Analysis::Spectrum, Analysis::Prototypes],
            seed: cell.seed,
            ..AnalyzeOptions::default()
        };
        analyze(&[emb.out], &report, &opts)?;
        let c = read_parquet(&report.join("collapse.parquet"))?;
        for name in [
            cols::DELTA_SCENE,
            cols::DELTA_SCENE_LO,
            cols::DELTA_SCENE_HI,
            cols::DELTA_CAT,
            cols::DELTA_CAT_LO,
            cols::DELTA_CAT_HI,
            cols::COLLAPSE_INDEX,
            cols::COLLAPSE_INDEX_LO,
            cols::COLLAPSE_INDEX_HI,
            cols::AUROC,
            cols::S_SCENE,
            cols::S_CAT,
            cols::INSTANCE_AT_1,
            cols::INSTANCE_AT_1_LO,
            cols::INSTANCE_AT_1_HI,
            cols::INSTANCE_CHANCE,
        ] {
            if let Some(v) = first_f64(&c, name) {
                m.insert(name.to_string(), v);
            }
        }
        // The ratio is null where Δcat's interval includes 0: kept as NaN, so the table says "undefined"
        // for this cell instead of leaving it out of a mean over seeds.
        if m.contains_key(cols::DELTA_CAT) && !m.contains_key(cols::COLLAPSE_INDEX) {
            m.insert(cols::COLLAPSE_INDEX.to_string(), f64::NAN);
        }
        context_control(env, cell, &run, boxes, &dir, progress, &mut m)?;
        let s = read_parquet(&report.join("spectrum.parquet"))?;
        if let Some(v) = first_f64(&s, cols::RANKME) {
            m.insert(cols::RANKME.to_string(), v);
        }
        // A run without prototype codes (SimCLR, MoCo) has its prototypes analysis skipped: no table, no number.
        let prototypes = report.join("prototypes.parquet");
        if prototypes.is_file() {
            let p = read_parquet(&prototypes)?;
            if let Some(v) = first_f64(&p, cols::PERPLEXITY_RATIO) {
                m.insert(cols::PERPLEXITY_RATIO.to_string(), v);
            }
        }
    }
    if let Some(train_data) = &ev.knn_train {
        for (protocol, name, metric) in [
            (Protocol::Knn, "knn", "knn_accuracy"),
            (Protocol::Linear, "linear", "linear_accuracy"),
        ] {
            let r = evaluate(
                env,
                &EvalRequest {
                    protocol,
                    run: run.clone(),
                    train_data: train_data.clone(),
                    train_annotations: None,
                    test_data: ev.knn_test.clone(),
                    test_annotations: None,
                    test_fraction: ev.test_fraction,
                    crops: CropMode::Image,
                    layer: EmbedLayer::Backbone,
                    size: None,
                    batch_size: BATCH,
                    k: crate::analyze::knn::K,
                    // One held-out split for every cell, so cells are compared on the same images.
                    seed: 0,
                    out: dir.join(format!("{name}.parquet")),
                },
                &mut *progress.stage(cell),
            )?;
            skipped.extend(r.skipped.iter().map(|s| s.path.clone()));
            m.insert(metric.to_string(), r.accuracy);
            m.insert(format!("{metric}_lo"), r.accuracy_lo);
            m.insert(format!("{metric}_hi"), r.accuracy_hi);
            // One chance level for both probes: the majority label's share of the same test images.
            m.insert("probe_chance".into(), r.chance);
        }
    }
    if let Some(data) = &ev.invariance {
        let transforms = if ev.transforms.is_empty() {
            Transform::ALL.to_vec()
        } else {
            ev.transforms
                .iter()
                .map(|t| Transform::parse(t.trim()))
                .collect::<Result<_>>()?
        };
        let r = invariance(
            env,
            &InvarianceRequest {
                runs: vec![run.clone()],
                data: data.clone(),
                transforms,
                out: dir.join("invariance"),
                size: None,
                max_objects: ev.max_objects.unwrap_or(300),
                seed: cell.seed,
                layer: EmbedLayer::Backbone,
                batch_size: BATCH,
            },
            &mut *progress.stage(cell),
        )?;
        skipped.extend(r.skipped.iter().map(|s| s.path.clone()));
        for row in &r.rows {
            if let Some(v) = row.score {
                m.insert(
                    format!("{INVARIANCE_PREFIX}{}_top{}", row.transform, row.k),
                    v,
                );
            }
        }
    }
    if let Some(data) = &ev.backgrounds {
        let r = backgrounds(
            env,
            &BackgroundsRequest {
                train_data: ev.backgrounds_train.clone(),
                seed: cell.seed,
                batch_size: BATCH,
                ..BackgroundsRequest::new(vec![run.clone()], data, &dir.join("backgrounds"))
            },
            &mut *progress.stage(cell),
        )?;
        skipped.extend(r.skipped.iter().map(|s| s.path.clone()));
        background_metrics(&r.rows, &mut m);
    }
    Ok(Measured {
        metrics: m,
        skipped,
    })
}

/// A cell's background-reliance numbers: each probe's accuracy per variant (`bg_<variant>_<probe>`), its
/// BG-gap = Mixed-Same − Mixed-Rand with the paired interval, and the background-match rate with its
/// interval and chance.
fn background_metrics(rows: &[BackgroundsRow], m: &mut BTreeMap<String, f64>) {
    for row in rows {
        let probe = row.probe.name();
        let v = row.variant.name().replace('-', "_").to_lowercase();
        m.insert(format!("bg_{v}_{probe}"), row.accuracy);
        m.insert(format!("bg_{v}_{probe}_lo"), row.accuracy_lo);
        m.insert(format!("bg_{v}_{probe}_hi"), row.accuracy_hi);
        if let Some(g) = &row.bg_gap {
            m.insert(format!("bg_gap_{probe}"), g.gain);
            m.insert(format!("bg_gap_{probe}_lo"), g.lo);
            m.insert(format!("bg_gap_{probe}_hi"), g.hi);
        }
        if let Some(b) = &row.bg_match {
            m.insert("bg_match".into(), b.rate);
            m.insert("bg_match_lo".into(), b.lo);
            m.insert("bg_match_hi".into(), b.hi);
            m.insert("bg_match_chance".into(), b.chance);
        }
    }
}

/// cells.parquet (one row per cell, keyed by `cell` and `group`), ablation.parquet (the table: one row per
/// cell group, each metric with its `_lo`/`_hi`, keyed by `group`), ablation_long.parquet (one row per cell
/// group × metric), and the table a paper shows as ablation.md, ablation.csv and ablation.tex; returns the
/// files and ablation.md's text.
pub fn write_tables(
    spec: &ExperimentSpec,
    results: &[CellResult],
    out: &Path,
) -> Result<(Vec<PathBuf>, String)> {
    let ctx = |what: &'static str| move |e| Error::polars(format!("writing {what}"), e);
    let metric_names: Vec<String> = {
        let set: BTreeSet<&String> = results.iter().flat_map(|r| r.metrics.keys()).collect();
        set.into_iter().cloned().collect()
    };
    let mut cells = df!(
        "cell" => results.iter().map(|r| r.cell.clone()).collect::<Vec<_>>(),
        "group" => results.iter().map(|r| r.group()).collect::<Vec<_>>(),
        "data" => results.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        "method" => results.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        "crops" => results.iter().map(|r| r.crops.clone()).collect::<Vec<_>>(),
        "variant" => results.iter().map(|r| r.variant.clone()).collect::<Vec<_>>(),
        "seed" => results.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "status" => results.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        "reason" => results.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
        "skipped_inputs" => results.iter().map(|r| r.skipped_inputs as u32).collect::<Vec<_>>(),
    )
    .map_err(ctx("cells.parquet"))?;
    for name in &metric_names {
        let v: Vec<Option<f64>> = results
            .iter()
            .map(|r| r.metrics.get(name).copied())
            .collect();
        cells
            .with_column(Column::new(name.as_str().into(), v))
            .map_err(ctx("cells.parquet"))?;
    }
    let mut written = vec![out.join("cells.parquet")];
    write_parquet(&mut cells, &written[0])?;

    let ablation = aggregate(results);
    let mut rows: [Vec<String>; 5] = Default::default();
    let mut stats: (Vec<u32>, Vec<f64>, Vec<f64>, Vec<f64>) = Default::default();
    for ((data, method, crops, variant), ms) in &ablation {
        for (metric, s) in ms {
            for (col, v) in rows.iter_mut().zip([data, method, crops, variant, metric]) {
                col.push(v.clone());
            }
            stats.0.push(s.n as u32);
            stats.1.push(s.mean);
            stats.2.push(s.lo);
            stats.3.push(s.hi);
        }
    }
    let [data, method, crops, variant, metric] = rows;
    let mut long = df!(
        "data" => data, "method" => method, "crops" => crops, "variant" => variant, "metric" => metric,
        "n_seeds" => stats.0, "mean" => stats.1, "lo" => stats.2, "hi" => stats.3,
    )
    .map_err(ctx("ablation_long.parquet"))?;
    written.push(out.join("ablation_long.parquet"));
    write_parquet(&mut long, &out.join("ablation_long.parquet"))?;

    let rows = table_rows(&ablation);
    let shown = table_metrics(&ablation);
    let mut md = format!("# {}\n\n{}\n\n", spec.name, spec.description.trim());
    md.push_str(INTERVAL_NOTE);
    md.push('\n');
    md.push_str(&render_markdown(&rows, &shown));
    // The same table for a paper: CSV (one column per number) and LaTeX (booktabs).
    let mut wide = df!(
        "data" => rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        "method" => rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        "crops" => rows.iter().map(|r| r.crops.clone()).collect::<Vec<_>>(),
        "variant" => rows.iter().map(|r| r.variant.clone()).collect::<Vec<_>>(),
        "seeds" => rows.iter().map(|r| r.seeds as u32).collect::<Vec<_>>(),
    )
    .map_err(ctx("ablation.csv"))?;
    for m in &shown {
        for (suffix, get) in [
            ("", (|s: &Shown| s.mean) as fn(&Shown) -> f64),
            ("_lo", |s: &Shown| s.lo),
            ("_hi", |s: &Shown| s.hi),
        ] {
            let v: Vec<Option<f64>> = rows
                .iter()
                .map(|r| r.values.get(m).map(get).filter(|x| x.is_finite()))
                .collect();
            wide.with_column(Column::new(format!("{m}{suffix}").into(), v))
                .map_err(ctx("ablation.csv"))?;
        }
    }
    written.push(out.join("ablation.csv"));
    crate::report::io::write_csv(&mut wide, &out.join("ablation.csv"))?;
    // The same rows for a notebook, keyed: `group` is a cell key without its seed (cells.parquet has it
    // beside each cell's `cell`, the directory under cells/), so the three join without parsing names.
    let groups: BTreeMap<(&str, &str, &str, &str), String> = results
        .iter()
        .filter(|r| !r.cell.is_empty())
        .map(|r| {
            (
                (
                    r.data.as_str(),
                    r.method.as_str(),
                    r.crops.as_str(),
                    r.variant.as_str(),
                ),
                r.group(),
            )
        })
        .collect();
    let group: Vec<String> = rows
        .iter()
        .map(|r| {
            if r.method == UNTRAINED {
                UNTRAINED.to_string()
            } else {
                let key = (
                    r.data.as_str(),
                    r.method.as_str(),
                    r.crops.as_str(),
                    r.variant.as_str(),
                );
                groups.get(&key).cloned().unwrap_or_default()
            }
        })
        .collect();
    wide.insert_column(0, Column::new("group".into(), group))
        .map_err(ctx("ablation.parquet"))?;
    written.push(out.join("ablation.parquet"));
    write_parquet(&mut wide, &out.join("ablation.parquet"))?;
    let tex = render_latex(&spec.name, &rows, &shown);
    written.push(out.join("ablation.tex"));
    write_text(&out.join("ablation.tex"), &tex)?;
    let other: Vec<&CellResult> = results.iter().filter(|r| !r.status.is_done()).collect();
    if !other.is_empty() {
        md.push_str("\n## Cells without results\n\n");
        for r in other {
            md.push_str(&format!(
                "- {} / {} / {} / {} / seed {}: {} — {}\n",
                r.data,
                r.method,
                r.crops,
                r.variant,
                r.seed,
                r.status,
                r.reason.as_deref().unwrap_or("")
            ));
        }
    }
    // Their numbers are in the table, measured on the files that could be read.
    let skips: Vec<&CellResult> = results.iter().filter(|r| r.skipped_inputs > 0).collect();
    if !skips.is_empty() {
        md.push_str("\n## Cells with skipped inputs\n\n");
        for r in skips {
            md.push_str(&format!(
                "- {} / {} / {} / {} / seed {}: {} unreadable file(s), listed in the cell's skipped.parquet files\n",
                r.data, r.method, r.crops, r.variant, r.seed, r.skipped_inputs
            ));
        }
    }
    written.push(out.join("ablation.md"));
    write_text(&out.join("ablation.md"), &md)?;
    Ok((written, md))
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |f| {
        f.write_all(text.as_bytes())
            .map_err(|e| Error::format(path, e.to_string()))
    })
}
