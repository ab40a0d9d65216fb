//! FLUX.1 (schnell, dev): loading a diffusers folder (`transformer/`, CLIP and T5, the
//! 16-channel VAE, the flow-matching scheduler) and the transformer as the pipelines'
//! denoiser, as diffusers' `FluxPipeline` and `FluxImg2ImgPipeline` run them.
//!
//! The loop runs on unpacked latents `[batch, 16, h, w]`: the denoiser packs them into 2×2
//! patches for the transformer and unpacks its velocity. The flow-matching Euler step is
//! elementwise, so this is diffusers' loop on packed latents, value for value, and the
//! initial noise drawn in the unpacked shape is what `prepare_latents` packs.

use burn::tensor::{Device, Tensor};

use super::component::Component;
use super::denoiser::{Conditioning, Denoiser, DenoiserInfo};
use super::loading::{DIFFUSERS_WEIGHTS, PipelineDir};
use super::pipeline::{DiffusionPipeline, LoadOptions, folder_vae, scheduler_config};
use super::prompt_flux::FluxPromptEncoder;
use crate::transformer::{
    FluxInput, FluxTransformer2DConfig, FluxTransformer2DModel, latent_image_ids, pack_latents,
    unpack_latents,
};
use crate::{Error, Result};

/// FLUX img2img's default strength (diffusers' `FluxImg2ImgPipeline`).
pub const FLUX_IMG2IMG_STRENGTH: f64 = 0.6;

/// diffusers' `FluxPipeline.default_sample_size`: the default image is 128 latents (1024
/// pixels) on a side.
const FLUX_SAMPLE_SIZE: usize = 128;

/// A FLUX.1 pipeline: a [`DiffusionPipeline`] whose denoiser is the
/// [`FluxTransformer2DModel`] and whose prompt encoder is [`FluxPromptEncoder`].
/// Text-to-image and img2img are the same calls as for the other families, with diffusers'
/// FLUX defaults: 28 steps, 1024², `max_sequence_length` 512, `sigmas = linspace(1, 1/n, n)`
/// shifted by the `mu` of the image's token count, guidance 3.5 embedded by guidance-distilled
/// models (dev; 7.0 for img2img, as diffusers), none for schnell (use 4 steps), and true
/// classifier-free guidance only with a negative prompt and
/// [`true_cfg_scale`](super::GenerateOptions::true_cfg_scale) > 1.
///
/// ```no_run
/// use burn::tensor::DType;
/// use mm_diffusion::pipelines::{Flux, GenerateOptions, Hooks, LoadOptions, MemoryMode};
///
/// fn main() -> mm_diffusion::Result<()> {
///     let device = mm_core::device::cpu();
///     let options = LoadOptions::new().dtype(DType::BF16).memory(MemoryMode::Sequential);
///     let pipe = Flux::load_with_options("black-forest-labs/FLUX.1-schnell", options, &device)?;
///     // The chapter's call: 4 steps, no guidance, 256 T5 tokens.
///     let opts = GenerateOptions::new("A cat holding a sign that says hello world")
///         .steps(4)
///         .guidance_scale(0.0)
///         .max_sequence_length(256);
///     let out = pipe.text_to_image(&opts, Hooks::new())?;
///     mm_core::image::save_image(&out.images[0], "flux-schnell.png")?;
///     Ok(())
/// }
/// ```
pub type Flux = DiffusionPipeline<FluxTransformer2DModel, FluxPromptEncoder>;

