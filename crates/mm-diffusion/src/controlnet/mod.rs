//! `ControlNetModel`: a trainable copy of a UNet's down path that reads a control image (edges,
//! depth, pose, …) and returns residuals for the UNet's skip connections and middle block
//! (diffusers' `ControlNetModel`, loading `controlnet/config.json` and
//! `diffusion_pytorch_model[.fp16].safetensors`, or an original single-file
//! `control_v11p_sd15_canny`-style checkpoint).
//!
//! The down path (`conv_in`, time and SDXL added embeddings, down blocks, middle block) is
//! the UNet's own code, built from the same config fields; the ControlNet adds the
//! [`ControlNetConditioningEmbedding`] of the control image (summed with `conv_in`'s output)
//! and one zero-initialised 1×1 convolution per skip connection
//! (`controlnet_down_blocks`) and for the middle block (`controlnet_mid_block`).
//!
//! ```no_run
//! # fn main() -> mm_diffusion::Result<()> {
//! use burn::tensor::Tensor;
//! use mm_diffusion::controlnet::ControlNetModel;
//! use mm_diffusion::unet::{UNet2DConditionModel, UNetInput};
//! let device = mm_core::device::cpu();
//! let controlnet = ControlNetModel::load("lllyasviel/sd-controlnet-canny", &device)?;
//! let unet = UNet2DConditionModel::load("stable-diffusion-v1-5/unet", &device)?;
//! let latents = Tensor::<4>::zeros([1, 4, 64, 64], &device);
//! let text = Tensor::<3>::zeros([1, 77, 768], &device);
//! let t = Tensor::<1>::from_floats([500.0], &device);
//! let edges = Tensor::<4>::zeros([1, 3, 512, 512], &device); // in [0, 1]
//! let input = UNetInput::new(latents, t, text);
//! let control = controlnet.forward(input.clone(), edges, 1.0, false)?;
//! let noise = unet.forward_with(input.with_control_residuals(control.down, control.mid))?;
//! # let _ = noise;
//! # Ok(()) }
//! ```

mod config;
mod embedding;

pub use config::ControlNetConfig;
pub use embedding::ControlNetConditioningEmbedding;

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor};
use mm_core::precision::{compute_dtype_of, conv2d};
use mm_core::weights::Weights;

use crate::check::check_finite;
use crate::loading::component;
use crate::unet::transformer::CrossAttnContext;
use crate::unet::{
    BlockPlan, DownBlock2D, Embeddings, Encoder, TimestepEmbedding, UNet2DConditionConfig,
    UNetInput, UNetMidBlock2DCrossAttn, down_pass, validate_conditions,
};
use crate::vae::layers::conv;
use crate::{Error, Result};

/// What a ControlNet returns: residuals for the UNet's skip connections (`conv_in`'s output,
/// every down-block ResNet, every downsampler, in order) and its middle block, already
/// multiplied by the conditioning scale (see [`UNetInput::with_control_residuals`]).
#[derive(Debug, Clone)]
pub struct ControlNetOutput {
    /// `down_block_res_samples`.
    pub down: Vec<Tensor<4>>,
    /// `mid_block_res_sample`.
    pub mid: Tensor<4>,
}

impl std::ops::Add for ControlNetOutput {
    type Output = Self;

    /// The sum of two ControlNets' residuals (diffusers' `MultiControlNetModel`).
    fn add(self, other: Self) -> Self {
        Self {
            down: (self.down.into_iter().zip(other.down))
                .map(|(a, b)| a + b)
                .collect(),
            mid: self.mid + other.mid,
        }
    }
}

/// diffusers' `ControlNetModel` (SD 1.x / 2.x and SDXL variants).
#[derive(Module, Debug)]
pub struct ControlNetModel {
    /// Input convolution of the latents.
    pub conv_in: Conv2d,
    /// MLP on the sinusoidal timestep embedding.
    pub time_embedding: TimestepEmbedding,
    /// `class_embed_type: "projection"`.
    pub class_embedding: Option<TimestepEmbedding>,
    /// SDXL's `addition_embed_type: "text_time"`.
    pub add_embedding: Option<TimestepEmbedding>,
    /// The control image's embedding.
    pub controlnet_cond_embedding: ControlNetConditioningEmbedding,
    /// The UNet's down blocks.
    pub down_blocks: Vec<DownBlock2D>,
    /// One 1×1 convolution per skip connection.
    pub controlnet_down_blocks: Vec<Conv2d>,
    /// The UNet's middle block.
    pub mid_block: Option<UNetMidBlock2DCrossAttn>,
    /// 1×1 convolution of the middle block's output.
    pub controlnet_mid_block: Conv2d,
    #[module(skip)]
    config: ControlNetConfig,
    #[module(skip)]
    encoder_config: UNet2DConditionConfig,
    #[module(skip)]
    plan: BlockPlan,
    #[module(skip)]
    attention_chunk: Option<usize>,
}

