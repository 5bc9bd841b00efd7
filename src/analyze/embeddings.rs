//! The embeddings Parquet contract (one row per crop) shared by `embed` and every analysis: column names,
//! a writer, and a reader that validates the schema and names the column/row at fault.
//!
//! Required: `id`, `image_id`, `dataset` (strings, non-null) and `embedding` (list or fixed-size list of
//! f16, f32 or f64, one length, finite). Everything else is optional and may be absent, an untyped null column or a typed
//! column of nulls: `label`, `kind`, `set_id`, `transform`, `split` (strings; other scalar types are read
//! as their text, e.g. integer class labels), `prototype` (integer) and `bbox` (written by `embed`, never
//! read). An analysis that needs an optional column the input lacks is skipped with a note naming it
//! (`Embeddings::absent`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::analyze::parquet_footer;
use crate::data::fetch::sha256_file;
use crate::error::{Error, Result};
use crate::report::io::write_parquet;

pub const COL_ID: &str = "id";
pub const COL_IMAGE_ID: &str = "image_id";
pub const COL_LABEL: &str = "label";
pub const COL_DATASET: &str = "dataset";
pub const COL_KIND: &str = "kind";
pub const COL_SET_ID: &str = "set_id";
pub const COL_BBOX: &str = "bbox";
pub const COL_PROTOTYPE: &str = "prototype";
/// K, the number of prototypes of the run that embedded the row (optional, nullable integer).
pub const COL_N_PROTOTYPES: &str = "n_prototypes";
pub const COL_EMBEDDING: &str = "embedding";
/// Optional: the transformation a row's view went through (invariance is reported per transform).
pub const COL_TRANSFORM: &str = "transform";
/// The `transform` of object-only crops (`embed --crops object-only`): a box's object pixels alone on the
/// neutral fill. `collapse` measures such rows apart from the whole-box rows of the same group.
pub const OBJECT_ONLY: &str = "object-only";
/// Optional: `train` / `test`; when present kNN uses train rows as the bank and test rows as queries.
pub const COL_SPLIT: &str = "split";

/// Axis-aligned box of a crop in source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One crop's embedding and its provenance, as `embed` writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRow {
    pub id: String,
    pub image_id: String,
    pub label: Option<String>,
    pub dataset: String,
    pub kind: String,
    pub set_id: Option<String>,
    pub bbox: Option<BBox>,
    pub prototype: Option<i32>,
    pub embedding: Vec<f32>,
}

