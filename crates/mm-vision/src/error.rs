//! The error type of `mm-vision`.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in `mm-vision`: loading problems come from `mm-core`; the rest is about
/// the inputs given to a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Files, weights, configs, images or tokenizers (see [`mm_core::Error`]).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// Zero-shot classification needs at least one candidate label.
    #[error("the list of candidate labels is empty")]
    NoLabels,
    /// An input tensor does not have the shape the model needs.
    #[error("invalid input shape for {what}: expected {expected}, got {got:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// The expected shape, in words.
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// Any other unusable input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
