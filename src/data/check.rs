//! `datasets check`: read every image file the way the loader would (decode_rgb with the loader's limits, in
//! parallel) and report each as ok or skipped with the reason, as a polars frame. A subdirectory that cannot
//! be listed is a skipped row too, and the walk goes on: one unreadable folder never hides the rest.
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rayon::prelude::*;

use crate::data::decode::{decode_rgb, DecodeLimits};
use crate::data::source::has_image_extension;
use crate::error::{Error, Result};

pub const COL_PATH: &str = "path";
pub const COL_STATUS: &str = "status";
pub const COL_REASON: &str = "reason";
pub const COL_WIDTH: &str = "width";
pub const COL_HEIGHT: &str = "height";

pub const STATUS_OK: &str = "ok";
pub const STATUS_SKIPPED: &str = "skipped";

/// One file's verdict. `reason` is empty and the size known when ok; the size is null when skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub path: PathBuf,
    pub reason: Option<String>,
    pub size: Option<(u32, u32)>,
}

impl CheckRow {
    pub fn is_ok(&self) -> bool {
        self.reason.is_none()
    }
}

/// Checks every image file under `dir` (recursively, sorted by path); subdirectories that cannot be read
/// are rows with the reason `unreadable directory: …`. Only `dir` itself unreadable is an error.
pub fn check_dir(dir: &Path, limits: &DecodeLimits) -> Result<Vec<CheckRow>> {
    let (files, unreadable) = walk_for_check(dir)?;
    let mut rows = check_files(&files, limits);
    rows.extend(unreadable);
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

/// `walk_images`' walk (hidden entries skipped, symlinks not followed, image extensions only), except that
/// a subdirectory or entry that cannot be read becomes a skipped row instead of ending the walk.
fn walk_for_check(dir: &Path) -> Result<(Vec<PathBuf>, Vec<CheckRow>)> {
    let skipped = |path: &Path, what: &str, e: std::io::Error| CheckRow {
        path: path.to_path_buf(),
        reason: Some(format!("{what}: {e}")),
        size: None,
    };
    let mut files = Vec::new();
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir => return Err(Error::io(&d, e)),
            Err(e) => {
                bad.push(skipped(&d, "unreadable directory", e));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    bad.push(skipped(&d, "unreadable directory", e));
                    break;
                }
            };
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match entry.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(path),
                Ok(_) if has_image_extension(&path) => files.push(path),
                Ok(_) => {}
                Err(e) => bad.push(skipped(&path, "unreadable entry", e)),
            }
        }
    }
    files.sort();
    Ok((files, bad))
}

/// Checks the given files in the current rayon pool; order is kept.
pub fn check_files(files: &[PathBuf], limits: &DecodeLimits) -> Vec<CheckRow> {
    files
        .par_iter()
        .map(|p| match decode_rgb(p, limits) {
            Ok(img) => CheckRow {
                path: p.clone(),
                reason: None,
                size: Some(img.dimensions()),
            },
            Err(s) => CheckRow {
                path: p.clone(),
                reason: Some(s.reason.to_string()),
                size: None,
            },
        })
        .collect()
}

/// The report frame: path, status (ok|skipped), reason, width, height.
pub fn check_frame(rows: &[CheckRow]) -> Result<DataFrame> {
    let paths: Vec<String> = rows
        .iter()
        .map(|r| r.path.to_string_lossy().into_owned())
        .collect();
    let status: Vec<&str> = rows
        .iter()
        .map(|r| if r.is_ok() { STATUS_OK } else { STATUS_SKIPPED })
        .collect();
    let reasons: Vec<Option<String>> = rows.iter().map(|r| r.reason.clone()).collect();
    let widths: Vec<Option<u32>> = rows.iter().map(|r| r.size.map(|s| s.0)).collect();
    let heights: Vec<Option<u32>> = rows.iter().map(|r| r.size.map(|s| s.1)).collect();
    DataFrame::new(
        rows.len(),
        vec![
            Column::new(COL_PATH.into(), paths),
            Column::new(COL_STATUS.into(), status),
            Column::new(COL_REASON.into(), reasons),
            Column::new(COL_WIDTH.into(), widths),
            Column::new(COL_HEIGHT.into(), heights),
        ],
    )
    .map_err(|e| Error::polars("building check report", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_ok_and_skipped_files_with_reasons() {
        let d = tempfile::tempdir().unwrap();
        image::RgbImage::from_pixel(20, 30, image::Rgb([1, 2, 3]))
            .save(d.path().join("a.png"))
            .unwrap();
        std::fs::write(d.path().join("b.jpg"), b"hello, I am text").unwrap();
        std::fs::write(d.path().join("c.png"), b"").unwrap();
        let rows = check_dir(d.path(), &DecodeLimits::default()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].size, Some((20, 30)));
        assert_eq!(rows[1].reason.as_deref(), Some("not an image"));
        assert_eq!(rows[2].reason.as_deref(), Some("empty file"));
        let df = check_frame(&rows).unwrap();
        let status = df.column(COL_STATUS).unwrap().str().unwrap().clone();
        let st: Vec<&str> = (0..3).map(|i| status.get(i).unwrap()).collect();
        assert_eq!(st, vec!["ok", "skipped", "skipped"]);
        assert_eq!(df.column(COL_WIDTH).unwrap().null_count(), 2);
    }
}
