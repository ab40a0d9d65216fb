//! The SigLIP text tower (`SiglipTextModel`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::nn::padding_mask;
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::linear;

use super::config::SiglipTextConfig;
use crate::Result;
use crate::embeddings::TextEmbeddings;
use crate::encoder::Encoder;
use crate::output::TowerOutput;

/// The text transformer (`text_model`): bidirectional encoder, final norm, and a linear head
/// on the last token.
#[derive(Module, Debug)]
pub struct SiglipTextTransformer {
    /// Embeddings.
    pub embeddings: TextEmbeddings,
    /// Encoder layers.
    pub encoder: Encoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
    /// Head on the last token.
    pub head: Linear,
}

impl SiglipTextTransformer {
    /// A randomly initialised text transformer.
    pub fn new(config: &SiglipTextConfig, device: &Device) -> Result<Self> {
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
            head: LinearConfig::new(d, config.projection_size.unwrap_or(d)).init(device),
        })
    }

    /// Encodes token ids `[batch, seq]`. SigLIP was trained on texts padded to
    /// `max_position_embeddings` without a mask, and pools the last position whatever the
    /// mask says (as transformers does); pass `attention_mask` only to reproduce a masked run.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<TowerOutput> {
        let (x, ids) = self
            .embeddings
            .forward(input_ids, attention_mask.as_ref())?;
        let (batch, seq) = (ids.batch, ids.seq);
        let (hidden_states, last) =
            self.encoder
                .forward(x, attention_mask.map(padding_mask), false);
        let last_hidden_state = self.final_layer_norm.forward(last);
        let d = last_hidden_state.dims()[2];
        let last_token = last_hidden_state
            .clone()
            .narrow(1, seq - 1, 1)
            .reshape([batch, d]);
        Ok(TowerOutput {
            pooler_output: linear(&self.head, last_token),
            last_hidden_state,
            hidden_states,
        })
    }
}

impl SiglipTextTransformer {
    /// The longest token sequence the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.embeddings.max_positions()
    }
}
