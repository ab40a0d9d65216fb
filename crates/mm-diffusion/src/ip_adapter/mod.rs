//! IP-Adapter (Ye et al. 2023): image prompts for Stable Diffusion 1.x and SDXL through
//! decoupled cross-attention, loading the files of `h94/IP-Adapter`.
//!
//! An adapter file holds an image projection (`image_proj.*`: an [`ImageProjModel`] for
//! IP-Adapter, a [`Resampler`] for IP-Adapter Plus) and bias-free key/value projections of the
//! image tokens for every cross-attention of the UNet it was trained with
//! (`ip_adapter.{1,3,5,…}.to_{k,v}_ip.weight`, see [`IpAdapterCheckpoint`]).
//!
//! - [`IpAdapter::load`] reads one or several files (diffusers' `load_ip_adapter` with a list),
//!   puts their key/value projections into the UNet's cross-attentions (the layers of
//!   [`UNet2DConditionModel::with_ip_adapter`], scale 1) and keeps their image projections.
//!   An adapter made for another UNet is refused with a typed error naming the file and the
//!   tensor.
//! - [`ImageEncoder`] (`CLIPVisionModelWithProjection` + CLIP image processor) turns the
//!   reference images into what each adapter projects ([`IpAdapter::encode_images`],
//!   diffusers' `prepare_ip_adapter_image_embeds`); precomputed [`ImageEmbeds`] (diffusers'
//!   `ip_adapter_image_embeds`) work without an encoder.
//! - [`IpAdapter::image_tokens`] projects them to the tokens of
//!   [`UNetInput::with_image_tokens`](crate::unet::UNetInput::with_image_tokens), negative
//!   first under classifier-free guidance.
//! - [`UNet2DConditionModel::set_ip_adapter_scale`] sets the scales: per adapter, per block and
//!   per transformer ([`IpAdapterScale`], InstantStyle's per-block dicts included).
//!
//! The published files this reads: `ip-adapter_sd15`, `ip-adapter_sd15_light`,
//! `ip-adapter-plus_sd15`, `ip-adapter-plus-face_sd15` (with `models/image_encoder`, ViT-H/14),
//! `ip-adapter_sdxl` (with `sdxl_models/image_encoder`, ViT-bigG), `ip-adapter_sdxl_vit-h`,
//! `ip-adapter-plus_sdxl_vit-h`, `ip-adapter-plus-face_sdxl_vit-h` (with
//! `models/image_encoder`) — their `.safetensors` versions. IP-Adapter Full (`MLPProjModel`)
//! and the FaceID adapters are refused.
//!
//! ```no_run
//! # fn main() -> mm_diffusion::Result<()> {
//! use burn::tensor::Tensor;
//! use mm_diffusion::ip_adapter::{ImageEncoder, IpAdapter, IpAdapterScale};
//! use mm_diffusion::unet::{UNet2DConditionModel, UNetInput};
//!
//! let device = mm_core::device::cpu();
//! let mut unet = UNet2DConditionModel::load("stable-diffusion-v1-5/unet", &device)?;
//! let file = "IP-Adapter/models/ip-adapter_sd15.safetensors"; // h94/IP-Adapter, downloaded
//! let encoder = ImageEncoder::load("IP-Adapter/models/image_encoder", &device)?;
//! let ip = IpAdapter::load(&[file], &mut unet, &device)?.with_image_encoder(encoder);
//! unet.set_ip_adapter_scale(&[IpAdapterScale::Uniform(0.6)])?;
//!
//! let reference = mm_core::image::load_image("reference.png")?;
//! let embeds = ip.encode_images(&[vec![reference]])?; // one image set per adapter
//! let tokens = ip.image_tokens(&embeds, 1, true)?; // per adapter [negative; positive]
//! let latents = Tensor::<4>::zeros([2, 4, 64, 64], &device);
//! let text = Tensor::<3>::zeros([2, 77, 768], &device); // [negative; positive] prompt
//! let t = Tensor::<1>::from_floats([981.0], &device);
//! let input = UNetInput::new(latents, t, text).with_image_tokens(tokens);
//! let noise_pred = unet.forward_with(input)?;
//! # let _ = noise_pred;
//! # Ok(()) }
//! ```

mod checkpoint;
mod image_encoder;
mod image_proj;
mod projection;
mod resampler;
mod scale;

