//! # mm-train
//!
//! Training for the `mm` workspace, on burn's autodiff device (`Device::flex().autodiff()`;
//! the CPU kernels of `mm-core` step aside for burn's differentiable operations there, and the
//! crates' models train as they are):
//!
//! - [`shapes`]: the shapes world, a deterministic, seeded generator of images with captions
//!   and a held-out split of colour–shape pairs never seen in training; [`data`] turns it into
//!   batches of tensors.
//! - [`objectives`]: the losses — ε / v / x₀ prediction with min-SNR weighting, rectified
//!   flow, condition dropout for classifier-free guidance, the autoencoder's reconstruction +
//!   KL, the causal language model's cross-entropy (CLIP's InfoNCE and SigLIP's sigmoid loss
//!   are `mm_vision::contrastive`'s).
//! - [`train`]: the loop — AdamW, gradient-norm clipping, a warm-up + cosine [`schedule`], an
//!   [`ema`] of the weights, [`checkpoint`]s in safetensors with the checkpoint's own names
//!   (resumable to the same weights), progress and cancellation.
//! - [`zoo`]: the tiny model zoo — a CLIP, an `AutoencoderKL` and a `UNet2DConditionModel`
//!   trained on the shapes world and saved as transformers / diffusers folders; [`analysis`]
//!   (an exact judge of the world's pictures) and [`eval`] measure it.
//!
//! ```no_run
//! # fn main() -> mm_train::Result<()> {
//! use burn::tensor::{Device, Distribution, Tensor};
//! use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
//! use mm_train::train::{TrainConfig, fit};
//!
//! let device = Device::flex().autodiff();
//! let config: AutoencoderKLConfig = mm_core::config::read_json("vae/config.json")?;
//! let vae = AutoencoderKL::new(&config, &device)?;
//! let images = Tensor::<4>::random([4, 3, 64, 64], Distribution::Uniform(-1.0, 1.0), &device);
//! let trained = fit(vae, &TrainConfig::new(100, 1e-3).with_ema(0.999), |vae, _step| {
//!     let reconstruction = vae.decode(vae.encode(images.clone())?.mean)?;
//!     Ok((reconstruction - images.clone()).powi_scalar(2).mean())
//! }, |report| { println!("{} {:.4}", report.step, report.loss); true })?;
//! mm_core::weights::save_safetensors(&trained.best(), "vae.safetensors", burn::tensor::DType::F32)?;
//! # Ok(()) }
//! ```
//!
//! Every fallible function returns [`Result`] with the crate's [`Error`].

#![warn(missing_docs)]

pub mod analysis;
pub mod checkpoint;
pub mod data;
pub mod ema;
pub mod eval;
pub mod objectives;
pub mod schedule;
pub mod shapes;
pub mod train;
pub mod zoo;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting out of its range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint cannot be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A loss became NaN or infinite.
    #[error("the loss is not finite at step {step}: {loss}")]
    NonFinite {
        /// The step.
        step: usize,
        /// The loss.
        loss: f64,
    },
    /// Files, weights or tokens (from `mm-core`).
    #[error(transparent)]
    Core(#[from] mm_core::Error),
    /// A vision model (from `mm-vision`).
    #[error(transparent)]
    Vision(#[from] mm_vision::Error),
    /// A diffusion model (from `mm-diffusion`).
    #[error(transparent)]
    Diffusion(#[from] mm_diffusion::Error),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An I/O error on `path`, as the workspace reports it.
pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Core(mm_core::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
