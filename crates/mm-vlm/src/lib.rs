//! # mm-vlm
//!
//! Vision-language models as burn modules that load Hugging Face checkpoints: LLaVA 1.5 and
//! LLaVA-NeXT (Llama/Vicuna and Mistral language decoders, the CLIP vision tower from
//! `mm-vision`), their processor and chat templates, and streaming generation.
//!
//! - [`anyres`]: LLaVA-NeXT's best-resolution / grid / unpadding arithmetic and the number of
//!   image tokens per image.
//! - [`processor`]: LLaVA / LLaVA-NeXT image preprocessing and the prompt processor that
//!   expands `<image>` markers and tokenizes.
//! - [`chat`]: chat messages and Hugging Face chat templates (rendered with minijinja).
//! - [`llama`]: the Llama/Mistral decoder with its [`kv_cache::KvCache`] and [`rope`].
//! - [`llava`]: `LlavaForConditionalGeneration` and the [`llava::VisionLanguageModel`] trait
//!   (loading, logits, generation) it shares with `LlavaNextForConditionalGeneration` in
//!   [`llava_next`].
//! - [`generate`]: greedy and sampled decoding, stop conditions, streaming.
//! - [`config`]: the configs, with transformers' defaults.

#![warn(missing_docs)]

pub mod anyres;
pub mod chat;
pub mod config;
mod error;
pub mod generate;
pub mod kv_cache;
pub mod llama;
pub mod llava;
pub mod llava_next;
pub mod processor;
pub mod rope;

pub use error::{Error, Result};
