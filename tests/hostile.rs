//! Hostile input (issue 13): every reproduction of the issue as a regression test, with its bytes crafted
//! here (no Python: the torch zip and legacy layouts are written by the small builders below), and property
//! tests that feed random and mutated bytes to every reader of outside data (pickle, torch zip, torch
//! legacy, safetensors, COCO JSON, embeddings Parquet) and require `Ok` or `Err`, never a panic or abort.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use biaslab::analyze::embeddings::{read_embeddings, row, write_embeddings};
use biaslab::data::coco::CocoDataset;
use biaslab::interop::import::{read_state_dict, ImportRecord};
use biaslab::interop::pickle;
use biaslab::model::Arch;
use biaslab::train::{TrainConfig, Trainer};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------------------------------------
// Byte builders: pickle opcodes, zip archives, torch's zip and legacy layouts.

/// Protocol-2 pickle opcodes, appended to a byte vector.
#[derive(Default, Clone)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(b"\x80\x02".to_vec())
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }
    /// LONG1 with 8 bytes: any i64.
    fn int(&mut self, v: i64) -> &mut Self {
        self.op(b"\x8a\x08").op(&v.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn ints_tuple(&mut self, v: &[i64]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False,
    /// OrderedDict())`, what torch.save writes for a float32 tensor.
    fn tensor(
        &mut self,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(").str("storage").global("torch", "FloatStorage");
        self.str(key).str("cpu").int(numel).op(b"tQ");
        self.int(offset)
            .ints_tuple(size)
            .ints_tuple(stride)
            .op(b"\x89");
        self.global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        self.0.clone()
    }
}

/// What a state dict entry holds.
enum Entry<'a> {
    /// A float32 tensor over storage `key` of `numel` elements.
    Tensor {
        key: &'a str,
        numel: i64,
        offset: i64,
        size: Vec<i64>,
        stride: Vec<i64>,
    },
    Int(i64),
    Str(&'a str),
}

fn contiguous<'a>(key: &'a str, size: &[i64]) -> Entry<'a> {
    let mut stride = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1];
    }
    Entry::Tensor {
        key,
        numel: size.iter().product(),
        offset: 0,
        size: size.to_vec(),
        stride,
    }
}

/// `{name: entry, …}` as torch.save pickles a dict of tensors.
fn state_dict_pickle(entries: &[(&str, Entry)]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}(");
    for (name, e) in entries {
        p.str(name);
        match e {
            Entry::Tensor {
                key,
                numel,
                offset,
                size,
                stride,
            } => p.tensor(key, *numel, *offset, size, stride),
            Entry::Int(v) => p.int(*v),
            Entry::Str(s) => p.str(s),
        };
    }
    p.op(b"u").stop()
}

