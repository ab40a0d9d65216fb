//! [`EdgeStore`]: the embedded default store, Qdrant's own engine in-process (`qdrant-edge`):
//! a folder on disk, nothing to start.
//!
//! Layout and semantics (qdrant-edge 0.7.2): one shard folder (`edge_config.json`, `wal/`,
//! `segments/`), named vectors `image` and `text`, cosine distance. qdrant-edge 0.7 writes every
//! update to its write-ahead log but does not replay the log when a shard is loaded: what a
//! crash leaves between two flushes of the segments is not recovered. So every
//! [`upsert`](VectorStore::upsert) and [`delete`](VectorStore::delete) of this store ends with
//! a flush of the shard (segments synced to disk): when it returns, the update is
//! acknowledged and survives a crash of the process or of the machine. (qdrant-edge 0.8 / 0.9
//! replay the log, but need a newer Rust than 1.95: they use the unstable
//! `std::debug_assert_matches`.) Points go to an appendable segment that is searched exactly;
//! [`optimize`](VectorStore::optimize) builds an HNSW index over segments larger than the
//! indexing threshold (qdrant-edge runs no background optimizer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use qdrant_edge::{
    CountRequest, Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeVectorParamsBuilder,
    HnswIndexConfig, NamedQuery, PointId, PointInsertOperations, PointOperations, PointStruct,
    QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, VectorInternal, VectorStructInternal,
    Vectors, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::item::ItemId;
use crate::store::{Point, ScoredId, SearchParams, Space, VectorStore, check_query};

/// Index settings of an [`EdgeStore`]. The defaults (m 32, ef_construct 256, ef 256: more than
/// Qdrant's 16 / 100 / 100, since a query's time is dominated by the model's text or image
/// embedding, not by the search) give recall@10 ≥ 0.99 against exact search on clustered,
/// CLIP-like vectors (`tests/ann.rs`; 1.000 among 1 000 000 clustered vectors of width 768,
/// at 1.5 ms a query on two cores, against 116 ms for the exact scan); uniformly random
/// vectors of width 768 are a worst case for HNSW (recall@10 0.25 at ef 128 among 100 000 of
/// them). Qdrant's own defaults (m 16, ef_construct 100) build 4× faster and reach 0.97 at
/// 1 000 000. See `docs/performance.md` ("Retrieval").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeOptions {
    /// HNSW graph degree (`m`). Default 32.
    pub m: usize,
    /// HNSW beam width when building (`ef_construct`). Default 256.
    pub ef_construct: usize,
    /// HNSW beam width when searching (`ef`), unless a query sets its own. Default 256.
    pub hnsw_ef: usize,
    /// Segments whose vectors exceed this size (KiB) get an HNSW index when
    /// [`optimize`](VectorStore::optimize) runs; smaller ones are searched exactly.
    /// Default 10 000 KiB (about 3 300 vectors of width 768 per space), Qdrant's default.
    pub indexing_threshold_kb: usize,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            m: 32,
            ef_construct: 256,
            hnsw_ef: 256,
            indexing_threshold_kb: 10_000,
        }
    }
}

/// A catalogue's vectors and payloads in a qdrant-edge shard: named vectors `image` and `text`,
/// cosine distance, numeric point ids.
///
/// ```
/// use mm_retrieval::{EdgeOptions, EdgeStore, Point, SearchParams, Space, VectorStore};
/// let dir = std::env::temp_dir().join(format!("mm-edge-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = EdgeStore::create(&dir, 2, EdgeOptions::default())?;
/// store.upsert(vec![Point {
///     id: 1,
///     image: Some(vec![1.0, 0.0]),
///     text: None,
///     payload: Default::default(),
/// }])?;
/// let hits = store.search(Space::Image, &[1.0, 0.1], 5, None, SearchParams::default())?;
/// assert_eq!(hits[0].id, 1);
/// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), mm_retrieval::Error>(())
/// ```
#[derive(Debug)]
pub struct EdgeStore {
    shard: EdgeShard,
    /// Serialises updates, flushes and optimizations: qdrant-edge 0.7's `flush` panics when
    /// another thread holds the shard's locks.
    writer: Mutex<()>,
    path: PathBuf,
    dim: usize,
    options: EdgeOptions,
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

impl EdgeStore {
    /// Creates an empty shard in `path` (created if needed) for vectors of width `dim`.
    /// Fails if the folder already holds a shard.
    pub fn create(path: impl AsRef<Path>, dim: usize, options: EdgeOptions) -> Result<Self> {
        let path = path.as_ref();
        if dim == 0 {
            return Err(Error::InvalidInput("vectors of width 0".into()));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let hnsw = HnswIndexConfig {
            m: options.m,
            ef_construct: options.ef_construct,
            ..Default::default()
        };
        let mut builder =
            EdgeConfig::builder()
                .hnsw_config(hnsw)
                .optimizers(EdgeOptimizersConfig {
                    indexing_threshold: Some(options.indexing_threshold_kb),
                    ..Default::default()
                });
        for space in Space::ALL {
            builder = builder.vector(
                space.name(),
                EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
            );
        }
        let shard = EdgeShard::new(path, builder.build()).map_err(store_err)?;
        let store = Self {
            shard,
            writer: Mutex::new(()),
            path: path.to_path_buf(),
            dim,
            options,
        };
        store.flush()?;
        Ok(store)
    }

    /// Opens an existing shard. Only [`EdgeOptions::hnsw_ef`] of `options` applies; the index
    /// settings are those the shard was created with.
    pub fn open(path: impl AsRef<Path>, options: EdgeOptions) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Err(Error::NotACatalog {
                path: path.to_path_buf(),
                reason: "no such folder".into(),
            });
        }
        let shard = catch_unwind(AssertUnwindSafe(|| EdgeShard::load(path, None)))
            .map_err(|_| Error::Store(format!("qdrant-edge panicked loading {}", path.display())))?
            .map_err(store_err)?;
        let dims: Vec<usize> = {
            let config = shard.config();
            Space::ALL
                .iter()
                .filter_map(|s| config.vectors.get(s.name()).map(|v| v.size))
                .collect()
        };
        let dim = match dims[..] {
            [a, b] if a == b => a,
            _ => {
                return Err(Error::NotACatalog {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the shard does not have the named vectors image and text of one width \
                         (widths {dims:?})"
                    ),
                });
            }
        };
        Ok(Self {
            shard,
            writer: Mutex::new(()),
            path: path.to_path_buf(),
            dim,
            options,
        })
    }

    /// The shard folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options in use.
    pub fn options(&self) -> EdgeOptions {
        self.options
    }

    /// The underlying qdrant-edge shard, for everything this crate does not wrap (payload
    /// indexes, snapshots, facets).
    pub fn shard(&self) -> &EdgeShard {
        &self.shard
    }

    /// How many points are in HNSW-indexed segments (the rest is searched exactly).
    pub fn indexed_vectors(&self) -> usize {
        self.shard.info().indexed_vectors_count
    }

    /// Applies an update and flushes, under the writer lock.
    fn apply(&self, operation: UpdateOperation) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.shard.update(operation).map_err(store_err)?;
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<()> {
        catch_unwind(AssertUnwindSafe(|| self.shard.flush()))
            .map_err(|_| Error::Store(format!("flushing {} failed", self.path.display())))
    }
}

