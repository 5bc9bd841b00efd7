//! `import`: a PyTorch checkpoint (torchvision ResNet state dict, the SwAV release, a `main_swav.py`
//! checkpoint with `state_dict`/`optimizer`, or a safetensors file) becomes a run directory that `embed`,
//! `eval` and `invariance` load like one of ours. Every backbone parameter must be in the file; the
//! projection head and prototypes are taken when present, and `import.json` says what came from where.
//! Anything else in the state dict (non-tensor entries, tensors no part of the model takes, such as the
//! extra blocks of a deeper ResNet) is refused unless the caller allows it; torchvision's classifier `fc.*`
//! and BatchNorm's batch counters are expected and always accepted.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::data::fetch::sha256_file;
use crate::error::{Error, IoContext, Result};
use crate::interop::torch_file::TorchFile;
use crate::model::config::Arch;
use crate::report::io::write_bytes_atomic;
use crate::train::checkpoint::{self, LATEST_FILE};
use crate::train::{TrainConfig, Trainer};

pub use crate::run_dir::{ImportRecord, IMPORT_FILE};

/// PyTorch BatchNorm's batch counter; tch's BatchNorm has none.
const BN_COUNTER: &str = ".num_batches_tracked";

/// Keys under which training scripts nest the model's state dict (SwAV/MoCo `state_dict`, others `model`).
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// torchvision's classifier: a backbone import leaves it out by design.
const CLASSIFIER_PREFIX: &str = "fc.";

/// Names listed in an error before "and N more" (a hostile file may hold millions).
const LISTED_NAMES: usize = 40;

/// The named tensors of a checkpoint, and where in the file they were.
#[derive(Debug)]
pub struct StateDict {
    pub tensors: BTreeMap<String, Tensor>,
    /// "torch zip", "torch legacy" or "safetensors".
    pub format: String,
    /// The dict key the state dict was nested under, if any.
    pub nested_under: Option<String>,
    /// Entries of that dict that were not tensors (their keys; a non-string key is shown by its type).
    pub non_tensors: Vec<String>,
}

/// `names` as one line, the first [`LISTED_NAMES`] of them.
fn list_names(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(LISTED_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_NAMES {
        s.push_str(&format!(" and {} more", names.len() - LISTED_NAMES));
    }
    s
}

/// Checks a safetensors header before tch reads the file: tch turns each dimension into an `i64` with
/// `as`, so a dimension above `i64::MAX` (possible beside a zero one, which keeps the byte count valid)
/// would reach libtorch negative. The safetensors crate checks offsets and byte counts itself.
fn check_safetensors_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |reason: String| Error::format(path, format!("safetensors header: {reason}"));
    let mut f = std::fs::File::open(path).ctx_io(path)?;
    let file_len = f.metadata().ctx_io(path)?.len();
    let mut head = [0u8; 8];
    f.read_exact(&mut head)
        .map_err(|_| bad("shorter than 8 bytes".into()))?;
    let n = u64::from_le_bytes(head);
    if n > file_len - 8 {
        return Err(bad(format!(
            "declares {n} bytes, the file has {}",
            file_len - 8
        )));
    }
    let mut json = Vec::new();
    f.take(n).read_to_end(&mut json).ctx_io(path)?;
    let header: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    let entries = header
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let Some(shape) = info.get("shape").and_then(|s| s.as_array()) else {
            continue; // the safetensors crate names what is missing
        };
        if shape.len() > crate::interop::torch_file::MAX_DIMS {
            return Err(bad(format!(
                "{name}: {} dimensions, at most {}",
                shape.len(),
                crate::interop::torch_file::MAX_DIMS
            )));
        }
        if shape
            .iter()
            .any(|d| d.as_u64().is_some_and(|d| d > i64::MAX as u64))
        {
            return Err(bad(format!("{name}: a dimension above 2^63")));
        }
    }
    Ok(())
}

