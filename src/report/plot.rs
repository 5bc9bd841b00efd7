//! PNG plots for the analysis reports, drawn with plotters into an RGB buffer and encoded by `image`.
//! Made to be read at a glance in a paper: short series names in a legend panel beside the data (never
//! over it), one distinct colour per series, axes fitted to the data, tick labels without float noise.
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

/// Matplotlib's tab10: ten colours a reader tells apart (also in greyscale print, mostly).
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Width of the legend panel right of a chart with many series.
const LEGEND_W: u32 = 300;
const TITLE_SIZE: u32 = 20;
const TEXT_SIZE: u32 = 15;
/// Legend names longer than this keep their start and end around an ellipsis.
const MAX_LEGEND_CHARS: usize = 40;

/// Colour of series `i` of `n`: tab10 up to ten series, else hues spread evenly round the wheel.
pub fn series_colour(i: usize, n: usize) -> RGBColor {
    if n <= TAB10.len() {
        return TAB10[i % TAB10.len()];
    }
    let (r, g, b) = HSLColor(i as f64 / n as f64, 0.7, 0.42).rgb();
    RGBColor(r, g, b)
}

/// A tick label without float noise: `0.001`, `0.25`, `12`, `3e-7` (never `999999999e-5`).
pub fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let e = v.abs().log10().floor();
    if !(-4.0..5.0).contains(&e) {
        let (mut m, mut e) = (v / 10f64.powf(e), e);
        m = (m * 10.0).round() / 10.0;
        if m.abs() >= 10.0 {
            m /= 10.0;
            e += 1.0;
        }
        return if (m - m.round()).abs() < 1e-9 {
            format!("{}e{}", m.round(), e)
        } else {
            format!("{m}e{e}")
        };
    }
    // Three significant digits, trailing zeros dropped.
    let decimals = (2.0 - e).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `name` cut to `MAX_LEGEND_CHARS`, keeping its start and end.
fn short(name: &str) -> String {
    let n = name.chars().count();
    if n <= MAX_LEGEND_CHARS {
        return name.to_string();
    }
    let head = (MAX_LEGEND_CHARS - 1) / 2;
    let tail = MAX_LEGEND_CHARS - 1 - head;
    let h: String = name.chars().take(head).collect();
    let t: String = name.chars().skip(n - tail).collect();
    format!("{h}…{t}")
}

/// Legend names for experiment cells (`data__method__crops__variant__seedN`): the `__` fields every cell
/// shares (one variant, one seed) are dropped and the rest joined by spaces, so the legend says only what
/// differs. Names of another shape (the demo's `random-init`) are kept.
pub fn legend_names(names: &[String]) -> Vec<String> {
    let parts: Vec<Vec<&str>> = names.iter().map(|n| n.split("__").collect()).collect();
    let cells: Vec<&Vec<&str>> = parts.iter().filter(|p| p.len() == CELL_FIELDS).collect();
    if cells.len() < 2 {
        return names.to_vec();
    }
    let varies: Vec<usize> = (0..CELL_FIELDS)
        .filter(|&i| cells.iter().any(|p| p[i] != cells[0][i]))
        .collect();
    parts
        .iter()
        .zip(names)
        .map(|(p, n)| {
            if p.len() == CELL_FIELDS && !varies.is_empty() {
                varies.iter().map(|&i| p[i]).collect::<Vec<_>>().join(" ")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Fields of an experiment cell id (`Cell::id`: data, method, crops, variant, seed).
const CELL_FIELDS: usize = 5;

/// A legend panel: one swatch (a line, dashed for `dashed(i)`, or a filled box) and name per series.
fn legend_panel(
    path: &Path,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    names: &[String],
    boxes: bool,
    dashed: &dyn Fn(usize) -> bool,
) -> Result<()> {
    let n = names.len();
    let style = TextStyle::from((FAMILY, TEXT_SIZE - 2).into_font()).color(&BLACK);
    for (i, name) in names.iter().enumerate() {
        let y = 50 + i as i32 * 20;
        let c = series_colour(i, n);
        if boxes {
            area.draw(&Rectangle::new([(8, y - 6), (26, y + 6)], c.filled()))
                .map_err(|e| perr(path, e))?;
        } else if dashed(i) {
            for x in [6, 16] {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 6, y)],
                    c.stroke_width(3),
                ))
                .map_err(|e| perr(path, e))?;
            }
        } else {
            area.draw(&PathElement::new(vec![(6, y), (28, y)], c.stroke_width(3)))
                .map_err(|e| perr(path, e))?;
        }
        area.draw(&Text::new(short(name), (34, y - 8), style.clone()))
            .map_err(|e| perr(path, e))?;
    }
    Ok(())
}

