//! The adaptive layer norms of the diffusion transformers: diffusers' `AdaLayerNormZero`
//! (and SD3.5's `SD35AdaLayerNormZeroX`, the same layer with nine chunks) and
//! `AdaLayerNormContinuous`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{Activation, layer_norm};
use mm_core::precision::linear;

/// Epsilon of the transformers' layer norms.
pub const NORM_EPS: f64 = 1e-6;

/// `x · (1 + scale) + shift` with per-sample `[batch, dim]` `shift` and `scale` over the tokens
/// of `x` (`[batch, tokens, dim]`).
pub fn modulate(x: Tensor<3>, shift: &Tensor<2>, scale: &Tensor<2>) -> Tensor<3> {
    x * (scale.clone().unsqueeze_dim::<3>(1) + 1.0) + shift.clone().unsqueeze_dim::<3>(1)
}

/// `x · gate` with a per-sample `[batch, dim]` gate.
pub fn gate(x: Tensor<3>, gate: &Tensor<2>) -> Tensor<3> {
    x * gate.clone().unsqueeze_dim::<3>(1)
}

/// diffusers' `AdaLayerNormZero` without its own embedding: `linear(silu(emb))` cut into
/// `chunks` modulation vectors (shift, scale, gate of the attention, then of the
/// feed-forward; `SD35AdaLayerNormZeroX` adds a shift, scale and gate of the second
/// attention).
#[derive(Module, Debug)]
pub struct AdaLayerNormZero {
    /// `dim → chunks · dim`.
    pub linear: Linear,
}

impl AdaLayerNormZero {
    /// A randomly initialised norm of `dim` features giving `chunks` vectors.
    pub fn new(dim: usize, chunks: usize, device: &Device) -> Self {
        Self {
            linear: LinearConfig::new(dim, chunks * dim).init(device),
        }
    }

    /// The modulation vectors of the conditioning `emb` (`[batch, dim]`), in diffusers' order.
    pub fn chunks(&self, emb: Tensor<2>) -> Vec<Tensor<2>> {
        let out = linear(&self.linear, Activation::Silu.forward(emb));
        // The lazy shape: `dims()` would materialise a quantized weight as a dequantized copy.
        let dim = self.linear.weight.lazy_shape().to_vec()[0];
        let n = out.dims()[1] / dim;
        out.chunk(n, 1)
    }
}

/// diffusers' `AdaLayerNormContinuous` (`elementwise_affine=False`, layer norm):
/// `norm(x) · (1 + scale) + shift` with `[scale, shift] = linear(silu(cond))`.
#[derive(Module, Debug)]
pub struct AdaLayerNormContinuous {
    /// `cond_dim → 2 · dim`.
    pub linear: Linear,
}

impl AdaLayerNormContinuous {
    /// A randomly initialised norm of `dim` features conditioned on `cond_dim`.
    pub fn new(dim: usize, cond_dim: usize, device: &Device) -> Self {
        Self {
            linear: LinearConfig::new(cond_dim, 2 * dim).init(device),
        }
    }

    /// Normalises `x` (`[batch, tokens, dim]`) and modulates it by `cond` (`[batch, cond_dim]`).
    pub fn forward(&self, x: Tensor<3>, cond: Tensor<2>) -> Tensor<3> {
        let emb = linear(&self.linear, Activation::Silu.forward(cond));
        let dim = emb.dims()[1] / 2;
        let (scale, shift) = (emb.clone().narrow(1, 0, dim), emb.narrow(1, dim, dim));
        modulate(layer_norm(x, NORM_EPS), &shift, &scale)
    }
}
