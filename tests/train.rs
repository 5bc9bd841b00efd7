//! Integration tests of the SwAV/SimCLR trainer on synthetic tensors: Sinkhorn and losses against PyTorch,
//! LARS against a hand computation, config validation, overfitting, checkpoints and bit-exact resume.
mod common;

use std::collections::BTreeMap;

use biaslab::error::Error;
use biaslab::interop::import::import_checkpoint;
use biaslab::model::{Arch, ModelConfig, SwavModel};
use biaslab::train::checkpoint;
use biaslab::train::lars::Lars;
use biaslab::train::loss_scale::LossScaler;
use biaslab::train::metrics::{COL_LOSS, COL_STEP, METRICS_FILE};
use biaslab::train::trainer::{EmbedLayer, FitOptions};
use biaslab::train::{lr_at, simclr_loss, sinkhorn, swav_loss, Method, TrainConfig, Trainer};
use common::crops_for;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

/// U(−1, 1) values from a seeded ChaCha stream (not tch's global generator, which parallel tests share).
fn uniform(seed: u64, shape: &[i64]) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_slice(&data).reshape(shape)
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).flatten(0, -1);
    Vec::<f64>::try_from(&t).unwrap()
}

/// sin(a·i + b) over i = 0..n in float64, then cast to float32 (as the Python snippets do).
fn wave(n: i64, a: f64, b: f64, cos: bool) -> Tensor {
    let x = Tensor::arange(n, (Kind::Double, Device::Cpu)) * a + b;
    let y = if cos { x.cos() } else { x.sin() };
    y.to_kind(Kind::Float)
}

// Reference (PyTorch 2.11, the SwAV reference's distributed_sinkhorn on one process):
//   S = torch.sin(0.37*torch.arange(12, dtype=torch.float64)+0.1).reshape(4,3).float()*0.9
//   Q = torch.exp(S/0.05).t(); Q /= Q.sum()
//   for _ in range(3): Q /= Q.sum(1,keepdim=True); Q /= 3; Q /= Q.sum(0,keepdim=True); Q /= 4
//   (Q*4).t().flatten().tolist()
#[test]
fn sinkhorn_matches_pytorch_reference() {
    let s = wave(12, 0.37, 0.1, false).reshape([4, 3]) * 0.9;
    let q = to_vec(&sinkhorn(&s, 0.05, 3));
    let expected = [
        2.590902795418515e-06,
        0.009171957150101662,
        0.9908254742622375,
        0.042228467762470245,
        0.8273207545280457,
        0.1304508000612259,
        0.970888614654541,
        0.02908368781208992,
        2.767568003037013e-05,
        0.983208179473877,
        0.016676314175128937,
        0.00011550903582246974,
    ];
    for (i, (a, e)) in q.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() < 1e-5 + 1e-4 * e.abs(),
            "Q[{i}] = {a}, PyTorch {e}"
        );
    }
}

#[test]
fn sinkhorn_marginals() {
    let (b, k) = (64, 10);
    let s = uniform(3, &[b, k]);
    // after the last column step, every sample's code sums to 1
    let q = sinkhorn(&s, 0.05, 3);
    for r in to_vec(&q.sum_dim_intlist([1i64].as_slice(), false, Kind::Float)) {
        assert!((r - 1.0).abs() < 1e-5, "sample row sums to {r}");
    }
    // with enough iterations every prototype gets B/K of the mass (equipartition)
    let q = sinkhorn(&s, 0.05, 200);
    for c in to_vec(&q.sum_dim_intlist([0i64].as_slice(), false, Kind::Float)) {
        assert!(
            (c - b as f64 / k as f64).abs() < 1e-3,
            "prototype mass {c}, expected {}",
            b as f64 / k as f64
        );
    }
}

