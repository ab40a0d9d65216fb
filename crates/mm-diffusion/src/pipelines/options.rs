//! [`GenerateOptions`]: the settings of a generation call, with diffusers' defaults.

use burn::tensor::Tensor;

/// Settings shared by text-to-image, img2img and inpainting, with the defaults of diffusers'
/// Stable Diffusion pipelines. Build with [`GenerateOptions::new`] and the chained setters.
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
    /// The negative prompt (diffusers' default: none, i.e. the empty string).
    pub negative_prompt: String,
    /// `num_inference_steps` (default 50). img2img and inpainting run
    /// `floor(steps · strength)` of them.
    pub steps: usize,
    /// Classifier-free guidance scale (default 7.5); ≤ 1 runs without guidance (one branch).
    pub guidance_scale: f64,
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
}

impl GenerateOptions {
    /// Options with diffusers' defaults for `prompt`.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
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
        }
    }

    /// Sets the negative prompt.
    pub fn negative_prompt(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompt = negative.into();
        self
    }

    /// Sets the number of inference steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Sets the guidance scale.
    pub fn guidance_scale(mut self, scale: f64) -> Self {
        self.guidance_scale = scale;
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

    /// Whether classifier-free guidance runs (diffusers: `guidance_scale > 1`).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }
}
