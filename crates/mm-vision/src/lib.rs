//! # mm-vision
//!
//! Vision and vision–language encoders as burn modules that load Hugging Face checkpoints:
//!
//! - [`clip`]: `CLIPModel`, the text and vision towers with and without projection, every
//!   hidden state exposed (Stable Diffusion, SDXL, LLaVA and IP-Adapter use them).
//! - [`siglip`]: `SiglipModel` with the attention-pooling vision head and sigmoid scoring.
//! - [`vit`]: `ViTModel` and `ViTForImageClassification`.
//! - [`t5`]: `T5EncoderModel`, the text encoder of Stable Diffusion 3 and FLUX.1.
//! - [`contrastive`]: normalisation and the CLIP / SigLIP training losses.
//!
//! Every model has `new` (random weights) and implements [`Pretrained`]: `load` (a snapshot
//! folder or a repo id in the local Hugging Face cache) and `from_weights`; every model runs on
//! any burn `Device`.

#![warn(missing_docs)]

pub mod clip;
pub mod contrastive;
pub mod embeddings;
pub mod encoder;
mod error;
mod loading;
pub mod output;
mod pretrained;
pub mod siglip;
pub mod t5;
pub mod vit;

pub use error::{Error, Result};
pub use output::TowerOutput;
pub use pretrained::Pretrained;
pub mod pipeline;
