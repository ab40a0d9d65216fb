//! Autoencoders between images and the latent space of a diffusion model.
//!
//! - [`AutoencoderKL`]: the full VAE (Stable Diffusion, SDXL, SD3, FLUX), encoding into a
//!   [`DiagonalGaussian`].
//! - [`AutoencoderTiny`]: the TAESD family of tiny distilled autoencoders.
//!
//! Both take images in `[-1, 1]` (diffusers' convention) as `[batch, 3, H, W]` with `H` and
//! `W` multiples of the downscale factor, and reject non-finite inputs with a typed error.
//! Both implement [`Autoencoder`], so a pipeline can use either (TAESD for fast previews).
//!
//! Large images: both can encode and decode in overlapping tiles exactly like diffusers'
//! `enable_tiling()` (and one image at a time like `enable_slicing()`), set through
//! [`Autoencoder::set_options`] with [`VaeOptions`]; [`TileMode::Auto`] tiles only when the
//! untiled call would exceed the memory limit of [`mm_core::limits`]. Every call estimates its
//! peak memory first and fails with [`mm_core::Error::TooLarge`] rather than aborting the
//! process; see [`tiling`].

pub mod attention;
pub mod kl;
pub mod layers;
pub mod resnet;
pub mod tiling;
pub mod tiny;

pub use kl::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian};
pub use tiling::{TileMode, Tiling, VaeOptions};
pub use tiny::{AutoencoderTiny, AutoencoderTinyConfig, DecoderTiny, EncoderTiny, TinyBlock};

use burn::tensor::Tensor;

use crate::Result;

/// What a latent diffusion pipeline needs of an autoencoder.
pub trait Autoencoder {
    /// How many times smaller than the image the latent is on each side.
    fn downscale_factor(&self) -> usize;

    /// Latent channels.
    fn latent_channels(&self) -> usize;

    /// The config's `scaling_factor`.
    fn scaling_factor(&self) -> f64;

    /// The config's `shift_factor` (0 when absent).
    fn shift_factor(&self) -> f64;

    /// Images in `[-1, 1]` to raw latents (the posterior's mode for a KL autoencoder).
    fn encode_latents(&self, images: Tensor<4>) -> Result<Tensor<4>>;

    /// Raw latents to images in about `[-1, 1]`.
    fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>>;

    /// How inputs are processed: tiling and slicing, off until set (diffusers' defaults), with
    /// the model's default tile geometry.
    fn options(&self) -> VaeOptions;

    /// Sets how inputs are processed; fails with [`Error::Config`](crate::Error::Config) on a
    /// tile geometry this model cannot use.
    fn set_options(&mut self, options: VaeOptions) -> Result<()>;

    /// Latents as the diffusion model sees them: `(z - shift_factor) · scaling_factor`.
    fn scale_for_diffusion(&self, z: Tensor<4>) -> Tensor<4> {
        (z - self.shift_factor()) * self.scaling_factor()
    }

    /// The inverse of [`scale_for_diffusion`](Self::scale_for_diffusion), before decoding.
    fn unscale_from_diffusion(&self, latents: Tensor<4>) -> Tensor<4> {
        latents / self.scaling_factor() + self.shift_factor()
    }
}
