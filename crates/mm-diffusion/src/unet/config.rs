//! diffusers' `UNet2DConditionModel` config (`unet/config.json`), with diffusers' defaults.

use mm_core::config::Checks;
use mm_core::nn::Activation;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Reads `null` as the type's default (diffusers writes `null` for some boolean options).
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A config value given once for every block or as one value per down block (diffusers
/// accepts both for `attention_head_dim`, `cross_attention_dim`, `layers_per_block`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    All(T),
    /// One value per down block (the up blocks use them in reverse).
    Each(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// One value per block for `blocks` blocks; a list must have exactly that length.
    pub fn resolve(&self, field: &str, blocks: usize) -> Result<Vec<T>> {
        match self {
            PerBlock::All(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Each(list) if list.len() == blocks => Ok(list.clone()),
            PerBlock::Each(list) => Err(Error::Config(format!(
                "UNet2DConditionModel: {field} {list:?} needs one value per down block ({blocks})"
            ))),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config: the fields Stable Diffusion 1.x/2.x, their
/// inpainting variants and SDXL use. Unknown fields are ignored; known fields set to values
/// this crate does not implement make [`UNet2DConditionModel::new`](super::UNet2DConditionModel::new)
/// fail with [`Error::Config`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Latent resolution the model was trained at (informational).
    pub sample_size: serde_json::Value,
    /// Input channels: 4, or 9 for inpainting (latents, mask, masked-image latents).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Whether the input is mapped from `[0, 1]` to `[-1, 1]` first.
    #[serde(deserialize_with = "null_as_default")]
    pub center_input_sample: bool,
    /// Whether the sinusoidal timestep embedding is ordered `cos, sin`.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the sinusoidal timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, one per resolution level.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn`, or `null` for none.
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D`, one per resolution level.
    pub up_block_types: Vec<String>,
    /// Whether the self-attention (`attn1`) also attends to the text instead of itself.
    pub only_cross_attention: PerBlock<bool>,
    /// Width of each level.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per down block (the up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the downsampling convolutions (0: pad right and bottom only).
    pub downsample_padding: usize,
    /// Output scale factor of the middle block's ResNet blocks.
    pub mid_block_scale_factor: f64,
    /// Ignored, as diffusers does for the block types supported here (it only reaches
    /// `ResnetDownsampleBlock2D` and the `SimpleCrossAttn` blocks).
    pub resnet_out_scale_factor: f64,
    /// Activation of the ResNet blocks and the time embedding.
    pub act_fn: Activation,
    /// Groups of every group norm (required).
    pub norm_num_groups: Option<usize>,
    /// Epsilon of the ResNet and output group norms.
    pub norm_eps: f64,
    /// Width of the text embeddings the cross-attention reads.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks in each `Transformer2DModel`, per down block.
    pub transformer_layers_per_block: PerBlock<usize>,
    /// diffusers' misnomer: the number of attention **heads** per block when
    /// `num_attention_heads` is absent (Stable Diffusion 1.x: 8 heads everywhere; 2.x:
    /// `[5, 10, 20, 20]` heads of width 64).
    pub attention_head_dim: PerBlock<usize>,
    /// The number of attention heads per block; takes precedence over `attention_head_dim`
    /// (diffusers 0.42 itself refuses to build a `UNet2DConditionModel` with it set).
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Whether `proj_in`/`proj_out` of the transformers are linear layers (2.x, SDXL) rather
    /// than 1×1 convolutions.
    #[serde(deserialize_with = "null_as_default")]
    pub use_linear_projection: bool,
    /// Whether attention runs in f32 when the weights are half precision (2.1); `null`
    /// (SDXL's config) is `false`.
    #[serde(deserialize_with = "null_as_default")]
    pub upcast_attention: bool,
    /// `null` or `"projection"` (a `TimestepEmbedding` of `class_labels` added to the time
    /// embedding).
    pub class_embed_type: Option<String>,
    /// `null` or `"text_time"` (SDXL: pooled text embeddings and size/crop ids).
    pub addition_embed_type: Option<String>,
    /// Width of the sinusoidal embedding of each SDXL time id.
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of the class (`"projection"`) or addition (`"text_time"`) embedding.
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Only `"default"` is supported.
    pub resnet_time_scale_shift: String,
    /// Only `"positional"` is supported.
    pub time_embedding_type: String,
    /// Kernel size of `conv_in` (odd).
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out` (odd).
    pub conv_out_kernel: usize,
    /// Unsupported when set.
    pub num_class_embeds: Option<usize>,
    /// Unsupported when set.
    pub encoder_hid_dim: Option<usize>,
    /// Unsupported when set.
    pub encoder_hid_dim_type: Option<String>,
    /// Unsupported when set.
    pub time_embedding_dim: Option<usize>,
    /// Unsupported when set.
    pub time_embedding_act_fn: Option<String>,
    /// Unsupported when set.
    pub timestep_post_act: Option<String>,
    /// Unsupported when set.
    pub time_cond_proj_dim: Option<usize>,
    /// Unsupported when true.
    #[serde(deserialize_with = "null_as_default")]
    pub class_embeddings_concat: bool,
    /// Unsupported when true.
    #[serde(deserialize_with = "null_as_default")]
    pub dual_cross_attention: bool,
    /// Unsupported when true.
    #[serde(deserialize_with = "null_as_default")]
    pub resnet_skip_time_act: bool,
    /// Only `"default"` is supported.
    pub attention_type: String,
    /// Unsupported when set.
    pub cross_attention_norm: Option<String>,
    /// Unsupported when set.
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Ignored: `UNetMidBlock2DCrossAttn` always self-attends (as in diffusers).
    pub mid_block_only_cross_attention: Option<bool>,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self {
            sample_size: serde_json::Value::Null,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "DownBlock2D".into(),
            ],
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: vec![
                "UpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
            ],
            only_cross_attention: PerBlock::All(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::All(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            resnet_out_scale_factor: 1.0,
            act_fn: Activation::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::All(1280),
            transformer_layers_per_block: PerBlock::All(1),
            attention_head_dim: PerBlock::All(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            num_class_embeds: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            class_embeddings_concat: false,
            dual_cross_attention: false,
            resnet_skip_time_act: false,
            attention_type: "default".into(),
            cross_attention_norm: None,
            reverse_transformer_layers_per_block: None,
            mid_block_only_cross_attention: None,
        }
    }
}

/// What a down or up block contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ResNet blocks only (`DownBlock2D`, `UpBlock2D`).
    Plain,
    /// ResNet blocks each followed by a `Transformer2DModel` (`CrossAttnDownBlock2D`,
    /// `CrossAttnUpBlock2D`).
    CrossAttn,
}

/// The per-level settings of a validated config, resolved from the int-or-list fields.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    /// Kind of each down block.
    pub down: Vec<BlockKind>,
    /// Kind of each up block (from the lowest resolution).
    pub up: Vec<BlockKind>,
    /// Whether there is a `UNetMidBlock2DCrossAttn`.
    pub mid: bool,
    /// ResNet blocks per down block.
    pub layers: Vec<usize>,
    /// Transformer blocks per `Transformer2DModel`, per down block.
    pub transformer_layers: Vec<usize>,
    /// Attention heads per down block.
    pub heads: Vec<usize>,
    /// Cross-attention (text) width per down block.
    pub cross_attention_dim: Vec<usize>,
    /// `only_cross_attention` per down block.
    pub only_cross_attention: Vec<bool>,
    /// Groups of every group norm.
    pub groups: usize,
}

impl BlockPlan {
    /// How many skip connections the down path produces (the residuals a ControlNet returns):
    /// `conv_in`'s output, one per down-block ResNet, one per downsampler (every level but
    /// the last).
    pub fn skip_connections(&self) -> usize {
        1 + self.layers.iter().sum::<usize>() + self.layers.len().saturating_sub(1)
    }

    /// The text widths of every level that attends to the text.
    pub fn cross_attention_dims(&self) -> Vec<usize> {
        let n = self.down.len();
        (0..n)
            .filter(|&i| {
                self.down[i] == BlockKind::CrossAttn
                    || self.up[n - 1 - i] == BlockKind::CrossAttn
                    || (self.mid && i == n - 1)
            })
            .map(|i| self.cross_attention_dim[i])
            .collect()
    }

    /// Estimated parameter count of a UNet with this plan: per level, ResNet blocks (two 3×3
    /// convolutions) and transformer layers (self- and cross-attention, GEGLU feed-forward,
    /// projections in and out), `layers` of each in the down block, one more in the up block,
    /// and the mid block's two ResNets and transformer.
    fn parameters(&self, channels: &[usize]) -> f64 {
        let level = |i: usize, blocks: f64| {
            let c = channels[i] as f64;
            let resnet = 18.0 * c * c;
            let transformer = self.transformer_layers[i] as f64
                * (20.0 * c * c + 2.0 * c * self.cross_attention_dim[i] as f64);
            blocks * (resnet + transformer)
        };
        let levels: f64 = (0..channels.len())
            .map(|i| level(i, 2.0 * self.layers[i] as f64 + 1.0))
            .sum();
        let last = channels.len() - 1;
        levels + if self.mid { level(last, 2.0) } else { 0.0 }
    }
}

impl UNet2DConditionConfig {
    /// Width of the time embedding (`4 × block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels.first().copied().unwrap_or(0)
    }

    /// How many times the down blocks halve the resolution.
    pub fn num_downsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// Validates the config and resolves the per-block settings; fails with
    /// [`Error::Config`] on anything the model cannot be built from.
    pub fn plan(&self) -> Result<BlockPlan> {
        let invalid = |msg: String| Err(Error::Config(format!("UNet2DConditionModel: {msg}")));
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return invalid(format!(
                "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) need \
                 the same, non-zero length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let kind = |t: &str, plain: &str, cross: &str| match t {
            t if t == plain => Ok(BlockKind::Plain),
            t if t == cross => Ok(BlockKind::CrossAttn),
            other => Err(Error::Config(format!(
                "UNet2DConditionModel: block type '{other}' is not supported (only {plain} and \
                 {cross})"
            ))),
        };
        let down = (self.down_block_types.iter())
            .map(|t| kind(t, "DownBlock2D", "CrossAttnDownBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let up = (self.up_block_types.iter())
            .map(|t| kind(t, "UpBlock2D", "CrossAttnUpBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let mid = match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => true,
            None => false,
            Some(other) => return invalid(format!("mid_block_type '{other}' is not supported")),
        };
        let groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            _ => return invalid("norm_num_groups must be set and > 0".into()),
        };
        if self
            .block_out_channels
            .iter()
            .any(|c| *c == 0 || c % groups != 0)
        {
            return invalid(format!(
                "block_out_channels {:?} must be non-zero multiples of norm_num_groups \
                 ({groups})",
                self.block_out_channels
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return invalid("in_channels and out_channels must be > 0".into());
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return invalid("conv_in_kernel and conv_out_kernel must be odd".into());
        }
        let heads = match &self.num_attention_heads {
            Some(h) => h.resolve("num_attention_heads", n)?,
            None => self.attention_head_dim.resolve("attention_head_dim", n)?,
        };
        let cross_attention_dim = self.cross_attention_dim.resolve("cross_attention_dim", n)?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            let attends = down[i] == BlockKind::CrossAttn
                || up[n - 1 - i] == BlockKind::CrossAttn
                || (mid && i == n - 1);
            if attends && (h == 0 || c % h != 0 || cross_attention_dim[i] == 0) {
                return invalid(format!(
                    "block {i}: {c} channels cannot be split into {h} attention heads (or \
                     cross_attention_dim is 0)"
                ));
            }
        }
        let plan = BlockPlan {
            layers: self.layers_per_block.resolve("layers_per_block", n)?,
            transformer_layers: (self.transformer_layers_per_block)
                .resolve("transformer_layers_per_block", n)?,
            only_cross_attention: (self.only_cross_attention).resolve("only_cross_attention", n)?,
            down,
            up,
            mid,
            heads,
            cross_attention_dim,
            groups,
        };
        if plan.layers.contains(&0) {
            return invalid("layers_per_block must be > 0".into());
        }
        self.check_supported()?;
        Checks::new("UNet2DConditionModel")
            .parameters(plan.parameters(&self.block_out_channels))?;
        Ok(plan)
    }

    /// Rejects the diffusers options this crate does not implement.
    fn check_supported(&self) -> Result<()> {
        let unsupported = |what: String| {
            Err(Error::Config(format!(
                "UNet2DConditionModel: {what} is not supported"
            )))
        };
        if self.resnet_time_scale_shift != "default" {
            return unsupported(format!(
                "resnet_time_scale_shift '{}'",
                self.resnet_time_scale_shift
            ));
        }
        if self.time_embedding_type != "positional" {
            return unsupported(format!(
                "time_embedding_type '{}'",
                self.time_embedding_type
            ));
        }
        if self.attention_type != "default" {
            return unsupported(format!("attention_type '{}'", self.attention_type));
        }
        match self.class_embed_type.as_deref() {
            None => {}
            Some("projection") if self.projection_class_embeddings_input_dim.is_some() => {}
            Some("projection") => {
                return unsupported(
                    "class_embed_type 'projection' without projection_class_embeddings_input_dim"
                        .into(),
                );
            }
            Some(other) => return unsupported(format!("class_embed_type '{other}'")),
        }
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time")
                if self.addition_time_embed_dim.is_some()
                    && self.projection_class_embeddings_input_dim.is_some() => {}
            Some("text_time") => {
                return unsupported(
                    "addition_embed_type 'text_time' without addition_time_embed_dim and \
                     projection_class_embeddings_input_dim"
                        .into(),
                );
            }
            Some(other) => return unsupported(format!("addition_embed_type '{other}'")),
        }
        let set = [
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("encoder_hid_dim_type", self.encoder_hid_dim_type.is_some()),
            ("time_embedding_dim", self.time_embedding_dim.is_some()),
            (
                "time_embedding_act_fn",
                self.time_embedding_act_fn.is_some(),
            ),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("class_embeddings_concat", self.class_embeddings_concat),
            ("dual_cross_attention", self.dual_cross_attention),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
        ];
        if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
            return unsupported(format!("{name} (set in this config)"));
        }
        Ok(())
    }
}
