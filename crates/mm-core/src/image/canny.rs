//! Canny edge detection with the semantics of OpenCV's `cv2.Canny`, the control-image
//! preprocessor of ControlNet's Canny models.
//!
//! diffusers documents that preprocessor as
//! `cv2.Canny(np.array(pil_image), 100, 200)` on the RGB image, with the edge map then repeated
//! to three channels; [`control_image`] is that call. The edge maps are those of OpenCV
//! (`modules/imgproc/src/canny.cpp`, aperture size 3, which is the only one offered here), pixel
//! for pixel:
//!
//! 1. **Gradients**: 3×3 Sobel derivatives `dx`, `dy` (16-bit integers) with
//!    `BORDER_REPLICATE`, and no smoothing beyond the Sobel kernel's own.
//! 2. **Magnitude**: `|dx| + |dy|`, or `dx² + dy²` with [`CannyOptions::l2_gradient`]. An image of
//!    several channels (RGB here) is not converted to gray: each pixel takes `dx`, `dy` and the
//!    magnitude of the channel whose magnitude is largest, the first such channel on a tie.
//! 3. **Thresholds**: the smaller of the two is the low one (OpenCV swaps them). With the L2
//!    norm each is first clamped to 32767 and squared, since the magnitude is squared too; then
//!    both are floored to integers (a threshold beyond `i32` saturates, so it lets no pixel
//!    through, as OpenCV does).
//! 4. **Non-maximum suppression**: a pixel whose magnitude is above the low threshold is kept
//!    where it is a maximum across the edge, in one of four directions picked with OpenCV's
//!    fixed-point `tan 22.5°` = 13573 / 2¹⁵ test. The comparisons are OpenCV's, asymmetric:
//!    horizontally and vertically strictly above the left/upper neighbour and at least the
//!    right/lower one, diagonally strictly above both. Magnitudes outside the image count as 0.
//! 5. **Hysteresis**: kept pixels above the high threshold are edges, and so is every kept pixel
//!    connected to an edge through kept pixels (8-connectivity), traced with a stack.
//!
//! The work is one pass over the rows (gradients of three rows at a time, suppression of the
//! middle one) and then the tracing: linear in the pixels, with buffers of a few rows plus one
//! byte of state per pixel.
//!
//! ```
//! use mm_core::image::canny::{CannyOptions, canny_gray};
//! use mm_core::image::GrayImage;
//!
//! // A vertical step from black to white between columns 3 and 4.
//! let step = GrayImage::from_fn(8, 6, |x, _| [if x < 4 { 0 } else { 255 }].into());
//! let edges = canny_gray(&step, &CannyOptions::default())?;
//! // The gradient is as large on both sides of the step; the suppression keeps the left one.
//! assert!(edges.enumerate_pixels().all(|(x, _, p)| p.0[0] == if x == 3 { 255 } else { 0 }));
//!
//! // Other thresholds and the L2 norm:
//! let options = CannyOptions::default().thresholds(50.0, 150.0).l2_gradient(true);
//! assert_eq!(canny_gray(&step, &options)?, edges);
//! # Ok::<(), mm_core::Error>(())
//! ```

use ::image::DynamicImage;

use super::{GrayImage, RgbImage};
use crate::{Error, Result, limits};

/// The thresholds and gradient norm of a Canny edge detection (OpenCV's `threshold1`,
/// `threshold2` and `L2gradient`; the aperture size is always 3, a 3×3 Sobel operator).
///
/// The default is ControlNet's: thresholds 100 and 200, L1 norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CannyOptions {
    /// The low hysteresis threshold: pixels whose gradient magnitude is at or below it are
    /// never edges. (Given above `high_threshold`, the two swap roles, as in OpenCV.)
    pub low_threshold: f64,
    /// The high hysteresis threshold: pixels whose gradient magnitude is above it start edges.
    pub high_threshold: f64,
    /// Measure gradients with the L2 norm `√(dx² + dy²)` instead of `|dx| + |dy|`.
    pub l2_gradient: bool,
}

impl Default for CannyOptions {
    fn default() -> Self {
        Self {
            low_threshold: 100.0,
            high_threshold: 200.0,
            l2_gradient: false,
        }
    }
}

