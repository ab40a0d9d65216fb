//! `ImageProjModel` of IP-Adapter (`ip-adapter_sd15`, `ip-adapter_sdxl(_vit-h)`): the CLIP
//! image embedding projected to a few cross-attention tokens (diffusers' `ImageProjection`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::{compute_dtype_of, linear};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The sizes of an [`ImageProjModel`], with the names of IP-Adapter's constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProjModelConfig {
    /// Width of the tokens: the UNet's cross-attention width (768 for SD 1.5, 2048 for SDXL).
    pub cross_attention_dim: usize,
    /// Width of the image embedding: the image encoder's `projection_dim` (1024 for ViT-H).
    pub clip_embeddings_dim: usize,
    /// Tokens per image (4 in every published file).
    pub clip_extra_context_tokens: usize,
}

/// `proj` (a linear map to `tokens × cross_attention_dim`), reshaped to tokens, then `norm`.
#[derive(Module, Debug)]
pub struct ImageProjModel {
    /// `clip_embeddings_dim → clip_extra_context_tokens × cross_attention_dim`.
    pub proj: Linear,
    /// Layer norm of each token.
    pub norm: LayerNorm,
    #[module(skip)]
    tokens: usize,
}

impl ImageProjModel {
    /// A randomly initialised projection; [`Error::Config`] when a size is 0.
    pub fn new(config: &ImageProjModelConfig, device: &Device) -> Result<Self> {
        let width = config.cross_attention_dim;
        if width == 0 || config.clip_embeddings_dim == 0 || config.clip_extra_context_tokens == 0 {
            return Err(Error::Config(format!(
                "ImageProjModel sizes must be positive: {config:?}"
            )));
        }
        Ok(Self {
            proj: LinearConfig::new(
                config.clip_embeddings_dim,
                config.clip_extra_context_tokens * width,
            )
            .init(device),
            norm: LayerNormConfig::new(width).init(device),
            tokens: config.clip_extra_context_tokens,
        })
    }

    /// Tokens per image.
    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// The width of the image embeddings it takes.
    pub fn input_dim(&self) -> usize {
        self.proj.weight.lazy_shape().to_vec()[0]
    }

    /// `[images, clip_embeddings_dim]` image embeddings → `[images, tokens,
    /// cross_attention_dim]` (computed in the weights' compute dtype).
    pub fn forward(&self, image_embeds: Tensor<2>) -> Tensor<3> {
        let [n, _] = image_embeds.dims();
        let x = image_embeds.cast(compute_dtype_of(&self.proj.weight.val()));
        let x = linear(&self.proj, x);
        let width = x.dims()[1] / self.tokens;
        self.norm.forward(x.reshape([n, self.tokens, width]))
    }
}
