//! SigLIP configs, mirroring transformers' `SiglipTextConfig`, `SiglipVisionConfig`,
//! `SiglipConfig`.

use std::path::Path;

use mm_core::config::Checks;
use mm_core::nn::Activation;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::encoder::{EncoderDims, encoder_dims};
use crate::loading::read_tower_config;

/// `SiglipTextConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Maximum sequence length (texts are padded to it).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Output width of the text head (defaults to `hidden_size`).
    pub projection_size: Option<usize>,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
}

impl Default for SiglipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: Activation::GeluTanh,
            layer_norm_eps: 1e-6,
            projection_size: None,
            pad_token_id: Some(1),
        }
    }
}

impl SiglipTextConfig {
    /// Fails with [`mm_core::Error::InvalidConfig`] on sizes the tower cannot be built from
    /// (e.g. `hidden_size` not a multiple of `num_attention_heads`) and with
    /// [`mm_core::Error::TooLarge`] when its weights would not fit in the memory limit.
    pub fn validate(&self) -> Result<()> {
        Checks::new("SiglipTextConfig").positive(&[
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        let d = self.hidden_size as f64;
        let head = self.projection_size.map_or(d, |p| p as f64);
        self.dims().check(
            "SiglipTextConfig",
            d * (self.vocab_size as f64 + self.max_position_embeddings as f64 + head),
        )
    }

    pub(crate) fn dims(&self) -> EncoderDims {
        encoder_dims!(self)
    }

    /// Reads a `SiglipTextConfig` file, or the `text_config` of a `SiglipConfig` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_tower_config(path, "text_config")
    }
}

/// `SiglipVisionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
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
    /// Whether the attention-pooling head exists.
    pub vision_use_head: bool,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: Activation::GeluTanh,
            layer_norm_eps: 1e-6,
            vision_use_head: true,
        }
    }
}

impl SiglipVisionConfig {
    /// Fails with [`mm_core::Error::InvalidConfig`] on sizes the tower cannot be built from
    /// (heads that do not divide `hidden_size`, a zero or too large `patch_size`) and with
    /// [`mm_core::Error::TooLarge`] when its weights would not fit in the memory limit.
    pub fn validate(&self) -> Result<()> {
        // The attention-pooling head: a probe, an attention block and an MLP.
        let (d, i) = (self.hidden_size as f64, self.intermediate_size as f64);
        let head = if self.vision_use_head {
            d + 4.0 * d * d + 2.0 * d * i
        } else {
            0.0
        };
        self.dims().check_vision(
            "SiglipVisionConfig",
            (self.image_size, self.patch_size, self.num_channels),
            head,
        )
    }

    pub(crate) fn dims(&self) -> EncoderDims {
        encoder_dims!(self)
    }

    /// Reads a `SiglipVisionConfig` file, or the `vision_config` of a `SiglipConfig` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_tower_config(path, "vision_config")
    }
}

/// `SiglipConfig`: both towers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipConfig {
    /// Text tower.
    pub text_config: SiglipTextConfig,
    /// Vision tower.
    pub vision_config: SiglipVisionConfig,
}

impl SiglipConfig {
    /// Validates both towers (see [`SiglipTextConfig::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.text_config.validate()?;
        self.vision_config.validate()
    }
}
