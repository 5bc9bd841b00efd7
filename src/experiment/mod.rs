//! Ablation grids from TOML (Purushwalkam & Gupta style): pretraining data × crop policy × method ×
//! variant (any other training setting: epochs, batch size, queue) × seed.
//! This module is the pure part — the spec, its expansion into cells with one validated training config
//! each, and the aggregation of per-cell metrics into mean and 95% interval over seeds. Running the cells
//! (train → embed → analyze → eval → invariance) is the grid runner, [`crate::pipeline::grid`].
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::compose::ComposeConfig;
use crate::error::{Error, Result};
use crate::train::TrainConfig;

mod status;
pub use status::CellStatus;

/// The experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    /// What the experiment tests and at what scale (copied into the ablation table's Markdown).
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub prepare: Prepare,
    /// Every cell trains on a seeded sample of at most this many images of its data (equal data size,
    /// hence equal steps per epoch, across datasets of different sizes).
    pub max_images: Option<usize>,
    pub grid: Grid,
    /// Training settings shared by every cell (TrainConfig names, as `biaslab train --config`).
    #[serde(default)]
    pub train: toml::Table,
    /// Crop policies by name: TrainConfig settings each policy overrides (`nmb_crops`, `size_crops`, …),
    /// plus `object_crops = true` for object-aware crops (every crop inside one COCO box of the data).
    #[serde(default)]
    pub crops: BTreeMap<String, toml::Table>,
    /// Per-method overrides (e.g. SimCLR's temperature), applied after the crop policy.
    #[serde(default)]
    pub methods: BTreeMap<String, toml::Table>,
    /// Named variants (epochs, batch size, queue, …), applied last; `grid.variant` picks them.
    #[serde(default)]
    pub variants: BTreeMap<String, toml::Table>,
    /// What every cell is measured on; without the table a cell is trained and nothing else.
    #[serde(default)]
    pub evaluate: Evaluate,
}

/// Data the cells need: fetched packages and the composed object/scene pair.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    #[serde(default)]
    pub fetch: Vec<String>,
    /// `[prepare.compose]`: compose's own settings under its own names.
    pub compose: Option<ComposeConfig>,
}

/// The axes. A `data` entry names one dataset, or several joined by `+` (trained on mixed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub data: Vec<String>,
    pub method: Vec<String>,
    pub crops: Vec<String>,
    /// Variant names (`[variants.NAME]` tables); default: one variant, `base`, with no overrides.
    #[serde(default)]
    pub variant: Vec<String>,
    pub seed: Vec<u64>,
}

/// The variant every grid has when it names none.
pub const BASE_VARIANT: &str = "base";

/// What every cell is measured on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// Dataset with COCO boxes (scenes): collapse across crops of its objects.
    pub boxes: Option<String>,
    /// Labelled datasets for weighted kNN and the linear probe (train → test); without `knn_test`, a
    /// seeded 20% of `knn_train`'s images is held out.
    pub knn_train: Option<String>,
    pub knn_test: Option<String>,
    /// Share of `knn_train`'s images held out for the kNN and linear probes when there is no `knn_test`
    /// (default 0.2). A larger share buys a narrower interval: the demo holds out half of its 1,242-image
    /// probe, 621 test images, a 95% interval about ±0.04 wide.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Also measure kNN after every training epoch (each cell's run/knn_epochs.parquet: accuracy against
    /// epoch and wall time, the convergence curve).
    #[serde(default)]
    pub knn_every_epoch: bool,
    /// Labelled object dataset for the invariance table.
    pub invariance: Option<String>,
    #[serde(default)]
    pub transforms: Vec<String>,
    /// Objects used for the invariance sets at most.
    pub max_objects: Option<usize>,
    /// Dataset with object masks (a composed object-centric test set, or COCO segmentations) for
    /// background reliance (Xiao et al. 2020, `biaslab backgrounds`): per-variant probe accuracy, BG-gap and
    /// the nearest-neighbour background-match rate. Probes train on `backgrounds_train`'s Original images
    /// (default: a held-out share of `backgrounds` itself).
    pub backgrounds: Option<String>,
    pub backgrounds_train: Option<String>,
    /// Also measure the untrained network (the first method's config at step 0, one cell per seed): the
    /// floor every number of the table is read against.
    #[serde(default)]
    pub untrained: bool,
}

fn default_test_fraction() -> f64 {
    0.2
}

impl Default for Evaluate {
    fn default() -> Self {
        Self {
            boxes: None,
            knn_train: None,
            knn_test: None,
            test_fraction: default_test_fraction(),
            knn_every_epoch: false,
            invariance: None,
            transforms: Vec::new(),
            max_objects: None,
            backgrounds: None,
            backgrounds_train: None,
            untrained: false,
        }
    }
}

/// The method name of the untrained floor's cells (`evaluate.untrained`).
pub const UNTRAINED: &str = "untrained";
/// Table entry for an axis that does not apply (the untrained floor's data and crops).
pub const NOT_APPLICABLE: &str = "—";

/// One cell of the grid, with its resolved training config (or why it does not apply).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub data: String,
    pub method: String,
    pub crops: String,
    pub variant: String,
    pub seed: u64,
    /// The data axis in the cell's directory name ([`dir_part`] of `data`).
    pub data_id: String,
    /// The data axis as directory names had it before [`dir_part`]: made filesystem-safe, with a hash only
    /// where two entries of the grid collided. Where it differs from `data_id`, a finished cell of an
    /// older experiment is found there (see [`Cell::legacy_id`]).
    pub legacy_data_id: String,
    /// Crops drawn inside the data's COCO boxes (`object_crops` of the crop policy).
    pub object_crops: bool,
    pub config: std::result::Result<TrainConfig, String>,
}

