//! Each trained cell's per-query numbers read against the same network untrained, query by query.
//!
//! Every cell of a grid is measured on the same held-out images (one split per seed), and the untrained
//! cell of a seed is the very network that seed's cells start from. So the fair question "did training
//! help?" is a paired one: `<metric>_gain` is the cell's rate minus its seed's untrained rate on the same
//! queries, with a paired bootstrap interval (`analyze::paired`), much narrower than the two rates' own
//! intervals side by side. The metrics so read are the probes' accuracies (each query right or wrong) and
//! the background-match rate (each image's nearest neighbour on its background or not).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::analyze::paired::{paired_gain, RESAMPLES};
use crate::error::{Error, Result};
use crate::experiment::{Cell, CellResult, UNTRAINED};
use crate::report::io::read_parquet;

use super::backgrounds::{matches_path, COL_IMAGE_ID, COL_MATCHED};
use super::eval::predictions_path;
use super::invariance::run_label;

/// The probes whose per-query predictions a cell keeps: `<name>.parquet` in the cell's directory.
pub const PROBES: [&str; 2] = ["knn", "linear"];

/// A metric a cell keeps query by query, so that its gain can be paired.
struct PerQuery {
    /// The cell's metric; its gain is `<name>_gain`, `_gain_lo`, `_gain_hi`.
    name: &'static str,
    /// The file in the cell's directory: one row per query.
    file: fn(&Path) -> PathBuf,
    /// Columns of the query's id and of whether it counts (right, matched).
    id: &'static str,
    hit: &'static str,
}

fn knn_file(cell: &Path) -> PathBuf {
    predictions_path(&cell.join("knn.parquet"))
}

fn linear_file(cell: &Path) -> PathBuf {
    predictions_path(&cell.join("linear.parquet"))
}

/// The cell's run is `<cell>/run` and its backgrounds stage writes to `<cell>/backgrounds`, as
/// `grid::measure_cell` lays them out.
fn matches_file(cell: &Path) -> PathBuf {
    matches_path(&cell.join("backgrounds"), &run_label(&cell.join("run")))
}

/// Every per-query metric with a gain, in the order the gains are added.
const PER_QUERY: [PerQuery; 3] = [
    PerQuery {
        name: PROBES[0],
        file: knn_file,
        id: "id",
        hit: "correct",
    },
    PerQuery {
        name: PROBES[1],
        file: linear_file,
        id: "id",
        hit: "correct",
    },
    PerQuery {
        name: "bg_match",
        file: matches_file,
        id: COL_IMAGE_ID,
        hit: COL_MATCHED,
    },
];

/// Query id → counts or not, from the per-query file at `path` (`m.id`, `m.hit` columns).
fn hits(path: &Path, m: &PerQuery) -> Result<BTreeMap<String, bool>> {
    let df = read_parquet(path)?;
    let bad = |e| Error::polars(format!("reading {}", path.display()), e);
    let ids = df.column(m.id).map_err(bad)?.str().map_err(bad)?;
    let ok = df.column(m.hit).map_err(bad)?.bool().map_err(bad)?;
    Ok(ids
        .iter()
        .zip(ok.iter())
        .filter_map(|(i, c)| Some((i?.to_string(), c?)))
        .collect())
}

/// Adds `<metric>_gain`, `_gain_lo`, `_gain_hi` (`knn`, `linear`, `bg_match`) to every measured cell whose
/// seed has a measured untrained cell, where both kept the metric's per-query file (cells measured before
/// such files were written have none and are left as they are). `cells[i]` is the cell of `results[i]`;
/// `cells_dir` holds their directories. A per-query file that cannot be read costs that cell its gain, not
/// the table: it is returned as a note naming the file and the reason.
pub fn add_gains(cells: &[Cell], results: &mut [CellResult], cells_dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let file = |c: &Cell, m: &PerQuery| (m.file)(&cells_dir.join(c.id()));
    // Each seed's untrained files, read once per metric (an unreadable file is kept as its error, to be
    // named in the note of every cell it costs a gain).
    let floors: BTreeMap<(u64, &str), std::result::Result<BTreeMap<String, bool>, String>> = cells
        .iter()
        .zip(results.iter())
        .filter(|(c, r)| c.method == UNTRAINED && r.status.is_done())
        .flat_map(|(c, _)| PER_QUERY.iter().map(move |m| (c, m)))
        .filter(|(c, m)| file(c, m).is_file())
        .map(|(c, m)| {
            (
                (c.seed, m.name),
                hits(&file(c, m), m).map_err(|e| e.to_string()),
            )
        })
        .collect();
    for (cell, result) in cells.iter().zip(results.iter_mut()) {
        if cell.method == UNTRAINED || !result.status.is_done() {
            continue;
        }
        for m in &PER_QUERY {
            let mine = file(cell, m);
            let Some(base) = floors.get(&(cell.seed, m.name)) else {
                continue;
            };
            if !mine.is_file() {
                continue;
            }
            let mine = hits(&mine, m).map_err(|e| e.to_string());
            let (base, mine) = match (base, &mine) {
                (Ok(b), Ok(x)) => (b, x),
                (Err(e), _) | (_, Err(e)) => {
                    notes.push(format!("no {}_gain for {}: {e}", m.name, cell.id()));
                    continue;
                }
            };
            let pairs: Vec<(bool, bool)> = mine
                .iter()
                .filter_map(|(id, &hit)| base.get(id).map(|&b| (hit, b)))
                .collect();
            if let Some(g) = paired_gain(&pairs, RESAMPLES, cell.seed) {
                result.metrics.insert(format!("{}_gain", m.name), g.gain);
                result.metrics.insert(format!("{}_gain_lo", m.name), g.lo);
                result.metrics.insert(format!("{}_gain_hi", m.name), g.hi);
            }
        }
    }
    notes
}
