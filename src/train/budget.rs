//! The memory one training step needs, estimated from the config before anything is allocated, and the
//! budget it must fit in: settings that would exhaust the machine (`size_crops = [20000]`, `nmb_prototypes =
//! [1000000000]`, `queue_length = 100000000`) are refused with the estimate instead of aborting in libtorch
//! minutes later. The estimate is arithmetic on the architecture in f64, so no setting can overflow it.
//!
//! It counts every tensor the forward pass produces as kept until the backward pass (libtorch frees some at
//! once, its allocator keeps some), which lands close to the peak measured: the default config 1.05 GiB
//! estimated, 1.08 GiB peak resident; a width-32 ResNet-50 at 160 + 96 px 4.56 GiB estimated, 4.26 GiB
//! measured (CPU, `/usr/bin/time`). The budget is the whole machine, so a refusal means the step cannot fit;
//! a config that passes may still not fit while other programs hold most of the memory.
use tch::Device;

use super::config::{Method, TrainConfig};
use crate::error::{Error, Result};
use crate::model::Arch;

/// fp32 everywhere: fp16 autocast on CUDA halves only part of the activations, and not on the CPU.
const BYTES_PER_FLOAT: f64 = 4.0;
/// Copies of every parameter a step keeps: the weight, its gradient, the LARS momentum buffer, the update's
/// temporaries and the checkpoint's serialised copy (trainer.rs, lars.rs, checkpoint.rs).
const PARAMETER_COPIES: f64 = 5.0;
/// Batches of crops alive at once: the loader's channel of `prefetch` (2, loader.rs) + 2 being made and
/// used, and the trainer's fp32 copy of the one it trains on.
const LOADER_BATCHES: f64 = 5.0;
/// Tensors of the prototype scores `[V·B, K]` per head: the scores, their fp32 cast, the log-softmax of the
/// loss and its gradient (trainer.rs, swav_loss.rs).
const SCORE_COPIES: f64 = 4.0;
/// Tensors of `[B + L, K]` alive in one Sinkhorn call: the scores with the queue's, exp(scores/ε) and its
/// normalisations (sinkhorn.rs).
const SINKHORN_COPIES: f64 = 5.0;
/// Memory of one CUDA device when the config trains on one: libtorch has no query for it, so the largest
/// single accelerator sold today (NVIDIA B200, 192 GB HBM3e). Settings beyond it cannot fit any GPU.
const CUDA_DEVICE_BYTES: f64 = 192e9;
/// The process before its first step: libtorch's code and thread pools, the run's bookkeeping (measured
/// 166 MB peak resident for `train --max-steps 0`), rounded up.
const PROCESS_BYTES: f64 = 0.25 * GIB;
/// Bytes in a GiB, for the messages.
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one training step of a config needs, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Feature maps of the backbone and the projection head kept for the backward pass, for every crop of
    /// one batch, plus the gradient of the largest map.
    pub activations: f64,
    /// Backbone, projection head and prototypes, with gradients, momentum and update temporaries.
    pub parameters: f64,
    /// The feature queue (`[n_assign, queue_length, feat_dim]`) and the copy one push makes.
    pub queue: f64,
    /// Prototype scores of every crop and the Sinkhorn iterations over the batch and the queue.
    pub scores: f64,
    /// Crops in flight between the loader and the step.
    pub loader: f64,
    /// The process itself (libtorch, threads): [`PROCESS_BYTES`].
    pub process: f64,
    /// Parameter count of the model (backbone, head, prototypes).
    pub parameter_count: f64,
}

impl MemoryEstimate {
    pub fn total(&self) -> f64 {
        self.activations + self.parameters + self.queue + self.scores + self.loader + self.process
    }
}

/// How much memory a step may take, and where that number comes from (named in the refusal).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub bytes: f64,
    pub source: String,
}

/// Output side of a convolution or pooling window (PyTorch's floor formula).
fn out_side(h: f64, kernel: f64, stride: f64, padding: f64) -> f64 {
    ((h + 2.0 * padding - kernel) / stride).floor().max(0.0) + 1.0
}

