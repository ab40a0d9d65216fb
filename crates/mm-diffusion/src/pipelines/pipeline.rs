//! [`StableDiffusion`]: the components of a Stable Diffusion 1.x / 2.x pipeline and the
//! denoising loop the text-to-image, img2img and inpainting calls share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor};
use image::RgbImage;
use mm_core::gguf::GgmlType;
use mm_core::limits::{check_memory, tensor_bytes};
use mm_core::weights::Weights;
use mm_schedulers::scheduler::TimestepRequest;
use mm_schedulers::{FlowMatchEulerConfig, Guidance, NoiseSource, Scheduler, SeededNoise};
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel};
use serde_json::Value;

use super::component::{Component, MemoryMode};
use super::control::{ControlCall, ControlPlan};
use super::denoiser::{Conditioning, Denoiser, DenoiserInfo};
use super::flux::FLUX_IMG2IMG_STRENGTH;
use super::img2img::IMG2IMG_STRENGTH;
use super::inpaint::INPAINT_STRENGTH;
use super::loading::{ComponentDir, DIFFUSERS_WEIGHTS, PipelineDir};
use super::options::{GenerateOptions, SkipLayerGuidance};
use super::progress::{Flow, Previewer, Progress, StepCounter, StepInfo};
use super::prompt::{ModelFamily, PromptEmbeds, PromptEncoder, TextConditioner, Truncation};
use super::sd3::SD3_IMG2IMG_STRENGTH;
use super::xl::{XL_IMG2IMG_STRENGTH, XL_INPAINT_STRENGTH};
use crate::check::check_finite;
use crate::controlnet::ControlNetModel;
use crate::ip_adapter::{ImageEncoder, IpAdapter, IpAdapterScale};
use crate::single_file::{LdmLayout, SingleFile, single_layers_per_block};
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{Autoencoder, AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny};
use crate::{Error, Result};

/// Image sides must be multiples of this (diffusers' `check_inputs`).
pub const SIZE_MULTIPLE: usize = 8;

/// A Stable Diffusion 1.x / 2.x pipeline: a [`DiffusionPipeline`] with one CLIP text
/// encoder ([`PromptEncoder`]).
///
/// `U` is the denoiser: [`UNet2DConditionModel`] for real checkpoints (load with
/// [`StableDiffusion::load`]); any [`Denoiser`] works through [`StableDiffusion::load_with`]
/// or [`DiffusionPipeline::from_parts`].
pub type StableDiffusion<U = UNet2DConditionModel> = DiffusionPipeline<U, PromptEncoder>;

/// The models and scheduler config of a latent-diffusion pipeline folder and the calls that
/// run it: [`StableDiffusion`] (1.x / 2.x, `T` = [`PromptEncoder`]) or
/// [`StableDiffusionXL`](super::StableDiffusionXL) (`T` =
/// [`XlPromptEncoder`](super::XlPromptEncoder)). The denoiser and the text encoders are
/// [`Component`]s: resident, or loaded for each use ([`MemoryMode::Sequential`]).
#[derive(Debug)]
pub struct DiffusionPipeline<U = UNet2DConditionModel, T = PromptEncoder> {
    /// The denoiser (`unet/`).
    pub unet: Component<U>,
    /// The autoencoder (`vae/`).
    pub vae: AutoencoderKL,
    /// Tokenizers and text encoders (`tokenizer/`, `text_encoder/`, and SDXL's `_2`s).
    pub prompt_encoder: Component<T>,
    /// `scheduler/scheduler_config.json`, which every scheduler of a call is built from.
    pub scheduler_config: Value,
    /// A tiny autoencoder used for step previews, if attached.
    pub preview_decoder: Option<AutoencoderTiny>,
    /// The ControlNets every call is steered by (diffusers' `controlnet`, a list for
    /// `MultiControlNetModel`), one [`ControlInput`](super::ControlInput) each per call. They
    /// stay resident in every [`MemoryMode`] (load them in bf16 to halve their memory).
    pub controlnets: Vec<ControlNetModel>,
    /// The loaded IP-Adapters' image projections and image encoder (their key/value layers
    /// are in the UNet); see [`DiffusionPipeline::with_ip_adapter`].
    pub ip_adapter: Option<IpAdapter>,
    pub(crate) denoiser: DenoiserInfo,
    /// SDXL's micro-conditioning (`None` for SD 1.x / 2.x).
    pub(crate) micro: Option<MicroLayout>,
    pub(crate) device: Device,
}

/// Which diffusers pipeline a call mirrors (defaults and SDXL micro-conditioning differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    TextToImage,
    Img2Img,
    Inpaint,
}

/// SDXL's `add_time_ids` layout: `requires_aesthetics_score` of the pipeline (the refiner's
/// 5 ids with an aesthetic score instead of the 6 with the target size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MicroLayout {
    pub aesthetics: bool,
}

/// Optional per-call hooks: a progress callback and a noise source.
#[derive(Default)]
pub struct Hooks<'a> {
    progress: Option<&'a mut Progress<'a>>,
    noise: Option<&'a mut dyn NoiseSource<4>>,
}

impl<'a> Hooks<'a> {
    /// No callback; noise from a [`SeededNoise`] seeded with [`GenerateOptions::seed`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `progress` after every step; it may ask for a preview and may cancel.
    pub fn progress(mut self, progress: &'a mut Progress<'a>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Draws every random tensor of the call from `noise` instead (e.g. a
    /// [`QueuedNoise`](mm_schedulers::QueuedNoise) replaying another implementation's draws).
    pub fn noise(mut self, noise: &'a mut dyn NoiseSource<4>) -> Self {
        self.noise = Some(noise);
        self
    }
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("progress", &self.progress.is_some())
            .field("noise", &self.noise.is_some())
            .finish()
    }
}

/// The result of a generation call.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The images, `num_images_per_prompt` of them.
    pub images: Vec<RgbImage>,
    /// The same as a tensor `[batch, 3, H, W]` in `[0, 1]` (diffusers' `output_type="pt"`).
    pub pixels: Tensor<4>,
    /// The final latents `[batch, 4, h, w]` (diffusers' `output_type="latent"`).
    pub latents: Tensor<4>,
    /// Prompts that were cut to the tokenizer's length (diffusers only logs these).
    pub truncated: Vec<Truncation>,
}

