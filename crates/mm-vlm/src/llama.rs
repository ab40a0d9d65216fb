//! The Llama decoder (`LlamaModel` / `LlamaForCausalLM`), which is also Mistral's: RMSNorm,
//! rotary embeddings, grouped-query attention, SwiGLU MLP, an optional sliding attention window
//! and a [`KvCache`].
//!
//! Tensor names follow the checkpoints: `model.embed_tokens`, `model.layers.N.{input_layernorm,
//! self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`,
//! `lm_head` (absent when tied to the embeddings).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use mm_core::nn::{Activation, grouped_attention, merge_heads, split_heads};
use mm_core::precision::{compute_dtype, embedding, linear, matmul};
use mm_core::weights::Weights;

use crate::config::TextConfig;
use crate::kv_cache::KvCache;
use crate::rope::{self, Rope};
use crate::{Error, Result};

/// Self-attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection `[hidden → heads · head_dim]`.
    pub q_proj: Linear,
    /// Key projection `[hidden → kv_heads · head_dim]`.
    pub k_proj: Linear,
    /// Value projection `[hidden → kv_heads · head_dim]`.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    heads: usize,
    kv_heads: usize,
}

impl LlamaAttention {
    fn new(c: &TextConfig, device: &Device) -> Self {
        let (d, hd) = (c.hidden_size, c.head_size());
        let lin = |i, o| {
            LinearConfig::new(i, o)
                .with_bias(c.attention_bias)
                .init(device)
        };
        Self {
            q_proj: lin(d, c.num_attention_heads * hd),
            k_proj: lin(d, c.kv_heads() * hd),
            v_proj: lin(d, c.kv_heads() * hd),
            o_proj: lin(c.num_attention_heads * hd, d),
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
        }
    }

    fn forward(&self, x: Tensor<3>, step: &Step, layer: usize, cache: &mut KvCache) -> Tensor<3> {
        let q = split_heads(linear(&self.q_proj, x.clone()), self.heads);
        let k = split_heads(linear(&self.k_proj, x.clone()), self.kv_heads);
        let v = split_heads(linear(&self.v_proj, x), self.kv_heads);
        let q = rope::apply(q, &step.cos, &step.sin);
        let k = rope::apply(k, &step.cos, &step.sin);
        let (k, v) = cache.append(layer, k, v);
        let out = grouped_attention(q, k, v, step.mask.clone(), step.causal);
        linear(&self.o_proj, merge_heads(out))
    }
}

/// The SwiGLU MLP: `down(act(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
    #[module(skip)]
    act: Activation,
}

impl LlamaMlp {
    fn new(c: &TextConfig, device: &Device) -> Self {
        let (d, m) = (c.hidden_size, c.intermediate_size);
        let lin = |i, o| LinearConfig::new(i, o).with_bias(c.mlp_bias).init(device);
        Self {
            gate_proj: lin(d, m),
            up_proj: lin(d, m),
            down_proj: lin(m, d),
            act: c.hidden_act,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.act.forward(linear(&self.gate_proj, x.clone()));
        linear(&self.down_proj, gate * linear(&self.up_proj, x))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: LlamaAttention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: LlamaMlp,
}

/// What every layer of one forward pass shares: rotary tables and the attention mask.
struct Step {
    cos: Tensor<4>,
    sin: Tensor<4>,
    mask: Option<Tensor<4, burn::tensor::Bool>>,
    causal: bool,
}

/// `LlamaModel`: embeddings, decoder layers and the final norm.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    #[module(skip)]
    rope: Rope,
    max_positions: usize,
    #[module(skip)]
    sliding_window: Option<usize>,
}

impl LlamaModel {
    /// A randomly initialised decoder (the config must be valid, see [`TextConfig::validate`]).
    pub fn new(c: &TextConfig, device: &Device) -> Self {
        let norm = RmsNormConfig::new(c.hidden_size).with_epsilon(c.rms_norm_eps);
        Self {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, c.hidden_size).init(device),
            layers: (0..c.num_hidden_layers)
                .map(|_| LlamaDecoderLayer {
                    input_layernorm: norm.init(device),
                    self_attn: LlamaAttention::new(c, device),
                    post_attention_layernorm: norm.init(device),
                    mlp: LlamaMlp::new(c, device),
                })
                .collect(),
            norm: norm.init(device),
            rope: Rope::new(c),
            max_positions: c.max_position_embeddings,
            sliding_window: c.sliding_window,
        }
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.shape()[0]
    }

    /// The longest sequence: `max_position_embeddings`, or `None` with dynamic rotary scaling
    /// (made for running past it).
    pub fn max_positions(&self) -> Option<usize> {
        (!self.rope.extrapolates()).then_some(self.max_positions)
    }

    /// The dtype the model computes in: the weights' dtype, or f32 for half-precision
    /// weights on the flex CPU backend (see [`mm_core::precision`]).
    pub fn dtype(&self) -> DType {
        let table = self.embed_tokens.weight.val();
        compute_dtype(table.dtype(), &table.device())
    }

