//! The key/value cache of the decoder: the prompt is run once (prefill), then each new token
//! attends to the stored keys and values of everything before it.

use burn::tensor::{Bool, Device, Tensor, TensorData};

/// Keys and values of every layer (`[batch, kv_heads, seq, head_dim]`, after rotary), with the
/// padding of every cached position and each row's next position id.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Per row, per cached position: true for a real token, false for padding.
    valid: Vec<Vec<bool>>,
    /// Per row: the number of real tokens so far (the next position id).
    real: Vec<usize>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of cached positions.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch size (0 before the first forward pass).
    pub fn batch(&self) -> usize {
        self.valid.len()
    }

    /// Records `mask` (`[batch][seq]`, true = real token) for new positions and returns their
    /// position ids: the count of real tokens before them, as transformers derives them from
    /// the attention mask (padding gets position 1).
    pub(crate) fn push_positions(&mut self, mask: &[Vec<bool>]) -> Vec<Vec<usize>> {
        if self.valid.is_empty() {
            self.valid = vec![Vec::new(); mask.len()];
            self.real = vec![0; mask.len()];
        }
        let mut positions = Vec::with_capacity(mask.len());
        for ((row, valid), real) in mask.iter().zip(&mut self.valid).zip(&mut self.real) {
            let mut pos = Vec::with_capacity(row.len());
            for &m in row {
                if m {
                    pos.push(*real);
                    *real += 1;
                } else {
                    pos.push(1);
                }
                valid.push(m);
            }
            positions.push(pos);
        }
        positions
    }

    /// The attention mask for the last `new` positions over all cached ones (`[batch, 1, new,
    /// len]`, true = hidden), or `None` when plain causal attention from an empty cache is
    /// exact (`causal` is then true) or nothing needs hiding.
    pub(crate) fn mask(
        &self,
        new: usize,
        window: Option<usize>,
        device: &Device,
    ) -> (Option<Tensor<4, Bool>>, bool) {
        let total = self.len();
        let past = total - new;
        let all_valid = self.valid.iter().all(|r| r.iter().all(|&v| v));
        let window_binds = window.is_some_and(|w| total > w);
        if all_valid && !window_binds {
            if new == 1 {
                return (None, false);
            }
            if past == 0 {
                return (None, true);
            }
        }
        let b = self.batch();
        let mut hidden = Vec::with_capacity(b * new * total);
        for row in &self.valid {
            for i in 0..new {
                let q = past + i;
                let start = hidden.len();
                for (k, &valid) in row.iter().enumerate() {
                    let outside = window.is_some_and(|w| q >= w && k <= q - w);
                    hidden.push(k > q || !valid || outside);
                }
                // A padding query sees no key at all: let it see itself (its output is unused)
                // rather than produce NaN.
                if hidden[start..].iter().all(|&h| h) {
                    hidden[start + q] = false;
                }
            }
        }
        let mask = Tensor::from_data(TensorData::new(hidden, [b, 1, new, total]), device);
        (Some(mask), false)
    }

    /// Appends a layer's new keys and values; returns everything cached for that layer.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let entry = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some(entry.clone());
        entry
    }
}