/// Builds the embeddings DataFrame with the stable column order.
pub fn embeddings_frame(rows: &[EmbeddingRow]) -> Result<DataFrame> {
    let strs = |name: &str, f: &dyn Fn(&EmbeddingRow) -> Option<String>| -> Column {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let field = |name: &str, f: &dyn Fn(&BBox) -> f32| -> Series {
        Series::new(
            name.into(),
            rows.iter()
                .map(|r| r.bbox.as_ref().map(f))
                .collect::<Vec<_>>(),
        )
    };
    let fields = [
        field("x", &|b| b.x),
        field("y", &|b| b.y),
        field("w", &|b| b.w),
        field("h", &|b| b.h),
    ];
    let bbox = StructChunked::from_series(COL_BBOX.into(), rows.len(), fields.iter())
        .map_err(|e| Error::polars("building bbox column", e))?;
    let dim = rows.first().map_or(0, |r| r.embedding.len());
    let mut emb = ListPrimitiveChunkedBuilder::<Float32Type>::new(
        COL_EMBEDDING.into(),
        rows.len(),
        rows.len() * dim,
        DataType::Float32,
    );
    for r in rows {
        emb.append_slice(&r.embedding);
    }
    DataFrame::new(
        rows.len(),
        vec![
            strs(COL_ID, &|r| Some(r.id.clone())),
            strs(COL_IMAGE_ID, &|r| Some(r.image_id.clone())),
            strs(COL_LABEL, &|r| r.label.clone()),
            strs(COL_DATASET, &|r| Some(r.dataset.clone())),
            strs(COL_KIND, &|r| Some(r.kind.clone())),
            strs(COL_SET_ID, &|r| r.set_id.clone()),
            bbox.into_series().into_column(),
            Column::new(
                COL_PROTOTYPE.into(),
                rows.iter().map(|r| r.prototype).collect::<Vec<_>>(),
            ),
            emb.finish().into_series().into_column(),
        ],
    )
    .map_err(|e| Error::polars("building embeddings frame", e))
}

/// Writes `rows` to `path` as Parquet, atomically. All embeddings must have one length and be finite.
pub fn write_embeddings(path: &Path, rows: &[EmbeddingRow]) -> Result<()> {
    write_embeddings_with_k(path, rows, None)
}

/// As [`write_embeddings`], with the run's number of prototypes K in column `n_prototypes` of every row
/// (null when the run has none), so prototype usage is measured against the K the run was trained with.
pub fn write_embeddings_with_k(
    path: &Path,
    rows: &[EmbeddingRow],
    n_prototypes: Option<i64>,
) -> Result<()> {
    if let Some(first) = rows.first() {
        for (i, r) in rows.iter().enumerate() {
            if r.embedding.len() != first.embedding.len() {
                return Err(Error::Invalid(format!(
                    "writing {}: row {i} (id `{}`) has embedding length {}, row 0 has {}",
                    path.display(),
                    r.id,
                    r.embedding.len(),
                    first.embedding.len()
                )));
            }
        }
    }
    let mut df = embeddings_frame(rows)?;
    df.with_column(Column::new(
        COL_N_PROTOTYPES.into(),
        vec![n_prototypes; rows.len()],
    ))
    .map_err(|e| Error::polars("adding column `n_prototypes`", e))?;
    write_parquet(&mut df, path)
}

/// An optional integer column as i64 (absent → all null; untyped nulls accepted), else an error naming
/// the file, the column and its type.
fn optional_i64_column(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<Option<i64>>> {
    let Ok(c) = df.column(name) else {
        return Ok(vec![None; df.height()]);
    };
    let c = c.cast(&DataType::Int64).map_err(|_| {
        Error::format(
            path,
            format!("column `{name}` is {}, expected an integer", c.dtype()),
        )
    })?;
    Ok(c.i64()
        .map_err(|e| Error::polars(format!("{}: column `{name}`", path.display()), e))?
        .iter()
        .collect())
}

/// One input file and the sha256 of its bytes (provenance for every report row).
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// Embeddings of one or more files, validated, in memory: `data` is row-major `[n, dim]`.
#[derive(Debug, Clone, Default)]
pub struct Embeddings {
    pub ids: Vec<String>,
    pub image_ids: Vec<String>,
    pub labels: Vec<Option<String>>,
    pub datasets: Vec<String>,
    pub kinds: Vec<Option<String>>,
    pub set_ids: Vec<Option<String>>,
    pub prototypes: Vec<Option<i32>>,
    /// K of the run that wrote the row (optional column `n_prototypes`; null for SimCLR or unknown).
    pub n_prototypes: Vec<Option<i64>>,
    pub transforms: Vec<Option<String>>,
    pub splits: Vec<Option<String>>,
    /// Index into `files` of the file each row came from.
    pub file_index: Vec<usize>,
    pub files: Vec<InputFile>,
    pub dim: usize,
    pub data: Vec<f32>,
    /// What reading has to say that is not an error (an input read once although given twice), for the
    /// report's notes.
    pub notes: Vec<String>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Whether optional column `name` carries no value at all (absent from the input or all null); the
    /// required columns are never absent.
    pub fn absent(&self, name: &str) -> bool {
        match name {
            COL_LABEL => self.labels.iter().all(Option::is_none),
            COL_KIND => self.kinds.iter().all(Option::is_none),
            COL_SET_ID => self.set_ids.iter().all(Option::is_none),
            COL_PROTOTYPE => self.prototypes.iter().all(Option::is_none),
            COL_TRANSFORM => self.transforms.iter().all(Option::is_none),
            COL_SPLIT => self.splits.iter().all(Option::is_none),
            _ => false,
        }
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    /// Row-major `[rows.len(), dim]` copy of the given rows, L2-normalised when `normalise`.
    pub fn gather(&self, rows: &[usize], normalise: bool) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            let v = self.row(r);
            if normalise {
                let norm = v
                    .iter()
                    .map(|x| (*x as f64) * (*x as f64))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                out.extend(v.iter().map(|x| (*x as f64 / norm) as f32));
            } else {
                out.extend_from_slice(v);
            }
        }
        out
    }
}

/// In-memory embeddings from rows (no file: provenance names `<memory>`), validated like the reader.
pub fn from_rows(rows: &[EmbeddingRow]) -> Result<Embeddings> {
    let dim = rows.first().map_or(0, |r| r.embedding.len());
    let mut data = Vec::with_capacity(rows.len() * dim);
    for (i, r) in rows.iter().enumerate() {
        if r.embedding.len() != dim {
            return Err(Error::Invalid(format!(
                "column `{COL_EMBEDDING}`: row {i} (id `{}`) has length {}, row 0 has {dim} (ragged embeddings)",
                r.id,
                r.embedding.len()
            )));
        }
        if let Some(j) = r.embedding.iter().position(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "column `{COL_EMBEDDING}`: row {i} (id `{}`) has non-finite value at position {j}",
                r.id
            )));
        }
        data.extend_from_slice(&r.embedding);
    }
    let n = rows.len();
    Ok(Embeddings {
        ids: rows.iter().map(|r| r.id.clone()).collect(),
        image_ids: rows.iter().map(|r| r.image_id.clone()).collect(),
        labels: rows.iter().map(|r| r.label.clone()).collect(),
        datasets: rows.iter().map(|r| r.dataset.clone()).collect(),
        kinds: rows.iter().map(|r| Some(r.kind.clone())).collect(),
        set_ids: rows.iter().map(|r| r.set_id.clone()).collect(),
        prototypes: rows.iter().map(|r| r.prototype).collect(),
        n_prototypes: vec![None; n],
        transforms: vec![None; n],
        splits: vec![None; n],
        file_index: vec![0; n],
        files: vec![InputFile {
            path: PathBuf::from("<memory>"),
            sha256: String::new(),
        }],
        dim,
        data,
        notes: Vec::new(),
    })
}