    /// Embeds `[batch, seq]` token ids, after checking each is inside the vocabulary.
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        let ids = read_ids(&input_ids)?;
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        Ok(embedding(&self.embed_tokens, input_ids))
    }

    /// Runs the decoder on `inputs_embeds` `[batch, seq, hidden]` that continue what `cache`
    /// holds, and appends to the cache. `attention_mask` (`[batch][seq]`, true = real token)
    /// marks left padding; `None` = every token is real. Returns the final-norm hidden states.
    pub fn forward_embeds(
        &self,
        inputs_embeds: Tensor<3>,
        attention_mask: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let [b, s, d] = inputs_embeds.dims();
        if s == 0 {
            return Err(Error::EmptyPrompt);
        }
        if !cache.is_empty() && cache.batch() != b {
            return Err(Error::Shape {
                what: "inputs_embeds",
                expected: format!("batch {} like the cache", cache.batch()),
                got: vec![b, s, d],
            });
        }
        if let Some(max) = self.max_positions()
            && cache.len() + s > max
        {
            return Err(Error::TooLong {
                len: cache.len() + s,
                max,
            });
        }
        let mask = match attention_mask {
            Some(m) => {
                if m.len() != b || m.iter().any(|r| r.len() != s) {
                    return Err(Error::Shape {
                        what: "attention_mask",
                        expected: format!("[{b}, {s}] like the inputs"),
                        got: vec![m.len(), m.first().map_or(0, Vec::len)],
                    });
                }
                m.to_vec()
            }
            None => vec![vec![true; s]; b],
        };
        let device = inputs_embeds.device();
        let dtype = inputs_embeds.dtype();
        let positions = cache.push_positions(&mask);
        let (cos, sin) = self.rope.tables(&positions, &device);
        let (mask, causal) = cache.mask(s, self.sliding_window, &device);
        let step = Step {
            cos: cos.cast(dtype),
            sin: sin.cast(dtype),
            mask,
            causal,
        };
        let mut h = inputs_embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let attn =
                layer
                    .self_attn
                    .forward(layer.input_layernorm.forward(h.clone()), &step, i, cache);
            h = h + attn;
            h = h.clone()
                + layer
                    .mlp
                    .forward(layer.post_attention_layernorm.forward(h.clone()));
        }
        Ok(self.norm.forward(h))
    }
}

/// `LlamaForCausalLM` / `MistralForCausalLM`: the decoder and its language-model head.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM {
    /// The decoder.
    pub model: LlamaModel,
    /// Output projection to the vocabulary; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
}

impl LlamaForCausalLM {
    /// A randomly initialised model; `tied` shares the embedding matrix as `lm_head`.
    pub fn new(c: &TextConfig, tied: bool, device: &Device) -> Self {
        Self {
            model: LlamaModel::new(c, device),
            lm_head: (!tied).then(|| {
                LinearConfig::new(c.hidden_size, c.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
        }
    }

    /// Builds the decoder and loads `weights` strictly (`model.*`, `lm_head.weight`; a stored
    /// `lm_head` is dropped when `tie_word_embeddings`).
    pub fn from_weights(config: &TextConfig, weights: Weights, device: &Device) -> Result<Self> {
        config.validate()?;
        let tied = config.tie_word_embeddings;
        let weights = weights.rename(|name| {
            let buffer = name.ends_with("rotary_emb.inv_freq");
            let tied_head = tied && name.starts_with("lm_head.");
            (!buffer && !tied_head).then(|| name.to_string())
        });
        Ok(weights.load_into(Self::new(config, tied, device))?)
    }

    /// Logits `[batch, seq, vocab]` (float32) of final hidden states.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = hidden.dims();
        let logits = match &self.lm_head {
            Some(head) => linear(head, hidden),
            None => {
                let w = self.model.embed_tokens.weight.val();
                let v = w.dims()[0];
                matmul(hidden.reshape([b * s, d]), w.transpose()).reshape([b, s, v])
            }
        };
        logits.cast(DType::F32)
    }

    /// Logits of every position for `[batch, seq]` token ids, continuing `cache`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let embeds = self.model.embed(input_ids)?;
        let hidden = self.model.forward_embeds(embeds, attention_mask, cache)?;
        Ok(self.logits(hidden))
    }

    /// Logits of the last position only (`[batch, vocab]`) for `inputs_embeds`, continuing
    /// `cache`: what a generation step needs.
    pub fn last_logits(
        &self,
        inputs_embeds: Tensor<3>,
        attention_mask: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
    ) -> Result<Tensor<2>> {
        let hidden = self
            .model
            .forward_embeds(inputs_embeds, attention_mask, cache)?;
        let [b, s, _] = hidden.dims();
        let last = hidden.narrow(1, s - 1, 1);
        Ok(self.logits(last).reshape([b, self.model.vocab_size()]))
    }
}

/// Reads `[batch, seq]` ids back to the host.
pub(crate) fn read_ids(ids: &Tensor<2, Int>) -> Result<Vec<i64>> {
    ids.to_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::InvalidInput(format!("cannot read input_ids: {e:?}")))
}

/// Reads an HF `attention_mask` tensor (`[batch, seq]`, 1 = token, 0 = padding) into the
/// row-major booleans [`LlamaModel::forward_embeds`] takes.
pub fn mask_rows(attention_mask: &Tensor<2, Int>) -> Result<Vec<Vec<bool>>> {
    let [b, s] = attention_mask.dims();
    let flat = read_ids(attention_mask)?;
    Ok((0..b)
        .map(|i| flat[i * s..(i + 1) * s].iter().map(|&m| m != 0).collect())
        .collect())
}

/// A `[batch, seq]` id tensor from rows of equal length.
pub(crate) fn ids_tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let b = rows.len();
    let s = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}
