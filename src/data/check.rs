//! `datasets check`: read every image file the way the loader would (decode_rgb with the loader's limits, in
//! parallel) and report each as ok or skipped with the reason, as a polars frame. A subdirectory that cannot
//! be listed is a skipped row too, and the walk goes on: one unreadable folder never hides the rest. Every
//! other entry the walk passes over (a `.svg`, a caption `.txt`, a hidden file) is an `ignored` row with the
//! reason, so a folder of files the loader would not read is never reported as an empty success.
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rayon::prelude::*;

use crate::data::confine::Root;
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
pub const STATUS_IGNORED: &str = "ignored";

/// Why an entry is ignored: hidden (`.name`), as the loader's walk passes it over.
pub const REASON_HIDDEN: &str = "hidden";

/// Files biaslab itself keeps in a dataset folder (the index, its skip list, the COCO boxes, the compose
/// record): read as the dataset's description, not passed over, so they are no rows of the check.
pub const DATASET_METADATA: &[&str] = &[
    crate::data::index::INDEX_FILE,
    crate::data::index::INDEX_SKIPPED_FILE,
    crate::data::compose::ANNOTATIONS_FILE,
    crate::data::compose::COMPOSE_FILE,
];

/// What became of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Read as the loader would read it.
    Ok,
    /// An image file (by extension) the loader could not use, or an unreadable folder or entry.
    Skipped,
    /// Not read at all: no image extension, or hidden; the loader passes it over the same way.
    Ignored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => STATUS_OK,
            Self::Skipped => STATUS_SKIPPED,
            Self::Ignored => STATUS_IGNORED,
        }
    }
}

/// One entry's verdict. `reason` is empty and the size known when ok; the size is null otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub path: PathBuf,
    pub status: Status,
    pub reason: Option<String>,
    pub size: Option<(u32, u32)>,
}

impl CheckRow {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    fn skipped(path: &Path, reason: String) -> Self {
        Self {
            path: path.to_path_buf(),
            status: Status::Skipped,
            reason: Some(reason),
            size: None,
        }
    }

    fn ignored(path: &Path, reason: String) -> Self {
        Self {
            path: path.to_path_buf(),
            status: Status::Ignored,
            reason: Some(reason),
            size: None,
        }
    }
}

/// The reason of an ignored file without an image extension: `not an image extension (.svg)`.
pub fn not_image_extension(path: &Path) -> String {
    match path.extension() {
        Some(e) => format!("not an image extension (.{})", e.to_string_lossy()),
        None => "not an image extension (none)".to_string(),
    }
}

/// Checks every entry under `dir` (recursively, sorted by path): image files are decoded, subdirectories
/// that cannot be read are skipped rows (`unreadable directory: …`), everything else is an ignored row.
/// Only `dir` itself unreadable is an error.
pub fn check_dir(dir: &Path, limits: &DecodeLimits) -> Result<Vec<CheckRow>> {
    let (files, passed_over) = walk_for_check(dir)?;
    let mut rows = check_files(&files, limits);
    rows.extend(passed_over);
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

/// `walk_images`' walk (hidden entries passed over, symlinked folders not entered, image extensions only),
/// except that a subdirectory or entry that cannot be read becomes a skipped row instead of ending the
/// walk, a symlink leading out of `dir` is a skipped row (not followed), and every other entry passed over
/// is an ignored row with its reason.
fn walk_for_check(dir: &Path) -> Result<(Vec<PathBuf>, Vec<CheckRow>)> {
    let skipped = |path: &Path, what: &str, e: std::io::Error| {
        CheckRow::skipped(path, format!("{what}: {e}"))
    };
    let root = Root::new(dir);
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
                bad.push(CheckRow::ignored(&path, REASON_HIDDEN.to_string()));
                continue;
            }
            match entry.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(path),
                Ok(_) if DATASET_METADATA.contains(&&*entry.file_name().to_string_lossy()) => {}
                Ok(_) if !has_image_extension(&path) => {
                    bad.push(CheckRow::ignored(&path, not_image_extension(&path)))
                }
                Ok(ft) if ft.is_symlink() => match root.check_resolved(&path) {
                    Ok(()) => files.push(path),
                    Err(o) => bad.push(CheckRow::skipped(&path, o.to_string())),
                },
                Ok(_) => files.push(path),
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
                status: Status::Ok,
                reason: None,
                size: Some(img.dimensions()),
            },
            Err(s) => CheckRow::skipped(p, s.reason.to_string()),
        })
        .collect()
}

/// The report frame: path, status (ok|skipped|ignored), reason, width, height.
pub fn check_frame(rows: &[CheckRow]) -> Result<DataFrame> {
    let paths: Vec<String> = rows
        .iter()
        .map(|r| r.path.to_string_lossy().into_owned())
        .collect();
    let status: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
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

    #[test]
    fn files_passed_over_are_ignored_rows_with_their_reason() {
        // regression (issue 23): 9 SVGs and a .txt gave "0 files, 0 ok, 0 skipped"
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.svg"), b"<svg/>").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(d.path().join("README"), b"x").unwrap();
        std::fs::write(d.path().join(".DS_Store"), b"x").unwrap();
        std::fs::write(d.path().join("index.parquet"), b"x").unwrap();
        let rows = check_dir(d.path(), &DecodeLimits::default()).unwrap();
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.status.as_str(), r.reason.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ignored", "hidden"),
                ("ignored", "not an image extension (none)"),
                ("ignored", "not an image extension (.svg)"),
                ("ignored", "not an image extension (.txt)"),
            ]
        );
    }
}
