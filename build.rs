//! Embeds an rpath to the virtualenv's `torch/lib` so `target/release/biaslab` (and the test binaries) find
//! libtorch at run time without LD_LIBRARY_PATH. The same directory torch-sys links against.
use std::path::PathBuf;
use std::process::Command;

fn torch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    // The same interpreter torch-sys asks: the first `python3` on PATH (the project virtualenv).
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PATH");
    match torch_lib_dir() {
        Some(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display()),
        None => println!("cargo:warning=could not locate torch/lib: run `make setup` first"),
    }
}
