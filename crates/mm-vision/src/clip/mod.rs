//! CLIP (Radford et al. 2021): text and vision towers trained contrastively.

mod config;
mod model;
mod text;
mod vision;

pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use model::{ClipModel, ClipOutput};
pub use text::{ClipTextModel, ClipTextModelWithProjection, ClipTextTransformer};
pub(crate) use vision::patchify;
pub use vision::{
    ClipVisionEmbeddings, ClipVisionModel, ClipVisionModelWithProjection, ClipVisionTransformer,
};
