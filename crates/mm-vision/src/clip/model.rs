//! `CLIPModel`: both towers, their projections and the learned temperature.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::hub::ModelDir;
use mm_core::weights::Weights;

use super::config::ClipConfig;
use super::text::ClipTextTransformer;
use super::vision::ClipVisionTransformer;
use crate::Result;
use crate::contrastive::{clip_loss, l2_normalize};
use crate::loading::without_buffers;
use crate::output::TowerOutput;

/// Everything [`ClipModel::forward`] computes.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Scaled cosine similarities `[images, texts]`.
    pub logits_per_image: Tensor<2>,
    /// Scaled cosine similarities `[texts, images]`.
    pub logits_per_text: Tensor<2>,
    /// L2-normalised text embeddings `[texts, projection_dim]`.
    pub text_embeds: Tensor<2>,
    /// L2-normalised image embeddings `[images, projection_dim]`.
    pub image_embeds: Tensor<2>,
    /// The text tower's outputs.
    pub text_output: TowerOutput,
    /// The vision tower's outputs.
    pub vision_output: TowerOutput,
}

impl ClipOutput {
    /// The symmetric contrastive loss (`return_loss=True` in transformers); needs as many
    /// texts as images, pair `i` matching.
    pub fn loss(&self) -> Tensor<1> {
        clip_loss(self.logits_per_text.clone())
    }
}

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
    pub fn new(config: &ClipConfig, device: &Device) -> Self {
        let p = config.projection_dim;
        Self {
            text_model: ClipTextTransformer::new(&config.text_config, device),
            vision_model: ClipVisionTransformer::new(&config.vision_config, device),
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
        }
    }

    /// Loads a model folder or cached repo id (`config.json` + `model.safetensors`).
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config: ClipConfig = mm_core::config::read_json(dir.file("config.json")?)?;
        Self::from_weights(&config, dir.weights()?, device)
    }

    /// Builds the model from a config and loads `weights` into it strictly.
    pub fn from_weights(config: &ClipConfig, weights: Weights, device: &Device) -> Result<Self> {
        Ok(without_buffers(weights).load_into(Self::new(config, device))?)
    }

    /// Projected, unnormalised text features `[batch, projection_dim]`
    /// (transformers' `get_text_features`).
    pub fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>> {
        let out = self.text_model.forward(input_ids, attention_mask)?;
        Ok(self.text_projection.forward(out.pooler_output))
    }

    /// Projected, unnormalised image features `[batch, projection_dim]`
    /// (transformers' `get_image_features`).
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        let out = self.vision_model.forward(pixel_values)?;
        Ok(self.visual_projection.forward(out.pooler_output))
    }

    /// Runs both towers and scores every image against every text.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        pixel_values: Tensor<4>,
    ) -> Result<ClipOutput> {
        let text_output = self.text_model.forward(input_ids, attention_mask)?;
        let vision_output = self.vision_model.forward(pixel_values)?;
        let text_embeds = l2_normalize(
            self.text_projection
                .forward(text_output.pooler_output.clone()),
        );
        let image_embeds = l2_normalize(
            self.visual_projection
                .forward(vision_output.pooler_output.clone()),
        );
        let logits_per_text = self.similarity(text_embeds.clone(), image_embeds.clone());
        Ok(ClipOutput {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            text_embeds,
            image_embeds,
            text_output,
            vision_output,
        })
    }

    /// `exp(logit_scale) · text · imageᵀ` for normalised embeddings: `[texts, images]`.
    pub fn similarity(&self, text_embeds: Tensor<2>, image_embeds: Tensor<2>) -> Tensor<2> {
        let scale = self.logit_scale.val().exp().reshape([1, 1]);
        text_embeds.matmul(image_embeds.transpose()) * scale
    }
}
