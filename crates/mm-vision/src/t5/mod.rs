//! `T5EncoderModel`: the encoder half of T5 (T5 v1.1 XXL is the third text encoder of Stable
//! Diffusion 3 and the second of FLUX.1), loading transformers' checkpoints (`shared.*`,
//! `encoder.block.<i>.layer.{0,1}.*`, `encoder.final_layer_norm.*`; sharded and fp16 / bf16
//! files as every [`Pretrained`] model).
//!
//! Each block is pre-norm: RMS layer norm (no mean, no bias), self-attention without the
//! `1 / √d` scale and with a learned relative position bias — computed by the first block
//! from log-spaced distance buckets and shared by all — then RMS norm and the feed-forward
//! layer (T5 v1.1: `wo(gelu_tanh(wi_0 x) · wi_1 x)`; T5: `wo(relu(wi x))`). There are no
//! absolute positions.
//!
//! ```no_run
//! # fn main() -> mm_vision::Result<()> {
//! use burn::tensor::{Int, Tensor};
//! use mm_vision::Pretrained;
//! use mm_vision::t5::T5EncoderModel;
//! let device = mm_core::device::cpu();
//! let t5 = T5EncoderModel::load("stabilityai/stable-diffusion-3-medium-diffusers/text_encoder_3", &device)?;
//! let ids = Tensor::<2, Int>::from_ints([[8, 5, 1]], &device); // "a cat</s>"
//! let states = t5.forward(ids, None)?; // [1, 3, 4096]
//! # let _ = states;
//! # Ok(()) }
//! ```

// The checkpoint's module names `SelfAttention` and `DenseReluDense` are kept as field names
// (and so in the code burn's `Module` derive writes for them).
#![allow(non_snake_case)]

mod config;

pub use config::T5Config;

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use mm_core::nn::{Activation, merge_heads, split_heads};
use mm_core::precision::{embedding, linear};
use mm_core::weights::Weights;

use crate::{Error, Pretrained, Result};

/// T5's self-attention: bias-free `q`, `k`, `v`, `o`; the first block also holds the
/// relative position bias table `[num_buckets, num_heads]`.
#[derive(Module, Debug)]
pub struct T5Attention {
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// The relative position bias (first block only).
    pub relative_attention_bias: Option<Embedding>,
    #[module(skip)]
    heads: usize,
}

impl T5Attention {
    fn new(config: &T5Config, bias: bool, device: &Device) -> Self {
        let inner = config.num_heads * config.d_kv;
        let proj = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Self {
            q: proj(config.d_model, inner),
            k: proj(config.d_model, inner),
            v: proj(config.d_model, inner),
            o: proj(inner, config.d_model),
            relative_attention_bias: bias.then(|| {
                EmbeddingConfig::new(config.relative_attention_num_buckets, config.num_heads)
                    .init(device)
            }),
            heads: config.num_heads,
        }
    }

    /// Attends `x` `[batch, seq, d_model]` to itself with the additive `bias`
    /// `[batch or 1, heads, seq, seq]` (positions and padding).
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let q = split_heads(linear(&self.q, x.clone()), self.heads);
        let k = split_heads(linear(&self.k, x.clone()), self.heads);
        let v = split_heads(linear(&self.v, x), self.heads);
        let dtype = q.dtype();
        // No 1/sqrt(d) scale (T5 folds it into the initialisation); softmax in f32.
        let scores = q.matmul(k.swap_dims(2, 3)).cast(DType::F32) + bias;
        let weights = softmax(scores, 3).cast(dtype);
        linear(&self.o, merge_heads(weights.matmul(v)))
    }
}

/// T5's feed-forward layer: `wo(act(wi x))`.
#[derive(Module, Debug)]
pub struct T5DenseActDense {
    /// Input projection.
    pub wi: Linear,
    /// Output projection.
    pub wo: Linear,
    #[module(skip)]
    act: Activation,
}

/// T5 v1.1's gated feed-forward layer: `wo(act(wi_0 x) · wi_1 x)`.
#[derive(Module, Debug)]
pub struct T5DenseGatedActDense {
    /// The activated projection.
    pub wi_0: Linear,
    /// The linear projection it multiplies.
    pub wi_1: Linear,
    /// Output projection.
    pub wo: Linear,
    #[module(skip)]
    act: Activation,
}