/// The crop-policy key that is not a TrainConfig field: train on object boxes (see `Cell::object_crops`).
pub const OBJECT_CROPS_KEY: &str = "object_crops";

impl Cell {
    /// Directory name: each axis as a [`dir_part`], so two cells never share a directory and the name stays
    /// within a file name's 255 bytes (4 parts of at most [`MAX_PART`] bytes, separators and a u64 seed).
    pub fn id(&self) -> String {
        if self.method == UNTRAINED {
            return format!("{UNTRAINED}__seed{}", self.seed);
        }
        format!(
            "{}__{}__{}__{}__seed{}",
            self.data_id,
            dir_part(&self.method),
            dir_part(&self.crops),
            dir_part(&self.variant),
            self.seed
        )
    }

    /// The directory name an experiment written before [`dir_part`] gave this cell (axes made
    /// filesystem-safe, nothing else); equal to [`Cell::id`] wherever no axis needed sanitising.
    pub fn legacy_id(&self) -> String {
        if self.method == UNTRAINED {
            return self.id();
        }
        format!(
            "{}__{}__{}__{}__seed{}",
            self.legacy_data_id,
            safe_chars(&self.method),
            safe_chars(&self.crops),
            safe_chars(&self.variant),
            self.seed
        )
    }

    pub fn datasets(&self) -> Vec<String> {
        self.data.split('+').map(|s| s.trim().to_string()).collect()
    }
}

impl ExperimentSpec {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::format(path, e.to_string()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let spec: Self =
            toml::from_str(text).map_err(|e| Error::config(origin, "experiment", e.to_string()))?;
        for (axis, n) in [
            ("grid.data", spec.grid.data.len()),
            ("grid.method", spec.grid.method.len()),
            ("grid.crops", spec.grid.crops.len()),
            ("grid.seed", spec.grid.seed.len()),
        ] {
            if n == 0 {
                return Err(Error::config(origin, axis, "is empty"));
            }
        }
        // A repeated value would run one cell twice and count it as two (two seeds `1` give an interval
        // of zero width from one measurement).
        let dup = |values: Vec<String>| {
            let mut seen = std::collections::BTreeSet::new();
            values.into_iter().find(|v| !seen.insert(v.clone()))
        };
        for (axis, values) in [
            ("grid.data", spec.grid.data.clone()),
            ("grid.method", spec.grid.method.clone()),
            ("grid.crops", spec.grid.crops.clone()),
            ("grid.variant", spec.grid.variant.clone()),
            (
                "grid.seed",
                spec.grid.seed.iter().map(u64::to_string).collect(),
            ),
        ] {
            if let Some(v) = dup(values) {
                return Err(Error::config(
                    origin,
                    axis,
                    format!("`{v}` is listed twice; each value makes its own cells"),
                ));
            }
        }
        let f = spec.evaluate.test_fraction;
        if !(f > 0.0 && f < 1.0) {
            return Err(Error::config(
                origin,
                "evaluate.test_fraction",
                format!("{f} is not a share strictly between 0 and 1"),
            ));
        }
        if let Some(p) = spec
            .grid
            .crops
            .iter()
            .find(|p| !spec.crops.contains_key(*p))
        {
            return Err(Error::config(
                origin,
                "grid.crops",
                format!("crop policy `{p}` has no [crops.{p}] table"),
            ));
        }
        if let Some(v) = spec
            .grid
            .variant
            .iter()
            .find(|v| *v != BASE_VARIANT && !spec.variants.contains_key(*v))
        {
            return Err(Error::config(
                origin,
                "grid.variant",
                format!("variant `{v}` has no [variants.{v}] table"),
            ));
        }
        Ok(spec)
    }

    /// The variant axis (`base` when the grid names none).
    pub fn variant_names(&self) -> Vec<String> {
        if self.grid.variant.is_empty() {
            vec![BASE_VARIANT.to_string()]
        } else {
            self.grid.variant.clone()
        }
    }

    /// Every cell, data-major; a cell whose config is invalid (SimCLR with four crops, say) carries the
    /// reason instead of a config, so the table can say why it is empty.
    pub fn cells(&self, origin: &str) -> Vec<Cell> {
        let data_ids: Vec<String> = self.grid.data.iter().map(|d| dir_part(d)).collect();
        let legacy = legacy_data_ids(&self.grid.data);
        let mut out = Vec::new();
        for ((data, data_id), legacy_data_id) in self.grid.data.iter().zip(&data_ids).zip(&legacy) {
            for method in &self.grid.method {
                for crops in &self.grid.crops {
                    for variant in self.variant_names() {
                        for &seed in &self.grid.seed {
                            let config = self.cell_config(method, crops, &variant, seed, origin);
                            let object_crops = self
                                .crops
                                .get(crops)
                                .and_then(|t| t.get(OBJECT_CROPS_KEY))
                                .and_then(toml::Value::as_bool)
                                .unwrap_or(false);
                            out.push(Cell {
                                data: data.clone(),
                                method: method.clone(),
                                crops: crops.clone(),
                                variant: variant.clone(),
                                seed,
                                data_id: data_id.clone(),
                                legacy_data_id: legacy_data_id.clone(),
                                object_crops,
                                config,
                            });
                        }
                    }
                }
            }
        }
        if self.evaluate.untrained {
            // The floor: the first method's network, initialised from each seed and never trained (the
            // trainer needs a dataset to start; it takes no step on it).
            let method = &self.grid.method[0];
            for &seed in &self.grid.seed {
                let variant = &self.variant_names()[0];
                out.push(Cell {
                    data: self.grid.data[0].clone(),
                    method: UNTRAINED.into(),
                    crops: self.grid.crops[0].clone(),
                    variant: variant.clone(),
                    seed,
                    data_id: data_ids[0].clone(),
                    legacy_data_id: legacy[0].clone(),
                    object_crops: false,
                    config: self.cell_config(method, &self.grid.crops[0], variant, seed, origin),
                });
            }
        }
        out
    }

