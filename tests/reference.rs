//! biaslab against its PyTorch reference harness (benches/reference.py, run with the project virtualenv).
//!
//! The comparison is on identical inputs to the pure pieces of a training step, not on whole runs: the
//! harness draws its crops with torchvision/PIL and biaslab with its own pipeline (other RNG streams and
//! resamplers), so no two runs see the same batch. What a step computes after the crops is compared here
//! (the optimiser in each mode, Sinkhorn at regime R's ε) or in tests/train.rs (Sinkhorn at ε 0.05, the SwAV
//! and NT-Xent losses, against PyTorch numbers).
use std::path::{Path, PathBuf};
use std::process::Command;

use biaslab::augment::{MultiCropConfig, MultiCropTransform};
use biaslab::cli::train::multicrop_for;
use biaslab::interop::import::read_state_dict;
use biaslab::rng::{seeded_rng, Mixing};
use biaslab::train::{sinkhorn, Lars, Method, Optimizer, TrainConfig};
use tch::{nn, nn::VarStore, Device, Kind, Tensor};

/// The project virtualenv's python: $VIRTUAL_ENV, else `.venv` in the repository (`make setup`).
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = match std::env::var_os("VIRTUAL_ENV") {
        Some(v) => PathBuf::from(v).join("bin/python"),
        None => root.join(".venv/bin/python"),
    };
    assert!(
        py.exists(),
        "{} is missing: run `make setup` (the test compares with PyTorch)",
        py.display()
    );
    py
}

/// Runs `benches/reference.py case` and reads what it wrote.
fn harness_case(dir: &Path) -> std::collections::BTreeMap<String, Tensor> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join("benches/reference.py"))
        .args(["case", "--out"])
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "reference.py case failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_state_dict(&dir.join("case.pt")).unwrap().tensors
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// A VarStore holding `init.*` of the case under the harness's parameter names.
fn store(case: &std::collections::BTreeMap<String, Tensor>) -> (VarStore, Vec<(String, Tensor)>) {
    let vs = VarStore::new(Device::Cpu);
    let mut params = Vec::new();
    for (key, value) in case {
        let Some(name) = key.strip_prefix("init.") else {
            continue;
        };
        let parts: Vec<&str> = name.split('.').collect();
        let mut path = vs.root();
        for part in &parts[..parts.len() - 1] {
            path = &path / *part;
        }
        let v = path.var(parts[parts.len() - 1], &value.size(), nn::Init::Const(0.0));
        tch::no_grad(|| v.shallow_clone().copy_(value));
        params.push((name.to_string(), v));
    }
    assert!(params.len() > 20, "case holds {} parameters", params.len());
    (vs, params)
}

#[test]
fn optimiser_steps_match_the_reference_harness_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let case = harness_case(dir.path());
    let hyper = Vec::<f64>::try_from(&case["hyper"]).unwrap();
    let lrs = Vec::<f64>::try_from(&case["lrs"]).unwrap();
    let (wd, eta, momentum) = (hyper[0], hyper[1], hyper[2]);
    for (mode, optimizer, exclude) in [
        ("lars_all", Optimizer::Lars, false),
        ("lars_excl", Optimizer::Lars, true),
        ("sgd", Optimizer::Sgd, false),
    ] {
        let (vs, params) = store(&case);
        let cfg = TrainConfig {
            optimizer,
            exclude_bias_n_norm: exclude,
            wd,
            trust_coefficient: eta,
            momentum,
            ..TrainConfig::default()
        };
        let mut opt = Lars::for_config(&vs, &cfg);
        for (s, &lr) in lrs.iter().enumerate() {
            Lars::zero_grad(&vs);
            // the gradient of Σ p·g with respect to p is g
            let loss = params
                .iter()
                .map(|(n, p)| (p * &case[&format!("grad{s}.{n}")]).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            loss.backward();
            // freeze_prototypes_niters = 1, as the trainer skips them
            opt.step(&vs, lr, |n| s == 0 && n.starts_with("prototypes"));
        }
        let mut worst = (0.0, String::new());
        for (n, p) in &params {
            let d = max_diff(p, &case[&format!("{mode}.{n}")]);
            if d > worst.0 {
                worst = (d, n.clone());
            }
        }
        eprintln!(
            "{mode}: max |biaslab − harness| = {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 < 1e-5, "{mode}: {} differs by {}", worst.1, worst.0);
        // the modes differ from each other, so the comparison above can tell them apart
        if mode != "lars_all" {
            let d = max_diff(&params[1].1, &case[&format!("lars_all.{}", params[1].0)]);
            assert!(d > 1e-3, "{mode} equals lars_all on {}", params[1].0);
        }
    }
}

#[test]
fn sinkhorn_matches_the_reference_harness_at_regime_r_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let case = harness_case(dir.path());
    let q = sinkhorn(&case["sinkhorn.scores"], 0.02, 3);
    let d = max_diff(&q, &case["sinkhorn.q"]);
    eprintln!("Sinkhorn ε 0.02: max |biaslab − harness| = {d:.2e}");
    assert!(d < 1e-4, "Sinkhorn differs by {d}");
}

#[test]
fn default_crop_recipe_is_unchanged_and_jitter_strength_scales_it() {
    // defaults: exactly the recipe biaslab used before the keys existed (the demo reproduces)
    let cfg = TrainConfig::default();
    assert_eq!(multicrop_for(&cfg), MultiCropConfig::scaled(64, 2, 32, 4));
    let simclr = TrainConfig {
        method: Method::Simclr,
        crops: biaslab::augment::CropRecipe {
            nmb_crops: vec![2],
            size_crops: vec![32],
            min_scale_crops: vec![0.08],
            max_scale_crops: vec![1.0],
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    assert_eq!(multicrop_for(&simclr), MultiCropConfig::simclr(32));
    // regime R's half-strength jitter reaches both methods
    for base in [cfg, simclr] {
        let soft = TrainConfig {
            crops: biaslab::augment::CropRecipe {
                jitter_strength: 0.5,
                jitter_prob: 0.6,
                grayscale_prob: 0.1,
                blur_prob: 0.0,
                ..base.crops.clone()
            },
            ..base
        };
        let m = multicrop_for(&soft);
        let j = m.recipe.jitter();
        assert_eq!(
            (j.brightness, j.contrast, j.saturation, j.hue),
            (0.4, 0.4, 0.4, 0.1)
        );
        assert_eq!(
            (
                m.recipe.jitter_prob,
                m.recipe.grayscale_prob,
                m.recipe.blur_prob
            ),
            (0.6, 0.1, 0.0)
        );
        // blur_prob 0 turns blur off
        let img =
            image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9]));
        let t = MultiCropTransform::new(m).unwrap();
        for i in 0..20 {
            for (_, trace) in
                t.apply_traced(&img, None, &mut seeded_rng(Mixing::SplitMixChain, 3, 0, i))
            {
                assert_eq!(trace.blur_sigma, None);
            }
        }
    }
}
