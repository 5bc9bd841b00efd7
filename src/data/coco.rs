//! COCO instances JSON (the subset biaslab reads and writes): images, annotations with `bbox` [x, y, w, h]
//! in pixels, categories. Parsing validates references and boxes so a bad file fails with its path and the
//! offending entry instead of producing silent garbage crops.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

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
        let ds: CocoDataset = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(origin, format!("not COCO JSON: {e}")))?;
        ds.validate(origin)?;
        Ok(ds)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).ctx_io(path)?;
        Self::from_slice(&bytes, path)
    }

    /// Checks ids are unique, references resolve and every box is finite, positive and inside its image.
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
        for a in &self.annotations {
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CocoDataset::from_slice(&bytes, Path::new("fuzz.json"));
        }
    }
}
