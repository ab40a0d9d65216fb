//! Retrieval quality measures: recall@k, reciprocal rank, top-k overlap.

use std::collections::HashSet;

use crate::item::ItemId;

/// The fraction of the relevant items found in the first `k` results, out of
/// `min(k, relevant)` (so 1.0 when the top `k` are all relevant).
///
/// ```
/// use std::collections::HashSet;
/// let relevant: HashSet<u64> = [1, 2].into();
/// assert_eq!(mm_retrieval::metrics::recall_at_k(&[1, 5, 2], &relevant, 2), 0.5);
/// assert_eq!(mm_retrieval::metrics::recall_at_k(&[1, 5, 2], &relevant, 3), 1.0);
/// ```
pub fn recall_at_k(ranked: &[ItemId], relevant: &HashSet<ItemId>, k: usize) -> f64 {
    let denominator = k.min(relevant.len());
    if denominator == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| relevant.contains(id))
        .count();
    found as f64 / denominator as f64
}

/// `1 / rank` of the first relevant result (ranks from 1), 0 when none is relevant; the mean
/// over queries is the MRR.
///
/// ```
/// use std::collections::HashSet;
/// let relevant: HashSet<u64> = [7].into();
/// assert_eq!(mm_retrieval::metrics::reciprocal_rank(&[3, 7], &relevant), 0.5);
/// ```
pub fn reciprocal_rank(ranked: &[ItemId], relevant: &HashSet<ItemId>) -> f64 {
    ranked
        .iter()
        .position(|id| relevant.contains(id))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// The fraction of `exact`'s first `k` ids found in `approx`'s first `k`: the recall@k of an
/// approximate search against the exact one.
///
/// ```
/// assert_eq!(mm_retrieval::metrics::overlap_at_k(&[1, 2, 3], &[1, 3, 4], 3), 2.0 / 3.0);
/// ```
pub fn overlap_at_k(approx: &[ItemId], exact: &[ItemId], k: usize) -> f64 {
    let truth: HashSet<ItemId> = exact.iter().take(k).copied().collect();
    if truth.is_empty() {
        return 1.0;
    }
    let found = approx
        .iter()
        .take(k)
        .filter(|id| truth.contains(id))
        .count();
    found as f64 / truth.len() as f64
}
