//! # mm-diffusion
//!
//! Components of latent diffusion models as burn modules that load `diffusers` checkpoints.
//!
//! - [`vae`]: the autoencoders that map images to latents and back:
//!   [`AutoencoderKL`](vae::AutoencoderKL) (Stable Diffusion, SDXL, FLUX) and
//!   [`AutoencoderTiny`](vae::AutoencoderTiny) (the TAESD family, including TAEF2, in both the
//!   diffusers and the original upstream key layouts).
//! - [`unet`]: the denoising [`UNet2DConditionModel`](unet::UNet2DConditionModel) of Stable
//!   Diffusion 1.x/2.x (and inpainting) and SDXL, with ControlNet residual inputs.
//! - [`transformer`]: [`SD3Transformer2DModel`](transformer::SD3Transformer2DModel), the
//!   multimodal diffusion transformer (MMDiT) of Stable Diffusion 3 / 3.5.
//! - [`controlnet`]: [`ControlNetModel`](controlnet::ControlNetModel), the residuals that
//!   steer a UNet by a control image (SD 1.x / 2.x and SDXL).
//! - [`ip_adapter`]: IP-Adapter image prompts (the `h94/IP-Adapter` files: IP-Adapter and
//!   IP-Adapter Plus, several at once, per-block scales as InstantStyle).
//! - [`single_file`]: single-file checkpoints in the original CompVis/LDM key layout (SD 1.x,
//!   2.x, SDXL base and refiner) and Stability AI's SD3 / SD3.5 files, renamed to diffusers
//!   names.
//! - [`pipelines`]: Stable Diffusion 1.x / 2.x and SDXL text-to-image, img2img and inpainting
//!   ([`StableDiffusion`](pipelines::StableDiffusion),
//!   [`StableDiffusionXL`](pipelines::StableDiffusionXL)), matching diffusers.
//! - [`check`]: input validation shared by the models (finite values, sizes).
//!
//! Every model has `new` (random weights) and loads a snapshot folder with `load`; every model
//! runs on any burn `Device`.
//!
//! ```no_run
//! use mm_diffusion::vae::{Autoencoder, AutoencoderKL};
//!
//! fn main() -> mm_diffusion::Result<()> {
//!     let device = mm_core::device::cpu();
//!     let vae = AutoencoderKL::load("stable-diffusion-v1-5/vae", &device)?;
//!     let image = mm_core::image::load_image("photo.png")?; // 512×512
//!     let pixels = mm_core::image::image_to_tensor(&image, &device).unsqueeze::<4>() * 2.0 - 1.0;
//!     let latents = vae.scale_for_diffusion(vae.encode(pixels)?.mode()); // [1, 4, 64, 64]
//!     let decoded = vae.decode(vae.unscale_from_diffusion(latents))?; // [1, 3, 512, 512]
//!     # let _ = decoded;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

pub mod check;
pub mod controlnet;
mod error;
pub mod ip_adapter;
mod loading;
pub mod pipelines;
pub mod single_file;
pub mod transformer;
pub mod unet;
pub mod vae;

pub use error::{Error, Result};
