//! Keeping reads inside the data: a path written inside a data file (a COCO `file_name`, an index `path`) or a
//! symlink found in a dataset folder is used only when it resolves inside the dataset's root. A path that is
//! refused by its text (absolute, `..`) is never touched on disk, not even to say whether it exists: a
//! downloaded annotations file must not be able to probe the machine.
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a path was kept out of the dataset. Displayed in skipped-file lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// The text is an absolute path (or carries a Windows drive or root).
    Absolute,
    /// The text has a `..` component.
    ParentDir,
    /// The text is empty or `.`: it names the root itself, not a file in it.
    Empty,
    /// Inside by its text, but a symlink on the way leads out of the root (its target canonicalised).
    SymlinkOut,
}

impl fmt::Display for Outside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Absolute => "absolute path: outside the dataset root, not opened",
            Self::ParentDir => "`..` leads out of the dataset root: not opened",
            Self::Empty => "empty path: names no file of the dataset",
            Self::SymlinkOut => "symlink leads out of the dataset root: not followed",
        })
    }
}

/// A dataset root, canonicalised once, against which named paths are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Root {
    dir: PathBuf,
    /// `None` when the root itself cannot be resolved: then nothing under it can be, and every join that
    /// passes the text checks is left to the reader, which reports the I/O error.
    canonical: Option<PathBuf>,
}

impl Root {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            canonical: std::fs::canonicalize(dir).ok(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `root/named` when `named` stays inside the root both by its text and once symlinks are resolved.
    /// The text is checked first, with no file-system access at all; only a path that passes is resolved.
    pub fn join(&self, named: &str) -> Result<PathBuf, Outside> {
        let rel = relative_text(named)?;
        let path = self.dir.join(rel);
        self.check_resolved(&path)?;
        Ok(path)
    }

    /// Whether `path` (already under the root by its text, e.g. from a directory walk) still lies inside it
    /// once every symlink on the way is resolved. A path that does not resolve (missing file, dangling
    /// link) is left to the reader, which reports it as it would any unreadable file.
    pub fn check_resolved(&self, path: &Path) -> Result<(), Outside> {
        let Some(root) = &self.canonical else {
            return Ok(());
        };
        match std::fs::canonicalize(path) {
            Ok(real) if !real.starts_with(root) => Err(Outside::SymlinkOut),
            _ => Ok(()),
        }
    }
}

/// `named` as a relative path with only normal components (and `.`), or why not. Pure text: nothing on disk.
pub fn relative_text(named: &str) -> Result<&Path, Outside> {
    let p = Path::new(named);
    let mut normal = 0;
    for c in p.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err(Outside::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(Outside::Absolute),
        }
    }
    // `Path` on Unix does not see `C:\x` or `\\server\x` as absolute; an exporter on Windows may write them.
    let b = named.as_bytes();
    let windows_absolute =
        named.starts_with('\\') || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':');
    if windows_absolute {
        return Err(Outside::Absolute);
    }
    if named.split('\\').any(|part| part == "..") {
        return Err(Outside::ParentDir);
    }
    if normal == 0 {
        return Err(Outside::Empty);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_checks_refuse_absolute_and_parent_paths() {
        assert_eq!(relative_text("a/b.png").unwrap(), Path::new("a/b.png"));
        assert_eq!(relative_text("./b.png").unwrap(), Path::new("./b.png"));
        for (named, why) in [
            ("/etc/passwd", Outside::Absolute),
            ("../../secret/outside.png", Outside::ParentDir),
            ("a/../../b.png", Outside::ParentDir),
            ("a/../b.png", Outside::ParentDir),
            ("C:\\Windows\\x.png", Outside::Absolute),
            ("\\\\server\\share\\x.png", Outside::Absolute),
            ("a\\..\\..\\x.png", Outside::ParentDir),
            ("", Outside::Empty),
            (".", Outside::Empty),
        ] {
            assert_eq!(relative_text(named), Err(why), "{named}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_root_is_refused_and_one_inside_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("o.png"), b"x").unwrap();
        std::fs::write(root.join("sub/in.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("o.png"), root.join("out.png")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/in.png"), root.join("in.png")).unwrap();
        let r = Root::new(&root);
        assert_eq!(r.join("out.png"), Err(Outside::SymlinkOut));
        assert_eq!(r.join("outdir/o.png"), Err(Outside::SymlinkOut));
        assert_eq!(r.join("in.png").unwrap(), root.join("in.png"));
        // missing: left to the reader, which says so
        assert_eq!(r.join("gone.png").unwrap(), root.join("gone.png"));
    }
}
