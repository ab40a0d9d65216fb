//! CLIP configs, mirroring transformers' `CLIPTextConfig`, `CLIPVisionConfig`, `CLIPConfig`.

use mm_core::config::Checks;
use mm_core::nn::Activation;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::encoder::{EncoderDims, encoder_dims};

/// `CLIPTextConfig` (the `text_config` of a CLIP model, or Stable Diffusion's
/// `text_encoder/config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Width of the text projection.
    pub projection_dim: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Maximum sequence length.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
    /// Beginning-of-text token id.
    pub bos_token_id: Option<i64>,
    /// End-of-text token id. The legacy value `2` (old configs) means "pool at the largest
    /// token id", which is where OpenAI's tokenizer puts `<|endoftext|>`.
    pub eos_token_id: Option<i64>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

impl ClipTextConfig {
    /// Fails with [`mm_core::Error::InvalidConfig`] on sizes the tower cannot be built from
    /// (e.g. `hidden_size` not a multiple of `num_attention_heads`) and with
    /// [`mm_core::Error::TooLarge`] when its weights would not fit in the memory limit.
    pub fn validate(&self) -> Result<()> {
        Checks::new("CLIPTextConfig").positive(&[
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        let embeddings = self.vocab_size as f64 + self.max_position_embeddings as f64;
        self.dims().check(
            "CLIPTextConfig",
            self.hidden_size as f64 * (embeddings + self.projection_dim as f64),
        )
    }

    pub(crate) fn dims(&self) -> EncoderDims {
        encoder_dims!(self)
    }
}

/// `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Width of the visual projection.
    pub projection_dim: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// Fails with [`mm_core::Error::InvalidConfig`] on sizes the tower cannot be built from
    /// (heads that do not divide `hidden_size`, a zero or too large `patch_size`) and with
    /// [`mm_core::Error::TooLarge`] when its weights would not fit in the memory limit.
    pub fn validate(&self) -> Result<()> {
        self.dims().check_vision(
            "CLIPVisionConfig",
            (self.image_size, self.patch_size, self.num_channels),
            self.hidden_size as f64 * self.projection_dim as f64,
        )
    }

    pub(crate) fn dims(&self) -> EncoderDims {
        encoder_dims!(self)
    }

    /// Number of patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// `CLIPConfig`: both towers and the shared projection size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    /// Text tower.
    pub text_config: ClipTextConfig,
    /// Vision tower.
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (a trained checkpoint overrides it).
    pub logit_scale_init_value: f64,
}

impl ClipConfig {
    /// Validates both towers (see [`ClipTextConfig::validate`]) and the projection size.
    pub fn validate(&self) -> Result<()> {
        Checks::new("CLIPConfig").positive(&[("projection_dim", self.projection_dim)])?;
        self.text_config.validate()?;
        self.vision_config.validate()
    }
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}
