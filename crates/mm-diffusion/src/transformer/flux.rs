//! diffusers' `FluxTransformer2DModel`: the rectified-flow transformer of FLUX.1 (schnell,
//! dev): double-stream (MMDiT) blocks, single-stream blocks over the joined sequence, 3-axis
//! rotary embeddings, and the guidance embedding of the guidance-distilled dev model.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor, TensorData};
use mm_core::gguf::GgmlType;
use mm_core::nn::{Activation, layer_norm};
use mm_core::precision::{linear, linear_compute_dtype};
use mm_core::weights::Weights;
use serde::{Deserialize, Serialize};

use super::attention::{JointAttention, JointAttentionOptions};
use super::block::{JointBlockOptions, JointTransformerBlock};
use super::embeddings::CombinedTimestepTextProjEmbeddings;
use super::norm::{AdaLayerNormContinuous, AdaLayerNormZero, NORM_EPS, gate, modulate};
use super::rope::Rope;
use crate::check::check_finite;
use crate::loading::component;
use crate::single_file::flux_diffusers_weights;
use crate::{Error, Result};

/// The base of the rotary embedding's frequencies.
const ROPE_THETA: f64 = 10000.0;

/// The fields of a FLUX `transformer/config.json`, with diffusers' defaults (FLUX.1's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FluxTransformer2DConfig {
    /// Patch side within the (already 2×2-packed) tokens (1).
    pub patch_size: usize,
    /// Features of a packed latent token (64: 16 channels × 2 × 2).
    pub in_channels: usize,
    /// Output features per token (`null`: `in_channels`).
    pub out_channels: Option<usize>,
    /// Double-stream blocks (19).
    pub num_layers: usize,
    /// Single-stream blocks (38).
    pub num_single_layers: usize,
    /// Width of a head (128).
    pub attention_head_dim: usize,
    /// Heads (24); the model width is `heads × head_dim`.
    pub num_attention_heads: usize,
    /// Width of the T5 states (4096).
    pub joint_attention_dim: usize,
    /// Width of CLIP's pooled embedding (768).
    pub pooled_projection_dim: usize,
    /// Whether the guidance scale is embedded (FLUX.1-dev: true, schnell: false).
    pub guidance_embeds: bool,
    /// Features of each rotary axis (text index, row, column); they sum to the head width.
    pub axes_dims_rope: Vec<usize>,
}

impl Default for FluxTransformer2DConfig {
    fn default() -> Self {
        Self {
            patch_size: 1,
            in_channels: 64,
            out_channels: None,
            num_layers: 19,
            num_single_layers: 38,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 4096,
            pooled_projection_dim: 768,
            guidance_embeds: false,
            axes_dims_rope: vec![16, 56, 56],
        }
    }
}

impl FluxTransformer2DConfig {
    /// The model width.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Output features per token.
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Checks the sizes a model can be built from.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("FLUX transformer config: {what}")));
        if self.in_channels == 0 || self.attention_head_dim == 0 || self.num_attention_heads == 0 {
            return bad("in_channels and the attention sizes must be positive".into());
        }
        let rope: usize = self.axes_dims_rope.iter().sum();
        if rope != self.attention_head_dim || self.axes_dims_rope.iter().any(|d| d % 2 == 1) {
            return bad(format!(
                "axes_dims_rope {:?} must be even and sum to attention_head_dim {}",
                self.axes_dims_rope, self.attention_head_dim
            ));
        }
        Ok(())
    }
}

/// diffusers' `FluxSingleTransformerBlock`: one adaLN-Zero-modulated layer norm feeding, in
/// parallel, an attention over the whole (image + text) sequence and a tanh-GELU MLP, whose
/// outputs are joined, projected, gated and added back.
#[derive(Module, Debug)]
pub struct FluxSingleTransformerBlock {
    /// Shift, scale and gate (`AdaLayerNormZeroSingle`).
    pub norm: AdaLayerNormZero,
    /// `dim → 4 · dim`.
    pub proj_mlp: Linear,
    /// `5 · dim → dim` over `[attention; mlp]`.
    pub proj_out: Linear,
    /// The attention (no output projection of its own).
    pub attn: JointAttention,
}

