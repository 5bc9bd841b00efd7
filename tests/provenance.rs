//! What every result says about where it came from: the machine a run or an experiment ran on
//! (`machine.json`, train.log's first line; issue 20 §5: numbers are deterministic per machine, not across
//! CPUs), a `dataset` name per folder (issue 23 §4: `A/imgs` and `B2/imgs` were pooled as one), and no
//! panic text on stderr for a panic the library caught (issue 23 §2).
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use biaslab::analyze::embed::CropMode;
use biaslab::analyze::embeddings::{read_embeddings, row, write_embeddings_with_k};
use biaslab::machine::{Machine, MachineLog, MACHINE_FILE};
use biaslab::pipeline::train::{fitted_config, LOG_FILE};
use biaslab::pipeline::{dataset_name, embed, train, EmbedRequest, Env, TrainRequest};
use biaslab::run_dir::EmbedLayer;
use biaslab::train::Trainer;
use image::{Rgb, RgbImage};
use tch::Device;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn biaslab_in(cwd: &Path, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_biaslab"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BIASLAB_DATA")
        .output()
        .expect("the biaslab binary runs");
    eprintln!(
        "$ (cd {} && biaslab {})\n{}",
        cwd.display(),
        args.join(" "),
        text(&o)
    );
    o
}

fn train_request(tmp: &Path) -> TrainRequest {
    let cfg = biaslab::train::TrainConfig {
        epochs: 1,
        warmup_epochs: 0,
        ..common::tiny_train_config()
    };
    let (config, _) = fitted_config(cfg, "test").unwrap();
    TrainRequest {
        data: vec!["stamps".into()],
        out: tmp.join("run"),
        config,
        compare: None,
        resume: false,
        max_steps: None,
        checkpoint_every: None,
        knn_train: None,
        knn_test: None,
        knn_test_fraction: 0.2,
        object_crops: false,
        max_images: None,
    }
}

/// The capabilities `torch.backends.cpu.get_cpu_capability()` names on the CPUs biaslab runs on.
const CAPABILITIES: [&str; 6] = ["DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"];

fn check_machine(m: &Machine) {
    assert_eq!(m.biaslab_version, env!("CARGO_PKG_VERSION"));
    assert!(CAPABILITIES.contains(&m.cpu_capability.as_str()), "{m:?}");
    assert!(m.logical_cores >= 1 && m.torch_threads >= 1, "{m:?}");
    assert!(!m.arch.is_empty() && m.started_unix > 0, "{m:?}");
    if Path::new("/proc/cpuinfo").is_file() && cfg!(target_arch = "x86_64") {
        assert!(m.cpu_model.is_some(), "{m:?}");
    }
}

// Issue 20 §5: a run's provenance records the machine: machine.json with a session per start and resume,
// and train.log's first line of each session says it.
#[test]
fn train_records_the_machine_of_every_session_in_machine_json_and_train_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let env = Env::cpu(&data, 2);
    tch::set_num_threads(2);
    let req = train_request(tmp.path());
    // Stopped before its first step, then resumed to the end: two sessions.
    let stopped = Env {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..env.clone()
    };
    let r = train(&stopped, &req, &mut ()).unwrap();
    assert!(r.interrupted, "{r:?}");
    let resume = TrainRequest {
        resume: true,
        ..req.clone()
    };
    let r = train(&env, &resume, &mut ()).unwrap();
    assert!(r.resumed && !r.interrupted, "{r:?}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(req.out.join(MACHINE_FILE)).unwrap()).unwrap();
    let sessions = json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{json}");
    assert_eq!(
        (sessions[0]["kind"].as_str(), sessions[1]["kind"].as_str()),
        (Some("start"), Some("resume"))
    );
    assert_eq!(sessions[0]["step"], 0);
    for key in [
        "biaslab_version",
        "torch_version",
        "cpu_model",
        "logical_cores",
        "torch_threads",
        "cpu_capability",
        "cpu_capability_source",
    ] {
        assert!(sessions[1].get(key).is_some(), "{key} missing: {json}");
    }
    assert_eq!(sessions[1]["torch_threads"], 2, "{json}");
    let log = MachineLog::read(&req.out).unwrap();
    let m = log.last().unwrap();
    check_machine(m);

    // Each session's log begins with the machine it ran on.
    let train_log = std::fs::read_to_string(req.out.join(LOG_FILE)).unwrap();
    assert!(
        train_log.lines().next().unwrap().contains("machine: "),
        "{train_log}"
    );
    let machine_lines: Vec<&str> = train_log
        .lines()
        .filter(|l| l.contains("machine: "))
        .collect();
    assert_eq!(machine_lines.len(), 2, "{train_log}");
    assert!(
        machine_lines[1].contains(&format!("CPU capability {}", m.cpu_capability)),
        "{train_log}"
    );
}

