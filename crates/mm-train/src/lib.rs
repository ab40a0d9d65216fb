//! # mm-train
//!
//! Training for the `mm` workspace. This first part is the data the tiny model zoo trains on:
//!
//! - [`shapes`]: the shapes world, a deterministic, seeded generator of images with captions
//!   and a held-out split of colour–shape pairs never seen in training.
//! - [`objectives`]: the losses — ε / v / x₀ prediction with min-SNR weighting, rectified
//!   flow, condition dropout for classifier-free guidance, the autoencoder's reconstruction +
//!   KL, the causal language model's cross-entropy.
//!
//! Every fallible function returns [`Result`] with the crate's [`Error`].

#![warn(missing_docs)]

pub mod objectives;
pub mod shapes;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting out of its range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
