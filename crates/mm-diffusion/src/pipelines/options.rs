//! [`GenerateOptions`]: the settings of a generation call, with diffusers' defaults.

use burn::tensor::Tensor;
use image::RgbImage;
use mm_core::precision::ComputeDtype;

use super::control::ControlInput;
use super::prompt::ModelFamily;
use crate::ip_adapter::ImageEmbeds;

/// Settings shared by text-to-image, img2img and inpainting, with the defaults of diffusers'
/// Stable Diffusion (and SDXL) pipelines. Build with [`GenerateOptions::new`] and the chained
/// setters. Settings left unset take the pipeline's default (guidance 7.5 for SD 1.x / 2.x,
/// 5.0 for SDXL text-to-image and img2img; strength 0.8 / 1.0 for SD 1.x img2img / inpainting,
/// 0.3 / 0.9999 for SDXL's). The SDXL-only settings (second prompts, micro-conditioning,
/// aesthetic scores) are refused by SD 1.x / 2.x pipelines.
///
/// ```
/// use mm_diffusion::pipelines::GenerateOptions;
/// let opts = GenerateOptions::new("an astronaut riding a horse")
///     .negative_prompt("blurry")
///     .steps(30)
///     .guidance_scale(6.0)
///     .seed(42)
///     .size(512, 768);
/// assert_eq!(opts.num_images_per_prompt, 1);
/// ```
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (diffusers' default: none). SD 1.x / 2.x embed none as `""`;
    /// SDXL base (`force_zeros_for_empty_prompt`) uses zero embeddings instead, but embeds an
    /// explicit `""`.
    pub negative_prompt: Option<String>,
    /// SDXL, SD3 and FLUX (its T5): the prompt of the second text encoder (default:
    /// `prompt`).
    pub prompt_2: Option<String>,
    /// SDXL, SD3 and FLUX: the negative prompt of the second text encoder (default:
    /// `negative_prompt`).
    pub negative_prompt_2: Option<String>,
    /// SD3: the prompt of the T5 encoder (default: `prompt`).
    pub prompt_3: Option<String>,
    /// SD3: the negative prompt of the T5 encoder (default: `negative_prompt`).
    pub negative_prompt_3: Option<String>,
    /// SD3 and FLUX: the T5 tokens every prompt is padded or cut to (`max_sequence_length`,
    /// default 256 for SD3, 512 for FLUX; at most 512).
    pub max_sequence_length: Option<usize>,
    /// SD3.5: skip-layer guidance (diffusers' `skip_guidance_layers` and its scale and
    /// window; default off).
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
    /// FLUX: true classifier-free guidance with the negative prompt (`true_cfg_scale`, default
    /// 1.0: off; it runs when > 1 and a negative prompt is given). FLUX's `guidance_scale` is
    /// the distilled guidance the dev model embeds (default 3.5).
    pub true_cfg_scale: Option<f64>,
    /// `num_inference_steps` (default: the pipeline's, diffusers' 50 — 28 for SD3).
    /// img2img and inpainting run `floor(steps · strength)` of them.
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (default: the pipeline's, 7.5 or 5.0); ≤ 1 runs without
    /// guidance (one branch, as SDXL-Turbo's 0.0).
    pub guidance_scale: Option<f64>,
    /// `guidance_rescale` φ in `[0, 1]` (default 0, off). diffusers has it for text-to-image
    /// only; here it applies to img2img and inpainting too.
    pub guidance_rescale: f64,
    /// DDIM's `eta` (default 0); other schedulers ignore it.
    pub eta: f64,
    /// Image height (text-to-image and inpainting; default: the UNet's `sample_size` × the
    /// VAE's downscale factor, or the image's height for inpainting).
    pub height: Option<usize>,
    /// Image width (see `height`).
    pub width: Option<usize>,
    /// Seed of the [`SeededNoise`](mm_schedulers::SeededNoise) used when the call is not
    /// given its own noise source (default 0).
    pub seed: u64,
    /// Images per prompt (default 1).
    pub num_images_per_prompt: usize,
    /// Text-to-image and inpainting: the initial noise `[num_images, 4, h, w]` instead of
    /// drawing it (it is multiplied by the scheduler's `init_noise_sigma`, as in diffusers).
    pub latents: Option<Tensor<4>>,
    /// img2img and inpainting: how much of the schedule to run (default 0.8 for img2img,
    /// 1.0 for inpainting, diffusers' defaults).
    pub strength: Option<f64>,
    /// CLIP layers to skip (diffusers' `clip_skip`; default none).
    pub clip_skip: Option<usize>,
    /// A scheduler class to use instead of the folder's (e.g. `"EulerDiscreteScheduler"`),
    /// built from the folder's `scheduler_config.json` like diffusers'
    /// `Class.from_config(pipe.scheduler.config)`.
    pub scheduler: Option<String>,
    /// Entries that replace the scheduler config's for this call (e.g.
    /// `{"use_karras_sigmas": true}` for DPM++ 2M Karras, `{"timestep_spacing": "trailing"}`
    /// for SDXL-Turbo), like the keyword arguments of diffusers' `from_config`.
    pub scheduler_overrides: serde_json::Map<String, serde_json::Value>,
    /// Micro-conditioning of SDXL (ignored by nothing: SD 1.x / 2.x refuse it).
    pub micro: MicroConditioning,
    /// SDXL: stop denoising at this fraction of the schedule (`denoising_end`, in `(0, 1)`), to
    /// hand the still-noisy latents to a refiner (the "ensemble of experts").
    pub denoising_end: Option<f64>,
    /// SDXL img2img / inpainting: start at this fraction of the schedule (`denoising_start`,
    /// in `(0, 1)`) from latents that are already that noisy (a base's output with
    /// `denoising_end`); replaces `strength` and adds no noise.
    pub denoising_start: Option<f64>,
    /// One input per ControlNet attached to the pipeline, in order (control image,
    /// `controlnet_conditioning_scale`, `control_guidance_start` / `_end`).
    pub control: Vec<ControlInput>,
    /// diffusers' `guess_mode`: the ControlNets see only the prompt's branch of
    /// classifier-free guidance, their residuals scaled from 0.1 to 1.0 (default false).
    pub guess_mode: bool,
    /// IP-Adapter: the reference images, one set per loaded adapter (diffusers'
    /// `ip_adapter_image`).
    pub ip_adapter_image: Vec<Vec<RgbImage>>,
    /// IP-Adapter: precomputed image embeddings, one per adapter, instead of images
    /// (diffusers' `ip_adapter_image_embeds`).
    pub ip_adapter_image_embeds: Option<Vec<ImageEmbeds>>,
    /// The arithmetic of the matrix products of every model the call runs (text encoders,
    /// denoiser, ControlNets, VAE) on the flex CPU backend: f32 (the default), or bf16 with
    /// f32 sums ([`ComputeDtype::Bf16`], like `torch.autocast("cpu", dtype=torch.bfloat16)`
    /// around a diffusers call; on CPUs with AMX, SD 1.5's UNet step takes about half and its
    /// VAE decode 0.4× the f32 time). In bf16 the f32 weights used more than once (the
    /// denoiser's) are packed to bf16 into a cache at their second use and kept until the call
    /// returns, as autocast keeps its casts: up to half the f32 weights' size more memory
    /// meanwhile.
    pub compute_dtype: ComputeDtype,
}

/// Skip-layer guidance (SD3.5 medium's recommended `skip_guidance_layers` are `[7, 8, 9]`):
/// on the steps `i` with `start · steps < i < stop · steps`, the transformer runs once more on
/// the prompt's branch with `layers` skipped, and the guided prediction gains
/// `scale · (cond − cond_skipped)` (diffusers' `StableDiffusion3Pipeline`).
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerGuidance {
    /// The transformer blocks skipped.
    pub layers: Vec<usize>,
    /// `skip_layer_guidance_scale` (default 2.8).
    pub scale: f64,
    /// `skip_layer_guidance_start` (default 0.01).
    pub start: f64,
    /// `skip_layer_guidance_stop` (default 0.2).
    pub stop: f64,
}

impl SkipLayerGuidance {
    /// Guidance skipping `layers`, with diffusers' scale and window.
    pub fn new(layers: impl Into<Vec<usize>>) -> Self {
        Self {
            layers: layers.into(),
            scale: 2.8,
            start: 0.01,
            stop: 0.2,
        }
    }

    /// Sets the scale.
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// Sets the window (fractions of the steps).
    pub fn window(mut self, start: f64, stop: f64) -> Self {
        self.start = start;
        self.stop = stop;
        self
    }

    /// Whether step `i` of `steps` runs the skipped branch.
    pub fn active(&self, i: usize, steps: usize) -> bool {
        let (i, n) = (i as f64, steps as f64);
        i > n * self.start && i < n * self.stop
    }
}

/// SDXL's micro-conditioning: the sizes and crop the UNet is told about (`add_time_ids`), as
/// `(height, width)` / `(top, left)` pairs, and the refiner's aesthetic scores. Unset sizes are
/// the generated image's; unset negative sizes are the positive ones.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroConditioning {
    /// `original_size` (default: the image size).
    pub original_size: Option<(usize, usize)>,
    /// `crops_coords_top_left` (default `(0, 0)`).
    pub crops_coords_top_left: (usize, usize),
    /// `target_size` (default: the image size).
    pub target_size: Option<(usize, usize)>,
    /// `negative_original_size` (default: `original_size`).
    pub negative_original_size: Option<(usize, usize)>,
    /// `negative_crops_coords_top_left` (default `(0, 0)`).
    pub negative_crops_coords_top_left: (usize, usize),
    /// `negative_target_size` (default: `target_size`).
    pub negative_target_size: Option<(usize, usize)>,
    /// Refiner (`requires_aesthetics_score`): `aesthetic_score` (default 6.0).
    pub aesthetic_score: f64,
    /// Refiner: `negative_aesthetic_score` (default 2.5).
    pub negative_aesthetic_score: f64,
}

