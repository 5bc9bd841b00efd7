//! The normalised dataset layout every source is turned into: `<dir>/images/<label>/<file>` plus
//! `<dir>/index.parquet`, one row per image. Loaders, inspection and embedding all start from this index.
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::data::kind::DatasetKind;
use crate::error::{Error, Result};
use crate::report::io::{read_parquet, write_parquet};

pub const INDEX_FILE: &str = "index.parquet";
/// Where `datasets index` lists the files it left out (path, reason).
pub const INDEX_SKIPPED_FILE: &str = "index.skipped.parquet";
pub const IMAGES_DIR: &str = "images";

pub const COL_ID: &str = "id";
pub const COL_PATH: &str = "path";
pub const COL_LABEL: &str = "label";
pub const COL_KIND: &str = "kind";
pub const COL_WIDTH: &str = "width";
pub const COL_HEIGHT: &str = "height";
pub const COL_SOURCE: &str = "source";
pub const COL_LICENCE: &str = "licence";

/// One image of a normalised dataset. `path` is relative to the dataset directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub id: String,
    pub path: String,
    pub label: Option<String>,
    pub kind: DatasetKind,
    pub width: u32,
    pub height: u32,
    /// Where the image came from, e.g. `debian:tuxpaint-stamps-default=2022.06.04-1:usr/share/...`.
    pub source: String,
    pub licence: String,
}

pub fn index_path(dataset_dir: &Path) -> PathBuf {
    dataset_dir.join(INDEX_FILE)
}

/// Builds the index DataFrame (stable column order).
pub fn index_frame(records: &[ImageRecord]) -> Result<DataFrame> {
    let col = |name: &str, f: &dyn Fn(&ImageRecord) -> String| -> Column {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<_>>())
    };
    let labels: Vec<Option<String>> = records.iter().map(|r| r.label.clone()).collect();
    DataFrame::new(
        records.len(),
        vec![
            col(COL_ID, &|r| r.id.clone()),
            col(COL_PATH, &|r| r.path.clone()),
            Column::new(COL_LABEL.into(), labels),
            col(COL_KIND, &|r| r.kind.to_string()),
            Column::new(
                COL_WIDTH.into(),
                records.iter().map(|r| r.width).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_HEIGHT.into(),
                records.iter().map(|r| r.height).collect::<Vec<_>>(),
            ),
            col(COL_SOURCE, &|r| r.source.clone()),
            col(COL_LICENCE, &|r| r.licence.clone()),
        ],
    )
    .map_err(|e| Error::polars("building index", e))
}

/// Writes `<dataset_dir>/index.parquet` atomically.
pub fn write_index(dataset_dir: &Path, records: &[ImageRecord]) -> Result<()> {
    let mut df = index_frame(records)?;
    write_parquet(&mut df, &index_path(dataset_dir))
}

/// Reads `<dataset_dir>/index.parquet`, checking every column is present with the right type.
pub fn read_index(dataset_dir: &Path) -> Result<Vec<ImageRecord>> {
    let path = index_path(dataset_dir);
    let df = read_parquet(&path)?;
    let bad = |reason: String| Error::format(&path, reason);
    let strs = |name: &str| -> Result<Vec<Option<String>>> {
        let c = df
            .column(name)
            .map_err(|_| bad(format!("missing column `{name}`")))?;
        let s = c
            .str()
            .map_err(|_| bad(format!("column `{name}` is not a string column")))?;
        Ok(s.iter().map(|v| v.map(str::to_string)).collect())
    };
    let u32s = |name: &str| -> Result<Vec<Option<u32>>> {
        let c = df
            .column(name)
            .map_err(|_| bad(format!("missing column `{name}`")))?;
        let s = c
            .u32()
            .map_err(|_| bad(format!("column `{name}` is not u32")))?;
        Ok(s.iter().collect())
    };
    let (ids, paths, labels, kinds) = (
        strs(COL_ID)?,
        strs(COL_PATH)?,
        strs(COL_LABEL)?,
        strs(COL_KIND)?,
    );
    let (widths, heights) = (u32s(COL_WIDTH)?, u32s(COL_HEIGHT)?);
    let (sources, licences) = (strs(COL_SOURCE)?, strs(COL_LICENCE)?);
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let need = |v: &Option<String>, name: &str| -> Result<String> {
            v.clone()
                .ok_or_else(|| bad(format!("row {i}: `{name}` is null")))
        };
        let kind_s = need(&kinds[i], COL_KIND)?;
        out.push(ImageRecord {
            id: need(&ids[i], COL_ID)?,
            path: need(&paths[i], COL_PATH)?,
            label: labels[i].clone(),
            kind: kind_s
                .parse()
                .map_err(|e: String| bad(format!("row {i}: {e}")))?,
            width: widths[i].unwrap_or(0),
            height: heights[i].unwrap_or(0),
            source: need(&sources[i], COL_SOURCE)?,
            licence: need(&licences[i], COL_LICENCE)?,
        });
    }
    Ok(out)
}

