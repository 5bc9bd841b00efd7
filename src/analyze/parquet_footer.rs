//! Checks what a Parquet file's footer claims before polars decodes anything: polars trusts the footer's
//! counts, so one changed varint made it index out of bounds, panic in a worker thread, read a column as
//! absent, or try to allocate terabytes. Here every column analyses read must claim a non-negative count
//! that agrees with its row group, bytes inside the file, and, all together, no more decoded memory than
//! [`budget::decoded_budget`] allows for the file's size.
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use crate::analyze::budget::{self, decoded_budget, DECODED_PER_FILE_BYTE, MEMORY_BYTES};
use crate::error::{Error, IoContext, Result};

/// The least a claimed value costs once decoded: an f32, or a string's 4-byte offset (polars' views take 16).
const MIN_BYTES_PER_VALUE: u64 = 4;
/// The least a claimed row costs the reader: the three required strings (`id`, `image_id`, `dataset`), 24
/// bytes of `String` each before their text.
const MIN_BYTES_PER_ROW: u64 = 3 * 24;

/// The text of a caught panic, for the error that replaces it.
pub(crate) fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
        .to_string()
}

/// Reads the footer of `path` and checks the claims of the columns named in `read` (the others are
/// never decoded); returns the number of rows it claims. Errors name the file, the column and the claim.
pub fn check_footer(path: &Path, read: &[&str]) -> Result<u64> {
    let file_len = std::fs::metadata(path).ctx_io(path)?.len();
    let file = std::fs::File::open(path).ctx_io(path)?;
    // polars' footer parser unwraps an overflowing byte range (a negative size or offset).
    let md = match catch_unwind(AssertUnwindSafe(|| {
        ParquetReader::new(file).get_metadata().map(Arc::clone)
    })) {
        Ok(Ok(md)) => md,
        Ok(Err(e)) => {
            return Err(Error::format(
                path,
                format!("not a readable Parquet file: {e}"),
            ))
        }
        Err(p) => {
            return Err(Error::format(
                path,
                format!(
                    "not a readable Parquet file: its footer made the Parquet reader panic ({})",
                    panic_text(p.as_ref())
                ),
            ))
        }
    };
    let mut rows_in_groups = 0u64;
    let mut values_read = 0u64;
    for (g, rg) in md.row_groups.iter().enumerate() {
        let rows = rg.num_rows() as u64;
        rows_in_groups = rows_in_groups.saturating_add(rows);
        for c in rg.parquet_columns() {
            let desc = c.descriptor();
            if !desc
                .path_in_schema
                .first()
                .is_some_and(|root| read.contains(&root.as_str()))
            {
                continue;
            }
            let name = desc
                .path_in_schema
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let bad = |claim: String| {
                Error::format(
                    path,
                    format!("column `{name}`, row group {g}: the footer claims {claim}"),
                )
            };
            let values = c.num_values();
            if values < 0 {
                return Err(bad(format!("{values} values; a count cannot be negative")));
            }
            let values = values as u64;
            // A list column stores one value or more per row (an empty or null list still takes one
            // level entry); any other column exactly one per row, nulls included.
            let nested = desc.descriptor.max_rep_level > 0;
            if (!nested && values != rows) || (nested && values < rows) {
                return Err(bad(format!(
                    "{values} values for the group's {rows} rows{}: the columns' lengths disagree",
                    if nested {
                        " of lists (at least one each)"
                    } else {
                        ""
                    }
                )));
            }
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let (size, unpacked) = (c.compressed_size(), c.uncompressed_size());
            let end = start.checked_add(size);
            if start < 0 || size < 0 || unpacked < 0 || end.is_none_or(|e| e as u64 > file_len) {
                return Err(bad(format!(
                    "bytes {start}..{} ({unpacked} uncompressed), outside the file's {file_len} bytes",
                    end.map_or_else(|| "overflow".to_string(), |e| e.to_string())
                )));
            }
            values_read = values_read.saturating_add(values);
        }
    }
    let rows = md.num_rows as u64;
    if rows != rows_in_groups {
        return Err(Error::format(
            path,
            format!(
                "the footer claims {rows} rows, its row groups {rows_in_groups}: the counts disagree"
            ),
        ));
    }
    let needed = values_read
        .saturating_mul(MIN_BYTES_PER_VALUE)
        .saturating_add(rows.saturating_mul(MIN_BYTES_PER_ROW));
    let allowed = decoded_budget(file_len);
    if needed > allowed {
        return Err(Error::format(
            path,
            format!(
                "the footer claims {rows} rows and {values_read} values in the columns analyses read, at \
                 least {} once decoded: more than a {file_len}-byte file may claim ({}: {DECODED_PER_FILE_BYTE}× \
                 its size, at least {})",
                budget::human(needed),
                budget::human(allowed),
                budget::human(MEMORY_BYTES)
            ),
        ));
    }
    Ok(rows)
}