impl CannyOptions {
    /// Sets both thresholds (in either order: the smaller one is the low threshold).
    pub fn thresholds(mut self, low: f64, high: f64) -> Self {
        self.low_threshold = low;
        self.high_threshold = high;
        self
    }

    /// Sets the low threshold.
    pub fn low_threshold(mut self, low: f64) -> Self {
        self.low_threshold = low;
        self
    }

    /// Sets the high threshold.
    pub fn high_threshold(mut self, high: f64) -> Self {
        self.high_threshold = high;
        self
    }

    /// Chooses the L2 gradient norm (`true`) or the L1 norm (`false`, the default).
    pub fn l2_gradient(mut self, l2: bool) -> Self {
        self.l2_gradient = l2;
        self
    }

    /// The integer (low, high) thresholds that the magnitudes are compared with, converted as
    /// OpenCV converts them.
    fn integer_thresholds(&self) -> Result<(i32, i32)> {
        for (name, value) in [("low", self.low_threshold), ("high", self.high_threshold)] {
            if value.is_nan() || value < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "Canny {name} threshold must be a non-negative number, got {value}"
                )));
            }
        }
        let low = self.low_threshold.min(self.high_threshold);
        let high = self.low_threshold.max(self.high_threshold);
        let convert = |t: f64| {
            let t = if self.l2_gradient {
                let t = t.min(32767.0);
                t * t
            } else {
                t
            };
            // `as` saturates: a threshold beyond i32 lets no magnitude through.
            t.floor() as i32
        };
        Ok((convert(low), convert(high)))
    }
}

/// OpenCV's Canny edges of a grayscale image: 255 on edges, 0 elsewhere.
///
/// A NaN or negative threshold gives [`Error::InvalidInput`], an image without pixels
/// [`Error::Image`], and an image whose work buffers exceed [`limits::memory_limit`]
/// [`Error::TooLarge`].
pub fn canny_gray(image: &GrayImage, options: &CannyOptions) -> Result<GrayImage> {
    detect::<1>(image.as_raw(), image.width(), image.height(), options, 0)
}

/// OpenCV's Canny edges of an RGB image (`cv2.Canny` on the 3-channel array), where each pixel
/// takes the gradient of the channel whose gradient is strongest: 255 on edges, 0 elsewhere.
///
/// Errors as [`canny_gray`].
pub fn canny_rgb(image: &RgbImage, options: &CannyOptions) -> Result<GrayImage> {
    detect::<3>(image.as_raw(), image.width(), image.height(), options, 0)
}

/// ControlNet's Canny control image: the edges of [`canny_rgb`] repeated in three channels.
///
/// Errors as [`canny_gray`].
pub fn control_image(image: &RgbImage, options: &CannyOptions) -> Result<RgbImage> {
    let rgb_bytes = 3 * u64::from(image.width()) * u64::from(image.height());
    let edges = detect::<3>(
        image.as_raw(),
        image.width(),
        image.height(),
        options,
        rgb_bytes,
    )?;
    Ok(DynamicImage::ImageLuma8(edges).into_rgb8())
}

// The state of each pixel after the suppression, one byte each in a map of the image framed by
// one pixel on every side (OpenCV's `map`, with its values).
/// A local maximum above the low threshold: an edge if connected to one.
const CANDIDATE: u8 = 0;
/// Not an edge: suppressed, at or below the low threshold, or the frame.
const NOT_EDGE: u8 = 1;
/// An edge.
const EDGE: u8 = 2;

/// `tan 22.5°` in 15-bit fixed point, rounded: OpenCV's `TG22`.
const TG22: i32 = 13573;

