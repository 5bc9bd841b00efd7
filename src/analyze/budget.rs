//! How much memory an analysis input may make `analyze` allocate, in one place: what a Parquet file's
//! footer may claim its columns decode to, and what one analysis may hold in dense matrices. Readers and
//! analyses check their plan against these before they allocate, and refuse with the size they would
//! need, so a hostile or damaged file (or a shape no machine can hold) is an error, never an abort.
use crate::error::{Error, Result};

/// Decoded bytes a Parquet file's footer may claim per byte of the file. Far above the checkpoint
/// readers' 8× (`interop::torch_file::BUDGET_PER_FILE_BYTE`): Parquet's dictionary and run-length encodings
/// store a constant column, such as the embeddings of a collapsed model (what `analyze` exists to
/// find), in a few bytes per page, so honest files decode to hundreds of times their size.
pub const DECODED_PER_FILE_BYTE: u64 = 1024;

/// Bytes any one analysis may hold in dense matrices (spectrum's d×d or n×n Gram matrices and their
/// partial sums), and the floor of [`decoded_budget`]: any file may claim this much. 4 GiB, the budget
/// `blocks::BLOCK_ELEMS` is sized for: a d = 4096 covariance with its partial sums takes 2.8 GiB.
pub const MEMORY_BYTES: u64 = 4 << 30;

/// Bytes a Parquet file of `file_len` bytes may claim its read columns decode to.
pub fn decoded_budget(file_len: u64) -> u64 {
    file_len
        .saturating_mul(DECODED_PER_FILE_BYTE)
        .max(MEMORY_BYTES)
}

/// `bytes` in the unit a person reads (TiB, GiB, MiB, KiB or bytes), for the refusals below.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

/// Ok when `needed` fits the analysis memory budget, else an error saying what would need how much.
pub fn check_memory(what: &str, needed: u64) -> Result<()> {
    if needed <= MEMORY_BYTES {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{what} would need {} ({needed} bytes), more than the {} analyses may allocate",
        human(needed),
        human(MEMORY_BYTES)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_the_file_above_its_floor() {
        assert_eq!(decoded_budget(0), MEMORY_BYTES);
        assert_eq!(decoded_budget(1 << 30), 1 << 40);
        assert_eq!(decoded_budget(u64::MAX), u64::MAX);
        assert_eq!(human(80_000_800_000), "74.5 GiB");
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(3 << 40), "3.0 TiB");
        let err = check_memory("spectrum `g`", 80_000_800_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("74.5 GiB") && err.contains("4.0 GiB"), "{err}");
    }
}
