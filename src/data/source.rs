//! Where samples come from: a normalised dataset dir (index.parquet), an ImageFolder tree (one folder per
//! class, torchvision's convention), an unlabelled folder, or COCO annotations (one sample per object box).
//! Every list is sorted so sample ids and indices are stable across runs and machines.
use std::path::{Path, PathBuf};

use crate::data::coco::CocoDataset;
use crate::data::index::{index_path, read_index};
use crate::data::kind::DatasetKind;
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

/// All image files under `dir`, recursively, sorted; hidden entries (`.name`) are skipped.
pub fn walk_images(dir: &Path) -> Result<Vec<PathBuf>> {
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
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel_id(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
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
        return Ok(recs
            .into_iter()
            .map(|r| Sample {
                image_id: r.id.clone(),
                id: r.id,
                path: dir.join(&r.path),
                label: r.label,
                dataset: dataset.to_string(),
                // The index records each image's kind; it wins over the caller's default.
                kind: r.kind,
                bbox: None,
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
        && files.iter().all(|p| {
            p.strip_prefix(dir)
                .map(|r| r.components().count() == 2)
                .unwrap_or(false)
        });
    Ok(files
        .into_iter()
        .map(|path| {
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
            }
        })
        .collect())
}

/// One sample per COCO annotation (an object crop): `image_id` is the COCO image's file name, `label` the
/// category name; sorted by (image file, annotation id).
pub fn samples_from_coco(
    images_dir: &Path,
    coco: &CocoDataset,
    dataset: &str,
    kind: DatasetKind,
) -> Result<Vec<Sample>> {
    // Boxes are in the declared frame: a file of another size is an error, not corner-clamped crops.
    coco.check_image_sizes(images_dir)?;
    let by_id: std::collections::HashMap<u64, &str> = coco
        .images
        .iter()
        .map(|im| (im.id, im.file_name.as_str()))
        .collect();
    let mut out: Vec<(u64, Sample)> = coco
        .annotations
        .iter()
        .filter_map(|a| {
            let file = by_id.get(&a.image_id)?;
            let [x, y, w, h] = a.bbox;
            Some((
                a.id,
                Sample {
                    id: format!("{file}#{}", a.id),
                    image_id: file.to_string(),
                    path: images_dir.join(file),
                    label: coco.category_name(a.category_id).map(str::to_string),
                    dataset: dataset.to_string(),
                    kind,
                    bbox: Some([x as f32, y as f32, w as f32, h as f32]),
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
        let s =
            samples_from_coco(Path::new("/imgs"), &coco, "kitchen", DatasetKind::Scene).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id.as_str(), s[0].label.as_deref()),
            ("k.jpg#9", Some("chair"))
        );
        assert_eq!(s[1].bbox, Some([1.0, 2.0, 3.0, 4.0]));
        assert!(s
            .iter()
            .all(|x| x.image_id == "k.jpg" && x.path == Path::new("/imgs/k.jpg")));
    }
}
