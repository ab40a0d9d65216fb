//! Stable Diffusion 1.x / 2.x and SDXL pipelines: text-to-image, img2img and inpainting,
//! matching diffusers' `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline`,
//! `StableDiffusionInpaintPipeline` and their SDXL counterparts.
//!
//! - [`StableDiffusionXL`]: SDXL base, refiner, Turbo and LCM-distilled checkpoints (folders
//!   and single files), with both text encoders, pooled embeddings, micro-conditioning
//!   ([`MicroConditioning`]), `denoising_end` / `denoising_start` (base → refiner hand-off)
//!   and diffusers' SDXL defaults; see its page for an example.
//! - [`LoadOptions`]: the weights' storage dtype and the [`MemoryMode`] —
//!   [`MemoryMode::Sequential`] keeps only the running model in memory.
//! - [`StableDiffusion`] loads a diffusers pipeline folder (or a repo id in the local Hugging
//!   Face cache): `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//!   `scheduler/`; the default scheduler is the folder's, any of `mm_schedulers`' classes can
//!   replace it per call ([`GenerateOptions::scheduler`]).
//! - [`PromptEncoder`]: CLIP tokenizer (77 tokens, truncation reported in
//!   [`Generated::truncated`]) and text encoder, `clip_skip`, negative prompt,
//!   `num_images_per_prompt`. SD 2.x needs nothing special: its `text_encoder/config.json`
//!   already has 23 layers (OpenCLIP-H's penultimate), and v-prediction comes from the
//!   scheduler config's `prediction_type`.
//! - [`StableDiffusion::text_to_image`], [`StableDiffusion::img2img`],
//!   [`StableDiffusion::inpaint`] with [`GenerateOptions`] (diffusers' defaults: 50 steps,
//!   guidance 7.5, `eta` 0, strength 0.8 / 1.0) and [`Hooks`] (progress callback with
//!   cancellation and previews, noise source).
//! - ControlNets ([`DiffusionPipeline::with_controlnet`], one [`ControlInput`] each per
//!   call): diffusers' `StableDiffusionControlNet*Pipeline` and
//!   `StableDiffusionXLControlNet*Pipeline` — several at once (residuals summed),
//!   `controlnet_conditioning_scale`, `guess_mode`, `control_guidance_start` / `_end`, the
//!   ControlNet pipelines' defaults, control images resized as diffusers does.
//! - IP-Adapters ([`DiffusionPipeline::with_ip_adapter`],
//!   [`DiffusionPipeline::set_ip_adapter_scale`], [`GenerateOptions::ip_adapter_image`]):
//!   reference images encoded and projected to image tokens every call, alone or with
//!   ControlNets.
//! - [`StableDiffusion3`] (SD3 / SD3.5) and [`Flux`] (FLUX.1 schnell / dev): the
//!   flow-matching transformers with their text encoders, text-to-image and img2img.
//! - [`Denoiser`]: what the loop needs of the UNet.
//!
//! # Randomness
//!
//! Every random tensor of a call comes from one [`NoiseSource`](mm_schedulers::NoiseSource):
//! by default [`SeededNoise`](mm_schedulers::SeededNoise)`::new(opts.seed)` (a `StdRng`
//! seeded with `seed_from_u64(seed)`, standard normal `f32` values filling each tensor in
//! row-major `[batch, channel, y, x]` order). The draws come in diffusers' order:
//!
//! 1. img2img / inpainting: the posterior sample of the image latents
//!    (`mean + std · ε`, ε of the latent shape before tiling to the batch);
//! 2. the initial noise `[num_images, 4, H / 8, W / 8]` (unless `opts.latents` is given);
//! 3. 9-channel inpainting: the posterior sample of the masked image;
//! 4. then, step by step, whatever a stochastic scheduler draws (DDIM with `eta > 0`,
//!    Euler ancestral, SDE solvers, …).
//!
//! Same seed and settings give the same image on the same backend. The values differ from
//! `torch.Generator`'s, so to reproduce a diffusers run exactly, pass its initial latents in
//! [`GenerateOptions::latents`] or replay its draws with a
//! [`QueuedNoise`](mm_schedulers::QueuedNoise) in [`Hooks::noise`] (the parity tests do).
//!
//! # Example
//!
//! ```no_run
//! use mm_diffusion::pipelines::{Flow, GenerateOptions, Hooks, StableDiffusion, StepInfo};
//!
//! fn main() -> mm_diffusion::Result<()> {
//!     let device = mm_core::device::cpu();
//!     let pipe = StableDiffusion::load("stable-diffusion-v1-5/stable-diffusion-v1-5", &device)?;
//!     let opts = GenerateOptions::new("a watercolor fox in the snow")
//!         .negative_prompt("blurry")
//!         .steps(25)
//!         .scheduler("EulerDiscreteScheduler")
//!         .seed(7);
//!     let mut progress = |info: &StepInfo| {
//!         eprintln!("step {}/{} (t = {})", info.step, info.total, info.timestep);
//!         Flow::Continue // Flow::Cancel stops with Error::Cancelled
//!     };
//!     let out = pipe.text_to_image(&opts, Hooks::new().progress(&mut progress))?;
//!     for t in &out.truncated {
//!         eprintln!("warning: {t}");
//!     }
//!     mm_core::image::save_image(&out.images[0], "fox.png")?;
//!
//!     // img2img and inpainting take images as [batch, 3, H, W] tensors in [0, 1]
//!     let photo = mm_core::image::load_image("photo.png")?; // 512×512
//!     let photo = mm_core::image::image_to_tensor(&photo, &device).unsqueeze::<4>();
//!     let opts = GenerateOptions::new("the same, as an oil painting").strength(0.6);
//!     let painted = pipe.img2img(&photo, &opts, Hooks::new())?;
//!     let mask = mm_diffusion::pipelines::mask_from_image(&mm_core::image::load_image("mask.png")?, &device);
//!     let filled = pipe.inpaint(&photo, &mask, &GenerateOptions::new("a red sofa"), Hooks::new())?;
//!     # let _ = (painted, filled);
//!     Ok(())
//! }
//! ```