#[test]
fn sinkhorn_does_not_overflow_at_small_epsilon() {
    let s = uniform(4, &[32, 20]);
    // the reference's first line, exp(S/ε), overflows in float32 here (e^100 > f32::MAX)
    let naive = (&s / 0.01).exp();
    assert!(
        to_vec(&naive).iter().any(|x| x.is_infinite()),
        "fixture no longer overflows the naive form"
    );
    let q = sinkhorn(&s, 0.01, 3);
    let v = to_vec(&q);
    assert!(
        v.iter().all(|x| x.is_finite() && *x >= 0.0),
        "non-finite or negative code"
    );
    for r in to_vec(&q.sum_dim_intlist([1i64].as_slice(), false, Kind::Float)) {
        assert!((r - 1.0).abs() < 1e-4, "row sum {r}");
    }
}

// Reference (PyTorch 2.11, main_swav.py's loss with sinkhorn above, 3 crops, crops_for_assign [0,1], τ 0.1):
//   out = [torch.cos(0.23*torch.arange(12,dtype=torch.float64)*(v+1)+v).reshape(4,3).float() for v in range(3)]
//   loss = 0
//   for c in [0,1]:
//       q = sk(out[c]); sub = 0
//       for v in range(3):
//           if v != c: sub -= torch.mean(torch.sum(q*torch.log_softmax(out[v]/0.1, dim=1), dim=1))
//       loss += sub/2
//   loss /= 2   # → 4.317201614379883
#[test]
fn swav_loss_matches_pytorch_reference() {
    let out: Vec<Tensor> = (0..3)
        .map(|v| {
            let x = Tensor::arange(12, (Kind::Double, Device::Cpu)) * (0.23 * (v + 1) as f64)
                + v as f64;
            x.cos().to_kind(Kind::Float).reshape([4, 3])
        })
        .collect();
    let cfa = [0usize, 1];
    let q: Vec<Tensor> = cfa.iter().map(|&c| sinkhorn(&out[c], 0.05, 3)).collect();
    let loss = swav_loss(&out, &q, &cfa, 0.1).double_value(&[]);
    assert!((loss - 4.317201614379883).abs() < 1e-4, "loss {loss}");
}

// Reference (PyTorch 2.11):
//   z1 = torch.sin(0.11*torch.arange(20,dtype=torch.float64)+0.3).reshape(4,5).float()
//   z2 = torch.cos(0.17*torch.arange(20,dtype=torch.float64)+0.5).reshape(4,5).float()
//   z = F.normalize(torch.cat([z1,z2]), dim=1); sim = z@z.t()/t; sim.fill_diagonal_(-inf)
//   F.cross_entropy(sim, torch.cat([torch.arange(4)+4, torch.arange(4)]))  # t=0.1 → 14.181427955627441, t=0.5 → 3.7431437969207764
#[test]
fn simclr_loss_matches_pytorch_reference() {
    let z1 = wave(20, 0.11, 0.3, false).reshape([4, 5]);
    let z2 = wave(20, 0.17, 0.5, true).reshape([4, 5]);
    let l1 = simclr_loss(&z1, &z2, 0.1).double_value(&[]);
    let l5 = simclr_loss(&z1, &z2, 0.5).double_value(&[]);
    assert!((l1 - 14.181427955627441).abs() < 1e-4, "τ 0.1: {l1}");
    assert!((l5 - 3.7431437969207764).abs() < 1e-5, "τ 0.5: {l5}");
}

