//! Where tensors live: parsing `--device cpu|cuda|cuda:N|auto`, and making CUDA reachable at all.
//!
//! tch links `libtorch_cuda.so` with `--as-needed`, and since nothing in biaslab calls into it directly the
//! linker drops it: on a GPU machine the binary would run with the CPU backend only and `cuda` would be
//! "not available". [`load_cuda_backend`] therefore opens it at start-up, from the directory the already
//! loaded `libtorch_cpu.so` came from, when an NVIDIA driver is present (so CPU machines pay nothing).
//! Its static initialisers register the CUDA hooks, which must happen before the first CUDA query.
use std::path::{Path, PathBuf};

use tch::Device;

use crate::error::{Error, Result};

/// `BIASLAB_CUDA=0` never loads the CUDA backend; `BIASLAB_CUDA=1` loads it even without a visible driver.
pub const CUDA_ENV: &str = "BIASLAB_CUDA";

/// Syntax only: `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `auto` (CUDA 0 when available, else CPU).
pub fn parse(spec: &str) -> std::result::Result<Device, String> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "auto" => Ok(Device::cuda_if_available()),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Ok(Device::Cuda(i)),
            _ => Err(format!("expected cpu, cuda, cuda:N or auto, got {d:?}")),
        },
    }
}

/// Parses `spec` and checks that the device exists; `origin` (a flag or a file) is named in the error.
pub fn resolve(spec: &str, origin: &str) -> Result<Device> {
    let device = parse(spec).map_err(|r| Error::config(origin, "device", r))?;
    if let Device::Cuda(i) = device {
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            let why = if n > 0 {
                format!("only {n} CUDA device(s)")
            } else if !driver_present() {
                "no NVIDIA driver on this machine".to_string()
            } else if !loaded_libraries().contains("libtorch_cuda") {
                "libtorch_cuda.so is not loaded (a CPU-only PyTorch, or BIASLAB_CUDA=0)".to_string()
            } else {
                "the CUDA runtime sees no device".to_string()
            };
            return Err(Error::config(
                origin,
                "device",
                format!("cuda:{i} is not available: {why}"),
            ));
        }
    }
    Ok(device)
}

fn driver_present() -> bool {
    Path::new("/proc/driver/nvidia/version").exists() || Path::new("/dev/nvidiactl").exists()
}

fn loaded_libraries() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
}

/// The directory of the first mapped file named `name` in a `/proc/self/maps` text.
pub fn library_dir(maps: &str, name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// What [`load_cuda_backend`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaBackend {
    /// Not tried: no driver, or `BIASLAB_CUDA=0`.
    Skipped,
    /// Already in the process (linked, or loaded before).
    AlreadyLoaded,
    Loaded(PathBuf),
    /// The torch build has no CUDA library (a CPU wheel).
    NotInstalled(PathBuf),
}

/// Opens `libtorch_cuda.so` beside the loaded `libtorch_cpu.so` when a driver is present (see the module
/// docs), once per process; call it before anything asks libtorch about CUDA. An error means the library
/// exists but could not be loaded (a missing CUDA runtime library, say); the caller reports it and
/// continues on the CPU.
pub fn load_cuda_backend() -> &'static std::result::Result<CudaBackend, String> {
    static STATE: std::sync::OnceLock<std::result::Result<CudaBackend, String>> =
        std::sync::OnceLock::new();
    STATE.get_or_init(open_cuda_backend)
}

fn open_cuda_backend() -> std::result::Result<CudaBackend, String> {
    let wanted = std::env::var(CUDA_ENV).ok();
    match wanted.as_deref() {
        Some("0") => return Ok(CudaBackend::Skipped),
        Some("1") => {}
        _ if !driver_present() => return Ok(CudaBackend::Skipped),
        _ => {}
    }
    let maps = loaded_libraries();
    if maps.contains("libtorch_cuda.so") {
        return Ok(CudaBackend::AlreadyLoaded);
    }
    let dir = library_dir(&maps, "libtorch_cpu.so")
        .ok_or("libtorch_cpu.so is not among the loaded libraries")?;
    let lib = dir.join("libtorch_cuda.so");
    if !lib.exists() {
        return Ok(CudaBackend::NotInstalled(dir));
    }
    let c_path = std::ffi::CString::new(lib.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path contains a NUL byte", lib.display()))?;
    // SAFETY: dlopen with a valid C string; the handle is deliberately never closed (the backend stays
    // registered for the life of the process).
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let msg = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown dlopen error".to_string()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!("{}: {msg}", lib.display()));
    }
    Ok(CudaBackend::Loaded(lib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_four_forms_and_names_the_bad_one() {
        assert_eq!(parse("cpu"), Ok(Device::Cpu));
        assert_eq!(parse(" cuda "), Ok(Device::Cuda(0)));
        assert_eq!(parse("cuda:3"), Ok(Device::Cuda(3)));
        assert!(parse("auto").is_ok());
        assert!(parse("gpu").unwrap_err().contains("\"gpu\""));
        assert!(parse("cuda:x").is_err());
    }

    #[test]
    fn library_dir_reads_proc_maps_lines() {
        let maps = "\
7f00-7f01 r--p 00000000 08:01 42  /usr/lib/x86_64-linux-gnu/libc.so.6
7f02-7f03 r-xp 00001000 08:01 43  /venv/site-packages/torch/lib/libtorch_cpu.so
7f04-7f05 rw-p 00000000 00:00 0
";
        assert_eq!(
            library_dir(maps, "libtorch_cpu.so"),
            Some(PathBuf::from("/venv/site-packages/torch/lib"))
        );
        assert_eq!(library_dir(maps, "libtorch_cuda.so"), None);
    }

    #[test]
    fn cuda_on_a_machine_without_it_is_a_clear_error() {
        if tch::Cuda::device_count() > 0 {
            return; // a GPU machine: nothing to refuse
        }
        let e = resolve("cuda", "--device").unwrap_err().to_string();
        assert!(
            e.contains("--device") && e.contains("cuda:0 is not available"),
            "{e}"
        );
    }
}
