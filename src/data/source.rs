//! Where samples come from: a normalised dataset dir (index.parquet), an ImageFolder tree (one folder per
//! class, torchvision's convention), an unlabelled folder, or COCO annotations (one sample per object box).
//! Every list is sorted so sample ids and indices are stable across runs and machines. A path named inside
//! a file (an index `path`, a COCO `file_name`) or a symlink that leads out of the dataset folder stays a
//! sample, marked `refused`, so the loader lists it as skipped without ever opening it.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::GrayImage;

use sha2::{Digest, Sha256};

use crate::data::coco::CocoDataset;
use crate::data::confine::{Outside, Root};
use crate::data::decode::{decode_gray, DecodeLimits, Skip, SkipReason};
use crate::data::index::{index_path, read_index};
use crate::data::kind::DatasetKind;
use crate::data::segmentation::Segmentation;
use crate::error::{Error, Result};

/// One thing the loader can draw crops from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Stable id: the index id, the path relative to the root, or `<image>#<annotation id>` for COCO.
    pub id: String,
    /// The source image (equal to `id` unless several samples share one image).
    pub image_id: String,
    pub path: PathBuf,
    pub label: Option<String>,
    pub dataset: String,
    pub kind: DatasetKind,
    /// Object box (x, y, w, h) in pixels; crops are cut from it.
    pub bbox: Option<[f32; 4]>,
    /// Why `path` must not be opened (it leads out of the dataset root); `None` for a usable sample.
    pub refused: Option<Outside>,
    /// The object's mask for a COCO box with a `segmentation` (`Err`: why it cannot be used); `None`
    /// without one. Object-only crops (context control) need it; other crops ignore it.
    pub mask: Option<std::result::Result<ObjectMask, String>>,
}

/// A box's object mask: its segmentation, and the folder its label-PNG form names files in (the annotations
/// file's, canonicalised once per file and shared by its boxes).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMask {
    pub segmentation: Segmentation,
    pub ann_dir: Arc<Root>,
}

impl ObjectMask {
    /// The binary mask (255 = object) on a `width` × `height` image. A label PNG is resolved inside the
    /// annotations folder only now, when a mask is wanted (listing boxes touches no mask file), and one
    /// leading out of it is never opened; the error says why the mask cannot be used.
    pub fn rasterise(
        &self,
        width: u32,
        height: u32,
        limits: &DecodeLimits,
    ) -> std::result::Result<GrayImage, String> {
        let png = match &self.segmentation {
            Segmentation::MaskFile { path, .. } => {
                let file = self
                    .ann_dir
                    .join(path)
                    .map_err(|outside| format!("mask file: {outside}"))?;
                Some(decode_gray(&file, limits).map_err(|e| format!("mask file: {e}"))?)
            }
            _ => None,
        };
        crate::data::segmentation::rasterise(&self.segmentation, width, height, png.as_ref())
    }
}

/// The mask of annotation segmentation `seg` (label PNGs named relative to `ann_dir`), `None` when it has
/// none.
fn object_mask(
    seg: Option<&serde_json::Value>,
    ann_dir: &Arc<Root>,
) -> Option<std::result::Result<ObjectMask, String>> {
    match seg.map(crate::data::segmentation::parse) {
        None | Some(Ok(None)) => None,
        Some(Err(why)) => Some(Err(format!("segmentation: {why}"))),
        Some(Ok(Some(segmentation))) => Some(Ok(ObjectMask {
            segmentation,
            ann_dir: ann_dir.clone(),
        })),
    }
}

impl Sample {
    /// The object mask of this box on a `width` × `height` image, or why there is none to use.
    pub fn object_mask(
        &self,
        width: u32,
        height: u32,
        limits: &DecodeLimits,
    ) -> std::result::Result<GrayImage, String> {
        match &self.mask {
            None => Err("the annotation has no `segmentation`".into()),
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(m)) => m.rasterise(width, height, limits),
        }
    }

    /// The file to read, or the skip that lists this sample when its path leads out of the dataset root.
    /// Every reader of a sample's pixels goes through here, so a refused path is never opened.
    pub fn readable_path(&self) -> std::result::Result<&Path, Skip> {
        match &self.refused {
            None => Ok(&self.path),
            Some(o) => Err(Skip {
                path: self.path.clone(),
                reason: SkipReason::Outside(o.clone()),
            }),
        }
    }
}

