//! `UNet2DConditionModel`: the text-conditioned denoising UNet of Stable Diffusion 1.x/2.x
//! (also their 9-channel inpainting variants) and SDXL, built from diffusers' `unet/config.json`
//! and loading `diffusion_pytorch_model[.fp16].safetensors`.
//!
//! ```no_run
//! # fn main() -> mm_diffusion::Result<()> {
//! use burn::tensor::Tensor;
//! use mm_diffusion::unet::{UNet2DConditionModel, UNetInput};
//! let device = mm_core::device::cpu();
//! let unet = UNet2DConditionModel::load("stable-diffusion-v1-5/unet", &device)?;
//! let latents = Tensor::<4>::zeros([2, 4, 64, 64], &device); // [uncond, cond] for CFG
//! let text = Tensor::<3>::zeros([2, 77, 768], &device);      // CLIP last hidden states
//! let t = Tensor::<1>::from_floats([981.0], &device);          // broadcast to the batch
//! let noise_pred = unet.forward(latents.clone(), t.clone(), text.clone())?;
//! // The same through the full input, with everything optional left out:
//! let same = unet.forward_with(UNetInput::new(latents, t, text))?;
//! # let _ = (noise_pred, same);
//! # Ok(()) }
//! ```
//!
//! Memory: [`UNet2DConditionModel::set_attention_chunk`] makes every attention process its
//! queries in chunks, so the `heads × 4096 × 4096` scores of the highest-resolution
//! self-attention at 512×512 are never materialised at once.
//!
//! IP-Adapter (decoupled cross-attention): [`UNet2DConditionModel::with_ip_adapter`] gives
//! every cross-attention `attn2` an [`IpAdapterAttention`]
//! (`to_k_ip`/`to_v_ip` per adapter, absent from the base checkpoint's names), the image tokens
//! travel in [`UNetInput::image_tokens`] beside `encoder_hidden_states`, and each `attn2` adds
//! `scale · attention(q, to_k_ip(tokens), to_v_ip(tokens))` to its attention output before
//! `to_out`, as diffusers' `IPAdapterAttnProcessor2_0`. Reading IP-Adapter checkpoints, the
//! image encoder and the projection of its embeddings to tokens are in
//! [`crate::ip_adapter`].

pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod transformer;

pub use blocks::{
    CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D,
};
pub use config::{BlockKind, BlockPlan, PerBlock, UNet2DConditionConfig};
pub use embeddings::{TimestepEmbedding, guidance_scale_embedding, timestep_embedding};
pub use transformer::{
    BasicTransformerBlock, FeedForward, FeedForwardActivation, Transformer2DModel,
};

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor};
use mm_core::nn::{Activation, group_norm};
use mm_core::precision::{compute_dtype_of, conv2d};
use mm_core::weights::Weights;

use crate::check::{check_channels, check_finite};
use crate::loading::component;
use crate::vae::layers::{conv, group_norm_layer};
use crate::vae::resnet::{Downsample2D, ResnetBlock2D, ResnetOptions, Upsample2D};
use crate::{Error, Result};
use attention::IpAdapterAttention;
use transformer::{CrossAttnContext, TransformerOptions};

/// SDXL's added conditions (`added_cond_kwargs`, `addition_embed_type: "text_time"`).
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// Pooled text embeddings `[batch, dim]` (SDXL: the second text encoder's projection).
    pub text_embeds: Tensor<2>,
    /// Size and crop conditions `[batch, n]` (SDXL: original size, crop top-left, target
    /// size: 6 values), each embedded sinusoidally to `addition_time_embed_dim` features.
    pub time_ids: Tensor<2>,
}

