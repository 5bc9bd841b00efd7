//! Issue 23 ("Trust II"), training settings and experiment cells: settings that would exhaust memory are
//! refused before the first allocation with the estimate, `--threads` is capped, random numeric settings
//! give Ok or a clean error, cells never share a directory, a grid cell applies a setting as `train` does,
//! and a cell is reported done only once its cell.json is written. Regression tests are named after the bug.
mod common;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use biaslab::error::Error;
use biaslab::experiment::{dir_part, Cell, CellResult, CellStatus, ExperimentSpec, MAX_PART};
use biaslab::pipeline::grid::{run_grid, GridProgress, GridRequest, CELL_FILE};
use biaslab::pipeline::{Env, Progress};
use biaslab::train::budget::{budget_for, estimate};
use biaslab::train::TrainConfig;
use proptest::prelude::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The default config with `extra` TOML lines on top, fitted and validated for training as `train
/// --config` does: the refused field and the error's text.
fn refusal(extra: &str) -> (String, String) {
    let cfg: TrainConfig = toml::from_str(extra).unwrap();
    match cfg.fitted("t.toml") {
        Err(e) => match &e {
            Error::Config { field, .. } => (field.clone(), e.to_string()),
            _ => panic!("{extra}: expected a config error, got {e:?}"),
        },
        Ok(_) => panic!("{extra}: accepted"),
    }
}

/// Asserts that `extra` is refused naming `field`, with the estimate in GiB and the machine's budget.
fn assert_refused_with_estimate(extra: &str, field: &str) {
    let (f, why) = refusal(extra);
    assert_eq!(f, field, "{why}");
    assert!(
        why.contains(&format!("{field} "))
            && why.contains("one training step would need ~")
            && why.contains(" GiB (")
            && why.contains("more than the "),
        "{why}"
    );
}

// Issue 23 §6: `size_crops = [20000]` aborted in libtorch after minutes (exit 134).
#[test]
fn size_crops_20000_is_refused_with_the_estimate_before_allocating() {
    assert_refused_with_estimate("size_crops = [20000, 32]", "size_crops");
    assert_refused_with_estimate("size_crops = [1000000, 32]", "size_crops");
    let (_, why) = refusal("size_crops = [20000, 32]");
    assert!(why.contains("size_crops [20000, 32]"), "{why}");
    assert!(why.contains("batch 32 × 6 crops"), "{why}");
}

// Issue 23 §6: `nmb_crops = [100000]` (with the other lists to match) panicked in tch.
#[test]
fn nmb_crops_100000_is_refused_with_the_estimate_before_allocating() {
    assert_refused_with_estimate("nmb_crops = [2, 100000]", "nmb_crops");
    // a crop count whose sum overflows usize is refused by name, not wrapped
    let (f, why) = refusal(&format!("nmb_crops = [2, {}]", i64::MAX));
    assert_eq!(f, "nmb_crops", "{why}");
}

// Issue 23 §6: `nmb_prototypes = [1e9]` panicked in tch (as an integer; `1e9` itself is a TOML float and a
// clean parse error).
#[test]
fn nmb_prototypes_1e9_is_refused_with_the_estimate_before_allocating() {
    assert_refused_with_estimate("nmb_prototypes = [1000000000]", "nmb_prototypes");
    let err = toml::from_str::<TrainConfig>("nmb_prototypes = [1e9]").unwrap_err();
    assert!(err.to_string().contains("nmb_prototypes"), "{err}");
}

// Issue 23 §6: `width = 100000` panicked in tch.
#[test]
fn width_100000_is_refused_with_the_estimate_before_allocating() {
    assert_refused_with_estimate("width = 100000", "width");
    assert_refused_with_estimate(&format!("width = {}", i64::MAX), "width");
}

// Issue 23 §6: `queue_length = 1e8` aborted when the queue was allocated. The estimate (≈ 350 GiB) is above
// any machine these tests run on.
#[test]
fn queue_length_1e8_is_refused_with_the_estimate_before_allocating() {
    assert_refused_with_estimate("queue_length = 100000000", "queue_length");
    // near i64::MAX there is no next multiple of the batch: refused, not overflowed
    let (f, _) = refusal(&format!("queue_length = {}", i64::MAX));
    assert_eq!(f, "queue_length");
}

