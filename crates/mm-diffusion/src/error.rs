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
    /// A text encoder or tokenizer problem (see [`mm_vision::Error`]).
    #[error(transparent)]
    Vision(#[from] mm_vision::Error),
    /// A scheduler could not be built or stepped (see [`mm_schedulers::SchedulerError`]).
    #[error(transparent)]
    Scheduler(#[from] mm_schedulers::SchedulerError),
    /// A pipeline folder lacks a component the pipeline needs (`unet`, `vae`, …).
    #[error(
        "the pipeline at {} has no usable '{component}' component: {reason}",
        path.display()
    )]
    MissingComponent {
        /// The component's name in `model_index.json` (`unet`, `vae`, `text_encoder`,
        /// `tokenizer`, `scheduler`).
        component: &'static str,
        /// The pipeline folder.
        path: std::path::PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A pipeline argument out of its range (strength, steps, guidance, batch sizes, …).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name, as diffusers calls it.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The mask of an inpainting call does not have the image's size.
    #[error("mask size {mask:?} (height, width) differs from the image size {image:?}")]
    MaskSize {
        /// Height and width of the mask.
        mask: (usize, usize),
        /// Height and width of the image.
        image: (usize, usize),
    },
    /// The progress callback asked to stop.
    #[error("cancelled by the progress callback after step {step} of {total}")]
    Cancelled {
        /// Steps completed (1-based index of the last step run).
        step: usize,
        /// Steps planned.
        total: usize,
    },
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
    /// An IP-Adapter file that cannot be used (not the h94 layout, an unsupported variant, an
    /// adapter for another base model).
    #[error("IP-Adapter {}: {problem}", path.display())]
    IpAdapter {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: crate::ip_adapter::IpAdapterError,
    },
    /// IP-Adapter scales that do not fit the loaded adapters or the UNet's blocks.
    #[error(transparent)]
    IpAdapterScale(#[from] crate::ip_adapter::ScaleError),
    /// A file given as a single-file checkpoint has no tensor of the LDM layout.
    #[error(
        "{0} is not a single-file Stable Diffusion checkpoint in the CompVis/LDM layout (no \
         `model.diffusion_model.*` tensor, nor a bare SD3 transformer's `joint_blocks.*`); for \
         a diffusers folder, load its components instead"
    )]
    NotSingleFile(String),
    /// A single file of one model family given to the conversion of another (an SDXL file to
    /// [`SingleFile::components`](crate::single_file::SingleFile::components), say).
    #[error("the single file holds a {found} checkpoint: {hint}")]
    SingleFileFamily {
        /// The family its keys tell.
        found: crate::single_file::Family,
        /// What to call instead.
        hint: &'static str,
    },
    /// A tensor of a single file has a shape its conversion cannot take (a truncated fused
    /// query-key-value projection, a text projection of the wrong shape).
    #[error("single-file tensor '{name}' has shape {shape:?}, expected {expected}")]
    SingleFileTensor {
        /// The tensor's name in the file.
        name: String,
        /// Its stored shape.
        shape: Vec<usize>,
        /// The shape it should have, in words.
        expected: String,
    },
}
