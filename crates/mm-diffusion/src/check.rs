//! Input validation shared by the models: values must be finite, images must have a size the
//! network can halve the right number of times.

use burn::tensor::Tensor;

use crate::{Error, Result};

/// Fails with [`Error::NonFinite`] when `x` holds a NaN or an infinity (a diverged sampler, a
/// bad scheduler step), naming the input as `what`.
pub fn check_finite<const D: usize>(what: &'static str, x: &Tensor<D>) -> Result<()> {
    let count = x
        .clone()
        .is_finite()
        .bool_not()
        .int()
        .sum()
        .into_scalar::<i64>();
    if count > 0 {
        return Err(Error::NonFinite {
            what,
            count: count as usize,
        });
    }
    Ok(())
}

/// Checks that `x` is `[batch, channels, H, W]` with the given channel count.
pub fn check_channels(what: &'static str, x: &Tensor<4>, channels: usize) -> Result<()> {
    let dims = x.dims();
    if dims[1] != channels || dims.contains(&0) {
        return Err(Error::Shape {
            what,
            expected: format!("[batch, {channels}, height, width], none of them 0"),
            got: dims.to_vec(),
        });
    }
    Ok(())
}

/// Checks that an image batch `[batch, channels, H, W]` has the channel count and a height and
/// width that are multiples of `factor`, and holds only finite values.
pub fn check_image(x: &Tensor<4>, channels: usize, factor: usize) -> Result<()> {
    check_channels("image", x, channels)?;
    let [_, _, height, width] = x.dims();
    if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
        return Err(Error::NotMultiple {
            height,
            width,
            factor,
        });
    }
    check_finite("image", x)
}

/// Checks that a latent batch `[batch, channels, h, w]` has the channel count and holds only
/// finite values.
pub fn check_latents(x: &Tensor<4>, channels: usize) -> Result<()> {
    check_channels("latents", x, channels)?;
    check_finite("latents", x)
}
