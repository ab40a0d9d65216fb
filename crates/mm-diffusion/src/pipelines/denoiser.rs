//! [`Denoiser`]: what the sampling loop needs of a diffusion model.

use burn::tensor::Tensor;

use crate::Result;
use crate::controlnet::ControlNetOutput;
use crate::unet::{AddedCond, UNet2DConditionConfig, UNet2DConditionModel, UNetInput};

/// What a denoiser is conditioned on at a step: the text embeddings and, for SDXL, the added
/// conditions (pooled text embeddings and micro-conditioning time ids); IP-Adapter image
/// tokens; and the step's ControlNet residuals.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `encoder_hidden_states` `[batch, tokens, dim]`.
    pub context: Tensor<3>,
    /// SDXL's `added_cond_kwargs` (`text_embeds` `[batch, dim]`, `time_ids` `[batch, n]`).
    pub added: Option<AddedCond>,
    /// `timestep_cond` of LCM-distilled denoisers: the guidance scale's embedding
    /// `[batch, dim]`.
    pub timestep_cond: Option<Tensor<2>>,
    /// IP-Adapter image tokens, one `[batch, tokens, dim]` set per adapter.
    pub image_tokens: Option<Vec<Tensor<3>>>,
    /// The ControlNets' residuals of this step (set by the loop; see
    /// [`Denoiser::skip_connections`]).
    pub control: Option<ControlNetOutput>,
    /// SD3's and FLUX's pooled text embeddings (`pooled_projections`, `[batch, dim]`).
    pub pooled: Option<Tensor<2>>,
    /// The guidance scale a guidance-distilled denoiser embeds (FLUX.1-dev's `guidance`).
    pub guidance: Option<f64>,
}

impl Conditioning {
    /// The conditioning of the prompt's branch alone: the second half of every batched
    /// input of a `[uncond; cond]` conditioning (diffusers' `.chunk(2)[1]`), no residuals.
    pub fn conditional_half(&self) -> Self {
        Self {
            context: conditional_half(&self.context),
            added: self.added.as_ref().map(|a| AddedCond {
                text_embeds: conditional_half(&a.text_embeds),
                time_ids: conditional_half(&a.time_ids),
            }),
            timestep_cond: self.timestep_cond.as_ref().map(conditional_half),
            image_tokens: (self.image_tokens.as_ref())
                .map(|tokens| tokens.iter().map(conditional_half).collect()),
            control: None,
            pooled: self.pooled.as_ref().map(conditional_half),
            guidance: self.guidance,
        }
    }
}

/// The second half of a `[uncond; cond]` batch.
fn conditional_half<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    let half = t.dims()[0] / 2;
    t.clone().narrow(0, half, half)
}

/// A noise-prediction network conditioned on text, as the Stable Diffusion pipelines call it
/// (`UNet2DConditionModel`, or any model with the same contract).
pub trait Denoiser {
    /// Channels of the sample it takes: the latent channels (4), or 9 for an inpainting
    /// model (latents, mask, masked-image latents).
    fn in_channels(&self) -> usize;

    /// The latent side length it was trained at (`sample_size` of the UNet config), which
    /// sets the default image size (× the VAE's downscale factor).
    fn sample_size(&self) -> usize;

    /// The model output for `sample` `[batch, in_channels, h, w]` at `timestep` (the same for
    /// the whole batch) with the conditioning `cond` (of the same batch): the noise, `v` or
    /// the clean sample, whichever the scheduler's `prediction_type` says.
    fn predict(&self, sample: Tensor<4>, timestep: f64, cond: &Conditioning) -> Result<Tensor<4>>;

    /// An estimate (a lower bound) of the activation bytes one [`predict`](Self::predict)
    /// call on a `[batch, in_channels, height, width]` sample needs, which the pipelines check
    /// against [`mm_core::limits::memory_limit`] before they start. `0` (the default): unknown.
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        let _ = (batch, height, width);
        0
    }

    /// The width of the guidance-scale embedding it takes as `timestep_cond` instead of
    /// running an unconditional branch (LCM-distilled UNets' `time_cond_proj_dim`); `None`
    /// (the default): classifier-free guidance as usual.
    fn guidance_embedding_dim(&self) -> Option<usize> {
        None
    }

    /// How many ControlNet residuals it adds to its skip connections
    /// ([`Conditioning::control`]); `None` (the default): it takes none, and a pipeline with
    /// ControlNets refuses to run it.
    fn skip_connections(&self) -> Option<usize> {
        None
    }

    /// Whether it embeds the guidance scale itself ([`Conditioning::guidance`], FLUX.1-dev)
    /// instead of running classifier-free guidance's unconditional branch (default false).
    fn embeds_guidance(&self) -> bool {
        false
    }

    /// The side of the square patches it cuts the latents into (1 for a UNet; SD3's
    /// transformer: 2): image sides must be multiples of it times the VAE's factor.
    fn patch_size(&self) -> usize {
        1
    }

    /// [`predict`](Self::predict) with the blocks `layers` skipped (skip-layer guidance);
    /// denoisers without skippable blocks (the default) refuse.
    fn predict_skipping(
        &self,
        sample: Tensor<4>,
        timestep: f64,
        cond: &Conditioning,
        layers: &[usize],
    ) -> Result<Tensor<4>> {
        let _ = (sample, timestep, cond, layers);
        Err(crate::Error::InvalidArgument {
            name: "skip_guidance_layers",
            reason: "skip-layer guidance needs a transformer denoiser (SD3 / SD3.5)".into(),
        })
    }
}

