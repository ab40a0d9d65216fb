//! # mm-core
//!
//! The shared layer of the `mm` workspace: everything a model crate needs that is not a model.
//!
//! - [`weights`]: memory-mapped safetensors (single file or sharded), dtype casting on load,
//!   Hugging Face → module key remapping and a strict load that reports every problem at once.
//! - [`gguf`]: GGUF files (llama.cpp / ComfyUI-GGUF quantized weights): metadata, tensors,
//!   dequantization and quantization of ggml's block formats.
//! - [`quant`]: linear layers whose weights stay in ggml blocks (from GGUF files, or
//!   quantized as they load), multiplied without dequantizing whole matrices.
//! - [`config`]: reading Hugging Face `config.json` files into serde structs.
//! - [`hub`]: locating a model snapshot on disk (a folder, or a repo id in the local HF cache).
//! - [`image`] and [`processor`]: decoding images and turning them into normalised tensors the
//!   way the Python image processors do.
//! - [`tokenizer`]: batch encoding with padding, truncation and attention masks.
//! - [`nn`]: blocks shared by several models (attention, activations).
//! - [`device`]: picking a burn device explicitly.
//! - [`memory`]: the pool that recycles the CPU kernels' output buffers.
//! - [`limits`]: the memory and image-size limits checked before large allocations.
//!
//! Every fallible function returns [`Result`] with the crate's [`Error`].

#![warn(missing_docs)]

mod aligned;
mod buffer;
pub mod config;
mod cpu;
pub mod device;
pub mod error;
pub mod gguf;
mod host;
pub mod hub;
pub mod image;
pub mod limits;
pub mod memory;
pub mod nn;
pub mod precision;
pub mod processor;
pub mod quant;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, LoadReport, Result};

/// Re-export of the burn version this crate is built against, so downstream crates and users
/// name the same types.
pub use burn;
