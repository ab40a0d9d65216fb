//! Image-to-image: diffusers' `StableDiffusionImg2ImgPipeline.__call__`.

use burn::tensor::Tensor;

use super::denoiser::Denoiser;
use super::options::GenerateOptions;
use super::pipeline::{Denoise, Generated, Hooks, StableDiffusion, preprocess_image};
use crate::{Error, Result};

/// img2img's default strength (diffusers).
pub const IMG2IMG_STRENGTH: f64 = 0.8;

impl<U: Denoiser> StableDiffusion<U> {
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

    /// Transforms `image` (`[batch, 3, H, W]` in `[0, 1]`, `H` and `W` multiples of 8 — see
    /// [`mm_core::image::images_to_tensor`]) as diffusers' `StableDiffusionImg2ImgPipeline`
    /// does: the image is encoded with a posterior *sample* (noise drawn from the noise
    /// source first), tiled to `num_images_per_prompt`, noised to the first timestep of the
    /// last `strength` fraction of the schedule (second draw), then denoised from there.
    ///
    /// `opts.latents` is not accepted (diffusers' img2img has no such argument); to pin the
    /// noise, pass a noise source in `hooks`.
    pub fn img2img(
        &self,
        image: &Tensor<4>,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> Result<Generated> {
        self.check_options(opts)?;
        if opts.latents.is_some() {
            return Err(Error::InvalidArgument {
                name: "latents",
                reason: "img2img starts from the image; pin its noise with a noise source".into(),
            });
        }
        let pixels = preprocess_image(image)?;
        let [_, _, height, width] = image.dims();
        let batch = opts.num_images_per_prompt;
        self.latent_shape(batch, height, width)?;
        let mut scheduler = self.scheduler(opts)?;
        let (timesteps, steps) =
            self.strength_timesteps(&mut *scheduler, opts.strength.unwrap_or(IMG2IMG_STRENGTH))?;
        let embeds = self.encode_prompt(opts)?;
        self.run(opts, hooks, |noise| {
            let image_latents = self.encode_image(pixels, batch, noise)?;
            let eps = noise.noise(image_latents.dims(), self.device())?;
            let latents = scheduler.add_noise(image_latents, eps, timesteps[0])?;
            Ok(Denoise {
                scheduler,
                timesteps,
                steps,
                latents,
                embeds,
                guidance: self.guidance(opts),
                conditioning: None,
                blend: None,
            })
        })
    }
}