pub use checkpoint::{IpAdapterCheckpoint, IpAdapterError, IpAttnProcessor};
pub use image_encoder::ImageEncoder;
pub use image_proj::{ImageProjModel, ImageProjModelConfig};
pub use projection::{ImageProjection, ImageProjectionConfig};
pub use resampler::{
    FeedForwardLayer, PerceiverAttention, Resampler, ResamplerBlock, ResamplerConfig,
};
pub use scale::{BlockScale, BlockScales, IpAdapterScale, LevelScales, ScaleError};

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use image::RgbImage;

use crate::check::check_finite;
use crate::unet::UNet2DConditionModel;
use crate::unet::attention::IpAdapterAttention;
use crate::{Error, Result};
use checkpoint::cross_attention_dims;

/// One IP-Adapter's image features for one set of reference images, before projection: what
/// diffusers' `prepare_ip_adapter_image_embeds` computes for an adapter, and what its
/// `ip_adapter_image_embeds` argument passes in instead of images.
#[derive(Debug, Clone)]
pub enum ImageEmbeds {
    /// For IP-Adapter ([`ImageProjModel`]): the image encoder's projected `image_embeds`
    /// `[images, projection_dim]`; the negative is zeros (taken when `None`).
    Pooled {
        /// The reference images' embeddings.
        positive: Tensor<2>,
        /// The negative embeddings (zeros in diffusers).
        negative: Option<Tensor<2>>,
    },
    /// For IP-Adapter Plus ([`Resampler`]): the image encoder's penultimate hidden states
    /// `[images, tokens, hidden_size]`; the negative is those of all-zero pixel values
    /// (required with guidance).
    Hidden {
        /// The reference images' hidden states.
        positive: Tensor<3>,
        /// The hidden states of zero pixel values.
        negative: Option<Tensor<3>>,
    },
}

impl ImageEmbeds {
    /// A plain adapter's entry of diffusers' `ip_adapter_image_embeds`: `[2, images, dim]`
    /// (negative first) with guidance, `[1, images, dim]` without.
    pub fn from_diffusers_pooled(embeds: Tensor<3>, guided: bool) -> Result<Self> {
        let (positive, negative) = split_diffusers(embeds, guided)?;
        Ok(Self::Pooled { positive, negative })
    }

    /// An IP-Adapter Plus entry of diffusers' `ip_adapter_image_embeds`:
    /// `[2, images, tokens, hidden]` (negative first) with guidance, `[1, …]` without.
    pub fn from_diffusers_hidden(embeds: Tensor<4>, guided: bool) -> Result<Self> {
        let (positive, negative) = split_diffusers(embeds, guided)?;
        Ok(Self::Hidden { positive, negative })
    }

    /// The number of reference images.
    pub fn num_images(&self) -> usize {
        match self {
            Self::Pooled { positive, .. } => positive.dims()[0],
            Self::Hidden { positive, .. } => positive.dims()[0],
        }
    }
}

/// The positive and (with `guided`) negative `[images, …]` of diffusers' `[negative;
/// positive]` (or `[positive]`) tensor of one image set.
fn split_diffusers<const D: usize, const E: usize>(
    embeds: Tensor<D>,
    guided: bool,
) -> Result<(Tensor<E>, Option<Tensor<E>>)> {
    let expected = 1 + usize::from(guided);
    if embeds.dims()[0] != expected {
        let pair = if guided {
            "the negative and positive of "
        } else {
            ""
        };
        return Err(Error::Shape {
            what: "ip_adapter_image_embeds",
            expected: format!("[{expected}, images, …] ({pair}one set of reference images)"),
            got: embeds.dims().to_vec(),
        });
    }
    let part = |i: usize| embeds.clone().narrow(0, i, 1).squeeze_dim::<E>(0);
    Ok((part(expected - 1), guided.then(|| part(0))))
}

/// Loaded IP-Adapters (one or several, used together): their image projections and the
/// image encoder. Their key/value projections live in the UNet they were loaded into.
#[derive(Module, Debug)]
pub struct IpAdapter {
    /// One image projection per adapter, in load order (diffusers'
    /// `unet.encoder_hid_proj.image_projection_layers`).
    pub image_proj: Vec<ImageProjection>,
    /// The image encoder, for [`IpAdapter::encode_images`] (`None`: precomputed
    /// [`ImageEmbeds`] only).
    pub image_encoder: Option<ImageEncoder>,
}