/// diffusers' inpainting blend for 4-channel UNets: after every step the latents outside the
/// mask are replaced by the original image latents noised to the next timestep.
pub(crate) struct Blend {
    pub image_latents: Tensor<4>,
    /// 1 where the image is repainted, at latent resolution.
    pub mask: Tensor<4>,
    pub noise: Tensor<4>,
}

/// One prepared denoising run.
pub(crate) struct Denoise {
    pub scheduler: Box<dyn Scheduler<4>>,
    /// The timesteps to run (after img2img's strength cut).
    pub timesteps: Vec<f64>,
    /// The inference steps they make (diffusers' `num_inference_steps` after the cut).
    pub steps: usize,
    pub latents: Tensor<4>,
    /// The denoiser's conditioning, already `[uncond; cond]` with guidance.
    pub cond: Conditioning,
    pub truncated: Vec<Truncation>,
    pub guidance: Option<Guidance>,
    /// Channels appended to the model input after `scale_model_input` (inpainting UNets:
    /// mask and masked-image latents), already doubled for guidance.
    pub conditioning: Option<Tensor<4>>,
    pub blend: Option<Blend>,
    pub control: Option<ControlPlan>,
    /// SD3.5's skip-layer guidance (with classifier-free guidance only).
    pub skip: Option<SkipLayerGuidance>,
}

/// How a pipeline's models are loaded: the dtype their matrices are kept in, the
/// [`MemoryMode`], quantization and weight files in place of a folder's. Built with
/// [`LoadOptions::new`] and the chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Storage dtype of the weight matrices (`F32`, or `BF16` / `F16` for half the memory;
    /// see [`mm_core::precision`]: on the CPU the arithmetic stays f32). A VAE with
    /// `force_upcast` in its config (SDXL's) is kept in f32 whatever this says.
    pub dtype: DType,
    /// Which models stay in memory between uses.
    pub memory: MemoryMode,
    /// SD3: whether the T5 encoder is loaded (default true; without it its states are
    /// zeros, as diffusers' `text_encoder_3=None`).
    pub t5: bool,
    /// SD3 and FLUX: the ggml type the transformer's (and FLUX's T5's) linear weights are
    /// quantized to as they load (`Q8_0`: about 1.06 bytes per weight; `Q4_K`: 0.56), see
    /// [`mm_core::quant`]. `None` (default) keeps them in [`dtype`](Self::dtype).
    pub quantize: Option<GgmlType>,
    /// Weight files that replace a component's folder weights, by component name (FLUX:
    /// `transformer`, `text_encoder_2`; SD3: `transformer`): `.safetensors` or `.gguf` files, in diffusers'
    /// (transformers') names or the originals' (BFL's FLUX names, llama.cpp's T5 names). The
    /// configs still come from the folder.
    pub files: BTreeMap<String, PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadOptions {
    /// f32, every model resident.
    pub fn new() -> Self {
        Self {
            dtype: DType::F32,
            memory: MemoryMode::Resident,
            t5: true,
            quantize: None,
            files: BTreeMap::new(),
        }
    }

    /// SD3: leaves the T5 encoder out.
    pub fn without_t5(mut self) -> Self {
        self.t5 = false;
        self
    }

    /// Sets the storage dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets the memory mode.
    pub fn memory(mut self, memory: MemoryMode) -> Self {
        self.memory = memory;
        self
    }

    /// Quantizes the big models' linear weights as they load (see
    /// [`quantize`](Self::quantize)).
    pub fn quantize(mut self, ggml_type: GgmlType) -> Self {
        self.quantize = Some(ggml_type);
        self
    }

    /// Loads `component`'s weights from `path` instead of the folder's (see
    /// [`files`](Self::files)): `.component_file("transformer", "flux1-schnell-Q8_0.gguf")`.
    pub fn component_file(mut self, component: &str, path: impl Into<PathBuf>) -> Self {
        self.files.insert(component.to_string(), path.into());
        self
    }

    /// The weights of `component` as these options say: its file from
    /// [`component_file`](Self::component_file) if given, else `folder`'s; in
    /// [`dtype`](Self::dtype), quantized as [`quantize`](Self::quantize) says.
    pub(crate) fn weights(
        &self,
        component: &str,
        folder: impl FnOnce() -> Result<Weights>,
    ) -> Result<Weights> {
        let weights = match self.files.get(component) {
            Some(path) => Weights::open(path)?,
            None => folder()?,
        };
        Ok(self.stored(weights))
    }

    /// `weights` in [`dtype`](Self::dtype), quantized as [`quantize`](Self::quantize) says.
    pub(crate) fn stored(&self, weights: Weights) -> Weights {
        let weights = weights.with_dtype(self.dtype);
        match self.quantize {
            Some(ty) => weights.quantize(ty),
            None => weights,
        }
    }

    /// An error naming the first [`component_file`](Self::component_file) whose component
    /// is not among `supported` (a pipeline that would ignore it).
    pub(crate) fn check_files(&self, supported: &[&str]) -> Result<()> {
        match self.files.keys().find(|c| !supported.contains(&c.as_str())) {
            None => Ok(()),
            Some(component) => Err(Error::InvalidArgument {
                name: "files",
                reason: format!(
                    "a weights file for '{component}': this pipeline takes files for {}",
                    match supported {
                        [] => "no component".to_string(),
                        _ => supported.join(", "),
                    }
                ),
            }),
        }
    }
}

