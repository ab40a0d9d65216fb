//! diffusers' `Transformer2DModel` for continuous inputs (the spatial transformer of the UNet)
//! and its `BasicTransformerBlock`: self-attention, cross-attention to the text, GEGLU
//! feed-forward, each pre-normed with a layer norm and residual.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, GroupNorm, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{Activation, geglu};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::{conv2d, linear};

use super::attention::Attention;
use crate::vae::layers::{conv, group_norm_layer};
use mm_core::nn::group_norm;

/// Epsilon of the transformer's input group norm.
const GROUP_NORM_EPS: f64 = 1e-6;
/// Epsilon of the transformer blocks' layer norms.
const LAYER_NORM_EPS: f64 = 1e-5;

/// What the cross-attention layers read besides the feature map.
#[derive(Debug, Clone, Copy)]
pub struct CrossAttnContext<'a> {
    /// The text embeddings `[batch, tokens, cross_attention_dim]`.
    pub encoder_hidden_states: &'a Tensor<3>,
    /// IP-Adapter image tokens, one `[batch, tokens, dim]` set per adapter.
    pub image_tokens: Option<&'a [Tensor<3>]>,
    /// Queries attended at once (`None`: all).
    pub chunk: Option<usize>,
}

/// `proj_in` / `proj_out`: a 1×1 convolution (Stable Diffusion 1.x) or a linear layer
/// (`use_linear_projection`: 2.x, SDXL). Same tensor names either way.
#[derive(Module, Debug)]
pub enum Projection {
    /// 1×1 convolution on `[batch, channels, H, W]`.
    Conv(Conv2d),
    /// Linear layer on `[batch, H·W, channels]`.
    Linear(Linear),
}

/// The input layer of the feed-forward (`ff.net.0`): diffusers' `GEGLU` (`a · gelu(b)` with
/// `[a, b] = proj(x)` split in halves) or `GELU` (`gelu(proj(x))`).
#[derive(Module, Debug)]
pub struct GeluProjection {
    /// Projection to the inner width (twice it for GEGLU).
    pub proj: Linear,
}

/// One entry of the feed-forward's `net` (`nn.ModuleList([GEGLU | GELU, Dropout, Linear])`).
#[derive(Module, Debug)]
pub enum FeedForwardLayer {
    /// `net.0`.
    Gelu(GeluProjection),
    /// `net.1` (identity at inference).
    Dropout(Dropout),
    /// `net.2`.
    Linear(Linear),
}

/// The `activation_fn` of a [`FeedForward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedForwardActivation {
    /// `"geglu"` (the UNet's transformer blocks).
    #[default]
    Geglu,
    /// `"gelu-approximate"`: tanh-approximated GELU (the diffusion transformers' blocks).
    GeluTanh,
}

/// diffusers' `FeedForward` with 4× inner width: `activation_fn="geglu"` or
/// `"gelu-approximate"`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `[GEGLU | GELU, Dropout, Linear]`.
    pub net: Vec<FeedForwardLayer>,
    #[module(skip)]
    activation: FeedForwardActivation,
}

impl FeedForward {
    /// A randomly initialised GEGLU feed-forward over `dim` features.
    pub fn new(dim: usize, device: &Device) -> Self {
        Self::with_activation(dim, FeedForwardActivation::Geglu, device)
    }

    /// A randomly initialised feed-forward over `dim` features with `activation`.
    pub fn with_activation(dim: usize, activation: FeedForwardActivation, device: &Device) -> Self {
        let inner = 4 * dim;
        let proj = match activation {
            FeedForwardActivation::Geglu => 2 * inner,
            FeedForwardActivation::GeluTanh => inner,
        };
        Self {
            net: vec![
                FeedForwardLayer::Gelu(GeluProjection {
                    proj: LinearConfig::new(dim, proj).init(device),
                }),
                FeedForwardLayer::Dropout(DropoutConfig::new(0.0).init()),
                FeedForwardLayer::Linear(LinearConfig::new(inner, dim).init(device)),
            ],
            activation,
        }
    }

    /// Applies the feed-forward to `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.net.iter().fold(x, |x, layer| match layer {
            FeedForwardLayer::Gelu(layer) => {
                let h = linear(&layer.proj, x);
                match self.activation {
                    FeedForwardActivation::Geglu => geglu(h),
                    FeedForwardActivation::GeluTanh => Activation::GeluTanh.forward(h),
                }
            }
            FeedForwardLayer::Dropout(_) => x,
            FeedForwardLayer::Linear(layer) => linear(layer, x),
        })
    }
}