/// Reads the state dict of `path`, strips DDP's `module.` prefix and the reference's single-linear head
/// name (`projection_head.weight` → `projection_head.0.weight`, as biaslab names it).
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    let (raw, format, nested_under, non_tensors) = if is_st {
        check_safetensors_header(path)?;
        let t = Tensor::read_safetensors(path)
            .map_err(|e| Error::tch(format!("reading {}", path.display()), e))?;
        (t, "safetensors".to_string(), None, Vec::new())
    } else {
        let file = TorchFile::read(path)?;
        let root = file.root.dict_entries().ok_or_else(|| {
            Error::format(
                path,
                "the saved object is not a dict (a state dict was expected)",
            )
        })?;
        let nested = root.iter().find_map(|(k, v)| {
            let k = k.as_str()?;
            (NESTED_KEYS.contains(&k) && v.is_dict()).then(|| (k.to_string(), v))
        });
        let (dict, nested_under) = match nested {
            Some((k, v)) => (v.dict_entries().unwrap_or_default(), Some(k)),
            None => (root, None),
        };
        let mut tensors = Vec::new();
        let mut non_tensors = Vec::new();
        for (k, v) in &dict {
            let Some(name) = k.as_str() else {
                non_tensors.push(format!("<{} key>", k.kind()));
                continue;
            };
            match file.tensor(v) {
                Some(Ok(t)) => tensors.push((name.to_string(), t)),
                Some(Err(reason)) => return Err(Error::format(path, format!("{name}: {reason}"))),
                None => non_tensors.push(name.to_string()),
            }
        }
        (
            tensors,
            file.format.name().to_string(),
            nested_under,
            non_tensors,
        )
    };
    let mut tensors = BTreeMap::new();
    for (name, t) in raw {
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        let name = match name.as_str() {
            "projection_head.weight" | "projection_head.bias" => {
                name.replacen("projection_head.", "projection_head.0.", 1)
            }
            _ => name,
        };
        let t = if t.is_floating_point() && t.kind() != Kind::Float {
            t.to_kind(Kind::Float)
        } else {
            t
        };
        if tensors.insert(name.clone(), t).is_some() {
            return Err(Error::format(
                path,
                format!("{name} appears twice (with and without `module.`)"),
            ));
        }
    }
    if tensors.is_empty() {
        return Err(Error::format(path, "no tensors in the state dict"));
    }
    Ok(StateDict {
        tensors,
        format,
        nested_under,
        non_tensors,
    })
}

fn shape(sd: &StateDict, name: &str) -> Option<Vec<i64>> {
    sd.tensors.get(name).map(Tensor::size)
}

/// The model config the file's shapes describe: stem (width, 3×3 small-image stem or 7×7), projection
/// head (hidden width, output dimension) and prototype counts; reference defaults where the file has none.
pub fn model_config_of(sd: &StateDict, arch: Arch, origin: &Path) -> Result<TrainConfig> {
    // torchvision's stem when the file has none: the missing-names check then says what else is absent
    let stem = shape(sd, "conv1.weight").unwrap_or_else(|| vec![64, 3, 7, 7]);
    let mut cfg = TrainConfig {
        arch,
        width: stem[0],
        small_images: stem.get(2) == Some(&3),
        // The paper's crops: 2×224 + 6×96; `embed` evaluates at the first size.
        crops: crate::augment::CropRecipe {
            nmb_crops: vec![2, 6],
            size_crops: vec![224, 96],
            ..Default::default()
        },
        // main_swav.py defaults for what the file does not carry
        hidden_mlp: 2048,
        feat_dim: 128,
        nmb_prototypes: vec![3000],
        ..TrainConfig::default()
    };
    match (
        shape(sd, "projection_head.0.weight"),
        shape(sd, "projection_head.3.weight"),
    ) {
        (Some(first), Some(last)) => {
            cfg.hidden_mlp = first[0];
            cfg.feat_dim = last[0];
        }
        (Some(only), None) => {
            cfg.hidden_mlp = 0;
            cfg.feat_dim = only[0];
        }
        _ => {}
    }
    if let Some(p) = shape(sd, "prototypes.weight") {
        cfg.nmb_prototypes = vec![p[0]];
        cfg.feat_dim = p[1];
    } else {
        let multi: Vec<i64> = (0..)
            .map_while(|i| shape(sd, &format!("prototypes.prototypes{i}.weight")))
            .map(|s| s[0])
            .collect();
        if !multi.is_empty() {
            cfg.nmb_prototypes = multi;
        }
    }
    cfg.validate(&origin.display().to_string())?;
    Ok(cfg)
}

/// Imports `from` as an `arch` model into the run directory `out`. A run already there is refused, except
/// an earlier import with `force` (a trained run's metrics and logs are never overwritten). Fails listing
/// every backbone name missing from the file, and every entry of the state dict that is not a tensor or
/// that no part of the model takes (torchvision's `fc.*` excepted).
pub fn import_checkpoint(from: &Path, arch: Arch, out: &Path, force: bool) -> Result<ImportRecord> {
    import_checkpoint_with(from, arch, out, force, false)
}

