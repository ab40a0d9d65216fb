//! `SiglipModel` and the standalone towers.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};
use mm_core::weights::Weights;

use super::config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
use super::text::SiglipTextTransformer;
use super::vision::SiglipVisionTransformer;
use crate::contrastive::{ContrastiveOutput, Scoring};
use crate::loading::{select_tower, without_buffers};
use crate::output::TowerOutput;
use crate::{Pretrained, Result};

const SIGLIP_PARTS: [&str; 4] = ["text_model", "vision_model", "logit_scale", "logit_bias"];

/// `SiglipModel` (`google/siglip-base-patch16-224`, ...).
#[derive(Module, Debug)]
pub struct SiglipModel {
    /// Text transformer.
    pub text_model: SiglipTextTransformer,
    /// Vision transformer.
    pub vision_model: SiglipVisionTransformer,
    /// Log of the similarity scale `[1]`.
    pub logit_scale: Param<Tensor<1>>,
    /// Similarity bias `[1]`.
    pub logit_bias: Param<Tensor<1>>,
}

impl SiglipModel {
    /// A randomly initialised model.
    pub fn new(config: &SiglipConfig, device: &Device) -> Result<Self> {
        Ok(Self {
            text_model: SiglipTextTransformer::new(&config.text_config, device)?,
            vision_model: SiglipVisionTransformer::new(&config.vision_config, device)?,
            logit_scale: Initializer::Constant { value: 10f64.ln() }.init([1], device),
            logit_bias: Initializer::Constant { value: -10.0 }.init([1], device),
        })
    }

    /// Text embeddings `[batch, dim]`, unnormalised (transformers' `get_text_features`).
    pub fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>> {
        Ok(self
            .text_model
            .forward(input_ids, attention_mask)?
            .pooler_output)
    }

    /// Image embeddings `[batch, dim]`, unnormalised (transformers' `get_image_features`).
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        Ok(self.vision_model.forward(pixel_values)?.pooler_output)
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
            text_output.pooler_output.clone(),
            vision_output.pooler_output.clone(),
        );
        Ok(ContrastiveOutput::new(
            text_output,
            vision_output,
            features,
            |t, i| self.similarity(t, i),
            Scoring::Sigmoid,
        ))
    }

    /// `exp(logit_scale) · text · imageᵀ + logit_bias` for normalised embeddings:
    /// `[texts, images]`.
    pub fn similarity(&self, text_embeds: Tensor<2>, image_embeds: Tensor<2>) -> Tensor<2> {
        let scale = self.logit_scale.val().exp().reshape([1, 1]);
        let bias = self.logit_bias.val().reshape([1, 1]);
        text_embeds.matmul(image_embeds.transpose()) * scale + bias
    }
}

/// `SiglipTextModel`: the text tower alone.
#[derive(Module, Debug)]
pub struct SiglipTextModel {
    /// The transformer (`text_model.*`).
    pub text_model: SiglipTextTransformer,
}

impl SiglipTextModel {
    /// See [`SiglipTextTransformer::forward`].
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<TowerOutput> {
        self.text_model.forward(input_ids, attention_mask)
    }
}

/// `SiglipVisionModel`: the vision tower alone (PaliGemma-style vision encoders).
#[derive(Module, Debug)]
pub struct SiglipVisionModel {
    /// The transformer (`vision_model.*`).
    pub vision_model: SiglipVisionTransformer,
}

impl SiglipVisionModel {
    /// See [`SiglipVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        self.vision_model.forward(pixel_values)
    }
}

impl Pretrained for SiglipModel {
    type Config = SiglipConfig;

    fn from_weights(config: &SiglipConfig, weights: Weights, device: &Device) -> Result<Self> {
        Ok(without_buffers(weights).load_into(Self::new(config, device)?)?)
    }
}

impl Pretrained for SiglipTextModel {
    type Config = SiglipTextConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        SiglipTextConfig::from_file(path)
    }

    fn from_weights(config: &SiglipTextConfig, weights: Weights, device: &Device) -> Result<Self> {
        let module = Self {
            text_model: SiglipTextTransformer::new(config, device)?,
        };
        Ok(select_tower(weights, "text_model", &[], &SIGLIP_PARTS).load_into(module)?)
    }
}

impl Pretrained for SiglipVisionModel {
    type Config = SiglipVisionConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        SiglipVisionConfig::from_file(path)
    }

    fn from_weights(
        config: &SiglipVisionConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        let module = Self {
            vision_model: SiglipVisionTransformer::new(config, device)?,
        };
        Ok(select_tower(weights, "vision_model", &[], &SIGLIP_PARTS).load_into(module)?)
    }
}

/// What [`SiglipModel::forward`] returns.
pub type SiglipOutput = ContrastiveOutput;
