//! [`ServerStore`]: a catalogue's vectors in a Qdrant server through `qdrant-client` (gRPC),
//! for catalogues that outgrow one machine (feature `server`). The collection layout is the
//! embedded store's: named vectors `image` and `text` of one width, cosine distance, numeric
//! point ids, the item's payload with `_image` / `_text`.
//!
//! Start a server (REST on 6333, gRPC on 6334; data in `./qdrant_storage`):
//!
//! ```text
//! docker run -p 6333:6333 -p 6334:6334 -v "$(pwd)/qdrant_storage:/qdrant/storage" qdrant/qdrant
//! ```
//!
//! ```no_run
//! use mm_retrieval::{Catalog, ClipEmbedder, Embedder, ServerStore};
//! let device = mm_core::device::cpu();
//! let clip = ClipEmbedder::load("openai/clip-vit-base-patch32", &device)?;
//! let store = ServerStore::connect("http://localhost:6334", "products", clip.dim())?;
//! let catalog = Catalog::with_store(clip, store)?;
//! # Ok::<(), mm_retrieval::Error>(())
//! ```

use std::collections::HashMap;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vectors_config::Config;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance,
    GetPointsBuilder, HnswConfigDiffBuilder, PointId, PointStruct, PointsIdsList,
    QueryPointsBuilder, Range, SearchParamsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
    VectorsConfigBuilder, VectorsSelector,
};
use serde_json::{Map, Value};

use crate::edge::EdgeOptions;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::item::ItemId;
use crate::store::{Point, ScoredId, SearchParams, Space, VectorStore, check_query};

/// A catalogue's collection in a Qdrant server. The async client runs on a private
/// current-thread tokio runtime, so the store is used like the embedded one.
pub struct ServerStore {
    client: Qdrant,
    runtime: tokio::runtime::Runtime,
    collection: String,
    dim: usize,
    hnsw_ef: Option<u64>,
}

impl std::fmt::Debug for ServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStore")
            .field("collection", &self.collection)
            .field("dim", &self.dim)
            .finish()
    }
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

impl ServerStore {
    /// Connects to the server at `url` (gRPC, e.g. `http://localhost:6334`) and opens the
    /// collection, creating it with named vectors `image` and `text` of width `dim` (cosine;
    /// HNSW m 32, ef_construct 256, as the embedded store) if it does not exist. An existing
    /// collection of another width is [`Error::DimensionMismatch`]; a server that does not
    /// answer is [`Error::Store`].
    pub fn connect(url: &str, collection: &str, dim: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Store(format!("tokio runtime: {e}")))?;
        let client = Qdrant::from_url(url).build().map_err(store_err)?;
        let store = Self {
            client,
            runtime,
            collection: collection.to_string(),
            dim,
            hnsw_ef: Some(EdgeOptions::default().hnsw_ef as u64),
        };
        store.ensure_collection()?;
        Ok(store)
    }

    /// Sets the HNSW beam width of searches: default 256, the embedded store's (`None`: the
    /// server's own default, its `ef_construct`).
    pub fn with_hnsw_ef(mut self, ef: Option<usize>) -> Self {
        self.hnsw_ef = ef.map(|e| e as u64);
        self
    }

    /// The client, for everything this crate does not wrap.
    pub fn client(&self) -> &Qdrant {
        &self.client
    }

    /// Deletes the collection from the server, with every point in it.
    pub fn delete_collection(self) -> Result<()> {
        self.runtime
            .block_on(self.client.delete_collection(self.collection.as_str()))
            .map_err(store_err)?;
        Ok(())
    }

    fn ensure_collection(&self) -> Result<()> {
        let name = &self.collection;
        self.runtime.block_on(async {
            if !self
                .client
                .collection_exists(name)
                .await
                .map_err(store_err)?
            {
                let mut vectors = VectorsConfigBuilder::default();
                for space in Space::ALL {
                    vectors.add_named_vector_params(
                        space.name(),
                        VectorParamsBuilder::new(self.dim as u64, Distance::Cosine),
                    );
                }
                // The embedded store's graph settings (see `EdgeOptions`).
                let defaults = EdgeOptions::default();
                let hnsw = HnswConfigDiffBuilder::default()
                    .m(defaults.m as u64)
                    .ef_construct(defaults.ef_construct as u64);
                self.client
                    .create_collection(
                        CreateCollectionBuilder::new(name)
                            .vectors_config(vectors)
                            .hnsw_config(hnsw),
                    )
                    .await
                    .map_err(store_err)?;
                return Ok(());
            }
            let info = self.client.collection_info(name).await.map_err(store_err)?;
            let config = info
                .result
                .and_then(|r| r.config)
                .and_then(|c| c.params)
                .and_then(|p| p.vectors_config)
                .and_then(|v| v.config);
            let widths: Vec<u64> = match config {
                Some(Config::ParamsMap(map)) => Space::ALL
                    .iter()
                    .filter_map(|s| map.map.get(s.name()).map(|p| p.size))
                    .collect(),
                _ => Vec::new(),
            };
            match widths[..] {
                [a, b] if a == b && a as usize == self.dim => Ok(()),
                [a, b] if a == b => Err(Error::DimensionMismatch {
                    location: format!("collection {name}"),
                    stored: a as usize,
                    embedder: self.dim,
                    model: String::new(),
                }),
                _ => Err(Error::NotACatalog {
                    path: name.into(),
                    reason: "the collection does not have the named vectors image and text of \
                             one width"
                        .into(),
                }),
            }
        })
    }
}

