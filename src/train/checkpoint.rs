//! Checkpoints: model variables + LARS momentum buffers + queue as one safetensors file, epoch/step/RNG
//! state + config as JSON, both in a directory written under a temporary name and renamed into place, then
//! published by atomically rewriting `run_dir/latest`. A crash at any point leaves the last good checkpoint.
//! Each checkpoint also holds the metrics of every step it covers (`history.parquet`), so a run killed
//! after a mid-epoch checkpoint resumes with its metrics complete; temporaries a killed writer left behind
//! are removed when the next session starts (`remove_stale_temporaries`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Error, IoContext, Result};
use crate::report::io::write_bytes_atomic;
use crate::train::config::TrainConfig;
use crate::train::loss_scale::LossScaler;
use crate::train::metrics::{history_frame, rows_from_frame, StepMetrics};

// The run contract (file names, `latest`) is owned by `run_dir`; re-exported for the writers here.
pub use crate::run_dir::{
    latest_dir, CONFIG_FILE, HISTORY_FILE, LATEST_FILE, META_FILE, TENSORS_FILE,
};
/// Name prefix of a checkpoint being written; one that outlives its writer is garbage.
pub const TMP_PREFIX: &str = ".tmp-ckpt-";

/// Everything but the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    /// Epoch to continue in (0-based) and steps already done in it.
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// Global steps done.
    pub step: usize,
    /// RNG state: randomness is counter-based, drawn from (seed, epoch, index), so the seed plus the
    /// position above is the whole state.
    pub seed: u64,
    pub queue_in_use: bool,
    /// The fp16 loss scaler's state (CUDA with `use_fp16` only).
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    pub config: TrainConfig,
    /// Names of every tensor in the safetensors file.
    pub tensors: Vec<String>,
}

/// Writes a checkpoint (with the metrics `history` of the steps it covers) and makes it the latest; removes
/// older checkpoint directories after the switch.
pub fn save(
    run_dir: &Path,
    meta: &CheckpointMeta,
    tensors: &BTreeMap<String, Tensor>,
    history: &[StepMetrics],
) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir).ctx_io(run_dir)?;
    let name = format!("checkpoint-{:08}", meta.step);
    let final_dir = run_dir.join(&name);
    let tmp = crate::report::io::shared_builder(TMP_PREFIX, crate::report::io::DIR_MODE)
        .tempdir_in(run_dir)
        .ctx_io(run_dir)?;
    let tpath = tmp.path().join(TENSORS_FILE);
    let named: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&named, &tpath)
        .map_err(|e| Error::tch(format!("writing {}", tpath.display()), e))?;
    let mut meta = meta.clone();
    meta.tensors = tensors.keys().cloned().collect();
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::Invalid(format!("serialising checkpoint meta: {e}")))?;
    write_bytes_atomic(&tmp.path().join(META_FILE), &json)?;
    let mut hist = history_frame(history)?;
    crate::report::io::write_parquet(&mut hist, &tmp.path().join(HISTORY_FILE))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).ctx_io(&final_dir)?;
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, &final_dir).ctx_io(&final_dir)?;
    write_bytes_atomic(&run_dir.join(LATEST_FILE), name.as_bytes())?;
    // Older checkpoints are only removed once `latest` points at the new one.
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("checkpoint-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(final_dir)
}

/// Loads the latest checkpoint: meta and tensors, checking that every name the meta lists is present.
pub fn load(run_dir: &Path) -> Result<(CheckpointMeta, BTreeMap<String, Tensor>)> {
    let dir = latest_dir(run_dir)?;
    let mpath = dir.join(META_FILE);
    let bytes = std::fs::read(&mpath).ctx_io(&mpath)?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&bytes).map_err(|e| Error::format(&mpath, e.to_string()))?;
    let tpath = dir.join(TENSORS_FILE);
    if !tpath.exists() {
        return Err(Error::format(&tpath, "missing tensor file"));
    }
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&tpath)
        .map_err(|e| Error::tch(format!("reading {}", tpath.display()), e))?
        .into_iter()
        .collect();
    let missing: Vec<&str> = meta
        .tensors
        .iter()
        .filter(|n| !tensors.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Error::format(
            &tpath,
            format!("missing tensors: {}", missing.join(", ")),
        ));
    }
    Ok((meta, tensors))
}

/// The metrics history stored with the latest checkpoint; `None` for checkpoints written before it was
/// stored (the caller then falls back to `metrics.parquet`).
pub fn load_history(run_dir: &Path) -> Result<Option<Vec<StepMetrics>>> {
    let path = latest_dir(run_dir)?.join(HISTORY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let df = crate::report::io::read_parquet(&path)?;
    rows_from_frame(&df).map(Some)
}

/// Removes checkpoint directories a killed writer left half-written (`.tmp-ckpt-*`); returns their names.
/// Only call this while holding the run's lock (`run_lock`), so no live writer owns them.
pub fn remove_stale_temporaries(run_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(run_dir, e)),
    };
    for e in entries {
        let e = e.ctx_io(run_dir)?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(TMP_PREFIX) {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).ctx_io(&p)?;
            } else {
                std::fs::remove_file(&p).ctx_io(&p)?;
            }
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Copies `src[name]` into each `dst` tensor in place; every name in `dst` must be in `src`. Errors list the
/// missing names (sorted; the first 40 and the count when there are more) and any shape mismatch.
pub fn copy_into(
    origin: &Path,
    src: &BTreeMap<String, Tensor>,
    dst: &[(String, Tensor)],
) -> Result<()> {
    let mut missing: Vec<&str> = dst
        .iter()
        .filter(|(n, _)| !src.contains_key(n))
        .map(|(n, _)| n.as_str())
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        // A wrong architecture misses hundreds; the first ones and the count say enough.
        const SHOWN: usize = 40;
        let more = if missing.len() > SHOWN {
            format!(" … ({} in all)", missing.len())
        } else {
            String::new()
        };
        return Err(Error::format(
            origin,
            format!(
                "missing tensors: {}{more}",
                missing[..missing.len().min(SHOWN)].join(", ")
            ),
        ));
    }
    tch::no_grad(|| {
        for (n, t) in dst {
            let s = &src[n];
            if s.size() != t.size() {
                return Err(Error::format(
                    origin,
                    format!(
                        "tensor {n}: shape {:?} in file, {:?} expected",
                        s.size(),
                        t.size()
                    ),
                ));
            }
            let mut t = t.shallow_clone();
            t.copy_(s);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_are_removed_and_checkpoints_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".tmp-ckpt-abc")).unwrap();
        std::fs::write(d.path().join(".tmp-ckpt-abc/state.safetensors"), b"half").unwrap();
        std::fs::create_dir(d.path().join("checkpoint-00000002")).unwrap();
        let removed = remove_stale_temporaries(d.path()).unwrap();
        assert_eq!(removed, vec![".tmp-ckpt-abc".to_string()]);
        assert!(!d.path().join(".tmp-ckpt-abc").exists());
        assert!(d.path().join("checkpoint-00000002").is_dir());
        assert!(remove_stale_temporaries(&d.path().join("absent"))
            .unwrap()
            .is_empty());
    }
}
