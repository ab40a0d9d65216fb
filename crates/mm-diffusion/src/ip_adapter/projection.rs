//! The image projection of an IP-Adapter (`image_proj.*`): which of the two kinds a file
//! holds and its sizes, read from the tensor shapes as diffusers'
//! `_convert_ip_adapter_image_proj_to_diffusers` does.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::IpAdapterError;
use super::image_proj::{ImageProjModel, ImageProjModelConfig};
use super::resampler::{Resampler, ResamplerConfig};
use crate::Result;

/// Width of a resampler attention head; diffusers infers the heads as `to_q` rows / 64.
const DIM_HEAD: usize = 64;

/// The sizes of an image projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageProjectionConfig {
    /// IP-Adapter: a projection of CLIP's pooled `image_embeds`.
    ImageProjModel(ImageProjModelConfig),
    /// IP-Adapter Plus: a resampler of the encoder's penultimate hidden states.
    Resampler(ResamplerConfig),
}

impl ImageProjectionConfig {
    /// The sizes of the projection whose tensors have `shapes` (the names without the
    /// `image_proj.` prefix): `proj.weight` means an [`ImageProjModel`] (tokens = `proj`
    /// rows / `norm` width), otherwise a [`Resampler`] (queries and width from `latents`,
    /// depth from the `layers`, heads = `to_q` rows / 64). The other image projections
    /// diffusers knows (IP-Adapter Full, FaceID, FaceID Plus) are refused.
    pub fn infer(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Self, IpAdapterError> {
        let shape = |name: &str| {
            shapes
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| IpAdapterError::MissingTensor {
                    tensor: format!("image_proj.{name}"),
                })
        };
        let bad = |name: &str, shape: &[usize], expected: String| IpAdapterError::Shape {
            tensor: format!("image_proj.{name}"),
            shape: shape.to_vec(),
            expected,
        };
        let unsupported = |kind| Err(IpAdapterError::UnsupportedProjection { kind });
        if shapes.contains_key("proj.3.weight") {
            return unsupported("IP-Adapter Full (MLPProjModel)");
        }
        if shapes.contains_key("perceiver_resampler.proj_in.weight") {
            return unsupported("IP-Adapter FaceID Plus");
        }
        if shapes.contains_key("proj.weight") {
            let (proj, norm) = (shape("proj.weight")?, shape("norm.weight")?);
            let &[width] = norm else {
                return Err(bad("norm.weight", norm, "[cross_attention_dim]".into()));
            };
            return match proj {
                &[rows, clip] if width > 0 && clip > 0 && rows > 0 && rows % width == 0 => {
                    Ok(Self::ImageProjModel(ImageProjModelConfig {
                        cross_attention_dim: width,
                        clip_embeddings_dim: clip,
                        clip_extra_context_tokens: rows / width,
                    }))
                }
                _ => Err(bad(
                    "proj.weight",
                    proj,
                    format!("[tokens × {width} (the norm's width), clip_embeddings_dim]"),
                )),
            };
        }
        if shapes.contains_key("norm.weight") {
            return unsupported("IP-Adapter FaceID");
        }
        let latents = shape("latents")?;
        let &[1, num_queries, dim] = latents else {
            return Err(bad("latents", latents, "[1, num_queries, dim]".into()));
        };
        let proj_in = shape("proj_in.weight")?;
        let &[d, embedding_dim] = proj_in else {
            return Err(bad(
                "proj_in.weight",
                proj_in,
                "[dim, embedding_dim]".into(),
            ));
        };
        let proj_out = shape("proj_out.weight")?;
        let &[output_dim, d2] = proj_out else {
            return Err(bad("proj_out.weight", proj_out, "[output_dim, dim]".into()));
        };
        if d != dim || d2 != dim {
            let (name, s) = if d != dim {
                ("proj_in.weight", proj_in)
            } else {
                ("proj_out.weight", proj_out)
            };
            return Err(bad(name, s, format!("width {dim} (the latents')")));
        }
        let to_q = shape("layers.0.0.to_q.weight")?;
        let heads = match to_q {
            &[rows, d] if d == dim && rows > 0 && rows % DIM_HEAD == 0 => rows / DIM_HEAD,
            _ => {
                return Err(bad(
                    "layers.0.0.to_q.weight",
                    to_q,
                    format!("[heads × {DIM_HEAD}, {dim}]"),
                ));
            }
        };
        let ff = shape("layers.0.1.1.weight")?;
        let ff_mult = match ff {
            &[rows, d] if d == dim && dim > 0 && rows > 0 && rows % dim == 0 => rows / dim,
            _ => {
                return Err(bad(
                    "layers.0.1.1.weight",
                    ff,
                    format!("[mult × {dim}, {dim}]"),
                ));
            }
        };
        let depth = (0..)
            .take_while(|i| shapes.contains_key(&format!("layers.{i}.0.to_q.weight")))
            .count();
        Ok(Self::Resampler(ResamplerConfig {
            dim,
            depth,
            dim_head: DIM_HEAD,
            heads,
            num_queries,
            embedding_dim,
            output_dim,
            ff_mult,
        }))
    }

    /// The width of the tokens (the UNet's cross-attention width it was made for).
    pub fn output_dim(&self) -> usize {
        match self {
            Self::ImageProjModel(c) => c.cross_attention_dim,
            Self::Resampler(c) => c.output_dim,
        }
    }
}

/// The image projection of one IP-Adapter (`image_proj.*`; in diffusers, one of
/// `unet.encoder_hid_proj.image_projection_layers`).
// One per adapter, and burn modules cannot be boxed: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ImageProjection {
    /// IP-Adapter.
    ImageProjModel(ImageProjModel),
    /// IP-Adapter Plus.
    Resampler(Resampler),
}

impl ImageProjection {
    /// A randomly initialised projection.
    pub fn new(config: &ImageProjectionConfig, device: &Device) -> Result<Self> {
        Ok(match config {
            ImageProjectionConfig::ImageProjModel(c) => {
                Self::ImageProjModel(ImageProjModel::new(c, device)?)
            }
            ImageProjectionConfig::Resampler(c) => Self::Resampler(Resampler::new(c, device)?),
        })
    }

    /// Tokens per image.
    pub fn num_tokens(&self) -> usize {
        match self {
            Self::ImageProjModel(m) => m.num_tokens(),
            Self::Resampler(m) => m.num_tokens(),
        }
    }

    /// Whether it reads the image encoder's penultimate hidden states (IP-Adapter Plus)
    /// rather than its pooled `image_embeds`.
    pub fn takes_hidden_states(&self) -> bool {
        matches!(self, Self::Resampler(_))
    }

    /// The width of the image features it takes (`projection_dim` or `hidden_size` of the
    /// image encoder).
    pub fn input_dim(&self) -> usize {
        match self {
            Self::ImageProjModel(m) => m.input_dim(),
            Self::Resampler(m) => m.input_dim(),
        }
    }

    /// Projects the features of `n` images to `[n, tokens, cross_attention_dim]`: pooled
    /// embeddings as `[n, 1, dim]` (IP-Adapter), hidden states `[n, tokens, dim]` (Plus).
    pub(crate) fn forward(&self, features: Tensor<3>) -> Tensor<3> {
        match self {
            Self::ImageProjModel(m) => m.forward(features.squeeze_dim::<2>(1)),
            Self::Resampler(m) => m.forward(features),
        }
    }
}
