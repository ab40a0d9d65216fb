//! Helpers shared by the example programs in this folder (`cargo run --release --example
//! clip_zero_shot -- --help`).

use std::path::{Path, PathBuf};
use std::time::Instant;

pub mod draw;
pub mod vlm;

use burn::tensor::{DType, Device, Tensor};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use mm_core::gguf::GgmlType;
use mm_core::image::canny::{CannyOptions, control_image as canny_control_image};
use mm_core::precision::ComputeDtype;
use mm_diffusion::controlnet::ControlNetModel;
use mm_diffusion::ip_adapter::{ImageEncoder, IpAdapterScale};
use mm_diffusion::pipelines::{
    ControlInput, Flow, Flux, GenerateOptions, Generated, Hooks, LoadOptions, MemoryMode,
    PipelineDir, SkipLayerGuidance, StableDiffusion, StableDiffusion3, StableDiffusionXL, StepInfo,
};
use mm_diffusion::vae::{Autoencoder, AutoencoderTiny, AutoencoderTinyConfig, TileMode};
use mm_vision::pipeline::{ImageTextModel, ImageTextPipeline};

/// The zoo's Stable Diffusion pipeline folder (trained by the `train_zoo` example, committed
/// in `zoo/sd`): the default model of the diffusion examples.
pub const ZOO_SD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../zoo/sd");
/// The zoo's CLIP folder (`zoo/clip`): the default model of the CLIP examples.
pub const ZOO_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../zoo/clip");

/// The error type of the examples: any library error, printed with its message.
pub type AnyError = Box<dyn std::error::Error>;

/// Options every zero-shot example takes.
#[derive(Debug, clap::Args)]
pub struct ZeroShotArgs {
    /// Model folder or Hugging Face repo id (resolved in the local HF cache); default: the
    /// example's (the zoo CLIP for `clip_zero_shot`).
    #[arg(long)]
    pub model: Option<String>,
    /// Image to classify (png, jpeg or webp).
    #[arg(long)]
    pub image: PathBuf,
    /// Candidate labels, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// Prompt template, `{}` standing for the label.
    #[arg(long, default_value = "This is a photo of {}.")]
    pub template: String,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Prints an error's message (not its debug form) and turns the result into an exit code.
pub fn report(result: Result<(), AnyError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses a `--dtype` option.
pub fn parse_dtype(name: &str) -> Result<DType, AnyError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(format!("unknown dtype '{other}' (expected f32, bf16 or f16)").into()),
    }
}

/// Parses `--quantize`: a ggml type that weights can be quantized to (q8_0, q4_k).
pub fn parse_ggml_type(name: &str) -> Result<GgmlType, AnyError> {
    match name.to_ascii_lowercase().as_str() {
        "q8_0" => Ok(GgmlType::Q8_0),
        "q4_k" => Ok(GgmlType::Q4_K),
        other => Err(format!("cannot quantize to '{other}' (expected q8_0 or q4_k)").into()),
    }
}

/// Parses `--device`.
pub fn device(name: &str) -> Result<Device, AnyError> {
    Ok(mm_core::device::parse(name)?)
}

/// Loads the pipeline, classifies the image and prints the ranked labels.
pub fn run_zero_shot<M: ImageTextModel>(
    args: ZeroShotArgs,
    default_model: &str,
) -> Result<(), AnyError> {
    let device = device(&args.device)?;
    let model = args.model.as_deref().unwrap_or(default_model);
    let pipeline = ImageTextPipeline::<M>::load(model, &device)?.with_template(args.template);
    // CLIP and SigLIP processors composite transparency onto white.
    let image = mm_core::image::load_image_on_white(&args.image)?;
    let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
    for (label, probability) in pipeline.zero_shot(&image, &labels)? {
        println!("{probability:>7.4}  {label}");
    }
    Ok(())
}

