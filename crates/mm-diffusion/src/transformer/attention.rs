//! diffusers' `Attention` with `JointAttnProcessor2_0`: the joint attention of the MMDiT
//! blocks, where the image tokens and the text tokens are projected by their own layers and
//! attend together, and the image-only attention of SD3.5's dual-attention blocks.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::precision::linear;

use super::norm::NORM_EPS;
use super::rope::Rope;

/// Queries, keys and values of one token stream, per head (`[batch, heads, tokens, head_dim]`).
struct Qkv {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
}

/// Multi-head attention over the image tokens and, when it has the `add_*` layers, the text
/// tokens together.
#[derive(Module, Debug)]
pub struct JointAttention {
    /// Image query projection.
    pub to_q: Linear,
    /// Image key projection.
    pub to_k: Linear,
    /// Image value projection.
    pub to_v: Linear,
    /// Image output projection (`to_out.0`; `to_out.1` is a dropout).
    pub to_out: Vec<Linear>,
    /// RMS norm of the image queries per head (`qk_norm: "rms_norm"`).
    pub norm_q: Option<RmsNorm>,
    /// RMS norm of the image keys per head.
    pub norm_k: Option<RmsNorm>,
    /// Text query projection (joint attention only).
    pub add_q_proj: Option<Linear>,
    /// Text key projection.
    pub add_k_proj: Option<Linear>,
    /// Text value projection.
    pub add_v_proj: Option<Linear>,
    /// Text output projection (absent in the last block, whose text output is unused).
    pub to_add_out: Option<Linear>,
    /// RMS norm of the text queries per head.
    pub norm_added_q: Option<RmsNorm>,
    /// RMS norm of the text keys per head.
    pub norm_added_k: Option<RmsNorm>,
    #[module(skip)]
    heads: usize,
}

/// How a [`JointAttention`] is built.
#[derive(Debug, Clone, Copy)]
pub struct JointAttentionOptions {
    /// Model width.
    pub dim: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Whether the text tokens take part (the `add_*` layers).
    pub joint: bool,
    /// Whether the text tokens' output is discarded (no `to_add_out`).
    pub context_pre_only: bool,
    /// Whether the output projection is left to the caller (no `to_out`: FLUX's single-stream
    /// blocks).
    pub pre_only: bool,
    /// RMS-normalised queries and keys.
    pub qk_norm: bool,
}

impl JointAttention {
    /// A randomly initialised attention.
    pub fn new(o: JointAttentionOptions, device: &Device) -> Self {
        let inner = o.heads * o.head_dim;
        let proj = |from: usize, to: usize| LinearConfig::new(from, to).init(device);
        let norm = || {
            o.qk_norm.then(|| {
                RmsNormConfig::new(o.head_dim)
                    .with_epsilon(NORM_EPS)
                    .init(device)
            })
        };
        let joint = |make: &dyn Fn() -> Linear| o.joint.then(make);
        Self {
            to_q: proj(o.dim, inner),
            to_k: proj(o.dim, inner),
            to_v: proj(o.dim, inner),
            to_out: if o.pre_only {
                Vec::new()
            } else {
                vec![proj(inner, o.dim)]
            },
            norm_q: norm(),
            norm_k: norm(),
            add_q_proj: joint(&|| proj(o.dim, inner)),
            add_k_proj: joint(&|| proj(o.dim, inner)),
            add_v_proj: joint(&|| proj(o.dim, inner)),
            to_add_out: joint(&|| proj(inner, o.dim)).filter(|_| !o.context_pre_only),
            norm_added_q: norm().filter(|_| o.joint),
            norm_added_k: norm().filter(|_| o.joint),
            heads: o.heads,
        }
    }

    /// Projects one stream to per-head queries, keys and values, normalising the queries and
    /// keys when the model has qk norms.
    fn qkv(
        &self,
        x: Tensor<3>,
        [q, k, v]: [&Linear; 3],
        [norm_q, norm_k]: [&Option<RmsNorm>; 2],
    ) -> Qkv {
        let heads = |layer: &Linear| split_heads(linear(layer, x.clone()), self.heads);
        let norm = |t: Tensor<4>, n: &Option<RmsNorm>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        Qkv {
            q: norm(heads(q), norm_q),
            k: norm(heads(k), norm_k),
            v: heads(v),
        }
    }

    /// Attends the image tokens `x` (`[batch, n, dim]`) together with the text tokens
    /// `context` (`[batch, m, dim]`; `None` for an image-only attention): the image output
    /// and, unless the text output is discarded (or there is no text), the text output.
    /// `rope` (FLUX) rotates the normalised queries and keys of the image tokens followed by
    /// the text tokens.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        rope: Option<&Rope>,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let n = x.dims()[1];
        let image = self.qkv(
            x,
            [&self.to_q, &self.to_k, &self.to_v],
            [&self.norm_q, &self.norm_k],
        );
        let added = (self.add_q_proj.as_ref())
            .zip(self.add_k_proj.as_ref())
            .zip(self.add_v_proj.as_ref());
        let Qkv { q, k, v } = match (context, added) {
            (Some(context), Some(((q, k), v))) => {
                let text = self.qkv(context, [q, k, v], [&self.norm_added_q, &self.norm_added_k]);
                let cat = |a: Tensor<4>, b: Tensor<4>| Tensor::cat(vec![a, b], 2);
                Qkv {
                    q: cat(image.q, text.q),
                    k: cat(image.k, text.k),
                    v: cat(image.v, text.v),
                }
            }
            _ => image,
        };
        let (q, k) = match rope {
            Some(rope) => (rope.apply(q), rope.apply(k)),
            None => (q, k),
        };
        let out = merge_heads(scaled_dot_product_attention(q, k, v, None, false));
        let total = out.dims()[1];
        let image_out = self
            .to_out
            .iter()
            .fold(out.clone().narrow(1, 0, n), |t, proj| linear(proj, t));
        let text_out = match (&self.to_add_out, total > n) {
            (Some(proj), true) => Some(linear(proj, out.narrow(1, n, total - n))),
            _ => None,
        };
        (image_out, text_out)
    }
}
