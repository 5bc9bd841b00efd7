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

pub mod backgrounds;
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

/// Hex digits of the SHA-256 of a folder's canonical path that tell two folders of one name apart (as
/// the grid's cell ids do).
const PATH_HASH_HEX: usize = 8;

/// The dataset's name for the `dataset` column, distinct for distinct folders so that analyze never pools
/// two of them as one (issue 23: `A/imgs` and `B2/imgs` were both `imgs`). `dir` is what
/// [`resolve_dataset`](crate::data::compose::resolve_dataset) made of `given`:
/// - a name under the data dir (`given` resolved to `<data_dir>/<given>`): `given` itself, a registry name
///   or a path relative to the data dir (`A/imgs`), without a trailing slash;
/// - a folder given by path inside the default data dir (`$BIASLAB_DATA`, else `./data`): its path relative
///   to it, the name it has when given by name;
/// - a folder given by a relative path that stays below the working directory: that path (`imgs`,
///   `A/imgs`);
/// - any other folder (absolute, `..`, `.`): its name and a short hash of its canonical path,
///   `imgs-1a2b3c4d`.
///
/// A run directory (one with a checkpoint) keeps its bare folder name, as does a `dir` that `given` does
/// not name: `run_label` names runs with this function.
pub fn dataset_name(dir: &Path, given: &str) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let bare = || {
        named(dir)
            .or_else(|| std::fs::canonicalize(dir).ok().and_then(|p| named(&p)))
            .unwrap_or_else(|| given.to_string())
    };
    let is_run =
        crate::run_dir::has_checkpoint(dir) || dir.join(crate::run_dir::IMPORT_FILE).is_file();
    let by_path = dir == Path::new(given);
    let by_name = !by_path && dir.ends_with(given);
    if is_run || !(by_path || by_name) {
        return bare();
    }
    if by_name {
        if let Some(rel) = plain_relative(Path::new(given)) {
            return rel;
        }
    }
    let canonical = std::fs::canonicalize(dir).ok();
    if let Some(abs) = &canonical {
        let data = crate::data::index::resolve_data_dir(None);
        if let Some(rel) = std::fs::canonicalize(&data)
            .ok()
            .and_then(|d| abs.strip_prefix(d).ok().map(Path::to_path_buf))
            .and_then(|rel| plain_relative(&rel))
        {
            return rel;
        }
    }
    if let Some(rel) = plain_relative(Path::new(given)) {
        return rel;
    }
    match canonical {
        Some(abs) => {
            use sha2::{Digest, Sha256};
            let h = Sha256::digest(abs.to_string_lossy().as_bytes());
            let hex: String = h[..PATH_HASH_HEX / 2]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{}-{hex}", named(&abs).unwrap_or_else(bare))
        }
        None => bare(),
    }
}

/// A relative path of plain names (`.` dropped) as `a/b`; `None` when it is absolute, climbs with `..`
/// or names nothing.
fn plain_relative(p: &Path) -> Option<String> {
    use std::path::Component;
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
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