/// Test and bench helper: a row with the given image, label, code and embedding.
pub fn row(
    id: usize,
    image_id: &str,
    label: Option<&str>,
    prototype: Option<i32>,
    embedding: Vec<f32>,
) -> EmbeddingRow {
    EmbeddingRow {
        id: format!("c{id}"),
        image_id: image_id.to_string(),
        label: label.map(str::to_string),
        dataset: "d".to_string(),
        kind: "scene".to_string(),
        set_id: None,
        bbox: None,
        prototype,
        embedding,
    }
}

fn str_column(
    df: &DataFrame,
    path: &Path,
    name: &str,
    required: bool,
) -> Result<Option<Vec<Option<String>>>> {
    let Ok(c) = df.column(name) else {
        return if required {
            Err(Error::format(path, format!("missing column `{name}`")))
        } else {
            Ok(None)
        };
    };
    if c.dtype() == &DataType::Null {
        // an untyped null column (pandas/pyarrow write `None` columns so)
        return Ok(Some(vec![None; c.len()]));
    }
    let expected = || {
        Error::format(
            path,
            format!("column `{name}` is {}, expected str", c.dtype()),
        )
    };
    // Integer or categorical labels are read as their text; nested types are refused.
    if c.dtype().is_nested() {
        return Err(expected());
    }
    let c = c.cast(&DataType::String).map_err(|_| expected())?;
    let s = c.str().map_err(|_| expected())?;
    Ok(Some(s.iter().map(|v| v.map(str::to_string)).collect()))
}

fn non_null(
    path: &Path,
    name: &str,
    ids: &[String],
    v: Vec<Option<String>>,
) -> Result<Vec<String>> {
    v.into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or_else(|| {
                let id = ids.get(i).map_or("?", String::as_str);
                Error::format(
                    path,
                    format!("column `{name}`: row {i} (id `{id}`) is null"),
                )
            })
        })
        .collect()
}

/// The columns every file must have.
pub const REQUIRED_COLUMNS: [&str; 4] = [COL_ID, COL_IMAGE_ID, COL_DATASET, COL_EMBEDDING];
/// The columns analyses read: the required ones, then the optional ones (absent or null is fine).
const READ_COLUMNS: [&str; 11] = [
    COL_ID,
    COL_IMAGE_ID,
    COL_DATASET,
    COL_EMBEDDING,
    COL_LABEL,
    COL_KIND,
    COL_SET_ID,
    COL_PROTOTYPE,
    COL_TRANSFORM,
    COL_SPLIT,
    COL_N_PROTOTYPES,
];

/// Scans `path` lazily and reads only the columns analyses use (not `bbox`, nor columns a user added):
/// the parquet footer is read first, so a missing column is named before any data is read, and its claims
/// are checked (`parquet_footer::check_footer`) before polars, which trusts them, decodes anything.
///
/// polars' lazy scan converts the whole file schema and panics, rather than failing, on an Arrow type
/// this build has no feature for (a decimal, duration or time column another tool wrote beside the
/// embeddings). Such a file is read again eagerly with only the columns analyses use, whose types are then
/// the only ones converted; if that fails too, the error names the file. Whatever was read must then hold
/// every column it was asked for, each with the rows the footer claims: a column polars lost on the
/// way (a panic in one of its worker threads) is an error, never an optional column reported absent.
fn scan_columns(path: &Path) -> Result<DataFrame> {
    let rows = parquet_footer::check_footer(path, &READ_COLUMNS)?;
    let (df, asked) = match std::panic::catch_unwind(|| scan_columns_unguarded(path)) {
        Ok(result) => result?,
        Err(panic) => {
            let why = parquet_footer::panic_text(panic.as_ref());
            std::panic::catch_unwind(|| read_projected(path)).unwrap_or_else(|_| {
                Err(Error::format(
                    path,
                    format!("not a Parquet file analyses can read: {why}"),
                ))
            })?
        }
    };
    if let Some(lost) = asked.iter().find(|c| df.column(c).is_err()) {
        return Err(Error::format(
            path,
            format!("column `{lost}` is in the file's schema but could not be read"),
        ));
    }
    if let Some(c) = df.columns().iter().find(|c| c.len() != df.height()) {
        return Err(Error::format(
            path,
            format!(
                "column `{}` was read with {} rows, the others with {}",
                c.name(),
                c.len(),
                df.height()
            ),
        ));
    }
    if df.height() as u64 != rows {
        return Err(Error::format(
            path,
            format!(
                "read {} rows, the footer claims {rows}: a damaged file",
                df.height()
            ),
        ));
    }
    Ok(df)
}