/// Everything [`UNet2DConditionModel::forward_with`] takes. Build it with [`UNetInput::new`]
/// and the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UNetInput {
    /// Noisy latents `[batch, in_channels, h, w]`.
    pub sample: Tensor<4>,
    /// Timesteps `[1]` (broadcast to the batch) or `[batch]`; may be fractional.
    pub timestep: Tensor<1>,
    /// Text embeddings `[batch, tokens, cross_attention_dim]`.
    pub encoder_hidden_states: Tensor<3>,
    /// Inputs of the class embedding (`class_embed_type: "projection"`), `[batch, dim]`.
    pub class_labels: Option<Tensor<2>>,
    /// SDXL's added conditions (`addition_embed_type: "text_time"`).
    pub added_cond: Option<AddedCond>,
    /// `timestep_cond` `[batch, time_cond_proj_dim]` (LCM-distilled UNets: the guidance
    /// scale's embedding, see [`guidance_scale_embedding`]).
    pub timestep_cond: Option<Tensor<2>>,
    /// ControlNet residuals added to the skip connections, one per skip (`conv_in`'s output,
    /// every down-block ResNet/transformer output, every downsampler output), in order.
    pub down_block_additional_residuals: Option<Vec<Tensor<4>>>,
    /// ControlNet residual added to the middle block's output.
    pub mid_block_additional_residual: Option<Tensor<4>>,
    /// IP-Adapter image tokens, one `[batch, tokens, dim]` set per adapter attached with
    /// [`UNet2DConditionModel::with_ip_adapter`].
    pub image_tokens: Option<Vec<Tensor<3>>>,
}

impl UNetInput {
    /// The required inputs; everything optional is absent.
    pub fn new(sample: Tensor<4>, timestep: Tensor<1>, encoder_hidden_states: Tensor<3>) -> Self {
        Self {
            sample,
            timestep,
            encoder_hidden_states,
            class_labels: None,
            added_cond: None,
            timestep_cond: None,
            down_block_additional_residuals: None,
            mid_block_additional_residual: None,
            image_tokens: None,
        }
    }

    /// Sets the IP-Adapter image tokens, one `[batch, tokens, dim]` set per adapter.
    pub fn with_image_tokens(mut self, image_tokens: Vec<Tensor<3>>) -> Self {
        self.image_tokens = Some(image_tokens);
        self
    }

    /// Sets the class-embedding input (`class_embed_type: "projection"`).
    pub fn with_class_labels(mut self, class_labels: Tensor<2>) -> Self {
        self.class_labels = Some(class_labels);
        self
    }

    /// Sets SDXL's pooled text embeddings `[batch, dim]` and time ids `[batch, n]`.
    pub fn with_added_cond(mut self, text_embeds: Tensor<2>, time_ids: Tensor<2>) -> Self {
        self.added_cond = Some(AddedCond {
            text_embeds,
            time_ids,
        });
        self
    }

    /// Sets `timestep_cond` (`time_cond_proj_dim` UNets, e.g. LCM-distilled ones).
    pub fn with_timestep_cond(mut self, cond: Tensor<2>) -> Self {
        self.timestep_cond = Some(cond);
        self
    }

    /// Sets a ControlNet's residuals: one per skip connection, and one for the middle block.
    pub fn with_control_residuals(mut self, down: Vec<Tensor<4>>, mid: Tensor<4>) -> Self {
        self.down_block_additional_residuals = Some(down);
        self.mid_block_additional_residual = Some(mid);
        self
    }
}

/// diffusers' `UNet2DConditionModel` (the variants described by
/// [`UNet2DConditionConfig`]).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// MLP on the sinusoidal timestep embedding.
    pub time_embedding: TimestepEmbedding,
    /// `class_embed_type: "projection"`: MLP on `class_labels`.
    pub class_embedding: Option<TimestepEmbedding>,
    /// `addition_embed_type: "text_time"`: MLP on SDXL's pooled text and time ids.
    pub add_embedding: Option<TimestepEmbedding>,
    /// Down blocks, from the full resolution.
    pub down_blocks: Vec<DownBlock2D>,
    /// Middle block.
    pub mid_block: Option<UNetMidBlock2DCrossAttn>,
    /// Up blocks, from the lowest resolution.
    pub up_blocks: Vec<UpBlock2D>,
    /// Output group norm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution.
    pub conv_out: Conv2d,
    #[module(skip)]
    config: UNet2DConditionConfig,
    #[module(skip)]
    plan: BlockPlan,
    #[module(skip)]
    attention_chunk: Option<usize>,
    /// (image width, adapters) of the attached IP-Adapter layers.
    #[module(skip)]
    ip_adapter: Option<(usize, usize)>,
}

