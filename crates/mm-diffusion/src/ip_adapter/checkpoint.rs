//! An IP-Adapter file of h94/IP-Adapter (`{"image_proj": ..., "ip_adapter": ...}`, flattened in
//! its `.safetensors` files as `image_proj.*` and `ip_adapter.*`) as a module whose tensor
//! names are the file's, and the checks that tell an adapter made for another UNet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;
use mm_core::weights::Weights;

use super::projection::{ImageProjection, ImageProjectionConfig};
use crate::unet::UNet2DConditionModel;
use crate::{Error, Result};

/// What makes an IP-Adapter file unusable; [`Error::IpAdapter`] wraps it with the file's path.
/// Missing, unexpected or mis-shaped tensors found while loading come as a load report
/// ([`mm_core::Error::Load`]) naming the file and the tensors instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpAdapterError {
    /// A PyTorch pickle (`.bin`); only safetensors files are read.
    #[error(
        "PyTorch pickles cannot be read; use the `.safetensors` file h94/IP-Adapter publishes \
         beside it ({suggestion})"
    )]
    NotSafetensors {
        /// The file name to use instead.
        suggestion: String,
    },
    /// The tensors are not in the h94 layout.
    #[error(
        "no `{missing}.*` tensors: not an IP-Adapter checkpoint in the h94 layout \
         (`image_proj.*` and `ip_adapter.*`)"
    )]
    NotIpAdapter {
        /// The missing prefix (`image_proj` or `ip_adapter`).
        missing: &'static str,
    },
    /// An image projection of another IP-Adapter family.
    #[error(
        "its image projection is {kind}, which is not supported (IP-Adapter and IP-Adapter \
         Plus are)"
    )]
    UnsupportedProjection {
        /// The family.
        kind: &'static str,
    },
    /// A tensor needed to tell the adapter's sizes is missing.
    #[error("tensor `{tensor}` is missing")]
    MissingTensor {
        /// Its name in the file.
        tensor: String,
    },
    /// A tensor of the image projection has a shape that fits no projection.
    #[error("tensor `{tensor}` has shape {shape:?}, expected {expected}")]
    Shape {
        /// Its name in the file.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The expected shape, in words.
        expected: String,
    },
    /// The adapter reads or makes tokens of another width than the UNet's text: it was made
    /// for another base model.
    #[error(
        "tensor `{tensor}` is made for {found}-wide cross-attention but the UNet's is {expected} \
         wide: an adapter for another base model (SD 1.x: 768, SD 2.x: 1024, SDXL: 2048)"
    )]
    CrossAttentionWidth {
        /// The tensor that tells.
        tensor: String,
        /// The adapter's width.
        found: usize,
        /// The UNet's width.
        expected: usize,
    },
    /// The adapter has projections for another number of cross-attention layers.
    #[error(
        "it has {found} cross-attention layers but the UNet has {expected}: an adapter for \
         another base model (SD 1.x/2.x: 16, SDXL: 70)"
    )]
    LayerCount {
        /// Layers in the file (`ip_adapter.1`, `ip_adapter.3`, …).
        found: usize,
        /// Cross-attentions of the UNet.
        expected: usize,
    },
}

/// The decoupled key and value projections of one cross-attention (IP-Adapter's
/// `IPAttnProcessor`), both bias-free, from the image tokens to the attention's inner width.
#[derive(Module, Debug)]
pub struct IpAttnProcessor {
    /// Key projection of the image tokens.
    pub to_k_ip: Linear,
    /// Value projection of the image tokens.
    pub to_v_ip: Linear,
}

/// An h94 IP-Adapter file as a module with the file's tensor names.
///
/// `ip_adapter` is what IP-Adapter saves: `nn.ModuleList(unet.attn_processors.values())`, so
/// entry `k` is the UNet's `k`-th attention processor in diffusers' `attn_processors` order
/// (down blocks, up blocks, middle block; `attn1` then `attn2` in each transformer block).
/// Self-attentions (even `k`) have no weights; cross-attentions (`k` = 1, 3, 5, …) have an
/// [`IpAttnProcessor`].
#[derive(Module, Debug)]
pub struct IpAdapterCheckpoint {
    /// The image projection.
    pub image_proj: ImageProjection,
    /// The attention processors, in `attn_processors` order.
    pub ip_adapter: Vec<Option<IpAttnProcessor>>,
}

