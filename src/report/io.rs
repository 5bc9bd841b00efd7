//! Atomic writers for report files: write to a temporary file in the target directory, fsync, then rename,
//! so an interrupted run never leaves a half-written Parquet/CSV/JSON file under its final name.
use std::io::Write;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, IoContext, Result};

/// Modes asked for temporary files and directories that become outputs: what `File::create` and
/// `create_dir` ask for, so the process umask decides as for any other file (0644 and 0755 under the
/// usual 022). tempfile's own 0600 / 0700 would leave every report and checkpoint unreadable to the group
/// sharing a project directory once renamed into place.
pub const FILE_MODE: u32 = 0o666;
pub const DIR_MODE: u32 = 0o777;

/// A tempfile builder with `prefix` whose file or directory is created with `mode` (before the umask).
pub fn shared_builder(prefix: &str, mode: u32) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

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
    let mut tmp = shared_builder(".tmp-", FILE_MODE)
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn outputs_get_the_modes_plain_files_and_directories_get() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let out = d.path().join("report.json");
        write_bytes_atomic(&out, b"{}").unwrap();
        assert_eq!(
            mode(&out),
            mode(&plain),
            "an atomic write is as readable as File::create's"
        );
        let plain_dir = d.path().join("plain-dir");
        std::fs::create_dir(&plain_dir).unwrap();
        let tmp = shared_builder(".tmp-x", DIR_MODE)
            .tempdir_in(d.path())
            .unwrap();
        assert_eq!(mode(tmp.path()), mode(&plain_dir));
    }
}
