//! Each trained cell's probe accuracy read against the same network untrained, query by query.
//!
//! Every cell of a grid is probed on the same held-out images (one split, seed 0), and the untrained cell of
//! a seed is the very network that seed's cells start from. So the fair question "did training help?" is
//! a paired one: `<probe>_gain` is the cell's accuracy minus its seed's untrained accuracy on the same
//! queries, with a paired bootstrap interval (`analyze::paired`), much narrower than the two accuracies'
//! own intervals side by side.
use std::collections::BTreeMap;
use std::path::Path;

use crate::analyze::paired::{paired_gain, RESAMPLES};
use crate::error::{Error, Result};
use crate::experiment::{Cell, CellResult, UNTRAINED};
use crate::report::io::read_parquet;

use super::eval::predictions_path;

/// The probes whose per-query predictions a cell keeps: `<name>.parquet` in the cell's directory.
pub const PROBES: [&str; 2] = ["knn", "linear"];

/// Query id → right or wrong, from a predictions file written by `evaluate`.
fn hits(path: &Path) -> Result<BTreeMap<String, bool>> {
    let df = read_parquet(path)?;
    let bad = |e| Error::polars(format!("reading {}", path.display()), e);
    let ids = df.column("id").map_err(bad)?.str().map_err(bad)?;
    let ok = df.column("correct").map_err(bad)?.bool().map_err(bad)?;
    Ok(ids
        .iter()
        .zip(ok.iter())
        .filter_map(|(i, c)| Some((i?.to_string(), c?)))
        .collect())
}

/// Adds `<probe>_gain`, `_gain_lo`, `_gain_hi` to every measured cell whose seed has a measured untrained
/// cell, where both kept their predictions (cells measured before predictions were written have none and
/// are left as they are). `cells[i]` is the cell of `results[i]`; `cells_dir` holds their directories.
/// A predictions file that cannot be read costs that cell its gain, not the table: it is returned as a
/// note naming the file and the reason.
pub fn add_gains(cells: &[Cell], results: &mut [CellResult], cells_dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let file = |c: &Cell, probe: &str| {
        predictions_path(&cells_dir.join(c.id()).join(format!("{probe}.parquet")))
    };
    // Each seed's untrained predictions, read once per probe (an unreadable file is kept as its error, to
    // be named in the note of every cell it costs a gain).
    let floors: BTreeMap<(u64, &str), std::result::Result<BTreeMap<String, bool>, String>> = cells
        .iter()
        .zip(results.iter())
        .filter(|(c, r)| c.method == UNTRAINED && r.status.is_done())
        .flat_map(|(c, _)| PROBES.map(|probe| (c, probe)))
        .filter(|(c, probe)| file(c, probe).is_file())
        .map(|(c, probe)| {
            (
                (c.seed, probe),
                hits(&file(c, probe)).map_err(|e| e.to_string()),
            )
        })
        .collect();
    for (cell, result) in cells.iter().zip(results.iter_mut()) {
        if cell.method == UNTRAINED || !result.status.is_done() {
            continue;
        }
        for probe in PROBES {
            let mine = file(cell, probe);
            let Some(base) = floors.get(&(cell.seed, probe)) else {
                continue;
            };
            if !mine.is_file() {
                continue;
            }
            let mine = hits(&mine).map_err(|e| e.to_string());
            let (base, mine) = match (base, &mine) {
                (Ok(b), Ok(m)) => (b, m),
                (Err(e), _) | (_, Err(e)) => {
                    notes.push(format!("no {probe}_gain for {}: {e}", cell.id()));
                    continue;
                }
            };
            let pairs: Vec<(bool, bool)> = mine
                .iter()
                .filter_map(|(id, &right)| base.get(id).map(|&b| (right, b)))
                .collect();
            if let Some(g) = paired_gain(&pairs, RESAMPLES, cell.seed) {
                result.metrics.insert(format!("{probe}_gain"), g.gain);
                result.metrics.insert(format!("{probe}_gain_lo"), g.lo);
                result.metrics.insert(format!("{probe}_gain_hi"), g.hi);
            }
        }
    }
    notes
}