/// The feed-forward layer `feed_forward_proj` selects (`DenseReluDense.*`); the variants add
/// nothing to the tensor names.
#[derive(Module, Debug)]
pub enum T5FeedForward {
    /// `"relu"` (or another plain activation).
    Plain(T5DenseActDense),
    /// `"gated-gelu"` (or another gated activation).
    Gated(T5DenseGatedActDense),
}

impl T5FeedForward {
    fn new(config: &T5Config, device: &Device) -> Result<Self> {
        let (gated, act) = config.feed_forward()?;
        let proj = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let (d, ff) = (config.d_model, config.d_ff);
        Ok(if gated {
            Self::Gated(T5DenseGatedActDense {
                wi_0: proj(d, ff),
                wi_1: proj(d, ff),
                wo: proj(ff, d),
                act,
            })
        } else {
            Self::Plain(T5DenseActDense {
                wi: proj(d, ff),
                wo: proj(ff, d),
                act,
            })
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Plain(f) => linear(&f.wo, f.act.forward(linear(&f.wi, x))),
            Self::Gated(f) => {
                let h = f.act.forward(linear(&f.wi_0, x.clone())) * linear(&f.wi_1, x);
                linear(&f.wo, h)
            }
        }
    }
}

/// `T5LayerSelfAttention`: RMS norm, then self-attention.
#[derive(Module, Debug)]
pub struct T5LayerSelfAttention {
    /// The attention (`SelfAttention.*`).
    pub SelfAttention: T5Attention,
    /// The RMS norm before it.
    pub layer_norm: RmsNorm,
}

/// `T5LayerFF`: RMS norm, then the feed-forward layer.
#[derive(Module, Debug)]
pub struct T5LayerFF {
    /// The feed-forward layer (`DenseReluDense.*`).
    pub DenseReluDense: T5FeedForward,
    /// The RMS norm before it.
    pub layer_norm: RmsNorm,
}

/// `layer.0` or `layer.1` of a block; the variants add nothing to the tensor names. (Two
/// per block, built once: their size difference does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum T5Layer {
    /// `layer.0`.
    SelfAttention(T5LayerSelfAttention),
    /// `layer.1`.
    Ff(T5LayerFF),
}

impl T5Layer {
    /// `x` plus the layer's output on its normalised `x`.
    fn forward(&self, x: Tensor<3>, bias: &Tensor<4>) -> Tensor<3> {
        let y = match self {
            Self::SelfAttention(l) => l
                .SelfAttention
                .forward(l.layer_norm.forward(x.clone()), bias.clone()),
            Self::Ff(l) => l.DenseReluDense.forward(l.layer_norm.forward(x.clone())),
        };
        x + y
    }
}

/// One encoder block: `layer.0` then `layer.1`, each added to the residual stream.
#[derive(Module, Debug)]
pub struct T5Block {
    /// `[self-attention, feed-forward]`.
    pub layer: Vec<T5Layer>,
}

/// The encoder stack.
#[derive(Module, Debug)]
pub struct T5Stack {
    /// The blocks.
    pub block: Vec<T5Block>,
    /// The final RMS norm.
    pub final_layer_norm: RmsNorm,
}

/// transformers' `T5EncoderModel`.
#[derive(Module, Debug)]
pub struct T5EncoderModel {
    /// The token embedding (`shared`, which `encoder.embed_tokens` ties to).
    pub shared: Embedding,
    /// The encoder.
    pub encoder: T5Stack,
    #[module(skip)]
    config: T5Config,
}