/// File extensions treated as images when walking a folder (lower-case). Anything else (captions `.txt`,
/// licences) is ignored; a mislabelled file with an image extension is reported by the decoder.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm", "tga",
    "ico",
];

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// An image file found by [`walk_images`]; `symlink` when the entry itself is a link (its target is checked
/// against the root before use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub path: PathBuf,
    pub symlink: bool,
}

/// All image files under `dir`, recursively, sorted; hidden entries (`.name`) are skipped and symlinked
/// directories are not entered (a link is an entry, never a way down).
pub fn walk_images(dir: &Path) -> Result<Vec<Walked>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if has_image_extension(&path) {
                out.push(Walked {
                    path,
                    symlink: ft.is_symlink(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The path of `path` relative to `root`, `/`-separated: the sample id of a walked file. A name that is not
/// UTF-8 keeps its lossy text plus `~` and 8 hex digits of a hash of its raw bytes, so two names that differ
/// only in invalid bytes (both shown with U+FFFD) still get distinct ids.
pub fn rel_id(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let text = rel.to_string_lossy().replace('\\', "/");
    if rel.to_str().is_some() {
        return text;
    }
    let digest = Sha256::digest(rel.as_os_str().as_encoded_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{text}~{hex}")
}

/// Samples of a folder: normalised (has `index.parquet`) → the index; else ImageFolder (every image sits in
/// a first-level subfolder, which names its class) → labelled; else every image found, unlabelled.
pub fn samples_from_dir(dir: &Path, dataset: &str, kind: DatasetKind) -> Result<Vec<Sample>> {
    if !dir.is_dir() {
        return Err(Error::format(dir, "not a directory"));
    }
    if index_path(dir).is_file() {
        let mut recs = read_index(dir)?;
        recs.sort_by(|a, b| a.id.cmp(&b.id));
        let root = Root::new(dir);
        return Ok(recs
            .into_iter()
            .map(|r| {
                let (path, refused) = confined(&root, &r.path);
                Sample {
                    image_id: r.id.clone(),
                    id: r.id,
                    path,
                    label: r.label,
                    dataset: dataset.to_string(),
                    // The index records each image's kind; it wins over the caller's default.
                    kind: r.kind,
                    bbox: None,
                    refused,
                    mask: None,
                }
            })
            .collect());
    }
    samples_from_folder(dir, dataset, kind)
}

/// Samples of a folder walked on the fly, whether or not it has an index: ImageFolder (every image sits in
/// a first-level subfolder, which names its class) → labelled; else every image found, unlabelled. Ids are
/// paths relative to `dir` (`/`-separated), as `datasets index` writes them.
pub fn samples_from_folder(dir: &Path, dataset: &str, kind: DatasetKind) -> Result<Vec<Sample>> {
    let files = walk_images(dir)?;
    let image_folder = !files.is_empty()
        && files.iter().all(|w| {
            w.path
                .strip_prefix(dir)
                .map(|r| r.components().count() == 2)
                .unwrap_or(false)
        });
    // Only links need resolving: a walk never enters a symlinked directory, so a plain file is inside.
    let root = files.iter().any(|w| w.symlink).then(|| Root::new(dir));
    Ok(files
        .into_iter()
        .map(|Walked { path, symlink }| {
            let refused = match (&root, symlink) {
                (Some(root), true) => root.check_resolved(&path).err(),
                _ => None,
            };
            let id = rel_id(dir, &path);
            let label = image_folder
                .then(|| {
                    path.parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .flatten();
            Sample {
                image_id: id.clone(),
                id,
                path,
                label,
                dataset: dataset.to_string(),
                kind,
                bbox: None,
                refused,
                mask: None,
            }
        })
        .collect())
}

/// `root/named` and, when it leads out of the root, why: the path is then only a name for the skip list
/// (`root` joined lexically), never opened.
fn confined(root: &Root, named: &str) -> (PathBuf, Option<Outside>) {
    match root.join(named) {
        Ok(p) => (p, None),
        Err(o) => (root.dir().join(named), Some(o)),
    }
}

/// One sample per COCO annotation (an object crop): `image_id` is the COCO image's file name, `label` the
/// category name; sorted by (image file, annotation id). A `file_name` leading out of `images_dir` gives
/// refused samples (listed as skipped by the loader, never opened). `origin` (the COCO file) names the
/// error when not one annotated `file_name` is found under `images_dir`.
pub fn samples_from_coco(
    images_dir: &Path,
    coco: &CocoDataset,
    origin: &Path,
    dataset: &str,
    kind: DatasetKind,
) -> Result<Vec<Sample>> {
    let root = Root::new(images_dir);
    // Mask PNGs are named relative to the annotations file, and confined to its folder.
    let ann_root = Arc::new(Root::new(origin.parent().unwrap_or(Path::new("."))));
    // Boxes are in the declared frame: a file of another size is an error, not corner-clamped crops.
    coco.check_image_files(&root, origin)?;
    type Resolved<'a> = (&'a str, (PathBuf, Option<Outside>));
    let by_id: std::collections::HashMap<u64, Resolved> = coco
        .images
        .iter()
        .map(|im| {
            (
                im.id,
                (im.file_name.as_str(), confined(&root, &im.file_name)),
            )
        })
        .collect();
    let mut out: Vec<(u64, Sample)> = coco
        .annotations
        .iter()
        .filter_map(|a| {
            let (file, (path, refused)) = by_id.get(&a.image_id)?;
            let [x, y, w, h] = a.bbox;
            Some((
                a.id,
                Sample {
                    id: format!("{file}#{}", a.id),
                    image_id: file.to_string(),
                    path: path.clone(),
                    label: coco.category_name(a.category_id).map(str::to_string),
                    dataset: dataset.to_string(),
                    kind,
                    bbox: Some([x as f32, y as f32, w as f32, h as f32]),
                    refused: refused.clone(),
                    mask: object_mask(a.segmentation.as_ref(), &ann_root),
                },
            ))
        })
        .collect();
    out.sort_by(|(ia, a), (ib, b)| a.image_id.cmp(&b.image_id).then(ia.cmp(ib)));
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::index::{write_index, ImageRecord};

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn image_folder_gets_labels_and_a_flat_folder_does_not() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("dog/b.jpg"));
        touch(&d.path().join("cat/a.PNG"));
        touch(&d.path().join("cat/notes.txt"));
        touch(&d.path().join("cat/.hidden.png"));
        let s = samples_from_dir(d.path(), "pets", DatasetKind::Object).unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.id.as_str(), s.label.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![("cat/a.PNG", Some("cat")), ("dog/b.jpg", Some("dog"))]
        );

        touch(&d.path().join("loose.png"));
        let s = samples_from_dir(d.path(), "pets", DatasetKind::Scene).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s
            .iter()
            .all(|s| s.label.is_none() && s.kind == DatasetKind::Scene));
        assert!(samples_from_dir(&d.path().join("missing"), "x", DatasetKind::Scene).is_err());
    }

    #[test]
    fn normalised_dir_reads_the_index() {
        let d = tempfile::tempdir().unwrap();
        let rec = |id: &str, label: Option<&str>| ImageRecord {
            id: id.into(),
            path: format!("images/{}/{id}.png", label.unwrap_or("_unlabelled")),
            label: label.map(Into::into),
            kind: DatasetKind::Cartoon,
            width: 10,
            height: 10,
            source: "t".into(),
            licence: "CC0".into(),
        };
        write_index(d.path(), &[rec("z", Some("cat")), rec("a", None)]).unwrap();
        let s = samples_from_dir(d.path(), "clip", DatasetKind::Object).unwrap();
        assert_eq!(
            s.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["a", "z"]
        );
        assert_eq!(s[1].path, d.path().join("images/cat/z.png"));
        assert_eq!(s[1].kind, DatasetKind::Cartoon);
    }

    #[test]
    fn coco_gives_one_sample_per_annotation() {
        let coco = CocoDataset::from_slice(
            br#"{"images":[{"id":1,"file_name":"k.jpg","width":100,"height":50}],
                "annotations":[{"id":10,"image_id":1,"category_id":3,"bbox":[1,2,3,4]},
                               {"id":9,"image_id":1,"category_id":4,"bbox":[5,6,7,8]}],
                "categories":[{"id":3,"name":"fridge"},{"id":4,"name":"chair"}]}"#,
            Path::new("t.json"),
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("k.jpg"));
        let s = samples_from_coco(
            d.path(),
            &coco,
            Path::new("t.json"),
            "kitchen",
            DatasetKind::Scene,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id.as_str(), s[0].label.as_deref()),
            ("k.jpg#9", Some("chair"))
        );
        assert_eq!(s[1].bbox, Some([1.0, 2.0, 3.0, 4.0]));
        assert!(s.iter().all(|x| x.image_id == "k.jpg"
            && x.path == d.path().join("k.jpg")
            && x.refused.is_none()));
    }
}