fn crc32(data: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|i| {
            (0..8).fold(i, |c, _| {
                if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// One zip entry: its name, the bytes stored (raw deflate when `deflated`), the uncompressed length
/// declared and the CRC of the uncompressed bytes.
struct ZipEntry {
    name: String,
    stored: Vec<u8>,
    deflated: bool,
    declared: u64,
    crc: u32,
}

impl ZipEntry {
    fn stored(name: &str, data: &[u8]) -> Self {
        ZipEntry {
            name: name.into(),
            stored: data.to_vec(),
            deflated: false,
            declared: data.len() as u64,
            crc: crc32(data),
        }
    }
}

/// A zip archive; entries declaring more than 4 GiB get zip64 extra fields (local and central).
fn zip(entries: &[ZipEntry]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for e in entries {
        let zip64 = e.declared >= u32::MAX as u64;
        let (comp32, unc32) = if zip64 {
            (u32::MAX, u32::MAX)
        } else {
            (e.stored.len() as u32, e.declared as u32)
        };
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&e.declared.to_le_bytes());
            extra.extend_from_slice(&(e.stored.len() as u64).to_le_bytes());
        }
        let method: u16 = if e.deflated { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&45u16.to_le_bytes()); // version needed: 4.5, zip64
        common.extend_from_slice(&0u16.to_le_bytes()); // flags
        common.extend_from_slice(&method.to_le_bytes());
        common.extend_from_slice(&0u32.to_le_bytes()); // time, date
        common.extend_from_slice(&e.crc.to_le_bytes());
        common.extend_from_slice(&comp32.to_le_bytes());
        common.extend_from_slice(&unc32.to_le_bytes());
        common.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        common.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&common);
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(&e.stored);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&45u16.to_le_bytes()); // version made by
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 8]); // comment length, disk, internal and external attributes
        central.extend_from_slice(&[0; 2]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
        central.extend_from_slice(&extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out
}

/// torch.save's zip layout: `archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`.
fn torch_zip(pickle: &[u8], storages: Vec<ZipEntry>) -> Vec<u8> {
    let mut entries = vec![
        ZipEntry::stored("archive/data.pkl", pickle),
        ZipEntry::stored("archive/byteorder", b"little"),
    ];
    entries.extend(storages.into_iter().map(|mut e| {
        e.name = format!("archive/data/{}", e.name);
        e
    }));
    zip(&entries)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// torch.save's legacy layout: magic, protocol, sys_info, the object, the storage keys, then per key an
/// i64 element count and the elements.
fn torch_legacy(object: &[u8], storages: &[(&str, Vec<f32>)]) -> Vec<u8> {
    let mut out = Pickle::new();
    out.op(b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    out.op(b"\x80\x02M\xe9\x03.");
    out.op(b"\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.");
    out.op(object);
    let mut keys = Pickle::new();
    keys.op(b"(");
    for (k, _) in storages {
        keys.str(k);
    }
    out.op(&keys.op(b"l").stop());
    for (_, data) in storages {
        out.op(&(data.len() as i64).to_le_bytes())
            .op(&f32_bytes(data));
    }
    out.0
}

// ---------------------------------------------------------------------------------------------------------
// Running the binary with a deadline.

/// Runs `biaslab import --from FILE --arch resnet18 --out DIR/run` and kills it after `limit`: an input
/// that made the reader loop or grow without bound fails the test instead of hanging it.
fn import_within(file: &Path, extra: &[&str], limit: Duration) -> Output {
    let out_dir = file.with_extension("run");
    let mut args = vec![
        "import".to_string(),
        "--from".into(),
        file.display().to_string(),
        "--arch".into(),
        "resnet18".into(),
        "--out".into(),
        out_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_biaslab"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the biaslab binary runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!(
                "biaslab import {} ran longer than {limit:?}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "$ biaslab {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `bytes` written as `dir/name`, imported: must fail with status 2 (not a panic's 101 or a signal) and
/// name the file and every one of `words`.
fn refused(dir: &Path, name: &str, bytes: &[u8], words: &[&str]) {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let o = import_within(&file, &[], Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{name}: {err}");
    assert!(
        err.contains(name),
        "{name}: the error does not name the file: {err}"
    );
    for w in words {
        assert!(
            err.contains(w),
            "{name}: the error does not say `{w}`: {err}"
        );
    }
}

fn err_of(path: &Path) -> String {
    match read_state_dict(path) {
        Ok(sd) => panic!("{} read, {} tensors", path.display(), sd.tensors.len()),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Regression tests: one per reproduction of issue 13.

#[test]
fn self_containing_list_is_an_error_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    // EMPTY_LIST BINPUT 0 BINGET 0 APPEND: l = []; l.append(l)
    let object = Pickle::new().op(b"]q\x00h\x00a").stop();
    // the issue's 24 bytes: the magic number, then the list as the protocol, whose value the error
    // message used to print, recursing until the stack overflowed (abort, rc 134)
    let mut as_proto = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    as_proto.extend_from_slice(&object);
    assert_eq!(as_proto.len(), 24);
    refused(
        tmp.path(),
        "selfref.pth",
        &as_proto,
        &["protocol", "holds itself"],
    );
    // as the object of a legacy file, and alone
    let file = torch_legacy(&object, &[]);
    refused(
        tmp.path(),
        "selfref-object.pth",
        &file,
        &["object", "holds itself"],
    );
    refused(tmp.path(), "selfref-bare.pth", &object, &["holds itself"]);
}

#[test]
fn deep_tuple_is_an_error_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    // EMPTY_TUPLE then 200 000 × TUPLE1: ((((),),),…)
    let mut p = Pickle::new();
    p.op(b")").op(&vec![0x85; 200_000]);
    refused(tmp.path(), "deep.pth", &p.stop(), &["nested deeper than"]);
    // the same through MARK … TUPLE, and lists
    let mut p = Pickle::new();
    p.op(&vec![b'('; 200_000]).op(&vec![b'l'; 200_000]);
    refused(
        tmp.path(),
        "deep-lists.pth",
        &p.stop(),
        &["nested deeper than"],
    );
}

/// l0 = []; l_{i+1} = [l_i, l_i] for `levels` levels, each memoised as `i + 1` and popped: 2^levels
/// references to l0 in a few hundred bytes. The stack is left empty; `h <levels>` pushes the last.
fn billion_laughs(levels: u8) -> Pickle {
    let mut p = Pickle::new();
    p.op(b"]q\x000");
    for i in 0..levels {
        p.op(&[b'(', b'h', i, b'h', i, b'l', b'q', i + 1, b'0']);
    }
    p
}

#[test]
fn billion_laughs_legacy_pickle_is_refused_in_bounded_time_and_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let laughs = billion_laughs(59).op(b"h\x3b").stop();
    assert!(laughs.len() < 600, "{} bytes", laughs.len());
    // as the protocol number (its value used to be printed in full), the sys_info, the object, the keys
    let magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    let mut as_proto = magic.clone();
    as_proto.extend_from_slice(&laughs);
    refused(
        tmp.path(),
        "laughs-proto.pth",
        &as_proto,
        &["protocol a list"],
    );
    refused(
        tmp.path(),
        "laughs-object.pth",
        &torch_legacy(&laughs, &[]),
        &["not a dict"],
    );
    let mut p = Pickle::new();
    p.op(b"}")
        .str("state_dict")
        .op(&laughs[2..laughs.len() - 1])
        .op(b"s");
    refused(
        tmp.path(),
        "laughs-nested.pth",
        &torch_legacy(&p.stop(), &[]),
        &["no tensors"],
    );
    // as a tensor's size and as the persistent id: counted before anything is copied
    let mut p = billion_laughs(59);
    p.op(b"}")
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"(");
    p.op(b"(")
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .op(b"tQ");
    p.int(0).op(b"h\x3b").ints_tuple(&[1]).op(b"\x89)tRs");
    let file = torch_legacy(&p.stop(), &[("0", vec![1.0; 4])]);
    refused(
        tmp.path(),
        "laughs-size.pth",
        &file,
        &["w: tensor size is not 64-bit integers"],
    );
}

#[test]
fn shared_argument_tuple_is_not_copied_per_reduce() {
    // one 100 000-item tuple used as the arguments of 100 000 REDUCEs: 10^10 items if each copied it
    let mut p = Pickle::new();
    p.op(b"(").op(&b"N".repeat(100_000)).op(b"tq\x00").op(b"(");
    for _ in 0..100_000 {
        p.op(b"cx\ny\nh\x00R");
    }
    p.op(b"l");
    let start = Instant::now();
    let (v, _) = pickle::load(&p.stop(), &mut |_| Err("none".into())).unwrap();
    assert_eq!(v.item_count(), Some(100_000));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn zip64_entry_claiming_2_pow_50_bytes_reads_only_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let pkl = state_dict_pickle(&[("w", contiguous("0", &[4]))]);
    let huge = |name: &str, data: &[u8]| ZipEntry {
        declared: 1 << 50,
        ..ZipEntry::stored(name, data)
    };
    // the storage claims 2^50 bytes and holds 16: the tensor needs 16
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let file = tmp.path().join("zip64-storage.pth");
    std::fs::write(&file, torch_zip(&pkl, vec![huge("0", &data)])).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() < 1000);
    let sd = read_state_dict(&file).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&sd.tensors["w"]).unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
    // data.pkl claims 2^50 bytes
    let mut entries = vec![huge("archive/data.pkl", &pkl)];
    entries.push(ZipEntry::stored("archive/data/0", &data));
    let file = tmp.path().join("zip64-pickle.pth");
    std::fs::write(&file, zip(&entries)).unwrap();
    assert_eq!(read_state_dict(&file).unwrap().tensors.len(), 1);
    // through the binary: no abort, status 2 for what a one-tensor file lacks
    refused(
        tmp.path(),
        "zip64-cli.pth",
        &std::fs::read(&file).unwrap(),
        &["conv1.weight"],
    );
}

#[test]
fn zip_bomb_storage_is_inflated_only_as_far_as_the_tensors_reach() {
    let tmp = tempfile::tempdir().unwrap();
    // 256 MiB of zeros deflate to ~250 KB; the storage declares all of it, the tensor views 4 elements
    let numel: i64 = 64 << 20;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(numel * 4) >> 20 {
        enc.write_all(&chunk).unwrap();
    }
    let deflated = enc.finish().unwrap();
    let bomb = || ZipEntry {
        name: "0".into(),
        stored: deflated.clone(),
        deflated: true,
        declared: numel as u64 * 4,
        crc: 0, // never checked: the entry is never read to its end
    };
    let small = Entry::Tensor {
        key: "0",
        numel,
        offset: 0,
        size: vec![4],
        stride: vec![1],
    };
    let file = tmp.path().join("bomb.pth");
    let pkl = state_dict_pickle(&[("w", small)]);
    std::fs::write(&file, torch_zip(&pkl, vec![bomb()])).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() < 1 << 20);
    let sd = read_state_dict(&file).unwrap();
    assert_eq!(sd.tensors["w"].size(), vec![4]);
    // a tensor over the whole storage: 256 MiB from a ~250 KB file is over the budget, refused before
    // anything is inflated
    let whole = contiguous("0", &[numel]);
    let pkl = state_dict_pickle(&[("w", whole)]);
    let file = tmp.path().join("bomb-whole.pth");
    std::fs::write(&file, torch_zip(&pkl, vec![bomb()])).unwrap();
    let err = err_of(&file);
    assert!(
        err.contains("bomb-whole.pth") && err.contains("storage 0") && err.contains("budget"),
        "{err}"
    );
}

#[test]
fn negative_and_overflowing_sizes_strides_and_offsets_are_errors_naming_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[0.5; 16]);
    // (file name, storage numel, offset, size, stride, what the error says)
    type Case<'a> = (&'a str, i64, i64, Vec<i64>, Vec<i64>, &'a str);
    let cases: Vec<Case> = vec![
        ("negative-stride", 16, 15, vec![4], vec![-1], "negative"),
        ("negative-size", 16, 0, vec![-4], vec![1], "negative"),
        ("negative-offset", 16, -1, vec![4], vec![1], "negative"),
        (
            "overflowing-size",
            16,
            0,
            vec![i64::MAX, 4],
            vec![1, 1],
            "overflows",
        ),
        (
            "overflowing-stride",
            16,
            0,
            vec![2, 2],
            vec![1, i64::MAX],
            "overflows",
        ),
        (
            "past-the-storage",
            16,
            13,
            vec![4],
            vec![1],
            "exceeds its storage",
        ),
        (
            "storage-larger-than-entry",
            1 << 40,
            0,
            vec![1 << 20],
            vec![1],
            "holds 64 bytes",
        ),
        (
            "storage-over-budget",
            1 << 40,
            0,
            vec![1 << 23],
            vec![1],
            "budget",
        ),
        (
            "too-many-dims",
            16,
            0,
            vec![1; 30],
            vec![1; 30],
            "30 dimensions",
        ),
    ];
    for (name, numel, offset, size, stride, says) in cases {
        let e = Entry::Tensor {
            key: "0",
            numel,
            offset,
            size,
            stride,
        };
        let pkl = state_dict_pickle(&[("layer1.0.conv1.weight", e)]);
        let file = tmp.path().join(format!("{name}.pth"));
        std::fs::write(&file, torch_zip(&pkl, vec![ZipEntry::stored("0", &data)])).unwrap();
        let err = err_of(&file);
        assert!(
            err.contains(&format!("{name}.pth"))
                && err.contains("layer1.0.conv1.weight")
                && err.contains(says),
            "{name}: {err}"
        );
    }
    // through the binary: status 2, not tch's panic (101)
    let e = Entry::Tensor {
        key: "0",
        numel: 16,
        offset: 0,
        size: vec![4, 4],
        stride: vec![i64::MIN, 1],
    };
    let pkl = state_dict_pickle(&[("conv1.weight", e)]);
    let bytes = torch_zip(&pkl, vec![ZipEntry::stored("0", &data)]);
    refused(
        tmp.path(),
        "strides.pth",
        &bytes,
        &["conv1.weight", "negative"],
    );
    // the legacy layout: a storage count larger than the bytes left
    let pkl = state_dict_pickle(&[("w", contiguous("0", &[4]))]);
    let mut bytes = torch_legacy(&pkl, &[("0", vec![1.0; 4])]);
    let at = bytes.len() - 16 - 8;
    bytes[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
    refused(
        tmp.path(),
        "legacy-count.pth",
        &bytes,
        &["storage 0", "bytes left"],
    );
}

#[test]
fn missing_storage_entry_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let pkl = state_dict_pickle(&[("w", contiguous("7", &[4]))]);
    let bytes = torch_zip(&pkl, vec![ZipEntry::stored("0", &f32_bytes(&[0.0; 4]))]);
    refused(
        tmp.path(),
        "missing.pth",
        &bytes,
        &["archive/data/7", "missing"],
    );
}

/// A tiny ResNet-18's variables (as biaslab names them, which are torchvision's), in torch's zip layout,
/// with `extra` entries after them.
fn resnet18_zip(extra: &[(&str, Entry)], copies: &[(&str, &str)]) -> Vec<u8> {
    let cfg = TrainConfig {
        arch: Arch::Resnet18,
        width: 4,
        hidden_mlp: 16,
        feat_dim: 8,
        nmb_prototypes: vec![5],
        ..TrainConfig::default()
    };
    let t = Trainer::new(cfg, Device::Cpu).unwrap();
    let mut vars: Vec<(String, Tensor)> = t.var_store().variables().into_iter().collect();
    for (from, to) in copies {
        let v = vars
            .iter()
            .find(|(n, _)| n == from)
            .map(|(_, t)| t.copy())
            .unwrap();
        vars.push((to.to_string(), v));
    }
    let keys: Vec<String> = (0..vars.len()).map(|i| i.to_string()).collect();
    let mut entries: Vec<(&str, Entry)> = vars
        .iter()
        .zip(&keys)
        .map(|((n, t), k)| (n.as_str(), contiguous(k, &t.size())))
        .collect();
    let storages = vars
        .iter()
        .zip(&keys)
        .map(|((_, t), k)| {
            let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
            ZipEntry::stored(k, &f32_bytes(&v))
        })
        .collect();
    entries.extend(extra.iter().map(|(n, e)| {
        let e = match e {
            Entry::Int(v) => Entry::Int(*v),
            Entry::Str(s) => Entry::Str(s),
            Entry::Tensor { .. } => unreachable!("extra tensors go through `copies`"),
        };
        (*n, e)
    }));
    torch_zip(&state_dict_pickle(&entries), storages)
}

#[test]
fn non_tensor_entries_and_a_deeper_resnet_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // torchvision's classifier stays accepted without the flag
    let fine = resnet18_zip(&[], &[("conv1.weight", "fc.weight")]);
    let file = dir.join("fine.pth");
    std::fs::write(&file, &fine).unwrap();
    let o = import_within(&file, &[], Duration::from_secs(120));
    assert!(o.status.success());
    let rec = ImportRecord::read(&file.with_extension("run"))
        .unwrap()
        .unwrap();
    assert!(rec.unexpected.is_empty() && rec.unused == ["fc.weight"]);

    // two payload entries that are not tensors: rc 2 naming both (used to import with rc 0, no warning)
    let payload = [
        ("payload", Entry::Str("rm -rf /")),
        ("epoch_hook", Entry::Int(7)),
    ];
    refused(
        dir,
        "payload.pth",
        &resnet18_zip(&payload, &[]),
        &["payload (not a tensor)", "epoch_hook"],
    );
    // a deeper ResNet's extra blocks (ResNet-34 has layer1.2): rc 2 naming them (used to be "unused")
    let deeper = [
        ("layer1.1.conv1.weight", "layer1.2.conv1.weight"),
        ("layer4.1.bn2.weight", "layer4.2.bn2.weight"),
    ];
    let bytes = resnet18_zip(&[], &deeper);
    refused(
        dir,
        "deeper.pth",
        &bytes,
        &[
            "layer1.2.conv1.weight",
            "layer4.2.bn2.weight",
            "--allow-unexpected",
        ],
    );

    // --allow-unexpected imports anyway, warns on stderr, records the list
    let file = dir.join("deeper-allowed.pth");
    std::fs::write(&file, &bytes).unwrap();
    let o = import_within(&file, &["--allow-unexpected"], Duration::from_secs(120));
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning") && err.contains("layer1.2.conv1.weight"),
        "{err}"
    );
    let rec = ImportRecord::read(&file.with_extension("run"))
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.unexpected,
        ["layer1.2.conv1.weight", "layer4.2.bn2.weight"]
    );
}

