//! Object-only images for context control (issue 20): a box's object pixels kept, every other pixel of the
//! image replaced by the neutral fill (the ImageNet mean, as transparent cut-outs are composited). Embedded
//! beside the box crop, it separates two reasons crops of different objects of one scene land together:
//! their objects merged (the object-only crops still land together) or they share context (they do not).
use image::RgbImage;

use crate::data::decode::{DecodeLimits, Skip, SkipReason, NEUTRAL_BACKGROUND};
use crate::data::source::Sample;

/// Replaces every pixel of `img` (the full, unreduced image of `s`) outside `s`'s object mask with the
/// neutral fill; the sample is skipped with the reason when it has no usable mask.
pub fn keep_object_only(img: &mut RgbImage, s: &Sample, limits: &DecodeLimits) -> Result<(), Skip> {
    let skip = |why: String| Skip {
        path: s.path.clone(),
        reason: SkipReason::NoMask(why),
    };
    let (w, h) = img.dimensions();
    let m = s.object_mask(w, h, limits).map_err(skip)?;
    if !m.pixels().any(|p| p[0] != 0) {
        return Err(skip("the mask holds no pixel of the image".into()));
    }
    for (px, mp) in img.pixels_mut().zip(m.pixels()) {
        if mp[0] == 0 {
            px.0 = NEUTRAL_BACKGROUND;
        }
    }
    Ok(())
}