mod component;
mod control;
mod denoiser;
mod flux;
mod img2img;
mod inpaint;
mod loading;
mod options;
mod pipeline;
mod progress;
mod prompt;
mod prompt_flux;
mod prompt_sd3;
mod prompt_xl;
mod sd3;
mod text_to_image;
mod xl;

pub use component::{Component, Held, MemoryMode};
pub use control::{ControlImage, ControlInput};
pub use denoiser::{Conditioning, Denoiser};
pub use flux::{FLUX_IMG2IMG_STRENGTH, Flux};
pub use img2img::IMG2IMG_STRENGTH;
pub use inpaint::{INPAINT_STRENGTH, binarize_mask, downsample_mask, mask_from_image};
pub use loading::PipelineDir;
pub use options::{GenerateOptions, MicroConditioning, SkipLayerGuidance};
pub use pipeline::{
    DiffusionPipeline, Generated, Hooks, LoadOptions, SIZE_MULTIPLE, StableDiffusion,
};
pub use progress::{
    FLUX_LATENT_RGB_BIAS, FLUX_LATENT_RGB_FACTORS, Flow, Progress, SD_LATENT_RGB_FACTORS,
    SD3_LATENT_RGB_BIAS, SD3_LATENT_RGB_FACTORS, StepInfo, linear_preview,
};
pub use prompt::{ModelFamily, PromptEmbeds, PromptEncoder, TextConditioner, Truncation};
pub use prompt_flux::{FLUX_MAX_SEQUENCE_LENGTH, FluxPromptEncoder};
pub use prompt_sd3::{SD3_MAX_SEQUENCE_LENGTH, Sd3PromptEncoder, Sd3TextWeights};
pub use prompt_xl::XlPromptEncoder;
pub use sd3::{SD3_IMG2IMG_STRENGTH, StableDiffusion3};
pub use xl::{StableDiffusionXL, XL_IMG2IMG_STRENGTH, XL_INPAINT_STRENGTH};
