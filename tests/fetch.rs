//! End-to-end `biaslab datasets fetch` / `list` on a tiny crafted Debian package placed in the package cache
//! (no network): checks the normalised images, index.parquet, the skipped list for a corrupt image, refusal
//! of an escaping archive entry, resume from a stale `.partial`, idempotence and the sha256 pin.
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use biaslab::data::index::read_index;
use biaslab::data::DatasetKind;
use sha2::{Digest, Sha256};

const DEB: &str = "tiny-pkg_1.0-1_all.deb";

fn png(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([shade, 0, 255 - shade]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A tar header with a raw name, so the package can also carry an escaping `../` entry.
fn raw_header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// Builds `<dir>/tiny-pkg_1.0-1_all.deb` and returns its sha256 and the bytes of the two good images.
fn make_deb(dir: &Path) -> (String, Vec<u8>, Vec<u8>) {
    let cat = png(6, 4, 10);
    let dog = png(5, 7, 200);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("./usr/share/tiny/cats/whiskers.png", cat.clone()),
        ("./usr/share/tiny/dogs/rex.png", dog.clone()),
        (
            "./usr/share/tiny/dogs/corrupt.png",
            b"\x89PNG\r\n\x1a\nthis is not really a png".to_vec(),
        ),
        ("./usr/share/tiny/dogs/notes.txt", b"not an image".to_vec()),
        ("./usr/share/tiny/dogs/tiny.png", png(2, 2, 50)),
        ("./usr/share/tiny/symbols/star.png", png(8, 8, 90)),
        ("../escape.png", png(8, 8, 90)),
    ];
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (name, data) in &files {
            b.append(&raw_header(name, data.len() as u64), &data[..])
                .unwrap();
        }
        b.finish().unwrap();
    }
    let mut xz = Vec::new();
    xz2::read::XzEncoder::new(&tar_bytes[..], 6)
        .read_to_end(&mut xz)
        .unwrap();
    let deb = dir.join(DEB);
    {
        let mut a = ar::Builder::new(File::create(&deb).unwrap());
        a.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        a.append(
            &ar::Header::new(b"data.tar.xz".to_vec(), xz.len() as u64),
            &xz[..],
        )
        .unwrap();
    }
    let sha: String = Sha256::digest(std::fs::read(&deb).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (sha, cat, dog)
}

fn manifest(name: &str, sha: &str) -> String {
    format!(
        r#"
name = "{name}"
kind = "object"
licence = "CC0-1.0"

[[packages]]
registry = "debian"
package = "tiny-pkg"
version = "1.0-1"
file = "{DEB}"
sha256 = "{sha}"

[images]
root = "usr/share/tiny"
include = ["**/*"]
exclude = ["symbols/**"]
label = "parent"
min_side = 3
"#
    )
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["cache", "data", "manifests", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Env { _tmp: tmp, root }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_biaslab"))
            .args(args)
            .args(["--data-dir", "data", "--manifests", "manifests"])
            .current_dir(&self.root)
            .env("BIASLAB_CACHE", self.root.join("cache"))
            .env_remove("BIASLAB_DATA")
            // Only our fake registry clients are reachable: a test never touches the network.
            .env("PATH", self.root.join("bin"))
            .output()
            .unwrap()
    }
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn fetch_normalises_a_cached_package_and_lists_the_corrupt_image() {
    let env = Env::new();
    let (sha, cat, dog) = make_deb(&env.root.join("cache"));
    std::fs::write(env.root.join("manifests/tiny.toml"), manifest("tiny", &sha)).unwrap();
    // A stale half-built dataset from an interrupted run must not leak into the result.
    std::fs::create_dir_all(env.root.join("data/tiny.partial/images/junk")).unwrap();
    std::fs::write(
        env.root.join("data/tiny.partial/images/junk/old.png"),
        b"old",
    )
    .unwrap();

    let out = env.run(&["datasets", "fetch", "tiny"]);
    let stdout = text(&out.stdout);
    // A skipped image changes the exit status (ripgrep convention) but does not abort the fetch.
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("tiny: 2 images, 2 labels, 1 skipped, 1 below min size"),
        "{stdout}"
    );
    assert!(stdout.contains("1 archive entries refused"), "{stdout}");
    assert!(
        stdout.contains("usr/share/tiny/dogs/corrupt.png"),
        "{stdout}"
    );

    let ds = env.root.join("data/tiny");
    assert!(!env.root.join("data/tiny.partial").exists());
    assert!(!env.root.join("escape.png").exists() && !env.root.join("data/escape.png").exists());
    assert!(!ds.join("images/junk").exists());
    assert!(!ds.join(".extract").exists(), "scratch extraction removed");

    let mut recs = read_index(&ds).unwrap();
    recs.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].path, "images/cats/whiskers.png");
    assert_eq!(recs[0].label.as_deref(), Some("cats"));
    assert_eq!((recs[0].width, recs[0].height), (6, 4));
    assert_eq!(
        recs[0].source,
        "debian:tiny-pkg=1.0-1:usr/share/tiny/cats/whiskers.png"
    );
    assert_eq!(recs[0].kind, DatasetKind::Object);
    assert_eq!(recs[0].licence, "CC0-1.0");
    assert_eq!(recs[1].path, "images/dogs/rex.png");
    assert_eq!((recs[1].width, recs[1].height), (5, 7));
    assert_ne!(recs[0].id, recs[1].id);
    // Original bytes are kept, not re-encoded.
    assert_eq!(std::fs::read(ds.join(&recs[0].path)).unwrap(), cat);
    assert_eq!(std::fs::read(ds.join(&recs[1].path)).unwrap(), dog);

    let skipped = std::fs::read_to_string(ds.join("skipped.csv")).unwrap();
    let lines: Vec<&str> = skipped.lines().collect();
    assert_eq!(lines[0], "source,reason");
    assert_eq!(lines.len(), 2, "{skipped}");
    assert!(
        lines[1].starts_with("debian:tiny-pkg=1.0-1:usr/share/tiny/dogs/corrupt.png,"),
        "{skipped}"
    );

    // Idempotent: the second fetch does nothing and succeeds.
    let again = env.run(&["datasets", "fetch", "tiny"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("tiny: already fetched (2 images, 2 labels)"));

    let list = env.run(&["datasets", "list", "--format", "json"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], "tiny");
    assert_eq!(rows[0]["fetched"], true);
    assert_eq!(rows[0]["images"], 2);
    assert_eq!(rows[0]["source"], "debian:tiny-pkg=1.0-1");
    let table = text(&env.run(&["datasets", "list"]).stdout);
    assert!(
        table.lines().nth(1).unwrap().starts_with("tiny "),
        "{table}"
    );
    assert!(table.contains(" yes "), "{table}");
}

