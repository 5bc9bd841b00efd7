//! Issue 23: embeddings Parquet files whose footer lies. One changed Thrift varint in the footer made
//! `analyze` index out of bounds, panic in a polars worker thread (and then report the column absent),
//! say "no rows", or abort allocating terabytes. Every integer the footer holds is set to hostile values
//! here, and every byte of it perturbed: the reader must give Ok or a clean error naming the file, never a
//! panic or an abort, and what it reads must support the analyses.
use std::path::{Path, PathBuf};

use biaslab::analyze::embeddings::{
    read_embeddings, read_many, row, write_embeddings_with_k, COL_DATASET, COL_EMBEDDING, COL_ID,
    COL_IMAGE_ID, COL_LABEL,
};
use biaslab::analyze::{spectrum, uniformity};
use proptest::prelude::*;

/// A small valid embeddings file: 12 rows of 3 dims, labels, codes and K, as `embed` writes it.
fn valid_file(dir: &Path) -> PathBuf {
    let rows: Vec<_> = (0..12)
        .map(|i| {
            let x = i as f32;
            row(
                i,
                &format!("img{}", i / 2),
                Some(["a", "b", "c"][i % 3]),
                Some((i % 4) as i32),
                vec![(0.7 * x).sin(), (0.3 * x).cos(), 0.1 * x - 0.5],
            )
        })
        .collect();
    let p = dir.join("emb.parquet");
    write_embeddings_with_k(&p, &rows, Some(4)).unwrap();
    p
}

// ---- a reader of the footer's Thrift compact protocol, enough to find and rewrite its integers ----

/// One integer of the footer: its path (field ids, `[i]` for list elements: `4[0].1[2].3.5` is row group
/// 0, column chunk 2, meta_data, num_values), its bytes within the footer and its value.
#[derive(Debug, Clone)]
struct Int {
    path: String,
    start: usize,
    end: usize,
    value: i64,
}

#[derive(Default)]
struct Walk {
    ints: Vec<Int>,
    /// Binary fields by path (column names are `4[g].1[j].3.3[0]`, the first element of path_in_schema).
    bins: Vec<(String, Vec<u8>)>,
}

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn zigzag_varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

impl Walk {
    fn value(&mut self, b: &[u8], pos: &mut usize, ty: u8, path: String) {
        match ty {
            1 | 2 => {}
            3 => *pos += 1,
            4..=6 => {
                let start = *pos;
                let value = unzigzag(varint(b, pos));
                self.ints.push(Int {
                    path,
                    start,
                    end: *pos,
                    value,
                });
            }
            7 => *pos += 8,
            8 => {
                let len = varint(b, pos) as usize;
                self.bins.push((path, b[*pos..*pos + len].to_vec()));
                *pos += len;
            }
            9 | 10 => {
                let h = b[*pos];
                *pos += 1;
                let (mut size, elem) = ((h >> 4) as usize, h & 0x0f);
                if size == 15 {
                    size = varint(b, pos) as usize;
                }
                for i in 0..size {
                    if elem == 1 || elem == 2 {
                        *pos += 1; // a bool element takes a byte in a list
                    } else {
                        self.value(b, pos, elem, format!("{path}[{i}]"));
                    }
                }
            }
            11 => {
                let size = varint(b, pos) as usize;
                if size > 0 {
                    let kv = b[*pos];
                    *pos += 1;
                    for i in 0..size {
                        self.value(b, pos, kv >> 4, format!("{path}{{k{i}}}"));
                        self.value(b, pos, kv & 0x0f, format!("{path}{{v{i}}}"));
                    }
                }
            }
            12 => self.fields(b, pos, &path),
            t => panic!("thrift type {t} at {pos} (the fixture is not Thrift compact)"),
        }
    }

    fn fields(&mut self, b: &[u8], pos: &mut usize, prefix: &str) {
        let mut last = 0i64;
        loop {
            let h = b[*pos];
            *pos += 1;
            if h == 0 {
                return;
            }
            let id = match h >> 4 {
                0 => unzigzag(varint(b, pos)),
                delta => last + delta as i64,
            };
            last = id;
            let path = if prefix.is_empty() {
                id.to_string()
            } else {
                format!("{prefix}.{id}")
            };
            self.value(b, pos, h & 0x0f, path);
        }
    }
}

/// The footer's range in `file`: Thrift FileMetaData, then its 4-byte length and `PAR1`.
fn footer_range(file: &[u8]) -> std::ops::Range<usize> {
    let n = file.len();
    let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
    n - 8 - len..n - 8
}

