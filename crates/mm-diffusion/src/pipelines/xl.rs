//! Stable Diffusion XL: loading a base or refiner folder, micro-conditioning (`add_time_ids`)
//! and the `denoising_end` / `denoising_start` hand-off, as diffusers'
//! `StableDiffusionXLPipeline`, `StableDiffusionXLImg2ImgPipeline` and
//! `StableDiffusionXLInpaintPipeline` do them.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use mm_schedulers::Scheduler;
use mm_vision::clip::ClipTextConfig;

use super::component::Component;
use super::denoiser::DenoiserInfo;
use super::loading::PipelineDir;
use super::options::GenerateOptions;
use super::pipeline::{
    Call, DiffusionPipeline, FolderParts, LoadOptions, MicroLayout, pipeline_vae, scheduler_config,
};
use super::prompt::PromptEmbeds;
use super::prompt_xl::XlPromptEncoder;
use crate::single_file::{LdmLayout, SingleFile, single_layers_per_block};
use crate::unet::{AddedCond, UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::AutoencoderKLConfig;
use crate::{Error, Result};

/// SDXL img2img's default strength (diffusers' `StableDiffusionXLImg2ImgPipeline`).
pub const XL_IMG2IMG_STRENGTH: f64 = 0.3;
/// SDXL inpainting's default strength (diffusers' `StableDiffusionXLInpaintPipeline`).
pub const XL_INPAINT_STRENGTH: f64 = 0.9999;

/// An SDXL pipeline (base, refiner, Turbo, fine-tunes): a [`DiffusionPipeline`] whose prompt
/// encoder is SDXL's pair of CLIP encoders and whose UNet takes the pooled embeddings and
/// micro-conditioning ids. Text-to-image, img2img (from images or from a base's latents) and
/// inpainting are the same calls as for SD 1.x, with the SDXL settings of
/// [`GenerateOptions`] (second prompts, [`MicroConditioning`](super::MicroConditioning),
/// `denoising_end` / `denoising_start`) and diffusers' SDXL defaults (guidance 5.0; strength
/// 0.3 for img2img, 0.9999 for inpainting).
///
/// ```no_run
/// use mm_diffusion::pipelines::{GenerateOptions, Hooks, LoadOptions, MemoryMode, StableDiffusionXL};
///
/// fn main() -> mm_diffusion::Result<()> {
///     let device = mm_core::device::cpu();
///     let options = LoadOptions::new().memory(MemoryMode::Sequential);
///     let base = StableDiffusionXL::load_with_options("stabilityai/stable-diffusion-xl-base-1.0", options.clone(), &device)?;
///     let refiner = StableDiffusionXL::load_with_options("stabilityai/stable-diffusion-xl-refiner-1.0", options, &device)?;
///     // The chapter's call: DPM++ 2M Karras, 30 steps, guidance 7.5, 1024².
///     let opts = GenerateOptions::new("a majestic lion jumping from a big stone at night")
///         .scheduler("DPMSolverMultistepScheduler")
///         .scheduler_option("use_karras_sigmas", true)
///         .steps(30)
///         .guidance_scale(7.5)
///         .size(1024, 1024)
///         .denoising_end(0.8);
///     let latents = base.text_to_image(&opts, Hooks::new())?.latents;
///     // The "ensemble of experts": the refiner finishes the last 20 % of the schedule.
///     let opts = GenerateOptions::new("a majestic lion jumping from a big stone at night")
///         .steps(30)
///         .denoising_start(0.8);
///     let image = refiner.img2img(&latents, &opts, Hooks::new())?;
///     mm_core::image::save_image(&image.images[0], "lion.png")?;
///     Ok(())
/// }
/// ```
pub type StableDiffusionXL<U = UNet2DConditionModel> = DiffusionPipeline<U, XlPromptEncoder>;

impl DiffusionPipeline<UNet2DConditionModel, XlPromptEncoder> {
    /// Loads a diffusers SDXL folder (or a repo id in the local Hugging Face cache): base
    /// (`text_encoder` + `text_encoder_2`) or refiner (`text_encoder_2` only,
    /// `requires_aesthetics_score`), fp16 variant files included.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_with_options(model, LoadOptions::new(), device)
    }

    /// [`load`](Self::load) with a storage dtype and a memory mode.
    pub fn load_with_options(model: &str, options: LoadOptions, device: &Device) -> Result<Self> {
        let dir = PipelineDir::resolve(model)?;
        if dir.component_class("text_encoder_2").is_none() {
            return Err(Error::MissingComponent {
                component: "text_encoder_2",
                path: dir.path.clone(),
                reason: format!(
                    "model_index.json ({}) has no second text encoder: not an SDXL folder \
                     (load Stable Diffusion 1.x / 2.x with StableDiffusion::load)",
                    dir.class_name().unwrap_or("no _class_name")
                ),
            });
        }
        let aesthetics = requires_aesthetics_score(&dir);
        let parts = FolderParts::open(&dir, &options, device)?;
        let dev = device.clone();
        let prompt_encoder = Component::with_mode(options.memory, move || {
            XlPromptEncoder::load(&dir, options.dtype, &dev)
        })?;
        Ok(parts.into_pipeline(prompt_encoder, Some(MicroLayout { aesthetics })))
    }
}

