//! The `Resampler` of IP-Adapter Plus (`ip-adapter-plus_sd15`, `ip-adapter-plus_sdxl_vit-h`):
//! learned query latents that attend (Perceiver-style) to the image encoder's penultimate
//! hidden states, giving a fixed number of cross-attention tokens per image. Numerically
//! diffusers' `IPAdapterPlusImageProjection`; the modules carry the checkpoint's names
//! (`layers.{i}.0` the attention, `layers.{i}.1` the feed-forward).

use burn::module::{Module, Param};
use burn::nn::{Gelu, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{Activation, merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::{compute_dtype_of, linear};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The sizes of a [`Resampler`], with the names of IP-Adapter's constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResamplerConfig {
    /// Width of the latents (768 for SD 1.5 Plus, 1280 for SDXL Plus).
    pub dim: usize,
    /// Attention + feed-forward layers (4).
    pub depth: usize,
    /// Width of an attention head (64).
    pub dim_head: usize,
    /// Attention heads (12 for SD 1.5 Plus, 20 for SDXL Plus).
    pub heads: usize,
    /// Output tokens per image (16).
    pub num_queries: usize,
    /// Width of the image features: the image encoder's hidden size (1280 for ViT-H).
    pub embedding_dim: usize,
    /// Width of the tokens: the UNet's cross-attention width.
    pub output_dim: usize,
    /// Feed-forward expansion (4).
    pub ff_mult: usize,
}

impl ResamplerConfig {
    fn validate(&self) -> Result<()> {
        let sizes = [
            self.dim,
            self.depth,
            self.dim_head,
            self.heads,
            self.num_queries,
            self.embedding_dim,
            self.output_dim,
            self.ff_mult,
        ];
        if sizes.contains(&0) {
            return Err(Error::Config(format!(
                "Resampler sizes must be positive: {self:?}"
            )));
        }
        Ok(())
    }
}

/// Cross-attention of the latents to the image features and themselves (`layers.{i}.0`):
/// `norm1` on the features, `norm2` on the latents, bias-free `to_q`, fused `to_kv` and
/// `to_out`.
#[derive(Module, Debug)]
pub struct PerceiverAttention {
    /// Norm of the image features.
    pub norm1: LayerNorm,
    /// Norm of the latents.
    pub norm2: LayerNorm,
    /// Query projection of the latents.
    pub to_q: Linear,
    /// Key and value projections (stacked) of the features followed by the latents.
    pub to_kv: Linear,
    /// Output projection.
    pub to_out: Linear,
    #[module(skip)]
    heads: usize,
}

impl PerceiverAttention {
    fn new(config: &ResamplerConfig, device: &Device) -> Self {
        let (dim, inner) = (config.dim, config.heads * config.dim_head);
        let proj =
            |from: usize, to: usize| LinearConfig::new(from, to).with_bias(false).init(device);
        Self {
            norm1: LayerNormConfig::new(dim).init(device),
            norm2: LayerNormConfig::new(dim).init(device),
            to_q: proj(dim, inner),
            to_kv: proj(dim, 2 * inner),
            to_out: proj(inner, dim),
            heads: config.heads,
        }
    }

    /// The attention output `[batch, queries, dim]` for image features `x` `[batch, n, dim]`
    /// and `latents` `[batch, queries, dim]`.
    pub fn forward(&self, x: Tensor<3>, latents: Tensor<3>) -> Tensor<3> {
        let x = self.norm1.forward(x);
        let latents = self.norm2.forward(latents);
        let q = split_heads(linear(&self.to_q, latents.clone()), self.heads);
        let kv = linear(&self.to_kv, Tensor::cat(vec![x, latents], 1));
        let inner = kv.dims()[2] / 2;
        let k = split_heads(kv.clone().narrow(2, 0, inner), self.heads);
        let v = split_heads(kv.narrow(2, inner, inner), self.heads);
        let out = merge_heads(scaled_dot_product_attention(q, k, v, None, false));
        linear(&self.to_out, out)
    }
}

/// One entry of the feed-forward (`nn.Sequential(LayerNorm, Linear, GELU, Linear)`, the
/// linears without bias).
#[derive(Module, Debug)]
pub enum FeedForwardLayer {
    /// `.0`.
    Norm(LayerNorm),
    /// `.1` and `.3`.
    Linear(Linear),
    /// `.2` (exact GELU).
    Gelu(Gelu),
}

/// One entry of a resampler layer (`nn.ModuleList([PerceiverAttention, FeedForward])`); each
/// is added to the latents in turn.
// Two per layer, and burn modules cannot be boxed: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResamplerBlock {
    /// `layers.{i}.0`.
    Attention(PerceiverAttention),
    /// `layers.{i}.1`.
    FeedForward(Vec<FeedForwardLayer>),
}