fn walk(file: &[u8]) -> Walk {
    let range = footer_range(file);
    let mut w = Walk::default();
    let mut pos = 0;
    w.fields(&file[range.clone()], &mut pos, "");
    assert_eq!(pos, range.len(), "the walk read the whole footer");
    w
}

/// `file` with the footer integer `int` replaced by `value` (re-encoded; the footer length is rewritten).
fn with_int(file: &[u8], int: &Int, value: i64) -> Vec<u8> {
    let range = footer_range(file);
    let mut footer = file[range.clone()].to_vec();
    footer.splice(int.start..int.end, zigzag_varint(value));
    let mut out = file[..range.start].to_vec();
    out.extend_from_slice(&footer);
    out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// The `num_values` of column chunk `column` (its first path element) in row group 0.
fn num_values(w: &Walk, column: &str) -> Int {
    let (chunk, _) = w
        .bins
        .iter()
        .find(|(p, v)| {
            p.starts_with("4[0].1[") && p.ends_with(".3.3[0]") && v.as_slice() == column.as_bytes()
        })
        .unwrap_or_else(|| panic!("no column chunk `{column}`"));
    let want = format!("{}.5", chunk.trim_end_matches(".3[0]"));
    w.ints.iter().find(|i| i.path == want).unwrap().clone()
}

/// Writes `bytes` as `name` in `dir` and reads it.
fn read_bytes(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> biaslab::Result<biaslab::analyze::embeddings::Embeddings> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    read_embeddings(&p)
}

/// Reads `file` with `column`'s value count set to `value`; the error text.
fn claim(column: &str, value: i64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::read(valid_file(dir.path())).unwrap();
    let w = walk(&file);
    let int = num_values(&w, column);
    // 12 rows; the embeddings' 12 lists of 3 hold 36 values
    let honest = if column == COL_EMBEDDING { 36 } else { 12 };
    assert_eq!(int.value, honest, "the fixture's {column} count");
    match read_bytes(dir.path(), "lying.parquet", &with_int(&file, &int, value)) {
        Ok(e) => panic!("{column} = {value} was read: {} rows", e.len()),
        Err(e) => e.to_string(),
    }
}

fn names_file_and_column(err: &str, column: &str) {
    assert!(
        err.contains("lying.parquet") && err.contains(&format!("column `{column}")),
        "{err}"
    );
}

#[test]
fn the_walker_finds_the_fixtures_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::read(valid_file(dir.path())).unwrap();
    let w = walk(&file);
    assert_eq!(w.ints.iter().find(|i| i.path == "3").unwrap().value, 12);
    for c in [COL_ID, COL_IMAGE_ID, COL_LABEL, COL_DATASET] {
        assert_eq!(num_values(&w, c).value, 12);
    }
    // 12 lists of 3
    assert_eq!(num_values(&w, COL_EMBEDDING).value, 36);
    // Rewriting a value as itself gives the same file.
    let int = num_values(&w, COL_ID);
    assert_eq!(with_int(&file, &int, 12), file);
}

// Issue 23: image_id −5 panicked in analyze/collapse.rs (index out of bounds).
#[test]
fn footer_claiming_minus_five_image_ids_is_an_error_naming_the_column() {
    let err = claim(COL_IMAGE_ID, -5);
    names_file_and_column(&err, COL_IMAGE_ID);
    assert!(
        err.contains("-5 values") && err.contains("cannot be negative"),
        "{err}"
    );
}

// Issue 23: dataset −5 panicked in analyze/embeddings.rs.
#[test]
fn footer_claiming_minus_five_datasets_is_an_error_naming_the_column() {
    names_file_and_column(&claim(COL_DATASET, -5), COL_DATASET);
}

// Issue 23: label −5 panicked in a polars worker thread, then a full report said "label absent".
#[test]
fn footer_claiming_minus_five_labels_is_an_error_not_an_absent_column() {
    let err = claim(COL_LABEL, -5);
    names_file_and_column(&err, COL_LABEL);
    assert!(!err.contains("absent"), "{err}");
}

// Issue 23: id −5 said "no rows in file".
#[test]
fn footer_claiming_minus_five_ids_is_an_error_naming_the_column() {
    let err = claim(COL_ID, -5);
    names_file_and_column(&err, COL_ID);
    assert!(!err.contains("no rows"), "{err}");
}

// A count that is positive but disagrees with the row group's rows.
#[test]
fn footer_claiming_one_column_shorter_than_the_others_is_an_error() {
    let err = claim(COL_IMAGE_ID, 11);
    names_file_and_column(&err, COL_IMAGE_ID);
    assert!(err.contains("11 values for the group's 12 rows"), "{err}");
}

