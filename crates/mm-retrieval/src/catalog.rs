//! [`Catalog`]: items embedded into an image index and a text index, queried by text or image
//! with per-index top-k and fusion.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::edge::{EdgeOptions, EdgeStore};
use crate::embedder::{Embedder, check_vectors};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fusion::{self, Candidate, Fusion, SearchMode};
use crate::item::{ImageSource, Item, ItemId};
use crate::progress::{Flow, IndexProgress, Progress};
use crate::store::{Point, ScoredId, SearchParams, Space, VectorStore};

/// The file describing a catalogue folder.
pub const CATALOG_FILE: &str = "catalog.json";
/// The qdrant-edge shard's folder inside a catalogue folder.
pub const SHARD_DIR: &str = "shard";
const FORMAT: u32 = 1;

/// What `catalog.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogInfo {
    /// Layout version (1).
    pub format: u32,
    /// The embedder's model id when the catalogue was created.
    pub model: String,
    /// The width of the vectors.
    pub dim: usize,
}

/// Settings of [`Catalog::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Items embedded and stored together (one model call per space, one acknowledged store
    /// update). Default 16.
    pub batch_size: usize,
    /// Build the HNSW indexes at the end (see [`VectorStore::optimize`]). Default true.
    pub optimize: bool,
    /// Flush to disk at the end (durable against a power loss). Default true.
    pub flush: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            optimize: true,
            flush: true,
        }
    }
}

/// An item that was not stored, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The item.
    pub id: ItemId,
    /// Its image file, if any.
    pub path: Option<PathBuf>,
    /// Why (an unreadable image is [`Error::Core`] with `mm_core::Error::Image` or `Io`).
    pub error: Error,
}

/// What [`Catalog::index`] did.
#[derive(Debug, Default)]
pub struct IndexReport {
    /// Items stored.
    pub indexed: usize,
    /// Items skipped (unreadable images, items with neither image nor text, reserved payload
    /// keys), in input order.
    pub skipped: Vec<Skipped>,
}

/// Settings of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Results wanted. Default 10.
    pub k: usize,
    /// Which indexes, and how they are fused. Default: both, weighted 0.6 image / 0.4 text.
    pub mode: SearchMode,
    /// Per-index candidates fetched before fusion (`None`: `max(4 k, 50)`).
    pub candidates: Option<usize>,
    /// Payload filter, applied inside each index's search.
    pub filter: Option<Filter>,
    /// Approximate-search settings.
    pub params: SearchParams,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self::new(10)
    }
}

