//! Errors of the vision-language models.

/// Errors of `mm-vlm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the shared layer (weights, configs, images, tokenizers).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// An error from the vision tower.
    #[error(transparent)]
    Vision(#[from] mm_vision::Error),
    /// A chat template failed to compile or render (`raise_exception` gives its message).
    #[error("chat template error: {0}")]
    Template(String),
    /// The prompt has a different number of image markers than images were given.
    #[error("the prompt has {markers} image marker(s) ({token}) but {images} image(s) were given")]
    ImageCountMismatch {
        /// Image markers found in the text.
        markers: usize,
        /// Images passed.
        images: usize,
        /// The marker.
        token: String,
    },
    /// The prompt has no tokens (or the conversation no messages).
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A config whose values do not fit together or are not supported.
    #[error("invalid config: {0}")]
    Config(String),
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
    /// The sequence would run past the model's `max_position_embeddings`.
    #[error("sequence of {len} tokens exceeds max_position_embeddings = {max}")]
    TooLong {
        /// Tokens the sequence would hold.
        len: usize,
        /// The model's limit.
        max: usize,
    },
    /// The image placeholder tokens in the prompt do not match the image features.
    #[error(
        "the prompt has {tokens} image tokens but {images} image(s) give {features} features \
         (the processor expands each <image> to the image's token count)"
    )]
    ImageTokens {
        /// Image placeholder tokens in the prompt(s).
        tokens: usize,
        /// Images given.
        images: usize,
        /// Feature vectors the images produce.
        features: usize,
    },
    /// Any other unusable input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
