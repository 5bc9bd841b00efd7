//! `biaslab experiment run FILE.toml --out DIR [--resume] [--jobs N]`: every cell of an ablation grid —
//! fetch and compose what is missing, then per cell train, embed the object boxes, analyze collapse /
//! spectrum / prototypes, kNN and a linear probe, and the invariance table — collected into one ablation table (Parquet +
//! Markdown) with each metric's mean and 95% interval over seeds. A finished cell (`cell.json` with status
//! `done`) is not redone on `--resume`, an interrupted one resumes its training; a failed cell is reported
//! and the others go on.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use clap::{Args, Subcommand};
use polars::prelude::*;

use super::datasets::{fetch::FetchArgs, DataDirArgs};
use super::embed::{threads_or_all, ComputeArgs, Crops, EmbedArgs, Layer};
use super::eval::{EvalArgs, Protocol};
use super::invariance::InvarianceArgs;
use super::train::TrainArgs;
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions};
use crate::data::compose::compose;
use crate::data::index::{index_path, resolve_data_dir};
use crate::experiment::{
    aggregate, render_latex, render_markdown, table_metrics, table_rows, Cell, CellResult,
    ExperimentSpec, Shown, INTERVAL_NOTE, INVARIANCE_PREFIX,
};
use crate::report::columns as cols;
use crate::report::io::{read_parquet, write_atomic, write_parquet};
use crate::train::install_sigint_flag;
use crate::train::metrics::{COL_EPOCH, COL_LOSS_OVER_LN_K, COL_SECONDS, METRICS_FILE};