/// The eager reader with a projection: only the projected columns' types are converted. Returns the
/// frame and the columns it asked for.
fn read_projected(path: &Path) -> Result<(DataFrame, Vec<&'static str>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ParquetReader::new(file);
    let schema = reader
        .schema()
        .map_err(|e| Error::format(path, format!("not a readable Parquet file: {e}")))?;
    let present = columns_to_read(path, |c| schema.contains(c))?;
    let df = reader
        .with_columns(Some(present.iter().map(|c| c.to_string()).collect()))
        .finish()
        .map_err(|e| Error::polars(format!("reading {}", path.display()), e))?;
    Ok((df, present))
}

/// The lazy scan; returns the frame and the columns it asked for.
fn scan_columns_unguarded(path: &Path) -> Result<(DataFrame, Vec<&'static str>)> {
    let ctx = || format!("scanning {}", path.display());
    let plpath = PlRefPath::try_from_path(path).map_err(|e| Error::polars(ctx(), e))?;
    let mut lf = LazyFrame::scan_parquet(
        plpath,
        ScanArgsParquet {
            glob: false,
            ..Default::default()
        },
    )
    .map_err(|e| Error::polars(ctx(), e))?;
    let schema = lf
        .collect_schema()
        .map_err(|e| Error::format(path, format!("not a readable Parquet file: {e}")))?;
    let present = columns_to_read(path, |c| schema.get(c).is_some())?;
    let df = lf
        .select(present.iter().map(|c| col(*c)).collect::<Vec<Expr>>())
        .collect()
        .map_err(|e| Error::polars(ctx(), e))?;
    Ok((df, present))
}

/// Of the columns analyses read, those the file has (`has`), after checking it has every required one.
fn columns_to_read(path: &Path, has: impl Fn(&str) -> bool) -> Result<Vec<&'static str>> {
    if let Some(missing) = REQUIRED_COLUMNS.iter().find(|c| !has(c)) {
        return Err(Error::format(path, format!("missing column `{missing}`")));
    }
    Ok(READ_COLUMNS.into_iter().filter(|c| has(c)).collect())
}

