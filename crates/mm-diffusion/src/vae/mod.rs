//! Autoencoders between images and the latent space of a diffusion model.
//!
//! - [`AutoencoderKL`]: the full VAE (Stable Diffusion, SDXL, SD3, FLUX), encoding into a
//!   [`DiagonalGaussian`].
//! - [`AutoencoderTiny`]: the TAESD family of tiny distilled autoencoders.
//!
//! Both take images in `[-1, 1]` (diffusers' convention) as `[batch, 3, H, W]` with `H` and
//! `W` multiples of the downscale factor, and reject non-finite inputs with a typed error.

pub mod attention;
pub mod kl;
pub mod layers;
pub mod resnet;
pub mod tiny;

pub use kl::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian, Tiling};
pub use tiny::{AutoencoderTiny, AutoencoderTinyConfig, DecoderTiny, EncoderTiny, TinyBlock};