impl SearchOptions {
    /// `k` results, fused 0.6 / 0.4, no filter.
    ///
    /// ```
    /// use mm_retrieval::{Filter, Fusion, SearchMode, SearchOptions};
    /// let options = SearchOptions::new(5)
    ///     .mode(SearchMode::Fused(Fusion::rrf()))
    ///     .filter(Filter::eq("category", "shoes"));
    /// assert_eq!(options.k, 5);
    /// ```
    pub fn new(k: usize) -> Self {
        Self {
            k,
            mode: SearchMode::default(),
            candidates: None,
            filter: None,
            params: SearchParams::default(),
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: SearchMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the per-index candidate count.
    pub fn candidates(mut self, candidates: usize) -> Self {
        self.candidates = Some(candidates);
        self
    }

    /// Sets the approximate-search settings.
    pub fn params(mut self, params: SearchParams) -> Self {
        self.params = params;
        self
    }

    fn candidate_count(&self) -> usize {
        self.candidates.unwrap_or((4 * self.k).max(50)).max(self.k)
    }
}

/// One result of a query.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The item's id.
    pub id: ItemId,
    /// The score the results are ranked by (cosine similarity for one index, the fused score
    /// otherwise).
    pub score: f32,
    /// Cosine similarity of the item's image vector to the query, when known.
    pub image_score: Option<f32>,
    /// Cosine similarity of the item's text vector to the query, when known.
    pub text_score: Option<f32>,
    /// The item as stored (image path, text, payload).
    pub item: Item,
}

/// A product catalogue: every item's image and text embedded by one [`Embedder`] into two
/// named vectors of a [`VectorStore`] (by default an embedded qdrant-edge shard in a folder),
/// queried by text or image.
///
/// ```no_run
/// use mm_retrieval::{Catalog, ClipEmbedder, IndexOptions, Item, SearchOptions};
/// let device = mm_core::device::cpu();
/// let clip = ClipEmbedder::load("openai/clip-vit-base-patch32", &device)?;
/// let catalog = Catalog::open_or_create("products.db", clip)?;
/// let items = vec![
///     Item::new(1).with_image_path("img/1.jpg").with_text("red running shoes").with_field("price", 59.9),
///     Item::new(2).with_image_path("img/2.jpg").with_text("a leather handbag").with_field("price", 120),
/// ];
/// let report = catalog.index(&items, &IndexOptions::default(), None)?;
/// for skipped in &report.skipped {
///     eprintln!("skipped {}: {}", skipped.id, skipped.error);
/// }
/// for hit in catalog.search_text("shoes for jogging", &SearchOptions::new(10))? {
///     println!("{:.3} {} {:?}", hit.score, hit.id, hit.item.text);
/// }
/// # Ok::<(), mm_retrieval::Error>(())
/// ```
#[derive(Debug)]
pub struct Catalog<E, S = EdgeStore> {
    embedder: E,
    store: S,
    info: CatalogInfo,
}

impl<E: Embedder> Catalog<E, EdgeStore> {
    /// Creates a catalogue in the folder `dir` (created if needed; `catalog.json` + the
    /// qdrant-edge shard in `shard/`). Fails with [`Error::AlreadyExists`] if it holds one.
    pub fn create(dir: impl AsRef<Path>, embedder: E) -> Result<Self> {
        Self::create_with(dir, embedder, EdgeOptions::default())
    }

    /// [`create`](Self::create) with index settings.
    pub fn create_with(dir: impl AsRef<Path>, embedder: E, options: EdgeOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let file = dir.join(CATALOG_FILE);
        if file.exists() || dir.join(SHARD_DIR).exists() {
            return Err(Error::AlreadyExists(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let info = CatalogInfo {
            format: FORMAT,
            model: embedder.model_id().to_string(),
            dim: embedder.dim(),
        };
        let store = EdgeStore::create(dir.join(SHARD_DIR), info.dim, options)?;
        // Written last: a folder with catalog.json always has a complete shard.
        let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Store(e.to_string()))?;
        let tmp = dir.join(format!("{CATALOG_FILE}.tmp"));
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        Ok(Self {
            embedder,
            store,
            info,
        })
    }

    /// Opens the catalogue in `dir`, replaying what a crash left in the write-ahead log.
    /// Fails with [`Error::NotACatalog`] if there is none, and with
    /// [`Error::DimensionMismatch`] if it was built with a model of another width.
    pub fn open(dir: impl AsRef<Path>, embedder: E) -> Result<Self> {
        Self::open_with(dir, embedder, EdgeOptions::default())
    }

    /// [`open`](Self::open) with search settings.
    pub fn open_with(dir: impl AsRef<Path>, embedder: E, options: EdgeOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let info = read_info(dir)?;
        if info.dim != embedder.dim() {
            return Err(Error::DimensionMismatch {
                location: dir.display().to_string(),
                stored: info.dim,
                embedder: embedder.dim(),
                model: format!(" ({})", info.model),
            });
        }
        let store = EdgeStore::open(dir.join(SHARD_DIR), options)?;
        let mut catalog = Self::with_store(embedder, store)?;
        catalog.info = info;
        Ok(catalog)
    }

    /// Opens the catalogue in `dir`, or creates it if the folder holds none.
    pub fn open_or_create(dir: impl AsRef<Path>, embedder: E) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join(CATALOG_FILE).exists() {
            Self::open(dir, embedder)
        } else {
            Self::create(dir, embedder)
        }
    }
}

/// Reads `catalog.json` of a catalogue folder (without opening the store).
///
/// ```
/// let err = mm_retrieval::catalog::read_info("/nonexistent").unwrap_err();
/// assert!(matches!(err, mm_retrieval::Error::NotACatalog { .. }));
/// ```
pub fn read_info(dir: impl AsRef<Path>) -> Result<CatalogInfo> {
    let dir = dir.as_ref();
    let file = dir.join(CATALOG_FILE);
    let not = |reason: String| Error::NotACatalog {
        path: dir.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| not(format!("cannot read {}: {e}", file.display())))?;
    let info: CatalogInfo =
        serde_json::from_str(&text).map_err(|e| not(format!("invalid {CATALOG_FILE}: {e}")))?;
    if info.format != FORMAT {
        return Err(not(format!(
            "unknown format {} (this version reads {FORMAT})",
            info.format
        )));
    }
    Ok(info)
}

impl<E: Embedder, S: VectorStore> Catalog<E, S> {
    /// A catalogue over any store (e.g. a Qdrant server); fails with
    /// [`Error::DimensionMismatch`] if the store's width is not the embedder's.
    pub fn with_store(embedder: E, store: S) -> Result<Self> {
        if store.dim() != embedder.dim() {
            return Err(Error::DimensionMismatch {
                location: "store".into(),
                stored: store.dim(),
                embedder: embedder.dim(),
                model: String::new(),
            });
        }
        let info = CatalogInfo {
            format: FORMAT,
            model: embedder.model_id().to_string(),
            dim: embedder.dim(),
        };
        Ok(Self {
            embedder,
            store,
            info,
        })
    }