#[test]
fn a_coco_file_with_duplicate_annotation_ids_is_an_error_naming_the_id() {
    let json = br#"{"images":[{"id":1,"file_name":"a.png","width":64,"height":64}],
        "annotations":[{"id":3,"image_id":1,"category_id":1,"bbox":[1,1,5,5]},
                       {"id":3,"image_id":1,"category_id":1,"bbox":[2,2,5,5]}],
        "categories":[{"id":1,"name":"disc"}]}"#;
    let err = CocoDataset::from_slice(json, Path::new("boxes.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("boxes.json") && err.contains("duplicate annotation id 3"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Property tests: random and mutated bytes, Ok or Err, never a panic. Each case is small and the readers'
// limits bound what a case can allocate, so a few hundred cases run in seconds.

/// Applies `(position, byte)` overwrites and a truncation to `base`.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(i, v) in edits {
        if !b.is_empty() {
            let n = b.len();
            b[i % n] = v;
        }
    }
    let keep = b.len() - cut % (b.len() / 8 + 1);
    b.truncate(keep);
    b
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
}

/// A valid two-tensor state dict pickle, to mutate.
fn sample_pickle() -> Vec<u8> {
    state_dict_pickle(&[
        ("a", contiguous("0", &[2, 2])),
        ("b", contiguous("1", &[3])),
    ])
}

