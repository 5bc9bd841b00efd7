//! The CUDA backend is opened at start-up (src/device.rs) and a CUDA request on a machine without one is
//! refused by name. `BIASLAB_CUDA=1` forces the load without a driver, which checks on a CPU machine that
//! the library and everything it needs resolve (RTLD_NOW) from the virtualenv's torch.
use std::process::Output;

mod common;

fn biaslab(args: &[&str], cuda: &str) -> Output {
    common::run_biaslab(args, &[("BIASLAB_CUDA", cuda)])
}

#[test]
fn cuda_backend_loads_from_the_torch_it_runs_on() {
    let o = biaslab(&["devices"], "1");
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let torch = out
        .lines()
        .find_map(|l| l.strip_prefix("libtorch: "))
        .expect("a libtorch line");
    assert!(
        out.contains(&format!(
            "CUDA backend: loaded from {torch}/libtorch_cuda.so"
        )),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).is_empty());

    let o = biaslab(&["devices"], "0");
    assert!(String::from_utf8_lossy(&o.stdout).contains("CUDA backend: not loaded"));
}

#[test]
fn cuda_without_a_device_is_refused_by_name() {
    let o = biaslab(&["devices"], "1");
    if !String::from_utf8_lossy(&o.stdout).contains("CUDA devices: 0") {
        return; // a GPU machine: nothing to refuse
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = biaslab(
        &[
            "embed",
            "--run",
            tmp.path().to_str().unwrap(),
            "--data",
            tmp.path().to_str().unwrap(),
            "--device",
            "cuda",
            "--out",
            tmp.path().join("e.parquet").to_str().unwrap(),
        ],
        "1",
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--device") && err.contains("cuda:0 is not available"),
        "{err}"
    );
}