    /// The embedder.
    pub fn embedder(&self) -> &E {
        &self.embedder
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The model and width recorded for the catalogue.
    pub fn info(&self) -> &CatalogInfo {
        &self.info
    }

    /// Embeds and stores `items` in batches of `options.batch_size`, each batch one
    /// acknowledged store update (it survives a crash once `progress` has seen it). An item
    /// whose image cannot be read or decoded is skipped and reported, never aborting the
    /// batch; model or store failures are errors. Items with an existing id replace it.
    pub fn index(
        &self,
        items: &[Item],
        options: &IndexOptions,
        mut progress: Option<&mut Progress<'_>>,
    ) -> Result<IndexReport> {
        if options.batch_size == 0 {
            return Err(Error::InvalidInput("batch size 0".into()));
        }
        let mut report = IndexReport::default();
        let mut done = 0;
        for batch in items.chunks(options.batch_size) {
            let (points, skipped) = self.embed_batch(batch)?;
            let stored = points.len();
            self.store.upsert(points)?;
            report.indexed += stored;
            report.skipped.extend(skipped);
            done += batch.len();
            if let Some(progress) = progress.as_deref_mut() {
                let info = IndexProgress {
                    done,
                    total: items.len(),
                    indexed: report.indexed,
                    skipped: report.skipped.len(),
                };
                if progress(&info) == Flow::Cancel {
                    return Err(Error::Cancelled {
                        indexed: report.indexed,
                    });
                }
            }
        }
        if options.optimize {
            self.store.optimize()?;
        }
        if options.flush {
            self.store.flush()?;
        }
        Ok(report)
    }

    /// Embeds one batch: the points to store and the items skipped.
    fn embed_batch(&self, batch: &[Item]) -> Result<(Vec<Point>, Vec<Skipped>)> {
        let mut skipped = Vec::new();
        let mut kept: Vec<(&Item, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        let mut images: Vec<RgbImage> = Vec::new();
        let mut image_of: Vec<Option<usize>> = Vec::new();
        for item in batch {
            let skip = |error: Error| Skipped {
                id: item.id,
                path: item.image_path().map(Path::to_path_buf),
                error,
            };
            if item.image.is_none() && item.text.is_none() {
                skipped.push(skip(Error::InvalidInput(format!(
                    "item {} has neither an image nor a text",
                    item.id
                ))));
                continue;
            }
            let payload = match item.stored_payload() {
                Ok(p) => p,
                Err(e) => {
                    skipped.push(skip(e));
                    continue;
                }
            };
            let image = match &item.image {
                None => None,
                Some(ImageSource::Pixels(pixels)) => Some((**pixels).clone()),
                Some(ImageSource::Path(path)) => match mm_core::image::load_image_on_white(path) {
                    Ok(image) => Some(image),
                    Err(e) => {
                        skipped.push(skip(e.into()));
                        continue;
                    }
                },
            };
            image_of.push(image.map(|image| {
                images.push(image);
                images.len() - 1
            }));
            kept.push((item, payload));
        }
        let model = self.embedder.model_id();
        let dim = self.embedder.dim();
        let image_vectors = self.embedder.embed_images(&images)?;
        check_vectors(model, &image_vectors, images.len(), dim)?;
        let texts: Vec<&str> = kept.iter().filter_map(|(i, _)| i.text.as_deref()).collect();
        let text_vectors = self.embedder.embed_texts(&texts)?;
        check_vectors(model, &text_vectors, texts.len(), dim)?;
        let mut image_vectors = image_vectors.into_iter().map(Some).collect::<Vec<_>>();
        let mut text_vectors = text_vectors.into_iter();
        let points = kept
            .into_iter()
            .zip(image_of)
            .map(|((item, payload), image)| Point {
                id: item.id,
                image: image.and_then(|i| image_vectors[i].take()),
                text: item.text.as_ref().and_then(|_| text_vectors.next()),
                payload,
            })
            .collect();
        Ok((points, skipped))
    }

    /// Adds (or replaces) one item; an unreadable image is an error here.
    ///
    /// ```no_run
    /// # fn f(catalog: &mm_retrieval::Catalog<mm_retrieval::ClipEmbedder>) -> mm_retrieval::Result<()> {
    /// catalog.add(mm_retrieval::Item::new(3).with_text("a blue scarf"))?;
    /// # Ok(()) }
    /// ```
    pub fn add(&self, item: Item) -> Result<()> {
        let (points, mut skipped) = self.embed_batch(std::slice::from_ref(&item))?;
        if let Some(s) = skipped.pop() {
            return Err(s.error);
        }
        self.store.upsert(points)
    }

    /// Replaces an item (its image and text are embedded again): the same as
    /// [`add`](Self::add).
    pub fn update(&self, item: Item) -> Result<()> {
        self.add(item)
    }

    /// Deletes items (unknown ids are ignored).
    pub fn delete(&self, ids: &[ItemId]) -> Result<()> {
        self.store.delete(ids)
    }

    /// The stored item with this id.
    pub fn get(&self, id: ItemId) -> Result<Option<Item>> {
        Ok(self
            .store
            .payloads(&[id])?
            .remove(&id)
            .map(|p| Item::from_stored(id, p)))
    }

    /// The number of items.
    pub fn len(&self) -> Result<usize> {
        self.store.count()
    }

    /// Whether the catalogue has no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Writes everything to disk (see [`VectorStore::flush`]).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// Builds the HNSW indexes where the data has grown (see [`VectorStore::optimize`]).
    pub fn optimize(&self) -> Result<()> {
        self.store.optimize()
    }

    /// The items best matching a text.
    pub fn search_text(&self, text: &str, options: &SearchOptions) -> Result<Vec<Hit>> {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("empty query text".into()));
        }
        let v = self.embedder.embed_texts(&[text])?;
        check_vectors(self.embedder.model_id(), &v, 1, self.embedder.dim())?;
        self.search_vector(&v[0], options)
    }