/// Options every Stable Diffusion example takes.
#[derive(Debug, clap::Args)]
pub struct DiffusionArgs {
    /// Pipeline folder (diffusers layout) or Hugging Face repo id (resolved in the local HF
    /// cache), e.g. stable-diffusion-v1-5/stable-diffusion-v1-5 or
    /// stabilityai/stable-diffusion-xl-base-1.0 (SDXL is detected from model_index.json). With
    /// `--single-file`, only its configs, tokenizers and scheduler are read. Default: the
    /// tiny zoo pipeline trained on the shapes world (`zoo/sd`), 64² pictures.
    #[arg(long, default_value = ZOO_SD)]
    pub model: String,
    /// A single-file checkpoint in the CompVis/LDM layout (e.g.
    /// v1-5-pruned-emaonly.safetensors, sd_xl_base_1.0.safetensors) whose weights replace
    /// those of `--model`.
    #[arg(long)]
    pub single_file: Option<PathBuf>,
    /// SDXL: a refiner folder (e.g. stabilityai/stable-diffusion-xl-refiner-1.0) that finishes
    /// the last `1 - high-noise-frac` of the schedule on the base's latents (diffusers'
    /// "ensemble of experts").
    #[arg(long)]
    pub refiner: Option<String>,
    /// SDXL with `--refiner`: the fraction of the schedule the base runs (`denoising_end` of
    /// the base, `denoising_start` of the refiner).
    #[arg(long, default_value_t = 0.8)]
    pub high_noise_frac: f64,
    /// SDXL and SD3: the second text encoder's prompt (default: --prompt).
    #[arg(long)]
    pub prompt_2: Option<String>,
    /// SD3: the T5 encoder's prompt (default: --prompt).
    #[arg(long)]
    pub prompt_3: Option<String>,
    /// SD3 and FLUX: T5 tokens per prompt (default 256 for SD3, 512 for FLUX; at most 512).
    #[arg(long)]
    pub max_sequence_length: Option<usize>,
    /// FLUX: true classifier-free guidance scale, used with --negative (default 1: off).
    #[arg(long)]
    pub true_cfg: Option<f64>,
    /// SD3: leave the T5 encoder out (its states become zeros; 9.5 GB less in bf16).
    #[arg(long)]
    pub no_t5: bool,
    /// SD3 / FLUX: quantize the transformer's (and FLUX's T5's) linear weights as they load:
    /// q8_0 (about 1.06 bytes per weight) or q4_k (0.56).
    #[arg(long)]
    pub quantize: Option<String>,
    /// SD3 / FLUX: the transformer's weights from this file (.safetensors or .gguf, diffusers'
    /// or the original names: flux1-schnell-Q8_0.gguf, flux1-dev.safetensors) instead of the
    /// folder's.
    #[arg(long)]
    pub transformer_file: Option<PathBuf>,
    /// FLUX: T5's weights from this file (t5-v1_1-xxl-encoder-Q8_0.gguf, …) instead of the
    /// folder's `text_encoder_2`.
    #[arg(long)]
    pub t5_file: Option<PathBuf>,
    /// SD3.5: skip-layer guidance on these transformer blocks (SD3.5 medium: 7,8,9).
    #[arg(long, value_delimiter = ',')]
    pub slg_layers: Vec<usize>,
    /// SD3.5: skip-layer guidance scale.
    #[arg(long, default_value_t = 2.8)]
    pub slg_scale: f64,
    /// SD3.5: skip-layer guidance window, fractions of the steps (start,stop).
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.2])]
    pub slg_window: Vec<f64>,
    /// Scheduler config entries for this run, KEY=JSON (e.g. use_karras_sigmas=true for
    /// DPM++ 2M Karras, timestep_spacing='"trailing"' for SDXL-Turbo); repeatable.
    #[arg(long = "scheduler-option", value_parser = parse_key_value)]
    pub scheduler_options: Vec<(String, serde_json::Value)>,
    /// Which models stay in memory: resident (all), or sequential (only the running one:
    /// text encoders for the prompt, then the UNet, loaded for each use).
    #[arg(long, value_enum, default_value = "resident")]
    pub memory: Memory,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// The negative prompt (default: none; SDXL base then uses zero embeddings).
    #[arg(long)]
    pub negative: Option<String>,
    /// Scheduler class instead of the folder's, e.g. EulerDiscreteScheduler,
    /// DPMSolverMultistepScheduler, DDIMScheduler.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Inference steps (default: the pipeline's, 50; 28 for SD3).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1: none; default: the pipeline's, 7.5 for SD 1.x /
    /// 2.x, 5.0 for SDXL, 7.0 for SD3).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images to generate.
    #[arg(long, default_value_t = 1)]
    pub images: usize,
    /// CLIP layers to skip.
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// A diffusers AutoencoderTiny folder (e.g. madebyollin/taesd) for step previews.
    #[arg(long)]
    pub taesd: Option<String>,
    /// Save a preview of the latents after every step to this png (overwritten).
    #[arg(long)]
    pub preview: Option<PathBuf>,
    /// Output png; with several images, `_N` is added before the extension.
    #[arg(long, default_value = "out.png")]
    pub out: PathBuf,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights precision in memory: f32, or bf16 / f16 for half the memory (on the CPU the
    /// arithmetic stays f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Arithmetic of the models' matrix products on the CPU: f32, or bf16 (bf16 operands,
    /// f32 sums; on CPUs with AMX the UNet step takes 0.7× and the VAE decode 0.6× the f32
    /// time, see docs/performance.md).
    #[arg(long, default_value = "f32", value_parser = parse_compute)]
    pub compute: ComputeDtype,
}