impl UNet2DConditionModel {
    /// A randomly initialised model; fails with [`Error::Config`] on a config it cannot build.
    pub fn new(config: &UNet2DConditionConfig, device: &Device) -> Result<Self> {
        let plan = config.plan()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let blocks_options = resnet_options(config, &plan, 1.0);
        let up_blocks = (0..n)
            .map(|i| {
                let level = n - 1 - i;
                let out = ch[level];
                let prev = ch[(level + 1).min(n - 1)];
                let input = ch[level.saturating_sub(1)];
                let layers = plan.layers[level] + 1;
                let resnets: Vec<_> = (0..layers)
                    .map(|j| {
                        let skip = if j + 1 == layers { input } else { out };
                        let from = if j == 0 { prev } else { out };
                        ResnetBlock2D::with_options(from + skip, out, &blocks_options, device)
                    })
                    .collect();
                let attentions = match plan.up[i] {
                    BlockKind::CrossAttn => resnets
                        .iter()
                        .map(|_| {
                            let options = transformer_options(config, &plan, level);
                            Transformer2DModel::new(out, &options, device)
                        })
                        .collect(),
                    BlockKind::Plain => Vec::new(),
                };
                UpBlock2D {
                    resnets,
                    attentions,
                    upsamplers: (i + 1 < n).then(|| vec![Upsample2D::new(out, device)]),
                }
            })
            .collect();
        let encoder = Encoder::new(config, &plan, device);
        Ok(Self {
            conv_in: encoder.conv_in,
            time_embedding: encoder.time_embedding,
            class_embedding: encoder.class_embedding,
            add_embedding: encoder.add_embedding,
            down_blocks: encoder.down_blocks,
            mid_block: encoder.mid_block,
            up_blocks,
            conv_norm_out: group_norm_layer(plan.groups, ch[0], config.norm_eps, device),
            conv_out: conv(
                ch[0],
                config.out_channels,
                config.conv_out_kernel,
                true,
                device,
            ),
            config: config.clone(),
            plan,
            attention_chunk: None,
            ip_adapter: None,
        })
    }

    /// Loads a diffusers `unet/` folder (or a cached repo id): `config.json` and
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

    /// Builds the model and loads `weights` strictly (every tensor present with its shape,
    /// nothing left over; problems come back together in one load report).
    pub fn from_weights(
        config: &UNet2DConditionConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// Processes attention queries `chunk` at a time (`None`: all at once, the default).
    /// The results are the same; peak memory of the attention scores drops from
    /// `batch × heads × tokens²` to `batch × heads × chunk × tokens` values.
    pub fn set_attention_chunk(&mut self, chunk: Option<usize>) {
        self.attention_chunk = chunk.filter(|c| *c > 0);
    }

    /// The query chunk size of the attention layers.
    pub fn attention_chunk(&self) -> Option<usize> {
        self.attention_chunk
    }

    /// Predicts the noise (or `v`, per the checkpoint) for `sample` at `timestep` conditioned
    /// on `encoder_hidden_states`; see [`UNetInput`] for the shapes.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: Tensor<1>,
        encoder_hidden_states: Tensor<3>,
    ) -> Result<Tensor<4>> {
        self.forward_with(UNetInput::new(sample, timestep, encoder_hidden_states))
    }

