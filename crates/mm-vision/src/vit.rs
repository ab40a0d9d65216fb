//! ViT (Dosovitskiy et al. 2020): `ViTModel` and `ViTForImageClassification`, tensor names as
//! in `google/vit-base-patch16-224` (`vit.encoder.layer.N.attention.attention.query`, ...),
//! which is also what `save_pretrained` of transformers 5.24 writes by default.
//!
//! **Transparent images**: `ViTImageProcessor` has no `do_convert_rgb`, and transformers 5.24
//! rejects an RGBA image ("mean must have 4 elements"); its `load_image` (what its pipelines
//! call) and `Image.open(p).convert("RGB")` drop the alpha channel. Load images with
//! [`mm_core::image::load_image`] for those pixels.
//!
//! ```no_run
//! # fn main() -> mm_vision::Result<()> {
//! use mm_core::processor::ImageProcessor;
//! use mm_vision::Pretrained;
//! use mm_vision::vit::ViTForImageClassification;
//! let device = mm_core::device::cpu();
//! let model = ViTForImageClassification::load("google/vit-base-patch16-224", &device)?;
//! let dir = mm_core::hub::ModelDir::resolve("google/vit-base-patch16-224")?;
//! let processor = ImageProcessor::from_dir(dir.path())?;
//! let image = mm_core::image::load_image("cat.png")?; // ViT: alpha dropped
//! let pixels = processor.preprocess(&[image], &device)?;
//! for p in &model.classify(pixels, 3)?[0] {
//!     println!("{:.3} {}", p.score, p.label);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use mm_core::nn::{Activation, merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::linear;
use mm_core::weights::Weights;
use serde::{Deserialize, Serialize};

use crate::clip::patchify;
use crate::encoder::encoder_dims;
use crate::output::{TowerOutput, read_scores};
use crate::{Pretrained, Result};

/// `ViTConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViTConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Whether q/k/v projections have biases.
    pub qkv_bias: bool,
    /// Output width of the pooler (defaults to `hidden_size`).
    pub pooler_output_size: Option<usize>,
    /// Class names by index, for classification checkpoints.
    pub id2label: BTreeMap<String, String>,
}

impl Default for ViTConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
            pooler_output_size: None,
            id2label: BTreeMap::new(),
        }
    }
}

impl ViTConfig {
    /// Fails with [`mm_core::Error::InvalidConfig`] on sizes the model cannot be built from
    /// (heads that do not divide `hidden_size`, a zero or too large `patch_size`) and with
    /// [`mm_core::Error::TooLarge`] when its weights would not fit in the memory limit.
    pub fn validate(&self) -> Result<()> {
        let d = self.hidden_size as f64;
        let pooler_and_classifier = d * (d + self.num_labels() as f64);
        encoder_dims!(self).check_vision(
            "ViTConfig",
            (self.image_size, self.patch_size, self.num_channels),
            pooler_and_classifier,
        )
    }

    /// The number of classes (`len(id2label)`, 2 when the config names none, as transformers).
    pub fn num_labels(&self) -> usize {
        if self.id2label.is_empty() {
            2
        } else {
            self.id2label.len()
        }
    }

    /// The name of class `index` (`LABEL_{index}` when the config has none).
    pub fn label(&self, index: usize) -> String {
        self.id2label
            .get(&index.to_string())
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{index}"))
    }
}

/// `embeddings.patch_embeddings`.
#[derive(Module, Debug)]
pub struct ViTPatchEmbeddings {
    /// Patchify convolution.
    pub projection: Conv2d,
}

/// `embeddings`: class token, patches and learned positions.
#[derive(Module, Debug)]
pub struct ViTEmbeddings {
    /// Class token `[1, 1, hidden]`.
    pub cls_token: Param<Tensor<3>>,
    /// Position embeddings `[1, patches + 1, hidden]`.
    pub position_embeddings: Param<Tensor<3>>,
    /// Patch embeddings.
    pub patch_embeddings: ViTPatchEmbeddings,
}

/// `attention.attention`: the q/k/v projections.
#[derive(Module, Debug)]
pub struct ViTSelfAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
}