/// Expands glob patterns (`runs/*/boxes.parquet`, a Slurm array's `emb-*.parquet`) into sorted paths; a
/// plain path is kept as it is. A pattern that matches nothing is an error naming it.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let text = input.to_string_lossy();
        if !text.contains(['*', '?', '[']) {
            out.push(input.clone());
            continue;
        }
        let bad = |reason: String| Error::config(text.to_string(), "embeddings", reason);
        let mut matched: Vec<PathBuf> = glob::glob(&text)
            .map_err(|e| bad(format!("not a glob pattern: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if matched.is_empty() {
            return Err(bad("no file matches the pattern".into()));
        }
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

/// Column `prototype` (absent or untyped null: all None), read as i64 so that no integer type is
/// narrowed on the way: a code outside i32 is an error naming the row, never a null that prototype usage
/// would count as "absent" (polars' cast to i32 turned such codes into nulls).
fn prototype_codes(df: &DataFrame, path: &Path, ids: &[String]) -> Result<Vec<Option<i32>>> {
    let n = ids.len();
    let c = match df.column(COL_PROTOTYPE) {
        Err(_) => return Ok(vec![None; n]),
        Ok(c) if c.dtype() == &DataType::Null => return Ok(vec![None; n]),
        Ok(c) => c,
    };
    let expected = || {
        Error::format(
            path,
            format!(
                "column `{COL_PROTOTYPE}` is {}, expected an integer",
                c.dtype()
            ),
        )
    };
    if !c.dtype().is_integer() {
        return Err(expected());
    }
    // u64 codes above i64::MAX do not fit the cast either: find them before it nulls them.
    if c.dtype() == &DataType::UInt64 {
        let u = c.u64().map_err(|_| expected())?;
        if let Some((i, v)) = u
            .iter()
            .enumerate()
            .find_map(|(i, v)| v.filter(|&v| v > i32::MAX as u64).map(|v| (i, v)))
        {
            return Err(code_out_of_range(path, i, &ids[i], v as i128));
        }
    }
    let wide = c.cast(&DataType::Int64).map_err(|_| expected())?;
    let wide = wide.i64().map_err(|_| expected())?;
    wide.iter()
        .enumerate()
        .map(|(i, v)| match v {
            None => Ok(None),
            Some(v) => i32::try_from(v)
                .map(Some)
                .map_err(|_| code_out_of_range(path, i, &ids[i], v as i128)),
        })
        .collect()
}

fn code_out_of_range(path: &Path, row: usize, id: &str, code: i128) -> Error {
    Error::format(
        path,
        format!(
            "column `{COL_PROTOTYPE}`: row {row} (id `{id}`) has code {code}, outside the i32 range codes \
             are read into (a SwAV code is a prototype index below K)"
        ),
    )
}

/// Reads one embeddings Parquet and validates it: the footer's claims first, then the required columns
/// present and non-null, optional ones read when present, embeddings of one length, all values finite
/// and within f32's range, prototype codes within i32.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    regular_file(path)?;
    read_hashed(path, sha256_file(path)?)
}

/// As [`read_embeddings`], for a file whose sha256 the caller has computed.
fn read_hashed(path: &Path, sha256: String) -> Result<Embeddings> {
    let df = scan_columns(path)?;
    let ids_raw = str_column(&df, path, COL_ID, true)?.unwrap_or_default();
    let ids: Vec<String> = ids_raw
        .iter()
        .enumerate()
        .map(|(i, s)| s.clone().unwrap_or_else(|| format!("<row {i}>")))
        .collect();
    let ids = non_null(path, COL_ID, &ids, ids_raw).map(|_| ids)?;
    let image_ids = non_null(
        path,
        COL_IMAGE_ID,
        &ids,
        str_column(&df, path, COL_IMAGE_ID, true)?.unwrap_or_default(),
    )?;
    let n = ids.len();
    let optional = |name: &str| -> Result<Vec<Option<String>>> {
        Ok(str_column(&df, path, name, false)?.unwrap_or_else(|| vec![None; n]))
    };
    let labels = optional(COL_LABEL)?;
    let datasets = non_null(
        path,
        COL_DATASET,
        &ids,
        str_column(&df, path, COL_DATASET, true)?.unwrap_or_default(),
    )?;
    let kinds = optional(COL_KIND)?;
    let set_ids = optional(COL_SET_ID)?;
    let transforms = optional(COL_TRANSFORM)?;
    let splits = optional(COL_SPLIT)?;
    let prototypes = prototype_codes(&df, path, &ids)?;
    let emb_col = df
        .column(COL_EMBEDDING)
        .map_err(|_| Error::format(path, format!("missing column `{COL_EMBEDDING}`")))?;
    // Lists and fixed-size lists (polars' Array, pyarrow's list_(type, d)) of f16, f32 or f64 are all read
    // as list[f32]: f64 is numpy's default through pandas/pyarrow, f16 what half-precision models write.
    let float_list = match emb_col.dtype() {
        DataType::List(inner) | DataType::Array(inner, _) => inner.is_float(),
        _ => false,
    };
    let not_floats = || {
        Error::format(
            path,
            format!(
                "column `{COL_EMBEDDING}` is {}, expected a list or fixed-size list of f16, f32 or f64",
                emb_col.dtype()
            ),
        )
    };
    if !float_list {
        return Err(not_floats());
    }
    // f64 lists are checked as f64: a value beyond f32's range would become ±inf in the cast and be
    // reported as non-finite, although the file holds a finite number analyses cannot represent.
    let wide = matches!(
        emb_col.dtype(),
        DataType::List(inner) | DataType::Array(inner, _) if **inner == DataType::Float64
    );
    let inner = if wide {
        DataType::Float64
    } else {
        DataType::Float32
    };
    let emb_col = emb_col
        .cast(&DataType::List(Box::new(inner)))
        .map_err(|_| not_floats())?;
    let list = emb_col
        .list()
        .map_err(|e| Error::polars(format!("{}: column `{COL_EMBEDDING}`", path.display()), e))?;
    let mut dim = None;
    let mut data = Vec::new();
    for (i, v) in list.amortized_iter().enumerate() {
        let id = ids.get(i).map_or("?", String::as_str);
        let at = || format!("column `{COL_EMBEDDING}`: row {i} (id `{id}`)");
        let v = v.ok_or_else(|| Error::format(path, format!("{} is null", at())))?;
        let series = v.as_ref();
        let polars_err = |e| Error::polars(format!("{}: {}", path.display(), at()), e);
        let values: Box<dyn Iterator<Item = Option<f64>>> = if wide {
            Box::new(series.f64().map_err(polars_err)?.iter())
        } else {
            Box::new(
                series
                    .f32()
                    .map_err(polars_err)?
                    .iter()
                    .map(|x| x.map(f64::from)),
            )
        };
        let len = series.len();
        let d = *dim.get_or_insert(len);
        if len != d {
            return Err(Error::format(
                path,
                format!(
                    "{} has length {len}, row 0 has {d} (ragged embeddings)",
                    at()
                ),
            ));
        }
        for (j, x) in values.enumerate() {
            let x = x.ok_or_else(|| {
                Error::format(path, format!("{} has a null at position {j}", at()))
            })?;
            if !x.is_finite() {
                return Err(Error::format(
                    path,
                    format!("{} has non-finite value {x} at position {j}", at()),
                ));
            }
            if x.abs() > f32::MAX as f64 {
                return Err(Error::format(
                    path,
                    format!(
                        "{} has value {x:e} at position {j}, outside the f32 range (±{:e}) analyses compute in",
                        at(),
                        f32::MAX
                    ),
                ));
            }
            data.push(x as f32);
        }
    }
    let dim = dim.unwrap_or(0);
    if n > 0 && dim == 0 {
        return Err(Error::format(
            path,
            format!("column `{COL_EMBEDDING}`: embeddings are empty"),
        ));
    }
    Ok(Embeddings {
        ids,
        image_ids,
        labels,
        datasets,
        kinds,
        set_ids,
        prototypes,
        n_prototypes: optional_i64_column(&df, path, COL_N_PROTOTYPES)?,
        transforms,
        splits,
        file_index: vec![0; n],
        files: vec![InputFile {
            path: path.to_path_buf(),
            sha256,
        }],
        dim,
        data,
        notes: Vec::new(),
    })
}

/// Reads several files or glob patterns into one set (rows keep their file index); all must share one
/// embedding length. Files are scanned one at a time, so at most one file's frame is held beside the
/// pooled embeddings.
///
/// Inputs are identified by canonical path and then by content: a file named twice (`e.parquet
/// ./e.parquet 'e*.parquet'`) or a byte-identical copy under another name is read once, and
/// `Embeddings::notes` says so; pooling it again would count every row twice (n doubled, duplicate rows
/// read as dead dimensions, kNN intervals narrowed).
pub fn read_many(inputs: &[PathBuf]) -> Result<Embeddings> {
    let paths = expand_inputs(inputs)?;
    let mut all = Embeddings::default();
    // canonical path → the input that named it first; sha256 → the first input with those bytes
    let mut by_path: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut by_content: BTreeMap<String, PathBuf> = BTreeMap::new();
    // first input → the other names it was given as (in order)
    let mut again: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for p in &paths {
        regular_file(p)?;
        let canonical = std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
        if let Some(first) = by_path.get(&canonical) {
            again
                .entry(first.clone())
                .or_default()
                .push(format!("`{}`", p.display()));
            continue;
        }
        by_path.insert(canonical, p.clone());
        let sha256 = sha256_file(p)?;
        if let Some(first) = by_content.get(&sha256) {
            all.notes.push(format!(
                "{} has the same bytes as {} (sha256 {}…): read once",
                p.display(),
                first.display(),
                &sha256[..12]
            ));
            continue;
        }
        by_content.insert(sha256.clone(), p.clone());
        let e = read_hashed(p, sha256)?;
        if !all.files.is_empty() && e.dim != all.dim && !e.is_empty() && !all.is_empty() {
            return Err(Error::format(
                p,
                format!(
                    "embedding length {} differs from {} in {}",
                    e.dim,
                    all.dim,
                    all.files[0].path.display()
                ),
            ));
        }
        if all.is_empty() {
            all.dim = e.dim;
        }
        let (n, k) = (e.len(), all.files.len());
        all.ids.extend(e.ids);
        all.image_ids.extend(e.image_ids);
        all.labels.extend(e.labels);
        all.datasets.extend(e.datasets);
        all.kinds.extend(e.kinds);
        all.set_ids.extend(e.set_ids);
        all.prototypes.extend(e.prototypes);
        all.n_prototypes.extend(e.n_prototypes);
        all.transforms.extend(e.transforms);
        all.splits.extend(e.splits);
        all.data.extend(e.data);
        all.file_index.extend(std::iter::repeat_n(k, n));
        all.files.extend(e.files);
        all.notes.extend(e.notes);
    }
    for (first, names) in again {
        all.notes.push(format!(
            "{} was given {} times (also as {}): read once",
            first.display(),
            names.len() + 1,
            names.join(", ")
        ));
    }
    Ok(all)
}

/// Ok for a regular file (or a link to one); else an error saying what `path` is instead, before
/// anything opens it (hashing a fifo would wait forever; a directory is not "no such file").
fn regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::format(
        path,
        if meta.is_dir() {
            "a directory, not an embeddings Parquet file"
        } else {
            "not a regular file (a fifo, socket or device), not an embeddings Parquet file"
        },
    ))
}

