//! What became of a grid cell. The text of each status is what `cells.parquet`, `cell.json` and
//! `ablation.md` hold (`done`, `failed`, `not applicable` as before there was a type), so earlier reports
//! and finished cells read the same.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CellStatus {
    /// Measured, every input read.
    #[serde(rename = "done")]
    Done,
    /// Measured, but some input files could not be read (counted in `skipped_inputs`, listed in the
    /// stages' `skipped.parquet` files): the numbers stand, on fewer images.
    #[serde(rename = "done with skipped inputs")]
    DoneWithSkips,
    /// A stage returned an error (the reason says which).
    #[serde(rename = "failed")]
    Failed,
    /// The cell's combination cannot run (e.g. SimCLR with more than two views); nothing was measured.
    #[serde(rename = "not applicable")]
    NotApplicable,
    /// Stopped (SIGINT) before its `cell.json` was written: nothing is kept, `--resume` runs it again. Never
    /// in a `cell.json` or a table (an interrupted grid writes neither); what the progress lines say.
    #[serde(rename = "interrupted")]
    Interrupted,
}

impl CellStatus {
    /// Its text in the tables and `cell.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Done => "done",
            CellStatus::DoneWithSkips => "done with skipped inputs",
            CellStatus::Failed => "failed",
            CellStatus::NotApplicable => "not applicable",
            CellStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the cell has results (with or without skipped inputs): what the ablation table averages
    /// and what `--resume` keeps.
    pub fn is_done(self) -> bool {
        matches!(self, CellStatus::Done | CellStatus::DoneWithSkips)
    }
}

impl std::fmt::Display for CellStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_tables_and_cell_json_reads_back() {
        for s in [
            CellStatus::Done,
            CellStatus::DoneWithSkips,
            CellStatus::Failed,
            CellStatus::NotApplicable,
            CellStatus::Interrupted,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CellStatus>(&json).unwrap(), s);
        }
        // the statuses written before the type existed
        assert_eq!(CellStatus::Done.to_string(), "done");
        assert_eq!(CellStatus::NotApplicable.to_string(), "not applicable");
        assert!(CellStatus::DoneWithSkips.is_done() && !CellStatus::Failed.is_done());
        assert!(!CellStatus::Interrupted.is_done());
    }
}