    /// [`forward`](Self::forward) with the optional inputs (class labels, SDXL's added
    /// conditions, ControlNet residuals). Heights and widths that are not multiples of the
    /// overall downscale factor work as in diffusers (each upsampler matches its skip).
    pub fn forward_with(&self, input: UNetInput) -> Result<Tensor<4>> {
        self.validate(&input)?;
        let UNetInput {
            sample,
            timestep,
            encoder_hidden_states,
            class_labels,
            added_cond,
            timestep_cond,
            down_block_additional_residuals,
            mid_block_additional_residual,
            image_tokens,
        } = input;
        let config = &self.config;
        let [batch, _, height, width] = sample.dims();
        // Inputs in the dtype the weights compute in (f32 on the CPU whatever the storage),
        // the output in the sample's.
        let (in_dtype, dtype) = (sample.dtype(), compute_dtype_of(&self.conv_in.weight.val()));
        let (sample, encoder_hidden_states) =
            (sample.cast(dtype), encoder_hidden_states.cast(dtype));
        let image_tokens =
            image_tokens.map(|t| t.into_iter().map(|t| t.cast(dtype)).collect::<Vec<_>>());
        let down_block_additional_residuals = down_block_additional_residuals
            .map(|r| r.into_iter().map(|t| t.cast(dtype)).collect::<Vec<_>>());
        let mid_block_additional_residual = mid_block_additional_residual.map(|t| t.cast(dtype));
        let sample = if config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let emb = self.embeddings().embed(
            config,
            &sample,
            timestep,
            timestep_cond,
            class_labels,
            added_cond,
        );
        let ctx = CrossAttnContext {
            encoder_hidden_states: &encoder_hidden_states,
            image_tokens: image_tokens.as_deref(),
            chunk: self.attention_chunk,
        };

        let (mut x, mut skips) =
            down_pass(&self.down_blocks, conv2d(&self.conv_in, sample), &emb, &ctx);
        if let Some(residuals) = down_block_additional_residuals {
            skips = skips
                .into_iter()
                .zip(residuals)
                .map(|(skip, residual)| {
                    add_residual("down_block_additional_residuals", skip, residual)
                })
                .collect::<Result<_>>()?;
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, &emb, &ctx);
        }
        if let Some(residual) = mid_block_additional_residual {
            x = add_residual("mid_block_additional_residual", x, residual)?;
        }
        let factor = 1 << self.config.num_downsamplers();
        let forward_upsample_size = height % factor != 0 || width % factor != 0;
        let last = self.up_blocks.len().saturating_sub(1);
        for (i, block) in self.up_blocks.iter().enumerate() {
            let remaining = skips.len().saturating_sub(block.resnets.len());
            let upsample_size = (forward_upsample_size && i != last && remaining > 0).then(|| {
                let [_, _, h, w] = skips[remaining - 1].dims();
                [h, w]
            });
            x = block.forward(x, &mut skips, &emb, &ctx, upsample_size);
        }
        let x = group_norm(&self.conv_norm_out, x, Some(config.act_fn));
        let out = conv2d(&self.conv_out, x);
        debug_assert_eq!(out.dims()[0], batch);
        Ok(out.cast(in_dtype))
    }

    /// The embedding layers, borrowed.
    fn embeddings(&self) -> Embeddings<'_> {
        Embeddings {
            time: &self.time_embedding,
            class: self.class_embedding.as_ref(),
            add: self.add_embedding.as_ref(),
        }
    }

    /// Checks every input's shape against the config and the sample, and that the values
    /// are finite.
    fn validate(&self, input: &UNetInput) -> Result<()> {
        validate_conditions(&self.config, &self.plan, input)?;
        match (
            &input.down_block_additional_residuals,
            &input.mid_block_additional_residual,
        ) {
            (Some(down), Some(_)) => {
                let skips = self.num_skip_connections();
                if down.len() != skips {
                    return Err(Error::Shape {
                        what: "down_block_additional_residuals",
                        expected: format!("{skips} residuals (one per skip connection)"),
                        got: vec![down.len()],
                    });
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::MissingInput {
                    what: "ControlNet residuals",
                    reason: "give both down_block_additional_residuals and \
                             mid_block_additional_residual (as a ControlNet outputs them)"
                        .into(),
                });
            }
        }
        self.validate_image_tokens(input)
    }

    /// IP-Adapter tokens: one set per attached adapter, of the sample's batch and the
    /// adapters' image width, finite.
    fn validate_image_tokens(&self, input: &UNetInput) -> Result<()> {
        let Some(sets) = &input.image_tokens else {
            return Ok(());
        };
        let Some((image_dim, adapters)) = self.ip_adapter else {
            return Err(Error::MissingInput {
                what: "image_tokens",
                reason: "the model has no IP-Adapter layers (see with_ip_adapter)".into(),
            });
        };
        let batch = input.sample.dims()[0];
        if sets.len() != adapters {
            return Err(Error::Shape {
                what: "image_tokens",
                expected: format!("{adapters} token sets (one per IP-Adapter)"),
                got: vec![sets.len()],
            });
        }
        for tokens in sets {
            let [b, n, d] = tokens.dims();
            if b != batch || n == 0 || d != image_dim {
                return Err(Error::Shape {
                    what: "image_tokens",
                    expected: format!("[{batch}, tokens > 0, {image_dim}]"),
                    got: vec![b, n, d],
                });
            }
            check_finite("image_tokens", tokens)?;
        }
        Ok(())
    }

    /// Attaches `scales.len()` IP-Adapters reading `image_dim`-wide image tokens: randomly
    /// initialised `to_k_ip`/`to_v_ip` in every cross-attention (replacing any attached
    /// before). Load their weights together with the UNet's (e.g. `Weights::from_files` of
    /// both files, then [`Weights::load_into`]), named
    /// `<attention>.attn2.ip_adapter.to_k_ip.<adapter>.weight`; the published IP-Adapter
    /// files load with [`IpAdapter::load`](crate::ip_adapter::IpAdapter::load) instead.
    pub fn with_ip_adapter(mut self, image_dim: usize, scales: Vec<f64>, device: &Device) -> Self {
        let layers = (self.transformer_blocks_mut())
            .map(|block| {
                let inner = block.attn2.inner_dim();
                IpAdapterAttention::new(image_dim, inner, scales.clone(), device)
            })
            .collect();
        self.attach_ip_adapter(image_dim, layers);
        self
    }

    /// Puts `layers` (one per transformer block, in [`Self::transformer_blocks_mut`] order)
    /// into the cross-attentions, replacing any there; layers of no adapter remove them.
    pub(crate) fn attach_ip_adapter(&mut self, image_dim: usize, layers: Vec<IpAdapterAttention>) {
        let adapters = layers.first().map_or(0, |layer| layer.scales().len());
        self.ip_adapter = (adapters > 0).then_some((image_dim, adapters));
        for (block, layer) in self.transformer_blocks_mut().zip(layers) {
            block.attn2.ip_adapter = (adapters > 0).then_some(layer);
        }
    }

    /// Every transformer block with its diffusers module path
    /// (`down_blocks.1.attentions.0.transformer_blocks.0`), in the order of
    /// [`Self::transformer_blocks_mut`].
    pub(crate) fn named_transformer_blocks(&self) -> Vec<(String, &BasicTransformerBlock)> {
        let down = (self.down_blocks.iter().enumerate())
            .map(|(i, b)| (format!("down_blocks.{i}"), &b.attentions));
        let up = (self.up_blocks.iter().enumerate())
            .map(|(i, b)| (format!("up_blocks.{i}"), &b.attentions));
        let mid = (self.mid_block.iter()).map(|b| ("mid_block".to_string(), &b.attentions));
        let mut out = Vec::new();
        for (block, attentions) in down.chain(up).chain(mid) {
            for (j, transformer) in attentions.iter().enumerate() {
                for (k, tb) in transformer.transformer_blocks.iter().enumerate() {
                    out.push((format!("{block}.attentions.{j}.transformer_blocks.{k}"), tb));
                }
            }
        }
        out
    }

    /// Every transformer block, in diffusers' `attn_processors` order: down blocks, up
    /// blocks, then the middle block.
    pub(crate) fn transformer_blocks_mut(
        &mut self,
    ) -> impl Iterator<Item = &mut BasicTransformerBlock> {
        let down = self.down_blocks.iter_mut().flat_map(|b| &mut b.attentions);
        let up = self.up_blocks.iter_mut().flat_map(|b| &mut b.attentions);
        let mid = self.mid_block.iter_mut().flat_map(|b| &mut b.attentions);
        down.chain(up)
            .chain(mid)
            .flat_map(|t| &mut t.transformer_blocks)
    }

    /// How many skip connections the down path produces (what a ControlNet must match):
    /// `conv_in`'s output, one per down-block ResNet, one per downsampler.
    pub fn num_skip_connections(&self) -> usize {
        self.plan.skip_connections()
    }
}

