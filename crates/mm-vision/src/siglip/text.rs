//! The SigLIP text tower (`SiglipTextModel`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::nn::padding_mask;

use super::config::SiglipTextConfig;
use crate::clip::ids_to_vec;
use crate::encoder::Encoder;
use crate::output::TowerOutput;
use crate::{Error, Result};

/// Token and position embeddings (`text_model.embeddings`).
#[derive(Module, Debug)]
pub struct SiglipTextEmbeddings {
    /// Token embeddings.
    pub token_embedding: Embedding,
    /// Position embeddings.
    pub position_embedding: Embedding,
}

/// The text transformer (`text_model`): bidirectional encoder, final norm, and a linear head
/// on the last token.
#[derive(Module, Debug)]
pub struct SiglipTextTransformer {
    /// Embeddings.
    pub embeddings: SiglipTextEmbeddings,
    /// Encoder layers.
    pub encoder: Encoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
    /// Head on the last token.
    pub head: Linear,
    max_positions: usize,
    vocab_size: usize,
}

impl SiglipTextTransformer {
    /// A randomly initialised text transformer.
    pub fn new(config: &SiglipTextConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        Self {
            embeddings: SiglipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(config.vocab_size, d).init(device),
                position_embedding: EmbeddingConfig::new(config.max_position_embeddings, d)
                    .init(device),
            },
            encoder: Encoder::new(&config.dims(), device),
            final_layer_norm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            head: LinearConfig::new(d, config.projection_size.unwrap_or(d)).init(device),
            max_positions: config.max_position_embeddings,
            vocab_size: config.vocab_size,
        }
    }

    /// Encodes token ids `[batch, seq]`. SigLIP was trained on texts padded to
    /// `max_position_embeddings` without a mask, and pools the last position whatever the
    /// mask says (as transformers does); pass `attention_mask` only to reproduce a masked run.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<TowerOutput> {
        let [batch, seq] = input_ids.dims();
        if seq == 0 || seq > self.max_positions {
            return Err(Error::Shape {
                what: "input_ids",
                expected: format!("[batch, 1..={}]", self.max_positions),
                got: vec![batch, seq],
            });
        }
        ids_to_vec(&input_ids, self.vocab_size)?;
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        let x = self.embeddings.token_embedding.forward(input_ids)
            + self.embeddings.position_embedding.forward(positions);
        let hidden_states = self
            .encoder
            .forward(x, attention_mask.map(padding_mask), false);
        let last = hidden_states
            .last()
            .cloned()
            .ok_or_else(|| Error::InvalidInput("the text encoder has no layers".into()))?;
        let last_hidden_state = self.final_layer_norm.forward(last);
        let d = last_hidden_state.dims()[2];
        let last_token = last_hidden_state
            .clone()
            .narrow(1, seq - 1, 1)
            .reshape([batch, d]);
        Ok(TowerOutput {
            pooler_output: self.head.forward(last_token),
            last_hidden_state,
            hidden_states,
        })
    }
}

impl SiglipTextTransformer {
    /// The longest token sequence the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}