/// Why `datasets index` lists a file whose name is not UTF-8: the index stores paths as text, and a lossy
/// copy would name another file (or the same one as a second name that differs only in invalid bytes).
pub const NOT_UTF8_NAME: &str =
    "file name is not UTF-8: the index stores paths as text (rename the file)";

/// Index of an image folder (ImageFolder tree → labelled, else unlabelled), for `datasets index`: every
/// image is decoded as the loader would; the readable ones become records (id and path relative to `dir`,
/// so ids equal those of the folder read on the fly), the rest are returned as (path, reason): files that
/// do not decode, symlinks leading out of `dir` (never opened) and names that are not UTF-8.
pub fn index_folder(
    dir: &Path,
    kind: DatasetKind,
    licence: &str,
    limits: &crate::data::decode::DecodeLimits,
) -> Result<(Vec<ImageRecord>, Vec<(PathBuf, String)>)> {
    let mut skipped = Vec::new();
    let mut samples = Vec::new();
    for s in crate::data::source::samples_from_folder(dir, "", kind)? {
        let text_name = s.path.strip_prefix(dir).is_ok_and(|r| r.to_str().is_some());
        match s.readable_path() {
            Err(skip) => skipped.push((skip.path, skip.reason.to_string())),
            Ok(_) if !text_name => skipped.push((s.path, NOT_UTF8_NAME.to_string())),
            Ok(_) => samples.push(s),
        }
    }
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let checked = crate::data::check::check_files(&paths, limits);
    let mut records = Vec::with_capacity(samples.len());
    for (s, c) in samples.into_iter().zip(checked) {
        match (c.size, c.reason) {
            (Some((width, height)), None) => records.push(ImageRecord {
                path: s.id.clone(),
                id: s.id,
                label: s.label,
                kind,
                width,
                height,
                source: format!("folder:{}", dir.display()),
                licence: licence.to_string(),
            }),
            (_, reason) => skipped.push((c.path, reason.unwrap_or_else(|| "unreadable".into()))),
        }
    }
    skipped.sort();
    Ok((records, skipped))
}

/// The data directory: `--data-dir`, else `$BIASLAB_DATA`, else `./data`.
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("BIASLAB_DATA") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_with_null_labels() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            ImageRecord {
                id: "a".into(),
                path: "images/cat/a.png".into(),
                label: Some("cat".into()),
                kind: DatasetKind::Object,
                width: 3,
                height: 4,
                source: "test".into(),
                licence: "CC0".into(),
            },
            ImageRecord {
                id: "b".into(),
                path: "images/_unlabelled/b.png".into(),
                label: None,
                kind: DatasetKind::Scene,
                width: 5,
                height: 6,
                source: "test".into(),
                licence: "CC0".into(),
            },
        ];
        write_index(dir.path(), &recs).unwrap();
        assert_eq!(read_index(dir.path()).unwrap(), recs);
    }

    #[test]
    fn index_folder_keeps_on_the_fly_ids_and_lists_unreadable_files() {
        let d = tempfile::tempdir().unwrap();
        // Above the loader's 16 px minimum side.
        for (rel, w) in [("cat/a.png", 30u32), ("dog/b.png", 40)] {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::new(w, 20).save(&p).unwrap();
        }
        std::fs::write(d.path().join("dog/broken.png"), b"not a png").unwrap();
        let limits = crate::data::decode::DecodeLimits::default();
        let (recs, skipped) = index_folder(d.path(), DatasetKind::Scene, "CC0", &limits).unwrap();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.id.as_str(), r.path.as_str(), r.label.as_deref(), r.width))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cat/a.png", "cat/a.png", Some("cat"), 30),
                ("dog/b.png", "dog/b.png", Some("dog"), 40)
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].0.ends_with("dog/broken.png"));
        // Written and read back, the index gives the same sample ids as the folder walked on the fly.
        let fly = crate::data::source::samples_from_dir(d.path(), "x", DatasetKind::Scene).unwrap();
        write_index(d.path(), &recs).unwrap();
        let indexed =
            crate::data::source::samples_from_dir(d.path(), "x", DatasetKind::Scene).unwrap();
        assert_eq!(
            indexed.iter().map(|s| &s.id).collect::<Vec<_>>(),
            fly.iter()
                .filter(|s| !s.id.contains("broken"))
                .map(|s| &s.id)
                .collect::<Vec<_>>()
        );
        assert_eq!(indexed[1].path, d.path().join("dog/b.png"));
    }
}