/// Parses a `--compute` option.
pub fn parse_compute(name: &str) -> Result<ComputeDtype, String> {
    match name {
        "f32" => Ok(ComputeDtype::F32),
        "bf16" => Ok(ComputeDtype::Bf16),
        other => Err(format!(
            "unknown compute dtype '{other}' (expected f32 or bf16)"
        )),
    }
}

impl DiffusionArgs {
    /// The generation options these arguments describe.
    pub fn options(&self) -> GenerateOptions {
        let mut opts = GenerateOptions::new(&self.prompt)
            .seed(self.seed)
            .num_images_per_prompt(self.images)
            .compute_dtype(self.compute);
        opts.steps = self.steps;
        opts.negative_prompt = self.negative.clone();
        opts.guidance_scale = self.guidance;
        if let Some(s) = &self.scheduler {
            opts = opts.scheduler(s);
        }
        if let Some(k) = self.clip_skip {
            opts = opts.clip_skip(k);
        }
        opts.prompt_2 = self.prompt_2.clone();
        opts.prompt_3 = self.prompt_3.clone();
        opts.max_sequence_length = self.max_sequence_length;
        opts.true_cfg_scale = self.true_cfg;
        if !self.slg_layers.is_empty() {
            let (start, stop) = match self.slg_window[..] {
                [start, stop] => (start, stop),
                _ => (0.01, 0.2),
            };
            let slg = SkipLayerGuidance::new(self.slg_layers.clone())
                .scale(self.slg_scale)
                .window(start, stop);
            opts = opts.skip_layer_guidance(slg);
        }
        for (key, value) in &self.scheduler_options {
            opts = opts.scheduler_option(key, value.clone());
        }
        opts
    }

    /// The load options `--dtype` and `--memory` describe.
    pub fn load_options(&self) -> Result<LoadOptions, AnyError> {
        let memory = match self.memory {
            Memory::Resident => MemoryMode::Resident,
            Memory::Sequential => MemoryMode::Sequential,
        };
        let mut options = LoadOptions::new()
            .dtype(parse_dtype(&self.dtype)?)
            .memory(memory);
        if self.no_t5 {
            options = options.without_t5();
        }
        if let Some(name) = &self.quantize {
            options = options.quantize(parse_ggml_type(name)?);
        }
        if let Some(file) = &self.transformer_file {
            options = options.component_file("transformer", file);
        }
        if let Some(file) = &self.t5_file {
            options = options.component_file("text_encoder_2", file);
        }
        Ok(options)
    }
}

/// `--memory`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Memory {
    /// Every model stays loaded.
    Resident,
    /// Only the running model is in memory.
    Sequential,
}

/// Parses `KEY=JSON` (a bare word that is not JSON is a string).
fn parse_key_value(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
    Ok((key.to_string(), value))
}