/// `x + residual`, failing when the shapes differ. A `[batch, channels, 1, 1]` residual (a
/// ControlNet with `global_pool_conditions`) is added to every position.
fn add_residual(what: &'static str, x: Tensor<4>, residual: Tensor<4>) -> Result<Tensor<4>> {
    let [b, c, h, w] = x.dims();
    let pooled = residual.dims() == [b, c, 1, 1];
    if residual.dims() != x.dims() && !pooled {
        return Err(Error::Shape {
            what,
            expected: format!(
                "{:?} (the skip connection it is added to) or [{b}, {c}, 1, 1]",
                x.dims()
            ),
            got: residual.dims().to_vec(),
        });
    }
    check_finite(what, &residual)?;
    Ok(x + residual.expand([b, c, h, w]))
}

/// Checks the inputs a UNet and a ControlNet share (sample, timestep, text, class labels,
/// `timestep_cond`, added conditions) against the config and the sample, and that their values
/// are finite.
pub(crate) fn validate_conditions(
    config: &UNet2DConditionConfig,
    plan: &BlockPlan,
    input: &UNetInput,
) -> Result<()> {
    check_channels("sample", &input.sample, config.in_channels)?;
    let [batch, _, height, width] = input.sample.dims();
    let t = input.timestep.dims()[0];
    if t != 1 && t != batch {
        return Err(Error::Shape {
            what: "timestep",
            expected: format!("[1] or [{batch}] (the sample's batch)"),
            got: input.timestep.dims().to_vec(),
        });
    }
    let [b, tokens, dim] = input.encoder_hidden_states.dims();
    let cross = plan.cross_attention_dims();
    if b != batch || tokens == 0 || cross.iter().any(|c| *c != dim) {
        let expected = cross.first().map_or("any".into(), |c| c.to_string());
        return Err(Error::Shape {
            what: "encoder_hidden_states",
            expected: format!("[{batch} (the sample's batch), tokens > 0, {expected}]"),
            got: vec![b, tokens, dim],
        });
    }
    let projection_dim = config.projection_class_embeddings_input_dim.unwrap_or(0);
    match (config.class_embed_type.is_some(), &input.class_labels) {
        (true, None) => {
            return Err(Error::MissingInput {
                what: "class_labels",
                reason: "the config has class_embed_type \"projection\"".into(),
            });
        }
        (true, Some(labels)) if labels.dims() != [batch, projection_dim] => {
            return Err(Error::Shape {
                what: "class_labels",
                expected: format!("[{batch}, {projection_dim}]"),
                got: labels.dims().to_vec(),
            });
        }
        (false, Some(_)) => {
            return Err(Error::MissingInput {
                what: "class_embed_type",
                reason: "class_labels were given but the config has no class embedding".into(),
            });
        }
        _ => {}
    }
    match (config.time_cond_proj_dim, &input.timestep_cond) {
        (Some(_), None) => {
            return Err(Error::MissingInput {
                what: "timestep_cond",
                reason: "the config has time_cond_proj_dim (an LCM-distilled UNet): give \
                         the guidance scale's embedding"
                    .into(),
            });
        }
        (Some(dim), Some(cond)) => {
            if cond.dims() != [batch, dim] {
                return Err(Error::Shape {
                    what: "timestep_cond",
                    expected: format!("[{batch}, {dim}]"),
                    got: cond.dims().to_vec(),
                });
            }
            check_finite("timestep_cond", cond)?;
        }
        (None, Some(_)) => {
            return Err(Error::MissingInput {
                what: "time_cond_proj_dim",
                reason: "timestep_cond was given but the config has no cond_proj".into(),
            });
        }
        (None, None) => {}
    }
    match (config.addition_embed_type.is_some(), &input.added_cond) {
        (true, None) => {
            return Err(Error::MissingInput {
                what: "added_cond",
                reason: "the config has addition_embed_type \"text_time\" (SDXL): give \
                         text_embeds and time_ids"
                    .into(),
            });
        }
        (true, Some(added)) => {
            let [tb, te] = added.text_embeds.dims();
            let [ib, ni] = added.time_ids.dims();
            let time_dim = config.addition_time_embed_dim.unwrap_or(0);
            if tb != batch || ib != batch || te + ni * time_dim != projection_dim {
                return Err(Error::Shape {
                    what: "added_cond",
                    expected: format!(
                        "text_embeds [{batch}, d] and time_ids [{batch}, n] with d + n × \
                         {time_dim} = {projection_dim}"
                    ),
                    got: vec![tb, te, ib, ni],
                });
            }
            check_finite("text_embeds", &added.text_embeds)?;
            check_finite("time_ids", &added.time_ids)?;
        }
        (false, Some(_)) => {
            return Err(Error::MissingInput {
                what: "addition_embed_type",
                reason: "added_cond was given but the config has no added embedding".into(),
            });
        }
        (false, None) => {}
    }
    if height == 0 || width == 0 {
        return Err(Error::Shape {
            what: "sample",
            expected: "a non-empty spatial size".into(),
            got: input.sample.dims().to_vec(),
        });
    }
    check_finite("sample", &input.sample)?;
    check_finite("timestep", &input.timestep)?;
    check_finite("encoder_hidden_states", &input.encoder_hidden_states)?;
    if let Some(labels) = &input.class_labels {
        check_finite("class_labels", labels)?;
    }
    Ok(())
}