/// A module holding one `dense` linear layer (the checkpoint's `*.dense`).
#[derive(Module, Debug)]
pub struct Dense {
    /// The layer.
    pub dense: Linear,
}

/// `attention`: self-attention and its output projection.
#[derive(Module, Debug)]
pub struct ViTAttention {
    /// q/k/v.
    pub attention: ViTSelfAttention,
    /// Output projection.
    pub output: Dense,
}

/// `encoder.layer.N`.
#[derive(Module, Debug)]
pub struct ViTLayer {
    /// Norm before attention.
    pub layernorm_before: LayerNorm,
    /// Attention.
    pub attention: ViTAttention,
    /// Norm before the MLP.
    pub layernorm_after: LayerNorm,
    /// MLP up projection.
    pub intermediate: Dense,
    /// MLP down projection.
    pub output: Dense,
    #[module(skip)]
    activation: Activation,
    num_heads: usize,
}

impl ViTLayer {
    fn new(config: &ViTConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        let norm = LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps);
        let qkv = LinearConfig::new(d, d).with_bias(config.qkv_bias);
        let dense = |i, o| Dense {
            dense: LinearConfig::new(i, o).init(device),
        };
        Self {
            layernorm_before: norm.init(device),
            attention: ViTAttention {
                attention: ViTSelfAttention {
                    query: qkv.init(device),
                    key: qkv.init(device),
                    value: qkv.init(device),
                },
                output: dense(d, d),
            },
            layernorm_after: norm.init(device),
            intermediate: dense(d, config.intermediate_size),
            output: dense(config.intermediate_size, d),
            activation: config.hidden_act,
            num_heads: config.num_attention_heads,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.layernorm_before.forward(x.clone());
        let qkv = &self.attention.attention;
        let q = split_heads(linear(&qkv.query, h.clone()), self.num_heads);
        let k = split_heads(linear(&qkv.key, h.clone()), self.num_heads);
        let v = split_heads(linear(&qkv.value, h), self.num_heads);
        let attn = merge_heads(scaled_dot_product_attention(q, k, v, None, false));
        let x = x + linear(&self.attention.output.dense, attn);
        let h = self.layernorm_after.forward(x.clone());
        let h = self.activation.forward(linear(&self.intermediate.dense, h));
        x + linear(&self.output.dense, h)
    }
}

/// `encoder`.
#[derive(Module, Debug)]
pub struct ViTEncoder {
    /// The layers.
    pub layer: Vec<ViTLayer>,
}

/// `ViTModel`: embeddings, encoder, final norm and an optional `tanh` pooler.
#[derive(Module, Debug)]
pub struct ViTModel {
    /// Embeddings.
    pub embeddings: ViTEmbeddings,
    /// Encoder.
    pub encoder: ViTEncoder,
    /// Final LayerNorm.
    pub layernorm: LayerNorm,
    /// Pooler (`tanh(dense(class token))`), present in checkpoints saved with it.
    pub pooler: Option<Dense>,
    num_channels: usize,
    image_size: usize,
}

