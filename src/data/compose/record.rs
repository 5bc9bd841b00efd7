//! What a composed set records about how it was made — `compose.json`: the settings it was asked for and
//! the algorithm version that turned them into bytes — and the reuse check that reads it back, so a later
//! `compose` never hands out sets made otherwise than asked.
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{ComposeConfig, ObjectBackground};
use crate::data::index::read_index;
use crate::error::{Error, IoContext, Result};

/// The settings a composed set was built with, in each of its four folders: a later `compose` reuses the
/// set only when asked for the same settings, by an algorithm that makes the same bytes of them.
pub const COMPOSE_FILE: &str = "compose.json";

/// The version of the image-making code, recorded in `compose.json` as `"algorithm"`. Bump it whenever the
/// composed bytes (images, masks, annotations, index rows) of some settings change, pin the new golden
/// hash in tests/compose_version.rs, and update [`unchanged_since`].
///
/// 1. Object-centric images on a flat colour or a heavily blurred background crop; scenes on sharp crops.
///    Every set composed before `compose.json` recorded a version.
/// 2. Adds the `sharp-crops` object background rule and the object background pool
///    (`object_backgrounds`); `flat-or-blur` and scenes are composed byte for byte as by version 1.
pub const ALGORITHM: u32 = 2;

/// The version of a set whose `compose.json` has no `algorithm` (or that has no `compose.json`).
const UNRECORDED: u32 = 1;

const ALGORITHM_KEY: &str = "algorithm";

/// The oldest algorithm version whose output for `cfg` is byte-identical to this version's: sets recorded
/// with a version from there up to [`ALGORITHM`] are reused, older or newer ones refused.
pub fn unchanged_since(cfg: &ComposeConfig) -> u32 {
    match cfg.object_background {
        ObjectBackground::FlatOrBlur => 1,
        ObjectBackground::SharpCrops => 2,
    }
}

/// Settings keys added after version 1, with the value a `compose.json` written without them meant.
fn implicit_in_version_1() -> [(&'static str, Value); 2] {
    [
        (
            "object_background",
            json!(ObjectBackground::FlatOrBlur.name()),
        ),
        ("object_backgrounds", Value::Null),
    ]
}

fn asked_settings(cfg: &ComposeConfig) -> Result<serde_json::Map<String, Value>> {
    let v = serde_json::to_value(ComposeConfig {
        force: false,
        ..cfg.clone()
    })
    .map_err(|e| Error::Invalid(format!("compose settings: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(Error::Invalid(format!(
            "compose settings serialise to {other}, not a table"
        ))),
    }
}

/// The bytes of `compose.json` for sets composed now from `cfg`: its settings and [`ALGORITHM`].
pub(super) fn record_bytes(cfg: &ComposeConfig) -> Result<Vec<u8>> {
    let mut m = asked_settings(cfg)?;
    m.insert(ALGORITHM_KEY.into(), json!(ALGORITHM));
    serde_json::to_vec_pretty(&Value::Object(m))
        .map_err(|e| Error::Invalid(format!("compose settings: {e}")))
}

/// The algorithm version a composed set at `dir` was made by ([`UNRECORDED`] = 1 when its `compose.json`
/// is missing or predates the field), for provenance.
pub fn recorded_algorithm(dir: &Path) -> Result<u32> {
    let file = dir.join(COMPOSE_FILE);
    if !file.is_file() {
        return Ok(UNRECORDED);
    }
    version_of(&file, &read_record(&file)?)
}

fn read_record(file: &Path) -> Result<Value> {
    let bytes = std::fs::read(file).ctx_io(file)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(file, e.to_string()))
}

fn version_of(file: &Path, was: &Value) -> Result<u32> {
    match was.get(ALGORITHM_KEY) {
        None => Ok(UNRECORDED),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Error::format(
                    file,
                    format!("`{ALGORITHM_KEY}` is {v}, not a version number"),
                )
            }),
    }
}

