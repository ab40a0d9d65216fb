//! Weights packed for the bf16 products, kept for the length of an autocast scope.
//!
//! `torch.autocast` keeps the bf16 cast of each parameter until its outermost block exits, so
//! a denoising loop inside one block converts its weights once, not once per step. This is
//! the same for [`crate::precision::autocast`] with [`ComputeDtype::Bf16`]: its outermost
//! scope owns a [`WeightCache`], and the linear layers and convolutions it runs pack each f32
//! weight into it the second time they meet it (the first time they pack it into their
//! scratch as without a scope: a weight used once, such as a text encoder's, costs no
//! allocation), and take it from there after that. An entry holds a clone of its weight tensor, so the weight's storage
//! can be neither freed (and its address reused by another tensor) nor changed in place while
//! it is cached: the storage's address and length identify the weight. The cache, with the
//! bf16 copies (half the f32 weights' size), is dropped when the scope ends.
//!
//! [`ComputeDtype::Bf16`]: crate::precision::ComputeDtype::Bf16

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::aligned::AlignedVec;

/// What identifies a packed weight: its storage's address and length, and the packing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    ptr: usize,
    len: usize,
    packing: Packing,
}

/// How a weight was packed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Packing {
    /// A linear layer's `[k, n]` right operand read with strides `(rs, cs)`, as panels
    /// (`bf16::pack_panels`).
    Panels {
        k: usize,
        n: usize,
        rs: usize,
        cs: usize,
    },
    /// A convolution's `[o, c, taps]` weight, per output channel and tap (`conv`).
    Taps { o: usize, c: usize, taps: usize },
}

impl Key {
    /// The key of `values` packed as `packing`.
    pub fn new(values: &[f32], packing: Packing) -> Self {
        Self {
            ptr: values.as_ptr() as usize,
            len: values.len(),
            packing,
        }
    }
}

/// A weight that the current scope's cache may hold: the cache, and how to clone the
/// weight's tensor for the entry.
pub(crate) struct Cacheable<'a> {
    pub cache: Arc<WeightCache>,
    pub owner: &'a (dyn Fn() -> Box<dyn Any + Send> + Sync),
}

impl Cacheable<'_> {
    /// The words packed for `key` (see [`WeightCache::words`]).
    pub fn words(
        &self,
        key: Key,
        pack: impl FnOnce(&mut AlignedVec<u32>),
    ) -> Option<Arc<AlignedVec<u32>>> {
        self.cache.words(key, self.owner, pack)
    }
}

/// One packed weight and the tensor whose storage it was packed from.
struct Entry {
    words: Arc<AlignedVec<u32>>,
    _owner: Box<dyn Any + Send>,
}

/// The packed weights of an autocast scope.
#[derive(Default)]
pub struct WeightCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    packed: HashMap<Key, Entry>,
    /// Weights met once, not packed here yet.
    seen: HashSet<Key>,
}

impl WeightCache {
    /// The words packed for `key`: `None` the first time (the caller packs the weight
    /// itself), packed by `pack` the second time, kept after that. `owner` is a clone of the
    /// weight's tensor (kept with the entry, so that `key` keeps naming this weight).
    pub(crate) fn words(
        &self,
        key: Key,
        owner: impl FnOnce() -> Box<dyn Any + Send>,
        pack: impl FnOnce(&mut AlignedVec<u32>),
    ) -> Option<Arc<AlignedVec<u32>>> {
        {
            let mut entries = self.lock();
            if let Some(entry) = entries.packed.get(&key) {
                return Some(entry.words.clone());
            }
            if entries.seen.insert(key) {
                return None;
            }
        }
        // Packed outside the lock: the packing runs on rayon's threads, and one of them
        // could take another layer's task that asks the cache meanwhile.
        let mut words = AlignedVec::new();
        pack(&mut words);
        let words = Arc::new(words);
        let entry = Entry {
            words: words.clone(),
            _owner: owner(),
        };
        Some(self.lock().packed.entry(key).or_insert(entry).words.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_once_per_key() {
        let cache = WeightCache::default();
        let (a, b) = (vec![1.0f32; 8], vec![2.0f32; 8]);
        let panels = |k, n| Packing::Panels { k, n, rs: n, cs: 1 };
        let mut packs = 0;
        for (round, values) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
            let words = cache.words(
                Key::new(values, panels(2, 4)),
                || Box::new(()),
                |w| {
                    packs += 1;
                    w.resize(1, values[0] as u32)
                },
            );
            // Met once: not packed here; twice: packed; then kept.
            let want = (round >= 2).then(|| vec![values[0] as u32]);
            assert_eq!(words.as_deref().map(|w| &w[..]), want.as_deref());
        }
        assert_eq!(packs, 2);
        // Another layout of the same storage is another entry.
        for _ in 0..2 {
            cache.words(Key::new(&a, panels(4, 2)), || Box::new(()), |_| packs += 1);
        }
        assert_eq!(packs, 3);
    }
}