/// diffusers' `BasicTransformerBlock` (`norm_type="layer_norm"`).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// Norm before the self-attention.
    pub norm1: LayerNorm,
    /// Self-attention (cross-attention with `only_cross_attention`).
    pub attn1: Attention,
    /// Norm before the cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention to the text.
    pub attn2: Attention,
    /// Norm before the feed-forward.
    pub norm3: LayerNorm,
    /// GEGLU feed-forward.
    pub ff: FeedForward,
    #[module(skip)]
    only_cross_attention: bool,
}

/// How the transformers of one block are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerOptions {
    /// Attention heads (each `channels / heads` wide).
    pub heads: usize,
    /// Width of the text embeddings.
    pub cross_attention_dim: usize,
    /// Transformer blocks in the model.
    pub layers: usize,
    /// Groups of the input group norm.
    pub groups: usize,
    /// Linear rather than 1×1 convolution `proj_in`/`proj_out`.
    pub linear_projection: bool,
    /// `attn1` attends to the text instead of the feature map.
    pub only_cross_attention: bool,
    /// Attention in f32 for half-precision weights.
    pub upcast_attention: bool,
}

impl BasicTransformerBlock {
    /// A randomly initialised block over `dim` features.
    pub fn new(dim: usize, options: &TransformerOptions, device: &Device) -> Self {
        let norm = || {
            LayerNormConfig::new(dim)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device)
        };
        let (heads, cross) = (options.heads, options.cross_attention_dim);
        let attn1_context = if options.only_cross_attention {
            cross
        } else {
            dim
        };
        let upcast = options.upcast_attention;
        Self {
            norm1: norm(),
            attn1: Attention::new(dim, attn1_context, heads, dim / heads, upcast, device),
            norm2: norm(),
            attn2: Attention::new(dim, cross, heads, dim / heads, upcast, device),
            norm3: norm(),
            ff: FeedForward::new(dim, device),
            only_cross_attention: options.only_cross_attention,
        }
    }

    /// Applies the block to `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>, ctx: &CrossAttnContext) -> Tensor<3> {
        let text = Some(ctx.encoder_hidden_states);
        let context1 = if self.only_cross_attention {
            text
        } else {
            None
        };
        let attn1 = |x: Tensor<3>| self.attn1.forward(x, context1, None, ctx.chunk);
        let attn2 = |x: Tensor<3>| self.attn2.forward(x, text, ctx.image_tokens, ctx.chunk);
        let x = x.clone() + attn1(self.norm1.forward(x));
        let x = x.clone() + attn2(self.norm2.forward(x));
        x.clone() + self.ff.forward(self.norm3.forward(x))
    }
}

/// diffusers' `Transformer2DModel` on a feature map: group norm, `proj_in`, transformer
/// blocks over the `H·W` tokens, `proj_out`, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// Input group norm.
    pub norm: GroupNorm,
    /// Input projection.
    pub proj_in: Projection,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Output projection.
    pub proj_out: Projection,
}

impl Transformer2DModel {
    /// A randomly initialised transformer over `channels` (inner width = `channels`).
    pub fn new(channels: usize, options: &TransformerOptions, device: &Device) -> Self {
        let projection = || {
            if options.linear_projection {
                Projection::Linear(LinearConfig::new(channels, channels).init(device))
            } else {
                Projection::Conv(conv(channels, channels, 1, true, device))
            }
        };
        Self {
            norm: group_norm_layer(options.groups, channels, GROUP_NORM_EPS, device),
            proj_in: projection(),
            transformer_blocks: (0..options.layers)
                .map(|_| BasicTransformerBlock::new(channels, options, device))
                .collect(),
            proj_out: projection(),
        }
    }

    /// Applies the transformer to `[batch, channels, H, W]`.
    pub fn forward(&self, x: Tensor<4>, ctx: &CrossAttnContext) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let to_tokens = |t: Tensor<4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let normed = group_norm(&self.norm, x.clone(), None);
        let tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv2d(conv, normed)),
            Projection::Linear(layer) => linear(layer, to_tokens(normed)),
        };
        let tokens =
            (self.transformer_blocks.iter()).fold(tokens, |t, block| block.forward(t, ctx));
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv2d(conv, to_map(tokens)),
            Projection::Linear(layer) => to_map(linear(layer, tokens)),
        };
        out + x
    }
}