/// Elements of the feature maps one image of side `s` produces in the backbone (every conv, BN, ReLU and
/// residual output, as resnet.rs builds them), and the largest single map.
pub fn backbone_maps(arch: Arch, width: i64, small_images: bool, s: i64) -> (f64, f64) {
    let w = width as f64;
    let mut total = 0.0;
    let mut largest: f64 = 0.0;
    let mut add = |maps: f64, c: f64, h: f64| {
        total += maps * c * h * h;
        largest = largest.max(c * h * h);
    };
    let mut h = s as f64;
    if small_images {
        // 3×3 stride-1 stem: conv, BN, ReLU at full resolution
        add(3.0, w, h);
    } else {
        h = out_side(h, 7.0, 2.0, 3.0);
        add(3.0, w, h);
        h = out_side(h, 3.0, 2.0, 1.0);
        add(1.0, w, h);
    }
    let (counts, expansion) = (arch.blocks_per_stage(), arch.expansion() as f64);
    let mut c_in = w;
    for (layer, &blocks) in counts.iter().enumerate() {
        let c_mid = w * f64::from(1u32 << layer);
        let c_out = c_mid * expansion;
        for block in 0..blocks {
            let stride = if layer > 0 && block == 0 { 2.0 } else { 1.0 };
            let h_out = out_side(h, 3.0, stride, 1.0);
            match arch {
                Arch::Resnet18 => {
                    // conv1, bn1, relu, conv2, bn2
                    add(3.0, c_mid, h_out);
                    add(2.0, c_mid, h_out);
                }
                Arch::Resnet50 => {
                    // 1×1 conv, bn, relu at the input side; 3×3 (strided) conv, bn, relu; 1×1 conv, bn
                    add(3.0, c_mid, h);
                    add(3.0, c_mid, h_out);
                    add(2.0, c_out, h_out);
                }
            }
            if stride != 1.0 || c_in != c_out {
                // downsample conv and BN
                add(2.0, c_out, h_out);
            }
            // residual sum and ReLU
            add(2.0, c_out, h_out);
            c_in = c_out;
            h = h_out;
        }
    }
    (total, largest)
}

/// Parameters (and BN running statistics) of the backbone as resnet.rs builds it.
fn backbone_parameters(arch: Arch, width: i64, small_images: bool) -> f64 {
    let w = width as f64;
    let conv = |k: f64, c_in: f64, c_out: f64| k * k * c_in * c_out;
    // BN: weight, bias, running mean and variance
    let bn = |c: f64| 4.0 * c;
    let stem_k = if small_images { 3.0 } else { 7.0 };
    let mut p = conv(stem_k, 3.0, w) + bn(w);
    let (counts, expansion) = (arch.blocks_per_stage(), arch.expansion() as f64);
    let mut c_in = w;
    for (layer, &blocks) in counts.iter().enumerate() {
        let c_mid = w * f64::from(1u32 << layer);
        let c_out = c_mid * expansion;
        for block in 0..blocks {
            let stride = layer > 0 && block == 0;
            p += match arch {
                Arch::Resnet18 => {
                    conv(3.0, c_in, c_mid) + bn(c_mid) + conv(3.0, c_mid, c_mid) + bn(c_mid)
                }
                Arch::Resnet50 => {
                    conv(1.0, c_in, c_mid)
                        + bn(c_mid)
                        + conv(3.0, c_mid, c_mid)
                        + bn(c_mid)
                        + conv(1.0, c_mid, c_out)
                        + bn(c_out)
                }
            };
            if stride || c_in != c_out {
                p += conv(1.0, c_in, c_out) + bn(c_out);
            }
            c_in = c_out;
        }
    }
    p
}

