//! Purushwalkam & Gupta's invariance sets, built from object images: each object yields a set of views under
//! one transformation (occlusion, viewpoint, illumination direction, illumination colour), or, for
//! `instance`, the set is every object of one label. The views are square object patches (the object's box
//! with a margin); the invariance analysis then asks how often a unit that fires for one view keeps firing
//! for the others.
//!
//! The paper measured these on GOT-10k (occlusion, viewpoint), ALOI (illumination) and Pascal3D+ (instance);
//! those sets are not installable here, so the transformations are synthesised, each one a pure function of
//! the patch and its parameter (occlusion's side alone comes from the per-object seeded stream).
use image::imageops::{crop_imm, resize, FilterType};
use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{warp, Border, Interpolation, Projection};
use rand::Rng;

use crate::error::{Error, Result};
use crate::rng::{seeded_rng, Mixing};

/// ImageNet's mean colour: what occluders and uncovered borders are filled with (a neutral input).
pub const MEAN_GREY: Rgb<u8> = Rgb([124, 116, 104]);
/// Margin around the object box, as a share of its longer side, on each side of the square patch.
pub const MARGIN: f32 = 0.1;
/// Occluded share of the object's box (0 = the unoccluded view).
pub const OCCLUSION_FRACTIONS: [f32; 6] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5];
/// Rotation about the vertical axis, degrees.
pub const VIEWPOINT_DEGREES: [f32; 7] = [-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0];
/// Light directions in the image plane, degrees (0 = from the right, counter-clockwise).
pub const LIGHT_DIRECTIONS: [f32; 8] = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0];
/// Shading contrast: brightness goes from 1 − s to 1 + s across the patch.
pub const LIGHT_STRENGTH: f32 = 0.6;
/// Colour temperatures, kelvin; 6500 K (daylight) leaves the patch unchanged.
pub const COLOUR_TEMPERATURES: [f32; 7] =
    [3000.0, 4000.0, 5000.0, 6500.0, 8000.0, 10000.0, 12000.0];
/// Perspective depth of the viewpoint warp: the near edge grows, the far edge shrinks by this × sin θ.
const PERSPECTIVE: f32 = 0.3;
const STREAM_OCCLUSION: u64 = 0x0cc1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transform {
    Occlusion,
    Viewpoint,
    IlluminationDirection,
    IlluminationColor,
    Instance,
}

impl Transform {
    pub const ALL: [Transform; 5] = [
        Transform::Occlusion,
        Transform::Viewpoint,
        Transform::IlluminationDirection,
        Transform::IlluminationColor,
        Transform::Instance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transform::Occlusion => "occlusion",
            Transform::Viewpoint => "viewpoint",
            Transform::IlluminationDirection => "illumination-direction",
            Transform::IlluminationColor => "illumination-color",
            Transform::Instance => "instance",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Transform::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::config(
                    "--transforms",
                    "transforms",
                    format!(
                        "unknown transform `{s}` (one of {})",
                        Transform::ALL.map(Transform::name).join(", ")
                    ),
                )
            })
    }

    /// The views of one object patch under this transform (`instance` has one: the patch itself).
    /// `seed` and `index` give the object's random stream.
    pub fn views(self, patch: &RgbImage, seed: u64, index: u64) -> Vec<RgbImage> {
        match self {
            Transform::Occlusion => {
                let side = seeded_rng(Mixing::SplitMixChain, seed, STREAM_OCCLUSION, index)
                    .gen_range(0..4u8);
                OCCLUSION_FRACTIONS
                    .iter()
                    .map(|&f| occlude(patch, f, side))
                    .collect()
            }
            Transform::Viewpoint => VIEWPOINT_DEGREES.iter().map(|&d| yaw(patch, d)).collect(),
            Transform::IlluminationDirection => LIGHT_DIRECTIONS
                .iter()
                .map(|&d| shade(patch, d, LIGHT_STRENGTH))
                .collect(),
            Transform::IlluminationColor => COLOUR_TEMPERATURES
                .iter()
                .map(|&k| colour_temperature(patch, k))
                .collect(),
            Transform::Instance => vec![patch.clone()],
        }
    }
}