impl T5EncoderModel {
    /// A randomly initialised model; fails on a config it cannot be built from.
    pub fn new(config: &T5Config, device: &Device) -> Result<Self> {
        config.validate()?;
        let norm = || {
            RmsNormConfig::new(config.d_model)
                .with_epsilon(config.layer_norm_epsilon)
                .init(device)
        };
        let block = (0..config.num_layers)
            .map(|i| {
                Ok(T5Block {
                    layer: vec![
                        T5Layer::SelfAttention(T5LayerSelfAttention {
                            SelfAttention: T5Attention::new(config, i == 0, device),
                            layer_norm: norm(),
                        }),
                        T5Layer::Ff(T5LayerFF {
                            DenseReluDense: T5FeedForward::new(config, device)?,
                            layer_norm: norm(),
                        }),
                    ],
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shared: EmbeddingConfig::new(config.vocab_size, config.d_model).init(device),
            encoder: T5Stack {
                block,
                final_layer_norm: norm(),
            },
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The last hidden state `[batch, seq, d_model]` of `input_ids` `[batch, seq]`;
    /// `attention_mask` (`[batch, seq]`, 1 = token, 0 = padding) hides padded keys.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<3>> {
        let [batch, seq] = input_ids.dims();
        if batch == 0 || seq == 0 {
            return Err(Error::Shape {
                what: "input_ids",
                expected: "[batch > 0, seq > 0]".into(),
                got: vec![batch, seq],
            });
        }
        let max_id = input_ids.clone().max().into_scalar::<i64>();
        let min_id = input_ids.clone().min().into_scalar::<i64>();
        if min_id < 0 || max_id as usize >= self.config.vocab_size {
            return Err(Error::InvalidInput(format!(
                "token ids must be in 0..{} (vocab_size), got {min_id}..={max_id}",
                self.config.vocab_size
            )));
        }
        let device = input_ids.device();
        let mut bias = self.position_bias(seq, &device);
        if let Some(mask) = attention_mask {
            if mask.dims() != [batch, seq] {
                return Err(Error::Shape {
                    what: "attention_mask",
                    expected: format!("[{batch}, {seq}] (the ids' shape)"),
                    got: mask.dims().to_vec(),
                });
            }
            // transformers: (1 - mask) · float32 min, added to the scores.
            let padding: Tensor<2, Bool> = mask.equal_elem(0);
            let add = Tensor::<2>::zeros([batch, seq], &device).mask_fill(padding, f32::MIN);
            bias = bias + add.reshape([batch, 1, 1, seq]);
        }
        let mut h = embedding(&self.shared, input_ids);
        for block in &self.encoder.block {
            for layer in &block.layer {
                h = layer.forward(h, &bias);
            }
        }
        Ok(self.encoder.final_layer_norm.forward(h))
    }

    /// The relative position bias `[1, heads, seq, seq]` of the first block's table.
    fn position_bias(&self, seq: usize, device: &Device) -> Tensor<4> {
        let heads = self.config.num_heads;
        let table = self
            .encoder
            .block
            .first()
            .and_then(|b| match b.layer.first() {
                Some(T5Layer::SelfAttention(l)) => l.SelfAttention.relative_attention_bias.as_ref(),
                _ => None,
            });
        let Some(table) = table else {
            return Tensor::zeros([1, heads, seq, seq], device);
        };
        let buckets: Vec<i64> = (0..seq)
            .flat_map(|q| (0..seq).map(move |k| (q, k)))
            .map(|(q, k)| {
                relative_position_bucket(
                    k as i64 - q as i64,
                    self.config.relative_attention_num_buckets,
                    self.config.relative_attention_max_distance,
                ) as i64
            })
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(buckets, [seq, seq]), device);
        // [seq, seq, heads] → [1, heads, seq, seq]
        embedding(table, ids)
            .cast(DType::F32)
            .permute([2, 0, 1])
            .unsqueeze_dim(0)
    }
}

/// transformers' `_relative_position_bucket` for the (bidirectional) encoder: half the
/// buckets for keys after the query; within a half, exact buckets for distances below a
/// quarter of `num_buckets`, then log-spaced ones up to `max_distance`, the last bucket
/// beyond. Computed in f32 as PyTorch does.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let offset = if relative > 0 { half } else { 0 };
    let distance = relative.unsigned_abs() as usize;
    let max_exact = half / 2;
    if distance < max_exact {
        return offset + distance;
    }
    let log_ratio =
        (distance as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln();
    let large = max_exact + (log_ratio * (half - max_exact) as f32) as usize;
    offset + large.min(half - 1)
}

impl Pretrained for T5EncoderModel {
    type Config = T5Config;

    /// Loads the encoder's tensors: `shared.weight` (or only its tied copy
    /// `encoder.embed_tokens.weight`), `encoder.*`; a full T5's `decoder.*` and `lm_head.*` are
    /// dropped. The llama.cpp names of T5 encoder GGUF files (city96's
    /// `t5-v1_1-xxl-encoder-Q8_0.gguf`, `enc.blk.<i>.attn_q.weight`, …; see [`gguf_t5_name`])
    /// are mapped to transformers' names; their quantized matrices stay quantized (see
    /// [`mm_core::quant`]).
    fn from_weights(config: &T5Config, weights: Weights, device: &Device) -> Result<Self> {
        let weights = if weights.contains("enc.blk.0.attn_q.weight") {
            weights.rename(|name| Some(gguf_t5_name(name)))
        } else {
            weights
        };
        let has_shared = weights.names().any(|n| n == "shared.weight");
        let weights = weights.rename(|name| match name {
            "encoder.embed_tokens.weight" if has_shared => None,
            "encoder.embed_tokens.weight" => Some("shared.weight".into()),
            n if n.starts_with("decoder.") || n.starts_with("lm_head.") => None,
            n => Some(n.to_string()),
        });
        Ok(weights.load_into(Self::new(config, device)?)?)
    }
}

/// llama.cpp's T5 encoder modules (after `enc.blk.<i>.`) and transformers' names for them
/// (after `encoder.block.<i>.`), as ComfyUI-GGUF maps them.
const GGUF_T5_BLOCK: [(&str, &str); 10] = [
    ("attn_norm.", "layer.0.layer_norm."),
    ("attn_q.", "layer.0.SelfAttention.q."),
    ("attn_k.", "layer.0.SelfAttention.k."),
    ("attn_v.", "layer.0.SelfAttention.v."),
    ("attn_o.", "layer.0.SelfAttention.o."),
    (
        "attn_rel_b.",
        "layer.0.SelfAttention.relative_attention_bias.",
    ),
    ("ffn_norm.", "layer.1.layer_norm."),
    ("ffn_gate.", "layer.1.DenseReluDense.wi_0."),
    ("ffn_up.", "layer.1.DenseReluDense.wi_1."),
    ("ffn_down.", "layer.1.DenseReluDense.wo."),
];

/// The transformers name of a tensor of a llama.cpp-style T5 encoder GGUF file:
/// `token_embd.weight` → `shared.weight`, `enc.output_norm.weight` →
/// `encoder.final_layer_norm.weight`, `enc.blk.<i>.<module>` → `encoder.block.<i>.<…>` (see
/// the table in the source: `attn_q` → `layer.0.SelfAttention.q`, `ffn_gate` →
/// `layer.1.DenseReluDense.wi_0`, …). Other names are kept, so that a strict load reports
/// them.
///
/// ```
/// use mm_vision::t5::gguf_t5_name;
/// assert_eq!(gguf_t5_name("enc.blk.3.ffn_up.weight"), "encoder.block.3.layer.1.DenseReluDense.wi_1.weight");
/// assert_eq!(gguf_t5_name("token_embd.weight"), "shared.weight");
/// ```
pub fn gguf_t5_name(name: &str) -> String {
    match name {
        "token_embd.weight" => return "shared.weight".into(),
        "enc.output_norm.weight" => return "encoder.final_layer_norm.weight".into(),
        _ => {}
    }
    let block = name.strip_prefix("enc.blk.").and_then(|rest| {
        let (i, tail) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (from, to) = GGUF_T5_BLOCK
            .iter()
            .find(|(from, _)| tail.starts_with(from))?;
        Some(format!("encoder.block.{i}.{to}{}", &tail[from.len()..]))
    });
    block.unwrap_or_else(|| name.to_string())
}

/// Where a T5 tokenizer's files are, for the error message of a folder without `tokenizer.json`.
pub fn tokenizer_file(dir: &Path) -> Result<std::path::PathBuf> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return Ok(json);
    }
    Err(Error::InvalidInput(format!(
        "{} has no tokenizer.json{}: convert it once with transformers \
         (`AutoTokenizer.from_pretrained(dir).save_pretrained(dir)` writes tokenizer.json)",
        dir.display(),
        if dir.join("spiece.model").is_file() {
            " (only the SentencePiece spiece.model, which the tokenizers crate cannot read)"
        } else {
            ""
        }
    )))
}
