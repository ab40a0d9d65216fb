//! Token + learned position embeddings (`text_model.embeddings`), shared by the CLIP and SigLIP
//! text towers, with the input checks every text tower needs.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Int, Tensor};
use mm_core::precision::embedding;

use crate::{Error, Result};

/// `token_embedding` `[vocab, hidden]` and `position_embedding` `[max_positions, hidden]`.
#[derive(Module, Debug)]
pub struct TextEmbeddings {
    /// Token embeddings.
    pub token_embedding: Embedding,
    /// Position embeddings.
    pub position_embedding: Embedding,
}

/// Token ids of a checked batch, read back to the host.
pub(crate) struct CheckedIds {
    /// Row-major `[batch, seq]` ids.
    pub ids: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

impl TextEmbeddings {
    /// Random embeddings.
    pub fn new(vocab_size: usize, max_positions: usize, hidden: usize, device: &Device) -> Self {
        Self {
            token_embedding: EmbeddingConfig::new(vocab_size, hidden).init(device),
            position_embedding: EmbeddingConfig::new(max_positions, hidden).init(device),
        }
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.weight.dims()[0]
    }

    /// The longest sequence (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.position_embedding.weight.dims()[0]
    }

    /// Embeds `[batch, seq]` ids after checking them: the length must fit the position table
    /// and every id the vocabulary (an out-of-range id is an error, not an out-of-bounds read);
    /// `attention_mask`, when given, must have the ids' shape.
    pub(crate) fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<&Tensor<2, Int>>,
    ) -> Result<(Tensor<3>, CheckedIds)> {
        let [batch, seq] = input_ids.dims();
        let max = self.max_positions();
        if seq == 0 || seq > max {
            return Err(Error::Shape {
                what: "input_ids",
                expected: format!("[batch, 1..={max}]"),
                got: vec![batch, seq],
            });
        }
        if let Some(mask) = attention_mask
            && mask.dims() != [batch, seq]
        {
            return Err(Error::Shape {
                what: "attention_mask",
                expected: format!("[{batch}, {seq}] like input_ids"),
                got: mask.dims().to_vec(),
            });
        }
        let ids = input_ids
            .to_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| Error::InvalidInput(format!("cannot read input_ids: {e:?}")))?;
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab}): is the tokenizer the model's own?"
            )));
        }
        let positions =
            Tensor::<1, Int>::arange(0..seq as i64, &input_ids.device()).reshape([1, seq]);
        let x = embedding(&self.token_embedding, input_ids)
            + embedding(&self.position_embedding, positions);
        Ok((x, CheckedIds { ids, batch, seq }))
    }
}