/// Edges of an image of `C` interleaved 8-bit channels. `extra_bytes` is what the caller will
/// allocate besides (for the memory check).
fn detect<const C: usize>(
    pixels: &[u8],
    width: u32,
    height: u32,
    options: &CannyOptions,
    extra_bytes: u64,
) -> Result<GrayImage> {
    let thresholds = options.integer_thresholds()?;
    if width == 0 || height == 0 {
        return Err(Error::Image {
            path: None,
            reason: format!("cannot detect edges of an empty {width}x{height} image"),
        });
    }
    let framed = (u64::from(width) + 2) * (u64::from(height) + 2);
    let pixel_count = u64::from(width) * u64::from(height);
    // The state map, the output, and the tracing stack at its largest (one index per pixel).
    let bytes = framed + pixel_count * (1 + std::mem::size_of::<usize>() as u64);
    limits::check_memory(
        format!("Canny edges of a {width}x{height} image"),
        bytes.saturating_add(extra_bytes),
    )?;
    let mut edges = GrayImage::new(width, height);
    let (width, height) = (width as usize, height as usize);
    let stride = width + 2;
    let mut map = vec![NOT_EDGE; stride * (height + 2)];
    let mut stack = Vec::new();
    suppress_non_maxima::<C>(
        pixels,
        width,
        height,
        options.l2_gradient,
        thresholds,
        &mut map,
        &mut stack,
    );
    trace_edges(&mut map, stride, stack);
    for (out, states) in edges
        .chunks_exact_mut(width)
        .zip(map.chunks_exact(stride).skip(1))
    {
        for (pixel, &state) in out.iter_mut().zip(&states[1..]) {
            *pixel = if state == EDGE { 255 } else { 0 };
        }
    }
    Ok(edges)
}

/// The gradient of one image row: per pixel the strongest channel's derivatives and magnitude.
struct GradientRow {
    /// Magnitudes framed by a zero on each side: `magnitude[x + 1]` is pixel `x`'s.
    magnitude: Vec<i32>,
    dx: Vec<i16>,
    dy: Vec<i16>,
}

impl GradientRow {
    fn zeros(width: usize) -> Self {
        Self {
            magnitude: vec![0; width + 2],
            dx: vec![0; width],
            dy: vec![0; width],
        }
    }
}

/// Per-row scratch of the separable Sobel operator, one value per channel of each pixel.
struct SobelScratch {
    /// Column sums `up + 2·mid + down` (the smoothing half of `dx`).
    smooth: Vec<i16>,
    /// Column differences `down − up` (the derivative half of `dy`).
    diff: Vec<i16>,
}

impl SobelScratch {
    /// Computes row `y`'s gradient into `out`, with rows and columns beyond the image replicated
    /// from its border.
    fn gradient<const C: usize>(
        &mut self,
        pixels: &[u8],
        width: usize,
        height: usize,
        y: usize,
        l2: bool,
        out: &mut GradientRow,
    ) {
        let row_len = width * C;
        let row = |r: usize| &pixels[r * row_len..(r + 1) * row_len];
        let (up, mid, down) = (
            row(y.saturating_sub(1)),
            row(y),
            row((y + 1).min(height - 1)),
        );
        for (((s, d), (&u, &m)), &n) in self
            .smooth
            .iter_mut()
            .zip(&mut self.diff)
            .zip(up.iter().zip(mid))
            .zip(down)
        {
            let (u, m, n) = (i16::from(u), i16::from(m), i16::from(n));
            *s = u + 2 * m + n;
            *d = n - u;
        }
        for x in 0..width {
            let (left, right) = (x.saturating_sub(1) * C, (x + 1).min(width - 1) * C);
            let mut best = (i32::MIN, 0i16, 0i16);
            for c in 0..C {
                let dx = self.smooth[right + c] - self.smooth[left + c];
                let dy = self.diff[left + c] + 2 * self.diff[x * C + c] + self.diff[right + c];
                let (dx32, dy32) = (i32::from(dx), i32::from(dy));
                let magnitude = if l2 {
                    dx32 * dx32 + dy32 * dy32
                } else {
                    dx32.abs() + dy32.abs()
                };
                // Strictly larger: the first channel wins a tie.
                if magnitude > best.0 {
                    best = (magnitude, dx, dy);
                }
            }
            (out.magnitude[x + 1], out.dx[x], out.dy[x]) = best;
        }
    }
}

