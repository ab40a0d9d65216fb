//! An exact analyser of shapes-world pictures: which colour, shape and position the main
//! object of an image has. The world is procedural, so a generated picture can be judged
//! against its prompt without a learned model.
//!
//! The background is the mean of the image's border; object pixels are those far from it;
//! each is given the nearest [`Color`]; the most frequent colour is the object's. Its pixels'
//! centroid gives the [`Position`] (the nearest anchor), and the [`ShapeKind`] is the one whose
//! outline — drawn at that centroid with the radius its area implies — overlaps the pixels
//! best (intersection over union).

use image::RgbImage;

use crate::shapes::{Color, Position, ShapeKind};

/// Pixels further than this from the background (Euclidean RGB distance) are object pixels.
const OBJECT_DISTANCE: f64 = 80.0;
/// The smallest object, as a fraction of the image's pixels.
const MIN_COVERAGE: f64 = 0.01;

/// What the analyser found in an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analysis {
    /// The main object's colour (`None`: no object).
    pub color: Option<Color>,
    /// Its shape.
    pub shape: Option<ShapeKind>,
    /// Its position.
    pub position: Option<Position>,
    /// How well the best outline fits (intersection over union, 0 to 1).
    pub fit: f64,
    /// The fraction of the image the object covers.
    pub coverage: f64,
}

/// Analyses `image` (see the [module](self) docs).
pub fn analyse(image: &RgbImage) -> Analysis {
    let (w, h) = image.dimensions();
    let none = Analysis {
        color: None,
        shape: None,
        position: None,
        fit: 0.0,
        coverage: 0.0,
    };
    if w < 8 || h < 8 {
        return none;
    }
    let background = border_mean(image);
    let mut counts = [0usize; Color::ALL.len()];
    let mut labels = vec![None; (w * h) as usize];
    for (i, px) in image.pixels().enumerate() {
        let rgb = px.0.map(f64::from);
        if distance(rgb, background) < OBJECT_DISTANCE {
            continue;
        }
        let nearest = (0..Color::ALL.len())
            .min_by(|&a, &b| {
                let da = distance(rgb, Color::ALL[a].rgb().map(f64::from));
                let db = distance(rgb, Color::ALL[b].rgb().map(f64::from));
                da.total_cmp(&db)
            })
            .unwrap_or(0);
        counts[nearest] += 1;
        labels[i] = Some(nearest);
    }
    let total = f64::from(w * h);
    let Some((best, &count)) = counts.iter().enumerate().max_by_key(|(_, c)| **c) else {
        return none;
    };
    let coverage = count as f64 / total;
    if coverage < MIN_COVERAGE {
        return Analysis { coverage, ..none };
    }
    let mask: Vec<bool> = labels.iter().map(|l| *l == Some(best)).collect();
    let (mut cx, mut cy) = (0.0, 0.0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        cx += (i as u32 % w) as f64 + 0.5;
        cy += (i as u32 / w) as f64 + 0.5;
    }
    let (cx, cy) = (
        cx / count as f64 / f64::from(w),
        cy / count as f64 / f64::from(h),
    );
    let position = Position::ALL.into_iter().min_by(|a, b| {
        let (ax, ay) = a.anchor();
        let (bx, by) = b.anchor();
        ((ax - cx).powi(2) + (ay - cy).powi(2)).total_cmp(&((bx - cx).powi(2) + (by - cy).powi(2)))
    });
    let (shape, fit) = ShapeKind::ALL
        .into_iter()
        .map(|shape| {
            let radius = (coverage / unit_area(shape)).sqrt();
            (shape, iou(&mask, w, h, shape, (cx, cy), radius))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or((None, 0.0), |(s, f)| (Some(s), f));
    Analysis {
        color: Some(Color::ALL[best]),
        shape,
        position,
        fit,
        coverage,
    }
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The mean colour of the image's outermost pixels.
fn border_mean(image: &RgbImage) -> [f64; 3] {
    let (w, h) = image.dimensions();
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for (x, y, px) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            for (s, c) in sum.iter_mut().zip(px.0) {
                *s += f64::from(c);
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

/// The area of `shape` at radius 1 (in squared radii), by sampling.
fn unit_area(shape: ShapeKind) -> f64 {
    const N: usize = 200;
    let inside = (0..N * N)
        .filter(|i| {
            let x = ((i % N) as f64 + 0.5) / N as f64 * 2.0 - 1.0;
            let y = ((i / N) as f64 + 0.5) / N as f64 * 2.0 - 1.0;
            shape.contains(x, y)
        })
        .count();
    4.0 * inside as f64 / (N * N) as f64
}

/// Intersection over union of `mask` and `shape` drawn at `center` (fractions of the side)
/// with `radius` (a fraction of the side).
fn iou(mask: &[bool], w: u32, h: u32, shape: ShapeKind, center: (f64, f64), radius: f64) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (i, &m) in mask.iter().enumerate() {
        let x = ((i as u32 % w) as f64 + 0.5) / f64::from(w);
        let y = ((i as u32 / w) as f64 + 0.5) / f64::from(h);
        let s = shape.contains((x - center.0) / radius, (y - center.1) / radius);
        inter += usize::from(m && s);
        union += usize::from(m || s);
    }
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}
