//! The SigLIP vision tower (`SiglipVisionModel`) with its attention-pooling head.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::nn::{merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::precision::{embedding, linear, matmul};

use super::config::SiglipVisionConfig;
use crate::Result;
use crate::clip::patchify;
use crate::encoder::{Encoder, Mlp};
use crate::output::TowerOutput;

/// Patch and position embeddings (`vision_model.embeddings`); no class token.
#[derive(Module, Debug)]
pub struct SiglipVisionEmbeddings {
    /// Patchify convolution (with bias).
    pub patch_embedding: Conv2d,
    /// Position embeddings `[patches, hidden]`.
    pub position_embedding: Embedding,
}

/// PyTorch's `nn.MultiheadAttention` weights as stored: packed q/k/v projection.
#[derive(Module, Debug)]
pub struct PackedAttention {
    /// `[3 · hidden, hidden]`, rows q then k then v.
    pub in_proj_weight: Param<Tensor<2>>,
    /// `[3 · hidden]`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection.
    pub out_proj: Linear,
    num_heads: usize,
}

impl PackedAttention {
    fn new(d: usize, num_heads: usize, device: &Device) -> Self {
        Self {
            in_proj_weight: Initializer::XavierUniform { gain: 1.0 }.init_with(
                [3 * d, d],
                Some(d),
                Some(3 * d),
                device,
            ),
            in_proj_bias: Initializer::Zeros.init([3 * d], device),
            out_proj: LinearConfig::new(d, d).init(device),
            num_heads,
        }
    }

    fn project(&self, x: Tensor<3>, part: usize) -> Tensor<4> {
        let d = self.out_proj.weight.lazy_shape().to_vec()[0];
        let [batch, seq, _] = x.dims();
        let w = self.in_proj_weight.val().narrow(0, part * d, d);
        let b = self
            .in_proj_bias
            .val()
            .narrow(0, part * d, d)
            .cast(x.dtype());
        let y = matmul(x.reshape([batch * seq, d]), w.transpose()).reshape([batch, seq, d])
            + b.reshape([1, 1, d]);
        split_heads(y, self.num_heads)
    }

    /// Attention of `query` `[batch, q, hidden]` over `context` `[batch, k, hidden]`.
    pub fn forward(&self, query: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let q = self.project(query, 0);
        let k = self.project(context.clone(), 1);
        let v = self.project(context, 2);
        let out = scaled_dot_product_attention(q, k, v, None, false);
        linear(&self.out_proj, merge_heads(out))
    }
}

/// The multihead attention pooling head (`vision_model.head`): a learned probe attends over
/// the patches, followed by a residual MLP.
#[derive(Module, Debug)]
pub struct SiglipPoolingHead {
    /// The learned query `[1, 1, hidden]`.
    pub probe: Param<Tensor<3>>,
    /// Attention of the probe over the patches.
    pub attention: PackedAttention,
    /// Norm before the MLP.
    pub layernorm: LayerNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl SiglipPoolingHead {
    fn new(config: &SiglipVisionConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        Self {
            probe: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, d], device),
            attention: PackedAttention::new(d, config.num_attention_heads, device),
            layernorm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            mlp: Mlp::new(d, config.intermediate_size, config.hidden_act, device),
        }
    }

    /// Pools `[batch, patches, hidden]` into `[batch, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = x.dims();
        let probe = self.probe.val().cast(x.dtype()).expand([b, 1, d]);
        let attended = self.attention.forward(probe, x);
        let out = attended.clone() + self.mlp.forward(self.layernorm.forward(attended));
        out.reshape([b, d])
    }
}

/// The vision transformer (`vision_model`).
#[derive(Module, Debug)]
pub struct SiglipVisionTransformer {
    /// Embeddings.
    pub embeddings: SiglipVisionEmbeddings,
    /// Encoder layers.
    pub encoder: Encoder,
    /// Final LayerNorm.
    pub post_layernorm: LayerNorm,
    /// Attention-pooling head (absent when `vision_use_head` is false).
    pub head: Option<SiglipPoolingHead>,
    num_channels: usize,
    image_size: usize,
}

impl SiglipVisionTransformer {
    /// A randomly initialised vision transformer.
    pub fn new(config: &SiglipVisionConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_size;
        let p = config.patch_size;
        let grid = config.image_size / p;
        Ok(Self {
            embeddings: SiglipVisionEmbeddings {
                patch_embedding: Conv2dConfig::new([config.num_channels, d], [p, p])
                    .with_stride([p, p])
                    .init(device),
                position_embedding: EmbeddingConfig::new(grid * grid, d).init(device),
            },
            encoder: Encoder::new(&config.dims(), device),
            post_layernorm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            head: config
                .vision_use_head
                .then(|| SiglipPoolingHead::new(config, device)),
            num_channels: config.num_channels,
            image_size: config.image_size,
        })
    }

    /// Encodes normalised images. `last_hidden_state` is after `post_layernorm`;
    /// `pooler_output` is the attention-pooled embedding (the mean of the patches when the
    /// model has no head).
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        let patches = patchify(
            &self.embeddings.patch_embedding,
            pixel_values,
            self.num_channels,
            self.image_size,
        )?;
        let [_, n, _] = patches.dims();
        let positions = Tensor::<1, Int>::arange(0..n as i64, &patches.device()).reshape([1, n]);
        let x = patches + embedding(&self.embeddings.position_embedding, positions);
        let (hidden_states, last) = self.encoder.forward(x, None, false);
        let last_hidden_state = self.post_layernorm.forward(last);
        let pooler_output = match &self.head {
            Some(head) => head.forward(last_hidden_state.clone()),
            None => last_hidden_state.clone().mean_dim(1).squeeze_dim(1),
        };
        Ok(TowerOutput {
            last_hidden_state,
            pooler_output,
            hidden_states,
        })
    }
}