// The refusal comes from `train` before the run directory exists, exit status 2.
#[test]
fn train_refuses_size_crops_20000_before_creating_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let cfg = tmp.path().join("big.toml");
    std::fs::write(&cfg, "size_crops = [20000, 32]\n").unwrap();
    let run = tmp.path().join("run");
    let o = common::run_biaslab(
        &[
            "train",
            "--data",
            "stamps",
            "--out",
            p(&run),
            "--config",
            p(&cfg),
        ],
        &[("BIASLAB_DATA", p(&data))],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("invalid `size_crops`")
            && t.contains("size_crops [20000, 32]: one training step"),
        "{t}"
    );
    assert!(!run.exists());
}

// Issue 23 §6: `train --threads 100000` spawned threads without bound.
#[test]
fn train_threads_100000_is_capped_with_a_note() {
    let (n, note) = biaslab::cli::capped_threads(Some(100_000));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        n,
        (cores * biaslab::cli::THREADS_PER_CORE).min(biaslab::cli::MAX_THREADS)
    );
    assert!(note.unwrap().contains("--threads 100000"));
    assert_eq!(biaslab::cli::capped_threads(Some(1)), (1, None));
    assert_eq!(biaslab::cli::capped_threads(Some(0)).0, cores.min(n));

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let cfg = tmp.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}nmb_crops = [2]\nsize_crops = [24]\nmin_scale_crops = [0.3]\nmax_scale_crops = [1.0]\n",
            common::TINY_GRID_TRAIN.replace("[train]", "")
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let o = common::run_biaslab(
        &[
            "train",
            "--data",
            "stamps",
            "--out",
            p(&run),
            "--config",
            p(&cfg),
            "--threads",
            "100000",
            "--max-steps",
            "0",
        ],
        &[("BIASLAB_DATA", p(&data))],
    );
    let t = text(&o);
    assert!(
        t.contains(&format!("note: --threads 100000 is more than 4 per core"))
            && t.contains(&format!("using {n}")),
        "{t}"
    );
    // one truncated PNG in stamps: exit 1 (skipped inputs) or 0, never a crash
    assert!(matches!(o.status.code(), Some(0 | 1)), "{t}");
}

/// A TOML value for a numeric setting: small, boundary and absurd integers, and floats with the specials.
fn int_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..70).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        Just(i64::MAX.to_string()),
        Just(i64::MIN.to_string()),
        (0u32..40).prop_map(|e| (1i64 << e).to_string()),
        Just("1e9".to_string()),
    ]
}

fn float_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-2.0f64..3.0).prop_map(|v| format!("{v:?}")),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("0.0".to_string()),
        Just("1e308".to_string()),
    ]
}

fn int_list() -> impl Strategy<Value = String> {
    prop::collection::vec(int_value(), 0..4).prop_map(|v| format!("[{}]", v.join(", ")))
}

fn float_list() -> impl Strategy<Value = String> {
    prop::collection::vec(float_value(), 0..4).prop_map(|v| format!("[{}]", v.join(", ")))
}

/// Every numeric setting of TrainConfig, by kind.
const INTS: [&str; 14] = [
    "sinkhorn_iterations",
    "feat_dim",
    "queue_length",
    "epoch_queue_starts",
    "epochs",
    "batch_size",
    "steps_per_epoch",
    "warmup_epochs",
    "freeze_prototypes_niters",
    "width",
    "hidden_mlp",
    "seed",
    "nmb_crops",
    "size_crops",
];
const INT_LISTS: [&str; 4] = [
    "nmb_crops",
    "size_crops",
    "nmb_prototypes",
    "crops_for_assign",
];
const FLOATS: [&str; 13] = [
    "temperature",
    "epsilon",
    "base_lr",
    "final_lr",
    "start_warmup",
    "wd",
    "momentum",
    "trust_coefficient",
    "jitter_strength",
    "jitter_prob",
    "grayscale_prob",
    "blur_prob",
    "min_scale_crops",
];
const FLOAT_LISTS: [&str; 2] = ["min_scale_crops", "max_scale_crops"];

