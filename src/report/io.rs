//! Atomic writers for report files: write to a temporary file in the target directory, fsync, then rename,
//! so an interrupted run never leaves a half-written Parquet/CSV/JSON file under its final name.
use std::io::Write;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, IoContext, Result};

/// Writes `bytes` (produced by `fill`) to `path` atomically. Creates the parent directory.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).ctx_io(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .ctx_io(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush().ctx_io(path)?;
    tmp.as_file().sync_all().ctx_io(path)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes raw bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| f.write_all(bytes).ctx_io(path))
}

/// Writes a DataFrame as Parquet (zstd-free default compression keeps the build small), atomically.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    write_atomic(path, |f| {
        ParquetWriter::new(f)
            .finish(df)
            .map(|_| ())
            .map_err(|e| Error::polars(format!("writing {}", path.display()), e))
    })
}

/// Appends `rows` to the Parquet file at `path` (created when absent) by rewriting it atomically; `keep`
/// selects the rows already there to keep (a resumed run replacing what it measures again).
pub fn append_parquet(path: &Path, rows: DataFrame, keep: Option<Expr>) -> Result<()> {
    let mut df = if path.exists() {
        let mut old = read_parquet(path)?;
        if let Some(keep) = keep {
            old = old
                .lazy()
                .filter(keep)
                .collect()
                .map_err(|e| Error::polars(format!("filtering {}", path.display()), e))?;
        }
        old.vstack(&rows)
            .map_err(|e| Error::polars(format!("appending to {}", path.display()), e))?
    } else {
        rows
    };
    write_parquet(&mut df, path)
}

/// Writes a DataFrame as CSV with a header, atomically.
pub fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    write_atomic(path, |f| {
        CsvWriter::new(f)
            .include_header(true)
            .finish(df)
            .map_err(|e| Error::polars(format!("writing {}", path.display()), e))
    })
}

/// Reads a Parquet file into memory, naming the file on failure.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).ctx_io(path)?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| Error::polars(format!("reading {}", path.display()), e))
}
