//! Combining the image index's and the text index's answers: weighted score fusion (the
//! chapter's 0.6 image / 0.4 text) and reciprocal-rank fusion.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::item::ItemId;
use crate::store::ScoredId;

/// How the two indexes' answers are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// `score = (image · s_image + text · s_text) / (image + text)` over the cosine
    /// similarities of the item's image and text vectors to the query. Every candidate (the
    /// union of both indexes' top lists) gets both similarities, computed exactly from its
    /// stored vectors when it is in only one list; an item without a text (or an image) is
    /// scored by the other alone (the weights are renormalised over the vectors it has).
    Weighted {
        /// Weight of the image similarity (default 0.6).
        image: f32,
        /// Weight of the text similarity (default 0.4).
        text: f32,
    },
    /// Reciprocal-rank fusion: `score = Σ weight / (k + rank)` over the lists the item is in
    /// (ranks from 1), independent of the scales of the similarities.
    Rrf {
        /// The rank offset (60 in the RRF paper and Qdrant).
        k: f32,
        /// Weight of the image list (default 1).
        image: f32,
        /// Weight of the text list (default 1).
        text: f32,
    },
}

impl Default for Fusion {
    /// The chapter's weights: 0.6 image, 0.4 text.
    fn default() -> Self {
        Self::Weighted {
            image: 0.6,
            text: 0.4,
        }
    }
}

impl Fusion {
    /// Reciprocal-rank fusion with `k = 60` and equal weights.
    ///
    /// ```
    /// assert!(matches!(mm_retrieval::Fusion::rrf(), mm_retrieval::Fusion::Rrf { .. }));
    /// ```
    pub fn rrf() -> Self {
        Self::Rrf {
            k: 60.0,
            image: 1.0,
            text: 1.0,
        }
    }

    /// Weighted score fusion with the given weights.
    ///
    /// ```
    /// let f = mm_retrieval::Fusion::weighted(0.6, 0.4);
    /// assert_eq!(f, mm_retrieval::Fusion::default());
    /// ```
    pub fn weighted(image: f32, text: f32) -> Self {
        Self::Weighted { image, text }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let (a, b, k) = match *self {
            Self::Weighted { image, text } => (image, text, 0.0),
            Self::Rrf { k, image, text } => (image, text, k),
        };
        let ok = [a, b, k].iter().all(|x| x.is_finite() && *x >= 0.0) && a + b > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "fusion {self:?}: weights and k must be finite and non-negative, with a \
                 positive weight"
            )))
        }
    }
}

/// What a query searches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SearchMode {
    /// The image index alone.
    Image,
    /// The text index alone.
    Text,
    /// Both, fused.
    Fused(Fusion),
}

impl Default for SearchMode {
    /// Both indexes, fused 0.6 / 0.4.
    fn default() -> Self {
        Self::Fused(Fusion::default())
    }
}

/// One candidate's similarities in the two spaces (`None`: no vector there, or not ranked).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The item.
    pub id: ItemId,
    /// Cosine similarity of its image vector.
    pub image: Option<f32>,
    /// Cosine similarity of its text vector.
    pub text: Option<f32>,
}

/// Weighted score fusion of candidates (see [`Fusion::Weighted`]); best first, ties by id.
///
/// ```
/// use mm_retrieval::fusion::{Candidate, weighted};
/// let fused = weighted(
///     &[
///         Candidate { id: 1, image: Some(0.9), text: Some(0.1) },
///         Candidate { id: 2, image: Some(0.6), text: Some(0.8) },
///     ],
///     0.6,
///     0.4,
/// );
/// assert_eq!(fused[0].id, 2); // 0.68 > 0.58
/// ```
pub fn weighted(candidates: &[Candidate], image: f32, text: f32) -> Vec<ScoredId> {
    let mut out: Vec<ScoredId> = candidates
        .iter()
        .filter_map(|c| {
            let (mut num, mut den) = (0.0f32, 0.0f32);
            if let Some(s) = c.image {
                num += image * s;
                den += image;
            }
            if let Some(s) = c.text {
                num += text * s;
                den += text;
            }
            (den > 0.0).then(|| ScoredId {
                id: c.id,
                score: num / den,
            })
        })
        .collect();
    sort(&mut out);
    out
}

/// Reciprocal-rank fusion of two ranked lists (best first); best first, ties by id.
///
/// ```
/// use mm_retrieval::ScoredId;
/// use mm_retrieval::fusion::rrf;
/// let a = [ScoredId { id: 1, score: 0.9 }, ScoredId { id: 2, score: 0.8 }];
/// let b = [ScoredId { id: 2, score: 0.7 }, ScoredId { id: 3, score: 0.6 }];
/// let fused = rrf(&a, &b, 60.0, 1.0, 1.0);
/// assert_eq!(fused[0].id, 2); // in both lists
/// ```
pub fn rrf(image: &[ScoredId], text: &[ScoredId], k: f32, wi: f32, wt: f32) -> Vec<ScoredId> {
    let mut scores: HashMap<ItemId, f32> = HashMap::new();
    for (list, w) in [(image, wi), (text, wt)] {
        for (rank, hit) in list.iter().enumerate() {
            *scores.entry(hit.id).or_default() += w / (k + rank as f32 + 1.0);
        }
    }
    let mut out: Vec<ScoredId> = scores
        .into_iter()
        .map(|(id, score)| ScoredId { id, score })
        .collect();
    sort(&mut out);
    out
}

fn sort(hits: &mut [ScoredId]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
}
