//! The evaluation transform (torchvision `Resize(size) → CenterCrop(size) → ToTensor → Normalize`): no
//! randomness, so embeddings of one image are reproducible.
use image::RgbImage;

use super::crop::CropRect;
use super::normalize::normalize_into;
use super::resize::resize_region;
use crate::data::decode::PixelGrid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalTransform {
    pub size: u32,
}

impl EvalTransform {
    /// The centred square of the image whose side is the shorter side: resizing it to `size` equals
    /// resizing the shorter side to `size` then centre-cropping (up to sub-pixel placement).
    pub fn rect(w: u32, h: u32) -> CropRect {
        let side = w.min(h);
        CropRect {
            x: (w - side) / 2,
            y: (h - side) / 2,
            w: side,
            h: side,
        }
    }

    /// CHW normalised, 3·size² values. With `bbox`, the box is cut out first.
    pub fn apply(&self, img: &RgbImage, bbox: Option<[f32; 4]>) -> Vec<f32> {
        let (w, h) = img.dimensions();
        self.apply_on_grid(img, &PixelGrid::full(w, h), bbox)
    }

    /// [`Self::apply`] on a possibly reduced decode: the centre square is found on the full image's frame
    /// `grid` (where `bbox` lives), then resampled from `img`.
    pub fn apply_on_grid(
        &self,
        img: &RgbImage,
        grid: &PixelGrid,
        bbox: Option<[f32; 4]>,
    ) -> Vec<f32> {
        let (w, h) = (grid.full_w, grid.full_h);
        let region = match bbox {
            Some(b) => super::crop::bbox_rect(b, w, h),
            None => CropRect { x: 0, y: 0, w, h },
        };
        let mut r = Self::rect(region.w, region.h);
        r.x += region.x;
        r.y += region.y;
        let s = self.size as usize;
        let crop = resize_region(img, grid.map_rect(r.x, r.y, r.w, r.h), s, s);
        let mut out = vec![0f32; 3 * s * s];
        normalize_into(&crop, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_square_of_a_wide_image() {
        assert_eq!(
            EvalTransform::rect(300, 100),
            CropRect {
                x: 100,
                y: 0,
                w: 100,
                h: 100
            }
        );
        let img = RgbImage::from_fn(30, 10, |x, _| {
            image::Rgb([if (10..20).contains(&x) { 255 } else { 0 }; 3])
        });
        let out = EvalTransform { size: 5 }.apply(&img, None);
        // the centre square is all white → (1 − 0.485) / 0.228 in channel 0
        assert!(out[..25]
            .iter()
            .all(|v| (v - (1.0 - 0.485) / 0.228).abs() < 1e-4));
    }
}
