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
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
