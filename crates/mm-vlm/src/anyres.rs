//! The "anyres" arithmetic of LLaVA-NeXT, and the number of image tokens per image.
//!
//! These are pure functions on sizes, ports of `transformers` 5.24:
//!
//! - [`select_best_resolution`]: `image_processing_utils.select_best_resolution`, the grid
//!   pinpoint an image is resized and padded to;
//! - [`patch_output_size`]: `get_patch_output_size`, the aspect-preserving size inside it;
//! - [`anyres_grid_shape`] and [`num_anyres_patches`]: `get_anyres_image_grid_shape` and
//!   `image_size_to_num_patches` of `modeling_llava_next`;
//! - [`unpadded_size`]: the shape `unpad_image` leaves (incl. its `int(round(x, 7))`);
//! - [`llava_num_image_tokens`] and [`llava_next_num_image_tokens`]: how many `<image>` tokens
//!   `LlavaProcessor` / `LlavaNextProcessor` put in the prompt for one image.
//!
//! Sizes are `(height, width)` everywhere, as in the Python code (note that the Python
//! docstring of `get_anyres_image_grid_shape` says `(width, height)`, but the code passes and
//! returns `(height, width)`).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `(height, width)` in pixels.
pub type Size = (u32, u32);

/// Which vision-tower tokens the projector sees (`vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectStrategy {
    /// `"default"`: drop the first (CLS) token.
    #[default]
    Default,
    /// `"full"`: keep every token.
    Full,
}

fn invalid(msg: String) -> Error {
    Error::InvalidInput(msg)
}

fn check_size(what: &str, (h, w): Size) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(invalid(format!("{what} must be positive, got {h}x{w}")));
    }
    Ok(())
}

/// The pinpoint (`(height, width)`) that keeps the most of the image's resolution and, among
/// equals, wastes the least area: `select_best_resolution` of `transformers`.
///
/// For each candidate the image is scaled by `min(width / W, height / H)` (Python float
/// division), the scaled sides truncated; the effective resolution is that area capped at the
/// original area; the first candidate with the largest effective and then smallest wasted
/// resolution wins. An empty list or a zero size gives an error.
pub fn select_best_resolution(original: Size, pinpoints: &[Size]) -> Result<Size> {
    check_size("image size", original)?;
    if pinpoints.is_empty() {
        return Err(invalid("image_grid_pinpoints is empty".into()));
    }
    let (oh, ow) = (u64::from(original.0), u64::from(original.1));
    let mut best = None;
    let mut max_effective = 0u64;
    let mut min_wasted = u64::MAX;
    for &(h, w) in pinpoints {
        check_size("grid pinpoint", (h, w))?;
        let scale = (f64::from(w) / ow as f64).min(f64::from(h) / oh as f64);
        let dw = (ow as f64 * scale) as u64;
        let dh = (oh as f64 * scale) as u64;
        let effective = (dw * dh).min(ow * oh);
        let wasted = u64::from(w) * u64::from(h) - effective;
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = Some((h, w));
        }
    }
    // With positive sizes the first candidate always has a positive effective resolution.
    best.ok_or_else(|| invalid(format!("no grid pinpoint fits an image of {oh}x{ow}")))
}

/// The size an image of `original` is resized to inside `target` keeping its aspect ratio:
/// `get_patch_output_size` (the side that limits is set to the target, the other is
/// `ceil`-ed and capped at the target).
pub fn patch_output_size(original: Size, target: Size) -> Result<Size> {
    check_size("image size", original)?;
    check_size("target size", target)?;
    let (oh, ow) = (f64::from(original.0), f64::from(original.1));
    let (th, tw) = target;
    let scale_w = f64::from(tw) / ow;
    let scale_h = f64::from(th) / oh;
    Ok(if scale_w < scale_h {
        let h = ((oh * scale_w).ceil() as u32).min(th);
        (h, tw)
    } else {
        let w = ((ow * scale_h).ceil() as u32).min(tw);
        (th, w)
    })
}

/// The `(rows, columns)` of tiles of side `tile` that the best resolution is cut into:
/// `get_anyres_image_grid_shape(image_size, grid_pinpoints, tile)` (integer division).
pub fn anyres_grid_shape(image_size: Size, pinpoints: &[Size], tile: u32) -> Result<(u32, u32)> {
    if tile == 0 {
        return Err(invalid("tile size must be positive".into()));
    }
    let (h, w) = select_best_resolution(image_size, pinpoints)?;
    Ok((h / tile, w / tile))
}

/// The number of `tile × tile` crops of one image including the base (resized whole) image:
/// `image_size_to_num_patches` (`ceil(H / tile) * ceil(W / tile) + 1` of the best resolution).
pub fn num_anyres_patches(image_size: Size, pinpoints: &[Size], tile: u32) -> Result<usize> {
    if tile == 0 {
        return Err(invalid("tile size must be positive".into()));
    }
    let (h, w) = select_best_resolution(image_size, pinpoints)?;
    Ok(h.div_ceil(tile) as usize * w.div_ceil(tile) as usize + 1)
}

