//! The CLIP vision tower: `CLIPVisionModel` and `CLIPVisionModelWithProjection`.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::{conv2d, embedding, linear};
use mm_core::weights::Weights;

use super::config::ClipVisionConfig;
use super::text::CLIP_PARTS;
use crate::encoder::Encoder;
use crate::loading::{read_tower_config, select_tower};
use crate::output::TowerOutput;
use crate::{Error, Pretrained, Result};

/// Patch, class and position embeddings (`vision_model.embeddings`).
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    /// The learned class token `[hidden]`.
    pub class_embedding: Param<Tensor<1>>,
    /// Patchify convolution (no bias).
    pub patch_embedding: Conv2d,
    /// Position embeddings `[patches + 1, hidden]`.
    pub position_embedding: Embedding,
}

/// Turns `[batch, channels, H, W]` images into `[batch, patches, hidden]` with a convolution of
/// stride = kernel = patch size, after checking the input size.
pub(crate) fn patchify(
    conv: &Conv2d,
    pixel_values: Tensor<4>,
    channels: usize,
    image_size: usize,
) -> Result<Tensor<3>> {
    let dims = pixel_values.dims();
    if dims[1] != channels || dims[2] != image_size || dims[3] != image_size {
        return Err(Error::Shape {
            what: "pixel_values",
            expected: format!("[batch, {channels}, {image_size}, {image_size}]"),
            got: dims.to_vec(),
        });
    }
    let x = conv2d(conv, pixel_values);
    let [b, d, gh, gw] = x.dims();
    Ok(x.reshape([b, d, gh * gw]).swap_dims(1, 2))
}

/// The vision transformer (`vision_model`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    /// Embeddings.
    pub embeddings: ClipVisionEmbeddings,
    /// LayerNorm before the encoder (the checkpoint's spelling).
    pub pre_layrnorm: LayerNorm,
    /// Encoder layers.
    pub encoder: Encoder,
    /// LayerNorm applied to the pooled class token.
    pub post_layernorm: LayerNorm,
    num_channels: usize,
    image_size: usize,
}

impl ClipVisionTransformer {
    /// A randomly initialised vision transformer.
    pub fn new(config: &ClipVisionConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_size;
        let p = config.patch_size;
        let norm = LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps);
        Ok(Self {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                }
                .init([d], device),
                patch_embedding: Conv2dConfig::new([config.num_channels, d], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(config.grid() * config.grid() + 1, d)
                    .init(device),
            },
            pre_layrnorm: norm.init(device),
            encoder: Encoder::new(&config.dims(), device),
            post_layernorm: norm.init(device),
            num_channels: config.num_channels,
            image_size: config.image_size,
        })
    }

    /// Encodes normalised images `[batch, 3, image_size, image_size]`. `last_hidden_state`
    /// is the last layer's output (no final norm, as in transformers); `pooler_output` is the
    /// class token after `post_layernorm`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        let patches = patchify(
            &self.embeddings.patch_embedding,
            pixel_values,
            self.num_channels,
            self.image_size,
        )?;
        let [b, n, d] = patches.dims();
        let device = patches.device();
        let class = self
            .embeddings
            .class_embedding
            .val()
            .cast(patches.dtype())
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let positions = Tensor::<1, Int>::arange(0..(n + 1) as i64, &device).reshape([1, n + 1]);
        let x = Tensor::cat(vec![class, patches], 1)
            + embedding(&self.embeddings.position_embedding, positions);
        let x = self.pre_layrnorm.forward(x);
        let (hidden_states, last_hidden_state) = self.encoder.forward(x, None, false);
        let class_token = last_hidden_state.clone().narrow(1, 0, 1).reshape([b, d]);
        let pooler_output = self.post_layernorm.forward(class_token);
        Ok(TowerOutput {
            last_hidden_state,
            pooler_output,
            hidden_states,
        })
    }
}

/// `CLIPVisionModel`: the vision transformer alone (LLaVA's vision tower).
#[derive(Module, Debug)]
pub struct ClipVisionModel {
    /// The transformer (`vision_model.*`).
    pub vision_model: ClipVisionTransformer,
}

impl ClipVisionModel {
    /// A randomly initialised model.
    pub fn new(config: &ClipVisionConfig, device: &Device) -> Result<Self> {
        Ok(Self {
            vision_model: ClipVisionTransformer::new(config, device)?,
        })
    }

    /// See [`ClipVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        self.vision_model.forward(pixel_values)
    }
}

/// `CLIPVisionModelWithProjection`: the vision transformer and `visual_projection`
/// (IP-Adapter's image encoder).
#[derive(Module, Debug)]
pub struct ClipVisionModelWithProjection {
    /// The transformer (`vision_model.*`).
    pub vision_model: ClipVisionTransformer,
    /// Projection of the pooled output into the shared embedding space (no bias).
    pub visual_projection: Linear,
}

impl ClipVisionModelWithProjection {
    /// A randomly initialised model.
    pub fn new(config: &ClipVisionConfig, device: &Device) -> Result<Self> {
        Self::with_projection_dim(config, config.projection_dim, device)
    }

    pub(crate) fn with_projection_dim(
        config: &ClipVisionConfig,
        projection_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            vision_model: ClipVisionTransformer::new(config, device)?,
            visual_projection: LinearConfig::new(config.hidden_size, projection_dim)
                .with_bias(false)
                .init(device),
        })
    }

    /// Runs the tower; returns its outputs and the projected (unnormalised) `image_embeds`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<(TowerOutput, Tensor<2>)> {
        let out = self.vision_model.forward(pixel_values)?;
        let embeds = linear(&self.visual_projection, out.pooler_output.clone());
        Ok((out, embeds))
    }
}

impl ClipVisionConfig {
    /// Reads a `CLIPVisionConfig` file, or the `vision_config` of a `CLIPConfig` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_tower_config(path, "vision_config")
    }
}

impl Pretrained for ClipVisionModel {
    type Config = ClipVisionConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        ClipVisionConfig::from_file(path)
    }

    fn from_weights(config: &ClipVisionConfig, weights: Weights, device: &Device) -> Result<Self> {
        let weights = select_tower(weights, "vision_model", &[], &CLIP_PARTS);
        Ok(weights.load_into(Self::new(config, device)?)?)
    }
}

impl Pretrained for ClipVisionModelWithProjection {
    type Config = ClipVisionConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        ClipVisionConfig::from_file(path)
    }

    fn from_weights(config: &ClipVisionConfig, weights: Weights, device: &Device) -> Result<Self> {
        let projection_dim = weights
            .shape("visual_projection.weight")
            .map(|s| s[0])
            .unwrap_or(config.projection_dim);
        let weights = select_tower(
            weights,
            "vision_model",
            &["visual_projection.weight"],
            &CLIP_PARTS,
        );
        Ok(weights.load_into(Self::with_projection_dim(config, projection_dim, device)?)?)
    }
}