fn sample_storages() -> Vec<ZipEntry> {
    vec![
        ZipEntry::stored("0", &f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
        ZipEntry::stored("1", &f32_bytes(&[5.0, 6.0, 7.0])),
    ]
}

/// Reads `bytes` written to a temporary `name`; the result is ignored, only a panic fails.
fn read_any(name: &str, bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let _ = read_state_dict(&p);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pickle_machine_takes_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = b"\x80\x02".to_vec();
        b.extend(bytes);
        let _ = pickle::load(&b, &mut |_| Ok(0));
    }

    #[test]
    fn pickle_machine_takes_mutated_state_dicts(e in edits(), cut in any::<usize>()) {
        let _ = pickle::load(&mutate(&sample_pickle(), &e, cut), &mut |_| Ok(0));
    }

    #[test]
    fn torch_zip_reader_takes_mutated_archives(e in edits(), cut in any::<usize>()) {
        let base = torch_zip(&sample_pickle(), sample_storages());
        read_any("m.pth", &mutate(&base, &e, cut));
    }

    #[test]
    fn torch_zip_reader_takes_mutated_pickles(e in edits(), cut in any::<usize>()) {
        // the archive stays valid, so the mutations reach the pickle and the tensor records
        let bytes = torch_zip(&mutate(&sample_pickle(), &e, cut), sample_storages());
        read_any("p.pth", &bytes);
    }

    #[test]
    fn torch_legacy_reader_takes_mutated_files(e in edits(), cut in any::<usize>()) {
        let base = torch_legacy(&sample_pickle(), &[("0", vec![1.0, 2.0, 3.0, 4.0]), ("1", vec![5.0, 6.0, 7.0])]);
        read_any("l.pth", &mutate(&base, &e, cut));
    }

    #[test]
    fn safetensors_reader_takes_mutated_headers(e in edits(), cut in any::<usize>()) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("base.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        Tensor::write_safetensors(&[("w", &t), ("v", &t.get(0))], &p).unwrap();
        let base = std::fs::read(&p).unwrap();
        // the edits land in the header (its first 8 + length bytes) or the data after it
        read_any("m.safetensors", &mutate(&base, &e, cut));
    }

    #[test]
    fn safetensors_reader_takes_random_headers(json in "[\\[\\]{}\":,0-9a-zA-Z_ .-]{0,120}", n in any::<u64>()) {
        let mut b = if n % 2 == 0 { (json.len() as u64).to_le_bytes().to_vec() } else { n.to_le_bytes().to_vec() };
        b.extend_from_slice(json.as_bytes());
        b.extend_from_slice(&[0; 64]);
        read_any("r.safetensors", &b);
    }

    #[test]
    fn coco_reader_takes_mutated_json(e in edits(), cut in any::<usize>()) {
        let base = br#"{"images":[{"id":1,"file_name":"a.png","width":64,"height":64}],
            "annotations":[{"id":3,"image_id":1,"category_id":1,"bbox":[1,1,5,5],"area":25,"iscrowd":0}],
            "categories":[{"id":1,"name":"disc","supercategory":"shape"}]}"#;
        let _ = CocoDataset::from_slice(&mutate(base, &e, cut), Path::new("m.json"));
    }

    #[test]
    fn embeddings_reader_takes_mutated_parquet(e in edits(), cut in any::<usize>()) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("e.parquet");
        let rows = vec![
            row(0, "a.png", Some("disc"), Some(1), vec![0.5, 0.25]),
            row(1, "b.png", None, Some(i32::MAX), vec![1.0, -1.0]),
        ];
        write_embeddings(&p, &rows).unwrap();
        let bytes = mutate(&std::fs::read(&p).unwrap(), &e, cut);
        std::fs::write(&p, bytes).unwrap();
        let _ = read_embeddings(&p);
    }
}