#[test]
fn lars_matches_hand_computation() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w0 = [0.5f64, -1.0, 2.0, 0.25];
    let b0 = [0.1f64, -0.2];
    let w = vs.root().var_copy(
        "w",
        &Tensor::from_slice(&w0).to_kind(Kind::Float).reshape([2, 2]),
    );
    let b = vs
        .root()
        .var_copy("b", &Tensor::from_slice(&b0).to_kind(Kind::Float));
    let (wd, lr, mom, trust) = (0.01, 0.5, 0.9, 0.001);
    let mut opt = Lars::new(&vs, mom, wd, trust);
    let cw = [1.0f64, 2.0, -3.0, 0.5];
    let cb = [4.0f64, -1.0];
    // hand computation in f64: grads are cw and cb (loss = Σ w·cw + Σ b·cb)
    let mut hw = w0.to_vec();
    let mut hb = b0.to_vec();
    let mut bufw = [0.0f64; 4];
    let mut bufb = [0.0f64; 2];
    for _ in 0..3 {
        Lars::zero_grad(&vs);
        let loss = (&w * Tensor::from_slice(&cw).to_kind(Kind::Float).reshape([2, 2]))
            .sum(Kind::Float)
            + (&b * Tensor::from_slice(&cb).to_kind(Kind::Float)).sum(Kind::Float);
        loss.backward();
        opt.step(&vs, lr, |_| false);
        let pn = hw.iter().map(|x| x * x).sum::<f64>().sqrt();
        let gn = cw.iter().map(|x| x * x).sum::<f64>().sqrt();
        let a = trust * pn / (gn + pn * wd + 1e-8);
        for i in 0..4 {
            let d = (cw[i] + wd * hw[i]) * a;
            bufw[i] = mom * bufw[i] + d;
            hw[i] -= lr * bufw[i];
        }
        // the bias is excluded: plain momentum SGD, no weight decay
        for i in 0..2 {
            bufb[i] = mom * bufb[i] + cb[i];
            hb[i] -= lr * bufb[i];
        }
    }
    for (a, e) in to_vec(&w).iter().zip(&hw) {
        assert!((a - e).abs() < 1e-6, "w {a} vs hand {e}");
    }
    for (a, e) in to_vec(&b).iter().zip(&hb) {
        assert!((a - e).abs() < 1e-5, "b {a} vs hand {e}");
    }
    assert!((to_vec(&opt.buffers["b"])[0] - bufb[0]).abs() < 1e-5);
}

#[test]
fn schedule_warmup_then_cosine() {
    // numpy: np.linspace(0.1, 1.0, 4) → 0.1, 0.4, 0.7, 1.0, then final + ½(base−final)(1+cos(πt/T)), T = 6
    let f = |s| lr_at(s, 10, 4, 0.1, 1.0, 0.0);
    for (s, e) in [
        (0, 0.1),
        (1, 0.4),
        (2, 0.7),
        (3, 1.0),
        (4, 1.0),
        (7, 0.5),
        (10, 0.0),
        (50, 0.0),
    ] {
        assert!((f(s) - e).abs() < 1e-12, "lr({s}) = {}, expected {e}", f(s));
    }
    let t = 2.0;
    assert!((f(6) - 0.5 * (1.0 + (std::f64::consts::PI * t / 6.0).cos())).abs() < 1e-12);
}

fn field_of(e: Error) -> String {
    match e {
        Error::Config { field, .. } => field,
        other => panic!("expected a config error, got {other}"),
    }
}

#[test]
fn config_validation_names_the_field() {
    assert!(TrainConfig::default().validate("t").is_ok());
    let cases: Vec<(&str, Box<dyn Fn(&mut TrainConfig)>)> = vec![
        ("size_crops", Box::new(|c| c.crops.size_crops = vec![64])),
        (
            "min_scale_crops",
            Box::new(|c| c.crops.min_scale_crops = vec![0.14]),
        ),
        ("queue_length", Box::new(|c| c.queue_length = 33)),
        (
            "crops_for_assign",
            Box::new(|c| c.crops_for_assign = vec![0, 6]),
        ),
        ("epsilon", Box::new(|c| c.epsilon = 0.0)),
        ("nmb_prototypes", Box::new(|c| c.nmb_prototypes = vec![])),
        ("feat_dim", Box::new(|c| c.feat_dim = 0)),
        ("device", Box::new(|c| c.device = "tpu".into())),
        (
            "nmb_crops",
            Box::new(|c| {
                c.method = Method::Simclr;
                c.queue_length = 0;
            }),
        ),
        // SwAV's queue set for a method without one is refused, not ignored
        ("queue_length", Box::new(|c| c.method = Method::Moco)),
    ];
    for (field, edit) in cases {
        let mut c = TrainConfig::default();
        edit(&mut c);
        let err = c.validate("run.toml").expect_err(field);
        let msg = err.to_string();
        assert!(msg.starts_with("run.toml"), "{msg}");
        assert_eq!(field_of(err), field);
    }
}

