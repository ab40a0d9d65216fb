//! Text-to-image: diffusers' `StableDiffusionPipeline.__call__`.

use super::denoiser::Denoiser;
use super::options::GenerateOptions;
use super::pipeline::{Call, Denoise, DiffusionPipeline, Generated, Hooks};
use super::prompt::TextConditioner;
use super::xl::cut_end;
use crate::vae::Autoencoder;
use crate::{Error, Result};
use mm_core::precision::Autocast;

impl<U: Denoiser, T: TextConditioner> DiffusionPipeline<U, T> {
    /// Generates `num_images_per_prompt` images for `opts.prompt`, as diffusers'
    /// `StableDiffusionPipeline` does: prompt encoding (with the negative prompt when
    /// `guidance_scale > 1`), initial noise `latents · init_noise_sigma` of shape
    /// `[n, 4, height / 8, width / 8]` (drawn from the noise source unless `opts.latents` is
    /// given), the scheduler loop with classifier-free guidance and `guidance_rescale`, then
    /// the VAE decode. SDXL (diffusers' `StableDiffusionXLPipeline`): both text encoders,
    /// the pooled embeddings and micro-conditioning ids, and `denoising_end` (stop early and
    /// return still-noisy latents for a refiner).
    ///
    /// Errors: sizes not multiples of 8, zero steps, a guidance rescale outside `[0, 1]`,
    /// latents of the wrong shape, non-finite latents or images, a 9-channel (inpainting)
    /// denoiser, a cancel from the progress callback.
    pub fn text_to_image(&self, opts: &GenerateOptions, hooks: Hooks<'_>) -> Result<Generated> {
        let call = Call::TextToImage;
        let _compute = Autocast::enter(opts.compute_dtype);
        self.check_options(opts, call)?;
        if self.micro.is_some_and(|m| m.aesthetics) {
            return Err(Error::InvalidArgument {
                name: "model",
                reason: "this is an SDXL refiner (requires_aesthetics_score, no first text \
                         encoder): it refines images and latents with img2img; load a base \
                         model for text-to-image"
                    .into(),
            });
        }
        let channels = self.vae.latent_channels();
        if self.denoiser.in_channels != channels {
            return Err(Error::Config(format!(
                "the denoiser takes {} channels, the latents have {channels}: an inpainting \
                 model needs `inpaint`",
                self.denoiser.in_channels
            )));
        }
        // With ControlNets, the first control image's size (diffusers' ControlNet pipelines).
        let default = self.denoiser.sample_size * self.vae_scale_factor();
        let (default_h, default_w) = match opts.control.first() {
            Some(input) => input.image.default_size(self.vae_scale_factor()),
            None => (default, default),
        };
        let height = opts.height.unwrap_or(default_h);
        let width = opts.width.unwrap_or(default_w);
        let shape = self.latent_shape(opts.num_images_per_prompt, height, width)?;
        let scheduler = self.scheduler_for_size(opts, Some((height, width)))?;
        let mut timesteps = scheduler.timesteps().to_vec();
        let steps = match opts.denoising_end {
            Some(end) => cut_end(&self.scheduler_config, &mut timesteps, end)?,
            None => self.steps(opts),
        };
        let embeds = self.encode_prompt_for(opts, call)?;
        let cond = self.conditioning(&embeds, opts, call, (height, width))?;
        let control = self.control_plan(opts, call, (height, width))?;
        self.run(opts, hooks, |noise| {
            let latents = self.initial_noise(opts, shape, noise)? * scheduler.init_noise_sigma();
            Ok(Denoise {
                timesteps,
                steps,
                scheduler,
                latents,
                cond,
                truncated: embeds.truncated,
                guidance: self.guidance(opts, call),
                conditioning: None,
                blend: None,
                control,
                skip: opts.skip_layer_guidance.clone(),
            })
        })
    }
}
