//! Autoencoders between images and the latent space of a diffusion model.

pub mod layers;
pub mod tiny;

pub use tiny::{AutoencoderTiny, AutoencoderTinyConfig, DecoderTiny, EncoderTiny, TinyBlock};
