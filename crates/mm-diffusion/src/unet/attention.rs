//! diffusers' `Attention` as the UNet's transformer blocks use it: multi-head self- or
//! cross-attention with bias-free `to_q`/`to_k`/`to_v` and a biased `to_out.0`, on burn's
//! fused attention, optionally one chunk of queries at a time.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor};
use mm_core::nn::{merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::precision::linear;

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
    /// IP-Adapter's image key/value projections (cross-attention layers only; absent in the
    /// base model, so they add no tensor names to its checkpoint).
    pub ip_adapter: Option<IpAdapterAttention>,
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
            ip_adapter: None,
            heads,
            upcast,
        }
    }

    /// The number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The inner width (`heads × head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.to_q.weight.lazy_shape().to_vec()[1]
    }

    /// Attends `x` to `context` (to itself when `None`); `chunk` bounds the queries attended
    /// at once (see [`chunked_attention`]). With IP-Adapter layers and `image_tokens` (one
    /// `[batch, tokens, dim]` set per adapter), each adapter's attention of the same queries
    /// to its image tokens is added, times its scale, before `to_out` (diffusers'
    /// `IPAdapterAttnProcessor2_0`).
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<&Tensor<3>>,
        image_tokens: Option<&[Tensor<3>]>,
        chunk: Option<usize>,
    ) -> Tensor<3> {
        let context = context.unwrap_or(&x);
        let q = split_heads(linear(&self.to_q, x.clone()), self.heads);
        let attend = |keys: Tensor<3>, values: Tensor<3>| {
            let k = split_heads(keys, self.heads);
            let v = split_heads(values, self.heads);
            let dtype = q.dtype();
            let out = if self.upcast && dtype != DType::F32 {
                let f32 = |t: Tensor<4>| t.cast(DType::F32);
                chunked_attention(f32(q.clone()), f32(k), f32(v), chunk).cast(dtype)
            } else {
                chunked_attention(q.clone(), k, v, chunk)
            };
            merge_heads(out)
        };
        let mut out = attend(
            linear(&self.to_k, context.clone()),
            linear(&self.to_v, context.clone()),
        );
        if let (Some(ip), Some(tokens)) = (&self.ip_adapter, image_tokens) {
            for (i, tokens) in tokens.iter().enumerate() {
                let scale = ip.scales.get(i).copied().unwrap_or(0.0);
                let (Some(to_k), Some(to_v)) = (ip.to_k_ip.get(i), ip.to_v_ip.get(i)) else {
                    break;
                };
                if scale != 0.0 {
                    let image = attend(linear(to_k, tokens.clone()), linear(to_v, tokens.clone()));
                    out = out + image * scale;
                }
            }
        }
        self.to_out.iter().fold(out, |t, proj| linear(proj, t))
    }
}

/// IP-Adapter's decoupled cross-attention layers of one cross-attention (diffusers'
/// `IPAdapterAttnProcessor2_0`): for each adapter, bias-free key and value projections of its
/// image tokens, and the scale its attention output is added with.
#[derive(Module, Debug)]
pub struct IpAdapterAttention {
    /// Key projection of each adapter's image tokens.
    pub to_k_ip: Vec<Linear>,
    /// Value projection of each adapter's image tokens.
    pub to_v_ip: Vec<Linear>,
    #[module(skip)]
    scales: Vec<f64>,
}

impl IpAdapterAttention {
    /// Randomly initialised projections from `image_dim` to `inner_dim`, one pair per scale.
    pub fn new(image_dim: usize, inner_dim: usize, scales: Vec<f64>, device: &Device) -> Self {
        let proj = || {
            (scales.iter())
                .map(|_| {
                    LinearConfig::new(image_dim, inner_dim)
                        .with_bias(false)
                        .init(device)
                })
                .collect()
        };
        Self {
            to_k_ip: proj(),
            to_v_ip: proj(),
            scales,
        }
    }

    /// Loaded projections, one `to_k_ip`/`to_v_ip` pair and one scale per adapter.
    pub fn from_projections(to_k_ip: Vec<Linear>, to_v_ip: Vec<Linear>, scales: Vec<f64>) -> Self {
        Self {
            to_k_ip,
            to_v_ip,
            scales,
        }
    }

    /// The scale of each adapter.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// Sets the scale of each adapter (0 disables one).
    pub fn set_scales(&mut self, scales: Vec<f64>) {
        self.scales = scales;
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
