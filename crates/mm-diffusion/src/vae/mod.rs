//! Autoencoders between images and the latent space of a diffusion model.
//!
//! - [`AutoencoderKL`]: the full VAE (Stable Diffusion, SDXL, SD3, FLUX), encoding into a
//!   [`DiagonalGaussian`].
//! - [`AutoencoderTiny`]: the TAESD family of tiny distilled autoencoders.
//!
//! Both take images in `[-1, 1]` (diffusers' convention) as `[batch, 3, H, W]` with `H` and
//! `W` multiples of the downscale factor, and reject non-finite inputs with a typed error.
//! Both implement [`Autoencoder`], so a pipeline can use either (TAESD for fast previews).

pub mod attention;
pub mod kl;
pub mod layers;
pub mod resnet;
pub mod tiny;

pub use kl::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian, Tiling};
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

    /// Latents as the diffusion model sees them: `(z - shift_factor) · scaling_factor`.
    fn scale_for_diffusion(&self, z: Tensor<4>) -> Tensor<4> {
        (z - self.shift_factor()) * self.scaling_factor()
    }

    /// The inverse of [`scale_for_diffusion`](Self::scale_for_diffusion), before decoding.
    fn unscale_from_diffusion(&self, latents: Tensor<4>) -> Tensor<4> {
        latents / self.scaling_factor() + self.shift_factor()
    }
}