/// Overlaid histograms of several samples, the x axis fitted to the data (e.g. same-scene vs
/// same-category pair cosines, which may all lie in 0.8–1), each bar the share of its sample in percent;
/// `annotation` (e.g. the collapse index; one line per `\n`) is written in the upper left of the plot area.
pub fn histograms(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[(&str, &[f32])],
    bins: usize,
    annotation: Option<&str>,
) -> Result<()> {
    let finite = || {
        series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
    };
    let (min, max) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (min, max) = if min.is_finite() {
        (min, max)
    } else {
        (0.0, 1.0)
    };
    // 5% of the range each side, at least 0.01, so a sample of equal values still has a visible bar.
    let pad = ((max - min) * 0.05).max(0.01);
    let (lo, hi) = (min - pad, max + pad);
    let width = (hi - lo) / bins as f64;
    let shares: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut h = vec![0.0; bins];
            for &x in v.iter().filter(|x| x.is_finite()) {
                let b = (((x as f64 - lo) / width).floor() as isize).clamp(0, bins as isize - 1)
                    as usize;
                h[b] += 1.0;
            }
            let n = v.len().max(1) as f64;
            h.iter().map(|c| 100.0 * c / n).collect()
        })
        .collect();
    let ymax = shares
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.25;
    render(path, |root, text| {
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, TITLE_SIZE))
                .x_label_area_size(45)
                .y_label_area_size(65);
        }
        let mut chart = b
            .build_cartesian_2d(lo..hi, 0.0..ymax)
            .map_err(|e| perr(path, e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_desc)
                .y_desc(format!("pairs per bin (%, bin width {})", tick(width)))
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .label_style((FAMILY, TEXT_SIZE));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(path, e))?;
        let n = series.len();
        for (s, ((name, v), d)) in series.iter().zip(&shares).enumerate() {
            let c = series_colour(s, n);
            let bars = d.iter().enumerate().map(move |(i, &y)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, y)], c.mix(0.45).filled())
            });
            let ann = chart.draw_series(bars).map_err(|e| perr(path, e))?;
            if text {
                let label = format!("{name} (n = {})", v.len());
                ann.label(label).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, TEXT_SIZE))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| perr(path, e))?;
            if let Some(a) = annotation {
                // one line of text per line of the annotation, downwards from the top left
                chart
                    .draw_series(a.lines().enumerate().map(|(i, line)| {
                        Text::new(
                            line.to_string(),
                            (lo + 0.02 * (hi - lo), ymax * (0.97 - 0.06 * i as f64)),
                            (FAMILY, TEXT_SIZE + 1).into_font(),
                        )
                    }))
                    .map_err(|e| perr(path, e))?;
            }
        }
        Ok(())
    })
}

