//! Diffusion transformers: [`SD3Transformer2DModel`], the MMDiT of Stable Diffusion 3 and 3.5
//! (joint image/text attention blocks, RMS qk-norm, dual attention), and the layers the
//! diffusion transformers share (adaptive layer norms, joint attention).

mod attention;
mod block;
mod config;
mod embeddings;
mod norm;
mod sd3;

pub use attention::{JointAttention, JointAttentionOptions};
pub use block::{ContextNorm, JointBlockOptions, JointTransformerBlock};
pub use config::SD3Transformer2DConfig;
pub use embeddings::{CombinedTimestepTextProjEmbeddings, PatchEmbed};
pub use norm::{AdaLayerNormContinuous, AdaLayerNormZero, NORM_EPS, gate, modulate};
pub use sd3::{SD3Input, SD3Transformer2DModel};
