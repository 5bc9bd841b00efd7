//! Safe extraction of registry packages: Debian `.deb` (an `ar` archive holding `data.tar.{xz,gz}` or an
//! uncompressed `data.tar`), npm `.tgz` and Python wheels (zip). Nothing is ever written outside the target
//! directory: entries with `..` or absolute paths are refused, links are never created (those pointing outside
//! are refused, the rest skipped), and the total number of bytes written is capped.
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Default cap on bytes written per archive: the largest package here (openclipart) unpacks to ~200 MB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// An entry that was not written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub entry: String,
    pub reason: String,
}

/// What one extraction wrote and what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub files: usize,
    pub bytes: u64,
    /// Entries refused because they would escape the target (`..`, absolute, links pointing outside).
    pub refused: Vec<Refused>,
    /// Links whose target stays inside: skipped, since links are never created.
    pub links_skipped: usize,
}

/// Extracts `archive` into `dest` (created if missing), choosing the format from the file name.
pub fn extract_package(archive: &Path, dest: &Path, max_bytes: u64) -> Result<ExtractReport> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    std::fs::create_dir_all(dest).ctx_io(dest)?;
    let mut x = Extractor {
        archive: archive.to_path_buf(),
        dest: dest.to_path_buf(),
        max_bytes,
        report: Default::default(),
    };
    if name.ends_with(".deb") {
        x.deb()?;
    } else if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        let f = File::open(archive).ctx_io(archive)?;
        x.tar(flate2::read::GzDecoder::new(f))?;
    } else if name.ends_with(".tar.xz") {
        let f = File::open(archive).ctx_io(archive)?;
        x.tar(xz2::read::XzDecoder::new(f))?;
    } else if name.ends_with(".tar") {
        x.tar(File::open(archive).ctx_io(archive)?)?;
    } else if name.ends_with(".whl") || name.ends_with(".zip") {
        x.zip()?;
    } else {
        return Err(Error::format(
            archive,
            "unknown package format (expected .deb, .tgz, .tar.gz, .tar.xz, .whl, .zip)",
        ));
    }
    Ok(x.report)
}