/// Lines of positive values against rank 1.. on a log y axis (singular-value spectra), one colour per
/// series (dashed from the eleventh on), the short names in a legend panel to the right.
pub fn log_lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let pos = |v: &f64| *v > 0.0 && v.is_finite();
    let vals = || {
        series
            .iter()
            .flat_map(|s| s.1.iter())
            .filter(|v| pos(v))
            .copied()
    };
    let ymax = vals().fold(f64::MIN_POSITIVE, f64::max) * 2.0;
    let ymin = vals().fold(f64::MAX, f64::min).min(ymax / 10.0) / 2.0;
    let xmax = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
    let n = series.len();
    let dashed = |i: usize| n > TAB10.len() && i % 2 == 1;
    render(path, |root, text| {
        let (main, side) = if text {
            root.split_horizontally(WIDTH - LEGEND_W)
        } else {
            root.split_horizontally(WIDTH)
        };
        let mut b = ChartBuilder::on(&main);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, TITLE_SIZE))
                .x_label_area_size(45)
                .y_label_area_size(70);
        }
        let mut chart = b
            .build_cartesian_2d(1usize..xmax, (ymin..ymax).log_scale())
            .map_err(|e| perr(path, e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("rank k")
                .y_desc(y_desc)
                .y_label_formatter(&|v| tick(*v))
                .label_style((FAMILY, TEXT_SIZE));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(path, e))?;
        for (s, (_, v)) in series.iter().enumerate() {
            let c = series_colour(s, n);
            let pts: Vec<(usize, f64)> = v
                .iter()
                .enumerate()
                .filter(|(_, y)| pos(y))
                .map(|(i, y)| (i + 1, *y))
                .collect();
            if dashed(s) {
                chart
                    .draw_series(DashedLineSeries::new(pts, 8, 5, c.stroke_width(2)))
                    .map_err(|e| perr(path, e))?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(|e| perr(path, e))?;
            }
        }
        if text {
            let names: Vec<String> = series.iter().map(|s| s.0.clone()).collect();
            legend_panel(path, &side, &legend_names(&names), false, &dashed)?;
        }
        Ok(())
    })
}

/// A bar chart of counts ranked by size (prototype usage): one bar per (name, value), integer y ticks;
/// bars are labelled by name when there are few, else the x axis says what they are.
pub fn count_bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    bars: &[(String, f64)],
) -> Result<()> {
    let top = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ymax = (top * 1.1).ceil().max(1.0);
    let n = bars.len().max(1);
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    render(path, |root, text| {
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, TITLE_SIZE))
                .x_label_area_size(45)
                .y_label_area_size(60);
        }
        let mut chart = b
            .build_cartesian_2d((0..n).into_segmented(), 0.0..ymax)
            .map_err(|e| perr(path, e))?;
        let fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if n <= 30 => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh();
        if text {
            // Whole numbers only: at most one label per unit.
            mesh.y_desc(y_desc)
                .x_desc(x_desc)
                .y_labels((ymax as usize + 1).min(11))
                .y_label_formatter(&|v| {
                    if (v - v.round()).abs() < 1e-9 {
                        format!("{}", v.round() as i64)
                    } else {
                        String::new()
                    }
                })
                .x_labels(n.min(30))
                .x_label_formatter(&fmt)
                .label_style((FAMILY, TEXT_SIZE));
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
                        Rectangle::new(
                            [
                                (SegmentValue::Exact(i), 0.0),
                                (SegmentValue::Exact(i + 1), b.1),
                            ],
                            TAB10[0].filled(),
                        )
                    }),
            )
            .map_err(|e| perr(path, e))?;
        Ok(())
    })
}

/// One series of bars: its name and one value per category.
pub type BarSeries = (String, Vec<f64>);
/// One panel of [`grouped_bars`]: its subtitle and its series.
pub type Panel = (String, Vec<BarSeries>);

