//! SwAV's augmentations as pure functions of an image and an RNG, and the multi-crop groups built from them.
//!
//! Pixels flow as [`ImageF32`] (HWC, values in [0, 1]) from the resized crop to the normalised CHW output, so
//! each step is one pass over a small crop rather than over the decoded photo.

pub mod blur;
pub mod color;
pub mod crop;
pub mod eval;
pub mod multicrop;
pub mod normalize;
pub mod reduction;
pub mod resize;

pub use crop::{random_resized_crop_params, CropRect};
pub use eval::EvalTransform;
pub use multicrop::{CropRecipe, MultiCropConfig, MultiCropTransform};

/// An RGB image as f32 in [0, 1], row-major HWC: pixel (x, y) channel c is at `(y * w + x) * 3 + c`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl ImageF32 {
    pub fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            data: vec![0.0; w * h * 3],
        }
    }

    /// Converts an 8-bit RGB image (÷ 255, as torchvision's ToTensor).
    pub fn from_rgb8(img: &image::RgbImage) -> Self {
        let (w, h) = img.dimensions();
        Self {
            w: w as usize,
            h: h as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }
}

/// Mirrors the image left↔right in place (torchvision RandomHorizontalFlip when drawn).
pub fn hflip(img: &mut ImageF32) {
    let w = img.w;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_is_an_involution_and_moves_pixels() {
        let mut img = ImageF32::new(5, 2);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = i as f32;
        }
        let orig = img.clone();
        hflip(&mut img);
        assert_ne!(img, orig);
        // pixel (0, 0) now holds the old pixel (4, 0)
        assert_eq!(&img.data[0..3], &orig.data[12..15]);
        hflip(&mut img);
        assert_eq!(img, orig);
    }
}
