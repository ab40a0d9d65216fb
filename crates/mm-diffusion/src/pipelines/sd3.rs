//! Stable Diffusion 3 / 3.5: loading a diffusers folder (`transformer/`, three text
//! encoders, the 16-channel VAE, the flow-matching scheduler) and the transformer as the
//! pipelines' denoiser, as diffusers' `StableDiffusion3Pipeline` and
//! `StableDiffusion3Img2ImgPipeline` run them.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};

use super::component::{Component, MemoryMode};
use super::denoiser::{Conditioning, Denoiser, DenoiserInfo};
use super::loading::{DIFFUSERS_WEIGHTS, PipelineDir};
use super::pipeline::{DiffusionPipeline, LoadOptions, folder_vae, pipeline_vae, scheduler_config};
use super::prompt_sd3::{Sd3PromptEncoder, Sd3TextWeights};
use crate::single_file::{LdmLayout, SingleFile};
use crate::transformer::{SD3Input, SD3Transformer2DConfig, SD3Transformer2DModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
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
        let (dir, configs) = sd3_folder(model)?;
        options.check_files(&["transformer"])?;
        let vae = folder_vae(&dir.component("vae")?, options.dtype, device)?;
        let transformer_dir = dir.component("transformer")?;
        let (dtype, dev) = (options.dtype, device.clone());
        let (opts, config) = (options.clone(), configs.transformer.clone());
        let transformer = move || {
            let weights =
                opts.weights("transformer", || transformer_dir.weights(DIFFUSERS_WEIGHTS))?;
            SD3Transformer2DModel::from_weights(&config, weights, &dev)
        };
        let (joint, dev) = (configs.transformer.joint_attention_dim, device.clone());
        let text = move || Sd3PromptEncoder::load(&dir, dtype, options.t5, joint, &dev);
        Self::assemble(configs, vae, transformer, text, options.memory, device)
    }

    /// Loads a Stable Diffusion 3 / 3.5 single file (`sd3_medium.safetensors`,
    /// `sd3_medium_incl_clips.safetensors`, `sd3.5_large.safetensors`, …; see
    /// [`crate::single_file`]) with the configs, tokenizers and scheduler of `configs`, a
    /// diffusers folder (or repo id) of the same model, as diffusers'
    /// `StableDiffusion3Pipeline.from_single_file(file, config=configs)`: the transformer and
    /// (when the file has it) the VAE come from the file; each text encoder comes from the
    /// file when the file holds it, and from the folder's weights otherwise. With
    /// [`MemoryMode::Sequential`](super::MemoryMode) the file is re-read (its header, then
    /// the tensors) for each use of the transformer and the text encoders.
    ///
    /// A T5 the file stores in float8 (`sd3_medium_incl_clips_t5xxlfp8.safetensors`) cannot
    /// be read: with [`LoadOptions::t5`] set (the default) that is an
    /// [`mm_core::Error::UnsupportedDtype`] naming the tensor; leave T5 out with
    /// [`LoadOptions::without_t5`]. A file of another family is an
    /// [`Error::SingleFileFamily`].
    ///
    /// ```no_run
    /// use burn::tensor::DType;
    /// use mm_diffusion::pipelines::{GenerateOptions, Hooks, LoadOptions, StableDiffusion3};
    ///
    /// fn main() -> mm_diffusion::Result<()> {
    ///     let device = mm_core::device::cpu();
    ///     let options = LoadOptions::new().dtype(DType::BF16);
    ///     let pipe = StableDiffusion3::from_single_file(
    ///         "sd3_medium_incl_clips_t5xxlfp16.safetensors",
    ///         "stabilityai/stable-diffusion-3-medium-diffusers",
    ///         options,
    ///         &device,
    ///     )?;
    ///     let out = pipe.text_to_image(&GenerateOptions::new("a lighthouse at dusk"), Hooks::new())?;
    ///     mm_core::image::save_image(&out.images[0], "lighthouse.png")?;
    ///     Ok(())
    /// }
    /// ```
    pub fn from_single_file(
        file: impl AsRef<Path>,
        configs: &str,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        options.check_files(&[])?;
        let (dir, configs) = sd3_folder(configs)?;
        let vae_dir = dir.component("vae")?;
        let vae_config: AutoencoderKLConfig = vae_dir.config()?;
        let layout = LdmLayout {
            vae_up_blocks: vae_config.up_block_types.len(),
            ..LdmLayout::SD3
        };
        let file = file.as_ref().to_path_buf();
        let open = Arc::new(move || SingleFile::open(&file)?.sd3_components(&layout));
        let parts = open()?;
        let vae = match parts.vae {
            Some(weights) => pipeline_vae(&vae_config, weights, options.dtype, device)?,
            None => folder_vae(&vae_dir, options.dtype, device)?,
        };
        // A float8 T5 fails here, not at the first prompt of a sequential pipeline.
        if options.t5
            && dir.component_class("text_encoder_3").is_some()
            && let Some(t5) = &parts.text_encoder_3
        {
            t5.check_readable()?;
        }
        let (dtype, dev, config) = (options.dtype, device.clone(), configs.transformer.clone());
        let (load, opts) = (open.clone(), options.clone());
        let transformer = move || {
            let weights = opts.stored(load()?.transformer);
            SD3Transformer2DModel::from_weights(&config, weights, &dev)
        };
        let (joint, dev) = (configs.transformer.joint_attention_dim, device.clone());
        let text = move || {
            let parts = open()?;
            let weights = Sd3TextWeights {
                clip_l: parts.text_encoder,
                clip_g: parts.text_encoder_2,
                t5: parts.text_encoder_3,
            };
            Sd3PromptEncoder::from_weights(&dir, weights, dtype, options.t5, joint, &dev)
        };
        Self::assemble(configs, vae, transformer, text, options.memory, device)
    }

    /// The pipeline of its VAE and of the loaders of its transformer and text encoders, run
    /// now or at each use as `memory` says.
    fn assemble(
        configs: Sd3Configs,
        vae: AutoencoderKL,
        transformer: impl Fn() -> Result<SD3Transformer2DModel> + Send + Sync + 'static,
        text: impl Fn() -> Result<Sd3PromptEncoder> + Send + Sync + 'static,
        memory: MemoryMode,
        device: &Device,
    ) -> Result<Self> {
        Ok(DiffusionPipeline::assembled(
            Component::with_mode(memory, transformer)?,
            vae,
            Component::with_mode(memory, text)?,
            configs.scheduler,
            DenoiserInfo::of_sd3(&configs.transformer),
            device,
        ))
    }
}

/// The configs of an SD3 folder the pipeline keeps.
struct Sd3Configs {
    /// `scheduler/scheduler_config.json`.
    scheduler: serde_json::Value,
    /// `transformer/config.json` (checked).
    transformer: SD3Transformer2DConfig,
}

/// An SD3 folder (`model_index.json` naming a transformer) and its configs.
fn sd3_folder(model: &str) -> Result<(PipelineDir, Sd3Configs)> {
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
    let scheduler = scheduler_config(&dir.component("scheduler")?)?;
    let transformer: SD3Transformer2DConfig = dir.component("transformer")?.config()?;
    transformer.validate()?;
    let configs = Sd3Configs {
        scheduler,
        transformer,
    };
    Ok((dir, configs))
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
            embeds_guidance: false,
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

    /// About 16 f32 values of the model width per token (the pipelines' memory check's estimate).
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        DenoiserInfo::of_sd3(self.config()).activation_bytes(batch, height, width)
    }
}
