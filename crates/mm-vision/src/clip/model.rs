//! `CLIPModel`: both towers, their projections and the learned temperature.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::precision::linear;
use mm_core::weights::Weights;

use super::config::ClipConfig;
use super::text::ClipTextTransformer;
use super::vision::ClipVisionTransformer;
use crate::contrastive::{ContrastiveOutput, Scoring};
use crate::loading::without_buffers;
use crate::{Pretrained, Result};

/// `CLIPModel` (`openai/clip-vit-base-patch32`, `openai/clip-vit-large-patch14`, ...).
#[derive(Module, Debug)]
pub struct ClipModel {
    /// Text transformer.
    pub text_model: ClipTextTransformer,
    /// Vision transformer.
    pub vision_model: ClipVisionTransformer,
    /// Text projection (no bias).
    pub text_projection: Linear,
    /// Image projection (no bias).
    pub visual_projection: Linear,
    /// Log of the similarity temperature.
    pub logit_scale: Param<Tensor<1>>,
}

impl ClipModel {
    /// A randomly initialised model.
    pub fn new(config: &ClipConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let p = config.projection_dim;
        Ok(Self {
            text_model: ClipTextTransformer::new(&config.text_config, device)?,
            vision_model: ClipVisionTransformer::new(&config.vision_config, device)?,
            text_projection: LinearConfig::new(config.text_config.hidden_size, p)
                .with_bias(false)
                .init(device),
            visual_projection: LinearConfig::new(config.vision_config.hidden_size, p)
                .with_bias(false)
                .init(device),
            logit_scale: Initializer::Constant {
                value: config.logit_scale_init_value,
            }
            .init([1], device),
        })
    }

    /// Projected, unnormalised text features `[batch, projection_dim]`
    /// (transformers' `get_text_features`).
    pub fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>> {
        let out = self.text_model.forward(input_ids, attention_mask)?;
        Ok(linear(&self.text_projection, out.pooler_output))
    }

    /// Projected, unnormalised image features `[batch, projection_dim]`
    /// (transformers' `get_image_features`).
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        let out = self.vision_model.forward(pixel_values)?;
        Ok(linear(&self.visual_projection, out.pooler_output))
    }

    /// Runs both towers and scores every image against every text.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        pixel_values: Tensor<4>,
    ) -> Result<ContrastiveOutput> {
        let text_output = self.text_model.forward(input_ids, attention_mask)?;
        let vision_output = self.vision_model.forward(pixel_values)?;
        let features = (
            linear(&self.text_projection, text_output.pooler_output.clone()),
            linear(&self.visual_projection, vision_output.pooler_output.clone()),
        );
        Ok(ContrastiveOutput::new(
            text_output,
            vision_output,
            features,
            |t, i| self.similarity(t, i),
            Scoring::Softmax,
        ))
    }

    /// `exp(logit_scale) · text · imageᵀ` for normalised embeddings: `[texts, images]`.
    pub fn similarity(&self, text_embeds: Tensor<2>, image_embeds: Tensor<2>) -> Tensor<2> {
        let scale = self.logit_scale.val().exp().reshape([1, 1]);
        text_embeds.matmul(image_embeds.transpose()) * scale
    }
}

impl Pretrained for ClipModel {
    type Config = ClipConfig;

    fn from_weights(config: &ClipConfig, weights: Weights, device: &Device) -> Result<Self> {
        Ok(without_buffers(weights).load_into(Self::new(config, device)?)?)
    }
}

/// What [`ClipModel::forward`] returns.
pub type ClipOutput = ContrastiveOutput;
