//! Inpainting: diffusers' `StableDiffusionInpaintPipeline.__call__`, for 9-channel
//! inpainting UNets and, by latent blending, for ordinary 4-channel ones.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use mm_core::precision::Autocast;

use super::denoiser::Denoiser;
use super::options::GenerateOptions;
use super::pipeline::{
    Blend, Call, Denoise, DiffusionPipeline, Generated, Hooks, preprocess_image, repeat_batch,
};
use super::prompt::{ModelFamily, TextConditioner};
use crate::check::{check_channels, check_finite};
use crate::vae::Autoencoder;
use crate::{Error, Result};

/// Inpainting's default strength (diffusers).
pub const INPAINT_STRENGTH: f64 = 1.0;

/// The binarised mask diffusers' mask processor makes: 1 where `mask ≥ 0.5` (repaint),
/// 0 elsewhere (keep).
pub fn binarize_mask(mask: Tensor<4>) -> Tensor<4> {
    mask.greater_equal_elem(0.5).float()
}

/// Downsamples a `[b, 1, H, W]` mask to `[b, 1, H / f, W / f]` the way `torch`'s default
/// (nearest) `interpolate` does for an integer factor: the top-left pixel of every `f × f`
/// block.
pub fn downsample_mask(mask: Tensor<4>, factor: usize) -> Tensor<4> {
    let [b, c, h, w] = mask.dims();
    let (lh, lw) = (h / factor, w / factor);
    mask.narrow(2, 0, lh * factor)
        .narrow(3, 0, lw * factor)
        .reshape([b * c * lh, factor, lw, factor])
        .narrow(1, 0, 1)
        .narrow(3, 0, 1)
        .reshape([b, c, lh, lw])
}

/// A mask image as the `[1, 1, H, W]` tensor in `[0, 1]` that [`DiffusionPipeline::inpaint`](super::DiffusionPipeline::inpaint)
/// takes, converted to grey like PIL's `convert("L")` (which diffusers applies to mask
/// images): ITU-R 601-2 luma in PIL's fixed point, `(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`.
pub fn mask_from_image(mask: &RgbImage, device: &Device) -> Tensor<4> {
    let (w, h) = mask.dimensions();
    let grey: Vec<f32> = mask
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32 / 255.0
        })
        .collect();
    Tensor::from_data(
        TensorData::new(grey, [1, 1, h as usize, w as usize]),
        device,
    )
}