/// A loaded pipeline: Stable Diffusion 1.x / 2.x, SDXL, SD3 or FLUX, as the folder's
/// `model_index.json` says (a transformer with a third text encoder means SD3, without one
/// FLUX; a second text encoder alone SDXL).
#[derive(Debug)]
pub enum Pipeline {
    /// Stable Diffusion 1.x / 2.x.
    Sd(Box<StableDiffusion>),
    /// SDXL (base, refiner, Turbo).
    Xl(Box<StableDiffusionXL>),
    /// Stable Diffusion 3 / 3.5.
    Sd3(Box<StableDiffusion3>),
    /// FLUX.1 (schnell, dev).
    Flux(Box<Flux>),
}

impl Pipeline {
    /// Loads `model` (or `single_file` with `model`'s configs).
    pub fn load(
        model: &str,
        single_file: Option<&Path>,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self, AnyError> {
        let dir = PipelineDir::resolve(model)?;
        if dir.component_class("transformer").is_some() {
            if dir.component_class("text_encoder_3").is_none() {
                if single_file.is_some() {
                    return Err("--single-file is not supported for FLUX folders".into());
                }
                let pipe = Flux::load_with_options(model, options, device)?;
                return Ok(Self::Flux(Box::new(pipe)));
            }
            let pipe = match single_file {
                Some(file) => StableDiffusion3::from_single_file(file, model, options, device)?,
                None => StableDiffusion3::load_with_options(model, options, device)?,
            };
            return Ok(Self::Sd3(Box::new(pipe)));
        }
        let xl = dir.component_class("text_encoder_2").is_some();
        Ok(match (xl, single_file) {
            (true, Some(file)) => {
                let pipe = StableDiffusionXL::from_single_file(file, model, options, device)?;
                Self::Xl(Box::new(pipe))
            }
            (true, None) => {
                let pipe = StableDiffusionXL::load_with_options(model, options, device)?;
                Self::Xl(Box::new(pipe))
            }
            (false, Some(file)) => {
                let pipe = StableDiffusion::from_single_file_with_dtype(
                    file,
                    model,
                    options.dtype,
                    device,
                )?;
                Self::Sd(Box::new(pipe))
            }
            (false, None) => {
                let pipe = StableDiffusion::load_with_options(model, options, device)?;
                Self::Sd(Box::new(pipe))
            }
        })
    }

    /// Text-to-image.
    pub fn text_to_image(
        &self,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> mm_diffusion::Result<Generated> {
        match self {
            Self::Sd(p) => p.text_to_image(opts, hooks),
            Self::Xl(p) => p.text_to_image(opts, hooks),
            Self::Sd3(p) => p.text_to_image(opts, hooks),
            Self::Flux(p) => p.text_to_image(opts, hooks),
        }
    }

    /// Image-to-image (from an image, or from latents).
    pub fn img2img(
        &self,
        image: &Tensor<4>,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> mm_diffusion::Result<Generated> {
        match self {
            Self::Sd(p) => p.img2img(image, opts, hooks),
            Self::Xl(p) => p.img2img(image, opts, hooks),
            Self::Sd3(p) => p.img2img(image, opts, hooks),
            Self::Flux(p) => p.img2img(image, opts, hooks),
        }
    }

    /// Inpainting.
    pub fn inpaint(
        &self,
        image: &Tensor<4>,
        mask: &Tensor<4>,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
    ) -> mm_diffusion::Result<Generated> {
        match self {
            Self::Sd(p) => p.inpaint(image, mask, opts, hooks),
            Self::Xl(p) => p.inpaint(image, mask, opts, hooks),
            Self::Sd3(p) => p.inpaint(image, mask, opts, hooks),
            Self::Flux(p) => p.inpaint(image, mask, opts, hooks),
        }
    }

    /// Adds a ControlNet (one `ControlInput` per call for each, in order).
    pub fn with_controlnet(self, controlnet: ControlNetModel) -> Self {
        match self {
            Self::Sd(p) => Self::Sd(Box::new(p.with_controlnet(controlnet))),
            Self::Xl(p) => Self::Xl(Box::new(p.with_controlnet(controlnet))),
            Self::Sd3(p) => Self::Sd3(Box::new(p.with_controlnet(controlnet))),
            Self::Flux(p) => Self::Flux(Box::new(p.with_controlnet(controlnet))),
        }
    }

    /// Loads IP-Adapter files into the UNet, with their image encoder, and sets their scales
    /// (one per file).
    pub fn with_ip_adapter(
        self,
        files: &[PathBuf],
        encoder: ImageEncoder,
        scales: &[IpAdapterScale],
    ) -> mm_diffusion::Result<Self> {
        Ok(match self {
            Self::Sd(p) => {
                let mut p = p.with_ip_adapter(files, Some(encoder))?;
                p.set_ip_adapter_scale(scales)?;
                Self::Sd(Box::new(p))
            }
            Self::Xl(p) => {
                let mut p = p.with_ip_adapter(files, Some(encoder))?;
                p.set_ip_adapter_scale(scales)?;
                Self::Xl(Box::new(p))
            }
            Self::Sd3(_) | Self::Flux(_) => {
                return Err(mm_diffusion::Error::InvalidArgument {
                    name: "ip_adapter",
                    reason: "IP-Adapters here are the UNet ones (SD 1.x / 2.x, SDXL)".into(),
                });
            }
        })
    }

    fn with_preview_decoder(self, taesd: AutoencoderTiny) -> Self {
        match self {
            Self::Sd(p) => Self::Sd(Box::new(p.with_preview_decoder(taesd))),
            Self::Xl(p) => Self::Xl(Box::new(p.with_preview_decoder(taesd))),
            Self::Sd3(p) => Self::Sd3(Box::new(p.with_preview_decoder(taesd))),
            Self::Flux(p) => Self::Flux(Box::new(p.with_preview_decoder(taesd))),
        }
    }
}

/// The starting image of img2img and inpainting.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image (cropped to multiples of 8).
    #[arg(long)]
    pub image: PathBuf,
    /// The fraction of the schedule run (0–1; default: diffusers', 0.8 for img2img, 1 for
    /// inpainting, which starts from pure noise in the masked area).
    #[arg(long)]
    pub strength: Option<f64>,
}

impl ImageArgs {
    /// The image as a tensor, and `opts` with the strength set.
    pub fn apply(
        &self,
        opts: GenerateOptions,
        device: &Device,
    ) -> Result<(Tensor<4>, GenerateOptions), AnyError> {
        let image = load_image_tensor(&self.image, device)?;
        Ok(match self.strength {
            Some(s) => (image, opts.strength(s)),
            None => (image, opts),
        })
    }
}

/// A call of the pipeline: text-to-image, img2img or inpainting.
pub type Generate<'a> =
    dyn FnOnce(&Pipeline, &GenerateOptions, Hooks<'_>) -> mm_diffusion::Result<Generated> + 'a;

/// What an example adds to the loaded (base) pipeline: ControlNets, IP-Adapters.
pub type Attach<'a> = dyn FnOnce(Pipeline) -> Result<Pipeline, AnyError> + 'a;

/// Loads the pipeline, runs `generate` with an `indicatif` progress bar (and step previews
/// when asked) and saves the images.
pub fn run_diffusion(
    args: &DiffusionArgs,
    opts: GenerateOptions,
    generate: Box<Generate<'_>>,
) -> Result<(), AnyError> {
    run_diffusion_with(args, opts, Box::new(Ok), generate)
}

/// [`run_diffusion`] with `attach` applied to the pipeline once loaded (not to a refiner).
pub fn run_diffusion_with(
    args: &DiffusionArgs,
    opts: GenerateOptions,
    attach: Box<Attach<'_>>,
    generate: Box<Generate<'_>>,
) -> Result<(), AnyError> {
    let device = device(&args.device)?;
    let start = Instant::now();
    let options = args.load_options()?;
    let mut pipe = attach(Pipeline::load(
        &args.model,
        args.single_file.as_deref(),
        options.clone(),
        &device,
    )?)?;
    if let Some(taesd) = &args.taesd {
        pipe = pipe.with_preview_decoder(AutoencoderTiny::load(taesd, &device)?);
    }
    eprintln!("loaded {} in {:.1?}", args.model, start.elapsed());
    let Some(refiner) = &args.refiner else {
        let out = with_progress(args, |hooks| generate(&pipe, &opts, hooks))?;
        return save_images(args, out, start);
    };
    // The ensemble of experts: the base stops at `high_noise_frac`, the refiner finishes.
    let Pipeline::Xl(_) = &pipe else {
        return Err("--refiner needs an SDXL base (--model)".into());
    };
    let frac = args.high_noise_frac;
    let latents = with_progress(args, |hooks| {
        generate(&pipe, &opts.clone().denoising_end(frac), hooks)
    })?
    .latents;
    drop(pipe);
    let refiner = match Pipeline::load(refiner, None, options, &device)? {
        Pipeline::Xl(r) => r,
        _ => return Err(format!("{refiner} is not an SDXL refiner").into()),
    };
    eprintln!(
        "loaded the refiner {}",
        args.refiner.as_deref().unwrap_or_default()
    );
    let mut refine = opts.denoising_start(frac);
    refine.strength = None;
    let out = with_progress(args, |hooks| refiner.img2img(&latents, &refine, hooks))?;
    save_images(args, out, start)
}

/// Runs `call` with an `indicatif` progress bar (and step previews when asked).
fn with_progress(
    args: &DiffusionArgs,
    call: impl FnOnce(Hooks<'_>) -> mm_diffusion::Result<Generated>,
) -> Result<Generated, AnyError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t = {msg} [{elapsed} < {eta}]")
            .map_err(|e| e.to_string())?,
    );
    let mut preview_error = None;
    let mut progress = |info: &StepInfo| {
        bar.set_length(info.total as u64);
        bar.set_position(info.step as u64);
        // Heun and PNDM evaluate the model more often than once per step: say so.
        let evaluations = if info.evaluations == info.total {
            String::new()
        } else {
            format!(
                ", model evaluation {}/{}",
                info.evaluation, info.evaluations
            )
        };
        bar.set_message(format!("{:.0}{evaluations}", info.timestep));
        if let Some(path) = &args.preview {
            let saved = info
                .preview()
                .map_err(AnyError::from)
                .and_then(|p| Ok(mm_core::image::save_image(&p[0], path)?));
            if let Err(e) = saved {
                preview_error = Some(e);
                return Flow::Cancel;
            }
        }
        Flow::Continue
    };
    let result = call(Hooks::new().progress(&mut progress));
    bar.finish();
    if let Some(e) = preview_error {
        return Err(format!("cannot save the preview: {e}").into());
    }
    Ok(result?)
}

/// Prints the truncation warnings and saves the images.
fn save_images(args: &DiffusionArgs, out: Generated, start: Instant) -> Result<(), AnyError> {
    for t in &out.truncated {
        eprintln!("warning: {t}");
    }
    for (i, image) in out.images.iter().enumerate() {
        let path = if out.images.len() == 1 {
            args.out.clone()
        } else {
            numbered(&args.out, i)
        };
        mm_core::image::save_image(image, &path)?;
        println!("saved {}", path.display());
    }
    println!("done in {:.1?}", start.elapsed());
    Ok(())
}

/// `out.png` → `out_3.png`.
fn numbered(path: &Path, i: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or("out".into(), |s| s.to_string_lossy());
    let ext = path
        .extension()
        .map_or("png".into(), |s| s.to_string_lossy());
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}

/// Loads an image as `[1, 3, H, W]` in `[0, 1]`, cropped (top-left) to multiples of 8.
pub fn load_image_tensor(path: &Path, device: &Device) -> Result<Tensor<4>, AnyError> {
    let image = crop_to_multiple(mm_core::image::load_image(path)?, 8)?;
    Ok(mm_core::image::image_to_tensor(&image, device).unsqueeze())
}

/// Crops an image (top-left) to multiples of `factor`; an image smaller than `factor` on a
/// side (which would be cropped to nothing) is an error.
pub fn crop_to_multiple(image: RgbImage, factor: u32) -> Result<RgbImage, AnyError> {
    let (w, h) = image.dimensions();
    if w < factor || h < factor {
        return Err(format!(
            "the image is {w}x{h} pixels; it needs at least {factor}x{factor} (it is cropped to \
             multiples of {factor})"
        )
        .into());
    }
    let (w, h) = (w / factor * factor, h / factor * factor);
    Ok(image::imageops::crop_imm(&image, 0, 0, w, h).to_image())
}

/// The TAESD variants, by the latent space they target.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TaesdFlavour {
    /// SD 1.x/2.x and SDXL (4 latent channels).
    Taesd,
    /// SD3 and FLUX.1 (16 latent channels).
    Taesd3,
    /// FLUX.2 (32 latent channels, pooled blocks).
    Taef2,
}

impl TaesdFlavour {
    /// Loads the upstream TAESD encoder and decoder files of this flavour.
    pub fn load_files(
        self,
        encoder: &Path,
        decoder: &Path,
        device: &Device,
    ) -> Result<AutoencoderTiny, AnyError> {
        let config = match self {
            Self::Taesd => AutoencoderTinyConfig::taesd(4),
            Self::Taesd3 => AutoencoderTinyConfig::taesd(16),
            Self::Taef2 => AutoencoderTinyConfig::taef2(),
        };
        Ok(AutoencoderTiny::from_original_files(
            &config, encoder, decoder, device,
        )?)
    }
}

/// The arguments of the autoencoder round-trip examples.
#[derive(Debug, clap::Args)]
pub struct RoundtripArgs {
    /// Image to reconstruct (cropped to multiples of the downscale factor).
    #[arg(long)]
    pub image: PathBuf,
    /// Where to save the reconstruction (png).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Tiled encoding and decoding: on, off, or auto (only when the untiled round trip would
    /// exceed the memory limit, `MM_MEMORY_LIMIT`, by default the machine's memory).
    #[arg(long, default_value = "auto")]
    pub tiling: TileMode,
}

/// Encodes the image at `args.image` (cropped to multiples of the downscale factor) and
/// decodes it back; prints the latent shape, the timings and the PSNR, and saves the
/// reconstruction to `args.out`; tiles as `args.tiling` says.
pub fn roundtrip(
    vae: &mut dyn Autoencoder,
    args: &RoundtripArgs,
    device: &Device,
) -> Result<(), AnyError> {
    vae.set_options(vae.options().tile_mode(args.tiling))?;
    let f = vae.downscale_factor() as u32;
    let crop = crop_to_multiple(mm_core::image::load_image(&args.image)?, f)?;
    let pixels: Tensor<4> = mm_core::image::image_to_tensor(&crop, device).unsqueeze();

    let start = Instant::now();
    let latents = vae.encode_latents(pixels.clone() * 2.0 - 1.0)?;
    let encoded = start.elapsed();
    println!("latents {:?} in {encoded:.2?}", latents.dims());
    let decoded = ((vae.decode_latents(latents)? + 1.0) / 2.0).clamp(0.0, 1.0);
    println!(
        "decoded {:?} in {:.2?}",
        decoded.dims(),
        start.elapsed() - encoded
    );

    println!(
        "PSNR {:.2} dB",
        mm_train::eval::psnr(decoded.clone(), pixels)
    );
    if let Some(out) = &args.out {
        let [recon] = <[_; 1]>::try_from(mm_core::image::tensor_to_images(decoded)?)
            .map_err(|_| "expected one image")?;
        mm_core::image::save_image(&recon, out)?;
        println!("saved {}", out.display());
    }
    Ok(())
}

/// The size of generated images (text-to-image examples).
#[derive(Debug, clap::Args)]
pub struct SizeArgs {
    /// Image width (default: the UNet's sample size × 8 — 512 for SD 1.5, 1024 for SDXL — or,
    /// with ControlNets, the first control image's, rounded down to a multiple of 8).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height (see --width).
    #[arg(long)]
    pub height: Option<usize>,
}

impl SizeArgs {
    /// `opts` with this size.
    pub fn apply(&self, mut opts: GenerateOptions) -> GenerateOptions {
        opts.width = self.width;
        opts.height = self.height;
        opts
    }
}

/// ControlNets and their control images (`controlnet_canny`, `ip_adapter`).
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// A ControlNet folder or repo id (e.g. lllyasviel/sd-controlnet-canny); repeatable, one
    /// per --control.
    #[arg(long = "controlnet")]
    pub controlnets: Vec<String>,
    /// KIND=IMAGE: `canny=photo.png` extracts the photo's edges (saved beside the output as
    /// OUT.canny.png); any other kind (depth, pose, …) uses the image as the control image;
    /// repeatable, one per --controlnet.
    #[arg(long = "control", value_parser = parse_control)]
    pub controls: Vec<(String, PathBuf)>,
    /// `controlnet_conditioning_scale`: one for all, or one per ControlNet (default: the
    /// pipeline's, 1.0 for text-to-image).
    #[arg(long = "conditioning-scale")]
    pub scales: Vec<f64>,
    /// The fraction of the steps after which the ControlNets start acting.
    #[arg(long, default_value_t = 0.0)]
    pub control_start: f64,
    /// The fraction of the steps after which they stop.
    #[arg(long, default_value_t = 1.0)]
    pub control_end: f64,
    /// diffusers' guess mode: the ControlNets see only the prompt's guidance branch.
    #[arg(long)]
    pub guess_mode: bool,
    /// Canny's lower hysteresis threshold.
    #[arg(long, default_value_t = 100.0)]
    pub low_threshold: f64,
    /// Canny's upper hysteresis threshold.
    #[arg(long, default_value_t = 200.0)]
    pub high_threshold: f64,
    /// Canny with the L2 gradient magnitude (OpenCV's `L2gradient=True`) instead of L1.
    #[arg(long)]
    pub l2_gradient: bool,
}

