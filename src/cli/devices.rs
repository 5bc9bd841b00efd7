//! `biaslab devices`: what this binary sees — the libtorch it runs on, whether the CUDA backend is loaded
//! and why not, the CUDA devices — so a GPU job can check its footing before it trains.
use std::process::ExitCode;

use clap::Args;

use crate::device::{library_dir, load_cuda_backend, CudaBackend};

#[derive(Debug, Args)]
pub struct DevicesArgs {}

pub fn run(_: &DevicesArgs) -> anyhow::Result<ExitCode> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let torch = library_dir(&maps, "libtorch_cpu.so").map_or_else(
        || "not found in /proc/self/maps".into(),
        |d| d.display().to_string(),
    );
    println!("libtorch: {torch}");
    let backend = match load_cuda_backend() {
        Ok(CudaBackend::Skipped) => "not loaded (no NVIDIA driver, or BIASLAB_CUDA=0)".to_string(),
        Ok(CudaBackend::AlreadyLoaded) => "loaded (linked)".to_string(),
        Ok(CudaBackend::Loaded(p)) => format!("loaded from {}", p.display()),
        Ok(CudaBackend::NotInstalled(d)) => {
            format!(
                "absent: no libtorch_cuda.so in {} (a CPU-only PyTorch)",
                d.display()
            )
        }
        Err(e) => format!("failed to load: {e}"),
    };
    println!("CUDA backend: {backend}");
    let n = tch::Cuda::device_count();
    println!("CUDA devices: {n}");
    if n > 0 {
        println!("cuDNN: {}", tch::Cuda::cudnn_is_available());
    }
    println!("threads: {}", tch::get_num_threads());
    Ok(ExitCode::SUCCESS)
}