/// A TOML text setting some of the numeric keys (each at most once) to random values; the rest defaults.
fn random_config() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((0..INTS.len(), int_value()), 0..6),
        prop::collection::vec((0..INT_LISTS.len(), int_list()), 0..3),
        prop::collection::vec((0..FLOATS.len(), float_value()), 0..6),
        prop::collection::vec((0..FLOAT_LISTS.len(), float_list()), 0..2),
    )
        .prop_map(|(ints, int_lists, floats, float_lists)| {
            let mut keys = std::collections::BTreeMap::new();
            for (i, v) in ints {
                keys.insert(INTS[i], v);
            }
            for (i, v) in int_lists {
                keys.insert(INT_LISTS[i], v);
            }
            for (i, v) in floats {
                keys.insert(FLOATS[i], v);
            }
            for (i, v) in float_lists {
                keys.insert(FLOAT_LISTS[i], v);
            }
            keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    // Issue 23: random TOML values for every numeric setting give Ok or a clean Err, never a panic; what
    // is accepted fits the machine by the same estimate.
    #[test]
    fn random_numeric_settings_parse_to_ok_or_a_clean_error(text in random_config()) {
        if let Ok(cfg) = toml::from_str::<TrainConfig>(&text) {
            match cfg.fitted("random.toml") {
                Ok((cfg, _notes)) => {
                    let e = estimate(&cfg);
                    prop_assert!(e.total().is_finite() && e.total() <= budget_for(&cfg).bytes, "{text}: {e:?}");
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("random.toml: invalid `"), "{text}: {msg}");
                }
            }
        }
        // the same values in a grid's [train] table: every cell applies or says why, no panic
        let spec = format!(
            "name = \"p\"\n[grid]\ndata = [\"d\"]\nmethod = [\"swav\"]\ncrops = [\"c\"]\nseed = [0]\n[crops.c]\n[train]\n{text}"
        );
        if let Ok(spec) = ExperimentSpec::parse(&spec, "p.toml") {
            for c in spec.cells("p.toml") {
                if let Err(why) = &c.config {
                    prop_assert!(!why.is_empty());
                }
            }
        }
    }
}

// Issue 23 §5: variants `a/b` and `a_b` shared a cell directory; the second cell failed with "--resume asks
// for another run" although --resume was not given. A 250-character name failed with ENAMETOOLONG.
#[test]
fn variants_a_slash_b_and_a_underscore_b_get_their_own_cell_directories() {
    let long = "v".repeat(250);
    // names that need no sanitising keep them (experiments written before resume into the same cells)
    assert_eq!(dir_part("base"), "base");
    assert_eq!(dir_part("two-large"), "two-large");
    assert_ne!(dir_part("a/b"), dir_part("a_b"));
    assert!(dir_part("a/b").starts_with("a_b-"));
    assert!(dir_part(&long).len() <= MAX_PART);
    assert_ne!(dir_part(&long), dir_part(&"v".repeat(251)));

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let file = tmp.path().join("grid.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "collide"
[grid]
data = ["stamps"]
method = ["swav"]
crops = ["mc"]
variant = ["a/b", "a_b", "{long}"]
seed = [0]
{train}{crops}[variants."a/b"]
hidden_mlp = 16
[variants.a_b]
hidden_mlp = 24
[variants.{long}]
"#,
            train = common::TINY_GRID_TRAIN,
            crops = common::TINY_TWO_VIEWS
        ),
    )
    .unwrap();
    let req = GridRequest {
        spec: ExperimentSpec::read(&file).unwrap(),
        file,
        out: tmp.path().join("grid"),
        resume: false,
        jobs: 1,
    };
    let cells = req.spec.cells("grid.toml");
    let ids: std::collections::BTreeSet<String> = cells.iter().map(Cell::id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|id| id.len() <= 255), "{ids:?}");
    let r = run_grid(&Env::cpu(&data, 2), &req, &()).unwrap();
    for c in &r.cells {
        assert!(c.status.is_done(), "{c:?}");
        let dir = req
            .out
            .join("cells")
            .join(cells.iter().find(|x| x.variant == c.variant).unwrap().id());
        let json: CellResult =
            serde_json::from_slice(&std::fs::read(dir.join(CELL_FILE)).unwrap()).unwrap();
        assert_eq!(json.variant, c.variant);
    }
}