// The capability is derived as ATen derives it (tch does not expose `at::get_cpu_capability`): it must be
// what torch itself says on this machine, with the same version, when the project's PyTorch is at hand.
#[test]
fn derived_cpu_capability_and_torch_version_are_torchs_own() {
    let Some(venv) = std::env::var_os("VIRTUAL_ENV") else {
        eprintln!("no VIRTUAL_ENV: nothing to compare with");
        return;
    };
    let python = Path::new(&venv).join("bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            "import torch; print(torch.backends.cpu.get_cpu_capability()); print(torch.__version__)",
        ])
        .output();
    let Some(o) = o.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "{} cannot import torch: nothing to compare with",
            python.display()
        );
        return;
    };
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    let mut lines = said.lines();
    let (capability, version) = (lines.next().unwrap(), lines.next().unwrap());
    let _ = tch::get_num_threads(); // libtorch is loaded
    let m = Machine::detect();
    assert_eq!(m.cpu_capability, capability, "{m:?}");
    assert_eq!(m.torch_version.as_deref(), Some(version), "{m:?}");
}

// Issue 20 §5: an experiment's --out records the machine too, even when no cell applies.
#[test]
fn experiment_run_records_the_machine_in_its_out_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("grid.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"g\"\n[grid]\ndata = [\"d\"]\nmethod = [\"byol\"]\ncrops = [\"mc\"]\nseed = [0]\n{}{}[evaluate]\n",
            common::TINY_GRID_TRAIN,
            common::TINY_TWO_VIEWS
        ),
    )
    .unwrap();
    let o = biaslab_in(
        tmp.path(),
        &[
            "experiment",
            "run",
            "grid.toml",
            "--out",
            "out",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "no cell applies: {}", text(&o));
    assert!(text(&o).contains("machine: "), "{}", text(&o));
    let log = MachineLog::read(&tmp.path().join("out")).unwrap();
    assert_eq!(log.sessions.len(), 1, "{log:?}");
    assert_eq!(log.sessions[0].kind, "run");
    check_machine(log.last().unwrap());
}

/// `n` small distinct images in a flat folder.
fn flat_folder(dir: &Path, n: u32, shade: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        RgbImage::from_fn(40, 40, |x, y| {
            Rgb([shade, (x * 6) as u8, (y * 6 + i * 20) as u8])
        })
        .save(dir.join(format!("img{i}.png")))
        .unwrap();
    }
}

fn dataset_values(parquet: &Path) -> Vec<String> {
    let mut v: Vec<String> = read_embeddings(parquet).unwrap().datasets;
    v.sort();
    v.dedup();
    v
}