/// Grouped bars, one panel per `(subtitle, series)`: each category (e.g. a transform) gets one bar per
/// series (e.g. a cell), series coloured alike in every panel and named in a legend panel to the right.
/// Non-finite values leave an empty slot.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    panels: &[Panel],
) -> Result<()> {
    let top = panels
        .iter()
        .flat_map(|p| p.1.iter().flat_map(|s| s.1.iter()))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ymax = (top * 1.1).max(1e-9);
    let nc = categories.len().max(1);
    let names: Vec<String> = panels
        .first()
        .map(|p| p.1.iter().map(|s| s.0.clone()).collect())
        .unwrap_or_default();
    let ns = names.len().max(1);
    render(path, |root, text| {
        let (main, side) = if text {
            root.split_horizontally(WIDTH - LEGEND_W)
        } else {
            root.split_horizontally(WIDTH)
        };
        let main = if text {
            main.titled(title, (FAMILY, TITLE_SIZE))
                .map_err(|e| perr(path, e))?
        } else {
            main
        };
        let areas = main.split_evenly((panels.len().max(1), 1));
        for (area, (subtitle, series)) in areas.iter().zip(panels) {
            let mut b = ChartBuilder::on(area);
            b.margin(10);
            if text {
                b.caption(subtitle, (FAMILY, TEXT_SIZE + 1))
                    .x_label_area_size(30)
                    .y_label_area_size(60);
            }
            let mut chart = b
                .build_cartesian_2d(0.0..nc as f64, 0.0..ymax)
                .map_err(|e| perr(path, e))?;
            let cats = categories.to_vec();
            let xfmt = move |v: &f64| {
                let i = v.floor() as usize;
                if (v - i as f64 - 0.5).abs() < 1e-6 {
                    cats.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            };
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh();
            if text {
                mesh.y_desc(y_desc)
                    .x_labels(2 * nc + 1)
                    .x_label_formatter(&xfmt)
                    .y_label_formatter(&|v| tick(*v))
                    .label_style((FAMILY, TEXT_SIZE))
                    .x_label_style((FAMILY, TEXT_SIZE - 2));
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(|e| perr(path, e))?;
            // Bars fill 80% of a category's width, side by side in series order.
            let w = 0.8 / ns as f64;
            for (s, (_, v)) in series.iter().enumerate() {
                let c = series_colour(s, ns);
                chart
                    .draw_series(v.iter().enumerate().filter(|(_, y)| y.is_finite()).map(
                        |(i, &y)| {
                            let x0 = i as f64 + 0.1 + s as f64 * w;
                            Rectangle::new([(x0, 0.0), (x0 + w, y)], c.filled())
                        },
                    ))
                    .map_err(|e| perr(path, e))?;
            }
        }
        if text {
            legend_panel(path, &side, &legend_names(&names), true, &|_| false)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(tick(0.000_999_999_999), "0.001");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(12.0), "12");
        assert_eq!(tick(1234.6), "1235");
        assert_eq!(tick(9.999_999e-7), "1e-6");
        assert_eq!(tick(3e-7), "3e-7");
        assert_eq!(tick(1e6), "1e6");
    }

    #[test]
    fn colours_are_distinct_for_many_series() {
        for n in [3, 10, 11, 24] {
            let c: std::collections::BTreeSet<(u8, u8, u8)> = (0..n)
                .map(|i| {
                    let c = series_colour(i, n);
                    (c.0, c.1, c.2)
                })
                .collect();
            assert_eq!(c.len(), n);
        }
    }

    #[test]
    fn long_legend_names_keep_start_and_end() {
        let s = short("demo-objects-train swav object-aware seed31 and more to come");
        assert_eq!(s.chars().count(), MAX_LEGEND_CHARS);
        assert!(s.starts_with("demo-objects") && s.contains('…') && s.ends_with("more to come"));
    }

    #[test]
    fn legend_names_drop_the_fields_every_cell_shares() {
        let cells = [
            "demo-objects-train__swav__multicrop__base__seed31",
            "demo-scenes-train__simclr__two-large__base__seed31",
        ]
        .map(String::from);
        assert_eq!(
            legend_names(&cells),
            [
                "demo-objects-train swav multicrop",
                "demo-scenes-train simclr two-large"
            ]
        );
        let mixed = [
            "random-init".to_string(),
            cells[0].clone(),
            cells[1].clone(),
        ];
        assert_eq!(
            legend_names(&mixed),
            [
                "random-init",
                "demo-objects-train swav multicrop",
                "demo-scenes-train simclr two-large"
            ]
        );
        let one = [cells[0].clone()];
        assert_eq!(legend_names(&one), one);
    }
}