/// The ResNet settings of a UNet-style model (`scale`: the output scale factor).
fn resnet_options(config: &UNet2DConditionConfig, plan: &BlockPlan, scale: f64) -> ResnetOptions {
    ResnetOptions {
        groups: plan.groups,
        eps: config.norm_eps,
        act: config.act_fn,
        temb_channels: Some(config.time_embed_dim()),
        output_scale_factor: scale,
    }
}

/// The settings of the transformers at level `i` (down-block index).
fn transformer_options(
    config: &UNet2DConditionConfig,
    plan: &BlockPlan,
    i: usize,
) -> TransformerOptions {
    TransformerOptions {
        heads: plan.heads[i],
        cross_attention_dim: plan.cross_attention_dim[i],
        layers: plan.transformer_layers[i],
        groups: plan.groups,
        linear_projection: config.use_linear_projection,
        only_cross_attention: plan.only_cross_attention[i],
        upcast_attention: config.upcast_attention,
    }
}

/// The layers the down path of a UNet and a ControlNet share, built from one config (and
/// named alike in both checkpoints): the input convolution, the time (class, added)
/// embeddings, the down blocks and the middle block.
pub(crate) struct Encoder {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub class_embedding: Option<TimestepEmbedding>,
    pub add_embedding: Option<TimestepEmbedding>,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: Option<UNetMidBlock2DCrossAttn>,
}