/// The memory one training step of `cfg` needs (see the module doc for what is counted).
pub fn estimate(cfg: &TrainConfig) -> MemoryEstimate {
    let f = |x: i64| x as f64;
    let b = f(cfg.batch_size);
    let d = f(cfg.feat_dim);
    let hidden = f(cfg.hidden_mlp);
    // as ModelConfig::backbone_dim, in f64: a width near i64::MAX must not overflow here
    let backbone_dim = f(cfg.width)
        * 8.0
        * match cfg.arch {
            Arch::Resnet18 => 1.0,
            Arch::Resnet50 => 4.0,
        };
    let prototypes: f64 = cfg.nmb_prototypes.iter().map(|&k| f(k)).sum();
    let k_max = cfg.nmb_prototypes.iter().map(|&k| f(k)).fold(0.0, f64::max);
    let groups = || cfg.crops.nmb_crops.iter().zip(&cfg.crops.size_crops);
    let crops: f64 = cfg.crops.nmb_crops.iter().map(|&n| n as f64).sum();

    let mut maps = 0.0;
    let mut largest: f64 = 0.0;
    let mut pixels = 0.0;
    for (&n, &s) in groups() {
        let (per_image, big) = backbone_maps(cfg.arch, cfg.width, cfg.small_images, s);
        let images = n as f64 * b;
        maps += images * per_image;
        // the backbone runs once per crop size, on all of that group's crops together
        largest = largest.max(images * big);
        pixels += images * 3.0 * f(s) * f(s);
    }
    // projection head per crop: pooled features, hidden layer (linear, BN, ReLU), embedding, its norm
    let head = crops * b * (backbone_dim + 3.0 * hidden + 2.0 * d);
    let activations = (maps + 2.0 * largest + head) * BYTES_PER_FLOAT;

    let head_parameters = if cfg.hidden_mlp == 0 {
        backbone_dim * d + d
    } else {
        backbone_dim * hidden + hidden + 4.0 * hidden + hidden * d + d
    };
    let parameter_count = backbone_parameters(cfg.arch, cfg.width, cfg.small_images)
        + head_parameters
        + d * prototypes;
    // a momentum encoder (MoCo's key encoder, DINO's teacher) is one more copy of the weights, without
    // gradients or optimiser state, and its forward pass holds the largest feature map at a time
    let momentum_copy = if cfg.method.has_momentum_encoder() {
        parameter_count + 2.0 * largest
    } else {
        0.0
    };
    let parameters = (parameter_count * PARAMETER_COPIES + momentum_copy) * BYTES_PER_FLOAT;

    let swav = cfg.method == Method::Swav;
    let queue_length = if swav {
        f(cfg.queue_length.max(0))
    } else {
        0.0
    };
    let n_assign = cfg.crops_for_assign.len() as f64;
    let queue = if queue_length > 0.0 {
        (n_assign + 1.0) * queue_length * d * BYTES_PER_FLOAT
    } else if cfg.method != Method::Swav {
        cfg.method.state_floats(cfg) * BYTES_PER_FLOAT
    } else {
        0.0
    };
    let sinkhorn = if swav {
        SINKHORN_COPIES * (b + queue_length) * k_max
    } else {
        0.0
    };
    let scores = (SCORE_COPIES * crops * b * prototypes + sinkhorn) * BYTES_PER_FLOAT;
    let loader = LOADER_BATCHES * pixels * BYTES_PER_FLOAT;
    MemoryEstimate {
        activations,
        parameters,
        queue,
        scores,
        loader,
        process: PROCESS_BYTES,
        parameter_count,
    }
}

/// Physical memory of this machine, lowered to the control group's limit when the process runs in a
/// container with one (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`).
pub fn host_budget() -> Budget {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let mut budget = if pages > 0 && page > 0 {
        Budget {
            bytes: pages as f64 * page as f64,
            source: "this machine has".into(),
        }
    } else {
        // no answer (an exotic libc): no machine limit, only the absurd is refused
        Budget {
            bytes: CUDA_DEVICE_BYTES,
            source: "the largest machine biaslab assumes has".into(),
        }
    };
    for (file, what) in [
        (
            "/sys/fs/cgroup/memory.max",
            "this container may use (cgroup memory.max)",
        ),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "this container may use (cgroup memory.limit_in_bytes)",
        ),
    ] {
        // "max" or an unset v1 limit (close to 2^63) is no limit
        let limit = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|b| b as f64);
        if let Some(limit) = limit.filter(|&l| l > 0.0 && l < budget.bytes) {
            budget = Budget {
                bytes: limit,
                source: what.into(),
            };
        }
    }
    budget
}