impl FluxSingleTransformerBlock {
    /// A randomly initialised block.
    pub fn new(dim: usize, heads: usize, head_dim: usize, device: &Device) -> Self {
        let mlp = 4 * dim;
        Self {
            norm: AdaLayerNormZero::new(dim, 3, device),
            proj_mlp: LinearConfig::new(dim, mlp).init(device),
            proj_out: LinearConfig::new(dim + mlp, dim).init(device),
            attn: JointAttention::new(
                JointAttentionOptions {
                    dim,
                    heads,
                    head_dim,
                    joint: false,
                    context_pre_only: false,
                    pre_only: true,
                    qk_norm: true,
                },
                device,
            ),
        }
    }

    /// Runs the block on the joined sequence `x` `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>, temb: &Tensor<2>, rope: &Rope) -> Tensor<3> {
        let m = self.norm.chunks(temb.clone());
        let normed = modulate(layer_norm(x.clone(), NORM_EPS), &m[0], &m[1]);
        let mlp = Activation::GeluTanh.forward(linear(&self.proj_mlp, normed.clone()));
        let (attn, _) = self.attn.forward(normed, None, Some(rope));
        let out = linear(&self.proj_out, Tensor::cat(vec![attn, mlp], 2));
        x + gate(out, &m[2])
    }
}

/// The inputs of one [`FluxTransformer2DModel::forward`] call.
#[derive(Debug, Clone)]
pub struct FluxInput {
    /// Packed latent tokens `[batch, tokens, in_channels]`.
    pub hidden_states: Tensor<3>,
    /// T5 states `[batch, text_tokens, joint_attention_dim]`.
    pub encoder_hidden_states: Tensor<3>,
    /// CLIP's pooled embedding `[batch, pooled_projection_dim]`.
    pub pooled_projections: Tensor<2>,
    /// The flow-matching time `σ ∈ [0, 1]` per sample, `[batch]` or `[1]` (diffusers'
    /// pipelines pass `t / 1000`; the model embeds `1000 · σ`).
    pub timestep: Tensor<1>,
    /// The guidance scale per sample (guidance-distilled models), `[batch]` or `[1]`.
    pub guidance: Option<Tensor<1>>,
    /// Coordinates of the latent tokens `[tokens, 3]` (0, row, column).
    pub img_ids: Tensor<2>,
    /// Coordinates of the text tokens `[text_tokens, 3]` (zeros).
    pub txt_ids: Tensor<2>,
}

/// The FLUX.1 transformer, config-driven from `transformer/config.json`, with diffusers'
/// tensor names (`x_embedder`, `context_embedder`, `time_text_embed.*`,
/// `transformer_blocks.N.*`, `single_transformer_blocks.N.*`, `norm_out.linear`,
/// `proj_out`).
#[derive(Module, Debug)]
pub struct FluxTransformer2DModel {
    /// Packed latents to the model width.
    pub x_embedder: Linear,
    /// T5 states to the model width.
    pub context_embedder: Linear,
    /// Timestep (+ guidance) + pooled text conditioning.
    pub time_text_embed: CombinedTimestepTextProjEmbeddings,
    /// The double-stream blocks.
    pub transformer_blocks: Vec<JointTransformerBlock>,
    /// The single-stream blocks.
    pub single_transformer_blocks: Vec<FluxSingleTransformerBlock>,
    /// Output adaptive norm.
    pub norm_out: AdaLayerNormContinuous,
    /// Tokens to `patch² · out_channels` values.
    pub proj_out: Linear,
    #[module(skip)]
    config: FluxTransformer2DConfig,
}

impl FluxTransformer2DModel {
    /// A randomly initialised model of `config`.
    pub fn new(config: &FluxTransformer2DConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let dim = c.inner_dim();
        let (heads, head_dim) = (c.num_attention_heads, c.attention_head_dim);
        let double = JointBlockOptions {
            dim,
            heads,
            head_dim,
            context_pre_only: false,
            qk_norm: true,
            dual_attention: false,
        };
        let out = c.patch_size * c.patch_size * c.out_channels();
        Ok(Self {
            x_embedder: LinearConfig::new(c.in_channels, dim).init(device),
            context_embedder: LinearConfig::new(c.joint_attention_dim, dim).init(device),
            time_text_embed: CombinedTimestepTextProjEmbeddings::new(
                dim,
                c.pooled_projection_dim,
                c.guidance_embeds,
                device,
            ),
            transformer_blocks: (0..c.num_layers)
                .map(|_| JointTransformerBlock::new(double, device))
                .collect(),
            single_transformer_blocks: (0..c.num_single_layers)
                .map(|_| FluxSingleTransformerBlock::new(dim, heads, head_dim, device))
                .collect(),
            norm_out: AdaLayerNormContinuous::new(dim, dim, device),
            proj_out: LinearConfig::new(dim, out).init(device),
            config: config.clone(),
        })
    }

