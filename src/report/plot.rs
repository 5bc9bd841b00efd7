//! PNG plots for the analysis reports, drawn with plotters into an RGB buffer and encoded by `image`.
//! Text needs a TTF: `$BIASLAB_FONT`, then the virtualenv's matplotlib DejaVuSans, then the system
//! DejaVuSans; without one the plots are drawn without text and `font()` says so.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::report::io::write_bytes_atomic;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;
const FAMILY: &str = "sans-serif";

fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("BIASLAB_FONT") {
        v.push(PathBuf::from(p));
    }
    for venv in [
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        Some(PathBuf::from(".venv")),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(rd) = std::fs::read_dir(venv.join("lib")) {
            let mut dirs: Vec<PathBuf> = rd.flatten().map(|d| d.path()).collect();
            dirs.sort();
            for d in dirs {
                v.push(d.join("site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"));
            }
        }
    }
    v.push(PathBuf::from(
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ));
    v
}

/// The font registered for plot text (first usable candidate), or None: plots then carry no text.
pub fn font() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        for p in candidates() {
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            // Registered fonts must live for the whole program; one leak of one file, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return Some(p);
            }
        }
        None
    })
    .as_deref()
}

fn perr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("drawing plot: {e}"))
}

/// Draws with `draw` into a WIDTH×HEIGHT RGB buffer and writes it as PNG atomically.
fn render(
    path: &Path,
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>, bool) -> Result<()>,
) -> Result<()> {
    let text = font().is_some();
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(path, e))?;
        draw(root.clone(), text)?;
        root.present().map_err(|e| perr(path, e))?;
    }
    let img =
        image::RgbImage::from_raw(WIDTH, HEIGHT, buf).ok_or_else(|| perr(path, "buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| perr(path, e))?;
    write_bytes_atomic(path, &png)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Overlaid density histograms of several samples over [lo, hi] (e.g. same-scene vs same-category cos).
pub fn histograms(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[(&str, &[f32])],
    lo: f64,
    hi: f64,
    bins: usize,
) -> Result<()> {
    let width = (hi - lo) / bins as f64;
    let dens: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut h = vec![0.0; bins];
            for &x in v.iter() {
                let b = (((x as f64 - lo) / width).floor() as isize).clamp(0, bins as isize - 1)
                    as usize;
                h[b] += 1.0;
            }
            let n = v.len().max(1) as f64;
            h.iter().map(|c| c / n / width).collect()
        })
        .collect();
    let ymax = dens.iter().flatten().copied().fold(0.0, f64::max).max(1e-9) * 1.1;
    render(path, |root, text| {
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, 22))
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = b
            .build_cartesian_2d(lo..hi, 0.0..ymax)
            .map_err(|e| perr(path, e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_desc).y_desc("density");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(path, e))?;
        for (s, ((name, _), d)) in series.iter().zip(&dens).enumerate() {
            let c = PALETTE[s % PALETTE.len()];
            let bars = d.iter().enumerate().map(move |(i, &y)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, y)], c.mix(0.45).filled())
            });
            let ann = chart.draw_series(bars).map_err(|e| perr(path, e))?;
            if text {
                ann.label(*name).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| perr(path, e))?;
        }
        Ok(())
    })
}

/// Lines of positive values against rank 1.. on a log y axis (singular-value spectra).
pub fn log_lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let pos = |v: &f64| *v > 0.0 && v.is_finite();
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|v| pos(v))
        .copied()
        .fold(f64::MIN_POSITIVE, f64::max)
        * 2.0;
    let ymin = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|v| pos(v))
        .copied()
        .fold(f64::MAX, f64::min)
        .min(ymax / 10.0)
        / 2.0;
    let xmax = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
    render(path, |root, text| {
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, 22))
                .x_label_area_size(40)
                .y_label_area_size(70);
        }
        let mut chart = b
            .build_cartesian_2d(1usize..xmax, (ymin..ymax).log_scale())
            .map_err(|e| perr(path, e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("rank").y_desc(y_desc);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(path, e))?;
        for (s, (name, v)) in series.iter().enumerate() {
            let c = PALETTE[s % PALETTE.len()];
            let pts: Vec<(usize, f64)> = v
                .iter()
                .enumerate()
                .filter(|(_, y)| pos(y))
                .map(|(i, y)| (i + 1, *y))
                .collect();
            let ann = chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|e| perr(path, e))?;
            if text {
                ann.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| perr(path, e))?;
        }
        Ok(())
    })
}

/// A bar chart: one bar per (name, value); non-finite values are drawn as empty slots.
pub fn bars(path: &Path, title: &str, y_desc: &str, bars: &[(String, f64)]) -> Result<()> {
    let ymax = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let n = bars.len().max(1);
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    render(path, |root, text| {
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, 22))
                .x_label_area_size(60)
                .y_label_area_size(60);
        }
        let mut chart = b
            .build_cartesian_2d((0..n).into_segmented(), 0.0..ymax)
            .map_err(|e| perr(path, e))?;
        let fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh();
        if text {
            mesh.y_desc(y_desc)
                .x_labels(n.min(40))
                .x_label_formatter(&fmt);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(path, e))?;
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter(|(_, b)| b.1.is_finite())
                    .map(|(i, b)| {
                        let c = PALETTE[i % PALETTE.len()];
                        Rectangle::new(
                            [
                                (SegmentValue::Exact(i), 0.0),
                                (SegmentValue::Exact(i + 1), b.1),
                            ],
                            c.filled(),
                        )
                    }),
            )
            .map_err(|e| perr(path, e))?;
        Ok(())
    })
}