// Issue 23: a count of 2^40 aborted the process ("memory allocation of … bytes failed").
#[test]
fn footer_claiming_two_to_the_forty_values_is_refused_before_allocating() {
    for column in [COL_ID, COL_LABEL] {
        names_file_and_column(&claim(column, 1 << 40), column);
    }
    // A list column may hold more values than rows, so its claim is held against the file's size.
    let err = claim(COL_EMBEDDING, 1 << 40);
    assert!(
        err.contains("lying.parquet")
            && err.contains("more than a")
            && err.contains("byte file may claim"),
        "{err}"
    );
}

// Every count the footer has agreeing on 2^40 rows: consistent, but not from a file this size.
#[test]
fn footer_claiming_two_to_the_forty_rows_everywhere_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::read(valid_file(dir.path())).unwrap();
    loop {
        // rewrite one count at a time (each rewrite moves the bytes after it), 12 → 2^40, 36 → 3·2^40
        let w = walk(&file);
        let next = w.ints.iter().find(|i| {
            (i.path == "3" || i.path == "4[0].3" || i.path.ends_with(".3.5"))
                && (i.value == 12 || i.value == 36)
        });
        let Some(int) = next else { break };
        let value = if int.value == 36 { 3 << 40 } else { 1 << 40 };
        file = with_int(&file, int, value);
    }
    let err = read_bytes(dir.path(), "lying.parquet", &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lying.parquet") && err.contains("1099511627776 rows") && err.contains("TiB"),
        "{err}"
    );
}

// Issue 23: `emb.parquet ./emb.parquet 'em*.parquet'` pooled one file three times.
#[test]
fn one_file_given_three_ways_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid_file(dir.path());
    let e = read_many(&[
        p.clone(),
        dir.path().join(".").join("emb.parquet"),
        dir.path().join("em*.parquet"),
    ])
    .unwrap();
    assert_eq!((e.len(), e.files.len()), (12, 1));
    assert!(
        e.notes.iter().any(|n| n.contains("given 3 times")),
        "{:?}",
        e.notes
    );
}

/// Reads `bytes`; when they read, runs the cheap analyses on every row: they too must not panic.
fn read_and_analyse(dir: &Path, bytes: &[u8]) {
    if let Ok(e) = read_bytes(dir, "m.parquet", bytes) {
        let rows: Vec<usize> = (0..e.len()).collect();
        let _ = spectrum::spectrum(&e, &rows, "m");
        let _ = uniformity::uniformity(&e, &rows, 0, "m");
    }
}

/// Values a lying varint takes: signs, zero, off-by-one, and sizes no small file can hold.
fn hostile(v: i64) -> [i64; 10] {
    [
        -5,
        -1,
        0,
        v.saturating_sub(1),
        v.saturating_add(1),
        i32::MAX as i64,
        1 << 40,
        i64::MAX,
        i64::MIN,
        v.saturating_mul(2),
    ]
}

// Issue 23: every varint of the footer perturbed (the "property tests: mutated footers").
#[test]
fn every_integer_of_the_footer_set_to_hostile_values_reads_or_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::read(valid_file(dir.path())).unwrap();
    let w = walk(&file);
    assert!(w.ints.len() > 50, "{} integers", w.ints.len());
    for int in &w.ints {
        for v in hostile(int.value) {
            read_and_analyse(dir.path(), &with_int(&file, int, v));
        }
    }
}

fn fixture_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::read(valid_file(dir.path())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // Any byte of the footer (the Thrift metadata before the last 8 bytes) set to any value.
    #[test]
    fn any_footer_byte_perturbed_reads_or_fails_cleanly(at in any::<prop::sample::Index>(), v in any::<u8>()) {
        let file = fixture_bytes();
        let range = footer_range(&file);
        let mut b = file.clone();
        b[range.start + at.index(range.len())] = v;
        let dir = tempfile::tempdir().unwrap();
        read_and_analyse(dir.path(), &b);
    }

    // Up to four integers of the footer set to arbitrary values at once.
    #[test]
    fn footer_integers_set_to_arbitrary_values_read_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<i64>()), 1..5)
    ) {
        let mut file = fixture_bytes();
        for (at, v) in edits {
            let w = walk(&file);
            let int = &w.ints[at.index(w.ints.len())];
            file = with_int(&file, int, v);
        }
        let dir = tempfile::tempdir().unwrap();
        read_and_analyse(dir.path(), &file);
    }
}