/// Every note and log line the cells' stages report, and each finished cell's status.
#[derive(Default)]
struct Heard {
    lines: Mutex<Vec<String>>,
    done: Mutex<Vec<(String, CellStatus)>>,
    /// Stages begun so far (train, then each measurement).
    stages: AtomicUsize,
    /// Raised as the third stage (the linear probe) reports progress: a SIGINT after the last check of
    /// the stop flag, so the stage returns its result and the cell reaches the end of its measurements.
    stop_in_last_stage: Option<Arc<AtomicBool>>,
}

struct Stage<'a> {
    heard: &'a Heard,
    index: usize,
}

impl Progress for Stage<'_> {
    fn advance(&mut self, _n: usize) {
        if let Some(f) = self
            .heard
            .stop_in_last_stage
            .as_ref()
            .filter(|_| self.index >= 2)
        {
            f.store(true, Ordering::SeqCst);
        }
    }
    fn line(&mut self, text: &str) {
        self.heard.lines.lock().unwrap().push(text.to_string());
    }
    fn note(&mut self, text: &str) {
        self.heard
            .lines
            .lock()
            .unwrap()
            .push(format!("note: {text}"));
    }
}

impl GridProgress for Heard {
    fn cell_done(&self, _finished: usize, _total: usize, cell: &Cell, r: &CellResult) {
        self.done.lock().unwrap().push((cell.id(), r.status));
    }
    fn stage(&self, _cell: &Cell) -> Box<dyn Progress + '_> {
        let index = self.stages.fetch_add(1, Ordering::SeqCst);
        Box::new(Stage { heard: self, index })
    }
}

/// A one-cell grid on `stamps` with `train` as its [train] table and `evaluate` in its [evaluate] table.
fn one_cell_grid(tmp: &Path, train: &str, evaluate: &str) -> GridRequest {
    let file = tmp.join("grid.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "one"
[grid]
data = ["stamps"]
method = ["swav"]
crops = ["mc"]
seed = [0]
{train}{crops}[evaluate]
{evaluate}
"#,
            crops = common::TINY_TWO_VIEWS
        ),
    )
    .unwrap();
    GridRequest {
        spec: ExperimentSpec::read(&file).unwrap(),
        file,
        out: tmp.join("grid"),
        resume: false,
        jobs: 1,
    }
}

// Issue 23 §9: the `warmup_epochs` that `train` shortens with a note made every grid cell "not applicable"
// (the untrained one included), and the untrained cell printed "continue with --resume".
#[test]
fn warmup_longer_than_the_run_is_shortened_in_grid_cells_as_by_train() {
    let train = common::TINY_GRID_TRAIN.replace("warmup_epochs = 0", "warmup_epochs = 5");
    // the CLI's own function gives the note and the shortened warm-up
    let cfg: TrainConfig = toml::from_str(&train.replace("[train]", "")).unwrap();
    let (fitted, notes) = cfg.fitted("t.toml").unwrap();
    assert_eq!(fitted.warmup_epochs, 0);
    assert_eq!(notes.len(), 1, "{notes:?}");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let req = one_cell_grid(tmp.path(), &train, "untrained = true");
    for c in req.spec.cells("grid.toml") {
        assert!(c.config.is_ok(), "{}: {:?}", c.id(), c.config);
    }
    let heard = Heard::default();
    let r = run_grid(&Env::cpu(&data, 2), &req, &heard).unwrap();
    assert_eq!(r.cells.len(), 2);
    for c in &r.cells {
        assert!(c.status.is_done(), "{c:?}");
    }
    let lines = heard.lines.lock().unwrap();
    let note = &notes[0];
    assert!(
        lines.iter().filter(|l| l.contains(note.as_str())).count() == 2,
        "{note} not in {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("continue with --resume")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("untrained: the network as initialised")),
        "{lines:?}"
    );
    let log =
        std::fs::read_to_string(req.out.join("cells/untrained__seed0/run/train.log")).unwrap();
    assert!(!log.contains("--resume"), "{log}");
}

