//! The report's pictures: a confusion matrix and horizontal bar charts, drawn on a
//! [`Canvas`] and saved as PNG (charts drawn by hand so that an empty first tick can be
//! dropped and "100 %" kept inside the picture).

use std::path::Path;

use anyhow::Result;

pub use crate::canvas::{Anchor, BAR, BLACK, Canvas, GREY, LIGHT_GREY, RED, Rgb, WHITE};

/// The title and, under it, the subtitle (cut with … to the picture's width).
fn titles(c: &mut Canvas, t: &Titles) {
    c.text(t.title, 12.0, 20.0, 18.0, BLACK, Anchor::Left);
    let room = c.width as f32 - 24.0;
    let mut sub = t.subtitle.to_string();
    if c.text_width(&sub, 12.0) > room {
        while sub.pop().is_some() && c.text_width(&format!("{sub}…"), 12.0) > room {}
        sub.push('…');
    }
    c.text(&sub, 12.0, 44.0, 12.0, GREY, Anchor::Left);
}

/// ColorBrewer's sequential "Blues", white to dark blue, at `t` in [0, 1].
pub fn blues(t: f64) -> Rgb {
    const STOPS: [Rgb; 9] = [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    [
        mix(STOPS[i][0], STOPS[i + 1][0]),
        mix(STOPS[i][1], STOPS[i + 1][1]),
        mix(STOPS[i][2], STOPS[i + 1][2]),
    ]
}

/// Black or white, whichever reads better on `background`.
fn ink_on(background: Rgb) -> Rgb {
    let luma =
        0.299 * background[0] as f64 + 0.587 * background[1] as f64 + 0.114 * background[2] as f64;
    if luma < 140.0 { WHITE } else { BLACK }
}

/// What a picture is of: its title and a line saying model, data, wording and size.
pub struct Titles<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
}

/// A confusion matrix: rows the true classes, columns the predictions, each cell coloured by
/// its share of the row (so the diagonal is per-class recall) and labelled with its count.
/// Sized to the class count: readable at 10, 30 and 60 classes.
pub fn confusion(path: &Path, t: &Titles, names: &[String], counts: &[Vec<usize>]) -> Result<()> {
    let n = names.len().max(1);
    let cell: i64 = (720 / n as i64).clamp(16, 44);
    let label_size = if cell >= 24 { 13.0 } else { 11.0 };
    let count_size = (cell as f32 * 0.42).clamp(8.0, 13.0);
    let probe = Canvas::new(1, 1);
    let longest = names
        .iter()
        .map(|s| probe.text_width(s, label_size))
        .fold(0.0f32, f32::max)
        .ceil() as i64;
    let (top, left) = (70i64, longest + 46);
    let matrix = cell * n as i64;
    let (scale_w, right) = (16i64, 90i64);
    let bottom = longest + 44;
    let width = left + matrix + 30 + scale_w + right;
    let height = top + matrix + bottom;
    let mut c = Canvas::new(width as u32, height as u32);
    titles(&mut c, t);
    for (r, row) in counts.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &k) in row.iter().enumerate() {
            let share = if total > 0 {
                k as f64 / total as f64
            } else {
                0.0
            };
            let (x0, y0) = (left + p as i64 * cell, top + r as i64 * cell);
            let bg = blues(share);
            c.fill(x0, y0, x0 + cell, y0 + cell, bg);
            if k > 0 && cell >= 18 {
                let mid = (x0 as f32 + cell as f32 / 2.0, y0 as f32 + cell as f32 / 2.0);
                c.text(
                    &k.to_string(),
                    mid.0,
                    mid.1,
                    count_size,
                    ink_on(bg),
                    Anchor::Center,
                );
            }
        }
    }
    // The diagonal (correct predictions) outlined, the matrix framed.
    for d in 0..n as i64 {
        let (x0, y0) = (left + d * cell, top + d * cell);
        c.outline(
            x0,
            y0,
            x0 + cell,
            y0 + cell,
            if cell >= 24 { 2 } else { 1 },
            [200, 120, 0],
        );
    }
    c.outline(
        left - 1,
        top - 1,
        left + matrix + 1,
        top + matrix + 1,
        1,
        GREY,
    );
    for (i, name) in names.iter().enumerate() {
        let mid = top as f32 + (i as f32 + 0.5) * cell as f32;
        c.text(
            name,
            (left - 6) as f32,
            mid,
            label_size,
            BLACK,
            Anchor::Right,
        );
        let col = left as f32 + (i as f32 + 0.5) * cell as f32;
        c.text_up(name, col, (top + matrix + 6) as f32, label_size, BLACK);
    }
    // Axis titles.
    c.text(
        "predicted class",
        (left + matrix / 2) as f32,
        (top + matrix + longest + 28) as f32,
        14.0,
        BLACK,
        Anchor::Center,
    );
    let axis = "true class";
    let aw = c.text_width(axis, 14.0);
    c.text_up(
        axis,
        16.0,
        top as f32 + matrix as f32 / 2.0 - aw / 2.0,
        14.0,
        BLACK,
    );
    // The colour scale: share of the true class's images.
    let sx = left + matrix + 30;
    let steps = matrix.max(1);
    for y in 0..steps {
        let share = 1.0 - y as f64 / steps as f64;
        c.fill(sx, top + y, sx + scale_w, top + y + 1, blues(share));
    }
    c.outline(sx - 1, top - 1, sx + scale_w + 1, top + matrix + 1, 1, GREY);
    for (share, label) in [(1.0, "100 %"), (0.5, "50 %"), (0.0, "0 %")] {
        let y = top as f32 + (1.0 - share as f32) * matrix as f32;
        c.fill(sx + scale_w, y as i64, sx + scale_w + 4, y as i64 + 1, GREY);
        c.text(
            label,
            (sx + scale_w + 7) as f32,
            y,
            11.0,
            BLACK,
            Anchor::Left,
        );
    }
    c.text(
        "share of the row",
        (sx + scale_w + 7) as f32,
        (top + matrix + 18) as f32,
        11.0,
        GREY,
        Anchor::Left,
    );
    c.save(path)
}

