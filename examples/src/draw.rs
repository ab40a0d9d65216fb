//! Pictures for the chapter's exercises: labelled image grids and a small line plot, drawn
//! with the public-domain 8×8 bitmap font of `font8x8`.

use font8x8::{BASIC_FONTS, UnicodeFonts};
use image::{Rgb, RgbImage, imageops};

const INK: Rgb<u8> = Rgb([20, 20, 20]);
const PAPER: Rgb<u8> = Rgb([255, 255, 255]);

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale` × `scale`
/// square; characters the font lacks are left blank.
pub fn text(image: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    for (k, ch) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (k as i64 * 8 + col) * i64::from(scale) + i64::from(dx);
                        let py = y + row as i64 * i64::from(scale) + i64::from(dy);
                        put(image, px, py, color);
                    }
                }
            }
        }
    }
}

/// The width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}

fn put(image: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, color);
    }
}

/// A grid of `cells[row][column]` images (each enlarged `zoom` times, nearest neighbour) with
/// a label above each column and one left of each row.
pub fn labelled_grid(
    cells: &[Vec<RgbImage>],
    column_labels: &[String],
    row_labels: &[String],
    zoom: u32,
) -> RgbImage {
    let (cw, ch) = cells
        .first()
        .and_then(|r| r.first())
        .map_or((1, 1), |c| (c.width() * zoom, c.height() * zoom));
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let left = row_labels
        .iter()
        .map(|l| text_width(l, 1))
        .max()
        .unwrap_or(0)
        + 8;
    let top = 20;
    let gap = 4;
    let width = left + columns * (cw + gap);
    let height = top + cells.len() as u32 * (ch + gap);
    let mut grid = RgbImage::from_pixel(width, height, PAPER);
    for (c, label) in column_labels.iter().enumerate() {
        let x = left + c as u32 * (cw + gap) + cw / 2;
        text(
            &mut grid,
            i64::from(x) - i64::from(text_width(label, 1) / 2),
            6,
            label,
            1,
            INK,
        );
    }
    for (r, row) in cells.iter().enumerate() {
        let y = top + r as u32 * (ch + gap);
        if let Some(label) = row_labels.get(r) {
            text(&mut grid, 4, i64::from(y + ch / 2) - 4, label, 1, INK);
        }
        for (c, cell) in row.iter().enumerate() {
            let big = imageops::resize(cell, cw, ch, imageops::FilterType::Nearest);
            imageops::overlay(
                &mut grid,
                &big,
                i64::from(left + c as u32 * (cw + gap)),
                i64::from(y),
            );
        }
    }
    grid
}

/// One line of a [`line_plot`]: a name, a colour and its `(x, y)` points.
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// Its colour.
    pub color: Rgb<u8>,
    /// Its points.
    pub points: Vec<(f64, f64)>,
}

/// A line plot of `series` with axes from `x_range` and `y_range`, point labels
/// (`labels[i]` written next to every series' `i`-th point), a title and axis names.
pub fn line_plot(
    title: &str,
    x_name: &str,
    y_name: &str,
    x_range: (f64, f64),
    y_range: (f64, f64),
    series: &[Series],
    labels: &[String],
) -> RgbImage {
    let (w, h) = (640u32, 440u32);
    let (left, right, top, bottom) = (64i64, 24i64, 40i64, 56i64);
    let mut image = RgbImage::from_pixel(w, h, PAPER);
    let (pw, ph) = (i64::from(w) - left - right, i64::from(h) - top - bottom);
    let to_px = |(x, y): (f64, f64)| {
        let fx = (x - x_range.0) / (x_range.1 - x_range.0);
        let fy = (y - y_range.0) / (y_range.1 - y_range.0);
        (
            left + (fx * pw as f64).round() as i64,
            top + ph - (fy * ph as f64).round() as i64,
        )
    };
    // Axes, ticks at tenths, tick labels at fifths.
    line(&mut image, (left, top + ph), (left + pw, top + ph), INK);
    line(&mut image, (left, top), (left, top + ph), INK);
    for k in 0..=10 {
        let f = f64::from(k) / 10.0;
        let (x, _) = to_px((x_range.0 + f * (x_range.1 - x_range.0), y_range.0));
        let (_, y) = to_px((x_range.0, y_range.0 + f * (y_range.1 - y_range.0)));
        line(&mut image, (x, top + ph), (x, top + ph + 4), INK);
        line(&mut image, (left - 4, y), (left, y), INK);
        if k % 2 == 0 {
            let xs = tick(
                x_range.0 + f * (x_range.1 - x_range.0),
                x_range.1 - x_range.0,
            );
            let ys = tick(
                y_range.0 + f * (y_range.1 - y_range.0),
                y_range.1 - y_range.0,
            );
            text(
                &mut image,
                x - i64::from(text_width(&xs, 1) / 2),
                top + ph + 8,
                &xs,
                1,
                INK,
            );
            text(
                &mut image,
                left - 8 - i64::from(text_width(&ys, 1)),
                y - 4,
                &ys,
                1,
                INK,
            );
        }
    }
    text(&mut image, left, 10, title, 2, INK);
    text(
        &mut image,
        left + pw / 2 - i64::from(text_width(x_name, 1) / 2),
        i64::from(h) - 22,
        x_name,
        1,
        INK,
    );
    text(&mut image, 4, top - 14, y_name, 1, INK);
    for (s, series) in series.iter().enumerate() {
        let points: Vec<(i64, i64)> = series.points.iter().map(|&p| to_px(p)).collect();
        for pair in points.windows(2) {
            line(&mut image, pair[0], pair[1], series.color);
        }
        for (i, &(x, y)) in points.iter().enumerate() {
            for d in -3..=3 {
                line(&mut image, (x - 3, y + d), (x + 3, y + d), series.color);
            }
            if let Some(label) = labels.get(i) {
                text(&mut image, x + 6, y - 12, label, 1, series.color);
            }
        }
        let ly = top + 8 + s as i64 * 14;
        let lx = left + pw - 300;
        line(&mut image, (lx, ly + 4), (lx + 16, ly + 4), series.color);
        text(&mut image, lx + 22, ly, &series.name, 1, series.color);
    }
    image
}

/// A tick label with enough decimals to tell ticks a fifth of `span` apart.
fn tick(value: f64, span: f64) -> String {
    let decimals = (-(span / 5.0).log10()).ceil().max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// A straight line (Bresenham).
fn line(image: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(image, x, y, color);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}