/// Per-cell result file.
pub const CELL_FILE: &str = "cell.json";

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Run (or resume) every cell of a grid and write the ablation table.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment TOML (see experiments/*.toml).
    pub file: PathBuf,
    /// Output directory: `cells/<cell>/…`, cells.parquet, ablation.parquet, ablation.md.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep finished cells and resume interrupted ones.
    #[arg(long)]
    pub resume: bool,
    /// Cells run at once (the cores are shared between them).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Print the cells and their configs, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub dirs: DataDirArgs,
}

pub fn run(cmd: ExperimentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExperimentCommand::Run(a) => run_grid(&a),
    }
}

fn run_grid(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let origin = args.file.display().to_string();
    let spec = ExperimentSpec::read(&args.file)?;
    let cells = spec.cells(&origin);
    if args.dry_run {
        for c in &cells {
            match &c.config {
                Ok(cfg) => println!(
                    "{}: {} epochs, crops {:?} @ {:?}",
                    c.id(),
                    cfg.epochs,
                    cfg.crops.nmb_crops,
                    cfg.crops.size_crops
                ),
                Err(why) => println!("{}: not applicable: {why}", c.id()),
            }
        }
        if cells.iter().all(|c| c.config.is_err()) {
            eprintln!("note: no cell of {origin} applies (reasons above)");
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cells_dir = args.out.join("cells");
    // One experiment per directory: a second one would train the same cells' runs at once.
    let _lock = crate::train::run_lock::RunLock::acquire(&args.out)?;
    if cells_dir.exists() && !args.resume {
        anyhow::bail!(
            "{}: holds an experiment already; pass --resume to continue it or choose another --out",
            args.out.display()
        );
    }
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    prepare(&spec, &data_dir, args.dirs.manifests.as_deref())?;
    std::fs::create_dir_all(&cells_dir).with_context(|| format!("{}", cells_dir.display()))?;
    std::fs::copy(&args.file, args.out.join("experiment.toml"))
        .with_context(|| format!("copying {} into {}", origin, args.out.display()))?;

    let jobs = args.jobs.max(1);
    let threads = (threads_or_all(None) / jobs).max(1);
    let stop = install_sigint_flag()?;
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CellResult>>> = Mutex::new(vec![None; cells.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= cells.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = run_cell(
                    &spec,
                    &cells[i],
                    &cells_dir,
                    &data_dir,
                    threads,
                    args.resume,
                );
                // One line per finished cell, whether or not a terminal is attached.
                println!(
                    "[{}/{}] {}: {}{}",
                    finished.fetch_add(1, Ordering::SeqCst) + 1,
                    cells.len(),
                    cells[i].id(),
                    r.status,
                    r.reason
                        .as_deref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                );
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    if stop.load(Ordering::SeqCst) {
        println!("interrupted, resumable with --resume: finished cells are kept");
        return Ok(ExitCode::from(super::train::EXIT_INTERRUPTED));
    }
    let results: Vec<CellResult> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    write_tables(&spec, &results, &args.out)?;
    let failed = results.iter().filter(|r| r.status == "failed").count();
    println!(
        "{} cells: {} done, {failed} failed, {} not applicable → {}",
        results.len(),
        results.iter().filter(|r| r.status == "done").count(),
        results
            .iter()
            .filter(|r| r.status == "not applicable")
            .count(),
        args.out.join("ablation.md").display()
    );
    let done = results.iter().filter(|r| r.status == "done").count();
    if done == 0 && failed == 0 {
        // Every cell "not applicable" (a typo in [train], an unknown method) measured nothing.
        eprintln!(
            "note: no cell of {origin} applies; the reasons are in {}",
            args.out.join("cells.parquet").display()
        );
    }
    Ok(if failed == 0 && done > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Fetches the datasets that are not there yet and composes the object/scene pair (compose itself keeps
/// an existing pair).
fn prepare(spec: &ExperimentSpec, data_dir: &Path, manifests: Option<&Path>) -> anyhow::Result<()> {
    let missing: Vec<String> = spec
        .prepare
        .fetch
        .iter()
        .filter(|n| !index_path(&data_dir.join(n)).is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        // Exit status 1 (some images skipped) is fine: the skips are listed in the dataset's report.
        super::datasets::fetch::run(&FetchArgs {
            dirs: DataDirArgs {
                data_dir: Some(data_dir.to_path_buf()),
                manifests: manifests.map(Path::to_path_buf),
            },
            names: missing,
            all: false,
        })?;
    }
    if let Some(cfg) = &spec.prepare.compose {
        compose(data_dir, data_dir, cfg).context("compose")?;
    }
    Ok(())
}

fn run_cell(
    spec: &ExperimentSpec,
    cell: &Cell,
    cells_dir: &Path,
    data_dir: &Path,
    threads: usize,
    resume: bool,
) -> CellResult {
    let dir = cells_dir.join(cell.id());
    let mut result = CellResult {
        data: cell.data.clone(),
        method: cell.method.clone(),
        crops: cell.crops.clone(),
        variant: cell.variant.clone(),
        seed: cell.seed,
        status: "done".into(),
        reason: None,
        metrics: BTreeMap::new(),
    };
    if resume {
        if let Some(done) = std::fs::read(dir.join(CELL_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<CellResult>(&b).ok())
            .filter(|r| r.status == "done")
        {
            return done;
        }
    }
    let cfg = match &cell.config {
        Ok(cfg) => cfg,
        Err(why) => {
            result.status = "not applicable".into();
            result.reason = Some(why.clone());
            return result;
        }
    };
    if cell.object_crops {
        // Object-aware crops need boxes: data without them (emoji, memes) has no such cell.
        if let Some(d) = cell.datasets().iter().find(|d| {
            !crate::data::compose::resolve_dataset(data_dir, d)
                .map(|dir| dir.join(crate::data::compose::ANNOTATIONS_FILE).is_file())
                .unwrap_or(false)
        }) {
            result.status = "not applicable".into();
            result.reason = Some(format!(
                "crop policy {} draws crops inside COCO boxes and {d} has none",
                cell.crops
            ));
            return result;
        }
    }
    match measure_cell(spec, cell, cfg, &dir, data_dir, threads) {
        Ok(metrics) => result.metrics = metrics,
        Err(e) => {
            eprintln!("cell {}: failed: {e:#}", cell.id());
            result.status = "failed".into();
            result.reason = Some(format!("{e:#}"));
        }
    }
    // An interrupted cell is neither done nor failed: leave no cell.json, so --resume picks it up.
    let interrupted = install_sigint_flag()
        .map(|f| f.load(Ordering::SeqCst))
        .unwrap_or(false);
    if !interrupted {
        let json = serde_json::to_vec_pretty(&result).unwrap_or_default();
        if let Err(e) = write_atomic(&dir.join(CELL_FILE), |f| {
            f.write_all(&json)
                .map_err(|e| crate::error::Error::format(dir.join(CELL_FILE), e.to_string()))
        }) {
            eprintln!("cell {}: {e}", cell.id());
        }
    }
    result
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

/// Train, then every measurement the spec asks for; metric name → value.
fn measure_cell(
    spec: &ExperimentSpec,
    cell: &Cell,
    cfg: &crate::train::TrainConfig,
    dir: &Path,
    data_dir: &Path,
    threads: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let run = dir.join("run");
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let config = dir.join("config.toml");
    let text = toml::to_string(cfg).context("serialising the cell's config")?;
    std::fs::write(&config, text).with_context(|| format!("{}", config.display()))?;
    super::train::run(&TrainArgs {
        data: cell.datasets(),
        out: run.clone(),
        config: Some(config),
        method: None,
        epochs: None,
        batch_size: None,
        arch: None,
        seed: None,
        device: None,
        resume: crate::run_dir::has_checkpoint(&run),
        // The untrained floor: the network as initialised, checkpointed at step 0.
        max_steps: (cell.method == crate::experiment::UNTRAINED).then_some(0),
        checkpoint_every: None,
        max_images: spec.max_images,
        object_crops: cell.object_crops,
        knn_train: spec
            .evaluate
            .knn_every_epoch
            .then(|| spec.evaluate.knn_train.clone())
            .flatten(),
        knn_test: spec
            .evaluate
            .knn_every_epoch
            .then(|| spec.evaluate.knn_test.clone())
            .flatten(),
        threads: Some(threads),
        data_dir: Some(data_dir.to_path_buf()),
    })?;
    if install_sigint_flag()?.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    let mut m = BTreeMap::new();
    // The last epoch's mean loss / ln K (≈ 1 means the codes carry no information) and the wall time.
    let metrics = read_parquet(&run.join(METRICS_FILE))?;
    let last = metrics
        .clone()
        .lazy()
        .filter(col(COL_EPOCH).eq(col(COL_EPOCH).max()))
        .select([col(COL_LOSS_OVER_LN_K).mean()])
        .collect()?;
    if let Some(v) = first_f64(&last, COL_LOSS_OVER_LN_K) {
        m.insert("final_loss_over_ln_k".into(), v);
    }
    let secs = metrics.column(COL_SECONDS)?.cast(&DataType::Float64)?;
    if let Some(v) = secs.f64()?.sum() {
        m.insert("train_seconds".into(), v);
    }

    let ev = &spec.evaluate;
    if let Some(boxes) = &ev.boxes {
        let emb = dir.join("boxes.parquet");
        super::embed::run(&EmbedArgs {
            run: run.clone(),
            dataset: boxes.clone(),
            annotations: None,
            shard: None,
            out: emb.clone(),
            crops: Crops::Boxes,
            views: 4,
            seed: cell.seed,
            layer: Layer::Backbone,
            size: None,
            split: None,
            compute: ComputeArgs::new(threads, data_dir),
        })?;
        let report = dir.join("analysis");
        let opts = AnalyzeOptions {
            analyses: vec![Analysis::Collapse, Analysis::Spectrum, Analysis::Prototypes],
            seed: cell.seed,
            ..AnalyzeOptions::default()
        };
        analyze(&[emb], &report, &opts).context("analyze")?;
        let c = read_parquet(&report.join("collapse.parquet"))?;
        for name in [
            cols::COLLAPSE_INDEX,
            cols::COLLAPSE_INDEX_LO,
            cols::COLLAPSE_INDEX_HI,
            cols::AUROC,
            cols::S_SCENE,
            cols::S_CAT,
        ] {
            if let Some(v) = first_f64(&c, name) {
                m.insert(name.to_string(), v);
            }
        }
        let s = read_parquet(&report.join("spectrum.parquet"))?;
        if let Some(v) = first_f64(&s, cols::RANKME) {
            m.insert(cols::RANKME.to_string(), v);
        }
        // A run without prototype codes (SimCLR) has its prototypes analysis skipped: no table, no number.
        let prototypes = report.join("prototypes.parquet");
        if prototypes.is_file() {
            let p = read_parquet(&prototypes)?;
            if let Some(v) = first_f64(&p, cols::PERPLEXITY_RATIO) {
                m.insert(cols::PERPLEXITY_RATIO.to_string(), v);
            }
        }
    }
    if let Some(train) = &ev.knn_train {
        for (protocol, name, metric) in [
            (Protocol::Knn, "knn", "knn_accuracy"),
            (Protocol::Linear, "linear", "linear_accuracy"),
        ] {
            let out = dir.join(format!("{name}.parquet"));
            super::eval::run(&EvalArgs {
                protocol,
                run: run.clone(),
                train_data: train.clone(),
                test_data: ev.knn_test.clone(),
                test_fraction: 0.2,
                annotations: None,
                test_annotations: None,
                out: out.clone(),
                crops: Crops::Image,
                layer: Layer::Backbone,
                size: None,
                k: crate::analyze::knn::K,
                // One held-out split for every cell, so cells are compared on the same images.
                seed: 0,
                compute: ComputeArgs::new(threads, data_dir),
            })?;
            let df = read_parquet(&out)?;
            for (col, suffix) in [
                (cols::ACCURACY, ""),
                (cols::ACCURACY_LO, "_lo"),
                (cols::ACCURACY_HI, "_hi"),
            ] {
                if let Some(v) = first_f64(&df, col) {
                    m.insert(format!("{metric}{suffix}"), v);
                }
            }
            // One chance level for both probes: the majority label's share of the same test images.
            if let Some(v) = first_f64(&df, cols::CHANCE) {
                m.insert("probe_chance".into(), v);
            }
        }
    }
    if let Some(data) = &ev.invariance {
        let out = dir.join("invariance");
        let transforms = if ev.transforms.is_empty() {
            crate::analyze::invariance_sets::Transform::ALL
                .map(|t| t.name().to_string())
                .to_vec()
        } else {
            ev.transforms.clone()
        };
        super::invariance::run(&InvarianceArgs {
            runs: vec![run.clone()],
            data: data.clone(),
            transforms,
            out: out.clone(),
            size: None,
            max_objects: ev.max_objects.unwrap_or(300),
            seed: cell.seed,
            layer: Layer::Backbone,
            compute: ComputeArgs::new(threads, data_dir),
        })?;
        let t = read_parquet(&out.join("invariance.parquet"))?;
        let tr = t.column(cols::TRANSFORM)?.str()?.clone();
        let k = t.column(cols::K)?.cast(&DataType::Int64)?;
        let k = k.i64()?;
        let score = t.column(cols::SCORE)?.cast(&DataType::Float64)?;
        let score = score.f64()?;
        for i in 0..t.height() {
            if let (Some(tr), Some(k), Some(v)) = (tr.get(i), k.get(i), score.get(i)) {
                m.insert(format!("{INVARIANCE_PREFIX}{tr}_top{k}"), v);
            }
        }
    }
    Ok(m)
}

/// cells.parquet (one row per cell), ablation.parquet (one row per cell group × metric), and the table a
/// paper shows as ablation.md, ablation.csv and ablation.tex.
fn write_tables(spec: &ExperimentSpec, results: &[CellResult], out: &Path) -> anyhow::Result<()> {
    let metric_names: Vec<String> = {
        let set: std::collections::BTreeSet<&String> =
            results.iter().flat_map(|r| r.metrics.keys()).collect();
        set.into_iter().cloned().collect()
    };
    let mut cells = df!(
        "data" => results.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        "method" => results.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        "crops" => results.iter().map(|r| r.crops.clone()).collect::<Vec<_>>(),
        "variant" => results.iter().map(|r| r.variant.clone()).collect::<Vec<_>>(),
        "seed" => results.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "status" => results.iter().map(|r| r.status.clone()).collect::<Vec<_>>(),
        "reason" => results.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
    )?;
    for name in &metric_names {
        let v: Vec<Option<f64>> = results
            .iter()
            .map(|r| r.metrics.get(name).copied())
            .collect();
        cells.with_column(Column::new(name.as_str().into(), v))?;
    }
    write_parquet(&mut cells, &out.join("cells.parquet"))?;

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
    )?;
    write_parquet(&mut long, &out.join("ablation.parquet"))?;

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
    )?;
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
            wide.with_column(Column::new(format!("{m}{suffix}").into(), v))?;
        }
    }
    crate::report::io::write_csv(&mut wide, &out.join("ablation.csv"))?;
    let tex = render_latex(&spec.name, &rows, &shown);
    write_atomic(&out.join("ablation.tex"), |f| {
        f.write_all(tex.as_bytes())
            .map_err(|e| crate::error::Error::format(out.join("ablation.tex"), e.to_string()))
    })?;
    let other: Vec<&CellResult> = results.iter().filter(|r| r.status != "done").collect();
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
    write_atomic(&out.join("ablation.md"), |f| {
        f.write_all(md.as_bytes())
            .map_err(|e| crate::error::Error::format(out.join("ablation.md"), e.to_string()))
    })?;
    print!("{md}");
    Ok(())
}
