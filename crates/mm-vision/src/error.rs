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
    /// A model output holds NaN or infinite values: the weights (or the inputs) are not
    /// finite, so no score can be trusted.
    #[error(
        "{what} contain {count} non-finite values (NaN or infinity): the model's weights or \
         its inputs are not finite"
    )]
    NonFinite {
        /// Which output.
        what: &'static str,
        /// How many values are not finite.
        count: usize,
    },
}
