//! File and directory names made from values a user chose (dataset names, experiment axes): safe for any
//! file system, unique by construction and bounded in length, in one place for reports and cell directories.
use sha2::{Digest, Sha256};

/// Hex digits of the hash that makes a changed name unique (32 bits: a collision among one report's or one
/// grid's values is a one-in-a-billion event per pair).
const HASH_HEX: usize = 8;

/// `value` with every character but ASCII letters, digits, `-` and `_` replaced by `_`.
pub fn safe_name(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `value` itself when it is non-empty, already safe, at most `max` bytes and `fits` says so; otherwise its
/// safe form cut to `max − 9` bytes, a `-` and the first 8 hex digits of the SHA-256 of `value` as written.
/// So `a/b`, `a_b` and `a b` give three names, and no value gives a name longer than `max`.
pub fn unique_name(value: &str, max: usize, fits: impl Fn(&str) -> bool) -> String {
    let safe = safe_name(value);
    if safe == value && !value.is_empty() && value.len() <= max && fits(value) {
        return safe;
    }
    let h = Sha256::digest(value.as_bytes());
    let hex: String = h[..HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // `safe` is ASCII, so any byte index is a character boundary
    let keep = safe.len().min(max.saturating_sub(HASH_HEX + 1));
    format!("{}-{hex}", &safe[..keep])
}