/// The budget of the device `cfg.device` names: host memory on the CPU, a fixed device size on CUDA
/// (`auto` is whichever this machine has).
pub fn budget_for(cfg: &TrainConfig) -> Budget {
    match crate::device::parse(&cfg.device) {
        Ok(Device::Cuda(_)) => Budget {
            bytes: CUDA_DEVICE_BYTES,
            source: "the largest GPU has (192 GB, NVIDIA B200)".into(),
        },
        _ => host_budget(),
    }
}

/// `x` bytes in GiB as the messages print it: one decimal when small, whole numbers, then powers of ten.
pub fn gib(x: f64) -> String {
    let g = x / GIB;
    if g < 100.0 {
        format!("{g:.1}")
    } else if g < 1e7 {
        format!("{g:.0}")
    } else {
        format!("{g:.1e}")
    }
}

/// A part of the estimate: in MiB below one GiB (so small parts do not read "0.0 GiB"), else as [`gib`].
fn size(x: f64) -> String {
    if x < GIB {
        format!("{:.0} MiB", x / (1024.0 * 1024.0))
    } else {
        format!("{} GiB", gib(x))
    }
}

/// A count as people read it: 849136, 6.5 million, 1.3e11.
fn count(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.0}")
    } else if x < 1e9 {
        format!("{:.1} million", x / 1e6)
    } else {
        format!("{x:.1e}")
    }
}

/// The setting a too-large part of the estimate comes from, with its value as the config file writes it:
/// the one that grows that part the most over the defaults.
fn culprit(cfg: &TrainConfig, e: &MemoryEstimate) -> (&'static str, String) {
    let base = TrainConfig::default();
    let ratio = |a: f64, b: f64| a / b.max(1.0);
    let max_size = cfg.crops.size_crops.iter().copied().max().unwrap_or(0) as f64;
    let base_size = base.crops.size_crops.iter().copied().max().unwrap_or(1) as f64;
    let crops: f64 = cfg.crops.nmb_crops.iter().map(|&n| n as f64).sum();
    let protos: f64 = cfg.nmb_prototypes.iter().map(|&k| k as f64).sum();
    let base_protos: f64 = base.nmb_prototypes.iter().map(|&k| k as f64).sum();
    let candidates: Vec<(&'static str, f64)> = if e.queue >= e.total() / 2.0 {
        vec![
            (
                "queue_length",
                ratio(cfg.queue_length as f64, base.queue_length as f64),
            ),
            ("feat_dim", ratio(cfg.feat_dim as f64, base.feat_dim as f64)),
        ]
    } else if e.parameters >= e.total() / 2.0 {
        vec![
            // the backbone grows with width², the head with hidden_mlp · width
            (
                "width",
                ratio((cfg.width as f64).powi(2), (base.width as f64).powi(2)),
            ),
            (
                "hidden_mlp",
                ratio(cfg.hidden_mlp as f64, base.hidden_mlp as f64),
            ),
            ("nmb_prototypes", ratio(protos, base_protos)),
            ("feat_dim", ratio(cfg.feat_dim as f64, base.feat_dim as f64)),
        ]
    } else if e.scores >= e.total() / 2.0 {
        vec![
            ("nmb_prototypes", ratio(protos, base_protos)),
            (
                "batch_size",
                ratio(cfg.batch_size as f64, base.batch_size as f64),
            ),
            (
                "queue_length",
                ratio(cfg.queue_length as f64, base.queue_length as f64),
            ),
        ]
    } else {
        vec![
            (
                "size_crops",
                ratio(max_size * max_size, base_size * base_size),
            ),
            ("nmb_crops", ratio(crops, base.total_crops() as f64)),
            (
                "batch_size",
                ratio(cfg.batch_size as f64, base.batch_size as f64),
            ),
            ("width", ratio(cfg.width as f64, base.width as f64)),
            (
                "hidden_mlp",
                ratio(cfg.hidden_mlp as f64, base.hidden_mlp as f64),
            ),
        ]
    };
    let field = candidates
        .iter()
        .copied()
        .fold(("size_crops", f64::NEG_INFINITY), |best, c| {
            if c.1 > best.1 {
                c
            } else {
                best
            }
        })
        .0;
    let value = match field {
        "size_crops" => format!("{:?}", cfg.crops.size_crops),
        "nmb_crops" => format!("{:?}", cfg.crops.nmb_crops),
        "nmb_prototypes" => format!("{:?}", cfg.nmb_prototypes),
        "batch_size" => cfg.batch_size.to_string(),
        "width" => cfg.width.to_string(),
        "hidden_mlp" => cfg.hidden_mlp.to_string(),
        "feat_dim" => cfg.feat_dim.to_string(),
        _ => cfg.queue_length.to_string(),
    };
    (field, value)
}