fn parse_control(text: &str) -> Result<(String, PathBuf), String> {
    let (kind, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=IMAGE (e.g. canny=photo.png), got {text:?}"))?;
    Ok((kind.to_string(), PathBuf::from(path)))
}

impl ControlArgs {
    /// `opts` with one control input per --control (Canny edge maps saved beside `out`).
    pub fn apply(&self, opts: GenerateOptions, out: &Path) -> Result<GenerateOptions, AnyError> {
        let count = self.controls.len();
        if self.controlnets.len() != count {
            return Err(format!(
                "{} --controlnet for {count} --control: give one ControlNet per control image",
                self.controlnets.len()
            )
            .into());
        }
        if self.scales.len() > 1 && self.scales.len() != count {
            return Err(format!(
                "{} --conditioning-scale for {count} ControlNets: give one, or one per ControlNet",
                self.scales.len()
            )
            .into());
        }
        let canny = CannyOptions::default()
            .thresholds(self.low_threshold, self.high_threshold)
            .l2_gradient(self.l2_gradient);
        let mut opts = opts.guess_mode(self.guess_mode);
        for (i, (kind, path)) in self.controls.iter().enumerate() {
            let reference = mm_core::image::load_image(path)?;
            let image = if kind == "canny" {
                let edges = canny_control_image(&reference, &canny)?;
                let stem = out
                    .file_stem()
                    .map_or("out".into(), |s| s.to_string_lossy());
                let name = match count {
                    1 => format!("{stem}.{kind}.png"),
                    _ => format!("{stem}.{i}.{kind}.png"),
                };
                let saved = out.with_file_name(name);
                mm_core::image::save_image(&edges, &saved)?;
                println!("saved the edge map {}", saved.display());
                edges
            } else {
                reference
            };
            let mut input =
                ControlInput::new(image).guidance_window(self.control_start, self.control_end);
            if let Some(&scale) = self.scales.get(i).or(self.scales.first()) {
                input = input.conditioning_scale(scale);
            }
            opts = opts.control(input);
        }
        Ok(opts)
    }

    /// `pipe` with the ControlNets loaded (weights in `dtype`).
    pub fn attach(
        &self,
        mut pipe: Pipeline,
        dtype: DType,
        device: &Device,
    ) -> Result<Pipeline, AnyError> {
        for model in &self.controlnets {
            pipe = pipe.with_controlnet(ControlNetModel::load_with_dtype(model, dtype, device)?);
        }
        Ok(pipe)
    }
}
