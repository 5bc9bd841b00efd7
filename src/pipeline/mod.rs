//! The pipeline's stages as library functions: each takes an [`Env`] (where the data is, how many threads,
//! which device, a stop flag) and a typed request, and returns a typed result (numbers, files written,
//! inputs skipped). The CLI fills the requests from its flags, draws progress and maps results to exit
//! codes; a library user or the grid runner calls the same functions.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use polars::prelude::*;

use crate::data::decode::Skip;
use crate::error::{Error, Result};
use crate::report::io::write_parquet;

pub mod embed;

pub use embed::{embed, EmbedRequest, EmbedResult};

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