/// Computes the gradients row by row and marks each pixel of `map` that survives the
/// non-maximum suppression above the low threshold as [`CANDIDATE`], or as [`EDGE`] (and
/// pushes its index on `stack`) above the high threshold.
fn suppress_non_maxima<const C: usize>(
    pixels: &[u8],
    width: usize,
    height: usize,
    l2: bool,
    (low, high): (i32, i32),
    map: &mut [u8],
    stack: &mut Vec<usize>,
) {
    let stride = width + 2;
    let mut scratch = SobelScratch {
        smooth: vec![0; width * C],
        diff: vec![0; width * C],
    };
    // The rows above, at and below the row being suppressed; all zero outside the image.
    let mut above = GradientRow::zeros(width);
    let mut current = GradientRow::zeros(width);
    let mut below = GradientRow::zeros(width);
    scratch.gradient::<C>(pixels, width, height, 0, l2, &mut current);
    for y in 0..height {
        if y + 1 < height {
            scratch.gradient::<C>(pixels, width, height, y + 1, l2, &mut below);
        } else {
            below.magnitude.fill(0);
        }
        let map_row = &mut map[(y + 1) * stride..(y + 2) * stride];
        let (prev, cur, next) = (&above.magnitude, &current.magnitude, &below.magnitude);
        for x in 0..width {
            // Pixel x sits at x + 1 in the framed rows.
            let m = cur[x + 1];
            if m <= low {
                continue;
            }
            let (xs, ys) = (i32::from(current.dx[x]), i32::from(current.dy[x]));
            let ax = xs.abs();
            let ay = ys.abs() << 15;
            let tg22x = ax * TG22;
            let is_maximum = if ay < tg22x {
                // Within 22.5° of horizontal.
                m > cur[x] && m >= cur[x + 2]
            } else if ay > tg22x + (ax << 16) {
                // Within 22.5° of vertical (tan 67.5° = tan 22.5° + 2).
                m > prev[x + 1] && m >= next[x + 1]
            } else if (xs ^ ys) < 0 {
                // Diagonal, the gradient pointing up-right or down-left.
                m > prev[x + 2] && m > next[x]
            } else {
                // Diagonal, the gradient pointing down-right or up-left.
                m > prev[x] && m > next[x + 2]
            };
            if is_maximum {
                if m > high {
                    map_row[x + 1] = EDGE;
                    stack.push((y + 1) * stride + x + 1);
                } else {
                    map_row[x + 1] = CANDIDATE;
                }
            }
        }
        std::mem::swap(&mut above, &mut current);
        std::mem::swap(&mut current, &mut below);
    }
}