fn item_id(id: Option<PointId>) -> Option<ItemId> {
    match id?.point_id_options? {
        PointIdOptions::Num(n) => Some(n),
        PointIdOptions::Uuid(_) => None,
    }
}

fn to_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

impl VectorStore for ServerStore {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&self, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut structs = Vec::with_capacity(points.len());
        for p in points {
            let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
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
                    vectors.insert(space.name().to_string(), v);
                }
            }
            let payload =
                qdrant_client::Payload::try_from(Value::Object(p.payload)).map_err(|e| {
                    Error::Payload {
                        id: p.id,
                        reason: e.to_string(),
                    }
                })?;
            structs.push(PointStruct::new(p.id, vectors, payload));
        }
        self.runtime
            .block_on(
                self.client
                    .upsert_points(UpsertPointsBuilder::new(&self.collection, structs).wait(true)),
            )
            .map_err(store_err)?;
        Ok(())
    }

    fn delete(&self, ids: &[ItemId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = PointsIdsList {
            ids: ids.iter().map(|&id| id.into()).collect(),
        };
        self.runtime
            .block_on(
                self.client.delete_points(
                    DeletePointsBuilder::new(&self.collection)
                        .points(list)
                        .wait(true),
                ),
            )
            .map_err(store_err)?;
        Ok(())
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
        let mut search = SearchParamsBuilder::default().exact(params.exact);
        if let Some(ef) = params.hnsw_ef.map(|e| e as u64).or(self.hnsw_ef) {
            search = search.hnsw_ef(ef);
        }
        let mut request = QueryPointsBuilder::new(&self.collection)
            .query(query.to_vec())
            .using(space.name())
            .limit(limit as u64)
            .params(search);
        if let Some(filter) = filter {
            filter.validate()?;
            request = request.filter(to_server_filter(filter));
        }
        let response = self
            .runtime
            .block_on(self.client.query(request))
            .map_err(store_err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| item_id(p.id).map(|id| ScoredId { id, score: p.score }))
            .collect())
    }

    fn vectors(&self, space: Space, ids: &[ItemId]) -> Result<HashMap<ItemId, Vec<f32>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| id.into()).collect();
        let request = GetPointsBuilder::new(&self.collection, ids)
            .with_payload(false)
            .with_vectors(VectorsSelector {
                names: vec![space.name().to_string()],
            });
        let response = self
            .runtime
            .block_on(self.client.get_points(request))
            .map_err(store_err)?;
        let mut out = HashMap::new();
        for point in response.result {
            let Some(id) = item_id(point.id) else {
                continue;
            };
            let Some(vectors) = point.vectors else {
                continue;
            };
            if let Some(qdrant_client::qdrant::vector_output::Vector::Dense(dense)) =
                vectors.get_vector_by_name(space.name())
            {
                out.insert(id, dense.data);
            }
        }
        Ok(out)
    }

    fn payloads(&self, ids: &[ItemId]) -> Result<HashMap<ItemId, Map<String, Value>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| id.into()).collect();
        let request = GetPointsBuilder::new(&self.collection, ids)
            .with_payload(true)
            .with_vectors(false);
        let response = self
            .runtime
            .block_on(self.client.get_points(request))
            .map_err(store_err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| Some((item_id(p.id)?, to_json(p.payload))))
            .collect())
    }

    fn count(&self) -> Result<usize> {
        let response = self
            .runtime
            .block_on(
                self.client
                    .count(CountPointsBuilder::new(&self.collection).exact(true)),
            )
            .map_err(store_err)?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }

    /// The server persists on its own (its WAL is written before an update with `wait`
    /// returns): nothing to do.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The server optimizes in the background: nothing to do.
    fn optimize(&self) -> Result<()> {
        Ok(())
    }
}

/// The filter as qdrant-client's.
fn to_server_filter(filter: &Filter) -> qdrant_client::qdrant::Filter {
    use qdrant_client::qdrant::Filter as F;
    match filter {
        Filter::All(fs) => F::must(fs.iter().map(condition)),
        Filter::AnyOf(fs) => F::should(fs.iter().map(condition)),
        Filter::Not(f) => F::must_not([condition(f)]),
        other => F::must([condition(other)]),
    }
}

fn condition(filter: &Filter) -> Condition {
    match filter {
        Filter::Eq(key, v) => match v {
            Value::String(s) => Condition::matches(key.as_str(), s.clone()),
            Value::Bool(b) => Condition::matches(key.as_str(), *b),
            other => Condition::matches(key.as_str(), other.as_i64().unwrap_or_default()),
        },
        Filter::Any(key, values) => {
            if values.iter().all(Value::is_string) {
                let strings: Vec<String> = values
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect();
                Condition::matches(key.as_str(), strings)
            } else {
                let ints: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
                Condition::matches(key.as_str(), ints)
            }
        }
        Filter::Range { key, min, max } => Condition::range(
            key.as_str(),
            Range {
                gte: *min,
                lte: *max,
                ..Default::default()
            },
        ),
        nested => to_server_filter(nested).into(),
    }
}