// Issue 23 §9: after SIGINT a cell was printed `done` although its cell.json was not written.
#[test]
fn cell_interrupted_in_its_last_stage_is_not_reported_done_without_its_cell_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let req = one_cell_grid(
        tmp.path(),
        common::TINY_GRID_TRAIN,
        "knn_train = \"stamps\"\ntest_fraction = 0.5",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let heard = Heard {
        stop_in_last_stage: Some(stop.clone()),
        ..Heard::default()
    };
    let env = Env {
        stop: Some(stop.clone()),
        ..Env::cpu(&data, 2)
    };
    let r = run_grid(&env, &req, &heard).unwrap();
    assert!(r.interrupted);
    let done = heard.done.lock().unwrap().clone();
    assert_eq!(done.len(), 1, "{done:?}");
    let (id, status) = &done[0];
    assert_eq!(*status, CellStatus::Interrupted, "{id}");
    assert!(!req.out.join("cells").join(id).join(CELL_FILE).exists());
    // a resume finishes it
    let again = run_grid(
        &Env::cpu(&data, 2),
        &GridRequest {
            resume: true,
            ..req.clone()
        },
        &(),
    )
    .unwrap();
    assert!(
        again.cells.iter().all(|c| c.status.is_done()),
        "{:?}",
        again.cells
    );
    assert!(req.out.join("cells").join(id).join(CELL_FILE).is_file());
}

// Cell directories of experiments written before the hash suffix (`a/b` → `a_b`) are found on resume: the
// finished cell is moved to its new name and kept, not trained again.
#[test]
fn finished_cell_under_its_old_sanitised_name_is_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let file = tmp.path().join("grid.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "old"
[grid]
data = ["stamps"]
method = ["swav"]
crops = ["mc"]
variant = ["a/b"]
seed = [0]
{train}{crops}[variants."a/b"]
"#,
            train = common::TINY_GRID_TRAIN,
            crops = common::TINY_TWO_VIEWS
        ),
    )
    .unwrap();
    let req = GridRequest {
        spec: ExperimentSpec::read(&file).unwrap(),
        file,
        out: tmp.path().join("grid"),
        resume: false,
        jobs: 1,
    };
    let cell = req.spec.cells("grid.toml").remove(0);
    assert_eq!(cell.legacy_id(), "stamps__swav__mc__a_b__seed0");
    assert_ne!(cell.id(), cell.legacy_id());
    run_grid(&Env::cpu(&data, 2), &req, &()).unwrap();
    // as an older biaslab laid it out
    let cells = req.out.join("cells");
    std::fs::rename(cells.join(cell.id()), cells.join(cell.legacy_id())).unwrap();
    let log = cells.join(cell.legacy_id()).join("run/train.log");
    let before = std::fs::read_to_string(&log).unwrap();
    let heard = Heard::default();
    let again = run_grid(
        &Env::cpu(&data, 2),
        &GridRequest {
            resume: true,
            ..req.clone()
        },
        &heard,
    )
    .unwrap();
    assert!(again.cells[0].status.is_done(), "{:?}", again.cells);
    assert!(!cells.join(cell.legacy_id()).exists());
    let moved = cells.join(cell.id()).join("run/train.log");
    assert_eq!(std::fs::read_to_string(moved).unwrap(), before);
    let lines = heard.lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("moved from stamps__swav__mc__a_b__seed0")),
        "{lines:?}"
    );
}
