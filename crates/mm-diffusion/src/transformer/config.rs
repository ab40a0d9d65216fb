//! diffusers' `SD3Transformer2DModel` config (`transformer/config.json`).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The fields of an SD3 / SD3.5 `transformer/config.json`, with diffusers' defaults (those of
/// Stable Diffusion 3 medium except `pos_embed_max_size`, 96 here as in diffusers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SD3Transformer2DConfig {
    /// Latent side length trained at (128: 1024² images); sets the pipeline's default size.
    pub sample_size: usize,
    /// Side of the square patches the latents are cut into (2).
    pub patch_size: usize,
    /// Latent channels in (16).
    pub in_channels: usize,
    /// Number of joint transformer blocks (SD3 medium 24, SD3.5 large 38).
    pub num_layers: usize,
    /// Width of one attention head (64).
    pub attention_head_dim: usize,
    /// Attention heads; the model width is `heads × head_dim`.
    pub num_attention_heads: usize,
    /// Width of the text states (4096: T5-XXL's; the CLIP states are zero-padded to it).
    pub joint_attention_dim: usize,
    /// Width the text states are projected to (the model width).
    pub caption_projection_dim: usize,
    /// Width of the pooled text embedding (2048: CLIP-L's 768 + CLIP-G's 1280).
    pub pooled_projection_dim: usize,
    /// Latent channels out (16; `null` means `in_channels`).
    pub out_channels: Option<usize>,
    /// Side of the square grid of learned position embeddings that is cropped to the latent
    /// grid (192 for SD3 medium / SD3.5 large, 384 for SD3.5 medium).
    pub pos_embed_max_size: usize,
    /// Blocks with a second, image-only attention (SD3.5 medium: 0–12).
    pub dual_attention_layers: Vec<usize>,
    /// Normalisation of queries and keys: `null` (SD3) or `"rms_norm"` (SD3.5).
    pub qk_norm: Option<String>,
}

impl Default for SD3Transformer2DConfig {
    fn default() -> Self {
        Self {
            sample_size: 128,
            patch_size: 2,
            in_channels: 16,
            num_layers: 18,
            attention_head_dim: 64,
            num_attention_heads: 18,
            joint_attention_dim: 4096,
            caption_projection_dim: 1152,
            pooled_projection_dim: 2048,
            out_channels: Some(16),
            pos_embed_max_size: 96,
            dual_attention_layers: Vec::new(),
            qk_norm: None,
        }
    }
}

impl SD3Transformer2DConfig {
    /// The model width (`num_attention_heads × attention_head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Latent channels out.
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Whether queries and keys are RMS-normalised (`qk_norm: "rms_norm"`).
    pub fn rms_qk_norm(&self) -> Result<bool> {
        match self.qk_norm.as_deref() {
            None => Ok(false),
            Some("rms_norm") => Ok(true),
            Some(other) => Err(Error::Config(format!(
                "qk_norm \"{other}\" is not supported by SD3Transformer2DModel (null or \
                 \"rms_norm\")"
            ))),
        }
    }

    /// Checks the sizes a model can be built from.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("SD3 transformer config: {what}")));
        let zero = [
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("num_layers", self.num_layers),
            ("attention_head_dim", self.attention_head_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
            ("pos_embed_max_size", self.pos_embed_max_size),
            ("out_channels", self.out_channels()),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if self.caption_projection_dim != self.inner_dim() {
            return bad(format!(
                "caption_projection_dim {} differs from the model width {} (heads × head_dim): \
                 the text and image streams attend jointly",
                self.caption_projection_dim,
                self.inner_dim()
            ));
        }
        if let Some(&layer) = (self.dual_attention_layers.iter()).find(|&&l| l >= self.num_layers) {
            return bad(format!(
                "dual_attention_layers names block {layer} of {}",
                self.num_layers
            ));
        }
        self.rms_qk_norm().map(|_| ())
    }
}