impl DiffusionPipeline<UNet2DConditionModel, PromptEncoder> {
    /// Loads a diffusers Stable Diffusion 1.x / 2.x pipeline folder (or a repo id in the local
    /// Hugging Face cache) with its `UNet2DConditionModel`; see
    /// [`load_with`](Self::load_with).
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_with_options(model, LoadOptions::new(), device)
    }

    /// [`load`](Self::load) keeping the weights' matrices in `dtype` (`BF16`/`F16` halve the
    /// memory of the models; see [`mm_core::precision`]: on the CPU the arithmetic stays f32).
    pub fn load_with_dtype(model: &str, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with_options(model, LoadOptions::new().dtype(dtype), device)
    }

    /// [`load`](Self::load) with a storage dtype and a memory mode.
    pub fn load_with_options(model: &str, options: LoadOptions, device: &Device) -> Result<Self> {
        let dir = PipelineDir::resolve(model)?;
        let parts = FolderParts::open(&dir, &options, device)?;
        let path = dir.path.clone();
        let (dtype, dev) = (options.dtype, device.clone());
        let prompt_encoder = Component::with_mode(options.memory, move || {
            PromptEncoder::load_with_dtype(&path, dtype, &dev)
        })?;
        Ok(parts.into_pipeline(prompt_encoder, None))
    }

    /// Loads a single-file checkpoint in the original CompVis/LDM layout
    /// (`v1-5-pruned-emaonly.safetensors`, `v2-1_768-ema-pruned.safetensors`, fine-tunes shared
    /// as one file; see [`crate::single_file`]) with the configs, tokenizer and scheduler of
    /// `configs`, a diffusers folder (or repo id) of the same model family. Only that folder's
    /// `model_index.json`, `*/config.json`, `tokenizer/` and `scheduler/` are read: its weights
    /// need not be there.
    pub fn from_single_file(
        file: impl AsRef<Path>,
        configs: &str,
        device: &Device,
    ) -> Result<Self> {
        Self::from_single_file_with_dtype(file, configs, DType::F32, device)
    }

    /// [`from_single_file`](Self::from_single_file) keeping the weights' matrices in `dtype`
    /// (see [`load_with_dtype`](Self::load_with_dtype)).
    pub fn from_single_file_with_dtype(
        file: impl AsRef<Path>,
        configs: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let dir = PipelineDir::resolve(configs)?;
        let scheduler_config = scheduler_config(&dir.component("scheduler")?)?;
        let unet_config: UNet2DConditionConfig = dir.component("unet")?.config()?;
        let vae_config: AutoencoderKLConfig = dir.component("vae")?.config()?;
        let text_file = dir.component("text_encoder")?.required("config.json")?;
        let text_config = ClipTextConfig::from_file(&text_file)?;
        let layout = LdmLayout {
            layers_per_block: single_layers_per_block(&unet_config)?,
            vae_up_blocks: vae_config.up_block_types.len(),
            text_layers: text_config.num_hidden_layers,
        };
        let parts = SingleFile::open(file)?.components(&layout)?;
        let unet =
            UNet2DConditionModel::from_weights(&unet_config, parts.unet.with_dtype(dtype), device)?;
        let vae = pipeline_vae(&vae_config, parts.vae, dtype, device)?;
        let text_encoder = ClipTextModel::from_weights(
            &text_config,
            parts.text_encoder.with_dtype(dtype),
            device,
        )?;
        let tokenizer = PromptEncoder::load_tokenizer(&dir.path)?;
        let text = PromptEncoder::new(tokenizer, text_encoder, device);
        Ok(Self::from_parts(unet, vae, text, scheduler_config, device))
    }
}

/// A pipeline's VAE from `weights`, its matrices in `dtype` — or in f32 when its config says
/// `force_upcast` (SDXL's VAE overflows in f16; diffusers upcasts it for the decode).
pub(crate) fn pipeline_vae(
    config: &AutoencoderKLConfig,
    weights: Weights,
    dtype: DType,
    device: &Device,
) -> Result<AutoencoderKL> {
    let dtype = if config.force_upcast {
        DType::F32
    } else {
        dtype
    };
    AutoencoderKL::from_weights(config, weights.with_dtype(dtype), device)
}

/// The `vae/` of a pipeline folder (see [`pipeline_vae`]).
pub(crate) fn folder_vae(
    dir: &ComponentDir,
    dtype: DType,
    device: &Device,
) -> Result<AutoencoderKL> {
    pipeline_vae(
        &dir.config()?,
        dir.weights(DIFFUSERS_WEIGHTS)?,
        dtype,
        device,
    )
}

/// `scheduler_config.json` of a pipeline's `scheduler/`, checked to name a scheduler this
/// crate has (so that loading fails, not the first call).
pub(crate) fn scheduler_config(dir: &ComponentDir) -> Result<Value> {
    let file = dir.required("scheduler_config.json")?;
    let text = std::fs::read_to_string(&file).map_err(|e| mm_core::Error::Io {
        path: file.clone(),
        source: e,
    })?;
    let config = mm_schedulers::config::parse_json(&text)?;
    mm_schedulers::scheduler_from_json::<4>(&config)?;
    Ok(config)
}

/// The parts of a diffusers folder every pipeline has: the scheduler config, the VAE and the
/// UNet (resident or on demand).
pub(crate) struct FolderParts {
    pub scheduler_config: Value,
    pub vae: AutoencoderKL,
    pub unet: Component<UNet2DConditionModel>,
    pub info: DenoiserInfo,
    pub device: Device,
}

impl FolderParts {
    pub(crate) fn open(dir: &PipelineDir, options: &LoadOptions, device: &Device) -> Result<Self> {
        options.check_files(&[])?;
        let unet_dir = dir.component("unet")?;
        let vae_dir = dir.component("vae")?;
        let scheduler_config = scheduler_config(&dir.component("scheduler")?)?;
        let vae = folder_vae(&vae_dir, options.dtype, device)?;
        let unet_config: UNet2DConditionConfig = unet_dir.config()?;
        unet_config.plan()?;
        let info = DenoiserInfo::of_unet(&unet_config);
        let path = unet_dir.path().to_string_lossy().into_owned();
        let (dtype, dev) = (options.dtype, device.clone());
        let unet = Component::with_mode(options.memory, move || {
            UNet2DConditionModel::load_with_dtype(&path, dtype, &dev)
        })?;
        Ok(Self {
            scheduler_config,
            vae,
            unet,
            info,
            device: device.clone(),
        })
    }