impl<U: Denoiser, T: TextConditioner> DiffusionPipeline<U, T> {
    /// Repaints the parts of `image` (`[batch, 3, H, W]` in `[0, 1]`) where `mask`
    /// (`[batch, 1, H, W]` in `[0, 1]`, white = repaint) is ≥ 0.5, as diffusers'
    /// `StableDiffusionInpaintPipeline` does:
    ///
    /// - 9-channel inpainting UNets get the latents, the mask downsampled to latent size and
    ///   the latents of the masked image (`image · (mask < 0.5)`) concatenated on channels;
    /// - 4-channel UNets: after every step the latents outside the mask are replaced by the
    ///   image latents noised to the next timestep (the last step: the clean latents).
    ///
    /// Noise draws, in order: the image's posterior sample (4-channel UNets, or
    /// `strength < 1` without `opts.latents`), the initial noise (unless `opts.latents`), the
    /// masked image's posterior sample (9-channel UNets). With `strength = 1` (the default)
    /// the run starts from pure noise; below it from the noised image latents. SDXL
    /// (`StableDiffusionXLInpaintPipeline`, default strength 0.9999): the same with SDXL's
    /// conditioning; with `opts.denoising_start` the run starts at that fraction of the
    /// schedule from the image latents, adding no noise.
    ///
    /// `opts.height` / `opts.width`, if set, must be the image's size (no resizing here).
    pub fn inpaint(
        &self,
        image: &Tensor<4>,
        mask: &Tensor<4>,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> Result<Generated> {
        let call = Call::Inpaint;
        let _compute = Autocast::enter(opts.compute_dtype);
        if let family @ (ModelFamily::StableDiffusion3 | ModelFamily::Flux) = self.family() {
            return Err(Error::InvalidArgument {
                name: "inpaint",
                reason: format!(
                    "{family:?} inpainting (diffusers' StableDiffusion3InpaintPipeline / \
                     FluxInpaintPipeline) is not implemented; text-to-image and img2img are"
                ),
            });
        }
        self.check_options(opts, call)?;
        let pixels = preprocess_image(image)?;
        let [_, _, height, width] = image.dims();
        check_channels("mask", mask, 1)?;
        check_finite("mask", mask)?;
        let [_, _, mh, mw] = mask.dims();
        if (mh, mw) != (height, width) {
            return Err(Error::MaskSize {
                mask: (mh, mw),
                image: (height, width),
            });
        }
        if opts.height.is_some_and(|h| h != height) || opts.width.is_some_and(|w| w != width) {
            return Err(Error::InvalidArgument {
                name: "height/width",
                reason: format!("inpainting keeps the image's size {height}x{width}"),
            });
        }
        let batch = opts.num_images_per_prompt;
        let shape = self.latent_shape(batch, height, width)?;
        let latent_channels = self.vae.latent_channels();
        let unet_channels = self.denoiser.in_channels;
        let nine = unet_channels == 2 * latent_channels + 1;
        if !nine && unet_channels != latent_channels {
            return Err(Error::Config(format!(
                "an inpainting denoiser takes {latent_channels} or {} channels, this one {}",
                2 * latent_channels + 1,
                unet_channels
            )));
        }
        let strength = self.strength(opts, call);
        let mut scheduler = self.scheduler_for_size(opts, Some((height, width)))?;
        let (timesteps, steps) = self.image_timesteps(&mut *scheduler, opts, call)?;
        let full_strength = strength == 1.0;
        let start = opts.denoising_start.is_some();
        let embeds = self.encode_prompt_for(opts, call)?;
        let cond = self.conditioning(&embeds, opts, call, (height, width))?;
        let guidance = self.guidance(opts, call);
        let control = self.control_plan(opts, call, (height, width))?;
        let mask = binarize_mask(mask.clone());
        let mask_latents = repeat_batch(
            "mask",
            downsample_mask(mask.clone(), self.vae_scale_factor()),
            batch,
        )?;
        self.run(opts, hooks, |noise| {
            let image_latents = (!nine || start || (opts.latents.is_none() && !full_strength))
                .then(|| self.encode_image(pixels.clone(), batch, noise))
                .transpose()?;
            let eps = self.initial_noise(opts, shape, noise)?;
            let latents = match (&image_latents, opts.latents.is_some() || full_strength) {
                (Some(x0), _) if start => x0.clone(),
                (Some(x0), false) => scheduler.add_noise(x0.clone(), eps.clone(), timesteps[0])?,
                _ => eps.clone() * scheduler.init_noise_sigma(),
            };
            let (conditioning, blend) = if nine {
                let masked = pixels * mask.clone().lower_elem(0.5).float();
                let masked_latents = self.encode_image(masked, batch, noise)?;
                let cond = Tensor::cat(vec![mask_latents, masked_latents], 1);
                let cond = match guidance {
                    Some(_) => Tensor::cat(vec![cond.clone(), cond], 0),
                    None => cond,
                };
                (Some(cond), None)
            } else {
                let image_latents = image_latents.ok_or_else(|| {
                    Error::Config("blended inpainting needs the image latents".into())
                })?;
                let blend = Blend {
                    image_latents,
                    mask: mask_latents,
                    noise: eps,
                };
                (None, Some(blend))
            };
            Ok(Denoise {
                scheduler,
                timesteps,
                steps,
                latents,
                cond,
                truncated: embeds.truncated,
                guidance,
                conditioning,
                blend,
                control,
                skip: None,
            })
        })
    }
}