impl ControlNetModel {
    /// A randomly initialised model; fails with [`Error::Config`] on a config it cannot build.
    pub fn new(config: &ControlNetConfig, device: &Device) -> Result<Self> {
        let plan = config.plan()?;
        let encoder_config = config.encoder_config();
        let encoder = Encoder::new(&encoder_config, &plan, device);
        let ch = &encoder_config.block_out_channels;
        let zero_conv = |c: usize| conv(c, c, 1, true, device);
        // One per skip connection: conv_in's, each ResNet's, each downsampler's.
        let controlnet_down_blocks = std::iter::once(ch[0])
            .chain(encoder.down_blocks.iter().enumerate().flat_map(|(i, b)| {
                let n = b.resnets.len() + b.downsamplers.iter().flatten().count();
                std::iter::repeat_n(ch[i], n)
            }))
            .map(zero_conv)
            .collect();
        Ok(Self {
            conv_in: encoder.conv_in,
            time_embedding: encoder.time_embedding,
            class_embedding: encoder.class_embedding,
            add_embedding: encoder.add_embedding,
            controlnet_cond_embedding: ControlNetConditioningEmbedding::new(
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                ch[0],
                device,
            ),
            down_blocks: encoder.down_blocks,
            controlnet_down_blocks,
            mid_block: encoder.mid_block,
            controlnet_mid_block: zero_conv(ch[ch.len() - 1]),
            config: config.clone(),
            encoder_config,
            plan,
            attention_chunk: None,
        })
    }