/// Refuses `cfg` when one training step would need more memory than `budget`; the error names the setting
/// that grew it most, the estimate by part and the budget.
pub fn check_fits(cfg: &TrainConfig, origin: &str, budget: &Budget) -> Result<()> {
    let e = estimate(cfg);
    // NaN cannot come from validated settings; refuse it all the same rather than let it pass
    if e.total() <= budget.bytes {
        return Ok(());
    }
    let (field, value) = culprit(cfg, &e);
    let arch = match cfg.arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet50 => "resnet50",
    };
    // f64: `check_fits` may be handed a config whose crop count overflows usize (Display prints 6.0 as 6)
    let crops: f64 = cfg.crops.nmb_crops.iter().map(|&n| n as f64).sum();
    let mut parts = vec![format!(
        "activations {} for batch {} × {crops} crops at {:?} px through a width-{} {arch}",
        size(e.activations),
        cfg.batch_size,
        cfg.crops.size_crops,
        cfg.width,
    )];
    parts.push(format!(
        "{} parameters with gradients and momentum {}",
        count(e.parameter_count),
        size(e.parameters)
    ));
    if e.queue > 0.0 {
        parts.push(format!("queue {}", size(e.queue)));
    }
    parts.push(format!("prototype scores and Sinkhorn {}", size(e.scores)));
    parts.push(format!("crops in flight {}", size(e.loader)));
    parts.push(format!("libtorch {}", size(e.process)));
    Err(Error::config(
        origin,
        field,
        format!(
            "{field} {value}: one training step would need ~{} GiB ({}), more than the {} GiB {}",
            gib(e.total()),
            parts.join(", "),
            gib(budget.bytes),
            budget.source
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_is_torchvisions() {
        // torchvision resnet18(): 11,689,512 parameters, of which fc is 513,000; BN running statistics
        // add 2 × 4,800 buffers (sum of BN channels over the network)
        let p = backbone_parameters(Arch::Resnet18, 64, false);
        assert_eq!(p, 11_689_512.0 - 513_000.0 + 2.0 * 4_800.0);
        // torchvision resnet50(): 25,557,032 parameters, fc 2,049,000; BN channels 26,560
        let p = backbone_parameters(Arch::Resnet50, 64, false);
        assert_eq!(p, 25_557_032.0 - 2_049_000.0 + 2.0 * 26_560.0);
    }

    #[test]
    fn default_config_fits_a_small_machine_and_absurd_ones_do_not() {
        let small = Budget {
            bytes: 4.0 * GIB,
            source: "a test machine has".into(),
        };
        let c = TrainConfig::default();
        check_fits(&c, "defaults", &small).unwrap();
        assert!(estimate(&c).total() > 0.2 * GIB, "{:?}", estimate(&c));
        let mut big = TrainConfig::default();
        big.crops.size_crops = vec![20000, 32];
        let err = check_fits(&big, "t.toml", &small).unwrap_err().to_string();
        assert!(
            err.contains("invalid `size_crops`") && err.contains("size_crops [20000, 32]"),
            "{err}"
        );
        assert!(
            err.contains("more than the 4.0 GiB a test machine has"),
            "{err}"
        );
    }
}