// Issue 23 §4: two folders with one base name (`A/imgs`, `B2/imgs`) got one `dataset` value and were
// pooled as one dataset by analyze. Under the data dir they are named by their path relative to it, by a
// relative path as given, and elsewhere by name and a hash of the canonical path.
#[test]
fn two_folders_named_imgs_get_distinct_dataset_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    for (parent, shade) in [("A", 10), ("B2", 200)] {
        flat_folder(&data.join(parent).join("imgs"), 3, shade);
        flat_folder(&root.join(parent).join("imgs"), 3, shade);
        flat_folder(&root.join("elsewhere").join(parent).join("imgs"), 3, shade);
    }
    let run = root.join("run");
    Trainer::new(common::tiny_train_config(), Device::Cpu)
        .unwrap()
        .save_checkpoint(&run)
        .unwrap();
    let env = Env::cpu(&data, 2);
    let embed_as = |dataset: &str, out: &str| {
        let r = embed(
            &env,
            &EmbedRequest {
                run: run.clone(),
                dataset: dataset.into(),
                crops: CropMode::Image,
                layer: EmbedLayer::Backbone,
                size: None,
                batch_size: 4,
                annotations: None,
                shard: None,
                split: None,
                out: root.join(out),
            },
            &mut (),
        )
        .unwrap();
        dataset_values(&r.out)
    };
    // By name under the data dir: the path relative to it.
    assert_eq!(embed_as("A/imgs", "a.parquet"), ["A/imgs"]);
    assert_eq!(embed_as("B2/imgs/", "b.parquet"), ["B2/imgs"]);
    // By absolute path outside the data dir: the folder's name and a hash of where it is.
    let a = embed_as(
        root.join("elsewhere/A/imgs").to_str().unwrap(),
        "ea.parquet",
    );
    let b = embed_as(
        root.join("elsewhere/B2/imgs").to_str().unwrap(),
        "eb.parquet",
    );
    assert_ne!(a, b);
    for name in a.iter().chain(&b) {
        assert!(
            name.starts_with("imgs-") && name.len() == "imgs-".len() + 8,
            "{name}"
        );
    }
    // The binary, the command: relative paths from the working directory, then analyze pools them
    // as two datasets.
    for (dir, out) in [("A/imgs", "ra.parquet"), ("B2/imgs/", "rb.parquet")] {
        let o = biaslab_in(
            root,
            &["embed", "--run", "run", "--data", dir, "--out", out],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(dataset_values(&root.join("ra.parquet")), ["A/imgs"]);
    assert_eq!(dataset_values(&root.join("rb.parquet")), ["B2/imgs"]);
    // By absolute path inside the (default) data dir: the name it has when given by name.
    let inside = data.join("A/imgs");
    let o = biaslab_in(
        root,
        &[
            "embed",
            "--run",
            "run",
            "--data",
            inside.to_str().unwrap(),
            "--out",
            "da.parquet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(dataset_values(&root.join("da.parquet")), ["A/imgs"]);
    // A registry-style name keeps its name; a run directory keeps its folder's name.
    assert_eq!(dataset_name(&data.join("stamps"), "stamps"), "stamps");
    assert_eq!(dataset_name(&run, run.to_str().unwrap()), "run");
}

/// Panics the test process saw (any thread), to find a file that makes polars panic.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The byte range of a Parquet file's footer (the Thrift metadata before its length and `PAR1`).
fn footer_range(b: &[u8]) -> std::ops::Range<usize> {
    let n = b.len();
    let len = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
    n - 8 - len..n - 8
}

// Issue 23 §2: a hostile footer made polars panic; the library catches it and fails cleanly, but Rust's
// panic message ("thread … panicked at …", the backtrace hint) was printed first. Now a caught panic
// prints nothing and the error names the file.
#[test]
fn caught_polars_panic_prints_no_panic_message() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..12)
        .map(|i| {
            row(
                i,
                &format!("img{}", i / 2),
                Some(["a", "b", "c"][i % 3]),
                Some((i % 4) as i32),
                vec![(0.7 * i as f32).sin(), 0.3, 0.1 * i as f32],
            )
        })
        .collect();
    let valid = tmp.path().join("valid.parquet");
    write_embeddings_with_k(&valid, &rows, Some(4)).unwrap();
    let file = std::fs::read(&valid).unwrap();
    let hostile = tmp.path().join("hostile.parquet");
    // Find a byte of the footer that makes the reader panic and the library catch it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Ordering::SeqCst);
    }));
    let mut found = false;
    'search: for at in footer_range(&file) {
        for v in [0xff, 0x00, 0x7f, 0x80, 0x3f, 0x0f] {
            let mut b = file.clone();
            b[at] = v;
            std::fs::write(&hostile, &b).unwrap();
            let before = PANICS.load(Ordering::SeqCst);
            let read = read_embeddings(&hostile);
            if read.is_err() && PANICS.load(Ordering::SeqCst) > before {
                found = true;
                break 'search;
            }
        }
    }
    std::panic::set_hook(default_hook);
    assert!(
        found,
        "no footer byte made the Parquet reader panic: nothing to test"
    );
    let out = tmp.path().join("report");
    let o = biaslab_in(
        tmp.path(),
        &[
            "analyze",
            "collapse",
            "--embeddings",
            hostile.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("hostile.parquet"), "{t}");
    assert!(
        !t.contains("panicked at") && !t.contains("internal error"),
        "{t}"
    );
    assert!(!t.contains("RUST_BACKTRACE"), "{t}");
}