/// What a pipeline needs to know of its denoiser without loading it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DenoiserInfo {
    pub in_channels: usize,
    pub sample_size: usize,
    /// [`Denoiser::activation_bytes`] of one sample and one latent pixel.
    pub bytes_per_pixel: u64,
    /// [`Denoiser::guidance_embedding_dim`].
    pub guidance_embedding: Option<usize>,
    /// [`Denoiser::skip_connections`].
    pub skip_connections: Option<usize>,
    /// [`Denoiser::patch_size`].
    pub patch_size: usize,
    /// [`Denoiser::embeds_guidance`].
    pub embeds_guidance: bool,
}

impl DenoiserInfo {
    /// `bytes_per_pixel` for `batch` samples of `height × width` latent pixels.
    pub(crate) fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        (self.bytes_per_pixel)
            .saturating_mul(batch as u64)
            .saturating_mul(height as u64)
            .saturating_mul(width as u64)
    }

    pub(crate) fn of(denoiser: &impl Denoiser) -> Self {
        Self {
            in_channels: denoiser.in_channels(),
            sample_size: denoiser.sample_size(),
            bytes_per_pixel: denoiser.activation_bytes(1, 1, 1),
            guidance_embedding: denoiser.guidance_embedding_dim(),
            skip_connections: denoiser.skip_connections(),
            patch_size: denoiser.patch_size(),
            embeds_guidance: denoiser.embeds_guidance(),
        }
    }

    /// The [`Denoiser`] answers of a `UNet2DConditionModel` built from `config`.
    pub(crate) fn of_unet(config: &UNet2DConditionConfig) -> Self {
        let size = &config.sample_size;
        let sample_size = size
            .as_u64()
            .or_else(|| size.get(0).and_then(serde_json::Value::as_u64))
            .map_or(64, |s| s as usize);
        // About 16 f32 feature maps of the first level's width at the latent resolution: the
        // skip connections the down path keeps (≈ 5 such maps for SD's channel ladder) and
        // the transformer's feed-forward (8 maps of GEGLU) with its input and output.
        let channels = config.block_out_channels.first().copied().unwrap_or(0);
        Self {
            in_channels: config.in_channels,
            sample_size,
            bytes_per_pixel: mm_core::limits::tensor_bytes(&[16, channels], 4),
            guidance_embedding: config.time_cond_proj_dim,
            skip_connections: config.plan().ok().map(|plan| plan.skip_connections()),
            patch_size: 1,
            embeds_guidance: false,
        }
    }
}

impl Denoiser for UNet2DConditionModel {
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }

    /// The config's `sample_size` (the first entry of a `[height, width]` pair; 64, Stable
    /// Diffusion 1.x's, when absent).
    fn sample_size(&self) -> usize {
        DenoiserInfo::of_unet(self.config()).sample_size
    }

    fn predict(&self, sample: Tensor<4>, timestep: f64, cond: &Conditioning) -> Result<Tensor<4>> {
        let t = Tensor::<1>::from_floats([timestep as f32], &sample.device());
        let mut input = UNetInput::new(sample, t, cond.context.clone());
        if let Some(added) = &cond.added {
            input = input.with_added_cond(added.text_embeds.clone(), added.time_ids.clone());
        }
        if let Some(c) = &cond.timestep_cond {
            input = input.with_timestep_cond(c.clone());
        }
        if let Some(tokens) = &cond.image_tokens {
            input = input.with_image_tokens(tokens.clone());
        }
        if let Some(control) = &cond.control {
            input = input.with_control_residuals(control.down.clone(), control.mid.clone());
        }
        self.forward_with(input)
    }

    fn skip_connections(&self) -> Option<usize> {
        Some(self.num_skip_connections())
    }

    fn guidance_embedding_dim(&self) -> Option<usize> {
        self.config().time_cond_proj_dim
    }

    /// About 16 f32 feature maps of the first level's width per latent pixel (see
    /// the pipelines' memory check).
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        DenoiserInfo::of_unet(self.config()).activation_bytes(batch, height, width)
    }
}
