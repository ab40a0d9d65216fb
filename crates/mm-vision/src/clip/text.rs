//! The CLIP text tower: `CLIPTextModel` and `CLIPTextModelWithProjection`.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use mm_core::nn::padding_mask;
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::linear;
use mm_core::weights::Weights;

use super::config::ClipTextConfig;
use crate::embeddings::TextEmbeddings;
use crate::encoder::Encoder;
use crate::loading::{read_tower_config, select_tower};
use crate::output::TowerOutput;
use crate::{Pretrained, Result};

/// Names of the other parts of a full CLIP checkpoint, dropped when loading one tower.
pub(crate) const CLIP_PARTS: [&str; 5] = [
    "text_model",
    "vision_model",
    "text_projection",
    "visual_projection",
    "logit_scale",
];

/// The text transformer (`text_model`): embeddings, causal encoder, final norm, EOS pooling.
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    /// Embeddings.
    pub embeddings: TextEmbeddings,
    /// Encoder layers.
    pub encoder: Encoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
    /// `eos_token_id` of the config; `None` or `2` pools at the largest token id.
    eos_token_id: Option<i64>,
}

impl ClipTextTransformer {
    /// A randomly initialised text transformer.
    pub fn new(config: &ClipTextConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_size;
        Ok(Self {
            embeddings: TextEmbeddings::new(
                config.vocab_size,
                config.max_position_embeddings,
                d,
                device,
            ),
            encoder: Encoder::new(&config.dims(), device),
            final_layer_norm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            eos_token_id: config.eos_token_id,
        })
    }

    /// Encodes token ids `[batch, seq]` with an optional attention mask (1 = token, 0 =
    /// padding). `pooler_output` is the final-normed hidden state at each sequence's EOS token.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<TowerOutput> {
        let (x, ids) = self
            .embeddings
            .forward(input_ids, attention_mask.as_ref())?;
        let eos_positions = eos_positions(&ids.ids, ids.batch, ids.seq, self.eos_token_id);
        let (hidden_states, last) = self
            .encoder
            .forward(x, attention_mask.map(padding_mask), true);
        let last_hidden_state = self.final_layer_norm.forward(last);
        let pooler_output = gather_rows(last_hidden_state.clone(), &eos_positions);
        Ok(TowerOutput {
            last_hidden_state,
            pooler_output,
            hidden_states,
        })
    }
}

impl ClipTextTransformer {
    /// The longest token sequence the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.embeddings.max_positions()
    }
}

/// Where each sequence is pooled, as transformers' `CLIPTextTransformer` decides it: with the
/// legacy `eos_token_id == 2` (or none), at the largest id (the first, if repeated); otherwise
/// at the first occurrence of `eos_token_id` (the first position if it never occurs).
fn eos_positions(ids: &[i64], batch: usize, seq: usize, eos: Option<i64>) -> Vec<usize> {
    (0..batch)
        .map(|b| {
            let row = &ids[b * seq..(b + 1) * seq];
            match eos {
                Some(eos) if eos != 2 => row.iter().position(|&t| t == eos).unwrap_or(0),
                _ => {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                }
            }
        })
        .collect()
}

/// Picks row `positions[b]` of every sequence `b`: `[batch, seq, d]` → `[batch, d]`.
pub(crate) fn gather_rows(x: Tensor<3>, positions: &[usize]) -> Tensor<2> {
    let [batch, seq, d] = x.dims();
    let flat: Vec<i64> = positions
        .iter()
        .enumerate()
        .map(|(b, &p)| (b * seq + p) as i64)
        .collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(flat, [batch]), &x.device());
    x.reshape([batch * seq, d]).select(0, index)
}

/// `CLIPTextModel`: the text transformer alone (what Stable Diffusion 1.x uses).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// The transformer (`text_model.*`).
    pub text_model: ClipTextTransformer,
}

impl ClipTextModel {
    /// A randomly initialised model.
    pub fn new(config: &ClipTextConfig, device: &Device) -> Result<Self> {
        Ok(Self {
            text_model: ClipTextTransformer::new(config, device)?,
        })
    }

    /// See [`ClipTextTransformer::forward`].
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<TowerOutput> {
        self.text_model.forward(input_ids, attention_mask)
    }
}

/// `CLIPTextModelWithProjection`: the text transformer and `text_projection` (SDXL's second
/// text encoder).
#[derive(Module, Debug)]
pub struct ClipTextModelWithProjection {
    /// The transformer (`text_model.*`).
    pub text_model: ClipTextTransformer,
    /// Projection of the pooled output into the shared embedding space (no bias).
    pub text_projection: Linear,
}

impl ClipTextModelWithProjection {
    /// A randomly initialised model.
    pub fn new(config: &ClipTextConfig, device: &Device) -> Result<Self> {
        Self::with_projection_dim(config, config.projection_dim, device)
    }

    pub(crate) fn with_projection_dim(
        config: &ClipTextConfig,
        projection_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            text_model: ClipTextTransformer::new(config, device)?,
            text_projection: LinearConfig::new(config.hidden_size, projection_dim)
                .with_bias(false)
                .init(device),
        })
    }

    /// Runs the tower; returns its outputs and the projected (unnormalised) `text_embeds`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<(TowerOutput, Tensor<2>)> {
        let out = self.text_model.forward(input_ids, attention_mask)?;
        let embeds = linear(&self.text_projection, out.pooler_output.clone());
        Ok((out, embeds))
    }
}

impl ClipTextConfig {
    /// Reads a `CLIPTextConfig` file, or the `text_config` of a `CLIPConfig` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_tower_config(path, "text_config")
    }
}

impl Pretrained for ClipTextModel {
    type Config = ClipTextConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        ClipTextConfig::from_file(path)
    }

    fn from_weights(config: &ClipTextConfig, weights: Weights, device: &Device) -> Result<Self> {
        let weights = select_tower(weights, "text_model", &[], &CLIP_PARTS);
        Ok(weights.load_into(Self::new(config, device)?)?)
    }
}

impl Pretrained for ClipTextModelWithProjection {
    type Config = ClipTextConfig;

    fn read_config(path: &Path) -> Result<Self::Config> {
        ClipTextConfig::from_file(path)
    }

    fn from_weights(config: &ClipTextConfig, weights: Weights, device: &Device) -> Result<Self> {
        let projection_dim = weights
            .shape("text_projection.weight")
            .map(|s| s[0])
            .unwrap_or(config.projection_dim);
        let weights = select_tower(
            weights,
            "text_model",
            &["text_projection.weight"],
            &CLIP_PARTS,
        );
        Ok(weights.load_into(Self::with_projection_dim(config, projection_dim, device)?)?)
    }
}