    /// `train` ⊕ `crops.<policy>` ⊕ `methods.<method>` ⊕ `variants.<variant>` ⊕ {method, seed}, later
    /// tables winning.
    fn cell_config(
        &self,
        method: &str,
        crops: &str,
        variant: &str,
        seed: u64,
        origin: &str,
    ) -> std::result::Result<TrainConfig, String> {
        let mut t = self.train.clone();
        for table in [
            self.crops.get(crops),
            self.methods.get(method),
            self.variants.get(variant),
        ]
        .into_iter()
        .flatten()
        {
            t.extend(table.clone());
        }
        t.remove(OBJECT_CROPS_KEY);
        t.insert("method".into(), toml::Value::String(method.to_string()));
        t.insert("seed".into(), toml::Value::Integer(seed as i64));
        // Through text so the parse error quotes the offending line (and with it the field).
        let text = toml::to_string(&t).map_err(|e| format!("{origin}: {e}"))?;
        // over the method's own defaults, as `train --config` reads a file
        let cfg = TrainConfig::from_toml(&text, None).map_err(|e| {
            format!("{origin} (method {method}, crops {crops}, variant {variant}): {e}")
        })?;
        // Applicable exactly when `train --config` would take it: fitted as the CLI fits it (a warm-up
        // longer than the run is shortened, not refused) and checked against this machine's memory. The
        // cell keeps the config as written; the runner fits it again and shows the notes.
        cfg.clone()
            .fitted(&format!("{origin} (method {method}, crops {crops})"))
            .map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// Longest part of a cell's directory name, in bytes: four parts, their separators and `seed` with a u64
/// (4 × 48 + 4 × 2 + 4 + 20 = 224) stay below the 255 bytes of a file name (ext4, APFS, NTFS).
pub const MAX_PART: usize = 48;
use crate::report::names::safe_name as safe_chars;

/// One axis value (data, method, crop policy, variant) as a part of a cell's directory name: the value
/// itself where it is filesystem-safe, at most [`MAX_PART`] bytes and free of the `__` that separates parts
/// (so the directories of existing experiments keep their names); otherwise its safe form, cut to fit,
/// with the first 8 hex digits of the SHA-256 of the value as written appended. Unique by construction:
/// `a/b` and `a_b` get `a_b-<hash>` and `a_b`, and no value makes a name too long for the file system.
pub fn dir_part(value: &str) -> String {
    crate::report::names::unique_name(value, MAX_PART, |v| !v.contains("__"))
}

/// The data parts of directory names before [`dir_part`]: the safe name, with the hash appended only to
/// entries whose safe name another entry of the grid shares.
fn legacy_data_ids(data: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let safe: Vec<String> = data.iter().map(|d| safe_chars(d)).collect();
    safe.iter()
        .zip(data)
        .map(|(s, d)| {
            if safe.iter().filter(|o| *o == s).count() > 1 {
                let h = Sha256::digest(d.as_bytes());
                let hex: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
                format!("{s}-{hex}")
            } else {
                s.clone()
            }
        })
        .collect()
}

/// Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..=30 (statistical tables).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// Mean and 95% t-interval over seeds (NaN bounds with a single seed: no interval from one value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeedSummary {
    pub n: usize,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

pub fn summarise(values: &[f64]) -> SeedSummary {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return SeedSummary {
            n,
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return SeedSummary {
            n,
            mean,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T975.get(n - 2).copied().unwrap_or(1.96);
    let half = t * (var / n as f64).sqrt();
    SeedSummary {
        n,
        mean,
        lo: mean - half,
        hi: mean + half,
    }
}

/// One finished cell's metrics (name → value) with its axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The cell's directory under `cells/` ([`Cell::id`]): the key that joins cells.parquet, the cell's
    /// files and (without its `__seed…` part, [`CellResult::group`]) ablation.parquet. Empty in a
    /// `cell.json` written before the key; the runner fills it in.
    #[serde(default)]
    pub cell: String,
    pub data: String,
    pub method: String,
    pub crops: String,
    pub variant: String,
    pub seed: u64,
    pub status: CellStatus,
    /// Why a cell failed or does not apply.
    pub reason: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// Distinct input files its stages could not read (0 in a `cell.json` written before the count).
    #[serde(default)]
    pub skipped_inputs: usize,
}

impl CellResult {
    /// The cell's key without its seed: the row of ablation.parquet its seeds are averaged into.
    pub fn group(&self) -> String {
        group_of(&self.cell)
    }
}

/// A cell key without its trailing `__seed<N>`: `untrained__seed3` → `untrained`.
pub fn group_of(cell: &str) -> String {
    match cell.rsplit_once("__seed") {
        Some((g, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => g.into(),
        _ => cell.into(),
    }
}

/// A cell's axes without its seed: what the seeds are averaged over.
pub type GroupKey = (String, String, String, String);
/// (data, method, crops, variant) → metric → summary over the seeds of the `done` cells.
pub type Ablation = BTreeMap<GroupKey, BTreeMap<String, SeedSummary>>;

pub fn aggregate(results: &[CellResult]) -> Ablation {
    let mut values: BTreeMap<GroupKey, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.status.is_done()) {
        let key = (
            r.data.clone(),
            r.method.clone(),
            r.crops.clone(),
            r.variant.clone(),
        );
        let per = values.entry(key).or_default();
        for (m, v) in &r.metrics {
            per.entry(m.clone()).or_default().push(*v);
        }
    }
    values
        .into_iter()
        .map(|(k, ms)| {
            let summaries = ms
                .into_iter()
                .map(|(m, v)| {
                    let s = within_range(&m, summarise(&v));
                    (m, s)
                })
                .collect();
            (k, summaries)
        })
        .collect()
}

/// The values metric `m` can take: times, losses and counts are never negative, shares lie in [0, 1]; a
/// gain, a Δ or a slope can take any sign.
fn metric_range(m: &str) -> (f64, f64) {
    let base = m
        .strip_suffix(LO_SUFFIX)
        .or_else(|| m.strip_suffix(HI_SUFFIX))
        .unwrap_or(m);
    let share = [
        "accuracy",
        "chance",
        "auroc",
        "perplexity_ratio",
        "leak",
        "agreement",
    ];
    if base.contains("gain")
        || base.contains("gap")
        || base.contains("delta")
        || base.starts_with("collapse_index")
    {
        (f64::NEG_INFINITY, f64::INFINITY)
    } else if share.iter().any(|w| base.contains(w)) || base.starts_with(BACKGROUNDS_PREFIX) {
        (0.0, 1.0)
    } else if base.ends_with("seconds") || base.contains("loss") || base == "rankme" {
        (0.0, f64::INFINITY)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    }
}

/// A t-interval over a few seeds can reach past what the metric can be (issue 23: `train_seconds`
/// intervals went negative); it is cut to the metric's range, which only ever narrows it to true values.
fn within_range(m: &str, mut s: SeedSummary) -> SeedSummary {
    let (lo, hi) = metric_range(m);
    if s.lo.is_finite() {
        s.lo = s.lo.clamp(lo, hi);
    }
    if s.hi.is_finite() {
        s.hi = s.hi.clamp(lo, hi);
    }
    s
}

/// Suffixes of a metric's own 95% interval as a cell reports it (a Wilson interval of an accuracy, the
/// bootstrap interval of the collapse index): `knn_accuracy_lo`, `knn_accuracy_hi`.
/// A number the table will not print: a ratio over a denominator indistinguishable from 0, or a metric no
/// seed could compute.
pub const UNDEFINED: &str = "undefined";
/// Background-reliance metrics of a cell (`[evaluate] backgrounds`): accuracy per variant and probe,
/// `bg_gap_<probe>`, `bg_match`; a section of their own in the table.
pub const BACKGROUNDS_PREFIX: &str = "bg_";
pub const LO_SUFFIX: &str = "_lo";
pub const HI_SUFFIX: &str = "_hi";
/// Metric name prefix of the invariance scores (`invariance_<transform>_top<k>`).
pub const INVARIANCE_PREFIX: &str = "invariance_";

/// A number as the table shows it: mean over seeds and the interval beside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shown {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One row of the ablation table: the axes as shown (`—` where an axis does not apply) and each metric.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub data: String,
    pub method: String,
    pub crops: String,
    pub variant: String,
    pub seeds: usize,
    pub values: BTreeMap<String, Shown>,
}

/// The metric columns: every metric but the `_lo`/`_hi` halves of another's interval.
pub fn table_metrics(ablation: &Ablation) -> Vec<String> {
    let all: std::collections::BTreeSet<&String> =
        ablation.values().flat_map(|m| m.keys()).collect();
    let is_bound = |m: &str| {
        [LO_SUFFIX, HI_SUFFIX].iter().any(|suf| {
            m.strip_suffix(suf)
                .is_some_and(|base| all.iter().any(|a| a.as_str() == base))
        })
    };
    all.iter()
        .filter(|m| !is_bound(m))
        .map(|m| (*m).clone())
        .collect()
}

/// The rows of the table, the untrained floor last. With several seeds a value's interval is the 95%
/// t-interval of the mean over seeds; with one seed, the cell's own 95% interval where it reports one.
pub fn table_rows(ablation: &Ablation) -> Vec<TableRow> {
    let metrics = table_metrics(ablation);
    let mut rows: Vec<TableRow> = ablation
        .iter()
        .map(|((data, method, crops, variant), ms)| {
            let floor = method == UNTRAINED;
            let values = metrics
                .iter()
                .filter_map(|m| {
                    let s = ms.get(m)?;
                    let own = |suf: &str| ms.get(&format!("{m}{suf}")).map_or(f64::NAN, |b| b.mean);
                    let (lo, hi) = if s.n > 1 {
                        (s.lo, s.hi)
                    } else {
                        (own(LO_SUFFIX), own(HI_SUFFIX))
                    };
                    Some((
                        m.clone(),
                        Shown {
                            mean: s.mean,
                            lo,
                            hi,
                        },
                    ))
                })
                .collect();
            let mut values = values;
            withhold_undefined_collapse_index(ms, &mut values);
            TableRow {
                data: if floor {
                    NOT_APPLICABLE.into()
                } else {
                    data.clone()
                },
                method: method.clone(),
                crops: if floor {
                    NOT_APPLICABLE.into()
                } else {
                    crops.clone()
                },
                variant: variant.clone(),
                seeds: ms.values().map(|s| s.n).max().unwrap_or(0),
                values,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.method == UNTRAINED);
    rows
}

/// The two tables of the ablation (so neither is too wide to read): (title, metric columns).
pub fn table_sections(metrics: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let (inv, rest): (Vec<String>, Vec<String>) = metrics
        .iter()
        .cloned()
        .partition(|m| m.starts_with(INVARIANCE_PREFIX));
    let (bg, main): (Vec<String>, Vec<String>) = rest
        .into_iter()
        .partition(|m| m.starts_with(BACKGROUNDS_PREFIX));
    [
        ("Training, collapse, probes", main),
        ("Invariance (top-k units)", inv),
        ("Background reliance (Xiao et al. 2020)", bg),
    ]
    .into_iter()
    .filter(|(_, m)| !m.is_empty())
    .collect()
}

fn fmt3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        NOT_APPLICABLE.to_string()
    }
}

/// `mean [lo, hi]`, or the mean alone without an interval, or `—`.
/// The collapse index Δscene / Δcat of a row is shown only where it is defined in every seed and Δcat's
/// interval (over seeds, or the cell's own bootstrap) is clear of 0; else it is NaN, printed "undefined"
/// (issue 20: a mean over the seeds where it happened to be defined, or a ratio over a Δcat that may be
/// 0, is not a number to quote).
fn withhold_undefined_collapse_index(
    ms: &BTreeMap<String, SeedSummary>,
    values: &mut BTreeMap<String, Shown>,
) {
    const CI: &str = crate::report::columns::COLLAPSE_INDEX;
    let (Some(ci), Some(dc)) = (ms.get(CI), values.get(crate::report::columns::DELTA_CAT)) else {
        return;
    };
    let seeds = ms.get(crate::report::columns::DELTA_CAT).map_or(0, |s| s.n);
    let clear = dc.lo.is_finite() && dc.hi.is_finite() && (dc.lo > 0.0 || dc.hi < 0.0);
    if ci.n < seeds || !clear {
        values.insert(
            CI.to_string(),
            Shown {
                mean: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
            },
        );
    }
}

pub fn shown_text(v: Option<&Shown>) -> String {
    match v {
        Some(s) if !s.mean.is_finite() => UNDEFINED.to_string(),
        Some(s) if s.lo.is_finite() && s.hi.is_finite() => {
            format!("{} [{}, {}]", fmt3(s.mean), fmt3(s.lo), fmt3(s.hi))
        }
        Some(s) => fmt3(s.mean),
        None => NOT_APPLICABLE.to_string(),
    }
}

/// What the intervals of the table are, for its caption.
pub const INTERVAL_NOTE: &str = "Mean over seeds with a 95% interval `[lo, hi]`: over several seeds the t-interval of the mean; from one seed the cell's own interval (accuracies: Wilson interval over the test images; collapse index: bootstrap over images), none where the cell reports none. `probe_chance` is the majority label's share of the probe's test images, the accuracy of always guessing it; the `untrained` row is the same network never trained, the floor every number is read against. `delta_scene` and `delta_cat` are S_scene − S_base and S_cat − S_base, the collapse index's parts; `collapse_index` is their ratio, given only where `delta_cat`'s interval excludes 0 in every seed and over seeds (\"undefined\" otherwise: S_cat ≈ S_base, read the parts). `knn_gain` and `linear_gain` are a cell's accuracy minus its seed's untrained accuracy on the same test images, with a paired bootstrap interval over those images (one seed) or the t-interval over seeds: training helped where the interval is above 0.";

/// The tables in Markdown (one per section).
pub fn render_markdown(rows: &[TableRow], metrics: &[String]) -> String {
    let mut md = String::new();
    for (title, names) in table_sections(metrics) {
        md.push_str(&format!(
            "\n## {title}\n\n| data | method | crops | variant | seeds |"
        ));
        for m in &names {
            md.push_str(&format!(" {} |", m.trim_start_matches(INVARIANCE_PREFIX)));
        }
        md.push_str("\n|---|---|---|---|---|");
        md.push_str(&"---|".repeat(names.len()));
        md.push('\n');
        for r in rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |",
                r.data, r.method, r.crops, r.variant, r.seeds
            ));
            for m in &names {
                md.push_str(&format!(" {} |", shown_text(r.values.get(m))));
            }
            md.push('\n');
        }
    }
    md
}