#[test]
fn fetch_refuses_a_package_whose_sha256_does_not_match_the_manifest() {
    let env = Env::new();
    let (sha, _, _) = make_deb(&env.root.join("cache"));
    let wrong: String = sha.chars().rev().collect();
    std::fs::write(
        env.root.join("manifests/tiny.toml"),
        manifest("tiny", &wrong),
    )
    .unwrap();
    // The cached file no longer matches, so fetch asks "apt-get" again; this fake one serves tampered bytes.
    let fake = env.root.join("bin/apt-get");
    let mut f = File::create(&fake).unwrap();
    writeln!(f, "#!/bin/sh\necho tampered > {DEB}").unwrap();
    drop(f);
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // A second, correct manifest over the same cached file: one failing dataset does not stop the others.
    std::fs::write(env.root.join("manifests/good.toml"), manifest("good", &sha)).unwrap();

    let out = env.run(&["datasets", "fetch", "tiny", "good"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("fetching tiny") && stderr.contains("sha256 mismatch"),
        "{stderr}"
    );
    assert!(stderr.contains(&wrong), "{stderr}");
    assert!(
        stderr.contains("1 dataset(s) could not be fetched: tiny"),
        "{stderr}"
    );
    assert!(!env.root.join("data/tiny").exists());
    assert!(
        !env.root.join("data/tiny.partial").exists(),
        "a failed build leaves nothing"
    );
    assert_eq!(read_index(&env.root.join("data/good")).unwrap().len(), 2);
    // The cache holds only the original package: the tampered download was not moved in.
    let cached: Vec<_> = std::fs::read_dir(env.root.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached, vec![std::ffi::OsString::from(DEB)]);
    assert_eq!(sha256_of(&env.root.join("cache").join(DEB)), sha);
}

#[test]
fn unknown_dataset_and_bad_manifest_fail_with_their_names() {
    let env = Env::new();
    std::fs::write(
        env.root.join("manifests/tiny.toml"),
        manifest("tiny", "abc"),
    )
    .unwrap();
    let out = env.run(&["datasets", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("tiny.toml") && stderr.contains("packages[0].sha256"),
        "{stderr}"
    );

    std::fs::write(
        env.root.join("manifests/tiny.toml"),
        manifest("tiny", &"a".repeat(64)),
    )
    .unwrap();
    let out = env.run(&["datasets", "fetch", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown dataset `nope`"));
}

fn sha256_of(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
