//! Reads the tensors of a `torch.save` file without Python: the zip format (PyTorch ≥ 1.6: `<name>/data.pkl`
//! plus one `<name>/data/<key>` entry per storage) and the legacy format (several pickles back to back, then
//! the raw storages; what the 2020 SwAV release and older torchvision weights use). Tensors are rebuilt from
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` records; nothing is executed.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, IoContext, Result};
use crate::interop::pickle::{self, Value};

/// `torch.save`'s legacy magic number and protocol version (torch/serialization.py).
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// A storage a pickle refers to by persistent id.
#[derive(Debug, Clone)]
struct StorageRef {
    kind: Kind,
    key: String,
    numel: usize,
}

/// Which of torch's two on-disk layouts a file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    Zip,
    Legacy,
}

impl TorchFormat {
    pub fn name(self) -> &'static str {
        match self {
            TorchFormat::Zip => "torch zip",
            TorchFormat::Legacy => "torch legacy",
        }
    }
}

/// A parsed `torch.save` file: the pickled object tree and its storages as flat tensors.
pub struct TorchFile {
    pub format: TorchFormat,
    pub root: Value,
    storages: Vec<Tensor>,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("format", &self.format)
            .field("storages", &self.storages.len())
            .finish()
    }
}

fn storage_kind(name: &str) -> Option<(Kind, usize)> {
    Some(match name {
        "torch.FloatStorage" => (Kind::Float, 4),
        "torch.DoubleStorage" => (Kind::Double, 8),
        "torch.HalfStorage" => (Kind::Half, 2),
        "torch.BFloat16Storage" => (Kind::BFloat16, 2),
        "torch.LongStorage" => (Kind::Int64, 8),
        "torch.IntStorage" => (Kind::Int, 4),
        "torch.ShortStorage" => (Kind::Int16, 2),
        "torch.CharStorage" => (Kind::Int8, 1),
        "torch.ByteStorage" => (Kind::Uint8, 1),
        "torch.BoolStorage" => (Kind::Bool, 1),
        _ => return None,
    })
}

fn element_size(kind: Kind) -> usize {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

/// Parses the persistent id `('storage', torch.FloatStorage, key, location, numel[, view])`.
fn storage_ref(pid: &Value) -> std::result::Result<StorageRef, String> {
    let items = pid.items().ok_or("persistent id is not a tuple")?;
    if items.len() < 5 || items[0].as_str() != Some("storage") {
        return Err("persistent id is not a torch storage record".into());
    }
    let ty = items[1]
        .global_name()
        .ok_or("storage type is not a class name")?;
    let (kind, _) = storage_kind(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
    let key = items[2]
        .as_str()
        .ok_or("storage key is not a string")?
        .to_string();
    let numel = items[4]
        .as_int()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("storage size is not a count")?;
    if items.len() > 5 && !matches!(items[5], Value::None) {
        return Err("storage views (PyTorch < 0.4 files) are not supported".into());
    }
    Ok(StorageRef { kind, key, numel })
}

fn storage_tensor(path: &Path, r: &StorageRef, bytes: &[u8]) -> Result<Tensor> {
    let need = r.numel * element_size(r.kind);
    if bytes.len() < need {
        return Err(Error::format(
            path,
            format!(
                "storage {} holds {} bytes, {} expected",
                r.key,
                bytes.len(),
                need
            ),
        ));
    }
    Ok(Tensor::from_data_size(
        &bytes[..need],
        &[r.numel as i64],
        r.kind,
    ))
}

impl TorchFile {
    /// Reads `path`, telling the two formats apart by their first bytes.
    pub fn read(path: &Path) -> Result<TorchFile> {
        let bytes = std::fs::read(path).ctx_io(path)?;
        if bytes.starts_with(b"PK\x03\x04") {
            Self::read_zip(path, &bytes)
        } else if bytes.starts_with(&[0x80, 0x02]) {
            Self::read_legacy(path, &bytes)
        } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
            Err(Error::format(
                path,
                "a tar-format torch file (PyTorch < 0.4); load and re-save it with a recent PyTorch",
            ))
        } else {
            Err(Error::format(
                path,
                "not a torch.save file (neither a zip archive nor a pickle)",
            ))
        }
    }

    fn read_zip(path: &Path, bytes: &[u8]) -> Result<TorchFile> {
        let zip_err = |e: zip::result::ZipError| Error::format(path, format!("zip: {e}"));
        let mut ar = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zip_err)?;
        // The archive's top folder is the file stem torch.save was given ("archive" since 2.x).
        let pkl = ar
            .file_names()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| Error::format(path, "zip archive without <name>/data.pkl"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let entry =
            |ar: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str| -> Result<Vec<u8>> {
                let mut f = ar.by_name(name).map_err(zip_err)?;
                let mut buf = Vec::with_capacity(f.size() as usize);
                f.read_to_end(&mut buf)
                    .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
                Ok(buf)
            };
        if ar.file_names().any(|n| n == format!("{prefix}byteorder")) {
            let order = entry(&mut ar, &format!("{prefix}byteorder"))?;
            if order != b"little" {
                return Err(Error::format(path, "big-endian tensors are not supported"));
            }
        }
        let data = entry(&mut ar, &pkl)?;
        let mut refs: Vec<StorageRef> = Vec::new();
        let (root, _) = pickle::load(&data, &mut |pid| {
            refs.push(storage_ref(pid)?);
            Ok(refs.len() - 1)
        })
        .map_err(|e| Error::format(path, format!("{pkl}: {e}")))?;
        // One storage may back several tensors (views); read each key once.
        let mut by_key: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut storages = Vec::with_capacity(refs.len());
        for r in &refs {
            if !by_key.contains_key(&r.key) {
                let raw = entry(&mut ar, &format!("{prefix}data/{}", r.key))?;
                by_key.insert(r.key.clone(), storage_tensor(path, r, &raw)?);
            }
            storages.push(by_key[&r.key].shallow_clone());
        }
        Ok(TorchFile {
            format: TorchFormat::Zip,
            root,
            storages,
        })
    }

    fn read_legacy(path: &Path, bytes: &[u8]) -> Result<TorchFile> {
        let fail = |what: &str, e: pickle::PickleError| Error::format(path, format!("{what}: {e}"));
        let mut none = |_: &Value| Err("unexpected persistent id".to_string());
        let mut pos = 0;
        let (magic, n) = pickle::load(bytes, &mut none).map_err(|e| fail("magic number", e))?;
        pos += n;
        if magic.as_int() != Some(LEGACY_MAGIC) {
            return Err(Error::format(
                path,
                "a pickle, but not a torch.save file (no torch magic number)",
            ));
        }
        let (proto, n) = pickle::load(&bytes[pos..], &mut none).map_err(|e| fail("protocol", e))?;
        pos += n;
        if proto.as_int() != Some(LEGACY_PROTOCOL) {
            return Err(Error::format(
                path,
                format!("torch legacy protocol {proto:?}, {LEGACY_PROTOCOL} expected"),
            ));
        }
        let (sys_info, n) =
            pickle::load(&bytes[pos..], &mut none).map_err(|e| fail("sys_info", e))?;
        pos += n;
        let little = sys_info.dict_entries().and_then(|d| {
            d.iter()
                .find(|(k, _)| k.as_str() == Some("little_endian"))
                .map(|(_, v)| matches!(v, Value::Bool(true)))
        });
        if little == Some(false) {
            return Err(Error::format(path, "big-endian tensors are not supported"));
        }
        let mut refs: Vec<StorageRef> = Vec::new();
        let (root, n) = pickle::load(&bytes[pos..], &mut |pid| {
            refs.push(storage_ref(pid)?);
            Ok(refs.len() - 1)
        })
        .map_err(|e| fail("object", e))?;
        pos += n;
        let (keys, n) =
            pickle::load(&bytes[pos..], &mut none).map_err(|e| fail("storage keys", e))?;
        pos += n;
        let keys: Vec<String> = keys
            .items()
            .ok_or_else(|| Error::format(path, "storage key list is not a list"))?
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::format(path, "storage key is not a string"))?;
        // Then, for each key in that order: an int64 element count and the raw elements.
        let mut by_key: BTreeMap<String, Tensor> = BTreeMap::new();
        for key in keys {
            let r = refs.iter().find(|r| r.key == key).ok_or_else(|| {
                Error::format(path, format!("storage {key} is listed but never used"))
            })?;
            let head = bytes
                .get(pos..pos + 8)
                .ok_or_else(|| Error::format(path, format!("truncated before storage {key}")))?;
            let numel = i64::from_le_bytes(head.try_into().unwrap());
            pos += 8;
            let len = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(element_size(r.kind)))
                .ok_or_else(|| Error::format(path, format!("storage {key}: size {numel}")))?;
            let raw = bytes
                .get(pos..pos + len)
                .ok_or_else(|| Error::format(path, format!("truncated inside storage {key}")))?;
            pos += len;
            let r = StorageRef {
                numel: numel as usize,
                ..r.clone()
            };
            by_key.insert(key.clone(), storage_tensor(path, &r, raw)?);
        }
        let storages = refs
            .iter()
            .map(|r| {
                by_key
                    .get(&r.key)
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| {
                        Error::format(path, format!("storage {} is used but not stored", r.key))
                    })
            })
            .collect::<Result<_>>()?;
        Ok(TorchFile {
            format: TorchFormat::Legacy,
            root,
            storages,
        })
    }

    /// The tensor a value stands for, if it is one: `_rebuild_tensor_v2(storage, offset, size, stride, …)`
    /// or an `nn.Parameter` around one. Floating tensors come back as f32 (checkpoints saved in half or
    /// bfloat16 load into f32 models); integer tensors keep their kind.
    pub fn tensor(&self, v: &Value) -> Option<std::result::Result<Tensor, String>> {
        let Value::Object(o) = v else { return None };
        match o.callable.global_name()? {
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                Some(self.rebuild(&o.args))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                self.tensor(o.args.first()?)
            }
            _ => None,
        }
    }

    fn rebuild(&self, args: &[Value]) -> std::result::Result<Tensor, String> {
        let [storage, offset, size, stride, ..] = args else {
            return Err("_rebuild_tensor with fewer than 4 arguments".into());
        };
        let Value::Persistent(i) = storage else {
            return Err("tensor without a storage".into());
        };
        let ints = |v: &Value, what: &str| -> std::result::Result<Vec<i64>, String> {
            v.items()
                .ok_or(format!("tensor {what} is not a tuple"))?
                .iter()
                .map(|x| x.as_int().and_then(|n| i64::try_from(n).ok()))
                .collect::<Option<Vec<i64>>>()
                .ok_or(format!("tensor {what} is not integers"))
        };
        let size = ints(size, "size")?;
        let stride = ints(stride, "stride")?;
        let offset = offset
            .as_int()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or("tensor offset is not an integer")?;
        if size.len() != stride.len() {
            return Err("tensor size and stride differ in length".into());
        }
        let storage = &self.storages[*i];
        let numel = storage.numel() as i64;
        // Largest element the view touches must lie inside the storage (as_strided does not check).
        let reach: i64 = offset
            + size
                .iter()
                .zip(&stride)
                .map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s })
                .sum::<i64>();
        if size.iter().all(|&n| n > 0) && (offset < 0 || reach >= numel) {
            return Err(format!(
                "tensor view {size:?}/{stride:?}+{offset} exceeds its storage of {numel} elements"
            ));
        }
        let t = storage
            .as_strided(size.as_slice(), stride.as_slice(), Some(offset))
            .contiguous();
        Ok(if t.is_floating_point() && t.kind() != Kind::Float {
            t.to_kind(Kind::Float)
        } else {
            t
        })
    }
}
