//! SigLIP (Zhai et al. 2023): CLIP-like towers trained with a pairwise sigmoid loss.

mod config;
mod model;
mod text;
mod vision;

pub use config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
pub use model::{SiglipModel, SiglipOutput, SiglipTextModel, SiglipVisionModel};
pub use text::SiglipTextTransformer;
pub use vision::{
    PackedAttention, SiglipPoolingHead, SiglipVisionEmbeddings, SiglipVisionTransformer,
};