/// The object's square patch, `size`×`size`: its box (x, y, w, h) grown by `MARGIN` on each side and to a
/// square, clamped to the image; the whole image's centre square when there is no box.
pub fn object_patch(img: &RgbImage, bbox: Option<[f32; 4]>, size: u32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let [bx, by, bw, bh] = bbox.unwrap_or([0.0, 0.0, w, h]);
    let side = if bbox.is_some() {
        bw.max(bh) * (1.0 + 2.0 * MARGIN)
    } else {
        w.min(h)
    }
    .min(w.min(h))
    .max(1.0);
    let cx = (bx + bw / 2.0).clamp(side / 2.0, w - side / 2.0);
    let cy = (by + bh / 2.0).clamp(side / 2.0, h - side / 2.0);
    let (x0, y0) = (
        (cx - side / 2.0).round() as u32,
        (cy - side / 2.0).round() as u32,
    );
    let s = (side.round() as u32)
        .min(img.width() - x0.min(img.width() - 1))
        .min(img.height() - y0.min(img.height() - 1))
        .max(1);
    let crop = crop_imm(img, x0, y0, s, s).to_image();
    resize(&crop, size, size, FilterType::Triangle)
}

/// Covers `fraction` of the object's box (the patch minus its margin) with a mean-grey band entering from
/// `side` (0 left, 1 top, 2 right, 3 bottom).
pub fn occlude(patch: &RgbImage, fraction: f32, side: u8) -> RgbImage {
    let mut out = patch.clone();
    let n = patch.width().min(patch.height()) as f32;
    let m = n * MARGIN / (1.0 + 2.0 * MARGIN);
    let (lo, hi) = (m, n - m);
    let depth = fraction.clamp(0.0, 1.0) * (hi - lo);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let inside_box = fx >= lo && fx < hi && fy >= lo && fy < hi;
        let covered = match side % 4 {
            0 => fx < lo + depth,
            1 => fy < lo + depth,
            2 => fx >= hi - depth,
            _ => fy >= hi - depth,
        };
        if inside_box && covered {
            *p = MEAN_GREY;
        }
    }
    out
}

/// The patch as a plane turned `degrees` about its vertical axis, seen in perspective: its width shrinks by
/// cos θ and the edge turning towards the viewer grows while the other shrinks.
pub fn yaw(patch: &RgbImage, degrees: f32) -> RgbImage {
    if degrees == 0.0 {
        return patch.clone();
    }
    let (w, h) = (patch.width() as f32, patch.height() as f32);
    let t = degrees.to_radians();
    let half_w = w / 2.0 * t.cos();
    let (cx, cy) = (w / 2.0, h / 2.0);
    // positive θ turns the right edge towards the viewer
    let right = h / 2.0 * (1.0 + PERSPECTIVE * t.sin());
    let left = h / 2.0 * (1.0 - PERSPECTIVE * t.sin());
    let from = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let to = [
        (cx - half_w, cy - left),
        (cx + half_w, cy - right),
        (cx + half_w, cy + right),
        (cx - half_w, cy + left),
    ];
    match Projection::from_control_points(from, to) {
        Some(p) => warp(
            patch,
            p,
            Interpolation::Bilinear,
            Border::Constant(MEAN_GREY),
        ),
        // Degenerate only for |θ| = 90°, which no view uses.
        None => patch.clone(),
    }
}