impl IpAdapterCheckpoint {
    /// A randomly initialised adapter with an image projection of `config`, for `unet`'s
    /// cross-attentions.
    pub fn new(
        config: &ImageProjectionConfig,
        unet: &UNet2DConditionModel,
        device: &Device,
    ) -> Result<Self> {
        let proj =
            |from: usize, to: usize| LinearConfig::new(from, to).with_bias(false).init(device);
        let ip_adapter = cross_attention_dims(unet)
            .into_iter()
            .flat_map(|(inner, context)| {
                let processor = IpAttnProcessor {
                    to_k_ip: proj(context, inner),
                    to_v_ip: proj(context, inner),
                };
                [None, Some(processor)]
            })
            .collect();
        Ok(Self {
            image_proj: ImageProjection::new(config, device)?,
            ip_adapter,
        })
    }

    /// Reads an h94 `.safetensors` file made for `unet` (in the dtype of the UNet's weights).
    ///
    /// Fails with [`Error::IpAdapter`] on a `.bin` file, a file without the h94 names, an
    /// unsupported image projection, or an adapter made for another base model (another
    /// cross-attention width or number of layers), and with [`mm_core::Error::Load`] on
    /// missing, extra or mis-shaped tensors — each naming the file and the tensor.
    pub fn load(
        path: impl AsRef<Path>,
        unet: &UNet2DConditionModel,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let fail = |problem| Error::IpAdapter {
            path: path.to_path_buf(),
            problem,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if matches!(extension, "bin" | "pt" | "pth" | "ckpt") {
            let suggestion = path.with_extension("safetensors");
            let suggestion = suggestion.file_name().unwrap_or_default();
            return Err(fail(IpAdapterError::NotSafetensors {
                suggestion: suggestion.to_string_lossy().into_owned(),
            }));
        }
        if !path.is_file() {
            return Err(mm_core::Error::MissingFile {
                what: "IP-Adapter file".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            }
            .into());
        }
        let weights = Weights::open(path)?;
        let image_proj: BTreeMap<String, Vec<usize>> = (weights.names())
            .filter_map(|name| {
                let short = name.strip_prefix("image_proj.")?;
                Some((short.to_string(), weights.shape(name).unwrap_or_default()))
            })
            .collect();
        let keys: BTreeSet<usize> = (weights.names())
            .filter_map(|name| {
                name.strip_prefix("ip_adapter.")?
                    .split('.')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        for (missing, empty) in [
            ("image_proj", image_proj.is_empty()),
            ("ip_adapter", keys.is_empty()),
        ] {
            if empty {
                return Err(fail(IpAdapterError::NotIpAdapter { missing }));
            }
        }
        let config = ImageProjectionConfig::infer(&image_proj).map_err(fail)?;
        let layers = cross_attention_dims(unet);
        for (j, &(_, context)) in layers.iter().enumerate() {
            let tensor = format!("ip_adapter.{}.to_k_ip.weight", 2 * j + 1);
            if let Some(&[_, found]) = weights.shape(&tensor).as_deref()
                && found != context
            {
                let problem = IpAdapterError::CrossAttentionWidth {
                    tensor,
                    found,
                    expected: context,
                };
                return Err(fail(problem));
            }
        }
        if let Some(&(_, context)) = layers.first()
            && config.output_dim() != context
        {
            let tensor = match config {
                ImageProjectionConfig::ImageProjModel(_) => "image_proj.norm.weight",
                ImageProjectionConfig::Resampler(_) => "image_proj.norm_out.weight",
            };
            return Err(fail(IpAdapterError::CrossAttentionWidth {
                tensor: tensor.into(),
                found: config.output_dim(),
                expected: context,
            }));
        }
        let found = keys.last().map_or(0, |k| k.div_ceil(2));
        if found != layers.len() {
            return Err(fail(IpAdapterError::LayerCount {
                found,
                expected: layers.len(),
            }));
        }
        let dtype = unet.conv_in.weight.val().dtype();
        let module = Self::new(&config, unet, device)?;
        Ok(weights.with_dtype(dtype).load_into(module)?)
    }
}

/// The (inner width, context width) of every cross-attention of `unet`, in `attn_processors`
/// order.
pub(crate) fn cross_attention_dims(unet: &UNet2DConditionModel) -> Vec<(usize, usize)> {
    (unet.named_transformer_blocks().into_iter())
        .map(|(_, block)| {
            let context = block.attn2.to_k.weight.lazy_shape().to_vec()[0];
            (block.attn2.inner_dim(), context)
        })
        .collect()
}
