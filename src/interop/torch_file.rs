//! Reads the tensors of a `torch.save` file without Python: the zip format (PyTorch ≥ 1.6: `<name>/data.pkl`
//! plus one `<name>/data/<key>` entry per storage) and the legacy format (several pickles back to back, then
//! the raw storages; what the 2020 SwAV release and older torchvision weights use). Tensors are rebuilt from
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` records; nothing is executed.
//!
//! A checkpoint may be hostile, so what a read allocates is bounded by the file: the pickle machine's own
//! bounds (see `pickle`), a zip entry is never inflated past what is asked of it, and storages are read
//! lazily, only as far as the tensors that view them reach, against a budget of [`BUDGET_PER_FILE_BYTE`]
//! bytes per byte of the file. Every size, stride and offset is checked in `i64` before tch sees it.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, IoContext, Result};
use crate::interop::pickle::{self, Value};

/// `torch.save`'s legacy magic number and protocol version (torch/serialization.py).
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Bytes of tensor data (storages read plus the tensors built from them) allowed per byte of the file, plus
/// `BUDGET_SLACK`. A well-formed file needs at most ~3: its storages once, and each tensor once more,
/// twice for half precision widened to f32; tied weights viewing one storage can add a little.
pub const BUDGET_PER_FILE_BYTE: u64 = 8;
const BUDGET_SLACK: u64 = 16 << 20;
/// `data.pkl` may inflate to at most this many times the file (torch stores it uncompressed).
const PICKLE_INFLATION: u64 = 16;
/// Most dimensions of a tensor: PyTorch's CUDA kernels stop at 25 (MAX_TENSORINFO_DIMS).
pub const MAX_DIMS: usize = 25;
/// `_rebuild_parameter` around a tensor: one level in every file torch writes; a few allowed.
const MAX_PARAMETER_NESTING: usize = 4;

/// A storage the pickle refers to by persistent id, with where its bytes are.
#[derive(Debug, Clone)]
struct Storage {
    kind: Kind,
    key: String,
    /// Elements the record (zip) or the file (legacy) declares; no tensor may reach past it.
    numel: u64,
    /// Legacy: where the raw elements start in the file. Zip: none (the entry `<prefix>data/<key>`).
    offset: Option<usize>,
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

/// The file's bytes, kept to read storages on demand.
enum Source {
    Zip {
        archive: RefCell<zip::ZipArchive<Cursor<Vec<u8>>>>,
        /// `<name>/`, the folder `data.pkl` is in.
        prefix: String,
    },
    Legacy(Vec<u8>),
}

/// A parsed `torch.save` file: the pickled object tree, and its storages, read when a tensor needs them.
pub struct TorchFile {
    pub format: TorchFormat,
    pub root: Value,
    path: PathBuf,
    source: Source,
    /// Distinct storages (one per key).
    storages: Vec<Storage>,
    /// Persistent id (the pickle's `Value::Persistent`) → index into `storages`.
    refs: Vec<usize>,
    /// Storage index → its first elements as a flat tensor (as many as the tensors so far needed).
    loaded: RefCell<HashMap<usize, Tensor>>,
    /// Bytes of tensor data this file may still cause to be allocated.
    budget: Cell<u64>,
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
fn storage_record(pid: &Value) -> std::result::Result<(Kind, String, u64), String> {
    // Counted before the copy: a shared tuple of a million items must not be copied per BINPERSID.
    if !matches!(pid.item_count(), Some(5 | 6)) {
        return Err("persistent id is not a torch storage record".into());
    }
    let items = pid.items().ok_or("persistent id is not a tuple")?;
    if items[0].as_str() != Some("storage") {
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
        .and_then(|n| u64::try_from(n).ok())
        .ok_or("storage size is not a count")?;
    if items.len() > 5 && !matches!(items[5], Value::None) {
        return Err("storage views (PyTorch < 0.4 files) are not supported".into());
    }
    Ok((kind, key, numel))
}

/// Collects the storages persistent ids name, one per key; returns the index for this id.
fn register(
    storages: &mut Vec<Storage>,
    by_key: &mut HashMap<String, usize>,
    refs: &mut Vec<usize>,
    pid: &Value,
) -> std::result::Result<usize, String> {
    let (kind, key, numel) = storage_record(pid)?;
    let i = match by_key.get(&key) {
        Some(&i) => {
            let s = &storages[i];
            if s.kind != kind || s.numel != numel {
                return Err(format!(
                    "storage {key} is declared twice, as {:?}×{} and {kind:?}×{numel}",
                    s.kind, s.numel
                ));
            }
            i
        }
        None => {
            storages.push(Storage {
                kind,
                key: key.clone(),
                numel,
                offset: None,
            });
            by_key.insert(key, storages.len() - 1);
            storages.len() - 1
        }
    };
    refs.push(i);
    Ok(refs.len() - 1)
}

/// Reads zip entry `name` of `ar`, at most `limit` bytes; `Ok(None)` when the entry does not exist. The
/// buffer grows with what actually inflates, never with the size the header claims.
fn read_entry(
    ar: &mut zip::ZipArchive<Cursor<Vec<u8>>>,
    name: &str,
    limit: u64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let f = match ar.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("{name}: zip: {e}")),
    };
    let mut buf = Vec::new();
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Some(buf))
}

impl TorchFile {
    /// Reads `path`, telling the two formats apart by their first bytes.
    pub fn read(path: &Path) -> Result<TorchFile> {
        let bytes = std::fs::read(path).ctx_io(path)?;
        if bytes.starts_with(b"PK\x03\x04") {
            Self::read_zip(path, bytes)
        } else if bytes.starts_with(&[0x80, 0x02]) {
            Self::read_legacy(path, bytes)
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

    fn budget_for(len: usize) -> u64 {
        (len as u64)
            .saturating_mul(BUDGET_PER_FILE_BYTE)
            .saturating_add(BUDGET_SLACK)
    }

    fn read_zip(path: &Path, bytes: Vec<u8>) -> Result<TorchFile> {
        let zip_err = |e: zip::result::ZipError| Error::format(path, format!("zip: {e}"));
        let len = bytes.len();
        let mut ar = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
        // The archive's top folder is the file stem torch.save was given ("archive" since 2.x).
        let pkl = ar
            .file_names()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| Error::format(path, "zip archive without <name>/data.pkl"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let order_name = format!("{prefix}byteorder");
        if let Some(order) =
            read_entry(&mut ar, &order_name, 16).map_err(|e| Error::format(path, e))?
        {
            if order != b"little" {
                return Err(Error::format(
                    path,
                    format!("{order_name}: big-endian tensors are not supported"),
                ));
            }
        }
        let pkl_limit = (len as u64)
            .saturating_mul(PICKLE_INFLATION)
            .saturating_add(1 << 20);
        let data = read_entry(&mut ar, &pkl, pkl_limit.saturating_add(1))
            .map_err(|e| Error::format(path, e))?
            .ok_or_else(|| Error::format(path, format!("{pkl}: missing")))?;
        if data.len() as u64 > pkl_limit {
            return Err(Error::format(
                path,
                format!("{pkl}: inflates to more than {pkl_limit} bytes (a zip bomb?)"),
            ));
        }
        let (mut storages, mut by_key, mut refs) = (Vec::new(), HashMap::new(), Vec::new());
        let (root, _) = pickle::load(&data, &mut |pid| {
            register(&mut storages, &mut by_key, &mut refs, pid)
        })
        .map_err(|e| Error::format(path, format!("{pkl}: {e}")))?;
        // Every storage entry must exist, named in the error if not; their bytes are read on demand.
        for s in &storages {
            let name = format!("{prefix}data/{}", s.key);
            if ar.index_for_name(&name).is_none() {
                return Err(Error::format(
                    path,
                    format!("storage entry {name} is missing from the archive"),
                ));
            }
        }
        Ok(TorchFile {
            format: TorchFormat::Zip,
            root,
            path: path.to_path_buf(),
            source: Source::Zip {
                archive: RefCell::new(ar),
                prefix,
            },
            storages,
            refs,
            loaded: RefCell::default(),
            budget: Cell::new(Self::budget_for(len)),
        })
    }

    fn read_legacy(path: &Path, bytes: Vec<u8>) -> Result<TorchFile> {
        let fail = |what: &str, e: pickle::PickleError| Error::format(path, format!("{what}: {e}"));
        let mut none = |_: &Value| Err("unexpected persistent id".to_string());
        let mut pos = 0;
        let (magic, n) = pickle::load(&bytes, &mut none).map_err(|e| fail("magic number", e))?;
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
            // The value is not printed: a shared structure can stand for more items than memory holds.
            let got = match proto.as_int() {
                Some(p) => p.to_string(),
                None => format!("a {}", proto.kind()),
            };
            return Err(Error::format(
                path,
                format!("torch legacy protocol {got}, {LEGACY_PROTOCOL} expected"),
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
            return Err(Error::format(
                path,
                "sys_info: big-endian tensors are not supported",
            ));
        }
        let (mut storages, mut by_key, mut refs) = (Vec::new(), HashMap::new(), Vec::new());
        let (root, n) = pickle::load(&bytes[pos..], &mut |pid| {
            register(&mut storages, &mut by_key, &mut refs, pid)
        })
        .map_err(|e| fail("object", e))?;
        pos += n;
        let (keys, n) =
            pickle::load(&bytes[pos..], &mut none).map_err(|e| fail("storage keys", e))?;
        pos += n;
        let keys: Vec<String> = keys
            .items()
            .ok_or_else(|| Error::format(path, "storage keys: not a list"))?
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::format(path, "storage keys: a key is not a string"))?;
        // Then, for each key in that order: an int64 element count and the raw elements. The count in the
        // file is what is there: checked against the bytes left, never trusted for an allocation.
        for key in keys {
            let i = *by_key.get(&key).ok_or_else(|| {
                Error::format(path, format!("storage {key} is listed but never used"))
            })?;
            let s = &mut storages[i];
            if s.offset.is_some() {
                return Err(Error::format(
                    path,
                    format!("storage {key} is listed twice"),
                ));
            }
            let head: [u8; 8] = bytes
                .get(pos..)
                .and_then(|b| b.get(..8))
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::format(path, format!("truncated before storage {key}")))?;
            let numel = i64::from_le_bytes(head);
            pos += 8;
            let len = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(element_size(s.kind)))
                .ok_or_else(|| Error::format(path, format!("storage {key}: size {numel}")))?;
            if len > bytes.len() - pos {
                return Err(Error::format(
                    path,
                    format!(
                        "storage {key}: {numel} elements declared, {} bytes left in the file",
                        bytes.len() - pos
                    ),
                ));
            }
            s.numel = numel as u64;
            s.offset = Some(pos);
            pos += len;
        }
        if let Some(s) = storages.iter().find(|s| s.offset.is_none()) {
            return Err(Error::format(
                path,
                format!("storage {} is used but not stored", s.key),
            ));
        }
        let budget = Self::budget_for(bytes.len());
        Ok(TorchFile {
            format: TorchFormat::Legacy,
            root,
            path: path.to_path_buf(),
            source: Source::Legacy(bytes),
            storages,
            refs,
            loaded: RefCell::default(),
            budget: Cell::new(budget),
        })
    }

    /// Takes `bytes` from the allocation budget, or says what would have exceeded it.
    fn spend(&self, bytes: u64, what: &str) -> std::result::Result<(), String> {
        let left = self.budget.get();
        if bytes > left {
            return Err(format!(
                "{what} needs {bytes} bytes, more than the {left} left of this file's budget \
                 ({BUDGET_PER_FILE_BYTE}× its size)"
            ));
        }
        self.budget.set(left - bytes);
        Ok(())
    }

    /// The first `numel` elements of storage `i` as a flat tensor (at least that many: a longer prefix
    /// already read is reused).
    fn storage_prefix(&self, i: usize, numel: u64) -> std::result::Result<Tensor, String> {
        if let Some(t) = self.loaded.borrow().get(&i) {
            if t.numel() as u64 >= numel {
                return Ok(t.shallow_clone());
            }
        }
        let s = &self.storages[i];
        let need = numel
            .checked_mul(element_size(s.kind) as u64)
            .ok_or_else(|| format!("storage {}: {numel} elements overflow", s.key))?;
        self.spend(need, &format!("storage {}", s.key))?;
        let raw: Vec<u8>;
        let bytes: &[u8] = match &self.source {
            Source::Legacy(file) => {
                let start = s
                    .offset
                    .ok_or_else(|| format!("storage {} is not stored", s.key))?;
                file.get(start..)
                    .and_then(|b| b.get(..need as usize))
                    .ok_or_else(|| format!("storage {}: truncated", s.key))?
            }
            Source::Zip { archive, prefix } => {
                let name = format!("{prefix}data/{}", s.key);
                raw = read_entry(&mut archive.borrow_mut(), &name, need)?
                    .ok_or_else(|| format!("storage entry {name} is missing from the archive"))?;
                if (raw.len() as u64) < need {
                    return Err(format!(
                        "storage entry {name} holds {} bytes, {need} needed",
                        raw.len()
                    ));
                }
                &raw
            }
        };
        let n = i64::try_from(numel).map_err(|_| format!("storage {}: too large", s.key))?;
        let t = Tensor::f_from_data_size(bytes, &[n], s.kind)
            .map_err(|e| format!("storage {}: {e}", s.key))?;
        self.loaded.borrow_mut().insert(i, t.shallow_clone());
        Ok(t)
    }

    /// The tensor a value stands for, if it is one: `_rebuild_tensor_v2(storage, offset, size, stride, …)`
    /// or an `nn.Parameter` around one. Floating tensors come back as f32 (checkpoints saved in half or
    /// bfloat16 load into f32 models); integer tensors keep their kind.
    pub fn tensor(&self, v: &Value) -> Option<std::result::Result<Tensor, String>> {
        self.tensor_within(v, MAX_PARAMETER_NESTING)
    }

    fn tensor_within(
        &self,
        v: &Value,
        nesting: usize,
    ) -> Option<std::result::Result<Tensor, String>> {
        let Value::Object(o) = v else { return None };
        match o.callable.global_name()? {
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                Some(self.rebuild(&o.args))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                if nesting == 0 {
                    return Some(Err(format!(
                        "parameters nested more than {MAX_PARAMETER_NESTING} deep"
                    )));
                }
                self.tensor_within(o.args.first()?, nesting - 1)
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
        let si = *self.refs.get(*i).ok_or("unknown storage")?;
        let ints = |v: &Value, what: &str| -> std::result::Result<Vec<i64>, String> {
            let n = v
                .item_count()
                .ok_or(format!("tensor {what} is not a tuple"))?;
            if n > MAX_DIMS {
                return Err(format!(
                    "tensor {what} has {n} dimensions, at most {MAX_DIMS}"
                ));
            }
            v.items()
                .unwrap_or_default()
                .iter()
                .map(|x| x.as_int().and_then(|n| i64::try_from(n).ok()))
                .collect::<Option<Vec<i64>>>()
                .ok_or(format!("tensor {what} is not 64-bit integers"))
        };
        let size = ints(size, "size")?;
        let stride = ints(stride, "stride")?;
        let offset = offset
            .as_int()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or("tensor offset is not a 64-bit integer")?;
        let view = || format!("tensor view {size:?}/{stride:?}+{offset}");
        if size.len() != stride.len() {
            return Err(format!("{}: size and stride differ in length", view()));
        }
        if offset < 0 || size.iter().chain(&stride).any(|&x| x < 0) {
            return Err(format!("{}: negative size, stride or offset", view()));
        }
        let numel = size
            .iter()
            .try_fold(1i64, |a, &n| a.checked_mul(n))
            .ok_or_else(|| format!("{}: element count overflows", view()))?;
        let s = &self.storages[si];
        let out_kind = if matches!(s.kind, Kind::Half | Kind::BFloat16 | Kind::Double) {
            Kind::Float
        } else {
            s.kind
        };
        if numel == 0 {
            return Tensor::f_zeros(size.as_slice(), (out_kind, Device::Cpu))
                .map_err(|e| format!("{}: {e}", view()));
        }
        // One past the largest element the view touches; it must lie inside the storage (as_strided does
        // not check, and would read past the buffer).
        let end = size
            .iter()
            .zip(&stride)
            .try_fold(offset, |a, (&n, &st)| {
                a.checked_add((n - 1).checked_mul(st)?)
            })
            .and_then(|a| a.checked_add(1))
            .ok_or_else(|| format!("{}: reach overflows", view()))?;
        if end as u64 > s.numel {
            return Err(format!(
                "{} exceeds its storage {} of {} elements",
                view(),
                s.key,
                s.numel
            ));
        }
        let out_bytes = (numel as u64)
            .checked_mul(element_size(out_kind) as u64)
            .ok_or_else(|| format!("{}: byte count overflows", view()))?;
        let flat = self.storage_prefix(si, end as u64)?;
        self.spend(out_bytes, &view())?;
        let t = flat
            .f_as_strided(size.as_slice(), stride.as_slice(), Some(offset))
            .and_then(|t| t.f_contiguous())
            .and_then(|t| {
                if t.kind() != out_kind {
                    t.f_to_kind(out_kind)
                } else {
                    Ok(t)
                }
            })
            .map_err(|e| format!("{}: {e}", view()))?;
        Ok(t)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
