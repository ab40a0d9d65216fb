//! `SiglipModel` and the standalone towers.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};
use mm_core::hub::ModelDir;
use mm_core::weights::Weights;

use super::config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
use super::text::SiglipTextTransformer;
use super::vision::SiglipVisionTransformer;
use crate::Result;
use crate::contrastive::{l2_normalize, siglip_loss};
use crate::loading::{select_tower, without_buffers};
use crate::output::TowerOutput;

const SIGLIP_PARTS: [&str; 4] = ["text_model", "vision_model", "logit_scale", "logit_bias"];

/// Everything [`SiglipModel::forward`] computes.
#[derive(Debug, Clone)]
pub struct SiglipOutput {
    /// `exp(logit_scale) · cos + logit_bias`, `[images, texts]`; `sigmoid` of it is the
    /// probability that the pair matches.
    pub logits_per_image: Tensor<2>,
    /// The same, `[texts, images]`.
    pub logits_per_text: Tensor<2>,
    /// L2-normalised text embeddings.
    pub text_embeds: Tensor<2>,
    /// L2-normalised image embeddings.
    pub image_embeds: Tensor<2>,
    /// The text tower's outputs.
    pub text_output: TowerOutput,
    /// The vision tower's outputs.
    pub vision_output: TowerOutput,
}

impl SiglipOutput {
    /// The pairwise sigmoid loss (`return_loss=True` in transformers).
    pub fn loss(&self) -> Tensor<1> {
        siglip_loss(self.logits_per_text.clone())
    }
}

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
    pub fn new(config: &SiglipConfig, device: &Device) -> Self {
        Self {
            text_model: SiglipTextTransformer::new(&config.text_config, device),
            vision_model: SiglipVisionTransformer::new(&config.vision_config, device),
            logit_scale: Initializer::Constant { value: 10f64.ln() }.init([1], device),
            logit_bias: Initializer::Constant { value: -10.0 }.init([1], device),
        }
    }

    /// Loads a model folder or cached repo id (`config.json` + `model.safetensors`).
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config: SiglipConfig = mm_core::config::read_json(dir.file("config.json")?)?;
        Self::from_weights(&config, dir.weights()?, device)
    }

    /// Builds the model from a config and loads `weights` into it strictly.
    pub fn from_weights(config: &SiglipConfig, weights: Weights, device: &Device) -> Result<Self> {
        Ok(without_buffers(weights).load_into(Self::new(config, device))?)
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
    ) -> Result<SiglipOutput> {
        let text_output = self.text_model.forward(input_ids, attention_mask)?;
        let vision_output = self.vision_model.forward(pixel_values)?;
        let text_embeds = l2_normalize(text_output.pooler_output.clone());
        let image_embeds = l2_normalize(vision_output.pooler_output.clone());
        let logits_per_text = self.similarity(text_embeds.clone(), image_embeds.clone());
        Ok(SiglipOutput {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            text_embeds,
            image_embeds,
            text_output,
            vision_output,
        })
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
    /// Loads a model folder or cached repo id; reads the text tower of a full SigLIP
    /// checkpoint too.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config = SiglipTextConfig::from_file(&dir.file("config.json")?)?;
        Self::from_weights(&config, dir.weights()?, device)
    }

    /// Builds the model from a config and loads `weights` into it strictly.
    pub fn from_weights(
        config: &SiglipTextConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        let module = Self {
            text_model: SiglipTextTransformer::new(config, device),
        };
        Ok(select_tower(weights, "text_model", &[], &SIGLIP_PARTS).load_into(module)?)
    }

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
    /// Loads a model folder or cached repo id; reads the vision tower of a full SigLIP
    /// checkpoint too.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config = SiglipVisionConfig::from_file(&dir.file("config.json")?)?;
        Self::from_weights(&config, dir.weights()?, device)
    }

    /// Builds the model from a config and loads `weights` into it strictly.
    pub fn from_weights(
        config: &SiglipVisionConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        let module = Self {
            vision_model: SiglipVisionTransformer::new(config, device),
        };
        Ok(select_tower(weights, "vision_model", &[], &SIGLIP_PARTS).load_into(module)?)
    }

    /// See [`SiglipVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        self.vision_model.forward(pixel_values)
    }
}