fn latex_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '_' | '&' | '%' | '#' | '$' | '{' | '}' => format!("\\{c}"),
            '—' => "---".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The tables as LaTeX (booktabs), one `tabular` per section, ready for `\input{ablation.tex}`.
pub fn render_latex(name: &str, rows: &[TableRow], metrics: &[String]) -> String {
    let mut tex = format!(
        "% biaslab experiment `{name}`: mean [95% interval]; needs \\usepackage{{booktabs}}\n"
    );
    for (title, names) in table_sections(metrics) {
        tex.push_str(&format!(
            "% {title}\n\\begin{{tabular}}{{lllll{}}}\n\\toprule\ndata & method & crops & variant & seeds",
            "r".repeat(names.len())
        ));
        for m in &names {
            tex.push_str(&format!(
                " & {}",
                latex_escape(m.trim_start_matches(INVARIANCE_PREFIX))
            ));
        }
        tex.push_str(" \\\\\n\\midrule\n");
        for r in rows {
            tex.push_str(&format!(
                "{} & {} & {} & {} & {}",
                latex_escape(&r.data),
                latex_escape(&r.method),
                latex_escape(&r.crops),
                latex_escape(&r.variant),
                r.seeds
            ));
            for m in &names {
                tex.push_str(&format!(
                    " & {}",
                    latex_escape(&shown_text(r.values.get(m)))
                ));
            }
            tex.push_str(" \\\\\n");
        }
        tex.push_str("\\bottomrule\n\\end{tabular}\n");
    }
    tex
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
[grid]
data = ["objects", "scenes+objects"]
method = ["swav", "simclr"]
crops = ["multicrop", "two-large"]
seed = [0, 1]
variant = ["base", "long"]
[variants.long]
epochs = 4
[train]
epochs = 2
batch_size = 8
warmup_epochs = 0
[crops.multicrop]
nmb_crops = [2, 2]
size_crops = [32, 16]
min_scale_crops = [0.14, 0.05]
max_scale_crops = [1.0, 0.14]
[crops.two-large]
nmb_crops = [2]
size_crops = [32]
min_scale_crops = [0.14]
max_scale_crops = [1.0]
object_crops = true
[methods.simclr]
temperature = 0.2
[evaluate]
boxes = "scenes-test"
"#;

    #[test]
    fn grid_expands_and_invalid_cells_say_why() {
        let spec = ExperimentSpec::parse(SPEC, "t.toml").unwrap();
        let cells = spec.cells("t.toml");
        assert_eq!(cells.len(), 2 * 2 * 2 * 2 * 2);
        let c = &cells[0];
        assert_eq!(c.id(), "objects__swav__multicrop__base__seed0");
        let cfg = c.config.as_ref().unwrap();
        assert_eq!((cfg.epochs, cfg.batch_size, cfg.seed), (2, 8, 0));
        assert_eq!(cfg.crops.nmb_crops, vec![2, 2]);
        let long = &cells[3];
        assert_eq!(long.id(), "objects__swav__multicrop__long__seed1");
        assert_eq!(long.config.as_ref().unwrap().epochs, 4);
        // SimCLR takes exactly two views: the multi-crop cell does not apply, the two-large one does
        let simclr_mc = cells
            .iter()
            .find(|c| c.method == "simclr" && c.crops == "multicrop")
            .unwrap();
        let why = simclr_mc.config.as_ref().unwrap_err();
        assert!(why.contains("simclr uses exactly 2 views"), "{why}");
        let simclr_2 = cells
            .iter()
            .find(|c| c.method == "simclr" && c.crops == "two-large")
            .unwrap();
        assert_eq!(simclr_2.config.as_ref().unwrap().temperature, 0.2);
        assert!(simclr_2.object_crops && !c.object_crops);
        assert_eq!(
            cells[16].datasets(),
            vec!["scenes".to_string(), "objects".to_string()]
        );
        // `+` is not filesystem-safe: the sanitised name carries the entry's hash, the old name stays known
        let mixed = cells[16].id();
        assert!(
            mixed.starts_with("scenes_objects-")
                && mixed.ends_with("__swav__multicrop__base__seed0"),
            "{mixed}"
        );
        assert_eq!(
            cells[16].legacy_id(),
            "scenes_objects__swav__multicrop__base__seed0"
        );
        assert_eq!(cells[0].legacy_id(), cells[0].id());
    }

    #[test]
    fn spec_errors_name_the_field() {
        let bad = SPEC.replace(
            "crops = [\"multicrop\", \"two-large\"]",
            "crops = [\"tiny\"]",
        );
        let err = ExperimentSpec::parse(&bad, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml") && err.contains("[crops.tiny]"),
            "{err}"
        );
        let no_variant = SPEC.replace("variant = [\"base\", \"long\"]", "variant = [\"short\"]");
        let err = ExperimentSpec::parse(&no_variant, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[variants.short]"), "{err}");
        let typo = SPEC.replace("[evaluate]", "[evaluate]\nbox = \"x\"");
        let err = ExperimentSpec::parse(&typo, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("box"), "{err}");
        let bad_train = SPEC.replace("epochs = 2", "epochs = \"two\"");
        let spec = ExperimentSpec::parse(&bad_train, "t.toml").unwrap();
        assert!(spec.cells("t.toml")[0]
            .config
            .as_ref()
            .unwrap_err()
            .contains("epochs"));
    }

    #[test]
    fn probe_test_fraction_defaults_to_a_fifth_and_must_be_a_share() {
        let spec = ExperimentSpec::parse(SPEC, "t.toml").unwrap();
        assert_eq!(spec.evaluate.test_fraction, 0.2);
        for (bad, ok) in [
            ("0.0", false),
            ("1.0", false),
            ("-0.5", false),
            ("0.5", true),
        ] {
            let text = SPEC.replace(
                "[evaluate]\n",
                &format!("[evaluate]\ntest_fraction = {bad}\n"),
            );
            let parsed = ExperimentSpec::parse(&text, "t.toml");
            assert_eq!(parsed.is_ok(), ok, "{bad}: {:?}", parsed.err());
            if let Err(e) = parsed {
                assert!(e.to_string().contains("evaluate.test_fraction"), "{e}");
            }
        }
    }

    #[test]
    fn duplicate_seeds_are_refused() {
        let twice = SPEC.replace("seed = [0, 1]", "seed = [1, 1]");
        let err = ExperimentSpec::parse(&twice, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("grid.seed") && err.contains("`1` is listed twice"),
            "{err}"
        );
        let data_twice = SPEC.replace(
            "data = [\"objects\", \"scenes+objects\"]",
            "data = [\"objects\", \"objects\"]",
        );
        let err = ExperimentSpec::parse(&data_twice, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid.data"), "{err}");
    }

    #[test]
    fn colliding_data_names_get_distinct_cell_ids() {
        let spec = SPEC.replace(
            "data = [\"objects\", \"scenes+objects\"]",
            "data = [\"shots/ds/imgs\", \"shots/ds_imgs\", \"objects\"]",
        );
        let spec = ExperimentSpec::parse(&spec, "t.toml").unwrap();
        let cells = spec.cells("t.toml");
        let ids: std::collections::BTreeSet<String> = cells.iter().map(Cell::id).collect();
        assert_eq!(ids.len(), cells.len(), "two cells share a directory");
        let a = cells.iter().find(|c| c.data == "shots/ds/imgs").unwrap();
        let b = cells.iter().find(|c| c.data == "shots/ds_imgs").unwrap();
        assert!(a.data_id.starts_with("shots_ds_imgs-"), "{}", a.data_id);
        assert_eq!(a.data_id.len(), "shots_ds_imgs-".len() + 8);
        assert_ne!(a.data_id, b.data_id);
        // a name no other entry shares keeps its plain id
        let o = cells.iter().find(|c| c.data == "objects").unwrap();
        assert_eq!(o.id(), "objects__swav__multicrop__base__seed0");
    }

    #[test]
    fn seed_summary_matches_a_hand_computation() {
        // values 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) · 1/√3 = 4.303 / 1.7320508 = 2.484338
        let s = summarise(&[1.0, 2.0, 3.0]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert!((s.hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert!((s.lo + s.hi - 4.0).abs() < 1e-12);
        let one = summarise(&[0.5, f64::NAN]);
        assert_eq!((one.n, one.mean), (1, 0.5));
        assert!(one.lo.is_nan() && one.hi.is_nan());
    }

    #[test]
    fn a_cell_keys_group_is_the_key_without_its_seed() {
        assert_eq!(
            group_of("objects__swav__mc__base__seed31"),
            "objects__swav__mc__base"
        );
        assert_eq!(group_of("untrained__seed3"), "untrained");
        // only a trailing numeric seed part is cut
        assert_eq!(group_of("a__seedy__x"), "a__seedy__x");
        assert_eq!(group_of("a__seed"), "a__seed");
    }

    #[test]
    fn aggregate_groups_over_seeds_and_ignores_failed_cells() {
        let r = |seed: u64, status: CellStatus, v: f64| CellResult {
            cell: String::new(),
            data: "objects".into(),
            method: "swav".into(),
            crops: "multicrop".into(),
            variant: "base".into(),
            seed,
            status,
            reason: None,
            metrics: BTreeMap::from([("collapse_index".to_string(), v)]),
            skipped_inputs: 0,
        };
        let a = aggregate(&[
            r(0, CellStatus::Done, 0.2),
            r(1, CellStatus::DoneWithSkips, 0.4),
            r(2, CellStatus::Failed, 9.0),
        ]);
        let key = (
            "objects".into(),
            "swav".into(),
            "multicrop".into(),
            "base".into(),
        );
        let s = a[&key]["collapse_index"];
        assert_eq!(s.n, 2);
        assert!((s.mean - 0.3).abs() < 1e-12);
    }

    fn done(method: &str, seed: u64, m: &[(&str, f64)]) -> CellResult {
        CellResult {
            cell: String::new(),
            data: "objects".into(),
            method: method.into(),
            crops: "multicrop".into(),
            variant: "base".into(),
            seed,
            status: CellStatus::Done,
            reason: None,
            metrics: m.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            skipped_inputs: 0,
        }
    }

    // Issue 23: t-intervals of `train_seconds` went negative over three seeds.
    #[test]
    fn t_intervals_of_seconds_and_shares_stay_inside_their_range() {
        let results = [
            done(
                "swav",
                0,
                &[
                    ("train_seconds", 10.0),
                    ("knn_accuracy", 0.98),
                    ("knn_gain", -0.2),
                ],
            ),
            done(
                "swav",
                1,
                &[
                    ("train_seconds", 200.0),
                    ("knn_accuracy", 0.5),
                    ("knn_gain", 0.3),
                ],
            ),
            done(
                "swav",
                2,
                &[
                    ("train_seconds", 12.0),
                    ("knn_accuracy", 0.99),
                    ("knn_gain", 0.0),
                ],
            ),
        ];
        let a = aggregate(&results);
        let m = a.values().next().unwrap();
        let (t, k, g) = (&m["train_seconds"], &m["knn_accuracy"], &m["knn_gain"]);
        assert_eq!(t.lo, 0.0, "{t:?}");
        assert!(t.hi > t.mean);
        assert_eq!(k.hi, 1.0, "{k:?}");
        assert!(g.lo < -0.2, "a gain keeps its sign: {g:?}");
    }

    // Issue 20: ablation.md showed `115.046 [-157.133, 115.046]` where S_cat ≈ S_base. The ratio is shown
    // only where every seed has it and Δcat's interval is clear of 0; its parts always.
    #[test]
    fn collapse_index_is_undefined_in_the_table_where_delta_cat_may_be_zero() {
        let cell = |method: &str, seed: u64, ci: f64, dc: (f64, f64, f64)| {
            done(
                method,
                seed,
                &[
                    ("collapse_index", ci),
                    ("delta_scene", 0.2),
                    ("delta_cat", dc.0),
                    ("delta_cat_lo", dc.1),
                    ("delta_cat_hi", dc.2),
                ],
            )
        };
        let shown = |results: &[CellResult]| {
            let rows = table_rows(&aggregate(results));
            (
                shown_text(rows[0].values.get("collapse_index")),
                shown_text(rows[0].values.get("delta_cat")),
            )
        };
        // one seed, Δcat clear of 0: the ratio; Δcat's interval including 0: undefined, parts shown
        assert_eq!(shown(&[cell("swav", 0, 2.0, (0.1, 0.05, 0.15))]).0, "2.000");
        let (ci, dc) = shown(&[cell("swav", 0, 115.0, (0.001, -0.01, 0.01))]);
        assert_eq!(
            (ci.as_str(), dc.as_str()),
            ("undefined", "0.001 [-0.010, 0.010]")
        );
        // undefined in one of two seeds (NaN from the grid): undefined, not the other seed's value
        let (ci, _) = shown(&[
            cell("swav", 0, 2.0, (0.1, 0.05, 0.15)),
            cell("swav", 1, f64::NAN, (0.001, -0.01, 0.01)),
        ]);
        assert_eq!(ci, "undefined");
        // over seeds: Δcat's t-interval decides
        let (ci, _) = shown(&[
            cell("swav", 0, 2.0, (0.1, 0.05, 0.15)),
            cell("swav", 1, 3.0, (0.11, 0.06, 0.16)),
        ]);
        assert!(ci.starts_with("2.500 ["), "{ci}");
        let (ci, _) = shown(&[
            cell("swav", 0, 2.0, (0.1, 0.05, 0.15)),
            cell("swav", 1, -3.0, (-0.1, -0.15, -0.05)),
        ]);
        assert_eq!(ci, "undefined");
    }

    // Issue 12: ablation.md lacked the untrained floor, chance and intervals.
    #[test]
    fn table_shows_intervals_chance_and_the_untrained_floor_last() {
        let acc = |v: f64| {
            [
                ("knn_accuracy", v),
                ("knn_accuracy_lo", v - 0.1),
                ("knn_accuracy_hi", v + 0.1),
                ("probe_chance", 0.29),
            ]
        };
        let results = [
            done(UNTRAINED, 0, &acc(0.4)),
            done("swav", 0, &acc(0.6)),
            done("swav", 1, &acc(0.8)),
        ];
        let a = aggregate(&results);
        let metrics = table_metrics(&a);
        assert_eq!(metrics, ["knn_accuracy", "probe_chance"]);
        let rows = table_rows(&a);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[1].method.as_str(),
                rows[1].data.as_str(),
                rows[1].crops.as_str()
            ),
            (UNTRAINED, NOT_APPLICABLE, NOT_APPLICABLE)
        );
        // One seed: the cell's own interval; two seeds: the t-interval over seeds (0.7 ± 12.706·0.1), cut
        // to an accuracy's range [0, 1].
        assert_eq!(
            shown_text(rows[1].values.get("knn_accuracy")),
            "0.400 [0.300, 0.500]"
        );
        let two = rows[0].values["knn_accuracy"];
        assert!(
            (two.mean - 0.7).abs() < 1e-12 && two.lo == 0.0 && two.hi == 1.0,
            "{two:?}"
        );
        let md = render_markdown(&rows, &metrics);
        assert!(
            md.contains("| — | untrained | — | base | 1 | 0.400 [0.300, 0.500] | 0.290 |"),
            "{md}"
        );
        let tex = render_latex("t", &rows, &metrics);
        assert!(
            tex.contains("knn\\_accuracy & probe\\_chance \\\\"),
            "{tex}"
        );
        assert!(
            tex.contains("--- & untrained & --- & base & 1 & 0.400 [0.300, 0.500] & 0.290 \\\\"),
            "{tex}"
        );
    }

    #[test]
    fn untrained_floor_is_one_cell_per_seed_with_the_first_methods_config() {
        let text = SPEC.replace("[evaluate]", "[evaluate]\nuntrained = true");
        let spec = ExperimentSpec::parse(&text, "t.toml").unwrap();
        let cells = spec.cells("t.toml");
        let floor: Vec<&Cell> = cells.iter().filter(|c| c.method == UNTRAINED).collect();
        assert_eq!(floor.len(), 2);
        assert_eq!(floor[1].id(), "untrained__seed1");
        let cfg = floor[0].config.as_ref().unwrap();
        assert_eq!(cfg.method, crate::train::Method::Swav);
        assert_eq!(cells.len(), 2 * 2 * 2 * 2 * 2 + 2);
    }
}
