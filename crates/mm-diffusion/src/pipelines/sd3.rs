//! Stable Diffusion 3 / 3.5: loading a diffusers folder (`transformer/`, three text
//! encoders, the 16-channel VAE, the flow-matching scheduler) and the transformer as the
//! pipelines' denoiser, as diffusers' `StableDiffusion3Pipeline` and
//! `StableDiffusion3Img2ImgPipeline` run them.

use burn::tensor::{Device, Tensor};

use super::component::Component;
use super::denoiser::{Conditioning, Denoiser, DenoiserInfo};
use super::loading::PipelineDir;
use super::pipeline::{DiffusionPipeline, LoadOptions, folder_vae, scheduler_config};
use super::prompt_sd3::Sd3PromptEncoder;
use crate::transformer::{SD3Input, SD3Transformer2DConfig, SD3Transformer2DModel};
use crate::{Error, Result};

/// SD3 img2img's default strength (diffusers' `StableDiffusion3Img2ImgPipeline`).
pub const SD3_IMG2IMG_STRENGTH: f64 = 0.6;

/// A Stable Diffusion 3 / 3.5 pipeline (medium, large, large-turbo): a [`DiffusionPipeline`]
/// whose denoiser is the [`SD3Transformer2DModel`] and whose prompt encoder is
/// [`Sd3PromptEncoder`]. Text-to-image and img2img are the same calls as for SD 1.x, with
/// the SD3 settings of [`GenerateOptions`](super::GenerateOptions) (`prompt_3`,
/// `max_sequence_length`, [`SkipLayerGuidance`](super::SkipLayerGuidance)) and diffusers'
/// SD3 defaults (28 steps, guidance 7.0, 1024², img2img strength 0.6, the folder's
/// `FlowMatchEulerDiscreteScheduler` with its shift).
///
/// ```no_run
/// use burn::tensor::DType;
/// use mm_diffusion::pipelines::{GenerateOptions, Hooks, LoadOptions, MemoryMode, SkipLayerGuidance, StableDiffusion3};
///
/// fn main() -> mm_diffusion::Result<()> {
///     let device = mm_core::device::cpu();
///     // bf16 weights, each model loaded when used: SD3 medium with T5 fits in 24 GiB.
///     let options = LoadOptions::new().dtype(DType::BF16).memory(MemoryMode::Sequential);
///     let pipe = StableDiffusion3::load_with_options("stabilityai/stable-diffusion-3.5-medium", options, &device)?;
///     let opts = GenerateOptions::new("a capybara holding a sign that reads Hello World")
///         .steps(40)
///         .guidance_scale(4.5)
///         .skip_layer_guidance(SkipLayerGuidance::new([7, 8, 9]));
///     let out = pipe.text_to_image(&opts, Hooks::new())?;
///     mm_core::image::save_image(&out.images[0], "capybara.png")?;
///     Ok(())
/// }
/// ```
pub type StableDiffusion3 = DiffusionPipeline<SD3Transformer2DModel, Sd3PromptEncoder>;

impl DiffusionPipeline<SD3Transformer2DModel, Sd3PromptEncoder> {
    /// Loads a diffusers SD3 / SD3.5 folder (or a repo id in the local Hugging Face cache),
    /// f32, every model resident.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_with_options(model, LoadOptions::new(), device)
    }

    /// [`load`](Self::load) with a storage dtype, a memory mode and whether T5 is loaded.
    pub fn load_with_options(model: &str, options: LoadOptions, device: &Device) -> Result<Self> {
        let dir = PipelineDir::resolve(model)?;
        if dir.component_class("transformer").is_none() {
            return Err(Error::MissingComponent {
                component: "transformer",
                path: dir.path.clone(),
                reason: format!(
                    "model_index.json ({}) has no transformer: not an SD3 folder",
                    dir.class_name().unwrap_or("no _class_name")
                ),
            });
        }
        let scheduler_config = scheduler_config(&dir.component("scheduler")?)?;
        let vae = folder_vae(&dir.component("vae")?, options.dtype, device)?;
        let transformer_dir = dir.component("transformer")?;
        let config: SD3Transformer2DConfig = transformer_dir.config()?;
        config.validate()?;
        let info = DenoiserInfo::of_sd3(&config);
        let path = transformer_dir.path().to_string_lossy().into_owned();
        let (dtype, dev) = (options.dtype, device.clone());
        let transformer = Component::with_mode(options.memory, move || {
            SD3Transformer2DModel::load_with_dtype(&path, dtype, &dev)
        })?;
        let (joint, dev) = (config.joint_attention_dim, device.clone());
        let prompt_encoder = Component::with_mode(options.memory, move || {
            Sd3PromptEncoder::load(&dir, dtype, options.t5, joint, &dev)
        })?;
        Ok(DiffusionPipeline {
            unet: transformer,
            vae,
            prompt_encoder,
            scheduler_config,
            preview_decoder: None,
            controlnets: Vec::new(),
            ip_adapter: None,
            denoiser: info,
            micro: None,
            device: device.clone(),
        })
    }
}

impl DenoiserInfo {
    /// The [`Denoiser`] answers of an [`SD3Transformer2DModel`] built from `config`.
    pub(crate) fn of_sd3(config: &SD3Transformer2DConfig) -> Self {
        // About 16 f32 values of the model width per token (the feed-forward's 4× hidden
        // layer, the attention's queries, keys, values and output, the residual stream),
        // one token per patch² latent pixels.
        let patch = config.patch_size.max(1);
        let per_token = mm_core::limits::tensor_bytes(&[16, config.inner_dim()], 4);
        Self {
            in_channels: config.in_channels,
            sample_size: config.sample_size,
            bytes_per_pixel: per_token / (patch * patch) as u64,
            guidance_embedding: None,
            skip_connections: None,
            patch_size: patch,
        }
    }
}

impl SD3Transformer2DModel {
    fn pipeline_input(
        &self,
        sample: Tensor<4>,
        timestep: f64,
        cond: &Conditioning,
    ) -> Result<SD3Input> {
        let pooled = cond.pooled.clone().ok_or_else(|| Error::MissingInput {
            what: "pooled_projections",
            reason: "the SD3 transformer needs the pooled text embeddings".into(),
        })?;
        let t = Tensor::<1>::from_floats([timestep as f32], &sample.device());
        Ok(SD3Input::new(sample, t, cond.context.clone(), pooled))
    }
}

impl Denoiser for SD3Transformer2DModel {
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }

    fn sample_size(&self) -> usize {
        self.config().sample_size
    }

    /// The flow-matching velocity (the scheduler's `prediction_type` is irrelevant).
    fn predict(&self, sample: Tensor<4>, timestep: f64, cond: &Conditioning) -> Result<Tensor<4>> {
        self.forward(self.pipeline_input(sample, timestep, cond)?)
    }

    fn patch_size(&self) -> usize {
        self.config().patch_size
    }

    fn predict_skipping(
        &self,
        sample: Tensor<4>,
        timestep: f64,
        cond: &Conditioning,
        layers: &[usize],
    ) -> Result<Tensor<4>> {
        self.forward(
            self.pipeline_input(sample, timestep, cond)?
                .skip_layers(layers),
        )
    }

    /// About 16 f32 values of the model width per token (see [`DenoiserInfo`]'s estimate).
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        DenoiserInfo::of_sd3(self.config()).activation_bytes(batch, height, width)
    }
}