impl Encoder {
    /// Randomly initialised layers for a validated config and its plan.
    pub(crate) fn new(config: &UNet2DConditionConfig, plan: &BlockPlan, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = config.time_embed_dim();
        // diffusers passes `resnet_out_scale_factor` only to block types not supported here.
        let blocks_options = resnet_options(config, plan, 1.0);
        let transformer = |i: usize, channels: usize| {
            Transformer2DModel::new(channels, &transformer_options(config, plan, i), device)
        };
        let down_blocks = (0..n)
            .map(|i| {
                let cin = ch[i.saturating_sub(1)];
                let resnets: Vec<_> = (0..plan.layers[i])
                    .map(|j| {
                        let from = if j == 0 { cin } else { ch[i] };
                        ResnetBlock2D::with_options(from, ch[i], &blocks_options, device)
                    })
                    .collect();
                let attentions = match plan.down[i] {
                    BlockKind::CrossAttn => resnets.iter().map(|_| transformer(i, ch[i])).collect(),
                    BlockKind::Plain => Vec::new(),
                };
                DownBlock2D {
                    resnets,
                    attentions,
                    downsamplers: (i + 1 < n).then(|| {
                        vec![Downsample2D::with_padding(
                            ch[i],
                            config.downsample_padding,
                            device,
                        )]
                    }),
                }
            })
            .collect();
        let last = ch[n - 1];
        let mid_block = plan.mid.then(|| {
            let options = resnet_options(config, plan, config.mid_block_scale_factor);
            let resnet = || ResnetBlock2D::with_options(last, last, &options, device);
            // diffusers' `UNetMidBlock2DCrossAttn` always self-attends.
            let options = TransformerOptions {
                only_cross_attention: false,
                ..transformer_options(config, plan, n - 1)
            };
            UNetMidBlock2DCrossAttn {
                resnets: vec![resnet(), resnet()],
                attentions: vec![Transformer2DModel::new(last, &options, device)],
            }
        });
        let embedding = |input: usize| TimestepEmbedding::new(input, temb, config.act_fn, device);
        let projection_dim = config.projection_class_embeddings_input_dim.unwrap_or(0);
        Self {
            conv_in: conv(
                config.in_channels,
                ch[0],
                config.conv_in_kernel,
                true,
                device,
            ),
            time_embedding: match config.time_cond_proj_dim {
                Some(dim) => embedding(ch[0]).with_cond_proj(dim, device),
                None => embedding(ch[0]),
            },
            // diffusers builds both with `TimestepEmbedding`'s default activation (SiLU),
            // whatever `act_fn` says.
            class_embedding: config
                .class_embed_type
                .is_some()
                .then(|| TimestepEmbedding::new(projection_dim, temb, Activation::Silu, device)),
            add_embedding: config
                .addition_embed_type
                .is_some()
                .then(|| TimestepEmbedding::new(projection_dim, temb, Activation::Silu, device)),
            down_blocks,
            mid_block,
        }
    }
}

