//! diffusers' `ControlNetModel` config (`controlnet/config.json`): the UNet fields its down
//! path shares with [`UNet2DConditionConfig`], and the conditioning settings.

use serde::{Deserialize, Serialize};

use crate::unet::{BlockPlan, UNet2DConditionConfig};
use crate::{Error, Result};

/// diffusers' `ControlNetModel` config, with diffusers' defaults. The down-path fields
/// (`block_out_channels`, `down_block_types`, attention settings, SDXL's
/// `addition_embed_type`, …) are those of a [`UNet2DConditionConfig`]; a ControlNet has no
/// up blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlNetConfig {
    /// The fields shared with the UNet config (its `up_block_types`, `out_channels` and
    /// `conv_out_kernel` are unused).
    #[serde(flatten)]
    pub unet: UNet2DConditionConfig,
    /// Channels of the control image (3).
    pub conditioning_channels: usize,
    /// Widths of the convolutions that embed the control image (`[16, 32, 96, 256]`): one
    /// stride-2 convolution per step, so the image is `2^(len - 1)` times the latents' size.
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// `"rgb"`, or `"bgr"` for models trained on BGR control images (the channels are
    /// flipped before the embedding).
    pub controlnet_conditioning_channel_order: String,
    /// Whether the residuals are averaged over the image (shuffle-style ControlNets).
    #[serde(deserialize_with = "null_as_false")]
    pub global_pool_conditions: bool,
}

fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl Default for ControlNetConfig {
    fn default() -> Self {
        Self {
            unet: UNet2DConditionConfig::default(),
            conditioning_channels: 3,
            conditioning_embedding_out_channels: vec![16, 32, 96, 256],
            controlnet_conditioning_channel_order: "rgb".into(),
            global_pool_conditions: false,
        }
    }
}

impl ControlNetConfig {
    /// The UNet config of the down path: these fields, with up blocks mirroring the down
    /// blocks (so that the shared validation sees a symmetric model).
    pub fn encoder_config(&self) -> UNet2DConditionConfig {
        let mut config = self.unet.clone();
        config.up_block_types = (config.down_block_types.iter().rev())
            .map(|t| t.replace("Down", "Up"))
            .collect();
        config
    }

    /// How many times the control image is larger than the latents on each side.
    pub fn downscale_factor(&self) -> usize {
        1 << self
            .conditioning_embedding_out_channels
            .len()
            .saturating_sub(1)
    }

    /// Validates the config and resolves the down path's per-block settings; fails with
    /// [`Error::Config`] on anything the model cannot be built from.
    pub fn plan(&self) -> Result<BlockPlan> {
        let invalid = |msg: String| Err(Error::Config(format!("ControlNetModel: {msg}")));
        if self.conditioning_channels == 0 {
            return invalid("conditioning_channels must be > 0".into());
        }
        let channels = &self.conditioning_embedding_out_channels;
        if channels.is_empty() || channels.contains(&0) {
            return invalid(format!(
                "conditioning_embedding_out_channels {channels:?} must be non-empty and non-zero"
            ));
        }
        if !matches!(
            self.controlnet_conditioning_channel_order.as_str(),
            "rgb" | "bgr"
        ) {
            return invalid(format!(
                "controlnet_conditioning_channel_order '{}' (only rgb and bgr)",
                self.controlnet_conditioning_channel_order
            ));
        }
        self.encoder_config().plan()
    }
}
