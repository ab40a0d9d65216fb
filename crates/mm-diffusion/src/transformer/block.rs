//! diffusers' `JointTransformerBlock`: the MMDiT block of SD3 / SD3.5. The image and text
//! streams are normalised and modulated by the conditioning (adaLN-Zero), attend jointly, and
//! each has its own gated feed-forward; SD3.5 medium's dual-attention blocks add an
//! image-only attention, and the last block keeps only the image stream.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use mm_core::nn::layer_norm;

use super::attention::{JointAttention, JointAttentionOptions};
use super::norm::{AdaLayerNormContinuous, AdaLayerNormZero, NORM_EPS, gate, modulate};
use super::rope::Rope;
use crate::unet::{FeedForward, FeedForwardActivation};

/// The context stream's first norm: adaLN-Zero, or (in the last block, whose text output is
/// discarded) a continuous adaptive norm.
#[derive(Module, Debug)]
pub enum ContextNorm {
    /// `AdaLayerNormZero` (six modulation vectors).
    Zero(AdaLayerNormZero),
    /// `AdaLayerNormContinuous` (`context_pre_only`).
    Continuous(AdaLayerNormContinuous),
}

/// How a [`JointTransformerBlock`] is built.
#[derive(Debug, Clone, Copy)]
pub struct JointBlockOptions {
    /// Model width.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// The last block: the text stream is only read (no text output).
    pub context_pre_only: bool,
    /// RMS-normalised queries and keys (SD3.5).
    pub qk_norm: bool,
    /// A second, image-only attention (SD3.5 medium's first 13 blocks).
    pub dual_attention: bool,
}

/// One MMDiT block.
#[derive(Module, Debug)]
pub struct JointTransformerBlock {
    /// The image stream's adaLN-Zero (nine vectors with dual attention).
    pub norm1: AdaLayerNormZero,
    /// The text stream's adaptive norm.
    pub norm1_context: ContextNorm,
    /// The joint attention.
    pub attn: JointAttention,
    /// The image-only attention of dual-attention blocks.
    pub attn2: Option<JointAttention>,
    /// The image feed-forward.
    pub ff: FeedForward,
    /// The text feed-forward.
    pub ff_context: Option<FeedForward>,
}

impl JointTransformerBlock {
    /// A randomly initialised block.
    pub fn new(o: JointBlockOptions, device: &Device) -> Self {
        let attention = |joint| {
            JointAttention::new(
                JointAttentionOptions {
                    dim: o.dim,
                    heads: o.heads,
                    head_dim: o.head_dim,
                    joint,
                    context_pre_only: o.context_pre_only,
                    pre_only: false,
                    qk_norm: o.qk_norm,
                },
                device,
            )
        };
        let ff = || FeedForward::with_activation(o.dim, FeedForwardActivation::GeluTanh, device);
        Self {
            norm1: AdaLayerNormZero::new(o.dim, if o.dual_attention { 9 } else { 6 }, device),
            norm1_context: match o.context_pre_only {
                true => ContextNorm::Continuous(AdaLayerNormContinuous::new(o.dim, o.dim, device)),
                false => ContextNorm::Zero(AdaLayerNormZero::new(o.dim, 6, device)),
            },
            attn: attention(true),
            attn2: o.dual_attention.then(|| attention(false)),
            ff: ff(),
            ff_context: (!o.context_pre_only).then(ff),
        }
    }

    /// Whether the text stream ends here (the block returns no text states).
    pub fn context_pre_only(&self) -> bool {
        matches!(self.norm1_context, ContextNorm::Continuous(_))
    }

    /// Runs the block on the image tokens `x` `[batch, n, dim]` and text tokens `context`
    /// `[batch, m, dim]` with the conditioning `temb` `[batch, dim]`: the new image tokens
    /// and (unless [`context_pre_only`](Self::context_pre_only)) the new text tokens. FLUX's
    /// double-stream blocks pass their rotary embedding (image tokens, then text tokens).
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        temb: &Tensor<2>,
        rope: Option<&Rope>,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        // shift, scale, gate (attention); shift, scale, gate (feed-forward); [the same for
        // the second attention].
        let m = self.norm1.chunks(temb.clone());
        let normed = layer_norm(x.clone(), NORM_EPS);
        let (attn_in, attn2_in) = match &self.attn2 {
            Some(_) => (
                modulate(normed.clone(), &m[0], &m[1]),
                Some(modulate(normed, &m[6], &m[7])),
            ),
            None => (modulate(normed, &m[0], &m[1]), None),
        };
        let (context_in, cm) = match &self.norm1_context {
            ContextNorm::Zero(norm) => {
                let cm = norm.chunks(temb.clone());
                let normed = layer_norm(context.clone(), NORM_EPS);
                (modulate(normed, &cm[0], &cm[1]), Some(cm))
            }
            ContextNorm::Continuous(norm) => (norm.forward(context.clone(), temb.clone()), None),
        };
        let (attn_out, context_out) = self.attn.forward(attn_in, Some(context_in), rope);
        let mut x = x + gate(attn_out, &m[2]);
        if let (Some(attn2), Some(input)) = (&self.attn2, attn2_in) {
            x = x.clone() + gate(attn2.forward(input, None, None).0, &m[8]);
        }
        let ff_in = modulate(layer_norm(x.clone(), NORM_EPS), &m[3], &m[4]);
        let x = x + gate(self.ff.forward(ff_in), &m[5]);
        let context = match (cm, context_out, &self.ff_context) {
            (Some(cm), Some(out), Some(ff)) => {
                let context = context + gate(out, &cm[2]);
                let ff_in = modulate(layer_norm(context.clone(), NORM_EPS), &cm[3], &cm[4]);
                Some(context + gate(ff.forward(ff_in), &cm[5]))
            }
            _ => None,
        };
        (x, context)
    }
}