/// Horizontal bars of values in [0, 1], one labelled row each, in the order given, with
/// value labels, a light 0–100 % grid and, when given, a dashed chance level.
pub fn bars(path: &Path, t: &Titles, rows: &[(String, f64)], chance: Option<f64>) -> Result<()> {
    let (row_h, bar_h, label_size) = (24i64, 16i64, 12.0f32);
    let probe = Canvas::new(1, 1);
    let longest = rows
        .iter()
        .map(|(s, _)| probe.text_width(s, label_size))
        .fold(0.0f32, f32::max)
        .ceil() as i64;
    let left = (longest + 24).max(120);
    let plot_w = 560i64;
    let (top, right, bottom) = (76i64, 70i64, 40i64);
    let width = left + plot_w + right;
    let height = top + row_h * rows.len() as i64 + bottom;
    let mut c = Canvas::new(width as u32, height as u32);
    titles(&mut c, t);
    let plot_bottom = top + row_h * rows.len() as i64;
    let x_of = |v: f64| left + (v.clamp(0.0, 1.0) * plot_w as f64).round() as i64;
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = x_of(tick);
        c.vline(x, top - 4, plot_bottom, 1, LIGHT_GREY, 0);
        c.text(
            &format!("{:.0} %", tick * 100.0),
            x as f32,
            (plot_bottom + 14) as f32,
            11.0,
            GREY,
            Anchor::Center,
        );
    }
    // The chance level first, so that bars and their values are drawn over it.
    if let Some(p) = chance {
        let x = x_of(p);
        c.vline(x, top - 10, plot_bottom, 2, RED, 5);
        c.text(
            &format!("chance {:.1} %", p * 100.0),
            (x + 4) as f32,
            (top - 14) as f32,
            11.0,
            RED,
            Anchor::Left,
        );
    }
    for (i, (label, v)) in rows.iter().enumerate() {
        let y0 = top + i as i64 * row_h + (row_h - bar_h) / 2;
        let mid = (top + i as i64 * row_h) as f32 + row_h as f32 / 2.0;
        c.fill(left, y0, x_of(*v).max(left + 1), y0 + bar_h, BAR);
        c.text(
            label,
            (left - 8) as f32,
            mid,
            label_size,
            BLACK,
            Anchor::Right,
        );
        let value = format!("{:.1} %", v * 100.0);
        let vx = (x_of(*v) + 5) as f32;
        let vw = c.text_width(&value, 11.0);
        c.fill(
            vx as i64 - 1,
            mid as i64 - 7,
            (vx + vw) as i64 + 2,
            mid as i64 + 7,
            WHITE,
        );
        c.text(&value, vx, mid, 11.0, BLACK, Anchor::Left);
    }
    c.vline(left, top - 4, plot_bottom, 1, GREY, 0);
    c.save(path)
}

/// One line of [`curves`]: `(x, mean, std)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// Colour-blind-safe line colours (Okabe–Ito), in series order.
const SERIES_COLOURS: [Rgb; 6] = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
    [213, 94, 0],
];