impl ViTModel {
    /// A randomly initialised model, with or without the pooler.
    pub fn new(config: &ViTConfig, add_pooling_layer: bool, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_size;
        let p = config.patch_size;
        let grid = config.image_size / p;
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Ok(Self {
            embeddings: ViTEmbeddings {
                cls_token: init.init([1, 1, d], device),
                position_embeddings: init.init([1, grid * grid + 1, d], device),
                patch_embeddings: ViTPatchEmbeddings {
                    projection: Conv2dConfig::new([config.num_channels, d], [p, p])
                        .with_stride([p, p])
                        .init(device),
                },
            },
            encoder: ViTEncoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| ViTLayer::new(config, device))
                    .collect(),
            },
            layernorm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            pooler: add_pooling_layer.then(|| Dense {
                dense: LinearConfig::new(d, config.pooler_output_size.unwrap_or(d)).init(device),
            }),
            num_channels: config.num_channels,
            image_size: config.image_size,
        })
    }

    /// Encodes normalised images `[batch, 3, image_size, image_size]`. `last_hidden_state` is
    /// after the final norm; `pooler_output` is the pooler's output, or the normed class token
    /// when the model has no pooler.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<TowerOutput> {
        let patches = patchify(
            &self.embeddings.patch_embeddings.projection,
            pixel_values,
            self.num_channels,
            self.image_size,
        )?;
        let [b, _, d] = patches.dims();
        let dtype = patches.dtype();
        let cls = self
            .embeddings
            .cls_token
            .val()
            .cast(dtype)
            .expand([b, 1, d]);
        let mut h = Tensor::cat(vec![cls, patches], 1)
            + self.embeddings.position_embeddings.val().cast(dtype);
        let mut hidden_states = Vec::with_capacity(self.encoder.layer.len() + 1);
        for layer in &self.encoder.layer {
            hidden_states.push(h.clone());
            h = layer.forward(h);
        }
        hidden_states.push(h.clone());
        let last_hidden_state = self.layernorm.forward(h);
        let cls = last_hidden_state.clone().narrow(1, 0, 1).reshape([b, d]);
        let pooler_output = match &self.pooler {
            Some(pooler) => linear(&pooler.dense, cls).tanh(),
            None => cls,
        };
        Ok(TowerOutput {
            last_hidden_state,
            pooler_output,
            hidden_states,
        })
    }
}

/// One class of a classification result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// Class name from `id2label`.
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

/// `ViTForImageClassification` (`google/vit-base-patch16-224`).
#[derive(Module, Debug)]
pub struct ViTForImageClassification {
    /// The backbone (`vit.*`, no pooler).
    pub vit: ViTModel,
    /// Linear classifier on the class token.
    pub classifier: Linear,
    #[module(skip)]
    config: ViTConfig,
}

impl ViTForImageClassification {
    /// A randomly initialised model.
    pub fn new(config: &ViTConfig, device: &Device) -> Result<Self> {
        Ok(Self {
            vit: ViTModel::new(config, false, device)?,
            classifier: LinearConfig::new(config.hidden_size, config.num_labels()).init(device),
            config: config.clone(),
        })
    }

    /// The config the model was built from (labels included).
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    /// Class logits `[batch, num_labels]`, with the backbone's outputs.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<(Tensor<2>, TowerOutput)> {
        let out = self.vit.forward(pixel_values)?;
        let logits = linear(&self.classifier, out.pooler_output.clone());
        Ok((logits, out))
    }

    /// The `k` most probable classes of each image, best first.
    pub fn classify(&self, pixel_values: Tensor<4>, k: usize) -> Result<Vec<Vec<Prediction>>> {
        let (logits, _) = self.forward(pixel_values)?;
        top_k(softmax(logits, 1), k, |i| self.config.label(i))
    }
}

/// The `k` largest entries of each row of `scores`, best first, named by `label`.
pub(crate) fn top_k(
    scores: Tensor<2>,
    k: usize,
    label: impl Fn(usize) -> String,
) -> Result<Vec<Vec<Prediction>>> {
    let [rows, cols] = scores.dims();
    let values = read_scores(scores)?;
    Ok((0..rows)
        .map(|r| {
            let row = &values[r * cols..(r + 1) * cols];
            let mut order: Vec<usize> = (0..cols).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
                .into_iter()
                .take(k)
                .map(|index| Prediction {
                    index,
                    label: label(index),
                    score: row[index],
                })
                .collect()
        })
        .collect())
}

impl Pretrained for ViTModel {
    type Config = ViTConfig;

    fn from_weights(config: &ViTConfig, weights: Weights, device: &Device) -> Result<Self> {
        let prefixed = weights.names().any(|n| n.starts_with("vit."));
        let weights = if prefixed {
            weights.select_prefix("vit")
        } else {
            weights
        };
        let pooled = weights.contains("pooler.dense.weight");
        Ok(weights.load_into(Self::new(config, pooled, device)?)?)
    }
}

impl Pretrained for ViTForImageClassification {
    type Config = ViTConfig;

    fn from_weights(config: &ViTConfig, weights: Weights, device: &Device) -> Result<Self> {
        Ok(weights.load_into(Self::new(config, device)?)?)
    }
}
