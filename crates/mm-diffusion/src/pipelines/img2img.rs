//! Image-to-image: diffusers' `StableDiffusionImg2ImgPipeline.__call__`.

use burn::tensor::Tensor;
use mm_core::precision::Autocast;

use super::denoiser::Denoiser;
use super::options::GenerateOptions;
use super::pipeline::{
    Call, Denoise, DiffusionPipeline, Generated, Hooks, preprocess_image, repeat_batch,
};
use super::prompt::TextConditioner;
use super::xl::{cut_end, cut_start};
use crate::check::check_finite;
use crate::vae::Autoencoder;
use crate::{Error, Result};

/// img2img's default strength (diffusers).
pub const IMG2IMG_STRENGTH: f64 = 0.8;

impl<U: Denoiser, T: TextConditioner> DiffusionPipeline<U, T> {
    /// The loop's timesteps for `strength` and the inference steps they make: diffusers'
    /// `get_timesteps` (the last `floor(steps · strength)` steps; the scheduler's begin index
    /// is set so that `add_noise` and multistep state start there). None left is an error.
    pub(crate) fn strength_timesteps(
        &self,
        scheduler: &mut dyn mm_schedulers::Scheduler<4>,
        strength: f64,
    ) -> Result<(Vec<f64>, usize)> {
        let steps = scheduler.num_inference_steps().unwrap_or(0);
        let begin = scheduler.set_strength(strength)?;
        let timesteps = scheduler.timesteps()[begin..].to_vec();
        // diffusers: `int(num_inference_steps * strength)` steps remain; fewer than 1 is an
        // error (whatever a multistep schedule's tail still holds).
        let kept = ((steps as f64 * strength) as usize).min(steps);
        if kept < 1 || timesteps.is_empty() {
            return Err(Error::InvalidArgument {
                name: "strength",
                reason: format!(
                    "{strength} leaves no denoising step of {steps}; raise strength or steps"
                ),
            });
        }
        Ok((timesteps, kept))
    }

    /// The timesteps and step count of an img2img / inpainting call: the strength cut, or
    /// `denoising_start`'s; then `denoising_end`'s.
    pub(crate) fn image_timesteps(
        &self,
        scheduler: &mut dyn mm_schedulers::Scheduler<4>,
        opts: &GenerateOptions,
        call: Call,
    ) -> Result<(Vec<f64>, usize)> {
        let (mut timesteps, mut steps) = match opts.denoising_start {
            Some(start) => cut_start(&self.scheduler_config, scheduler, start)?,
            None => self.strength_timesteps(scheduler, self.strength(opts, call))?,
        };
        if let Some(end) = opts.denoising_end {
            steps = cut_end(&self.scheduler_config, &mut timesteps, end)?;
        }
        Ok((timesteps, steps))
    }

    /// Transforms `image` (`[batch, 3, H, W]` in `[0, 1]`, `H` and `W` multiples of 8 — see
    /// [`mm_core::image::images_to_tensor`]) as diffusers' `StableDiffusionImg2ImgPipeline`
    /// (SDXL: `StableDiffusionXLImg2ImgPipeline`) does: the image is encoded with a posterior
    /// *sample* (noise drawn from the noise source first), tiled to `num_images_per_prompt`,
    /// noised to the first timestep of the last `strength` fraction of the schedule (second
    /// draw), then denoised from there.
    ///
    /// `image` may instead be latents (`[batch, latent_channels, h, w]`, diffusion-scaled, as
    /// [`Generated::latents`] returns them): they are used as they are, without the VAE.
    /// With `opts.denoising_start` (SDXL's refiner hand-off) the run starts at that fraction
    /// of the schedule from the latents as given, adding no noise.
    ///
    /// The result has the image's size; `opts.height` / `opts.width`, if set, must equal it
    /// (diffusers' SD3 img2img resizes the image to them, by default to 1024²: resize it before
    /// the call to do the same).
    ///
    /// `opts.latents` is not accepted (diffusers' img2img has no such argument); to pin the
    /// noise, pass a noise source in `hooks`.
    pub fn img2img(
        &self,
        image: &Tensor<4>,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> Result<Generated> {
        let call = Call::Img2Img;
        let _compute = Autocast::enter(opts.compute_dtype);
        self.check_options(opts, call)?;
        if opts.latents.is_some() {
            return Err(Error::InvalidArgument {
                name: "latents",
                reason: "img2img starts from the image; pin its noise with a noise source".into(),
            });
        }
        let channels = self.vae.latent_channels();
        let [_, c, h, w] = image.dims();
        let (pixels, height, width) = if c == channels && c != 3 {
            check_finite("image latents", image)?;
            let f = self.vae_scale_factor();
            (None, h * f, w * f)
        } else {
            (Some(preprocess_image(image)?), h, w)
        };
        if opts.height.is_some_and(|h| h != height) || opts.width.is_some_and(|w| w != width) {
            return Err(Error::InvalidArgument {
                name: "height/width",
                reason: format!(
                    "img2img keeps the image's size {height}x{width}: resize the image first"
                ),
            });
        }
        let batch = opts.num_images_per_prompt;
        self.latent_shape(batch, height, width)?;
        let mut scheduler = self.scheduler_for_size(opts, Some((height, width)))?;
        let (timesteps, steps) = self.image_timesteps(&mut *scheduler, opts, call)?;
        let embeds = self.encode_prompt_for(opts, call)?;
        let cond = self.conditioning(&embeds, opts, call, (height, width))?;
        let control = self.control_plan(opts, call, (height, width))?;
        self.run(opts, hooks, |noise| {
            let image_latents = match pixels {
                Some(pixels) => self.encode_image(pixels, batch, noise)?,
                None => repeat_batch("image", image.clone(), batch)?,
            };
            let latents = match opts.denoising_start {
                Some(_) => image_latents,
                None => {
                    let eps = noise.noise(image_latents.dims(), self.device())?;
                    scheduler.add_noise(image_latents, eps, timesteps[0])?
                }
            };
            Ok(Denoise {
                scheduler,
                timesteps,
                steps,
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
