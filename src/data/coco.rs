//! COCO instances JSON (the subset biaslab reads and writes): images, annotations with `bbox` [x, y, w, h]
//! in pixels, categories. Parsing validates references and boxes so a bad file fails with its path and the
//! offending entry instead of producing silent garbage crops. A `file_name` is a path inside the images
//! folder: one leading out of it (absolute, `..`, a symlink) is never opened (see `data::confine`).
use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::confine::Root;
use crate::error::{Error, IoContext, Result};

/// The UTF-8 byte order mark some Windows tools write before JSON; RFC 8259 §8.1 lets a parser ignore it.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// [x, y, w, h] in pixels, top-left origin.
    pub bbox: [f64; 4],
    #[serde(default)]
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
    /// Polygon or RLE masks are kept opaque; biaslab writes RLE-free polygons only when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<serde_json::Value>,
    /// biaslab extension: which cut-out instance was pasted (for held-out splits by instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDataset {
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    pub categories: Vec<CocoCategory>,
}

impl CocoDataset {
    /// Parses and validates COCO JSON bytes; `origin` names the file in errors.
    pub fn from_slice(bytes: &[u8], origin: &Path) -> Result<Self> {
        let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
        let ds: CocoDataset = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(origin, format!("not COCO JSON: {e}")))?;
        ds.validate(origin)?;
        Ok(ds)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).ctx_io(path)?;
        Self::from_slice(&bytes, path)
    }

    /// Checks ids are unique (images, categories, annotations: a sample is named by its annotation id), references
    /// resolve and every box is finite, positive and inside its image.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |reason: String| Error::format(origin, reason);
        let mut images = HashMap::new();
        for im in &self.images {
            if images.insert(im.id, im).is_some() {
                return Err(bad(format!("duplicate image id {}", im.id)));
            }
        }
        let mut cats = HashSet::new();
        for c in &self.categories {
            if !cats.insert(c.id) {
                return Err(bad(format!("duplicate category id {}", c.id)));
            }
        }
        let mut annotation_ids = HashSet::new();
        for a in &self.annotations {
            if !annotation_ids.insert(a.id) {
                return Err(bad(format!("duplicate annotation id {}", a.id)));
            }
            let im = images.get(&a.image_id).ok_or_else(|| {
                bad(format!(
                    "annotation {}: unknown image_id {}",
                    a.id, a.image_id
                ))
            })?;
            if !cats.contains(&a.category_id) {
                return Err(bad(format!(
                    "annotation {}: unknown category_id {}",
                    a.id, a.category_id
                )));
            }
            let [x, y, w, h] = a.bbox;
            if !(x.is_finite() && y.is_finite() && w.is_finite() && h.is_finite())
                || w <= 0.0
                || h <= 0.0
            {
                return Err(bad(format!(
                    "annotation {}: bbox {:?} is not a positive finite box",
                    a.id, a.bbox
                )));
            }
            // Half a pixel of slack: exporters round boxes.
            if x < -0.5
                || y < -0.5
                || x + w > im.width as f64 + 0.5
                || y + h > im.height as f64 + 0.5
            {
                return Err(bad(format!(
                    "annotation {}: bbox {:?} lies outside image {} ({}x{})",
                    a.id, a.bbox, im.id, im.width, im.height
                )));
            }
        }
        Ok(())
    }

    /// Checks the annotated images' files under `root` before any pixel is decoded. Each declared
    /// `width`×`height` must match its file's header: boxes are in the declared frame, so a file of another
    /// size would get crops clamped into the wrong place; a mismatch is an error naming the file, both sizes
    /// and the image id. A declared size that is the header's transposed is accepted: the loader applies
    /// EXIF orientation, the header does not. A file that cannot be read is left to the loader, which lists
    /// it as a skipped input, and a `file_name` leading out of `root` is not looked at; but when not one
    /// annotated `file_name` is found under `root`, the error says so (`origin` names the COCO file), rather
    /// than an embedding that reads nothing.
    pub fn check_image_files(&self, root: &Root, origin: &Path) -> Result<()> {
        let annotated: HashSet<u64> = self.annotations.iter().map(|a| a.image_id).collect();
        let (mut n, mut found, mut outside) = (0usize, 0usize, 0usize);
        let mut first = None;
        for im in self.images.iter().filter(|im| annotated.contains(&im.id)) {
            n += 1;
            first.get_or_insert(im.file_name.as_str());
            let Ok(path) = root.join(&im.file_name) else {
                outside += 1;
                continue;
            };
            // A regular file only: opening a FIFO named like an image would block forever.
            if !path.is_file() {
                continue;
            }
            found += 1;
            let Ok((w, h)) = image::image_dimensions(&path) else {
                continue;
            };
            if (w, h) != (im.width, im.height) && (h, w) != (im.width, im.height) {
                return Err(Error::format(
                    &path,
                    format!(
                        "COCO image {} is declared {}x{}, the file is {w}x{h}: its boxes do not fit it",
                        im.id, im.width, im.height
                    ),
                ));
            }
        }
        if n > 0 && found == 0 {
            let refused = if outside > 0 {
                format!(" ({outside} lead out of it and were not looked up)")
            } else {
                String::new()
            };
            return Err(Error::format(
                origin,
                format!(
                    "none of the {n} annotated file_names were found under {}{refused}; first: {:?}",
                    root.dir().display(),
                    first.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    pub fn category_name(&self, id: u64) -> Option<&str> {
        self.categories
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> String {
        r#"{"images":[{"id":1,"file_name":"a.jpg","width":100,"height":50}],
            "annotations":[{"id":7,"image_id":1,"category_id":3,"bbox":[10,5,20,30]}],
            "categories":[{"id":3,"name":"fridge"}]}"#
            .to_string()
    }

    #[test]
    fn parses_valid_file() {
        let ds = CocoDataset::from_slice(sample().as_bytes(), Path::new("x.json")).unwrap();
        assert_eq!(ds.annotations[0].bbox, [10.0, 5.0, 20.0, 30.0]);
        assert_eq!(ds.category_name(3), Some("fridge"));
    }

    #[test]
    fn rejects_box_outside_image_naming_the_annotation() {
        let s = sample().replace("[10,5,20,30]", "[90,5,20,30]");
        let err = CocoDataset::from_slice(s.as_bytes(), Path::new("x.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.json") && err.contains("annotation 7"),
            "{err}"
        );
    }

    #[test]
    fn rejects_dangling_category() {
        let s = sample().replace("\"category_id\":3", "\"category_id\":4");
        let err = CocoDataset::from_slice(s.as_bytes(), Path::new("x.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown category_id 4"), "{err}");
    }

    #[test]
    fn rejects_duplicate_annotation_ids_naming_file_and_id() {
        // regression (issue 13): 16 annotation rows with 15 unique ids passed silently
        let s = sample().replace(
            r#""annotations":[{"id":7,"image_id":1,"category_id":3,"bbox":[10,5,20,30]}]"#,
            r#""annotations":[{"id":7,"image_id":1,"category_id":3,"bbox":[10,5,20,30]},
                              {"id":7,"image_id":1,"category_id":3,"bbox":[1,1,2,2]}]"#,
        );
        let err = CocoDataset::from_slice(s.as_bytes(), Path::new("dup.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dup.json") && err.contains("duplicate annotation id 7"),
            "{err}"
        );
    }

    #[test]
    fn declared_size_must_match_the_files_header() {
        // regression (issue 13): an image declared 1000x1000 whose file is 64 px got corner-clamped crops
        let d = tempfile::tempdir().unwrap();
        image::RgbImage::new(64, 48)
            .save(d.path().join("a.png"))
            .unwrap();
        let json = |w: u32, h: u32| {
            format!(
                r#"{{"images":[{{"id":1,"file_name":"a.png","width":{w},"height":{h}}},
                             {{"id":2,"file_name":"gone.png","width":9,"height":9}}],
                   "annotations":[{{"id":7,"image_id":1,"category_id":3,"bbox":[1,1,5,5]}},
                                  {{"id":8,"image_id":2,"category_id":3,"bbox":[1,1,5,5]}}],
                   "categories":[{{"id":3,"name":"fridge"}}]}}"#
            )
        };
        let read =
            |w, h| CocoDataset::from_slice(json(w, h).as_bytes(), Path::new("x.json")).unwrap();
        let root = Root::new(d.path());
        let x = Path::new("x.json");
        // the true size, and its transpose (EXIF orientation), pass; an unreadable file is the loader's
        read(64, 48).check_image_files(&root, x).unwrap();
        read(48, 64).check_image_files(&root, x).unwrap();
        let err = read(1000, 1000)
            .check_image_files(&root, x)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.png") && err.contains("1000x1000") && err.contains("64x48"),
            "{err}"
        );
    }

    #[test]
    fn a_utf8_bom_before_the_json_is_ignored() {
        // regression (issue 23): a COCO file saved with a BOM failed at "line 1 column 1"
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice(sample().as_bytes());
        let ds = CocoDataset::from_slice(&bytes, Path::new("bom.json")).unwrap();
        assert_eq!(ds.images[0].file_name, "a.jpg");
    }

    #[test]
    fn every_file_name_missing_says_so_with_the_first() {
        // regression (issue 23): only "walls/: no image could be read" after embedding nothing
        let d = tempfile::tempdir().unwrap();
        let ds = CocoDataset::from_slice(sample().as_bytes(), Path::new("x.json")).unwrap();
        let err = ds
            .check_image_files(&Root::new(d.path()), Path::new("annotations.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "annotations.json: none of the 1 annotated file_names were found under"
            ) && err.contains("first: \"a.jpg\""),
            "{err}"
        );
        let outside = sample().replace("a.jpg", "../../secret/outside.png");
        let ds = CocoDataset::from_slice(outside.as_bytes(), Path::new("x.json")).unwrap();
        let err = ds
            .check_image_files(&Root::new(d.path()), Path::new("annotations.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 lead out of it and were not looked up"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CocoDataset::from_slice(&bytes, Path::new("fuzz.json"));
        }
    }
}