impl Default for MicroConditioning {
    fn default() -> Self {
        Self {
            original_size: None,
            crops_coords_top_left: (0, 0),
            target_size: None,
            negative_original_size: None,
            negative_crops_coords_top_left: (0, 0),
            negative_target_size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
        }
    }
}

impl GenerateOptions {
    /// Options with diffusers' defaults for `prompt`.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            prompt_2: None,
            negative_prompt_2: None,
            steps: None,
            prompt_3: None,
            negative_prompt_3: None,
            max_sequence_length: None,
            skip_layer_guidance: None,
            true_cfg_scale: None,
            guidance_scale: None,
            guidance_rescale: 0.0,
            eta: 0.0,
            height: None,
            width: None,
            seed: 0,
            num_images_per_prompt: 1,
            latents: None,
            strength: None,
            clip_skip: None,
            scheduler: None,
            scheduler_overrides: serde_json::Map::new(),
            micro: MicroConditioning::default(),
            denoising_end: None,
            denoising_start: None,
            control: Vec::new(),
            guess_mode: false,
            ip_adapter_image: Vec::new(),
            ip_adapter_image_embeds: None,
            compute_dtype: ComputeDtype::F32,
        }
    }

    /// Sets the negative prompt.
    pub fn negative_prompt(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompt = Some(negative.into());
        self
    }

    /// SDXL: sets the second text encoder's prompt.
    pub fn prompt_2(mut self, prompt: impl Into<String>) -> Self {
        self.prompt_2 = Some(prompt.into());
        self
    }

    /// SDXL: sets the second text encoder's negative prompt.
    pub fn negative_prompt_2(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompt_2 = Some(negative.into());
        self
    }

    /// Sets the number of inference steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Sets the guidance scale.
    pub fn guidance_scale(mut self, scale: f64) -> Self {
        self.guidance_scale = Some(scale);
        self
    }

    /// Sets guidance rescale φ.
    pub fn guidance_rescale(mut self, rescale: f64) -> Self {
        self.guidance_rescale = rescale;
        self
    }

    /// Sets DDIM's `eta`.
    pub fn eta(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }

    /// Sets the image size (width, height), multiples of 8.
    pub fn size(mut self, width: usize, height: usize) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the number of images per prompt.
    pub fn num_images_per_prompt(mut self, n: usize) -> Self {
        self.num_images_per_prompt = n;
        self
    }

    /// Sets the initial noise.
    pub fn latents(mut self, latents: Tensor<4>) -> Self {
        self.latents = Some(latents);
        self
    }

    /// Sets the img2img / inpainting strength.
    pub fn strength(mut self, strength: f64) -> Self {
        self.strength = Some(strength);
        self
    }

    /// Sets `clip_skip`.
    pub fn clip_skip(mut self, skip: usize) -> Self {
        self.clip_skip = Some(skip);
        self
    }

    /// Uses the scheduler class `name` instead of the folder's.
    pub fn scheduler(mut self, name: impl Into<String>) -> Self {
        self.scheduler = Some(name.into());
        self
    }

    /// Overrides one entry of the scheduler config for this call (e.g.
    /// `.scheduler_option("use_karras_sigmas", true)`).
    pub fn scheduler_option(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.scheduler_overrides.insert(key.into(), value.into());
        self
    }

    /// SDXL: sets the micro-conditioning.
    pub fn micro(mut self, micro: MicroConditioning) -> Self {
        self.micro = micro;
        self
    }

    /// SDXL: sets `original_size` `(height, width)`.
    pub fn original_size(mut self, height: usize, width: usize) -> Self {
        self.micro.original_size = Some((height, width));
        self
    }

    /// SDXL: sets `crops_coords_top_left` `(top, left)`.
    pub fn crops_coords_top_left(mut self, top: usize, left: usize) -> Self {
        self.micro.crops_coords_top_left = (top, left);
        self
    }

    /// SDXL: sets `target_size` `(height, width)`.
    pub fn target_size(mut self, height: usize, width: usize) -> Self {
        self.micro.target_size = Some((height, width));
        self
    }

    /// SDXL refiner: sets the aesthetic scores (diffusers' defaults 6.0 and 2.5).
    pub fn aesthetic_scores(mut self, positive: f64, negative: f64) -> Self {
        self.micro.aesthetic_score = positive;
        self.micro.negative_aesthetic_score = negative;
        self
    }

    /// SDXL: stops at `fraction` of the schedule (`denoising_end`).
    pub fn denoising_end(mut self, fraction: f64) -> Self {
        self.denoising_end = Some(fraction);
        self
    }

    /// SDXL img2img / inpainting: starts at `fraction` of the schedule (`denoising_start`).
    pub fn denoising_start(mut self, fraction: f64) -> Self {
        self.denoising_start = Some(fraction);
        self
    }

    /// Adds the input of the next ControlNet (see
    /// [`DiffusionPipeline::with_controlnet`](super::DiffusionPipeline::with_controlnet)).
    pub fn control(mut self, input: ControlInput) -> Self {
        self.control.push(input);
        self
    }

    /// IP-Adapter: adds the reference image of the next loaded adapter.
    pub fn ip_adapter_image(self, image: RgbImage) -> Self {
        self.ip_adapter_images(vec![image])
    }

    /// IP-Adapter: adds the reference images of the next loaded adapter (their tokens are
    /// concatenated).
    pub fn ip_adapter_images(mut self, images: Vec<RgbImage>) -> Self {
        self.ip_adapter_image.push(images);
        self
    }

    /// IP-Adapter: sets precomputed embeddings, one per loaded adapter.
    pub fn ip_adapter_image_embeds(mut self, embeds: Vec<ImageEmbeds>) -> Self {
        self.ip_adapter_image_embeds = Some(embeds);
        self
    }

    /// SD3: sets the T5 encoder's prompt.
    pub fn prompt_3(mut self, prompt: impl Into<String>) -> Self {
        self.prompt_3 = Some(prompt.into());
        self
    }

    /// SD3: sets the T5 encoder's negative prompt.
    pub fn negative_prompt_3(mut self, prompt: impl Into<String>) -> Self {
        self.negative_prompt_3 = Some(prompt.into());
        self
    }

    /// SD3: sets `max_sequence_length` (T5 tokens).
    pub fn max_sequence_length(mut self, tokens: usize) -> Self {
        self.max_sequence_length = Some(tokens);
        self
    }

    /// Sets the arithmetic of the models' matrix products ([`GenerateOptions::compute_dtype`]).
    pub fn compute_dtype(mut self, dtype: ComputeDtype) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// FLUX: sets `true_cfg_scale` (with a negative prompt, > 1 runs true CFG).
    pub fn true_cfg_scale(mut self, scale: f64) -> Self {
        self.true_cfg_scale = Some(scale);
        self
    }

    /// SD3.5: sets skip-layer guidance.
    pub fn skip_layer_guidance(mut self, slg: SkipLayerGuidance) -> Self {
        self.skip_layer_guidance = Some(slg);
        self
    }

    /// Sets `guess_mode`.
    pub fn guess_mode(mut self, on: bool) -> Self {
        self.guess_mode = on;
        self
    }

    /// The first setting that `family`'s pipelines do not take (and so refuse), if any.
    pub(crate) fn unsupported_setting(&self, family: ModelFamily) -> Option<&'static str> {
        use ModelFamily::{Flux, StableDiffusion3 as Sd3, StableDiffusionXl as Xl};
        let settings: [(&'static str, bool, &[ModelFamily]); 11] = [
            ("prompt_2", self.prompt_2.is_some(), &[Xl, Sd3, Flux]),
            (
                "negative_prompt_2",
                self.negative_prompt_2.is_some(),
                &[Xl, Sd3, Flux],
            ),
            (
                "micro-conditioning",
                self.micro != MicroConditioning::default(),
                &[Xl],
            ),
            ("denoising_end", self.denoising_end.is_some(), &[Xl]),
            ("denoising_start", self.denoising_start.is_some(), &[Xl]),
            ("prompt_3", self.prompt_3.is_some(), &[Sd3]),
            (
                "negative_prompt_3",
                self.negative_prompt_3.is_some(),
                &[Sd3],
            ),
            (
                "skip_guidance_layers",
                self.skip_layer_guidance.is_some(),
                &[Sd3],
            ),
            (
                "max_sequence_length",
                self.max_sequence_length.is_some(),
                &[Sd3, Flux],
            ),
            ("true_cfg_scale", self.true_cfg_scale.is_some(), &[Flux]),
            (
                "guidance_rescale",
                self.guidance_rescale != 0.0,
                &[ModelFamily::StableDiffusion, Xl],
            ),
        ];
        (settings.into_iter())
            .find(|(_, set, families)| *set && !families.contains(&family))
            .map(|(name, ..)| name)
    }
}