    /// The items best matching an image.
    pub fn search_image(&self, image: &RgbImage, options: &SearchOptions) -> Result<Vec<Hit>> {
        let v = self.embedder.embed_images(std::slice::from_ref(image))?;
        check_vectors(self.embedder.model_id(), &v, 1, self.embedder.dim())?;
        self.search_vector(&v[0], options)
    }

    /// The items best matching an image file; a file that is not a readable image is
    /// [`Error::QueryImage`].
    pub fn search_image_file(
        &self,
        path: impl AsRef<Path>,
        options: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        let path = path.as_ref();
        let image = mm_core::image::load_image_on_white(path).map_err(|e| Error::QueryImage {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        self.search_image(&image, options)
    }

    /// The items best matching a query vector of the embedder's space.
    pub fn search_vector(&self, query: &[f32], options: &SearchOptions) -> Result<Vec<Hit>> {
        if options.k == 0 {
            return Err(Error::InvalidInput("k = 0".into()));
        }
        if query.len() != self.store.dim() {
            return Err(Error::InvalidInput(format!(
                "query vector of width {} for a catalogue of width {}",
                query.len(),
                self.store.dim()
            )));
        }
        let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(Error::InvalidInput(
                "the query vector is zero or not finite".into(),
            ));
        }
        let query: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let filter = options.filter.as_ref();
        let params = options.params;
        let search = |space, limit| self.store.search(space, &query, limit, filter, params);
        let (ranked, image_scores, text_scores) = match options.mode {
            SearchMode::Image | SearchMode::Text => {
                let space = if options.mode == SearchMode::Image {
                    Space::Image
                } else {
                    Space::Text
                };
                let hits = search(space, options.k)?;
                let scores: HashMap<ItemId, f32> = hits.iter().map(|h| (h.id, h.score)).collect();
                if space == Space::Image {
                    (hits, scores, HashMap::new())
                } else {
                    (hits, HashMap::new(), scores)
                }
            }
            SearchMode::Fused(fusion) => {
                fusion.validate()?;
                let n = options.candidate_count();
                let image = search(Space::Image, n)?;
                let text = search(Space::Text, n)?;
                let mut image_scores: HashMap<ItemId, f32> =
                    image.iter().map(|h| (h.id, h.score)).collect();
                let mut text_scores: HashMap<ItemId, f32> =
                    text.iter().map(|h| (h.id, h.score)).collect();
                let ranked = match fusion {
                    Fusion::Rrf {
                        k,
                        image: wi,
                        text: wt,
                    } => fusion::rrf(&image, &text, k, wi, wt),
                    Fusion::Weighted {
                        image: wi,
                        text: wt,
                    } => {
                        // Complete every candidate's pair of similarities from stored vectors.
                        self.fill_scores(&query, Space::Text, &image_scores, &mut text_scores)?;
                        self.fill_scores(&query, Space::Image, &text_scores, &mut image_scores)?;
                        let ids: Vec<ItemId> = ordered_union(&image, &text);
                        let candidates: Vec<Candidate> = ids
                            .into_iter()
                            .map(|id| Candidate {
                                id,
                                image: image_scores.get(&id).copied(),
                                text: text_scores.get(&id).copied(),
                            })
                            .collect();
                        fusion::weighted(&candidates, wi, wt)
                    }
                };
                (ranked, image_scores, text_scores)
            }
        };
        let top: Vec<ScoredId> = ranked.into_iter().take(options.k).collect();
        let ids: Vec<ItemId> = top.iter().map(|h| h.id).collect();
        let mut payloads = self.store.payloads(&ids)?;
        Ok(top
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                score: h.score,
                image_score: image_scores.get(&h.id).copied(),
                text_score: text_scores.get(&h.id).copied(),
                item: Item::from_stored(h.id, payloads.remove(&h.id).unwrap_or_default()),
            })
            .collect())
    }

    /// Adds to `scores` (of `space`) the similarities of the ids of `others` it lacks,
    /// computed from their stored vectors.
    fn fill_scores(
        &self,
        query: &[f32],
        space: Space,
        others: &HashMap<ItemId, f32>,
        scores: &mut HashMap<ItemId, f32>,
    ) -> Result<()> {
        let missing: Vec<ItemId> = others
            .keys()
            .filter(|id| !scores.contains_key(id))
            .copied()
            .collect();
        for (id, v) in self.store.vectors(space, &missing)? {
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
            scores.insert(id, dot / norm);
        }
        Ok(())
    }
}

fn ordered_union(a: &[ScoredId], b: &[ScoredId]) -> Vec<ItemId> {
    let mut seen = HashSet::new();
    a.iter()
        .chain(b)
        .filter(|h| seen.insert(h.id))
        .map(|h| h.id)
        .collect()
}