/// What differs between the recorded settings `was` and the asked ones, one "key was X, asked Y" each.
/// Keys a version-1 record lacks count as version 1's meaning; recorded keys this biaslab does not know
/// (a newer one wrote them) count as differences: refusing costs a rebuild, reusing could cost a result.
fn differences(asked: &serde_json::Map<String, Value>, was: &Value) -> Vec<String> {
    let implicit = implicit_in_version_1();
    let recorded = |k: &str| {
        was.get(k).cloned().or_else(|| {
            implicit
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        })
    };
    let mut diffs: Vec<String> = asked
        .iter()
        .filter(|(k, v)| recorded(k).as_ref() != Some(*v))
        .map(|(k, v)| {
            let old = recorded(k).map_or("absent".into(), |o| o.to_string());
            format!("{k} was {old}, asked {v}")
        })
        .collect();
    if let Some(m) = was.as_object() {
        diffs.extend(
            m.iter()
                .filter(|(k, _)| k.as_str() != ALGORITHM_KEY && !asked.contains_key(k.as_str()))
                .map(|(k, v)| format!("{k} was {v}, unknown to this biaslab")),
        );
    }
    diffs
}

/// Refuses to reuse composed sets built with other settings than `cfg` (a demo upgraded from 400 to 2,000
/// images would otherwise train on the old 400 without a word), or by an algorithm version that makes
/// other bytes of them. Sets written before `compose.json` existed are version 1 and checked by their
/// image counts (and must have been asked for version 1's only rule).
pub(super) fn check_present(cfg: &ComposeConfig, finals: &[PathBuf]) -> Result<()> {
    let asked = asked_settings(cfg)?;
    let rebuild = format!(
        "pass --force to rebuild it (a `[prepare.compose]` table: delete the four {}-* folders), or \
         choose another --prefix",
        cfg.prefix
    );
    let stale = |dir: &Path, why: String| {
        Error::Invalid(format!(
            "{}: composed with other settings ({why}); {rebuild}",
            dir.display()
        ))
    };
    let since = unchanged_since(cfg);
    for dir in finals {
        let file = dir.join(COMPOSE_FILE);
        if !file.is_file() {
            continue;
        }
        let was = read_record(&file)?;
        let version = version_of(&file, &was)?;
        let diffs = differences(&asked, &was);
        if !(since..=ALGORITHM).contains(&version) {
            let also = if diffs.is_empty() {
                String::new()
            } else {
                format!("; its settings differ too ({})", diffs.join(", "))
            };
            return Err(Error::Invalid(format!(
                "{}: composed by algorithm version {version}, this biaslab composes version {ALGORITHM} \
                 (object_background = {} is composed as now since version {since}){also}; rebuild with \
                 --force (a `[prepare.compose]` table: delete the four {}-* folders), or choose another \
                 --prefix",
                dir.display(),
                cfg.object_background,
                cfg.prefix
            )));
        }
        if !diffs.is_empty() {
            return Err(stale(dir, diffs.join(", ")));
        }
    }
    if finals.iter().all(|d| !d.join(COMPOSE_FILE).is_file()) {
        // older sets: version 1's rule and pool, objects train + test hold n_object images, scenes n_scene
        let v1: Vec<String> = implicit_in_version_1()
            .into_iter()
            .filter(|(k, v)| asked.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k} was {v}, asked {}",
                    asked.get(k).unwrap_or(&Value::Null)
                )
            })
            .collect();
        if !v1.is_empty() {
            return Err(stale(
                &finals[0],
                format!("a set from before compose.json: {}", v1.join(", ")),
            ));
        }
        let count = |d: &PathBuf| read_index(d).map(|r| r.len());
        for (pair, n) in [(&finals[..2], cfg.n_object), (&finals[2..], cfg.n_scene)] {
            let have = count(&pair[0])? + count(&pair[1])?;
            if have != n {
                return Err(stale(
                    &pair[0],
                    format!("{have} images in train + test, asked {n}"),
                ));
            }
        }
    }
    Ok(())
}