impl ResamplerBlock {
    /// The residual update of the latents.
    fn forward(&self, x: &Tensor<3>, latents: Tensor<3>) -> Tensor<3> {
        match self {
            ResamplerBlock::Attention(attention) => attention.forward(x.clone(), latents),
            ResamplerBlock::FeedForward(layers) => {
                layers.iter().fold(latents, |h, layer| match layer {
                    FeedForwardLayer::Norm(norm) => norm.forward(h),
                    FeedForwardLayer::Linear(proj) => linear(proj, h),
                    FeedForwardLayer::Gelu(_) => Activation::Gelu.forward(h),
                })
            }
        }
    }
}

/// IP-Adapter Plus's image projection: `[images, n, embedding_dim]` features →
/// `[images, num_queries, output_dim]` tokens.
#[derive(Module, Debug)]
pub struct Resampler {
    /// The learned queries `[1, num_queries, dim]`.
    pub latents: Param<Tensor<3>>,
    /// Projection of the image features to `dim`.
    pub proj_in: Linear,
    /// `depth` layers of `[attention, feed-forward]`.
    pub layers: Vec<Vec<ResamplerBlock>>,
    /// Projection of the latents to `output_dim`.
    pub proj_out: Linear,
    /// Final layer norm.
    pub norm_out: LayerNorm,
}

impl Resampler {
    /// A randomly initialised resampler; [`Error::Config`] when a size is 0.
    pub fn new(config: &ResamplerConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let dim = config.dim;
        let inner = dim * config.ff_mult;
        let bias_free =
            |from: usize, to: usize| LinearConfig::new(from, to).with_bias(false).init(device);
        let layer = || {
            vec![
                ResamplerBlock::Attention(PerceiverAttention::new(config, device)),
                ResamplerBlock::FeedForward(vec![
                    FeedForwardLayer::Norm(LayerNormConfig::new(dim).init(device)),
                    FeedForwardLayer::Linear(bias_free(dim, inner)),
                    FeedForwardLayer::Gelu(Gelu::new()),
                    FeedForwardLayer::Linear(bias_free(inner, dim)),
                ]),
            ]
        };
        Ok(Self {
            latents: Initializer::Normal {
                mean: 0.0,
                std: 1.0 / (dim as f64).sqrt(),
            }
            .init([1, config.num_queries, dim], device),
            proj_in: LinearConfig::new(config.embedding_dim, dim).init(device),
            layers: (0..config.depth).map(|_| layer()).collect(),
            proj_out: LinearConfig::new(dim, config.output_dim).init(device),
            norm_out: LayerNormConfig::new(config.output_dim).init(device),
        })
    }

    /// Tokens per image.
    pub fn num_tokens(&self) -> usize {
        self.latents.lazy_shape().to_vec()[1]
    }

    /// The width of the image features it takes.
    pub fn input_dim(&self) -> usize {
        self.proj_in.weight.lazy_shape().to_vec()[0]
    }

    /// `[images, n, embedding_dim]` image features → `[images, num_queries, output_dim]`
    /// (computed in the weights' compute dtype).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let dtype = compute_dtype_of(&self.proj_in.weight.val());
        let batch = x.dims()[0];
        let x = linear(&self.proj_in, x.cast(dtype));
        let mut latents = self.latents.val().cast(dtype).repeat_dim(0, batch);
        for block in self.layers.iter().flatten() {
            latents = block.forward(&x, latents.clone()) + latents;
        }
        self.norm_out.forward(linear(&self.proj_out, latents))
    }
}