/// The embedding layers of a UNet-style model, borrowed.
pub(crate) struct Embeddings<'a> {
    pub time: &'a TimestepEmbedding,
    pub class: Option<&'a TimestepEmbedding>,
    pub add: Option<&'a TimestepEmbedding>,
}

impl Embeddings<'_> {
    /// The time embedding `[batch, 4 × block_out_channels[0]]`, with the class and added
    /// embeddings summed in.
    pub(crate) fn embed(
        &self,
        config: &UNet2DConditionConfig,
        sample: &Tensor<4>,
        timestep: Tensor<1>,
        timestep_cond: Option<Tensor<2>>,
        class_labels: Option<Tensor<2>>,
        added_cond: Option<AddedCond>,
    ) -> Tensor<2> {
        let batch = sample.dims()[0];
        let dtype = sample.dtype();
        let timestep = timestep.cast(DType::F32);
        let timesteps = if timestep.dims()[0] == batch {
            timestep
        } else {
            timestep.expand([batch])
        };
        let ch0 = config.block_out_channels[0];
        let t_emb = timestep_embedding(timesteps, ch0, config.flip_sin_to_cos, config.freq_shift);
        let mut emb = self
            .time
            .forward_with_cond(t_emb.cast(dtype), timestep_cond.map(|c| c.cast(dtype)));
        if let (Some(class_embedding), Some(labels)) = (self.class, class_labels) {
            emb = emb + class_embedding.forward(labels.cast(dtype));
        }
        if let (Some(add_embedding), Some(added)) = (self.add, added_cond) {
            let [b, n] = added.time_ids.dims();
            let dim = config.addition_time_embed_dim.unwrap_or(0);
            let ids = added.time_ids.cast(DType::F32).reshape([b * n]);
            let time_embeds =
                timestep_embedding(ids, dim, config.flip_sin_to_cos, config.freq_shift)
                    .reshape([b, n * dim])
                    .cast(dtype);
            let add = Tensor::cat(vec![added.text_embeds.cast(dtype), time_embeds], 1);
            emb = emb + add_embedding.forward(add);
        }
        emb
    }
}

/// Runs `x` (`conv_in`'s output) through the down blocks; returns the result and the skip
/// connections (`x` itself first, then every block's).
pub(crate) fn down_pass(
    blocks: &[DownBlock2D],
    x: Tensor<4>,
    emb: &Tensor<2>,
    ctx: &CrossAttnContext,
) -> (Tensor<4>, Vec<Tensor<4>>) {
    let mut skips = vec![x.clone()];
    let mut x = x;
    for block in blocks {
        let (out, block_skips) = block.forward(x, emb, ctx);
        x = out;
        skips.extend(block_skips);
    }
    (x, skips)
}