    /// Loads a diffusers ControlNet folder (or a cached repo id): `config.json` and
    /// `diffusion_pytorch_model.safetensors`, its `.fp16` variant, or a sharded index.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        Self::load_with_dtype(model, DType::F32, device)
    }

    /// [`load`](Self::load) keeping the weight matrices in `dtype` (see
    /// [`Weights::with_dtype`]).
    pub fn load_with_dtype(model: impl AsRef<str>, dtype: DType, device: &Device) -> Result<Self> {
        let (config, weights) = component(model.as_ref())?;
        Self::from_weights(&config, weights.with_dtype(dtype), device)
    }

    /// Loads an original (ControlNet repository / `lllyasviel/ControlNet-v1-1` layout)
    /// single-file checkpoint, `control_model.*`-prefixed or not, converted with
    /// [`crate::single_file::controlnet_weights`]; the architecture comes from `config`
    /// (e.g. the `config.json` of `lllyasviel/control_v11p_sd15_canny`).
    pub fn from_single_file(
        file: impl AsRef<Path>,
        config: &ControlNetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let weights = crate::single_file::controlnet_weights(file.as_ref(), config)?;
        Self::from_weights(config, weights.with_dtype(dtype), device)
    }

    /// Builds the model and loads `weights` strictly (every tensor present with its shape,
    /// nothing left over; problems come back together in one load report).
    pub fn from_weights(
        config: &ControlNetConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// Processes attention queries `chunk` at a time (`None`: all at once), as
    /// [`UNet2DConditionModel::set_attention_chunk`](crate::unet::UNet2DConditionModel::set_attention_chunk).
    pub fn set_attention_chunk(&mut self, chunk: Option<usize>) {
        self.attention_chunk = chunk.filter(|c| *c > 0);
    }

    /// How many down residuals it returns (the UNet's skip connections).
    pub fn num_residuals(&self) -> usize {
        self.controlnet_down_blocks.len()
    }

    /// The residuals for `input` (sample, timestep, text and, for SDXL, added conditions; no
    /// residuals or image tokens) and the control image `controlnet_cond`
    /// `[batch, conditioning_channels, h · f, w · f]` in `[0, 1]` (`f` =
    /// [`ControlNetConfig::downscale_factor`], 8), scaled by `conditioning_scale`. With
    /// `guess_mode` the residuals are scaled from 0.1 (the first) to 1.0 (the middle block)
    /// on a log scale, as diffusers does; `global_pool_conditions` averages them over the
    /// image.
    pub fn forward(
        &self,
        input: UNetInput,
        controlnet_cond: Tensor<4>,
        conditioning_scale: f64,
        guess_mode: bool,
    ) -> Result<ControlNetOutput> {
        self.validate(&input, &controlnet_cond, conditioning_scale)?;
        let UNetInput {
            sample,
            timestep,
            encoder_hidden_states,
            class_labels,
            added_cond,
            timestep_cond,
            ..
        } = input;
        let (in_dtype, dtype) = (sample.dtype(), compute_dtype_of(&self.conv_in.weight.val()));
        let (sample, encoder_hidden_states) =
            (sample.cast(dtype), encoder_hidden_states.cast(dtype));
        let mut controlnet_cond = controlnet_cond.cast(dtype);
        if self.config.controlnet_conditioning_channel_order == "bgr" {
            controlnet_cond = controlnet_cond.flip([1]);
        }
        let embeddings = Embeddings {
            time: &self.time_embedding,
            class: self.class_embedding.as_ref(),
            add: self.add_embedding.as_ref(),
        };
        let emb = embeddings.embed(
            &self.encoder_config,
            &sample,
            timestep,
            timestep_cond,
            class_labels,
            added_cond,
        );
        let ctx = CrossAttnContext {
            encoder_hidden_states: &encoder_hidden_states,
            image_tokens: None,
            chunk: self.attention_chunk,
        };
        let x =
            conv2d(&self.conv_in, sample) + self.controlnet_cond_embedding.forward(controlnet_cond);
        let (mut x, skips) = down_pass(&self.down_blocks, x, &emb, &ctx);
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, &emb, &ctx);
        }
        let down: Vec<_> = (skips.into_iter().zip(&self.controlnet_down_blocks))
            .map(|(skip, zero_conv)| conv2d(zero_conv, skip))
            .collect();
        let mid = conv2d(&self.controlnet_mid_block, x);
        let scales = residual_scales(
            down.len(),
            conditioning_scale,
            guess_mode && !self.config.global_pool_conditions,
        );
        let finish = |t: Tensor<4>, scale: f64| {
            let t = t * scale;
            let t = if self.config.global_pool_conditions {
                t.mean_dim(2).mean_dim(3)
            } else {
                t
            };
            t.cast(in_dtype)
        };
        Ok(ControlNetOutput {
            down: (down.into_iter().zip(&scales))
                .map(|(t, &s)| finish(t, s))
                .collect(),
            mid: finish(mid, scales[scales.len() - 1]),
        })
    }

    fn validate(&self, input: &UNetInput, cond: &Tensor<4>, scale: f64) -> Result<()> {
        validate_conditions(&self.encoder_config, &self.plan, input)?;
        if input.down_block_additional_residuals.is_some()
            || input.mid_block_additional_residual.is_some()
            || input.image_tokens.is_some()
        {
            return Err(Error::InvalidArgument {
                name: "input",
                reason: "a ControlNet takes no ControlNet residuals or IP-Adapter image tokens"
                    .into(),
            });
        }
        if !scale.is_finite() {
            return Err(Error::InvalidArgument {
                name: "conditioning_scale",
                reason: format!("{scale} is not finite"),
            });
        }
        let [batch, _, h, w] = input.sample.dims();
        let f = self.config.downscale_factor();
        let expected = [batch, self.config.conditioning_channels, h * f, w * f];
        if cond.dims() != expected {
            return Err(Error::Shape {
                what: "controlnet_cond",
                expected: format!(
                    "{expected:?} (the sample's batch, conditioning_channels, {f} × the \
                     latents' size)"
                ),
                got: cond.dims().to_vec(),
            });
        }
        check_finite("controlnet_cond", cond)
    }
}

/// The factor of each of `n` down residuals and of the middle block's (last): `scale`, or in
/// guess mode `scale · 10^x` for `x` evenly spaced from -1 to 0 (`torch.logspace(-1, 0, n + 1)`).
fn residual_scales(n: usize, scale: f64, guess_mode: bool) -> Vec<f64> {
    if !guess_mode {
        return vec![scale; n + 1];
    }
    (0..=n)
        .map(|i| {
            let x = -1.0 + i as f32 / n.max(1) as f32;
            f64::from(10f32.powf(x)) * scale
        })
        .collect()
}
