//! The storage side of a catalogue: named vectors (`image`, `text`) per item, cosine search,
//! payloads. Implemented by [`EdgeStore`](crate::EdgeStore) (qdrant-edge, in-process) and,
//! with the `server` feature, `ServerStore` (a Qdrant server).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::item::ItemId;

/// One of the two vector spaces of an item (Qdrant named vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// The image embedding (vector name `image`).
    Image,
    /// The text embedding (vector name `text`).
    Text,
}

impl Space {
    /// Both spaces.
    pub const ALL: [Space; 2] = [Space::Image, Space::Text];

    /// The Qdrant vector name.
    ///
    /// ```
    /// assert_eq!(mm_retrieval::Space::Image.name(), "image");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
        }
    }
}

/// What a store keeps of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The id.
    pub id: ItemId,
    /// The image embedding, if the item has an image.
    pub image: Option<Vec<f32>>,
    /// The text embedding, if the item has a text.
    pub text: Option<Vec<f32>>,
    /// The payload (a JSON object).
    pub payload: Map<String, Value>,
}

/// An id with its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredId {
    /// The item.
    pub id: ItemId,
    /// Cosine similarity in `[-1, 1]`.
    pub score: f32,
}

/// Approximate-search settings of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchParams {
    /// HNSW beam width (`ef`); `None`: the store's default (see
    /// [`EdgeOptions::hnsw_ef`](crate::EdgeOptions::hnsw_ef)).
    pub hnsw_ef: Option<usize>,
    /// Exact search (every vector compared), for checking the approximate one.
    pub exact: bool,
}

/// A vector database holding a catalogue's points. Every method takes `&self`: stores are
/// safe to query from several threads.
pub trait VectorStore {
    /// The width of the stored vectors.
    fn dim(&self) -> usize;
    /// Inserts or replaces points. When this returns, the points are acknowledged: they
    /// survive a crash of the process.
    fn upsert(&self, points: Vec<Point>) -> Result<()>;
    /// Deletes points (unknown ids are ignored).
    fn delete(&self, ids: &[ItemId]) -> Result<()>;
    /// The `limit` nearest points in one space by cosine similarity, best first, among those
    /// that pass `filter` (and have a vector in that space).
    fn search(
        &self,
        space: Space,
        query: &[f32],
        limit: usize,
        filter: Option<&Filter>,
        params: SearchParams,
    ) -> Result<Vec<ScoredId>>;
    /// The stored (normalised) vectors of `ids` in one space; ids without one are left out.
    fn vectors(&self, space: Space, ids: &[ItemId]) -> Result<HashMap<ItemId, Vec<f32>>>;
    /// The payloads of `ids`; unknown ids are left out.
    fn payloads(&self, ids: &[ItemId]) -> Result<HashMap<ItemId, Map<String, Value>>>;
    /// The number of points.
    fn count(&self) -> Result<usize>;
    /// Writes everything to disk (durable against a power loss, not just a process crash).
    fn flush(&self) -> Result<()>;
    /// Builds or refreshes the search indexes (HNSW) where the data has grown; a no-op for
    /// stores that do it in the background.
    fn optimize(&self) -> Result<()>;
}

/// The check every store makes of a query: its width must be the store's `dim`.
pub(crate) fn check_query(query: &[f32], dim: usize) -> Result<()> {
    if query.len() == dim {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "query vector of width {} in a store of width {dim}",
        query.len()
    )))
}