/// `int(round(x, 7))` of Python for a non-negative finite `x`: the integer part of `x`
/// correctly rounded to 7 decimals (Rust's `{:.7}` formatting rounds the exact binary value
/// like Python's `round`).
fn int_round7(x: f64) -> u64 {
    let s = format!("{x:.7}");
    s.split('.')
        .next()
        .and_then(|i| i.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The `(height, width)` of a feature grid of `current` size after `unpad_image` removed the
/// padding that letterboxing an image of `original` size added (`unpad_image` of
/// `modeling_llava_next`, which `LlavaNextProcessor._get_unpadded_features` mirrors).
///
/// The limiting side is kept; the other loses `2 * ((current - new) // 2)` where `new` is
/// `int(round(original * current_limit / original_limit, 7))`.
pub fn unpadded_size(original: Size, current: Size) -> Result<Size> {
    check_size("image size", original)?;
    check_size("feature grid", current)?;
    let (oh, ow) = (f64::from(original.0), f64::from(original.1));
    let (ch, cw) = current;
    let original_aspect = ow / oh;
    let current_aspect = f64::from(cw) / f64::from(ch);
    Ok(if original_aspect > current_aspect {
        let new_h = int_round7(oh * (f64::from(cw) / ow));
        let padding = (i64::from(ch) - new_h as i64).div_euclid(2);
        ((i64::from(ch) - 2 * padding) as u32, cw)
    } else {
        let new_w = int_round7(ow * (f64::from(ch) / oh));
        let padding = (i64::from(cw) - new_w as i64).div_euclid(2);
        (ch, (i64::from(cw) - 2 * padding) as u32)
    })
}

/// Image tokens of one LLaVA 1.5 image: `(H // patch) * (W // patch)` of the processed
/// (cropped) size, plus `num_additional_image_tokens` (1 for a CLS token), minus one with the
/// `default` strategy (`LlavaProcessor`).
pub fn llava_num_image_tokens(
    processed: Size,
    patch_size: u32,
    num_additional_image_tokens: u32,
    strategy: SelectStrategy,
) -> Result<usize> {
    check_size("processed image size", processed)?;
    if patch_size == 0 {
        return Err(invalid("patch_size must be positive".into()));
    }
    let n = (processed.0 / patch_size) as usize * (processed.1 / patch_size) as usize
        + num_additional_image_tokens as usize;
    subtract_cls(n, strategy)
}

fn subtract_cls(n: usize, strategy: SelectStrategy) -> Result<usize> {
    match strategy {
        SelectStrategy::Full => Ok(n),
        SelectStrategy::Default => n.checked_sub(1).ok_or_else(|| {
            invalid("the default feature strategy drops a token the image does not have".into())
        }),
    }
}

/// The parts of a LLaVA-NeXT image's token count (see [`llava_next_num_image_tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextFeatureCount {
    /// Tokens of the base (whole image) tile, `num_additional_image_tokens` included.
    pub base: usize,
    /// Tokens of the unpadded high-resolution grid.
    pub unpadded: usize,
    /// One `image_newline` per row of the unpadded grid.
    pub newline: usize,
}

impl NextFeatureCount {
    /// `base + unpadded + newline` (before the `default` strategy's minus one).
    pub fn total(&self) -> usize {
        self.base + self.unpadded + self.newline
    }
}

/// `LlavaNextProcessor._get_number_of_features`: the base tile, the unpadded high-resolution
/// feature grid and its newline tokens for an image of `original` size, tiles of `processed`
/// size (the crop size) and a vision tower with `patch_size`.
pub fn llava_next_feature_count(
    original: Size,
    processed: Size,
    patch_size: u32,
    pinpoints: &[Size],
    num_additional_image_tokens: u32,
) -> Result<NextFeatureCount> {
    check_size("processed image size", processed)?;
    if patch_size == 0 {
        return Err(invalid("patch_size must be positive".into()));
    }
    let (best_h, best_w) = select_best_resolution(original, pinpoints)?;
    let (scale_h, scale_w) = (best_h / processed.0, best_w / processed.1);
    let (patches_h, patches_w) = (processed.0 / patch_size, processed.1 / patch_size);
    let current = (patches_h * scale_h, patches_w * scale_w);
    let (h, w) = unpadded_size(original, current)?;
    Ok(NextFeatureCount {
        base: patches_h as usize * patches_w as usize + num_additional_image_tokens as usize,
        unpadded: h as usize * w as usize,
        newline: h as usize,
    })
}

/// Image tokens of one LLaVA-NeXT image (`LlavaNextProcessor`): base + unpadded + newline
/// features (see [`llava_next_feature_count`]), minus one with the `default` strategy.
pub fn llava_next_num_image_tokens(
    original: Size,
    processed: Size,
    patch_size: u32,
    pinpoints: &[Size],
    num_additional_image_tokens: u32,
    strategy: SelectStrategy,
) -> Result<usize> {
    let count = llava_next_feature_count(
        original,
        processed,
        patch_size,
        pinpoints,
        num_additional_image_tokens,
    )?;
    subtract_cls(count.total(), strategy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINPOINTS: [Size; 5] = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

    #[test]
    fn best_resolution_examples() {
        assert_eq!(
            // Every candidate keeps the full resolution: the least wasted area wins.
            select_best_resolution((300, 451), &PINPOINTS).unwrap(),
            (336, 672)
        );
        assert_eq!(
            select_best_resolution((100, 1000), &PINPOINTS).unwrap(),
            (336, 1008)
        );
        assert!(select_best_resolution((0, 5), &PINPOINTS).is_err());
        assert!(select_best_resolution((5, 5), &[]).is_err());
    }

    #[test]
    fn llava15_tokens() {
        let n = llava_num_image_tokens((336, 336), 14, 1, SelectStrategy::Default);
        assert_eq!(n.unwrap(), 576);
        let n = llava_num_image_tokens((336, 336), 14, 0, SelectStrategy::Full);
        assert_eq!(n.unwrap(), 576);
    }

    #[test]
    fn round7() {
        assert_eq!(int_round7(335.99999996), 336);
        assert_eq!(int_round7(335.9999999), 335);
        assert_eq!(int_round7(12.0), 12);
    }
}