impl IpAdapter {
    /// Loads IP-Adapter `.safetensors` files (the h94 layout) made for `unet`: their key/value
    /// projections go into `unet`'s cross-attentions (replacing any adapters loaded before;
    /// every scale 1, see [`UNet2DConditionModel::set_ip_adapter_scale`]), in the dtype of its
    /// weights; their image projections come back, on `device`. Several files are used
    /// together, each with its own image tokens (diffusers' `load_ip_adapter` with lists).
    ///
    /// Every file is read and checked before `unet` changes; on error it is left as it was.
    /// Errors: [`Error::IpAdapter`] for a `.bin` file, a file not in the h94 layout, an
    /// unsupported image projection, an adapter made for another base model (another
    /// cross-attention width or number of layers); [`mm_core::Error::Load`] (in
    /// [`Error::Core`]) for missing, unexpected or mis-shaped tensors; a truncated file gives
    /// [`mm_core::Error::Safetensors`].
    pub fn load<P: AsRef<Path>>(
        files: &[P],
        unet: &mut UNet2DConditionModel,
        device: &Device,
    ) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::InvalidArgument {
                name: "weight_name",
                reason: "no IP-Adapter file given".into(),
            });
        }
        let checkpoints = (files.iter())
            .map(|file| IpAdapterCheckpoint::load(file, unet, device))
            .collect::<Result<Vec<_>>>()?;
        let dims = cross_attention_dims(unet);
        let adapters = checkpoints.len();
        let mut layers: Vec<_> = (0..dims.len())
            .map(|_| (Vec::with_capacity(adapters), Vec::with_capacity(adapters)))
            .collect();
        let mut image_proj = Vec::with_capacity(adapters);
        for checkpoint in checkpoints {
            image_proj.push(checkpoint.image_proj);
            let processors = checkpoint.ip_adapter.into_iter().flatten();
            for ((keys, values), processor) in layers.iter_mut().zip(processors) {
                keys.push(processor.to_k_ip);
                values.push(processor.to_v_ip);
            }
        }
        let layers = (layers.into_iter())
            .map(|(keys, values)| {
                IpAdapterAttention::from_projections(keys, values, vec![1.0; adapters])
            })
            .collect();
        let image_dim = dims.first().map_or(0, |&(_, context)| context);
        unet.attach_ip_adapter(image_dim, layers);
        Ok(Self {
            image_proj,
            image_encoder: None,
        })
    }

    /// Sets the image encoder used by [`IpAdapter::encode_images`].
    pub fn with_image_encoder(self, image_encoder: ImageEncoder) -> Self {
        Self {
            image_encoder: Some(image_encoder),
            ..self
        }
    }

    /// The number of adapters.
    pub fn num_adapters(&self) -> usize {
        self.image_proj.len()
    }

    /// Encodes one set of reference images per adapter (diffusers' `ip_adapter_image`, a list
    /// with one image or list of images per adapter): pooled `image_embeds` for IP-Adapter,
    /// penultimate hidden states for IP-Adapter Plus, each with its negative, as diffusers'
    /// `prepare_ip_adapter_image_embeds`. The images of a set are all used: their tokens are
    /// concatenated.
    pub fn encode_images<I: AsRef<[RgbImage]>>(&self, images: &[I]) -> Result<Vec<ImageEmbeds>> {
        let encoder = self
            .image_encoder
            .as_ref()
            .ok_or_else(|| Error::MissingInput {
                what: "image_encoder",
                reason: "encoding images needs an image encoder (IpAdapter::with_image_encoder); \
                     without one, pass precomputed ImageEmbeds"
                    .into(),
            })?;
        self.check_count("ip_adapter_image", images.len())?;
        (images.iter().zip(&self.image_proj))
            .map(|(images, projection)| {
                let pixels = encoder.pixel_values(images.as_ref())?;
                if projection.takes_hidden_states() {
                    encoder.hidden(pixels)
                } else {
                    encoder.pooled(pixels)
                }
            })
            .collect()
    }

    /// The image tokens of every adapter for
    /// [`UNetInput::with_image_tokens`](crate::unet::UNetInput::with_image_tokens): each
    /// adapter's [`ImageEmbeds`] projected to `[images × tokens, cross_attention_dim]` and
    /// repeated `num_images_per_prompt` times — with `guided` (classifier-free guidance) the
    /// negative's first: `[2 · num_images_per_prompt, images × tokens, dim]`, the order of
    /// diffusers' `prepare_ip_adapter_image_embeds` and of the UNet batch `[negative;
    /// positive]`. With several prompts, pass the samples per half of the UNet batch (prompts
    /// × images per prompt): every sample sees the same reference images.
    pub fn image_tokens(
        &self,
        embeds: &[ImageEmbeds],
        num_images_per_prompt: usize,
        guided: bool,
    ) -> Result<Vec<Tensor<3>>> {
        self.check_count("ip_adapter_image_embeds", embeds.len())?;
        if num_images_per_prompt == 0 {
            return Err(Error::InvalidArgument {
                name: "num_images_per_prompt",
                reason: "must be at least 1".into(),
            });
        }
        let repeat = |tokens: Tensor<3>| {
            let [n, t, d] = tokens.dims();
            tokens
                .reshape([1, n * t, d])
                .repeat_dim(0, num_images_per_prompt)
        };
        (self.image_proj.iter().zip(embeds).enumerate())
            .map(|(i, (projection, embeds))| {
                let (positive, negative) = project(i, projection, embeds, guided)?;
                Ok(match negative {
                    Some(negative) => Tensor::cat(vec![repeat(negative), repeat(positive)], 0),
                    None => repeat(positive),
                })
            })
            .collect()
    }

    fn check_count(&self, name: &'static str, given: usize) -> Result<()> {
        if given != self.num_adapters() {
            return Err(Error::InvalidArgument {
                name,
                reason: format!(
                    "{given} given for {} IP-Adapters (one per adapter)",
                    self.num_adapters()
                ),
            });
        }
        Ok(())
    }
}

