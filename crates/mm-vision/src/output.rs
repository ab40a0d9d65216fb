//! What a vision or text tower returns.

use burn::tensor::Tensor;

use crate::{Error, Result};

/// The outputs of one transformer tower, as `output_hidden_states=True` gives them in
/// transformers.
#[derive(Debug, Clone)]
pub struct TowerOutput {
    /// The final sequence of hidden states `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// The pooled representation `[batch, hidden]` (EOS token, class token or attention pool).
    pub pooler_output: Tensor<2>,
    /// The embeddings followed by every layer's output (`num_layers + 1` entries). Index
    /// `-2` (the penultimate layer) is what Stable Diffusion 2 / SDXL text conditioning and the
    /// LLaVA vision tower use.
    pub hidden_states: Vec<Tensor<3>>,
}

impl TowerOutput {
    /// The hidden state at `index`, counting from the end when negative (`-1` = last layer's
    /// output before any final norm, `-2` = penultimate layer), like Python indexing.
    pub fn hidden_state(&self, index: isize) -> Option<Tensor<3>> {
        let n = self.hidden_states.len() as isize;
        let i = if index < 0 { n + index } else { index };
        (0..n)
            .contains(&i)
            .then(|| self.hidden_states[i as usize].clone())
    }
}

/// The values of a score tensor (probabilities, logits), refusing NaN or infinite ones with
/// [`Error::NonFinite`] so that a model with broken weights does not rank by garbage.
pub(crate) fn read_scores(scores: Tensor<2>) -> Result<Vec<f32>> {
    let values = scores
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("cannot read scores: {e:?}")))?;
    match values.iter().filter(|v| !v.is_finite()).count() {
        0 => Ok(values),
        count => Err(Error::NonFinite {
            what: "scores",
            count,
        }),
    }
}