/// Accuracy (0–100 %) against x on a log₂ axis (shots per class): each series a line through
/// its means with ± std whiskers, horizontal dashed reference lines (zero-shot), and one
/// labelled point (the probe on all the data) at the right edge; a legend below.
pub fn curves(
    path: &Path,
    t: &Titles,
    series: &[Series],
    lines: &[(String, f64)],
    point: Option<(String, f64)>,
) -> Result<()> {
    let (left, top, plot_w, plot_h) = (64i64, 76i64, 560i64, 340i64);
    let legend_rows = series.len() + lines.len() + usize::from(point.is_some());
    let width = left + plot_w + 150;
    let height = top + plot_h + 50 + 20 * legend_rows as i64;
    let mut c = Canvas::new(width as u32, height as u32);
    titles(&mut c, t);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).max(1.0),
        xs.iter().copied().fold(1.0f64, f64::max),
    );
    let span = (xmax.log2() - xmin.log2()).max(1.0);
    // The all-data point sits in its own column right of the curve.
    let curve_w = plot_w - 90;
    let x_of = |x: f64| left as f32 + ((x.log2() - xmin.log2()) / span) as f32 * curve_w as f32;
    let y_of = |v: f64| (top + plot_h) as f32 - (v.clamp(0.0, 1.0) as f32) * plot_h as f32;
    for tick in 0..=10 {
        let v = tick as f64 / 10.0;
        let y = y_of(v) as i64;
        c.fill(left, y, left + plot_w, y + 1, LIGHT_GREY);
        c.text(
            &format!("{:.0} %", v * 100.0),
            (left - 6) as f32,
            y as f32,
            11.0,
            GREY,
            Anchor::Right,
        );
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in &ticks {
        let px = x_of(*x);
        c.vline(px as i64, top, top + plot_h, 1, LIGHT_GREY, 0);
        c.text(
            &format!("{x}"),
            px,
            (top + plot_h + 14) as f32,
            11.0,
            GREY,
            Anchor::Center,
        );
    }
    c.text(
        "shots per class",
        left as f32 + curve_w as f32 / 2.0,
        (top + plot_h + 32) as f32,
        12.0,
        BLACK,
        Anchor::Center,
    );
    for (name, v) in lines {
        let y = y_of(*v);
        c.line((left as f32, y), ((left + curve_w) as f32, y), 2, RED, 6.0);
        let _ = name;
    }
    for (i, s) in series.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        for w in s.points.windows(2) {
            c.line(
                (x_of(w[0].0), y_of(w[0].1)),
                (x_of(w[1].0), y_of(w[1].1)),
                2,
                colour,
                0.0,
            );
        }
        for &(x, m, sd) in &s.points {
            let px = x_of(x);
            c.line((px, y_of(m - sd)), (px, y_of(m + sd)), 1, colour, 0.0);
            c.fill(
                px as i64 - 3,
                y_of(m) as i64 - 3,
                px as i64 + 4,
                y_of(m) as i64 + 4,
                colour,
            );
        }
    }
    if let Some((_, v)) = &point {
        let px = (left + plot_w - 45) as f32;
        let y = y_of(*v);
        c.fill(
            px as i64 - 5,
            y as i64 - 5,
            px as i64 + 6,
            y as i64 + 6,
            BLACK,
        );
        c.text(
            &format!("{:.1} %", v * 100.0),
            px,
            y - 14.0,
            11.0,
            BLACK,
            Anchor::Center,
        );
        c.text(
            "all data",
            px,
            (top + plot_h + 14) as f32,
            11.0,
            GREY,
            Anchor::Center,
        );
    }
    c.vline(left, top, top + plot_h, 1, GREY, 0);
    c.fill(left, top + plot_h, left + plot_w, top + plot_h + 1, GREY);
    // Legend.
    let mut y = (top + plot_h + 56) as f32;
    let mut entry = |c: &mut Canvas, label: &str, colour: Rgb, dashed: bool, square: bool| {
        let x = left as f32;
        if square {
            c.fill(
                x as i64 + 10,
                y as i64 - 5,
                x as i64 + 21,
                y as i64 + 6,
                colour,
            );
        } else {
            c.line(
                (x, y),
                (x + 30.0, y),
                2,
                colour,
                if dashed { 6.0 } else { 0.0 },
            );
        }
        c.text(label, x + 40.0, y, 12.0, BLACK, Anchor::Left);
        y += 20.0;
    };
    for (i, s) in series.iter().enumerate() {
        entry(
            &mut c,
            &s.name,
            SERIES_COLOURS[i % SERIES_COLOURS.len()],
            false,
            false,
        );
    }
    for (name, v) in lines {
        entry(
            &mut c,
            &format!("{name} ({:.1} %)", v * 100.0),
            RED,
            true,
            false,
        );
    }
    if let Some((name, v)) = &point {
        entry(
            &mut c,
            &format!("{name} ({:.1} %)", v * 100.0),
            BLACK,
            false,
            true,
        );
    }
    c.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blues_runs_from_white_to_dark_blue() {
        assert_eq!(blues(0.0), [247, 251, 255]);
        assert_eq!(blues(1.0), [8, 48, 107]);
        assert_eq!(ink_on(blues(1.0)), WHITE);
        assert_eq!(ink_on(blues(0.1)), BLACK);
    }
}
