//! What a vision or text tower returns.

use burn::tensor::Tensor;

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
