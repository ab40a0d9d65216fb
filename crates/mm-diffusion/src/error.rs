//! The error type of `mm-diffusion`.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in `mm-diffusion`: loading problems come from `mm-core`; the rest is about
/// the configs and inputs given to a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Files, weights, configs or images (see [`mm_core::Error`]).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// A config parsed but describes a model this crate cannot build.
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
    /// An image's height or width is not a multiple of the autoencoder's downscale factor.
    #[error(
        "image size {height}x{width} (height x width) is not a multiple of {factor}, the \
         autoencoder's downscale factor; resize or crop it to a multiple of {factor}"
    )]
    NotMultiple {
        /// The image height.
        height: usize,
        /// The image width.
        width: usize,
        /// The factor both must be multiples of.
        factor: usize,
    },
    /// An input holds NaN or infinite values.
    #[error("{what} contains {count} non-finite values (NaN or infinity)")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// How many values are not finite.
        count: usize,
    },
    /// An input the config requires is missing, or one it has no use for was given.
    #[error("{what}: {reason}")]
    MissingInput {
        /// Which input (or config field).
        what: &'static str,
        /// Why it is needed or not wanted.
        reason: String,
    },
    /// A file given as a single-file checkpoint has no tensor of the LDM layout.
    #[error(
        "{0} is not a single-file Stable Diffusion checkpoint in the CompVis/LDM layout (no \
         `model.diffusion_model.*` tensor); for a diffusers folder, load its components instead"
    )]
    NotSingleFile(String),
}
