//! # mm-diffusion
//!
//! Components of latent diffusion models as burn modules that load `diffusers` checkpoints.
//!
//! - [`vae`]: the autoencoders that map images to latents and back:
//!   [`AutoencoderKL`](vae::AutoencoderKL) (Stable Diffusion, SDXL, FLUX) and
//!   [`AutoencoderTiny`](vae::AutoencoderTiny) (the TAESD family, including TAEF2, in both the
//!   diffusers and the original upstream key layouts).
//! - [`check`]: input validation shared by the models (finite values, sizes).
//!
//! Every model has `new` (random weights) and loads a snapshot folder with `load`; every model
//! runs on any burn `Device`.
#![warn(missing_docs)]

pub mod check;
mod error;
mod loading;
pub mod vae;

pub use error::{Error, Result};
