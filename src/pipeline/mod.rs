//! The pipeline's stages as library functions: each takes an [`Env`] (where the data is, how many threads,
//! which device, a stop flag) and a typed request, and returns a typed result (numbers, files written,
//! inputs skipped). The CLI fills the requests from its flags, draws progress and maps results to exit
//! codes; a library user or the grid runner calls the same functions.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use polars::prelude::*;

use crate::data::decode::Skip;
use crate::error::{Error, Result};
use crate::report::io::write_parquet;

pub mod embed;
pub mod eval;
pub mod gain;
pub mod grid;
pub mod invariance;
pub mod train;

pub use embed::{embed, EmbedRequest, EmbedResult};
pub use eval::{evaluate, EvalRequest, EvalResult, Protocol};
pub use invariance::{invariance, InvarianceRequest, InvarianceResult, InvarianceRow};
pub use train::{train, TrainRequest, TrainResult};

/// What every stage runs in.
#[derive(Debug, Clone)]
pub struct Env {
    /// Where dataset names resolve (`<data_dir>/<name>`); a request may also name a directory.
    pub data_dir: PathBuf,
    /// Loader threads (the caller sets libtorch's own count).
    pub threads: usize,
    pub device: tch::Device,
    /// Set (e.g. by SIGINT) to ask a long stage to stop at its next safe point.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Env {
    /// Whether the stop flag is raised.
    pub fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// CPU, `threads` loader threads, datasets under `data_dir`, no stop flag.
    pub fn cpu(data_dir: &Path, threads: usize) -> Env {
        Env {
            data_dir: data_dir.to_path_buf(),
            threads,
            device: tch::Device::Cpu,
            stop: None,
        }
    }
}

/// Progress of a stage, for a display: the library says how much there is and how much is done, the
/// caller draws it (the CLI's bar) or ignores it (`()`).
pub trait Progress {
    /// A pass over `total` items begins (one per dataset a stage embeds).
    fn start(&mut self, _total: usize) {}
    /// `n` more items of the current pass are done.
    fn advance(&mut self, _n: usize) {}
    /// A short status beside the count (training's running loss).
    fn message(&mut self, _text: &str) {}
    /// A line of the stage's log (training's epoch lines, as train.log has them), for a reader to see.
    fn line(&mut self, _text: &str) {}
    /// A note on something the stage found and dealt with (a stale lock taken over).
    fn note(&mut self, _text: &str) {}
}

/// No display.
impl Progress for () {}

/// The dataset's name for the `dataset` column: its directory's name (of the absolute path for `.` or `..`).
pub fn dataset_name(dir: &Path, given: &str) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(dir)
        .or_else(|| std::fs::canonicalize(dir).ok().and_then(|p| named(&p)))
        .unwrap_or_else(|| given.to_string())
}

/// Where the files a stage could not read are listed: beside its output, `<out>.skipped.parquet`.
pub fn skipped_path(out: &Path) -> PathBuf {
    out.with_extension("skipped.parquet")
}

/// Lists the files that could not be read (path, reason) in `path`; writes nothing when none were skipped.
pub fn write_skips(skipped: &[Skip], path: &Path) -> Result<()> {
    if skipped.is_empty() {
        return Ok(());
    }
    let mut df = df!(
        "path" => skipped.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
        "reason" => skipped.iter().map(|s| s.reason.to_string()).collect::<Vec<_>>(),
    )
    .map_err(|e| Error::polars(format!("listing skipped files for {}", path.display()), e))?;
    write_parquet(&mut df, path)
}
