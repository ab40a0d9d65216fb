//! Errors of the vision-language models.

/// Errors of `mm-vlm`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the shared layer (weights, configs, images, tokenizers).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// An error from the vision tower.
    #[error(transparent)]
    Vision(#[from] mm_vision::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
