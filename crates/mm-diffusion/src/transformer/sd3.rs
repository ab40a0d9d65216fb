//! diffusers' `SD3Transformer2DModel`: the multimodal diffusion transformer (MMDiT) of Stable
//! Diffusion 3 and 3.5.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor};
use mm_core::precision::{linear, linear_compute_dtype};
use mm_core::weights::Weights;

use super::block::{JointBlockOptions, JointTransformerBlock};
use super::config::SD3Transformer2DConfig;
use super::embeddings::{CombinedTimestepTextProjEmbeddings, PatchEmbed};
use super::norm::AdaLayerNormContinuous;
use crate::check::{check_channels, check_finite};
use crate::loading::component;
use crate::single_file::{LdmLayout, SingleFile};
use crate::{Error, Result};

/// The inputs of one [`SD3Transformer2DModel::forward`] call.
#[derive(Debug, Clone)]
pub struct SD3Input {
    /// Latents `[batch, in_channels, h, w]` (`h`, `w` multiples of the patch size).
    pub hidden_states: Tensor<4>,
    /// Timesteps `[batch]` or `[1]` (`1000 · σ` for flow matching; fractional values allowed).
    pub timestep: Tensor<1>,
    /// Text states `[batch, tokens, joint_attention_dim]`.
    pub encoder_hidden_states: Tensor<3>,
    /// Pooled text embeddings `[batch, pooled_projection_dim]`.
    pub pooled_projections: Tensor<2>,
    /// Blocks skipped (skip-layer guidance's `skip_layers`).
    pub skip_layers: Vec<usize>,
}

impl SD3Input {
    /// Inputs with no skipped block.
    pub fn new(
        hidden_states: Tensor<4>,
        timestep: Tensor<1>,
        encoder_hidden_states: Tensor<3>,
        pooled_projections: Tensor<2>,
    ) -> Self {
        Self {
            hidden_states,
            timestep,
            encoder_hidden_states,
            pooled_projections,
            skip_layers: Vec::new(),
        }
    }

    /// Skips the blocks `layers` (their input passes through unchanged).
    pub fn skip_layers(mut self, layers: &[usize]) -> Self {
        self.skip_layers = layers.to_vec();
        self
    }
}

/// The SD3 / SD3.5 transformer, config-driven from `transformer/config.json`; tensor names
/// are diffusers' (`pos_embed.proj`, `time_text_embed.*`, `context_embedder`,
/// `transformer_blocks.N.*`, `norm_out.linear`, `proj_out`).
///
/// ```no_run
/// use burn::tensor::{DType, Tensor};
/// use mm_diffusion::transformer::{SD3Input, SD3Transformer2DModel};
///
/// fn main() -> mm_diffusion::Result<()> {
///     let device = mm_core::device::cpu();
///     let model = SD3Transformer2DModel::load_with_dtype(
///         "stabilityai/stable-diffusion-3-medium-diffusers/transformer",
///         DType::BF16, // the weights stay bf16 in memory; the CPU computes in f32
///         &device,
///     )?;
///     let latents = Tensor::<4>::zeros([1, 16, 128, 128], &device);
///     let t = Tensor::<1>::from_floats([1000.0], &device);
///     let text = Tensor::<3>::zeros([1, 333, 4096], &device);
///     let pooled = Tensor::<2>::zeros([1, 2048], &device);
///     let velocity = model.forward(SD3Input::new(latents, t, text, pooled))?;
///     assert_eq!(velocity.dims(), [1, 16, 128, 128]);
///     Ok(())
/// }
/// ```
#[derive(Module, Debug)]
pub struct SD3Transformer2DModel {
    /// Latent patches to tokens, plus position embeddings.
    pub pos_embed: PatchEmbed,
    /// Timestep + pooled text conditioning.
    pub time_text_embed: CombinedTimestepTextProjEmbeddings,
    /// Text states to the model width.
    pub context_embedder: Linear,
    /// The MMDiT blocks.
    pub transformer_blocks: Vec<JointTransformerBlock>,
    /// Output adaptive norm.
    pub norm_out: AdaLayerNormContinuous,
    /// Tokens to `patch² · out_channels` values.
    pub proj_out: Linear,
    #[module(skip)]
    config: SD3Transformer2DConfig,
}

impl SD3Transformer2DModel {
    /// A randomly initialised model of `config`.
    pub fn new(config: &SD3Transformer2DConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let dim = c.inner_dim();
        let qk_norm = c.rms_qk_norm()?;
        Ok(Self {
            pos_embed: PatchEmbed::new(
                c.in_channels,
                dim,
                c.patch_size,
                c.pos_embed_max_size,
                c.sample_size / c.patch_size,
                device,
            ),
            time_text_embed: CombinedTimestepTextProjEmbeddings::new(
                dim,
                c.pooled_projection_dim,
                false,
                device,
            ),
            context_embedder: LinearConfig::new(c.joint_attention_dim, c.caption_projection_dim)
                .init(device),
            transformer_blocks: (0..c.num_layers)
                .map(|i| {
                    let options = JointBlockOptions {
                        dim,
                        heads: c.num_attention_heads,
                        head_dim: c.attention_head_dim,
                        context_pre_only: i + 1 == c.num_layers,
                        qk_norm,
                        dual_attention: c.dual_attention_layers.contains(&i),
                    };
                    JointTransformerBlock::new(options, device)
                })
                .collect(),
            norm_out: AdaLayerNormContinuous::new(dim, dim, device),
            proj_out: LinearConfig::new(dim, c.patch_size * c.patch_size * c.out_channels())
                .init(device),
            config: config.clone(),
        })
    }