#[test]
fn resnet_parameter_names_and_sizes_match_torchvision() {
    // torchvision 0.26: {k: v for k, v in resnet18().state_dict().items() if not fc. and not num_batches_tracked}
    //   resnet18 → 100 tensors, 11,186,112 values; resnet50 → 265 tensors, 23,561,152 values
    for (arch, n, total) in [
        (Arch::Resnet18, 100usize, 11_186_112i64),
        (Arch::Resnet50, 265, 23_561_152),
    ] {
        let cfg = ModelConfig {
            arch,
            nmb_prototypes: vec![10],
            ..Default::default()
        };
        // the seeded builder holds the init lock, so this test cannot disturb other tests' seeded inits
        let (vs, _m) = SwavModel::new_seeded(&cfg, 0, Device::Cpu);
        let vars: BTreeMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("projection_head") && !k.starts_with("prototypes"))
            .collect();
        assert_eq!(vars.len(), n, "{arch:?}");
        assert_eq!(
            vars.values().map(|t| t.numel() as i64).sum::<i64>(),
            total,
            "{arch:?}"
        );
        for name in [
            "conv1.weight",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
        ] {
            assert!(vars.contains_key(name), "{arch:?} lacks {name}");
        }
    }
}

fn tiny_cfg() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        base_lr: 0.5,
        final_lr: 0.005,
        warmup_epochs: 0,
        freeze_prototypes_niters: 1,
        ..common::tiny_train_config()
    }
}

#[test]
fn loss_falls_when_overfitting_a_few_images() {
    tch::set_num_threads(1);
    let cfg = TrainConfig {
        freeze_prototypes_niters: 0,
        base_lr: 2.0,
        final_lr: 2.0,
        epochs: 1,
        steps_per_epoch: 20,
        ..tiny_cfg()
    };
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let crops = crops_for(&cfg, 0, 0);
    let losses: Vec<f64> = (0..20)
        .map(|_| t.train_step(&crops).unwrap().loss)
        .collect();
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[17..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.9 * first, "loss did not fall: {losses:?}");
}

/// Regression: `nmb_crops = [1, 1]` (two views, each at its own group's size) passed validate but the
/// loader's recipe turned it into two crops of the first size, so the first step failed on crop 1's
/// shape. The crops now come from `cfg.multicrop()` exactly as the loader makes them, and a step runs.
#[test]
fn simclr_two_groups_of_one_view_train_at_their_own_sizes() {
    tch::set_num_threads(1);
    let cfg = TrainConfig {
        method: Method::Simclr,
        crops: biaslab::augment::CropRecipe {
            nmb_crops: vec![1, 1],
            size_crops: vec![24, 16],
            min_scale_crops: vec![0.14, 0.05],
            max_scale_crops: vec![1.0, 0.14],
            ..Default::default()
        },
        ..tiny_cfg()
    };
    cfg.validate("test").unwrap();
    let mc = cfg.multicrop();
    assert_eq!(mc.crop_sizes(), vec![24, 16]);
    let transform = biaslab::augment::MultiCropTransform::new(mc).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let b = cfg.batch_size as usize;
    let mut per_view: Vec<Vec<f32>> = vec![Vec::new(); 2];
    for i in 0..b {
        let img = image::RgbImage::from_fn(40, 32, |x, y| {
            image::Rgb([
                (x * 6 + i as u32 * 20) as u8,
                (y * 7) as u8,
                ((x + y) * 3) as u8,
            ])
        });
        for (v, crop) in transform
            .apply(&img, None, &mut rng)
            .into_iter()
            .enumerate()
        {
            per_view[v].extend(crop);
        }
    }
    let crops: Vec<Tensor> = per_view
        .iter()
        .zip([24i64, 16])
        .map(|(data, s)| Tensor::from_slice(data).reshape([b as i64, 3, s, s]))
        .collect();
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let m = t.train_step(&crops).unwrap();
    assert!(m.loss.is_finite() && m.loss > 0.0, "{}", m.loss);
}