    /// Loads a diffusers `transformer/` folder (or a repo id in the local Hugging Face
    /// cache), the weights converted to f32.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        Self::load_with_dtype(model, DType::F32, device)
    }

    /// [`load`](Self::load) keeping the weight matrices in `dtype`.
    pub fn load_with_dtype(model: impl AsRef<str>, dtype: DType, device: &Device) -> Result<Self> {
        let (config, weights) = component(model.as_ref())?;
        Self::from_weights(&config, weights.with_dtype(dtype), device)
    }

    /// Builds the model and loads `weights` strictly: diffusers' names, or Black Forest
    /// Labs' original ones (`flux1-dev.safetensors`, city96's GGUF files; see
    /// [`flux_diffusers_weights`]). A GGUF file's quantized matrices stay quantized, and
    /// [`Weights::quantize`] quantizes the others as they load (see [`mm_core::quant`]).
    pub fn from_weights(
        config: &FluxTransformer2DConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        let weights = flux_diffusers_weights(weights, config)?;
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// Loads a transformer file (`.safetensors` or `.gguf`, diffusers' or BFL's names) built
    /// as `config` says, its matrices in `dtype`, linear weights quantized to `quantize` as
    /// they load when given (a GGUF file's quantized ones stay as they are).
    ///
    /// ```no_run
    /// use burn::tensor::DType;
    /// use mm_core::config::read_json;
    /// use mm_diffusion::transformer::FluxTransformer2DModel;
    ///
    /// fn main() -> mm_diffusion::Result<()> {
    ///     let device = mm_core::device::cpu();
    ///     let config = read_json("FLUX.1-schnell/transformer/config.json")?;
    ///     let model = FluxTransformer2DModel::from_file(
    ///         &config,
    ///         "flux1-schnell-Q8_0.gguf",
    ///         DType::BF16,
    ///         None,
    ///         &device,
    ///     )?;
    ///     # let _ = model;
    ///     Ok(())
    /// }
    /// ```
    pub fn from_file(
        config: &FluxTransformer2DConfig,
        path: impl AsRef<std::path::Path>,
        dtype: DType,
        quantize: Option<GgmlType>,
        device: &Device,
    ) -> Result<Self> {
        let weights = Weights::open(path)?.with_dtype(dtype);
        let weights = match quantize {
            Some(ty) => weights.quantize(ty),
            None => weights,
        };
        Self::from_weights(config, weights, device)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &FluxTransformer2DConfig {
        &self.config
    }

    /// Checks the inputs' shapes against the config and each other.
    fn validate(&self, input: &FluxInput) -> Result<()> {
        let c = &self.config;
        let shape = |what, expected: String, got: &[usize]| {
            Err(Error::Shape {
                what,
                expected,
                got: got.to_vec(),
            })
        };
        let [batch, tokens, features] = input.hidden_states.dims();
        if features != c.in_channels || tokens == 0 {
            return shape(
                "hidden_states",
                format!("[batch, tokens > 0, {}]", c.in_channels),
                &input.hidden_states.dims(),
            );
        }
        let [b, text, width] = input.encoder_hidden_states.dims();
        if b != batch || width != c.joint_attention_dim {
            return shape(
                "encoder_hidden_states",
                format!("[{batch}, tokens, {}]", c.joint_attention_dim),
                &[b, text, width],
            );
        }
        if input.pooled_projections.dims() != [batch, c.pooled_projection_dim] {
            return shape(
                "pooled_projections",
                format!("[{batch}, {}]", c.pooled_projection_dim),
                &input.pooled_projections.dims(),
            );
        }
        let axes = c.axes_dims_rope.len();
        if input.img_ids.dims() != [tokens, axes] {
            return shape(
                "img_ids",
                format!("[{tokens}, {axes}]"),
                &input.img_ids.dims(),
            );
        }
        if input.txt_ids.dims() != [text, axes] {
            return shape(
                "txt_ids",
                format!("[{text}, {axes}]"),
                &input.txt_ids.dims(),
            );
        }
        let per_sample = |what, t: &Tensor<1>| match t.dims()[0] {
            1 => Ok(()),
            n if n == batch => Ok(()),
            n => shape(what, format!("[1] or [{batch}]"), &[n]),
        };
        per_sample("timestep", &input.timestep)?;
        match (&input.guidance, c.guidance_embeds) {
            (Some(g), true) => per_sample("guidance", g)?,
            (None, true) => {
                return Err(Error::MissingInput {
                    what: "guidance",
                    reason: "the model embeds the guidance scale (guidance_embeds)".into(),
                });
            }
            _ => {}
        }
        check_finite("hidden_states", &input.hidden_states)?;
        check_finite("encoder_hidden_states", &input.encoder_hidden_states)?;
        check_finite("pooled_projections", &input.pooled_projections)
    }

    /// The velocity of every latent token, `[batch, tokens, out_channels]`, in the latents'
    /// dtype.
    pub fn forward(&self, input: FluxInput) -> Result<Tensor<3>> {
        self.validate(&input)?;
        let in_dtype = input.hidden_states.dtype();
        let dtype = linear_compute_dtype(&self.proj_out);
        let batch = input.hidden_states.dims()[0];
        let n = input.hidden_states.dims()[1];
        // diffusers: `timestep.to(dtype) * 1000` (and the guidance likewise), in the compute dtype.
        let per_sample = |t: Tensor<1>| {
            let t = t.cast(dtype) * 1000.0;
            if t.dims()[0] == 1 && batch > 1 {
                t.repeat_dim(0, batch)
            } else {
                t
            }
        };
        let temb = self.time_text_embed.forward(
            per_sample(input.timestep),
            input.guidance.map(per_sample),
            input.pooled_projections.cast(dtype),
        );
        let device = input.hidden_states.device();
        let ids = |t: Tensor<2>| -> Result<Vec<f32>> {
            (t.cast(DType::F32).into_data().try_to_vec::<f32>()).map_err(|e| {
                Error::InvalidArgument {
                    name: "img_ids / txt_ids",
                    reason: format!("{e:?}"),
                }
            })
        };
        let axes = &self.config.axes_dims_rope;
        // The image tokens first, then the text tokens: the order every attention here uses.
        let rope = Rope::new(&ids(input.img_ids)?, axes, ROPE_THETA, &device).concat(&Rope::new(
            &ids(input.txt_ids)?,
            axes,
            ROPE_THETA,
            &device,
        ));
        let mut x = linear(&self.x_embedder, input.hidden_states.cast(dtype));
        let mut context = linear(
            &self.context_embedder,
            input.encoder_hidden_states.cast(dtype),
        );
        for block in &self.transformer_blocks {
            let (next_x, next_context) = block.forward(x, context.clone(), &temb, Some(&rope));
            x = next_x;
            context = next_context.unwrap_or(context);
        }
        let mut joined = Tensor::cat(vec![x, context], 1);
        for block in &self.single_transformer_blocks {
            joined = block.forward(joined, &temb, &rope);
        }
        let x = self.norm_out.forward(joined.narrow(1, 0, n), temb);
        Ok(linear(&self.proj_out, x).cast(in_dtype))
    }
}

/// diffusers' `_pack_latents`: `[batch, channels, h, w]` latents (even `h`, `w`) to
/// `[batch, (h / 2)·(w / 2), 4 · channels]` tokens, each a 2×2 patch.
pub fn pack_latents(latents: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = latents.dims();
    latents
        .reshape([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, (h / 2) * (w / 2), c * 4])
}

/// diffusers' `_unpack_latents`: the inverse of [`pack_latents`] for `h × w` latents.
pub fn unpack_latents(tokens: Tensor<3>, h: usize, w: usize) -> Tensor<4> {
    let [b, _, features] = tokens.dims();
    let c = features / 4;
    tokens
        .reshape([b, h / 2, w / 2, c, 2, 2])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, c, h, w])
}

/// diffusers' `_prepare_latent_image_ids`: `[(h / 2)·(w / 2), 3]` coordinates `(0, row,
/// column)` of the packed tokens of `h × w` latents.
pub fn latent_image_ids(h: usize, w: usize, device: &Device) -> Tensor<2> {
    let (rows, cols) = (h / 2, w / 2);
    let ids: Vec<f32> = (0..rows)
        .flat_map(|r| (0..cols).flat_map(move |c| [0.0, r as f32, c as f32]))
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows * cols, 3]), device)
}
