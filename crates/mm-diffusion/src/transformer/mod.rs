//! Diffusion transformers: [`SD3Transformer2DModel`], the MMDiT of Stable Diffusion 3 and 3.5
//! (joint image/text attention blocks, RMS qk-norm, dual attention), [`FluxTransformer2DModel`]
//! (FLUX.1: double- and single-stream blocks, 3-axis rotary embeddings, guidance embedding),
//! and the layers they share (adaptive layer norms, joint attention).

mod attention;
mod block;
mod config;
mod embeddings;
mod flux;
mod norm;
mod rope;
mod sd3;

pub use attention::{JointAttention, JointAttentionOptions};
pub use block::{ContextNorm, JointBlockOptions, JointTransformerBlock};
pub use config::SD3Transformer2DConfig;
pub use embeddings::{CombinedTimestepTextProjEmbeddings, PatchEmbed};
pub use flux::{
    FluxInput, FluxSingleTransformerBlock, FluxTransformer2DConfig, FluxTransformer2DModel,
    latent_image_ids, pack_latents, unpack_latents,
};
pub use norm::{AdaLayerNormContinuous, AdaLayerNormZero, NORM_EPS, gate, modulate};
pub use rope::Rope;
pub use sd3::{SD3Input, SD3Transformer2DModel};