/// The positive (and, with `guided`, negative) tokens `[images, tokens, dim]` of adapter
/// `index`.
fn project(
    index: usize,
    projection: &ImageProjection,
    embeds: &ImageEmbeds,
    guided: bool,
) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
    let what = "ip_adapter_image_embeds";
    let (positive, negative, zeros_negative) = match (projection, embeds) {
        (ImageProjection::ImageProjModel(_), ImageEmbeds::Pooled { positive, negative }) => {
            let features = |t: &Tensor<2>| t.clone().unsqueeze_dim::<3>(1);
            (features(positive), negative.as_ref().map(features), true)
        }
        (ImageProjection::Resampler(_), ImageEmbeds::Hidden { positive, negative }) => {
            (positive.clone(), negative.clone(), false)
        }
        (projection, _) => {
            let (kind, takes) = if projection.takes_hidden_states() {
                ("Plus", "hidden states (ImageEmbeds::Hidden)")
            } else {
                ("plain", "pooled image_embeds (ImageEmbeds::Pooled)")
            };
            return Err(Error::InvalidArgument {
                name: what,
                reason: format!("IP-Adapter {index} ({kind}) takes the image encoder's {takes}"),
            });
        }
    };
    let [n, s, d] = positive.dims();
    let width = projection.input_dim();
    if n == 0 || s == 0 || d != width {
        let expected = if zeros_negative {
            format!("[images, {width}] for IP-Adapter {index}")
        } else {
            format!("[images, tokens, {width}] for IP-Adapter {index}")
        };
        let got = if zeros_negative {
            vec![n, d]
        } else {
            vec![n, s, d]
        };
        return Err(Error::Shape {
            what,
            expected,
            got,
        });
    }
    check_finite(what, &positive)?;
    let negative = match (guided, negative) {
        (false, _) => None,
        (true, Some(negative)) if negative.dims() == positive.dims() => {
            check_finite(what, &negative)?;
            Some(negative)
        }
        (true, Some(negative)) => {
            return Err(Error::Shape {
                what,
                expected: format!("the positive's shape for the negative of IP-Adapter {index}"),
                got: negative.dims().to_vec(),
            });
        }
        (true, None) if zeros_negative => Some(positive.zeros_like()),
        (true, None) => {
            return Err(Error::MissingInput {
                what,
                reason: format!(
                    "IP-Adapter {index} (Plus) needs the hidden states of zero pixel values as \
                     the negative under guidance"
                ),
            });
        }
    };
    Ok((
        projection.forward(positive),
        negative.map(|n| projection.forward(n)),
    ))
}