impl DiffusionPipeline<FluxTransformer2DModel, FluxPromptEncoder> {
    /// Loads a diffusers FLUX.1 folder (or a repo id in the local Hugging Face cache), f32,
    /// every model resident.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_with_options(model, LoadOptions::new(), device)
    }

    /// [`load`](Self::load) with a storage dtype and a memory mode.
    pub fn load_with_options(model: &str, options: LoadOptions, device: &Device) -> Result<Self> {
        let dir = PipelineDir::resolve(model)?;
        if dir.component_class("transformer").is_none()
            || dir.component_class("text_encoder_3").is_some()
        {
            return Err(Error::MissingComponent {
                component: "transformer",
                path: dir.path.clone(),
                reason: format!(
                    "model_index.json ({}) is not a FLUX folder (a transformer, CLIP and T5)",
                    dir.class_name().unwrap_or("no _class_name")
                ),
            });
        }
        options.check_files(&["transformer", "text_encoder_2"])?;
        let scheduler = scheduler_config(&dir.component("scheduler")?)?;
        let vae = folder_vae(&dir.component("vae")?, options.dtype, device)?;
        let transformer_dir = dir.component("transformer")?;
        let config: FluxTransformer2DConfig = transformer_dir.config()?;
        config.validate()?;
        let (opts, dev, model_config) = (options.clone(), device.clone(), config.clone());
        let transformer = Component::with_mode(options.memory, move || {
            let weights =
                opts.weights("transformer", || transformer_dir.weights(DIFFUSERS_WEIGHTS))?;
            FluxTransformer2DModel::from_weights(&model_config, weights, &dev)
        })?;
        let (opts, dev) = (options.clone(), device.clone());
        let text = Component::with_mode(options.memory, move || {
            FluxPromptEncoder::load(&dir, &opts, &dev)
        })?;
        let info = DenoiserInfo::of_flux(&config);
        Ok(DiffusionPipeline::assembled(
            transformer,
            vae,
            text,
            scheduler,
            info,
            device,
        ))
    }
}

impl DenoiserInfo {
    /// The [`Denoiser`] answers of a [`FluxTransformer2DModel`] built from `config`.
    pub(crate) fn of_flux(config: &FluxTransformer2DConfig) -> Self {
        // About 16 f32 values of the model width per token (the single blocks' 4× MLP with
        // the attention beside it, the residual stream), one token per 2×2 latent pixels.
        let per_token = mm_core::limits::tensor_bytes(&[16, config.inner_dim()], 4);
        Self {
            in_channels: config.in_channels / 4,
            sample_size: FLUX_SAMPLE_SIZE,
            bytes_per_pixel: per_token / 4,
            guidance_embedding: None,
            skip_connections: None,
            patch_size: 2,
            embeds_guidance: config.guidance_embeds,
        }
    }
}

impl Denoiser for FluxTransformer2DModel {
    /// The latent channels (the packed tokens' features / 4).
    fn in_channels(&self) -> usize {
        self.config().in_channels / 4
    }

    fn sample_size(&self) -> usize {
        FLUX_SAMPLE_SIZE
    }

    /// The velocity of `sample` (`[batch, channels, h, w]`, even `h` and `w`), packed into
    /// 2×2 patches for the transformer and unpacked back; the timestep goes in as diffusers'
    /// pipeline passes it, `float32(t) / 1000`.
    fn predict(&self, sample: Tensor<4>, timestep: f64, cond: &Conditioning) -> Result<Tensor<4>> {
        let [b, _, h, w] = sample.dims();
        let device = sample.device();
        let pooled = cond.pooled.clone().ok_or_else(|| Error::MissingInput {
            what: "pooled_projections",
            reason: "the FLUX transformer needs CLIP's pooled embedding".into(),
        })?;
        let text = cond.context.dims()[1];
        let sigma = timestep as f32 / 1000.0;
        let input = FluxInput {
            hidden_states: pack_latents(sample),
            encoder_hidden_states: cond.context.clone(),
            pooled_projections: pooled,
            timestep: Tensor::from_floats([sigma], &device),
            guidance: (cond.guidance)
                .filter(|_| self.config().guidance_embeds)
                .map(|g| Tensor::from_floats([g as f32], &device).repeat_dim(0, b)),
            img_ids: latent_image_ids(h, w, &device),
            txt_ids: Tensor::zeros([text, 3], &device),
        };
        Ok(unpack_latents(self.forward(input)?, h, w))
    }

    fn patch_size(&self) -> usize {
        2
    }

    fn embeds_guidance(&self) -> bool {
        self.config().guidance_embeds
    }

    /// About 16 f32 values of the model width per token (the pipelines' memory check's estimate).
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        DenoiserInfo::of_flux(self.config()).activation_bytes(batch, height, width)
    }
}
