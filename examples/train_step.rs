//! Step-time benchmark, the Rust side of benches/train_step.py: ms per SwAV step (forward, Sinkhorn, loss,
//! backward, LARS) for a width-16 small-image ResNet-18 on 2×32 px + 2×16 px crops, and the Sinkhorn share.
//!
//! Run: cargo run --release --example train_step -- [threads] [steps] [batch] [device]
//! and compare with: python benches/train_step.py --threads N --steps S --batch B
use biaslab::train::{TrainConfig, Trainer};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: i32 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let batch: i64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let device = args.get(4).cloned().unwrap_or_else(|| "cpu".into());
    // warm-up steps excluded from the timing (allocator, first-call kernel selection)
    let warmup = 3;
    tch::set_num_threads(threads);
    let cfg = TrainConfig {
        crops: biaslab::augment::CropRecipe {
            nmb_crops: vec![2, 2],
            size_crops: vec![32, 16],
            min_scale_crops: vec![0.14, 0.05],
            max_scale_crops: vec![1.0, 0.14],
            ..Default::default()
        },
        nmb_prototypes: vec![100],
        feat_dim: 128,
        hidden_mlp: 512,
        width: 16,
        batch_size: batch,
        queue_length: 0,
        freeze_prototypes_niters: 0,
        epochs: 1,
        steps_per_epoch: steps + warmup,
        warmup_epochs: 0,
        device: device.clone(),
        ..Default::default()
    };
    let dev = cfg.parse_device("bench")?;
    let mut t = Trainer::new(cfg.clone(), dev)?;
    tch::manual_seed(1);
    let crops: Vec<Tensor> = (0..cfg.total_crops())
        .map(|v| {
            let s = cfg.crop_size(v).unwrap_or(16);
            Tensor::rand([batch, 3, s, s], (Kind::Float, Device::Cpu)).to_device(dev)
        })
        .collect();
    for _ in 0..warmup {
        t.train_step(&crops)?;
    }
    let (mut total, mut sk) = (0.0, 0.0);
    for _ in 0..steps {
        let m = t.train_step(&crops)?;
        total += m.seconds;
        sk += m.sinkhorn_seconds;
    }
    let ms = total / steps as f64 * 1e3;
    println!("tch ms_per_step={ms:.2} sinkhorn_share={:.4} threads={threads} batch={batch} width=16 device={device}", sk / total);
    Ok(())
}