#[test]
fn simclr_loss_falls_when_overfitting() {
    tch::set_num_threads(1);
    let cfg = TrainConfig {
        method: Method::Simclr,
        crops: biaslab::augment::CropRecipe {
            nmb_crops: vec![2],
            size_crops: vec![16],
            min_scale_crops: vec![0.14],
            max_scale_crops: vec![1.0],
            ..Default::default()
        },
        base_lr: 2.0,
        final_lr: 2.0,
        epochs: 1,
        steps_per_epoch: 20,
        ..tiny_cfg()
    };
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let crops = crops_for(&cfg, 0, 0);
    let losses: Vec<f64> = (0..20)
        .map(|_| t.train_step(&crops).unwrap().loss)
        .collect();
    assert!(
        losses[17..].iter().sum::<f64>() < 0.9 * losses[..3].iter().sum::<f64>(),
        "{losses:?}"
    );
}

#[test]
fn nan_loss_is_an_error_naming_the_step_and_leaves_weights() {
    let cfg = tiny_cfg();
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    t.train_step(&crops_for(&cfg, 0, 0)).unwrap();
    let before = t.state_tensors();
    let mut crops = crops_for(&cfg, 0, 1);
    crops[2] = crops[2].fill(f64::NAN);
    let err = t
        .train_step(&crops)
        .expect_err("NaN crops must fail")
        .to_string();
    assert!(err.contains("at step 1"), "{err}");
    for (n, v) in t.state_tensors() {
        assert!(v.equal(&before[&n]), "{n} changed on a failed step");
    }
}

#[test]
fn wrong_crop_shape_is_an_error() {
    let cfg = tiny_cfg();
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let mut crops = crops_for(&cfg, 0, 0);
    crops[3] = Tensor::zeros([6, 3, 24, 24], (Kind::Float, Device::Cpu));
    let err = t.train_step(&crops).unwrap_err().to_string();
    assert!(err.contains("crop 3"), "{err}");
}

fn assert_same_state(a: &Trainer, b: &Trainer) {
    let (sa, sb) = (a.state_tensors(), b.state_tensors());
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (n, v) in &sa {
        assert!(
            v.equal(&sb[n]),
            "{n} differs after resume by {}",
            (v - &sb[n]).abs().max().double_value(&[])
        );
    }
}