/// Turns an archive entry name into a relative path below the target, or says why it may not be written.
pub fn safe_relative_path(entry: &str) -> std::result::Result<PathBuf, String> {
    if entry.starts_with('/') || entry.starts_with('\\') {
        return Err("absolute path".into());
    }
    let mut out = PathBuf::new();
    for comp in Path::new(entry).components() {
        match comp {
            Component::Normal(c) => {
                if c.to_string_lossy().contains('\\') {
                    return Err("backslash in path component".into());
                }
                out.push(c)
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in path".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

/// Whether an entry name denotes the extraction root itself (`.`, `./`).
fn is_root(entry: &str) -> bool {
    !entry.is_empty()
        && !entry.starts_with('/')
        && Path::new(entry)
            .components()
            .all(|c| c == Component::CurDir)
}

/// Whether a link at `entry` with `target` resolves inside the extraction root (lexically, since links are
/// never created and so cannot chain).
fn link_stays_inside(entry: &Path, target: &str, hard: bool) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    // A symlink target is relative to the link's directory; a hardlink target to the archive root.
    let mut depth: i64 = if hard {
        0
    } else {
        entry
            .parent()
            .map(|p| p.components().count() as i64)
            .unwrap_or(0)
    };
    for comp in Path::new(target).components() {
        match comp {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

struct Extractor {
    archive: PathBuf,
    dest: PathBuf,
    max_bytes: u64,
    report: ExtractReport,
}

impl Extractor {
    fn refuse(&mut self, entry: &str, reason: impl Into<String>) {
        self.report.refused.push(Refused {
            entry: entry.to_string(),
            reason: reason.into(),
        });
    }

    fn deb(&mut self) -> Result<()> {
        let archive = self.archive.clone();
        let f = File::open(&archive).ctx_io(&archive)?;
        let mut ar = ar::Archive::new(f);
        while let Some(entry) = ar.next_entry() {
            let entry =
                entry.map_err(|e| Error::format(&archive, format!("bad ar archive: {e}")))?;
            let id = String::from_utf8_lossy(entry.header().identifier())
                .trim_end_matches('/')
                .to_string();
            match id.as_str() {
                "data.tar.xz" => return self.tar(xz2::read::XzDecoder::new(entry)),
                "data.tar.gz" => return self.tar(flate2::read::GzDecoder::new(entry)),
                "data.tar" => return self.tar(entry),
                _ => {}
            }
        }
        Err(Error::format(
            &archive,
            "no data.tar.xz, data.tar.gz or data.tar member in the .deb",
        ))
    }

    fn tar<R: Read>(&mut self, reader: R) -> Result<()> {
        let archive = self.archive.clone();
        let bad = |e: std::io::Error| Error::format(&archive, format!("bad tar stream: {e}"));
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // Debian data.tar starts with the root itself ("./"): nothing to create, nothing to refuse.
            if entry.header().entry_type().is_dir() && is_root(&name) {
                continue;
            }
            let rel = match safe_relative_path(&name) {
                Ok(r) => r,
                Err(reason) => {
                    self.refuse(&name, reason);
                    continue;
                }
            };
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if link_stays_inside(&rel, &target, kind.is_hard_link()) {
                    self.report.links_skipped += 1;
                } else {
                    let what = if kind.is_hard_link() {
                        "hardlink"
                    } else {
                        "symlink"
                    };
                    self.refuse(
                        &name,
                        format!("{what} to {target:?} points outside the target"),
                    );
                }
                continue;
            }
            if kind.is_dir() {
                let d = self.dest.join(&rel);
                std::fs::create_dir_all(&d).ctx_io(&d)?;
                continue;
            }
            if !kind.is_file() {
                // Device nodes, FIFOs, GNU long-name records already folded in by `tar`: nothing to write.
                continue;
            }
            self.write_file(&rel, &mut entry)?;
        }
        Ok(())
    }

    fn zip(&mut self) -> Result<()> {
        let archive = self.archive.clone();
        let f = File::open(&archive).ctx_io(&archive)?;
        let mut zip = zip::ZipArchive::new(f)
            .map_err(|e| Error::format(&archive, format!("bad zip archive: {e}")))?;
        for i in 0..zip.len() {
            let mut file = zip
                .by_index(i)
                .map_err(|e| Error::format(&archive, format!("bad zip entry {i}: {e}")))?;
            let name = file.name().to_string();
            let rel = match safe_relative_path(&name) {
                Ok(r) => r,
                Err(reason) => {
                    drop(file);
                    self.refuse(&name, reason);
                    continue;
                }
            };
            // Unix mode S_IFLNK (0o120000) marks a symlink whose target is the entry's content.
            let is_link = file
                .unix_mode()
                .map(|m| m & 0o170000 == 0o120000)
                .unwrap_or(false);
            if is_link {
                let mut target = String::new();
                let _ = file.by_ref().take(4096).read_to_string(&mut target);
                drop(file);
                if link_stays_inside(&rel, &target, false) {
                    self.report.links_skipped += 1;
                } else {
                    self.refuse(
                        &name,
                        format!("symlink to {target:?} points outside the target"),
                    );
                }
                continue;
            }
            if file.is_dir() {
                let d = self.dest.join(&rel);
                std::fs::create_dir_all(&d).ctx_io(&d)?;
                continue;
            }
            self.write_file(&rel, &mut file)?;
        }
        Ok(())
    }

    fn write_file(&mut self, rel: &Path, reader: &mut dyn Read) -> Result<()> {
        let path = self.dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx_io(parent)?;
        }
        // A file we wrote earlier under the same name is replaced, never followed.
        if std::fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            std::fs::remove_file(&path).ctx_io(&path)?;
        }
        let mut out = File::create(&path).ctx_io(&path)?;
        let budget = self.max_bytes - self.report.bytes;
        // Read one byte past the budget so an over-long entry is detected, not silently truncated.
        let n = std::io::copy(&mut reader.take(budget + 1), &mut out)
            .map_err(|e| Error::format(&self.archive, format!("reading {}: {e}", rel.display())))?;
        out.flush().ctx_io(&path)?;
        if n > budget {
            drop(out);
            let _ = std::fs::remove_file(&path);
            return Err(Error::UnsafeEntry {
                archive: self.archive.clone(),
                entry: rel.display().to_string(),
                reason: format!(
                    "extraction would exceed the cap of {} bytes",
                    self.max_bytes
                ),
            });
        }
        self.report.bytes += n;
        self.report.files += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar header with a raw name (the `tar` builder rightly refuses `..` and absolute names).
    fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn evil_tar(path: &Path) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        let data = b"pwned";
        for name in ["../evil", "/abs", "ok/../../evil2"] {
            b.append(
                &raw_header(name, tar::EntryType::Regular, 5, None),
                &data[..],
            )
            .unwrap();
        }
        b.append(
            &raw_header("etc", tar::EntryType::Symlink, 0, Some("/etc")),
            &[][..],
        )
        .unwrap();
        b.append(
            &raw_header("up", tar::EntryType::Symlink, 0, Some("../../..")),
            &[][..],
        )
        .unwrap();
        b.append(
            &raw_header("hard", tar::EntryType::Link, 0, Some("../outside")),
            &[][..],
        )
        .unwrap();
        b.append(
            &raw_header("hard2", tar::EntryType::Link, 0, Some("/etc/passwd")),
            &[][..],
        )
        .unwrap();
        b.append(
            &raw_header(
                "inner/link",
                tar::EntryType::Symlink,
                0,
                Some("../good.txt"),
            ),
            &[][..],
        )
        .unwrap();
        b.append(
            &raw_header("good.txt", tar::EntryType::Regular, 5, None),
            &data[..],
        )
        .unwrap();
        b.into_inner().unwrap();
    }

    fn names_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn crafted_tar_writes_nothing_outside_and_refuses_each_escape() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("evil.tar");
        evil_tar(&archive);
        let dest = root.path().join("a").join("b");
        let rep = extract_package(&archive, &dest, DEFAULT_MAX_BYTES).unwrap();
        // Only the safe file exists below dest, and nothing appeared beside or above it.
        assert_eq!(names_under(&dest), vec!["good.txt"]);
        assert_eq!(
            names_under(root.path()),
            vec!["a", "a/b", "a/b/good.txt", "evil.tar"]
        );
        assert!(!Path::new("/abs").exists());
        let reason = |e: &str| {
            rep.refused
                .iter()
                .find(|r| r.entry == e)
                .map(|r| r.reason.clone())
                .unwrap_or_default()
        };
        assert_eq!(reason("../evil"), "`..` in path");
        assert_eq!(reason("/abs"), "absolute path");
        assert_eq!(reason("ok/../../evil2"), "`..` in path");
        assert!(reason("etc").contains("symlink to \"/etc\""), "{rep:?}");
        assert!(reason("up").contains("points outside"), "{rep:?}");
        assert!(reason("hard").starts_with("hardlink"), "{rep:?}");
        assert!(reason("hard2").starts_with("hardlink"), "{rep:?}");
        assert_eq!(rep.refused.len(), 7);
        assert_eq!(rep.links_skipped, 1);
        assert_eq!(rep.files, 1);
    }

    #[test]
    fn crafted_zip_writes_nothing_outside() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("evil.whl");
        {
            let mut z = zip::ZipWriter::new(File::create(&archive).unwrap());
            let opts = zip::write::SimpleFileOptions::default();
            for name in ["../evil", "/abs", "pkg/good.txt"] {
                z.start_file(name, opts).unwrap();
                z.write_all(b"data").unwrap();
            }
            z.add_symlink("pkg/etc", "/etc", opts).unwrap();
            z.add_symlink("pkg/inner", "good.txt", opts).unwrap();
            z.finish().unwrap();
        }
        let dest = root.path().join("out");
        let rep = extract_package(&archive, &dest, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(names_under(&dest), vec!["pkg", "pkg/good.txt"]);
        assert_eq!(
            names_under(root.path()),
            vec!["evil.whl", "out", "out/pkg", "out/pkg/good.txt"]
        );
        let entries: Vec<&str> = rep.refused.iter().map(|r| r.entry.as_str()).collect();
        assert_eq!(entries, vec!["../evil", "/abs", "pkg/etc"]);
        assert_eq!(rep.links_skipped, 1);
    }

    #[test]
    fn byte_cap_stops_extraction_with_an_error() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("big.tar");
        {
            let mut b = tar::Builder::new(File::create(&archive).unwrap());
            let data = vec![7u8; 1000];
            for name in ["a.bin", "b.bin"] {
                let mut h = tar::Header::new_gnu();
                h.set_size(1000);
                h.set_mode(0o644);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            b.into_inner().unwrap();
        }
        let dest = root.path().join("out");
        match extract_package(&archive, &dest, 1500) {
            Err(Error::UnsafeEntry { entry, reason, .. }) => {
                assert_eq!(entry, "b.bin");
                assert!(reason.contains("1500"));
            }
            other => panic!("expected the cap to trip, got {other:?}"),
        }
        assert!(!dest.join("b.bin").exists());
        assert_eq!(
            extract_package(&archive, &root.path().join("ok"), 2000)
                .unwrap()
                .bytes,
            2000
        );
    }

    #[test]
    fn deb_reads_data_tar_xz_from_ar() {
        let root = tempfile::tempdir().unwrap();
        let mut tar_bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar_bytes);
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            b.append(
                &raw_header("./", tar::EntryType::Directory, 0, None),
                &[][..],
            )
            .unwrap();
            b.append_data(&mut h, "./usr/share/x.txt", &b"abc"[..])
                .unwrap();
            b.finish().unwrap();
        }
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(&tar_bytes[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        let deb = root.path().join("x_1_all.deb");
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
        let out = root.path().join("out");
        let rep = extract_package(&deb, &out, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(rep.files, 1);
        assert!(
            rep.refused.is_empty(),
            "the root entry is no refusal: {rep:?}"
        );
        assert_eq!(std::fs::read(out.join("usr/share/x.txt")).unwrap(), b"abc");
    }

    #[test]
    fn safe_relative_path_cases() {
        assert_eq!(
            safe_relative_path("./usr/a.png").unwrap(),
            PathBuf::from("usr/a.png")
        );
        assert!(safe_relative_path("a/../../b").is_err());
        assert!(safe_relative_path("/etc/passwd").is_err());
        assert!(safe_relative_path("./").is_err());
        assert!(link_stays_inside(Path::new("a/b/link"), "../c", false));
        assert!(!link_stays_inside(Path::new("a/link"), "../../c", false));
        assert!(!link_stays_inside(Path::new("a/link"), "../c", true));
    }
}
