//! diffusers' `Attention` as the UNet's transformer blocks use it: multi-head self- or
//! cross-attention with bias-free `to_q`/`to_k`/`to_v` and a biased `to_out.0`, on burn's
//! fused attention, optionally one chunk of queries at a time.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor};
use mm_core::nn::{merge_heads, scaled_dot_product_attention, split_heads};

/// Multi-head attention of `[batch, tokens, query_dim]` queries over a context (itself for
/// self-attention).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection (no bias).
    pub to_q: Linear,
    /// Key projection from the context (no bias).
    pub to_k: Linear,
    /// Value projection from the context (no bias).
    pub to_v: Linear,
    /// Output projection (`to_out.0`; diffusers' `to_out.1` is a dropout).
    pub to_out: Vec<Linear>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    upcast: bool,
}

impl Attention {
    /// A randomly initialised attention of `heads × head_dim` inner width; `context_dim` is
    /// the width of the keys' and values' source (`query_dim` for self-attention).
    /// `upcast` runs the attention in f32 when the weights are half precision.
    pub fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        upcast: bool,
        device: &Device,
    ) -> Self {
        let inner = heads * head_dim;
        let proj = |from: usize| LinearConfig::new(from, inner).with_bias(false).init(device);
        Self {
            to_q: proj(query_dim),
            to_k: proj(context_dim),
            to_v: proj(context_dim),
            to_out: vec![LinearConfig::new(inner, query_dim).init(device)],
            heads,
            upcast,
        }
    }

    /// The number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Attends `x` to `context` (to itself when `None`); `chunk` bounds the queries attended
    /// at once (see [`chunked_attention`]).
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>, chunk: Option<usize>) -> Tensor<3> {
        let context = context.unwrap_or(&x);
        let q = split_heads(self.to_q.forward(x.clone()), self.heads);
        let k = split_heads(self.to_k.forward(context.clone()), self.heads);
        let v = split_heads(self.to_v.forward(context.clone()), self.heads);
        let dtype = q.dtype();
        let out = if self.upcast && dtype != DType::F32 {
            chunked_attention(q.cast(DType::F32), k.cast(DType::F32), v.cast(DType::F32), chunk)
                .cast(dtype)
        } else {
            chunked_attention(q, k, v, chunk)
        };
        let out = merge_heads(out);
        self.to_out.iter().fold(out, |t, proj| proj.forward(t))
    }
}

/// Scaled dot-product attention of `[batch, heads, seq_q, head_dim]` queries, `chunk` queries
/// at a time when given (and smaller than `seq_q`): the `[batch, heads, chunk, seq_k]` scores
/// are the largest intermediate, instead of `[batch, heads, seq_q, seq_k]`. Each query's
/// result is independent of the others, so chunking changes nothing but memory use.
pub fn chunked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: Option<usize>,
) -> Tensor<4> {
    let seq = q.dims()[2];
    match chunk {
        Some(size) if size > 0 && size < seq => {
            let parts = (0..seq)
                .step_by(size)
                .map(|start| {
                    let q = q.clone().narrow(2, start, size.min(seq - start));
                    scaled_dot_product_attention(q, k.clone(), v.clone(), None, false)
                })
                .collect();
            Tensor::cat(parts, 2)
        }
        _ => scaled_dot_product_attention(q, k, v, None, false),
    }
}