/// Light from `degrees` (0 = from the right, counter-clockwise, y up): brightness × (1 + s·d), d ∈ [−1, 1]
/// the pixel's position along the light direction.
pub fn shade(patch: &RgbImage, degrees: f32, strength: f32) -> RgbImage {
    let (w, h) = (patch.width() as f32, patch.height() as f32);
    let t = degrees.to_radians();
    let (dx, dy) = (t.cos(), -t.sin());
    let r = (w * w + h * h).sqrt() / 2.0;
    let mut out = patch.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (px, py) = (x as f32 + 0.5 - w / 2.0, y as f32 + 0.5 - h / 2.0);
        let gain = 1.0 + strength * (px * dx + py * dy) / r;
        for c in p.0.iter_mut() {
            *c = (*c as f32 * gain).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// sRGB colour of a black body at `kelvin` (Tanner Helland's fit to Mitchell Charity's table), 0–1.
pub fn kelvin_to_rgb(kelvin: f32) -> [f32; 3] {
    let t = (kelvin / 100.0).clamp(10.0, 400.0);
    let r = if t <= 66.0 {
        255.0
    } else {
        329.698_73 * (t - 60.0).powf(-0.133_204_76)
    };
    let g = if t <= 66.0 {
        99.470_8 * t.ln() - 161.119_57
    } else {
        288.122_16 * (t - 60.0).powf(-0.075_514_85)
    };
    let b = if t >= 66.0 {
        255.0
    } else if t <= 19.0 {
        0.0
    } else {
        138.517_73 * (t - 10.0).ln() - 305.044_8
    };
    [r, g, b].map(|v| v.clamp(0.0, 255.0) / 255.0)
}

/// Relights the patch as if under a `kelvin` light instead of 6500 K daylight (per-channel gains).
pub fn colour_temperature(patch: &RgbImage, kelvin: f32) -> RgbImage {
    let target = kelvin_to_rgb(kelvin);
    let daylight = kelvin_to_rgb(6500.0);
    let gain: [f32; 3] = std::array::from_fn(|c| target[c] / daylight[c].max(1e-6));
    let mut out = patch.clone();
    for p in out.pixels_mut() {
        for (c, v) in p.0.iter_mut().enumerate() {
            *v = (*v as f32 * gain[c]).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(n: u32) -> RgbImage {
        RgbImage::from_fn(n, n, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                Rgb([200, 150, 100])
            } else {
                Rgb([40, 60, 80])
            }
        })
    }

    #[test]
    fn parameter_zero_views_are_the_patch() {
        let p = checker(32);
        assert_eq!(occlude(&p, 0.0, 2), p);
        assert_eq!(yaw(&p, 0.0), p);
        assert_eq!(shade(&p, 90.0, 0.0), p);
        assert_eq!(colour_temperature(&p, 6500.0), p);
    }

    #[test]
    fn occlusion_covers_the_requested_share_of_the_box() {
        let p = RgbImage::from_pixel(60, 60, Rgb([255, 0, 0]));
        // box = the central 50×50 (margin 5 = 60 · 0.1 / 1.2); half of it from the top = 50×25 pixels
        let o = occlude(&p, 0.5, 1);
        let grey = o.pixels().filter(|q| **q == MEAN_GREY).count();
        assert_eq!(grey, 50 * 25);
        assert_eq!(*o.get_pixel(30, 6), MEAN_GREY);
        assert_eq!(*o.get_pixel(30, 40), Rgb([255, 0, 0]));
        assert_eq!(
            *o.get_pixel(2, 6),
            Rgb([255, 0, 0]),
            "margin is never occluded"
        );
    }

    #[test]
    fn shading_brightens_the_lit_side() {
        let p = RgbImage::from_pixel(40, 40, Rgb([100, 100, 100]));
        let lit_from_right = shade(&p, 0.0, 0.5);
        assert!(lit_from_right.get_pixel(39, 20)[0] > 100);
        assert!(lit_from_right.get_pixel(0, 20)[0] < 100);
        let lit_from_top = shade(&p, 90.0, 0.5);
        assert!(lit_from_top.get_pixel(20, 0)[0] > lit_from_top.get_pixel(20, 39)[0]);
    }

    #[test]
    fn warm_light_is_red_cool_light_is_blue() {
        // Helland's fit: 6600 K and above has full red; below 1900 K no blue
        assert_eq!(kelvin_to_rgb(5000.0)[0], 1.0);
        assert_eq!(kelvin_to_rgb(1500.0)[2], 0.0);
        let p = RgbImage::from_pixel(4, 4, Rgb([128, 128, 128]));
        let warm = colour_temperature(&p, 3000.0);
        let cool = colour_temperature(&p, 12000.0);
        let w = warm.get_pixel(0, 0);
        let c = cool.get_pixel(0, 0);
        assert!(w[0] > w[2] && c[2] > c[0], "{w:?} {c:?}");
    }

    #[test]
    fn yaw_narrows_the_plane_and_fills_with_grey() {
        let p = RgbImage::from_pixel(40, 40, Rgb([0, 200, 0]));
        let v = yaw(&p, 45.0);
        assert_eq!(
            *v.get_pixel(1, 20),
            MEAN_GREY,
            "the plane's left edge moved inwards"
        );
        assert_eq!(*v.get_pixel(20, 20), Rgb([0, 200, 0]));
        // the edge turned towards the viewer is taller: its corner rows are still green
        assert_eq!(*v.get_pixel(30, 4), Rgb([0, 200, 0]));
        assert_eq!(*v.get_pixel(7, 2), MEAN_GREY);
    }

    #[test]
    fn patch_is_square_around_the_box_and_views_count() {
        let img = RgbImage::from_fn(200, 100, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let p = object_patch(&img, Some([150.0, 40.0, 20.0, 10.0]), 24);
        assert_eq!(p.dimensions(), (24, 24));
        let whole = object_patch(&img, None, 16);
        assert_eq!(whole.dimensions(), (16, 16));
        let n: Vec<usize> = Transform::ALL
            .iter()
            .map(|t| t.views(&p, 0, 0).len())
            .collect();
        assert_eq!(n, vec![6, 7, 8, 7, 1]);
        assert!(Transform::parse("viewpoint").is_ok());
        assert!(Transform::parse("lighting").is_err());
    }
}