impl DiffusionPipeline<UNet2DConditionModel, XlPromptEncoder> {
    /// Loads a single-file SDXL checkpoint (`sd_xl_base_1.0.safetensors`,
    /// `sd_xl_refiner_1.0.safetensors`, fine-tunes shared as one file; see
    /// [`crate::single_file`]) with the configs, tokenizers and scheduler of `configs`, a
    /// diffusers SDXL folder (or repo id) of the same kind — base configs for a base file,
    /// refiner configs for a refiner file. Only that folder's `model_index.json`,
    /// `*/config.json`, tokenizers and scheduler are read. With
    /// [`MemoryMode::Sequential`](super::MemoryMode) the file is re-read (memory-mapped) for
    /// each use of the UNet and the text encoders.
    pub fn from_single_file(
        file: impl AsRef<Path>,
        configs: &str,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        options.check_files(&[])?;
        let dir = PipelineDir::resolve(configs)?;
        let file = file.as_ref().to_path_buf();
        let scheduler_config = scheduler_config(&dir.component("scheduler")?)?;
        let unet_config: UNet2DConditionConfig = dir.component("unet")?.config()?;
        let vae_config: AutoencoderKLConfig = dir.component("vae")?.config()?;
        let text_file = dir.component("text_encoder_2")?.required("config.json")?;
        let layout = LdmLayout {
            layers_per_block: single_layers_per_block(&unet_config)?,
            vae_up_blocks: vae_config.up_block_types.len(),
            text_layers: ClipTextConfig::from_file(&text_file)?.num_hidden_layers,
        };
        let open = move || SingleFile::open(&file)?.sdxl_components(&layout);
        let parts = open()?;
        let base_configs = dir.component_class("text_encoder").is_some();
        if parts.text_encoder.is_some() != base_configs {
            let (file_kind, dir_kind) = match base_configs {
                true => ("a refiner", "base"),
                false => ("a base", "refiner"),
            };
            return Err(Error::Config(format!(
                "the single file is {file_kind} checkpoint but {} has {dir_kind} configs",
                dir.path.display()
            )));
        }
        let vae = pipeline_vae(&vae_config, parts.vae, options.dtype, device)?;
        let open = std::sync::Arc::new(open);
        let (dtype, dev, config) = (options.dtype, device.clone(), unet_config.clone());
        let load = open.clone();
        let unet = Component::with_mode(options.memory, move || {
            let weights = load()?.unet.with_dtype(dtype);
            UNet2DConditionModel::from_weights(&config, weights, &dev)
        })?;
        let aesthetics = requires_aesthetics_score(&dir);
        let dev = device.clone();
        let prompt_encoder = Component::with_mode(options.memory, move || {
            let parts = open()?;
            XlPromptEncoder::from_weights(
                &dir,
                parts.text_encoder,
                parts.text_encoder_2,
                dtype,
                &dev,
            )
        })?;
        let parts = FolderParts {
            scheduler_config,
            vae,
            unet,
            info: DenoiserInfo::of_unet(&unet_config),
            device: device.clone(),
        };
        Ok(parts.into_pipeline(prompt_encoder, Some(MicroLayout { aesthetics })))
    }
}