/// How rows are grouped into report rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupBy {
    #[default]
    Dataset,
    Kind,
    File,
}

/// Row indices per group key, keys sorted.
pub fn groups(e: &Embeddings, by: GroupBy) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..e.len() {
        let key = match by {
            GroupBy::Dataset => e.datasets[i].clone(),
            GroupBy::Kind => e.kinds[i].clone().unwrap_or_else(|| "(no kind)".into()),
            GroupBy::File => e.files[e.file_index[i]].path.display().to_string(),
        };
        out.entry(key).or_default().push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::io::read_parquet;

    fn rows() -> Vec<EmbeddingRow> {
        (0..4)
            .map(|i| {
                let mut r = row(
                    i,
                    &format!("img{}", i / 2),
                    Some(["a", "b"][i % 2]),
                    Some(i as i32),
                    vec![i as f32, 1.0, -0.5],
                );
                r.bbox = (i % 2 == 0).then_some(BBox {
                    x: 1.0,
                    y: 2.0,
                    w: 3.0,
                    h: 4.0,
                });
                r.set_id = (i < 3).then(|| "s0".to_string());
                r
            })
            .collect()
    }

    #[test]
    fn round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        write_embeddings(&path, &rows()).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e.dim, 3);
        assert_eq!(e.row(3), &[3.0, 1.0, -0.5]);
        assert_eq!(e.labels[1].as_deref(), Some("b"));
        assert_eq!(e.set_ids[3], None);
        assert_eq!(e.prototypes[2], Some(2));
        assert_eq!(e.files[0].sha256.len(), 64);
        let df = read_parquet(&path).unwrap();
        let bbox = df
            .column(COL_BBOX)
            .unwrap()
            .struct_()
            .unwrap()
            .field_by_name("w")
            .unwrap();
        assert_eq!(bbox.f32().unwrap().get(0), Some(3.0));
        assert_eq!(bbox.f32().unwrap().get(1), None);
    }

    /// The issue-12 file: only the four required columns (then typed and untyped nulls for the optional
    /// ones, integer labels, f64 embeddings) is read, and the optional columns are reported absent.
    #[test]
    fn user_minimal_file_with_nulls_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let full = embeddings_frame(&rows()).unwrap();
        let mut df = full
            .select([COL_ID, COL_IMAGE_ID, COL_DATASET, COL_EMBEDDING])
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!((e.len(), e.dim), (4, 3));
        for c in [
            COL_LABEL,
            COL_KIND,
            COL_SET_ID,
            COL_PROTOTYPE,
            COL_TRANSFORM,
            COL_SPLIT,
        ] {
            assert!(e.absent(c), "{c}");
        }
        assert_eq!(
            groups(&e, GroupBy::Kind).keys().collect::<Vec<_>>(),
            ["(no kind)"]
        );

        let n = df.height();
        let emb64 = df
            .column(COL_EMBEDDING)
            .unwrap()
            .cast(&DataType::List(Box::new(DataType::Float64)))
            .unwrap();
        df.with_column(emb64).unwrap();
        df.with_column(Column::new(COL_LABEL.into(), [7i64, 7, 3, 3]))
            .unwrap();
        df.with_column(Column::full_null(COL_SET_ID.into(), n, &DataType::Null))
            .unwrap();
        df.with_column(Column::full_null(COL_KIND.into(), n, &DataType::String))
            .unwrap();
        df.with_column(Column::full_null(COL_PROTOTYPE.into(), n, &DataType::Int64))
            .unwrap();
        df.with_column(Column::full_null(COL_BBOX.into(), n, &DataType::Null))
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!(e.labels[2].as_deref(), Some("3"));
        assert_eq!(e.row(3), &[3.0, 1.0, -0.5]);
        assert!(!e.absent(COL_LABEL));
        assert!(e.absent(COL_SET_ID) && e.absent(COL_KIND) && e.absent(COL_PROTOTYPE));

        // A wrong type is still an error naming the column.
        df.with_column(Column::new(COL_PROTOTYPE.into(), ["a", "b", "c", "d"]))
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(err.contains("column `prototype` is str"), "{err}");
    }

    /// Fixed-size lists (polars' `pl.Array`, pyarrow's `list_(float32(), d)`) and half-precision values are
    /// what other tools write; both read as the same f32 embeddings.
    #[test]
    fn fixed_size_and_half_precision_embeddings_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut df = embeddings_frame(&rows())
            .unwrap()
            .select([COL_ID, COL_IMAGE_ID, COL_DATASET, COL_EMBEDDING])
            .unwrap();
        let want = read_embeddings_from(&mut df, &path);
        for inner in [DataType::Float16, DataType::Float32, DataType::Float64] {
            for fixed in [false, true] {
                let dtype = if fixed {
                    DataType::Array(Box::new(inner.clone()), 3)
                } else {
                    DataType::List(Box::new(inner.clone()))
                };
                let mut d = df.clone();
                let c = d.column(COL_EMBEDDING).unwrap().cast(&dtype).unwrap();
                assert_eq!(c.dtype(), &dtype);
                d.with_column(c).unwrap();
                let got = read_embeddings_from(&mut d, &path);
                // The fixture's values are small integers and halves: exact in f16 too.
                assert_eq!(got, want, "{dtype}");
            }
        }
        // Integers are not embeddings: the error names the column and what it holds.
        let mut d = df.clone();
        let c = d
            .column(COL_EMBEDDING)
            .unwrap()
            .cast(&DataType::Array(Box::new(DataType::Int32), 3))
            .unwrap();
        d.with_column(c).unwrap();
        write_parquet(&mut d, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(err.contains("column `embedding` is array[i32, 3]"), "{err}");
    }

    fn read_embeddings_from(df: &mut DataFrame, path: &Path) -> Vec<f32> {
        write_parquet(df, path).unwrap();
        let e = read_embeddings(path).unwrap();
        (0..e.len()).flat_map(|i| e.row(i).to_vec()).collect()
    }

    #[test]
    fn missing_column_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut df = embeddings_frame(&rows())
            .unwrap()
            .drop(COL_IMAGE_ID)
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("missing column `image_id`") && err.contains("e.parquet"),
            "{err}"
        );
    }

    #[test]
    fn ragged_embeddings_name_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut r = rows();
        r[2].embedding.push(9.0);
        assert!(write_embeddings(&path, &r)
            .unwrap_err()
            .to_string()
            .contains("row 2"));
        // A file written by someone else can still be ragged: the reader names the row.
        let mut df = embeddings_frame(&r).unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("`embedding`")
                && err.contains("row 2 (id `c2`)")
                && err.contains("ragged"),
            "{err}"
        );
    }

    #[test]
    fn nan_embedding_names_row_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut r = rows();
        r[1].embedding[2] = f32::NAN;
        write_embeddings(&path, &r).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 1 (id `c1`)") && err.contains("position 2"),
            "{err}"
        );
    }

    #[test]
    fn null_image_id_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut df = embeddings_frame(&rows()).unwrap();
        let col = Column::new(
            COL_IMAGE_ID.into(),
            vec![Some("a"), None, Some("b"), Some("b")],
        );
        df.with_column(col).unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("column `image_id`: row 1 (id `c1`) is null"),
            "{err}"
        );
    }

    #[test]
    fn files_of_different_dims_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write_embeddings(&a, &rows()).unwrap();
        let mut r = rows();
        r.iter_mut().for_each(|r| r.embedding.push(0.0));
        write_embeddings(&b, &r).unwrap();
        assert!(read_many(&[a.clone(), b])
            .unwrap_err()
            .to_string()
            .contains("embedding length 4"));
        let c = dir.path().join("c.parquet");
        write_embeddings(&c, &rows()[..2]).unwrap();
        let both = read_many(&[a.clone(), c]).unwrap();
        assert_eq!(
            (both.len(), both.file_index[5], both.files.len()),
            (6, 1, 2)
        );
    }

    // Issue 23: `e.parquet ./e.parquet 'e*.parquet'` pooled one file three times (n 32 → 96).
    #[test]
    fn the_same_file_given_three_times_is_read_once_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("e.parquet");
        write_embeddings(&a, &rows()).unwrap();
        let dotted = dir.path().join(".").join("e.parquet");
        let pattern = dir.path().join("e*.parquet");
        let e = read_many(&[a.clone(), dotted, pattern]).unwrap();
        assert_eq!((e.len(), e.files.len()), (4, 1));
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(
            e.notes[0].contains("given 3 times") && e.notes[0].contains("read once"),
            "{:?}",
            e.notes
        );
        // A byte-identical copy under another name is the same rows too.
        let copy = dir.path().join("copy.parquet");
        std::fs::copy(&a, &copy).unwrap();
        let e = read_many(&[a, copy]).unwrap();
        assert_eq!(e.len(), 4);
        assert!(e.notes[0].contains("same bytes"), "{:?}", e.notes);
    }

    // Issue 23: a glob matching a directory said "no such file".
    #[test]
    fn a_directory_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_many(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a directory"), "{err}");
    }

    // Issue 23: 1e300 in f64 embeddings was reported as "non-finite inf".
    #[test]
    fn an_f64_value_beyond_f32_is_named_as_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut df = embeddings_frame(&rows()).unwrap();
        let wide: Vec<Series> = (0..4)
            .map(|i| {
                let v = if i == 2 { 1e300 } else { 0.5 };
                Series::new("".into(), [1.0f64, v, -0.5])
            })
            .collect();
        df.with_column(Column::new(COL_EMBEDDING.into(), wide))
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("e.parquet")
                && err.contains("row 2 (id `c2`)")
                && err.contains("1e300")
                && err.contains("position 1")
                && err.contains("outside the f32 range"),
            "{err}"
        );
        assert!(!err.contains("non-finite"), "{err}");
    }

    // Issue 23: prototype codes that do not fit i32 became null (10 of 60 rows dropped as "absent").
    #[test]
    fn prototype_codes_beyond_i32_are_an_error_naming_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut df = embeddings_frame(&rows()).unwrap();
        df.with_column(Column::new(
            COL_PROTOTYPE.into(),
            [Some(0i64), Some(1), None, Some(1 << 40)],
        ))
        .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("e.parquet")
                && err.contains("row 3 (id `c3`)")
                && err.contains("1099511627776"),
            "{err}"
        );
        df.with_column(Column::new(COL_PROTOTYPE.into(), [0u64, 1, u64::MAX, 2]))
            .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let err = read_embeddings(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 2 (id `c2`)") && err.contains("18446744073709551615"),
            "{err}"
        );
        // i64 codes that fit are read as they are.
        df.with_column(Column::new(
            COL_PROTOTYPE.into(),
            [Some(0i64), None, Some(7), Some(2)],
        ))
        .unwrap();
        write_parquet(&mut df, &path).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!(e.prototypes, [Some(0), None, Some(7), Some(2)]);
    }
}
