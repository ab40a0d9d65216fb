//! # mm-retrieval
//!
//! Multimodal product search: a catalogue of items (an image, a text, a JSON payload), both
//! embedded with CLIP or SigLIP into a vector database, queried with a text or an image against
//! the image index and the text index, fused (0.6 image / 0.4 text by default, or
//! reciprocal-rank fusion), with payload filters.
//!
//! - [`Catalog`]: indexing in acknowledged batches with a progress / cancel callback
//!   (unreadable images skipped and reported), add / update / delete, text, image and vector
//!   queries, persistence (open a folder again).
//! - [`Embedder`]: texts and images to vectors; [`ClipEmbedder`] and [`SiglipEmbedder`] wrap
//!   `mm-vision`'s pipelines.
//! - [`VectorStore`]: named vectors `image` and `text` per item, cosine. [`EdgeStore`] is the
//!   embedded default (Qdrant's engine in-process, `qdrant-edge`: a folder, nothing to start);
//!   the `server` feature adds `ServerStore`, a Qdrant server through `qdrant-client`, with the
//!   same collection layout.
//! - [`fusion`], [`Filter`], [`metrics`] (recall@k, MRR).
//!
//! ```no_run
//! use mm_retrieval::{Catalog, ClipEmbedder, Filter, IndexOptions, Item, SearchOptions};
//!
//! let device = mm_core::device::cpu();
//! let clip = ClipEmbedder::load("openai/clip-vit-base-patch32", &device)?;
//! let catalog = Catalog::open_or_create("products.db", clip)?;
//! catalog.index(
//!     &[Item::new(1).with_image_path("1.jpg").with_text("red sneakers").with_field("price", 49)],
//!     &IndexOptions::default(),
//!     None,
//! )?;
//! let options = SearchOptions::new(10).filter(Filter::range("price", None, Some(100.0)));
//! for hit in catalog.search_image_file("query.jpg", &options)? {
//!     println!("{:.3} {:?}", hit.score, hit.item.text);
//! }
//! # Ok::<(), mm_retrieval::Error>(())
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod edge;
pub mod embedder;
mod error;
pub mod filter;
pub mod fusion;
pub mod item;
pub mod metrics;
pub mod progress;
#[cfg(feature = "server")]
pub mod server;
pub mod store;

pub use catalog::{Catalog, CatalogInfo, Hit, IndexOptions, IndexReport, SearchOptions, Skipped};
pub use edge::{EdgeOptions, EdgeStore};
pub use embedder::{ClipEmbedder, Embedder, PipelineEmbedder, SiglipEmbedder};
pub use error::{Error, Result};
pub use filter::Filter;
pub use fusion::{Fusion, SearchMode};
pub use item::{ImageSource, Item, ItemId};
pub use progress::{Flow, IndexProgress, Progress};
#[cfg(feature = "server")]
pub use server::ServerStore;
pub use store::{Point, ScoredId, SearchParams, Space, VectorStore};
