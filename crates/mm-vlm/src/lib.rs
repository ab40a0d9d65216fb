//! # mm-vlm
//!
//! Vision-language models as burn modules that load Hugging Face checkpoints: LLaVA 1.5 and
//! LLaVA-NeXT (Llama/Vicuna and Mistral language decoders, the CLIP vision tower from
//! `mm-vision`), their processor and chat templates, and streaming generation.

#![warn(missing_docs)]

mod error;

pub use error::{Error, Result};
