//! The key/value cache of the decoder: the prompt is run once (prefill), then each new token
//! attends to the stored keys and values of everything before it.

use burn::tensor::{Bool, Device, Tensor, TensorData, s};

/// The fewest positions a layer's buffers hold.
const MIN_CAPACITY: usize = 64;

/// One layer's keys and values: buffers of `[batch, kv_heads, capacity, head_dim]` whose first
/// `len` positions are filled.
#[derive(Debug, Clone)]
struct LayerCache {
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

/// Keys and values of every layer (`[batch, kv_heads, seq, head_dim]`, after rotary), with the
/// padding of every cached position and each row's next position id.
///
/// Each layer's keys and values live in buffers with room to spare (1.5× what is needed when
/// they grow), and a new position is written into them in place: a decoding step copies only
/// its own keys and values, not the whole cache.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
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

    /// Appends a layer's new keys and values; returns everything cached for that layer (views
    /// of the buffers: drop them before the next append, or it has to copy).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let [b, h, s, d] = k.dims();
        let mut entry = match self.layers[layer].take() {
            Some(entry) if entry.len + s <= entry.k.dims()[2] => entry,
            old => {
                let len = old.as_ref().map_or(0, |e| e.len);
                let capacity = ((len + s) * 3 / 2).max(MIN_CAPACITY);
                let grow = |old: Option<Tensor<4>>, like: &Tensor<4>| {
                    let buffer =
                        Tensor::<4>::zeros([b, h, capacity, d], &like.device()).cast(like.dtype());
                    match old {
                        Some(old) => {
                            buffer.slice_assign(s![.., .., 0..len], old.slice(s![.., .., 0..len]))
                        }
                        None => buffer,
                    }
                };
                let (ok, ov) = old.map(|e| (e.k, e.v)).unzip();
                LayerCache {
                    k: grow(ok, &k),
                    v: grow(ov, &v),
                    len,
                }
            }
        };
        let (start, end) = (entry.len, entry.len + s);
        entry.k = entry.k.slice_assign(s![.., .., start..end], k);
        entry.v = entry.v.slice_assign(s![.., .., start..end], v);
        entry.len = end;
        let views = (
            entry.k.clone().slice(s![.., .., 0..end]),
            entry.v.clone().slice(s![.., .., 0..end]),
        );
        self.layers[layer] = Some(entry);
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// A prompt, then single tokens past the first and second capacity: the returned views
    /// hold exactly what concatenating every step would.
    #[test]
    fn appending_matches_concatenation() {
        let device = Device::flex();
        let rand = |s: usize| Tensor::<4>::random([2, 3, s, 4], Distribution::Default, &device);
        let mut cache = KvCache::new();
        let (mut all_k, mut all_v) = (rand(0), rand(0));
        for s in [50, 1, 1, 20, 1, 30, 1] {
            let (k, v) = (rand(s), rand(s));
            all_k = Tensor::cat(vec![all_k, k.clone()], 2);
            all_v = Tensor::cat(vec![all_v, v.clone()], 2);
            let (ck, cv) = cache.append(1, k, v);
            assert_eq!(ck.dims(), all_k.dims());
            ck.into_data().assert_eq(&all_k.clone().into_data(), true);
            cv.into_data().assert_eq(&all_v.clone().into_data(), true);
        }
    }
}