    pub(crate) fn into_pipeline<T>(
        self,
        prompt_encoder: Component<T>,
        micro: Option<MicroLayout>,
    ) -> DiffusionPipeline<UNet2DConditionModel, T> {
        DiffusionPipeline {
            unet: self.unet,
            vae: self.vae,
            prompt_encoder,
            scheduler_config: self.scheduler_config,
            preview_decoder: None,
            controlnets: Vec::new(),
            ip_adapter: None,
            denoiser: self.info,
            micro,
            device: self.device,
        }
    }
}

impl<U: Denoiser> DiffusionPipeline<U, PromptEncoder> {
    /// Loads a diffusers pipeline folder (or a repo id in the local Hugging Face cache):
    /// `model_index.json`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, with the
    /// denoiser of `unet/` loaded by `load_unet`. Weights may be the fp16 variants
    /// (`*.fp16.safetensors`). The VAE and text encoder keep their matrices in `dtype` (`F32`
    /// upcasts half-precision files; see [`load_with_dtype`](StableDiffusion::load_with_dtype)).
    /// A component missing from the index or the folder gives [`Error::MissingComponent`]
    /// naming it.
    pub fn load_with(
        model: &str,
        dtype: DType,
        device: &Device,
        load_unet: impl FnOnce(&Path, &Device) -> Result<U>,
    ) -> Result<Self> {
        let dir = PipelineDir::resolve(model)?;
        let components = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"];
        let mut dirs = Vec::with_capacity(components.len());
        for component in components {
            dirs.push(dir.component(component)?);
        }
        let scheduler_config = scheduler_config(&dirs[4])?;
        let vae = folder_vae(&dirs[1], dtype, device)?;
        let prompt_encoder = PromptEncoder::load_with_dtype(&dir.path, dtype, device)?;
        let unet = load_unet(dirs[0].path(), device)?;
        Ok(Self::from_parts(
            unet,
            vae,
            prompt_encoder,
            scheduler_config,
            device,
        ))
    }
}

impl<T: TextConditioner> DiffusionPipeline<UNet2DConditionModel, T> {
    /// Loads IP-Adapter files (the `h94/IP-Adapter` `.safetensors`, e.g.
    /// `models/ip-adapter_sd15.safetensors` or `sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors`;
    /// several are used together) into the UNet, with the image encoder that turns reference
    /// images into what they project (`models/image_encoder`; `None`: only precomputed
    /// [`GenerateOptions::ip_adapter_image_embeds`]) — diffusers' `load_ip_adapter`. Every
    /// adapter starts at scale 1 ([`set_ip_adapter_scale`](Self::set_ip_adapter_scale)).
    /// Each call then takes its reference images ([`GenerateOptions::ip_adapter_image`]).
    ///
    /// Errors: a UNet loaded on demand ([`MemoryMode::Sequential`]: the adapter's layers go
    /// into a resident UNet), and the typed errors of [`IpAdapter::load`] (a file for another
    /// base model names the file and the tensor).
    pub fn with_ip_adapter<P: AsRef<Path>>(
        mut self,
        files: &[P],
        image_encoder: Option<ImageEncoder>,
    ) -> Result<Self> {
        let device = self.device.clone();
        let adapter = IpAdapter::load(files, self.resident_unet()?, &device)?;
        self.ip_adapter = Some(match image_encoder {
            Some(encoder) => adapter.with_image_encoder(encoder),
            None => adapter,
        });
        Ok(self)
    }

    /// diffusers' `set_ip_adapter_scale`: one [`IpAdapterScale`] per loaded adapter — a
    /// number, or per-block scales (InstantStyle).
    pub fn set_ip_adapter_scale(&mut self, scales: &[IpAdapterScale]) -> Result<()> {
        self.resident_unet()?.set_ip_adapter_scale(scales)
    }

    fn resident_unet(&mut self) -> Result<&mut UNet2DConditionModel> {
        self.unet
            .resident_mut()
            .ok_or_else(|| Error::InvalidArgument {
                name: "memory",
                reason: "IP-Adapter layers go into a resident UNet: load the pipeline with \
                         MemoryMode::Resident"
                    .into(),
            })
    }
}

impl<U: Denoiser, T: TextConditioner> DiffusionPipeline<U, T> {
    /// A pipeline from resident parts (SDXL's micro-conditioning, for `T` =
    /// [`XlPromptEncoder`](super::XlPromptEncoder), without the refiner's aesthetic score; see
    /// [`StableDiffusionXL::requires_aesthetics_score`](super::StableDiffusionXL)).
    pub fn from_parts(
        unet: U,
        vae: AutoencoderKL,
        prompt_encoder: T,
        scheduler_config: Value,
        device: &Device,
    ) -> Self {
        Self {
            denoiser: DenoiserInfo::of(&unet),
            unet: Component::Resident(unet),
            vae,
            prompt_encoder: Component::Resident(prompt_encoder),
            scheduler_config,
            preview_decoder: None,
            controlnets: Vec::new(),
            ip_adapter: None,
            micro: (T::FAMILY == ModelFamily::StableDiffusionXl)
                .then_some(MicroLayout { aesthetics: false }),
            device: device.clone(),
        }
    }

    /// A pipeline of its parts as loaded (resident or on demand): no preview decoder, no
    /// ControlNet, no IP-Adapter.
    pub(crate) fn assembled(
        unet: Component<U>,
        vae: AutoencoderKL,
        prompt_encoder: Component<T>,
        scheduler_config: Value,
        denoiser: DenoiserInfo,
        device: &Device,
    ) -> Self {
        Self {
            unet,
            vae,
            prompt_encoder,
            scheduler_config,
            preview_decoder: None,
            controlnets: Vec::new(),
            ip_adapter: None,
            denoiser,
            micro: None,
            device: device.clone(),
        }
    }