#[test]
fn resume_is_bit_exact_with_queue() {
    tch::set_num_threads(1);
    let cfg = TrainConfig {
        queue_length: 12,
        ..tiny_cfg()
    };
    let mut straight = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    for i in 0..6 {
        straight.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    for i in 0..3 {
        first.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut second = Trainer::resume(dir.path()).unwrap();
    assert_eq!(second.step(), 3);
    assert!(second.state_tensors().contains_key("queue.features"));
    for i in 3..6 {
        second.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    assert!(
        straight.queue_in_use(),
        "queue never filled: test does not cover it"
    );
    assert_same_state(&straight, &second);
}

/// Loss scaling multiplies the loss by a power of two and divides the gradients back: exact, so on the
/// CPU (where autocast is off) a scaled run must equal the unscaled one bit for bit, across a resume.
#[test]
fn fp16_loss_scaling_is_exact_and_resumes() {
    tch::set_num_threads(1);
    let cfg = tiny_cfg();
    let mut plain = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    assert!(plain.scaler().is_none(), "no loss scaling without CUDA");
    for i in 0..6 {
        plain.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    let mut scaled = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    scaled.use_loss_scaler(LossScaler::default());
    for i in 0..3 {
        scaled.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    scaled.save_checkpoint(dir.path()).unwrap();
    let mut resumed = Trainer::resume(dir.path()).unwrap();
    assert_eq!(resumed.scaler().map(|s| s.good_steps), Some(3));
    for i in 3..6 {
        resumed.train_step(&crops_for(&cfg, 0, i)).unwrap();
    }
    assert_same_state(&plain, &resumed);
    let s = resumed.scaler().unwrap();
    assert_eq!((s.scale, s.good_steps, s.skipped_steps), (65536.0, 6, 0));
}

#[test]
fn fit_resumes_bit_exactly_and_writes_metrics() {
    tch::set_num_threads(1);
    let cfg = tiny_cfg();
    let batches = |c: TrainConfig| {
        move |e: usize| {
            (0..c.steps_per_epoch)
                .map(|i| Ok(crops_for(&c, e, i)))
                .collect::<Vec<Result<Vec<Tensor>, Error>>>()
        }
    };
    let d1 = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let out = a
        .fit(d1.path(), batches(cfg.clone()), &FitOptions::default())
        .unwrap();
    assert!(!out.interrupted);
    assert_eq!(out.epochs.len(), 2);
    assert_eq!(a.step(), 6);

    let d2 = tempfile::tempdir().unwrap();
    let mut b = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let opts = FitOptions {
        max_steps: Some(4),
        ..Default::default()
    };
    let out = b.fit(d2.path(), batches(cfg.clone()), &opts).unwrap();
    assert!(out.interrupted);
    assert_eq!(out.step, 4);
    drop(b);
    let mut c = Trainer::resume(d2.path()).unwrap();
    assert_eq!((c.epoch(), c.step_in_epoch()), (1, 1));
    let out = c
        .fit(d2.path(), batches(cfg.clone()), &FitOptions::default())
        .unwrap();
    assert!(!out.interrupted);
    assert_same_state(&a, &c);

    // Epoch by epoch (`until_epoch`, as `train --knn-train` runs it) ends in the same state as one call.
    let d3 = tempfile::tempdir().unwrap();
    let mut e = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    for epoch in 1..=cfg.epochs {
        let opts = FitOptions {
            until_epoch: Some(epoch),
            ..Default::default()
        };
        let out = e.fit(d3.path(), batches(cfg.clone()), &opts).unwrap();
        assert_eq!(out.epochs.len(), 1);
        assert_eq!(out.interrupted, epoch < cfg.epochs);
    }
    assert_same_state(&a, &e);

    let df = biaslab::report::io::read_parquet(&d2.path().join(METRICS_FILE)).unwrap();
    assert_eq!(df.height(), 6);
    let steps: Vec<u64> = df
        .column(COL_STEP)
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(steps, (0..6).collect::<Vec<u64>>());
    let la: Vec<f64> = a.history().iter().map(|r| r.loss).collect();
    let lc: Vec<f64> = df
        .column(COL_LOSS)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(la, lc);
}

#[test]
fn checkpoint_lists_missing_tensors() {
    let cfg = tiny_cfg();
    let t = Trainer::new(cfg, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.save_checkpoint(dir.path()).unwrap();
    let (meta, tensors) = checkpoint::load(dir.path()).unwrap();
    assert_eq!(tensors.len(), t.state_tensors().len());
    for (n, v) in t.state_tensors() {
        assert!(v.equal(&tensors[&n]), "{n} changed in the round trip");
    }
    // a meta naming tensors the file lacks must fail and list them
    let mut meta2 = meta.clone();
    meta2.tensors.push("model.layer9.conv1.weight".into());
    meta2.tensors.push("lars.extra".into());
    let mdir = checkpoint::latest_dir(dir.path()).unwrap();
    std::fs::write(
        mdir.join(checkpoint::META_FILE),
        serde_json::to_vec(&meta2).unwrap(),
    )
    .unwrap();
    let err = checkpoint::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("model.layer9.conv1.weight") && err.contains("lars.extra"),
        "{err}"
    );
}

#[test]
fn grouped_forward_equals_per_crop_forward_and_embed_shapes() {
    let cfg = tiny_cfg();
    let t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let crops = crops_for(&cfg, 0, 0);
    let grouped = tch::no_grad(|| t.model().forward_backbone(&crops, false));
    let single: Vec<Tensor> = crops
        .iter()
        .map(|c| t.embed(c, EmbedLayer::Backbone))
        .collect();
    let single = Tensor::cat(&single, 0);
    assert!(grouped.allclose(&single, 1e-5, 1e-5, false));
    let z = t.embed(&crops[0], EmbedLayer::Projector);
    assert_eq!(z.size(), vec![6, 16]);
    let norms = to_vec(&z.norm_scalaropt_dim(2, [1i64].as_slice(), false));
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
    let codes = t.prototype_argmax(&crops[0]);
    assert_eq!(codes.size(), vec![6]);
    assert!(to_vec(&codes).iter().all(|&c| (0.0..12.0).contains(&c)));
}

#[test]
fn import_reads_a_safetensors_state_dict_and_lists_missing_names() {
    // tiny_cfg's small-image ResNet-18 stem and head shapes are read back from the file
    let cfg = TrainConfig {
        arch: Arch::Resnet18,
        ..tiny_cfg()
    };
    let a = Trainer::new(cfg, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // a DDP-style state dict: "module." prefix, an fc layer the backbone does not use
    let mut named: Vec<(String, Tensor)> = a
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("module.{n}"), t))
        .collect();
    named.push((
        "fc.weight".into(),
        Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
    ));
    let path = dir.path().join("backbone.safetensors");
    Tensor::write_safetensors(&named, &path).unwrap();
    // a directory holding a trained run is never overwritten, not even with force
    a.save_checkpoint(&dir.path().join("trained")).unwrap();
    let err = import_checkpoint(&path, Arch::Resnet18, &dir.path().join("trained"), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a trained run"), "{err}");
    let run = dir.path().join("run");
    let rec = import_checkpoint(&path, Arch::Resnet18, &run, false).unwrap();
    assert_eq!(rec.unused, vec!["fc.weight".to_string()]);
    assert!(rec.projection_head && rec.prototypes);
    let b = Trainer::resume(&run).unwrap();
    let x = uniform(5, &[2, 3, 24, 24]);
    for layer in [EmbedLayer::Backbone, EmbedLayer::Projector] {
        assert!(a.embed(&x, layer).equal(&b.embed(&x, layer)));
    }
    // drop two tensors: the error lists both
    let partial: Vec<(String, Tensor)> = named
        .into_iter()
        .filter(|(n, _)| n != "module.conv1.weight" && n != "module.layer1.0.bn1.running_var")
        .collect();
    let p2 = dir.path().join("partial.safetensors");
    Tensor::write_safetensors(&partial, &p2).unwrap();
    let err = import_checkpoint(&p2, Arch::Resnet18, &dir.path().join("run2"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1.weight")
            && err.contains("layer1.0.bn1.running_var")
            && err.contains("partial.safetensors"),
        "{err}"
    );
}

#[test]
fn stop_flag_checkpoints_and_returns() {
    let cfg = tiny_cfg();
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = FitOptions {
        stop: Some(flag.clone()),
        ..Default::default()
    };
    let out = t
        .fit(
            dir.path(),
            |e| {
                let c = cfg.clone();
                let f = flag.clone();
                (0..c.steps_per_epoch).map(move |i| {
                    // raise the flag while the second batch is drawn, as Ctrl-C would
                    if i == 1 {
                        f.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(crops_for(&c, e, i))
                })
            },
            &opts,
        )
        .unwrap();
    assert!(out.interrupted);
    assert_eq!(out.step, 1);
    let r = Trainer::resume(dir.path()).unwrap();
    assert_eq!((r.epoch(), r.step_in_epoch(), r.step()), (0, 1, 1));
}

#[test]
fn collapsed_epoch_is_flagged_with_advice() {
    let cfg = TrainConfig {
        freeze_prototypes_niters: 0,
        ..tiny_cfg()
    };
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    // identical images in every crop: every sample gets the same code, i.e. one prototype takes all
    let one = uniform(9, &[1, 3, 24, 24]);
    let small = uniform(10, &[1, 3, 16, 16]);
    let crops: Vec<Tensor> = (0..4)
        .map(|v| {
            if v < 2 {
                one.repeat([6, 1, 1, 1])
            } else {
                small.repeat([6, 1, 1, 1])
            }
        })
        .collect();
    let m = t.train_step(&crops).unwrap();
    assert!(m.top_proto_share > 0.9 && m.collapsed, "{m:?}");
    assert!(m.proto_entropy.abs() < 1e-9, "{m:?}");
    let s = t.end_epoch();
    assert!(s.collapsed);
    assert!(s.advice.unwrap().contains("epsilon"));
    // varied images: codes spread, no flag
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let m = t.train_step(&crops_for(&cfg, 0, 0)).unwrap();
    assert!(m.proto_entropy > 0.5, "{m:?}");
}