/// Hysteresis: turns every [`CANDIDATE`] 8-connected to an [`EDGE`] into an edge. The frame of
/// `map` is [`NOT_EDGE`], so the neighbours of an image pixel are always inside it.
fn trace_edges(map: &mut [u8], stride: usize, mut stack: Vec<usize>) {
    let neighbours = [
        -(stride as isize) - 1,
        -(stride as isize),
        -(stride as isize) + 1,
        -1,
        1,
        stride as isize - 1,
        stride as isize,
        stride as isize + 1,
    ];
    while let Some(index) = stack.pop() {
        for offset in neighbours {
            let neighbour = index.wrapping_add_signed(offset);
            if map[neighbour] == CANDIDATE {
                map[neighbour] = EDGE;
                stack.push(neighbour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: u32, height: u32, f: impl Fn(u32, u32) -> u8) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| [f(x, y)].into())
    }

    fn edge_pixels(edges: &GrayImage) -> Vec<(u32, u32)> {
        edges
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn constant_images_have_no_edges() {
        for (w, h) in [(1, 1), (1, 9), (9, 1), (17, 12)] {
            for value in [0, 77, 255] {
                let edges =
                    canny_gray(&gray(w, h, |_, _| value), &CannyOptions::default()).unwrap();
                assert!(edge_pixels(&edges).is_empty(), "{w}x{h} of {value}");
                let rgb = RgbImage::from_pixel(w, h, [value, 255 - value, 3].into());
                let edges = canny_rgb(&rgb, &CannyOptions::default().thresholds(0.0, 0.0)).unwrap();
                assert!(edge_pixels(&edges).is_empty(), "{w}x{h} rgb");
            }
        }
    }

    #[test]
    fn step_edges_lie_on_the_side_the_suppression_keeps() {
        // |dx| = 4 · 255 = 1020 on both columns next to the step; horizontally a pixel must be
        // strictly above its left neighbour, so the left column of the pair survives.
        let vertical = gray(10, 7, |x, _| if x < 6 { 10 } else { 200 });
        let expected: Vec<_> = (0..7).map(|y| (5, y)).collect();
        for l2 in [false, true] {
            let options = CannyOptions::default().l2_gradient(l2);
            let got = edge_pixels(&canny_gray(&vertical, &options).unwrap());
            assert_eq!(got, expected, "l2 {l2}");
        }
        // The same for a horizontal step: the upper row survives.
        let horizontal = gray(7, 10, |_, y| if y < 6 { 200 } else { 10 });
        let got = edge_pixels(&canny_gray(&horizontal, &CannyOptions::default()).unwrap());
        assert_eq!(got, (0..7).map(|x| (x, 5)).collect::<Vec<_>>());
        // A step of 30 levels: magnitude 120, between the thresholds 100 and 200, is no edge
        // alone; continued by a strong step below it, it is traced.
        let weak = gray(10, 7, |x, _| if x < 6 { 100 } else { 130 });
        assert!(edge_pixels(&canny_gray(&weak, &CannyOptions::default()).unwrap()).is_empty());
        let mixed = gray(10, 7, |x, y| match (x < 6, y < 3) {
            (true, _) => 100,
            (false, true) => 130,
            (false, false) => 250,
        });
        // Worked out by hand and checked with cv2.Canny: the weak pixels (5, 0) and (5, 1) are
        // traced through the strong corner (6, 2).
        let got = edge_pixels(&canny_gray(&mixed, &CannyOptions::default()).unwrap());
        let expected = [
            (5, 0),
            (5, 1),
            (6, 2),
            (7, 2),
            (8, 2),
            (9, 2),
            (6, 3),
            (5, 4),
            (5, 5),
            (5, 6),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn rgb_takes_the_strongest_channel_and_gray_rgb_equals_gray() {
        let luma = gray(13, 9, |x, y| ((x * 37 + y * y * 11) % 256) as u8);
        let replicated = RgbImage::from_fn(13, 9, |x, y| [luma.get_pixel(x, y).0[0]; 3].into());
        // A step in the blue channel only is an edge of the RGB image.
        let blue_step = RgbImage::from_fn(10, 4, |x, _| [5, 5, if x < 6 { 0 } else { 255 }].into());
        for options in [
            CannyOptions::default(),
            CannyOptions::default().thresholds(20.0, 40.0),
        ] {
            assert_eq!(
                canny_rgb(&replicated, &options).unwrap(),
                canny_gray(&luma, &options).unwrap()
            );
            let got = edge_pixels(&canny_rgb(&blue_step, &options).unwrap());
            assert_eq!(got.len(), 4);
            assert!(got.iter().all(|&(x, _)| x == 5), "{got:?}");
        }
        let control = control_image(&replicated, &CannyOptions::default()).unwrap();
        let edges = canny_gray(&luma, &CannyOptions::default()).unwrap();
        assert!(
            control
                .pixels()
                .zip(edges.pixels())
                .all(|(c, e)| c.0 == [e.0[0]; 3])
        );
    }

    #[test]
    fn thresholds_convert_as_opencv() {
        let convert = |low, high, l2| {
            CannyOptions::default()
                .thresholds(low, high)
                .l2_gradient(l2)
                .integer_thresholds()
                .unwrap()
        };
        assert_eq!(convert(100.0, 200.0, false), (100, 200));
        assert_eq!(convert(200.0, 100.0, false), (100, 200));
        assert_eq!(convert(100.7, 200.2, false), (100, 200));
        assert_eq!(convert(100.7, 200.2, true), (10140, 40080));
        assert_eq!(convert(0.0, 40000.0, true), (0, 32767 * 32767));
        assert_eq!(convert(1.0, f64::INFINITY, false), (1, i32::MAX));
        assert_eq!(convert(1e10, 1e12, false), (i32::MAX, i32::MAX));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let image = gray(4, 4, |x, _| x as u8);
        for (low, high) in [
            (f64::NAN, 200.0),
            (100.0, f64::NAN),
            (-1.0, 200.0),
            (100.0, -0.5),
        ] {
            let options = CannyOptions::default()
                .low_threshold(low)
                .high_threshold(high);
            let err = canny_gray(&image, &options).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
            assert!(err.to_string().contains("threshold"), "{err}");
        }
        for (w, h) in [(0, 0), (0, 5), (5, 0)] {
            let err = canny_gray(&GrayImage::new(w, h), &CannyOptions::default()).unwrap_err();
            assert!(matches!(err, Error::Image { path: None, .. }), "{err}");
            let err = control_image(&RgbImage::new(w, h), &CannyOptions::default()).unwrap_err();
            assert!(matches!(err, Error::Image { path: None, .. }), "{err}");
        }
    }
}