fn point_id(id: PointId) -> Option<ItemId> {
    match id {
        PointId::NumId(n) => Some(n),
        PointId::Uuid(_) => None,
    }
}

impl VectorStore for EdgeStore {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&self, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut structs = Vec::with_capacity(points.len());
        for p in points {
            let mut named: Vec<(&str, Vec<f32>)> = Vec::with_capacity(2);
            for (space, v) in [(Space::Image, p.image), (Space::Text, p.text)] {
                if let Some(v) = v {
                    if v.len() != self.dim {
                        return Err(Error::InvalidInput(format!(
                            "item {}: {} vector of width {} in a store of width {}",
                            p.id,
                            space.name(),
                            v.len(),
                            self.dim
                        )));
                    }
                    named.push((space.name(), v));
                }
            }
            structs.push(
                PointStruct::new(p.id, Vectors::new_named(named), Value::Object(p.payload)).into(),
            );
        }
        self.apply(UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(structs)),
        ))
    }

    fn delete(&self, ids: &[ItemId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.apply(UpdateOperation::PointOperation(
            PointOperations::DeletePoints {
                ids: ids.iter().map(|&id| PointId::NumId(id)).collect(),
            },
        ))
    }

    fn search(
        &self,
        space: Space,
        query: &[f32],
        limit: usize,
        filter: Option<&Filter>,
        params: SearchParams,
    ) -> Result<Vec<ScoredId>> {
        check_query(query, self.dim)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = filter.map(to_edge_filter).transpose()?;
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::Dense(query.to_vec()),
                using: Some(space.name().to_string()),
            }))),
            filter,
            score_threshold: None,
            limit,
            offset: 0,
            params: Some(qdrant_edge::SearchParams {
                hnsw_ef: Some(params.hnsw_ef.unwrap_or(self.options.hnsw_ef)),
                exact: params.exact,
                ..Default::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(false),
        };
        let points = self.shard.query(request).map_err(store_err)?;
        Ok(points
            .into_iter()
            .filter_map(|p| point_id(p.id).map(|id| ScoredId { id, score: p.score }))
            .collect())
    }

    fn vectors(&self, space: Space, ids: &[ItemId]) -> Result<HashMap<ItemId, Vec<f32>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| PointId::NumId(id)).collect();
        let records = self
            .shard
            .retrieve(
                &ids,
                Some(WithPayloadInterface::Bool(false)),
                Some(WithVector::Selector(vec![space.name().to_string()])),
            )
            .map_err(store_err)?;
        let mut out = HashMap::with_capacity(records.len());
        for r in records {
            let Some(id) = point_id(r.id) else { continue };
            let v = match r.vector {
                Some(VectorStructInternal::Named(mut named)) => named.remove(space.name()),
                _ => None,
            };
            if let Some(VectorInternal::Dense(v)) = v {
                out.insert(id, v);
            }
        }
        Ok(out)
    }

    fn payloads(&self, ids: &[ItemId]) -> Result<HashMap<ItemId, Map<String, Value>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| PointId::NumId(id)).collect();
        let records = self
            .shard
            .retrieve(
                &ids,
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(false)),
            )
            .map_err(store_err)?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let id = point_id(r.id)?;
                Some((id, r.payload.map(|p| p.0).unwrap_or_default()))
            })
            .collect())
    }

    fn count(&self) -> Result<usize> {
        self.shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(store_err)
    }

    fn flush(&self) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_locked()
    }

    fn optimize(&self) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.shard.optimize().map_err(store_err)?;
        self.flush_locked()
    }
}

/// The filter as qdrant-edge's (from Qdrant's JSON filter language).
fn to_edge_filter(filter: &Filter) -> Result<qdrant_edge::Filter> {
    filter.validate()?;
    serde_json::from_value(filter.to_qdrant_json())
        .map_err(|e| Error::InvalidInput(format!("filter {filter:?}: {e}")))
}