/// `requires_aesthetics_score` of `model_index.json` (the refiner's; default false).
fn requires_aesthetics_score(dir: &PipelineDir) -> bool {
    dir.index
        .get("requires_aesthetics_score")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

impl<U> DiffusionPipeline<U, XlPromptEncoder> {
    /// Sets `requires_aesthetics_score` (the refiner's micro-conditioning: original size,
    /// crop and an aesthetic score instead of the target size).
    pub fn requires_aesthetics_score(mut self, aesthetics: bool) -> Self {
        self.micro = Some(MicroLayout { aesthetics });
        self
    }
}

/// `denoising_end` / `denoising_start` must be in `(0, 1)`, start before end, and
/// `denoising_start` needs a starting image.
pub(crate) fn check_denoising_range(opts: &GenerateOptions, call: Call) -> Result<()> {
    for (name, value) in [
        ("denoising_end", opts.denoising_end),
        ("denoising_start", opts.denoising_start),
    ] {
        if let Some(v) = value
            && !(v > 0.0 && v < 1.0)
        {
            return Err(Error::InvalidArgument {
                name,
                reason: format!("must be in (0, 1), got {v}"),
            });
        }
    }
    if opts.denoising_start.is_some() && call == Call::TextToImage {
        return Err(Error::InvalidArgument {
            name: "denoising_start",
            reason: "starts from partly denoised latents: use img2img (or inpaint)".into(),
        });
    }
    if let (Some(start), Some(end)) = (opts.denoising_start, opts.denoising_end)
        && start >= end
    {
        return Err(Error::InvalidArgument {
            name: "denoising_start",
            reason: format!("{start} must be below denoising_end {end}"),
        });
    }
    Ok(())
}

/// The training timestep a fraction of the schedule falls on: diffusers'
/// `int(round(num_train_timesteps - fraction · num_train_timesteps))`.
fn cutoff(scheduler_config: &serde_json::Value, fraction: f64) -> f64 {
    let n = scheduler_config
        .get("num_train_timesteps")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(1000.0);
    (n - fraction * n).round()
}

/// `denoising_end`: keeps the timesteps at or above its cutoff; returns how many remain
/// (diffusers' new `num_inference_steps`), at least one.
pub(crate) fn cut_end(
    scheduler_config: &serde_json::Value,
    timesteps: &mut Vec<f64>,
    end: f64,
) -> Result<usize> {
    let cutoff = cutoff(scheduler_config, end);
    let kept = timesteps.iter().filter(|&&t| t >= cutoff).count();
    if kept == 0 {
        return Err(Error::InvalidArgument {
            name: "denoising_end",
            reason: format!("{end} leaves no denoising step; raise it or add steps"),
        });
    }
    timesteps.truncate(kept);
    Ok(kept)
}

/// `denoising_start` (diffusers' `get_timesteps` with it): the timesteps below its cutoff
/// (one more for a second-order scheduler cut mid-step), with the scheduler's begin index
/// set there; returns them and their count.
pub(crate) fn cut_start(
    scheduler_config: &serde_json::Value,
    scheduler: &mut dyn Scheduler<4>,
    start: f64,
) -> Result<(Vec<f64>, usize)> {
    let cutoff = cutoff(scheduler_config, start);
    let all = scheduler.timesteps();
    let mut n = all.iter().filter(|&&t| t < cutoff).count();
    if scheduler.order() == 2 && n % 2 == 0 {
        n += 1;
    }
    let n = n.min(all.len());
    if n == 0 {
        return Err(Error::InvalidArgument {
            name: "denoising_start",
            reason: format!("{start} leaves no denoising step; lower it or add steps"),
        });
    }
    let begin = all.len() - n;
    let timesteps = all[begin..].to_vec();
    scheduler.set_begin_index(begin);
    Ok((timesteps, n))
}

/// SDXL's added conditions for a call making `height × width` images: the pooled embeddings
/// and `add_time_ids` (`[uncond; cond]` with guidance), as the diffusers pipeline of `call`
/// builds them (`_get_add_time_ids`; the img2img / inpainting version for those calls).
pub(crate) fn added_cond(
    layout: MicroLayout,
    call: Call,
    opts: &GenerateOptions,
    embeds: &PromptEmbeds,
    (height, width): (usize, usize),
    device: &Device,
) -> Result<AddedCond> {
    let m = &opts.micro;
    let pair = |(a, b): (usize, usize)| [a as f64, b as f64];
    let original = pair(m.original_size.unwrap_or((height, width)));
    let crops = pair(m.crops_coords_top_left);
    let target = pair(m.target_size.unwrap_or((height, width)));
    let (positive, negative): (Vec<f64>, Vec<f64>) = match call {
        Call::TextToImage => {
            let positive = [original, crops, target].concat();
            let negative = match (m.negative_original_size, m.negative_target_size) {
                (Some(o), Some(t)) => {
                    [pair(o), pair(m.negative_crops_coords_top_left), pair(t)].concat()
                }
                _ => positive.clone(),
            };
            (positive, negative)
        }
        Call::Img2Img | Call::Inpaint => {
            let neg_original = m.negative_original_size.map_or(original, pair);
            let neg_target = m.negative_target_size.map_or(target, pair);
            if layout.aesthetics {
                let neg_crops = pair(m.negative_crops_coords_top_left);
                (
                    [&original[..], &crops, &[m.aesthetic_score]].concat(),
                    [&neg_original[..], &neg_crops, &[m.negative_aesthetic_score]].concat(),
                )
            } else {
                // diffusers uses the positive crop for the negative ids here.
                (
                    [original, crops, target].concat(),
                    [neg_original, crops, neg_target].concat(),
                )
            }
        }
    };
    let missing = || Error::Config("SDXL needs pooled prompt embeddings".into());
    let pooled = embeds.pooled.clone().ok_or_else(missing)?;
    let batch = pooled.dims()[0];
    // One `[1, n]` row of ids.
    let row = |values: &[f64]| {
        let row: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::<2>::from_data(TensorData::new(row, [1, values.len()]), device)
    };
    Ok(match &embeds.uncond {
        Some(_) => {
            let uncond_pooled = embeds.uncond_pooled.clone().ok_or_else(missing)?;
            let time_ids = match call {
                // diffusers' text-to-image repeats `[negative; positive]` as a whole, so with
                // several images per prompt both halves of the batch alternate negative and
                // positive ids; kept, to give the same images.
                Call::TextToImage => {
                    Tensor::cat(vec![row(&negative), row(&positive)], 0).repeat_dim(0, batch)
                }
                Call::Img2Img | Call::Inpaint => Tensor::cat(
                    vec![
                        row(&negative).repeat_dim(0, batch),
                        row(&positive).repeat_dim(0, batch),
                    ],
                    0,
                ),
            };
            AddedCond {
                text_embeds: Tensor::cat(vec![uncond_pooled, pooled], 0),
                time_ids,
            }
        }
        None => AddedCond {
            text_embeds: pooled,
            time_ids: row(&positive).repeat_dim(0, batch),
        },
    })
}