/// [`import_checkpoint`], with `allow_unexpected` importing despite unexpected entries (recorded in
/// [`ImportRecord::unexpected`]).
pub fn import_checkpoint_with(
    from: &Path,
    arch: Arch,
    out: &Path,
    force: bool,
    allow_unexpected: bool,
) -> Result<ImportRecord> {
    if out.join(LATEST_FILE).exists() {
        let imported = out.join(IMPORT_FILE).exists();
        if !(force && imported) {
            return Err(Error::format(
                out,
                if imported {
                    "already holds an imported run (pass --force to replace it)"
                } else {
                    "already holds a trained run; import into another directory"
                },
            ));
        }
    }
    let sd = read_state_dict(from)?;
    let cfg = model_config_of(&sd, arch, from)?;
    let mut trainer = Trainer::new(cfg, Device::Cpu)?;
    let vars = trainer.var_store().variables();
    let part = |prefix: &str| -> Vec<(String, Tensor)> {
        vars.iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    };
    let backbone: Vec<(String, Tensor)> = vars
        .iter()
        .filter(|(n, _)| !n.starts_with("projection_head") && !n.starts_with("prototypes"))
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    checkpoint::copy_into(from, &sd.tensors, &backbone).map_err(|e| match e {
        Error::Format { path, reason } => Error::Format {
            path,
            reason: format!(
                "{reason}; does the file hold a {}?",
                format!("{arch:?}").to_lowercase()
            ),
        },
        other => other,
    })?;
    let mut used: BTreeSet<String> = backbone.iter().map(|(n, _)| n.clone()).collect();
    // The head and the prototypes are each taken whole or not at all.
    let mut take = |prefix: &str| -> Result<bool> {
        if !sd.tensors.keys().any(|n| n.starts_with(prefix)) {
            return Ok(false);
        }
        let dst = part(prefix);
        checkpoint::copy_into(from, &sd.tensors, &dst)?;
        used.extend(dst.into_iter().map(|(n, _)| n));
        Ok(true)
    };
    let projection_head = take("projection_head.")?;
    let prototypes = take("prototypes.")?;
    let unused: Vec<String> = sd
        .tensors
        .keys()
        .filter(|n| !used.contains(*n) && !n.ends_with(BN_COUNTER))
        .cloned()
        .collect();
    let unexpected: Vec<String> = sd
        .non_tensors
        .iter()
        .map(|n| format!("{n} (not a tensor)"))
        .chain(
            unused
                .iter()
                .filter(|n| !n.starts_with(CLASSIFIER_PREFIX))
                .cloned(),
        )
        .collect();
    if !unexpected.is_empty() && !allow_unexpected {
        let arch_name = format!("{arch:?}").to_lowercase();
        return Err(Error::format(
            from,
            format!(
                "{} unexpected entries in the state dict: {}; is it a deeper model than {arch_name}, \
                 or more than a model? (--allow-unexpected imports anyway)",
                unexpected.len(),
                list_names(&unexpected)
            ),
        ));
    }
    // An imported model is finished: `train --resume` on it has nothing left to do.
    trainer.mark_finished();
    let record = ImportRecord {
        source: from.to_path_buf(),
        sha256: sha256_file(from)?,
        format: sd.format.clone(),
        nested_under: sd.nested_under.clone(),
        arch,
        backbone_tensors: backbone.len(),
        projection_head,
        prototypes,
        unused,
        bn_batch_counters: sd
            .tensors
            .keys()
            .filter(|n| n.ends_with(BN_COUNTER))
            .count(),
        non_tensor_entries: sd.non_tensors.len(),
        unexpected,
    };
    std::fs::create_dir_all(out).ctx_io(out)?;
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::Invalid(format!("serialising the import record: {e}")))?;
    // The record first: `latest`, written last by save_checkpoint, is what makes the run exist.
    write_bytes_atomic(&out.join(IMPORT_FILE), &json)?;
    let cfg_json = serde_json::to_vec_pretty(trainer.config())
        .map_err(|e| Error::Invalid(format!("serialising config: {e}")))?;
    write_bytes_atomic(&out.join(checkpoint::CONFIG_FILE), &cfg_json)?;
    trainer.save_checkpoint(out)?;
    Ok(record)
}
