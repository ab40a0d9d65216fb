//! The error type of `mm-retrieval`.

use std::path::PathBuf;

use crate::item::ItemId;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when building or querying a catalogue. No `mm-retrieval` API panics on
/// bad input: it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the embedding model (see [`mm_vision::Error`]).
    #[error(transparent)]
    Vision(#[from] mm_vision::Error),
    /// Files, images, tokenizers (see [`mm_core::Error`]).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// A file or folder could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The vector store (qdrant-edge or a Qdrant server) refused or failed an operation.
    #[error("vector store: {0}")]
    Store(String),
    /// A folder given as a catalogue is not one (no `catalog.json`, or an unreadable one).
    #[error("{path} is not a catalogue: {reason}")]
    NotACatalog {
        /// The folder.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// [`Catalog::create`](crate::Catalog::create) was given a folder that already holds a
    /// catalogue.
    #[error("{0} already holds a catalogue; open it instead")]
    AlreadyExists(PathBuf),
    /// The catalogue stores vectors of another width than the embedder produces (it was built
    /// with another model).
    #[error(
        "the catalogue {location} holds {stored}-dimensional vectors but the embedder gives \
         {embedder}-dimensional ones: it was built with another model{model}"
    )]
    DimensionMismatch {
        /// The folder or collection.
        location: String,
        /// The width of the stored vectors.
        stored: usize,
        /// The width of the embedder's vectors.
        embedder: usize,
        /// `" (model)"` when the catalogue recorded its model, else empty.
        model: String,
    },
    /// A query image could not be read or decoded.
    #[error("the query image {} is not a readable image: {reason}", .path.display())]
    QueryImage {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An item's payload cannot be stored (a reserved key, or a value the store rejects).
    #[error("invalid payload of item {id}: {reason}")]
    Payload {
        /// The item.
        id: ItemId,
        /// What is wrong.
        reason: String,
    },
    /// The embedder returned something other than one finite vector of its width per input.
    #[error("the embedder {model} returned unusable vectors: {reason}")]
    Embedding {
        /// The embedder's model id.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other unusable argument (k = 0, an empty query, a weight that is not finite, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The progress callback asked to stop; the batches acknowledged before stay stored.
    #[error("indexing cancelled after {indexed} items were stored")]
    Cancelled {
        /// Items stored (and acknowledged) before the cancellation.
        indexed: usize,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
