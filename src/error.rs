//! The library's typed errors. Each variant carries the file, field or value at fault so the CLI can print
//! one clear line (`{:#}`) without the library knowing about terminals.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        // `cause`, not `source`: the message already ends with it, and a `source` would make `{:#}` print
        // it twice (`runs/nope/latest: No such file…: No such file…`).
        cause: std::io::Error,
    },
    /// A file that exists but is not what it claims to be (image, archive, JSON, rcc, Parquet…).
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{archive}: refusing entry {entry:?}: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    /// A configuration or manifest value that fails validation; `field` is the TOML key.
    #[error("{origin}: invalid `{field}`: {reason}")]
    Config {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("unknown dataset `{0}` (see `biaslab datasets list`)")]
    UnknownDataset(String),
    /// A dataset the registry knows (an embedded manifest) whose folder is not under the data dir yet.
    #[error("dataset `{name}` is known but not fetched: no folder {dir}; run `biaslab datasets fetch {name}` (or pass --data-dir where it was fetched)")]
    NotFetched { name: String, dir: String },
    #[error("{context}: {cause}")]
    Polars {
        context: String,
        cause: polars::error::PolarsError,
    },
    #[error("{context}: {cause}")]
    Tch {
        context: String,
        cause: tch::TchError,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub fn config(
        origin: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Config {
            origin: origin.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn polars(context: impl Into<String>, source: polars::error::PolarsError) -> Self {
        Error::Polars {
            context: context.into(),
            cause: source,
        }
    }
    pub fn tch(context: impl Into<String>, source: tch::TchError) -> Self {
        Error::Tch {
            context: context.into(),
            cause: source,
        }
    }
}

/// `.ctx_io(path)` turns a `std::io::Result` into our error with the path attached.
pub trait IoContext<T> {
    fn ctx_io(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx_io(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
