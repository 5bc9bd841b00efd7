//! `biaslab import` against PyTorch itself: tests/torch_reference.py (run with the project virtualenv's
//! torch and torchvision) saves a torchvision ResNet-18 state dict (zip format), the same in float16, and a
//! main_swav.py-style ResNet-50 checkpoint in torch's legacy format, with the features PyTorch computes
//! for three 224×224 inputs. Imported runs must give the same features within 1e-4.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use biaslab::interop::import::{read_state_dict, ImportRecord};
use biaslab::model::Arch;
use biaslab::report::io::read_parquet;
use biaslab::train::{EmbedLayer, Trainer};
use tch::{Kind, Tensor};

fn biaslab(args: &[&str], data: &Path) -> Output {
    common::run_biaslab(args, &[("BIASLAB_DATA", data.to_str().unwrap())])
}

/// Runs tests/torch_reference.py with the virtualenv `make setup` creates.
fn torch_reference(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` (the test compares with PyTorch)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/torch_reference.py"))
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "torch_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// biaslab's `actual` must equal PyTorch's `expected` within 1e-4; the largest difference is printed so
/// the test log records how close the match is.
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.size(), expected.size(), "{what}");
    let d = (actual - expected).abs().max().double_value(&[]);
    let scale = expected.abs().max().double_value(&[]);
    eprintln!("{what}: max |biaslab − PyTorch| = {d:.2e} (largest |value| {scale:.2})");
    assert!(d < 1e-4, "{what}: differs from PyTorch by {d}");
}

fn import(from: &Path, arch: &str, out: &Path, data: &Path) -> Output {
    biaslab(
        &[
            "import",
            "--from",
            from.to_str().unwrap(),
            "--arch",
            arch,
            "--out",
            out.to_str().unwrap(),
        ],
        data,
    )
}

/// Imports `file` from `dir` into `dir/run`, which must succeed; the record and the loaded run.
fn imported(dir: &Path, file: &str, arch: &str, run: &str) -> (ImportRecord, Trainer) {
    let run = dir.join(run);
    let o = import(&dir.join(file), arch, &run, dir);
    assert!(o.status.success(), "importing {file} failed");
    let record = ImportRecord::read(&run).unwrap().expect("import.json");
    (record, Trainer::resume(&run).unwrap())
}

#[test]
fn torchvision_and_swav_checkpoints_give_pytorchs_features() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    torch_reference(dir);
    let reference = read_state_dict(&dir.join("reference.pt")).unwrap().tensors;
    let x = &reference["inputs"];
    assert_eq!(x.size(), vec![3, 3, 224, 224]);

    // torchvision ResNet-18, zip format: backbone only, its classifier unused
    let (r, t) = imported(dir, "resnet18.pth", "resnet18", "run18");
    assert_eq!(r.format, "torch zip");
    assert!(!r.projection_head && !r.prototypes);
    assert_eq!(
        r.unused,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );
    assert_eq!(r.bn_batch_counters, 20);
    assert_close(
        "ResNet-18",
        &t.embed(x, EmbedLayer::Backbone),
        &reference["rn18"],
    );

    // the same weights saved in float16 load into the f32 model
    let (_, t) = imported(dir, "rn18_half.pt", "resnet18", "run18-half");
    assert_close(
        "ResNet-18 float16 file",
        &t.embed(x, EmbedLayer::Backbone),
        &reference["rn18_half"],
    );

    // main_swav.py checkpoint, legacy format, `module.` prefixes, nested under `state_dict`
    let (r, t) = imported(dir, "swav_rn50.pth.tar", "resnet50", "run50");
    assert_eq!(r.format, "torch legacy");
    assert_eq!(r.nested_under.as_deref(), Some("state_dict"));
    assert!(r.projection_head && r.prototypes && r.unused.is_empty());
    // 265 = torchvision ResNet-50's parameters and BN statistics, less its 53 batch counters and fc
    assert_eq!(r.backbone_tensors, 265);
    assert_eq!((t.config().hidden_mlp, t.config().feat_dim), (256, 32));
    assert_eq!(t.config().nmb_prototypes, vec![30]);
    assert_close(
        "SwAV ResNet-50",
        &t.embed(x, EmbedLayer::Backbone),
        &reference["rn50"],
    );
    assert_close(
        "SwAV projection",
        &t.embed(x, EmbedLayer::Projector),
        &reference["rn50_projection"],
    );
    assert!(t
        .prototype_argmax(x)
        .equal(&reference["rn50_codes"].to_kind(Kind::Int64)));

    // a second import into the same directory needs --force
    let o = import(
        &dir.join("resnet18.pth"),
        "resnet18",
        &dir.join("run50"),
        dir,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds an imported run"));
    let (from, run50) = (dir.join("resnet18.pth"), dir.join("run50"));
    let (from, out) = (from.to_str().unwrap(), run50.to_str().unwrap());
    let args = [
        "import", "--from", from, "--arch", "resnet18", "--out", out, "--force",
    ];
    assert!(biaslab(&args, dir).status.success());
    assert_eq!(
        ImportRecord::read(&run50).unwrap().unwrap().arch,
        Arch::Resnet18
    );
}

#[test]
fn imported_runs_embed_images_and_refuse_what_the_file_lacked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    torch_reference(dir);
    let data = dir.join("data");
    common::fixtures(&data);
    let run = dir.join("run18");
    assert!(import(&dir.join("resnet18.pth"), "resnet18", &run, &data)
        .status
        .success());
    let embed_stamps = |out: &Path, extra: &[&str]| {
        let mut args = vec!["embed", "--run", run.to_str().unwrap(), "--data", "stamps"];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        biaslab(&args, &data)
    };
    let out: PathBuf = dir.join("stamps.parquet");
    let o = embed_stamps(&out, &[]);
    // the fixtures hold one broken file: listed, exit status 1
    assert_eq!(o.status.code(), Some(1));
    let df = read_parquet(&out).unwrap();
    assert_eq!(df.height(), 15);
    // no prototypes in a torchvision file: no codes
    assert_eq!(df.column("prototype").unwrap().null_count(), 15);
    let o = embed_stamps(&dir.join("p.parquet"), &["--layer", "projector"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no projector layer"));

    // wrong architecture: the error names the file, the missing names and the likely cause
    let o = import(&dir.join("resnet18.pth"), "resnet50", &dir.join("x"), &data);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resnet18.pth")
            && err.contains("layer1.0.conv3.weight")
            && err.contains("does the file hold a resnet50"),
        "{err}"
    );
    // not a checkpoint at all
    let bogus = dir.join("notes.pth");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let o = import(&bogus, "resnet18", &dir.join("y"), &data);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a torch.save file"));
    // a truncated zip checkpoint
    let bytes = std::fs::read(dir.join("resnet18.pth")).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = import(&cut, "resnet18", &dir.join("z"), &data);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cut.pth"));
}
