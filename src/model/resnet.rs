//! ResNet-18/50 backbones with torchvision's parameter names (`conv1`, `bn1`, `layer1.0.conv1`, …,
//! `downsample.0/1`) so a torchvision state dict loads as is; after the pooled features, no `fc`.
//! Pattern: tch-rs src/vision/resnet.rs. Adds a width option and a small-image stem.
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::config::{Arch, ModelConfig};

fn conv2d(p: nn::Path, c_in: i64, c_out: i64, ksize: i64, padding: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, ksize, cfg)
}

fn downsample(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::SequentialT {
    if stride != 1 || c_in != c_out {
        nn::seq_t()
            .add(conv2d(&p / "0", c_in, c_out, 1, 0, stride))
            .add(nn::batch_norm2d(&p / "1", c_out, Default::default()))
    } else {
        nn::seq_t()
    }
}

fn basic_block(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT {
    let conv1 = conv2d(&p / "conv1", c_in, c_out, 3, 1, stride);
    let bn1 = nn::batch_norm2d(&p / "bn1", c_out, Default::default());
    let conv2 = conv2d(&p / "conv2", c_out, c_out, 3, 1, 1);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_out, Default::default());
    let ds = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train);
        (xs.apply_t(&ds, train) + ys).relu()
    })
}

fn bottleneck_block(p: nn::Path, c_in: i64, c_mid: i64, stride: i64) -> impl ModuleT {
    // torchvision Bottleneck: expansion 4, stride on the 3×3 conv (ResNet v1.5)
    let c_out = 4 * c_mid;
    let conv1 = conv2d(&p / "conv1", c_in, c_mid, 1, 0, 1);
    let bn1 = nn::batch_norm2d(&p / "bn1", c_mid, Default::default());
    let conv2 = conv2d(&p / "conv2", c_mid, c_mid, 3, 1, stride);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_mid, Default::default());
    let conv3 = conv2d(&p / "conv3", c_mid, c_out, 1, 0, 1);
    let bn3 = nn::batch_norm2d(&p / "bn3", c_out, Default::default());
    let ds = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train)
            .relu()
            .apply(&conv3)
            .apply_t(&bn3, train);
        (xs.apply_t(&ds, train) + ys).relu()
    })
}

fn layer(
    p: nn::Path,
    arch: Arch,
    c_in: i64,
    c_mid: i64,
    stride: i64,
    cnt: i64,
) -> (nn::SequentialT, i64) {
    let expansion = arch.expansion();
    let mut seq = nn::seq_t();
    let mut c = c_in;
    for i in 0..cnt {
        let s = if i == 0 { stride } else { 1 };
        let sub = &p / i.to_string().as_str();
        seq = match arch {
            Arch::Resnet18 => seq.add(basic_block(sub, c, c_mid, s)),
            Arch::Resnet50 => seq.add(bottleneck_block(sub, c, c_mid, s)),
        };
        c = c_mid * expansion;
    }
    (seq, c)
}

/// A backbone: images `[N, 3, H, W]` → pooled features `[N, dim]`.
#[derive(Debug)]
pub struct Backbone {
    net: nn::FuncT<'static>,
    pub dim: i64,
}

impl Backbone {
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply_t(&self.net, train)
    }
}

/// Builds the backbone under `p` (the root for torchvision names).
pub fn resnet(p: &nn::Path, cfg: &ModelConfig) -> Backbone {
    let counts = cfg.arch.blocks_per_stage();
    let w = cfg.width;
    let small = cfg.small_images;
    // torchvision stem: 7×7 stride 2 + max-pool; CIFAR stem (He et al. 2016 §4.2): 3×3 stride 1, no pool
    let conv1 = if small {
        conv2d(p / "conv1", 3, w, 3, 1, 1)
    } else {
        conv2d(p / "conv1", 3, w, 7, 3, 2)
    };
    let bn1 = nn::batch_norm2d(p / "bn1", w, Default::default());
    let (l1, c) = layer(p / "layer1", cfg.arch, w, w, 1, counts[0]);
    let (l2, c) = layer(p / "layer2", cfg.arch, c, 2 * w, 2, counts[1]);
    let (l3, c) = layer(p / "layer3", cfg.arch, c, 4 * w, 2, counts[2]);
    let (l4, dim) = layer(p / "layer4", cfg.arch, c, 8 * w, 2, counts[3]);
    let net = nn::func_t(move |xs, train| {
        let ys = xs.apply(&conv1).apply_t(&bn1, train).relu();
        let ys = if small {
            ys
        } else {
            ys.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
        };
        ys.apply_t(&l1, train)
            .apply_t(&l2, train)
            .apply_t(&l3, train)
            .apply_t(&l4, train)
            .adaptive_avg_pool2d([1, 1])
            .flat_view()
    });
    Backbone { net, dim }
}