    /// Uses `taesd` (an [`AutoencoderTiny`] for this model's latent space) for step previews
    /// instead of the linear approximation.
    pub fn with_preview_decoder(mut self, taesd: AutoencoderTiny) -> Self {
        self.preview_decoder = Some(taesd);
        self
    }

    /// Adds a ControlNet (diffusers' `controlnet=`; several make a `MultiControlNetModel`,
    /// whose residuals are summed). Each call then takes one
    /// [`ControlInput`](super::ControlInput) per ControlNet, in order
    /// ([`GenerateOptions::control`]), and uses the ControlNet pipelines' defaults.
    pub fn with_controlnet(mut self, controlnet: ControlNetModel) -> Self {
        self.controlnets.push(controlnet);
        self
    }

    /// The device the models live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Image pixels per latent on each side (8 for Stable Diffusion).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.downscale_factor()
    }

    /// Whether this is an SDXL pipeline (pooled embeddings and micro-conditioning).
    pub fn is_xl(&self) -> bool {
        self.micro.is_some()
    }

    /// The model family (whose diffusers defaults the calls use).
    pub fn family(&self) -> ModelFamily {
        match self.micro {
            Some(_) => ModelFamily::StableDiffusionXl,
            None => T::FAMILY,
        }
    }

    /// The guidance scale and strength a call uses when `opts` leaves them unset: diffusers'
    /// defaults of the matching pipeline class.
    /// With ControlNets, diffusers' ControlNet pipelines' (SDXL: guidance 5.0 and img2img
    /// strength 0.8 throughout).
    pub(crate) fn defaults(&self, call: Call) -> (f64, f64) {
        let control = !self.controlnets.is_empty();
        match (self.family(), call) {
            (ModelFamily::StableDiffusion3, _) => (7.0, SD3_IMG2IMG_STRENGTH),
            (ModelFamily::Flux, Call::TextToImage) => (3.5, FLUX_IMG2IMG_STRENGTH),
            (ModelFamily::Flux, _) => (7.0, FLUX_IMG2IMG_STRENGTH),
            (ModelFamily::StableDiffusion, Call::Inpaint) => (7.5, INPAINT_STRENGTH),
            (ModelFamily::StableDiffusion, _) => (7.5, IMG2IMG_STRENGTH),
            (ModelFamily::StableDiffusionXl, Call::Inpaint) => {
                (if control { 5.0 } else { 7.5 }, XL_INPAINT_STRENGTH)
            }
            (ModelFamily::StableDiffusionXl, Call::Img2Img) if control => (5.0, IMG2IMG_STRENGTH),
            (ModelFamily::StableDiffusionXl, _) => (5.0, XL_IMG2IMG_STRENGTH),
        }
    }

    /// The inference steps of a call: `opts.steps`, or diffusers' default of the family (28
    /// for SD3 and FLUX, 50 otherwise).
    pub(crate) fn steps(&self, opts: &GenerateOptions) -> usize {
        let default = match self.family() {
            ModelFamily::StableDiffusion3 | ModelFamily::Flux => 28,
            _ => 50,
        };
        opts.steps.unwrap_or(default)
    }

    /// The prepared ControlNet inputs of a call making `height × width` images, checked
    /// against the attached ControlNets (`None` without them).
    pub(crate) fn control_plan(
        &self,
        opts: &GenerateOptions,
        call: Call,
        size: (usize, usize),
    ) -> Result<Option<ControlPlan>> {
        // diffusers' ControlNet pipelines' `controlnet_conditioning_scale` defaults.
        let default_scale = match (call, self.is_xl()) {
            (Call::TextToImage, _) | (Call::Inpaint, true) => 1.0,
            (Call::Img2Img, _) => 0.8,
            (Call::Inpaint, false) => 0.5,
        };
        ControlPlan::new(ControlCall {
            inputs: &opts.control,
            controlnets: &self.controlnets,
            skip_connections: self.denoiser.skip_connections,
            size,
            batch: opts.num_images_per_prompt,
            guided: self.guided(opts, call),
            guess_mode: opts.guess_mode,
            default_scale,
            device: &self.device,
        })
    }

    /// The guidance scale of a call.
    pub(crate) fn guidance_scale(&self, opts: &GenerateOptions, call: Call) -> f64 {
        opts.guidance_scale.unwrap_or(self.defaults(call).0)
    }

    /// The strength of an img2img / inpainting call.
    pub(crate) fn strength(&self, opts: &GenerateOptions, call: Call) -> f64 {
        opts.strength.unwrap_or(self.defaults(call).1)
    }

    /// Whether a call runs classifier-free guidance (diffusers: `guidance_scale > 1`, unless
    /// the denoiser embeds the guidance scale, as LCM-distilled UNets do).
    pub(crate) fn guided(&self, opts: &GenerateOptions, call: Call) -> bool {
        match self.family() {
            // FLUX: `true_cfg_scale > 1` with a negative prompt (the guidance scale is embedded).
            ModelFamily::Flux => {
                opts.true_cfg_scale.unwrap_or(1.0) > 1.0 && opts.negative_prompt.is_some()
            }
            _ => {
                self.guidance_scale(opts, call) > 1.0 && self.denoiser.guidance_embedding.is_none()
            }
        }
    }

    /// The scheduler a call with `opts` uses: `opts.scheduler` (a diffusers class name) or
    /// the folder's, built from the folder's config (with `eta` set when non-zero and
    /// `opts.scheduler_overrides` applied), with the call's steps set — for images of the
    /// default size (`sample_size` × the VAE's factor) where the schedule depends on the size
    /// (flow matching with `use_dynamic_shifting`, FLUX); see
    /// [`scheduler_for_size`](Self::scheduler_for_size).
    pub fn scheduler(&self, opts: &GenerateOptions) -> Result<Box<dyn Scheduler<4>>> {
        let side = self.denoiser.sample_size * self.vae_scale_factor();
        self.scheduler_for_size(opts, Some((side, side)))
    }

    /// [`scheduler`](Self::scheduler) for images of `(height, width)`: with
    /// `use_dynamic_shifting` (and always for FLUX, as its pipeline passes it), the timesteps
    /// are shifted by the `mu` of the image's latent token count (diffusers'
    /// `calculate_shift`); FLUX's sigmas are `linspace(1, 1 / steps, steps)`.
    pub fn scheduler_for_size(
        &self,
        opts: &GenerateOptions,
        size: Option<(usize, usize)>,
    ) -> Result<Box<dyn Scheduler<4>>> {
        let steps = self.steps(opts);
        if steps == 0 {
            return Err(Error::InvalidArgument {
                name: "num_inference_steps",
                reason: "must be at least 1".into(),
            });
        }
        let mut config = self.scheduler_config.clone();
        if let Some(map) = config.as_object_mut() {
            if opts.eta != 0.0 {
                map.insert("eta".into(), opts.eta.into());
            }
            for (key, value) in &opts.scheduler_overrides {
                map.insert(key.clone(), value.clone());
            }
        }
        let mut scheduler = match &opts.scheduler {
            Some(name) => mm_schedulers::scheduler_from_config::<4>(name, &config)?,
            None => mm_schedulers::scheduler_from_json::<4>(&config)?,
        };
        let mut request = TimestepRequest::steps(steps);
        let dynamic = config.get("use_dynamic_shifting").and_then(Value::as_bool);
        let flux = self.family() == ModelFamily::Flux;
        if let (true, Some((height, width))) = (dynamic == Some(true) || flux, size) {
            let flow: FlowMatchEulerConfig = serde_json::from_value(config.clone())
                .map_err(|e| Error::Config(format!("scheduler config: {e}")))?;
            let patch = self.vae_scale_factor() * self.denoiser.patch_size;
            request.mu = Some(flow.mu_for_seq_len((height / patch) * (width / patch)));
        }
        if flux {
            // diffusers' FluxPipeline: `sigmas = np.linspace(1, 1 / n, n)`.
            let n = steps as f64;
            let sigmas = (0..steps).map(|i| 1.0 + (1.0 / n - 1.0) * i as f64 / (n - 1.0).max(1.0));
            request.sigmas = Some(sigmas.collect());
        }
        scheduler.set_timesteps_with(&request)?;
        Ok(scheduler)
    }

    /// The prompt embeddings of a text-to-image call with `opts` (see
    /// [`TextConditioner::encode_prompts`]); an on-demand text encoder is loaded for it and
    /// dropped after.
    pub fn encode_prompt(&self, opts: &GenerateOptions) -> Result<PromptEmbeds> {
        let _compute = mm_core::precision::Autocast::enter(opts.compute_dtype);
        self.encode_prompt_for(opts, Call::TextToImage)
    }

    pub(crate) fn encode_prompt_for(
        &self,
        opts: &GenerateOptions,
        call: Call,
    ) -> Result<PromptEmbeds> {
        if opts.num_images_per_prompt == 0 {
            return Err(Error::InvalidArgument {
                name: "num_images_per_prompt",
                reason: "must be at least 1".into(),
            });
        }
        self.prompt_encoder
            .get()?
            .encode_prompts(opts, self.guided(opts, call))
    }

    /// The denoiser's conditioning for a call making `height × width` images: the text
    /// embeddings and, for SDXL, the pooled embeddings and micro-conditioning time ids.
    pub(crate) fn conditioning(
        &self,
        embeds: &PromptEmbeds,
        opts: &GenerateOptions,
        call: Call,
        (height, width): (usize, usize),
    ) -> Result<Conditioning> {
        let added = match self.micro {
            Some(layout) => Some(super::xl::added_cond(
                layout,
                call,
                opts,
                embeds,
                (height, width),
                &self.device,
            )?),
            None => None,
        };
        // LCM-distilled UNets: the embedding of `guidance_scale - 1` for every sample.
        let timestep_cond = self.denoiser.guidance_embedding.map(|dim| {
            let w = self.guidance_scale(opts, call) - 1.0;
            let batch = embeds.cond.dims()[0];
            crate::unet::guidance_scale_embedding(&vec![w; batch], dim, &self.device)
        });
        Ok(Conditioning {
            context: embeds.context(),
            added,
            timestep_cond,
            image_tokens: self.image_tokens(opts, call)?,
            control: None,
            pooled: matches!(
                self.family(),
                ModelFamily::StableDiffusion3 | ModelFamily::Flux
            )
            .then(|| embeds.pooled_context())
            .flatten(),
            guidance: (self.denoiser.embeds_guidance).then(|| self.guidance_scale(opts, call)),
        })
    }

    /// The IP-Adapters' image tokens of a call (`None` without adapters): its reference
    /// images encoded (or its precomputed embeds) and projected, negative first under
    /// guidance, as diffusers' `prepare_ip_adapter_image_embeds`.
    fn image_tokens(&self, opts: &GenerateOptions, call: Call) -> Result<Option<Vec<Tensor<3>>>> {
        let given = !opts.ip_adapter_image.is_empty() || opts.ip_adapter_image_embeds.is_some();
        let adapter = match (&self.ip_adapter, given) {
            (None, false) => return Ok(None),
            (Some(adapter), true) => adapter,
            (None, true) => {
                return Err(Error::InvalidArgument {
                    name: "ip_adapter_image",
                    reason: "no IP-Adapter is loaded (see with_ip_adapter)".into(),
                });
            }
            (Some(_), false) => {
                return Err(Error::MissingInput {
                    what: "ip_adapter_image",
                    reason: "an IP-Adapter is loaded: give its reference image(s) or embeds".into(),
                });
            }
        };
        let embeds = match &opts.ip_adapter_image_embeds {
            Some(embeds) => embeds.clone(),
            None => adapter.encode_images(&opts.ip_adapter_image)?,
        };
        let tokens =
            adapter.image_tokens(&embeds, opts.num_images_per_prompt, self.guided(opts, call))?;
        Ok(Some(tokens))
    }

    /// Checks the options every call shares.
    pub(crate) fn check_options(&self, opts: &GenerateOptions, call: Call) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidArgument { name, reason });
        let scale = self.guidance_scale(opts, call);
        if !scale.is_finite() {
            return bad("guidance_scale", format!("{scale} is not finite"));
        }
        let family = self.family();
        if let Some(name) = opts.unsupported_setting(family) {
            return bad(name, format!("is not a setting of {family:?} pipelines"));
        }
        if let Some(slg) = &opts.skip_layer_guidance {
            if !(slg.scale.is_finite() && slg.start.is_finite() && slg.stop.is_finite()) {
                return bad("skip_layer_guidance_scale", "must be finite".into());
            }
            if slg.layers.is_empty() {
                return bad("skip_guidance_layers", "name at least one block".into());
            }
        }
        super::xl::check_denoising_range(opts, call)?;
        if !(0.0..=1.0).contains(&opts.guidance_rescale) {
            return bad(
                "guidance_rescale",
                format!("must be in [0, 1], got {}", opts.guidance_rescale),
            );
        }
        if let Some(strength) = opts.strength
            && !(0.0..=1.0).contains(&strength)
        {
            return bad("strength", format!("must be in [0, 1], got {strength}"));
        }
        if opts.num_images_per_prompt == 0 {
            return bad("num_images_per_prompt", "must be at least 1".into());
        }
        Ok(())
    }

    /// Guidance of a call: CFG (with rescale) when `guidance_scale > 1`.
    pub(crate) fn guidance(&self, opts: &GenerateOptions, call: Call) -> Option<Guidance> {
        let scale = match self.family() {
            ModelFamily::Flux => opts.true_cfg_scale.unwrap_or(1.0),
            _ => self.guidance_scale(opts, call),
        };
        self.guided(opts, call)
            .then(|| Guidance::cfg(scale).with_rescale(opts.guidance_rescale))
    }

    /// The latent shape of `batch` images of `height × width`, which must be multiples of
    /// [`SIZE_MULTIPLE`] and of the VAE's factor, and whose generation (the UNet's
    /// activations, the VAE decode with its options, the images) must fit in
    /// [`mm_core::limits::memory_limit`] ([`mm_core::Error::TooLarge`] otherwise), checked
    /// before any step runs.
    pub(crate) fn latent_shape(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<[usize; 4]> {
        // diffusers: multiples of 8 (SD, SDXL), of the VAE factor × the patch (SD3).
        let factor = match self.denoiser.patch_size {
            1 => SIZE_MULTIPLE.max(self.vae_scale_factor()),
            patch => self.vae_scale_factor() * patch,
        };
        if height == 0
            || width == 0
            || !height.is_multiple_of(factor)
            || !width.is_multiple_of(factor)
        {
            return Err(Error::NotMultiple {
                height,
                width,
                factor,
            });
        }
        let f = self.vae_scale_factor();
        let shape = [batch, self.vae.latent_channels(), height / f, width / f];
        // Before anything is allocated: the UNet's activations (a guided batch is doubled)
        // and the decoded images must fit in the memory limit.
        let guided_batch = batch.saturating_mul(2) as u64;
        let pixels = (shape[2] as u64).saturating_mul(shape[3] as u64);
        let needed = (self.denoiser.bytes_per_pixel)
            .saturating_mul(guided_batch)
            .saturating_mul(pixels)
            .saturating_add(tensor_bytes(&[batch, 3, height, width], 4));
        check_memory(
            format_args!("generating {batch} image(s) of {width}x{height}"),
            needed,
        )?;
        // And the decode, as the VAE's options (tiling, slicing) will run it.
        self.vae.check_decode(shape)?;
        Ok(shape)
    }

    /// `opts.latents` checked against the expected shape, or a draw from `noise`.
    pub(crate) fn initial_noise(
        &self,
        opts: &GenerateOptions,
        shape: [usize; 4],
        noise: &mut dyn NoiseSource<4>,
    ) -> Result<Tensor<4>> {
        match &opts.latents {
            Some(latents) => {
                if latents.dims() != shape {
                    return Err(Error::Shape {
                        what: "latents",
                        expected: format!("{shape:?}"),
                        got: latents.dims().to_vec(),
                    });
                }
                check_finite("latents", latents)?;
                Ok(latents.clone())
            }
            None => Ok(noise.noise(shape, &self.device)?),
        }
    }

    /// Encodes images in `[-1, 1]` into diffusion-scale latents as diffusers'
    /// `retrieve_latents` does with a generator: a sample of the posterior (its noise drawn
    /// from `noise`), times the scaling factor; tiled to `batch` entries.
    pub(crate) fn encode_image(
        &self,
        pixels: Tensor<4>,
        batch: usize,
        noise: &mut dyn NoiseSource<4>,
    ) -> Result<Tensor<4>> {
        let posterior = self.vae.encode(pixels)?;
        let eps = noise.noise(posterior.mean.dims(), &self.device)?;
        let latents = self.vae.scale_for_diffusion(posterior.sample(eps)?);
        repeat_batch("image", latents, batch)
    }

    /// Runs the loop of `job` with the noise and progress hooks.
    pub(crate) fn denoise(
        &self,
        job: Denoise,
        noise: &mut dyn NoiseSource<4>,
        progress: &mut Option<&mut Progress<'_>>,
    ) -> Result<Tensor<4>> {
        let Denoise {
            mut scheduler,
            timesteps,
            steps,
            mut latents,
            cond,
            truncated: _,
            guidance,
            conditioning,
            blend,
            control,
            skip,
        } = job;
        // An on-demand denoiser is loaded for the loop and dropped after it.
        let unet = self.unet.get()?;
        let evaluations = timesteps.len();
        let mut counter = StepCounter::new(evaluations, steps, scheduler.order());
        let previewer = match &self.preview_decoder {
            Some(taesd) => Previewer::Tiny(taesd),
            None => Previewer::Linear(self.family()),
        };
        for (i, &t) in timesteps.iter().enumerate() {
            let input = match guidance {
                Some(_) => Tensor::cat(vec![latents.clone(), latents.clone()], 0),
                None => latents.clone(),
            };
            let mut input = scheduler.scale_model_input(input, t)?;
            let residuals = match &control {
                Some(plan) => plan.residuals(
                    &self.controlnets,
                    (i, evaluations),
                    &input,
                    || Ok(scheduler.scale_model_input(latents.clone(), t)?),
                    t,
                    &cond,
                )?,
                None => None,
            };
            if let Some(extra) = &conditioning {
                input = Tensor::cat(vec![input, extra.clone()], 1);
            }
            let pred = match residuals {
                Some(residuals) => {
                    let step_cond = Conditioning {
                        control: Some(residuals),
                        ..cond.clone()
                    };
                    unet.predict(input, t, &step_cond)?
                }
                None => unet.predict(input, t, &cond)?,
            };
            let pred = match (&guidance, &skip) {
                (Some(g), Some(slg)) if slg.active(i, steps) => {
                    // diffusers: `noise_pred + (noise_pred_text - noise_pred_skip) · scale`,
                    // the skipped branch run on the prompt's half alone.
                    let half = pred.dims()[0] / 2;
                    let text = pred.clone().narrow(0, half, half);
                    let guided = g.combine_batched(pred, i, evaluations)?;
                    let sample = scheduler.scale_model_input(latents.clone(), t)?;
                    let skipped =
                        unet.predict_skipping(sample, t, &cond.conditional_half(), &slg.layers)?;
                    guided + (text - skipped) * slg.scale
                }
                (Some(g), _) => g.combine_batched(pred, i, evaluations)?,
                (None, _) => pred,
            };
            latents = scheduler.step(pred, t, latents, noise)?.prev_sample;
            if let Some(b) = &blend {
                let original = match timesteps.get(i + 1) {
                    Some(&next) => {
                        scheduler.add_noise(b.image_latents.clone(), b.noise.clone(), next)?
                    }
                    None => b.image_latents.clone(),
                };
                latents = original * (b.mask.clone().neg() + 1.0) + b.mask.clone() * latents;
            }
            check_finite("latents", &latents)?;
            let step = counter.after_evaluation(i);
            if let Some(callback) = progress.as_deref_mut() {
                let info = StepInfo {
                    step,
                    total: steps,
                    evaluation: i + 1,
                    evaluations,
                    timestep: t,
                    latents: &latents,
                    previewer,
                };
                if callback(&info) == Flow::Cancel {
                    return Err(Error::Cancelled { step, total: steps });
                }
            }
        }
        Ok(latents)
    }

    /// Prepares the common part of a run and executes it: `prepare` gets the noise source and
    /// returns the job; the result is decoded.
    pub(crate) fn run(
        &self,
        opts: &GenerateOptions,
        hooks: Hooks<'_>,
        prepare: impl FnOnce(&mut dyn NoiseSource<4>) -> Result<Denoise>,
    ) -> Result<Generated> {
        let Hooks {
            mut progress,
            noise,
        } = hooks;
        let mut seeded = SeededNoise::new(opts.seed);
        let noise: &mut dyn NoiseSource<4> = match noise {
            Some(n) => n,
            None => &mut seeded,
        };
        let job = prepare(noise)?;
        let truncated = job.truncated.clone();
        let latents = self.denoise(job, noise, &mut progress)?;
        self.decode(latents, truncated)
    }

    /// Decodes final latents into images (diffusers' `postprocess`: `(x / 2 + 0.5)` clamped to
    /// `[0, 1]`); a non-finite decoded value is an [`Error::NonFinite`], never a black image.
    pub(crate) fn decode(
        &self,
        latents: Tensor<4>,
        truncated: Vec<Truncation>,
    ) -> Result<Generated> {
        let decoded = self
            .vae
            .decode(self.vae.unscale_from_diffusion(latents.clone()))?;
        match check_finite("decoded image", &decoded) {
            // A half-precision decode that overflowed: say why and what to do.
            Err(Error::NonFinite { count, .. })
                if mm_core::precision::module_compute_dtype(&self.vae.decoder) == DType::F16 =>
            {
                return Err(Error::NonFinite {
                    what: "decoded image (the VAE ran in float16 and overflowed, as SDXL's \
                           does: keep it in f32 — its config's `force_upcast` — or use an \
                           fp16-safe VAE such as madebyollin/sdxl-vae-fp16-fix)",
                    count,
                });
            }
            result => result?,
        }
        let pixels = (decoded / 2.0 + 0.5).clamp(0.0, 1.0);
        let images = mm_core::image::tensor_to_images(pixels.clone())?;
        Ok(Generated {
            images,
            pixels,
            latents,
            truncated,
        })
    }
}

/// Tiles a batch of `x` to `batch` entries (diffusers' `torch.cat([x] * k)` / `x.repeat`).
pub(crate) fn repeat_batch(what: &'static str, x: Tensor<4>, batch: usize) -> Result<Tensor<4>> {
    let n = x.dims()[0];
    if n == batch {
        return Ok(x);
    }
    if n == 0 || !batch.is_multiple_of(n) {
        return Err(Error::InvalidArgument {
            name: what,
            reason: format!(
                "{n} inputs cannot be repeated to the batch of {batch} (num_images_per_prompt)"
            ),
        });
    }
    Ok(x.repeat_dim(0, batch / n))
}

/// Checks a `[batch, 3, H, W]` image in `[0, 1]` and maps it to `[-1, 1]` (diffusers'
/// `VaeImageProcessor.preprocess` for tensors in `[0, 1]`).
pub(crate) fn preprocess_image(image: &Tensor<4>) -> Result<Tensor<4>> {
    crate::check::check_channels("image", image, 3)?;
    check_finite("image", image)?;
    Ok(image.clone() * 2.0 - 1.0)
}