    /// Loads a diffusers `transformer/` folder (or a repo id in the local Hugging Face
    /// cache): `config.json` and `diffusion_pytorch_model.safetensors` (sharded or not, the
    /// fp16 variant too), the weights converted to f32.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        Self::load_with_dtype(model, DType::F32, device)
    }

    /// [`load`](Self::load) keeping the weight matrices in `dtype` (`BF16`: half the memory;
    /// see [`mm_core::precision`]).
    pub fn load_with_dtype(model: impl AsRef<str>, dtype: DType, device: &Device) -> Result<Self> {
        let (config, weights) = component(model.as_ref())?;
        Self::from_weights(&config, weights.with_dtype(dtype), device)
    }

    /// Loads the transformer of a Stable Diffusion 3 / 3.5 single file
    /// (`sd3_medium.safetensors`, `sd3.5_large.safetensors`, a bare MMDiT file; see
    /// [`crate::single_file`]) into a model of `config` — the `transformer/config.json` of a
    /// diffusers folder of the same model —, keeping the matrices in `dtype`, as diffusers'
    /// `SD3Transformer2DModel.from_single_file(file, config=…)`. The file's other models are
    /// not read; a file of another family is an
    /// [`Error::SingleFileFamily`](crate::Error::SingleFileFamily).
    pub fn from_single_file(
        file: impl AsRef<Path>,
        config: &SD3Transformer2DConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let parts = SingleFile::open(file)?.sd3_components(&LdmLayout::SD3)?;
        Self::from_weights(config, parts.transformer.with_dtype(dtype), device)
    }

    /// Builds the model and loads `weights` strictly (every tensor present with its shape,
    /// nothing left over).
    pub fn from_weights(
        config: &SD3Transformer2DConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &SD3Transformer2DConfig {
        &self.config
    }

    /// Checks the inputs' shapes against the config and each other.
    fn validate(&self, input: &SD3Input) -> Result<()> {
        let c = &self.config;
        check_channels("hidden_states", &input.hidden_states, c.in_channels)?;
        let [batch, _, h, w] = input.hidden_states.dims();
        if !h.is_multiple_of(c.patch_size) || !w.is_multiple_of(c.patch_size) || h == 0 || w == 0 {
            return Err(Error::Shape {
                what: "hidden_states",
                expected: format!("height and width positive multiples of {}", c.patch_size),
                got: input.hidden_states.dims().to_vec(),
            });
        }
        let t = input.timestep.dims()[0];
        if t != 1 && t != batch {
            return Err(Error::Shape {
                what: "timestep",
                expected: format!("[1] or [{batch}] (the latents' batch)"),
                got: vec![t],
            });
        }
        let [b, tokens, dim] = input.encoder_hidden_states.dims();
        if b != batch || tokens == 0 || dim != c.joint_attention_dim {
            return Err(Error::Shape {
                what: "encoder_hidden_states",
                expected: format!("[{batch}, tokens > 0, {}]", c.joint_attention_dim),
                got: vec![b, tokens, dim],
            });
        }
        let pooled = input.pooled_projections.dims();
        if pooled != [batch, c.pooled_projection_dim] {
            return Err(Error::Shape {
                what: "pooled_projections",
                expected: format!("[{batch}, {}]", c.pooled_projection_dim),
                got: pooled.to_vec(),
            });
        }
        if let Some(&layer) = input.skip_layers.iter().find(|&&l| l >= c.num_layers) {
            return Err(Error::InvalidArgument {
                name: "skip_layers",
                reason: format!("block {layer} does not exist ({} blocks)", c.num_layers),
            });
        }
        check_finite("hidden_states", &input.hidden_states)?;
        check_finite("encoder_hidden_states", &input.encoder_hidden_states)?;
        check_finite("pooled_projections", &input.pooled_projections)
    }

    /// The model output (the flow-matching velocity) `[batch, out_channels, h, w]`, in the
    /// latents' dtype.
    pub fn forward(&self, input: SD3Input) -> Result<Tensor<4>> {
        self.validate(&input)?;
        let c = &self.config;
        let in_dtype = input.hidden_states.dtype();
        let dtype = linear_compute_dtype(&self.proj_out);
        let [batch, _, h, w] = input.hidden_states.dims();
        let timestep = match input.timestep.dims()[0] {
            1 if batch > 1 => input.timestep.repeat_dim(0, batch),
            _ => input.timestep,
        };
        let mut x = self.pos_embed.forward(input.hidden_states.cast(dtype))?;
        let temb = self.time_text_embed.forward(
            timestep.cast(dtype),
            None,
            input.pooled_projections.cast(dtype),
        );
        let mut context = linear(
            &self.context_embedder,
            input.encoder_hidden_states.cast(dtype),
        );
        for (i, block) in self.transformer_blocks.iter().enumerate() {
            if input.skip_layers.contains(&i) {
                continue;
            }
            let (next_x, next_context) = block.forward(x, context.clone(), &temb, None);
            x = next_x;
            // The last block returns no text states (nothing reads them after it).
            if let Some(next) = next_context {
                context = next;
            }
        }
        let x = linear(&self.proj_out, self.norm_out.forward(x, temb));
        let (p, out) = (c.patch_size, c.out_channels());
        let (gh, gw) = (h / p, w / p);
        let image = x
            .reshape([batch, gh, gw, p, p, out])
            .permute([0, 5, 1, 3, 2, 4])
            .reshape([batch, out, h, w]);
        Ok(image.cast(in_dtype))
    }
}
