//! The pre-norm transformer encoder shared by CLIP and SigLIP (both towers): tensor names
//! `layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor};
use mm_core::config::{Checks, encoder_parameters};
use mm_core::nn::{Activation, merge_heads, scaled_dot_product_attention, split_heads};
use mm_core::nn::{LayerNorm, LayerNormConfig};
use mm_core::precision::linear;

use crate::Result;

/// The [`EncoderDims`] of a tower config whose fields carry the transformers names
/// (`hidden_size`, `intermediate_size`, `num_attention_heads`, `num_hidden_layers`,
/// `layer_norm_eps`, `hidden_act`): CLIP's, SigLIP's and ViT's.
macro_rules! encoder_dims {
    ($config:expr) => {
        $crate::encoder::EncoderDims {
            hidden_size: $config.hidden_size,
            intermediate_size: $config.intermediate_size,
            num_heads: $config.num_attention_heads,
            num_layers: $config.num_hidden_layers,
            layer_norm_eps: $config.layer_norm_eps,
            activation: $config.hidden_act,
        }
    };
}
pub(crate) use encoder_dims;

/// Sizes of an encoder, read from a tower's config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderDims {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of attention heads.
    pub num_heads: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub activation: Activation,
}

impl EncoderDims {
    /// Checks the sizes of the tower `model` (its config class name) and estimates its weights
    /// (the encoder stack plus `other_parameters`: embeddings, heads) against the memory limit.
    pub(crate) fn check(&self, model: &str, other_parameters: f64) -> Result<()> {
        Checks::new(model)
            .positive(&[
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
            ])?
            .heads("hidden_size", self.hidden_size, self.num_heads)?
            .epsilon("layer_norm_eps", self.layer_norm_eps)?
            .parameters(
                encoder_parameters(self.num_layers, self.hidden_size, self.intermediate_size)
                    + other_parameters,
            )?;
        Ok(())
    }

    /// [`check`](Self::check) for a vision tower cutting `image_size` images into
    /// `patch_size` patches of `channels` channels: `other_parameters` plus the patch
    /// embedding and one position per patch are counted.
    pub(crate) fn check_vision(
        &self,
        model: &str,
        (image_size, patch_size, channels): (usize, usize, usize),
        other_parameters: f64,
    ) -> Result<()> {
        Checks::new(model)
            .positive(&[("patch_size", patch_size), ("num_channels", channels)])?
            .require(image_size >= patch_size, || {
                format!("image_size ({image_size}) is smaller than patch_size ({patch_size})")
            })?;
        let (d, p) = (self.hidden_size as f64, patch_size as f64);
        let patches = (image_size as f64 / p).powi(2);
        self.check(
            model,
            other_parameters + d * (channels as f64 * p * p + patches + 1.0),
        )
    }
}

/// Multi-head self-attention with separate q/k/v projections.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    num_heads: usize,
}

impl SelfAttention {
    fn new(dims: &EncoderDims, device: &Device) -> Self {
        let d = dims.hidden_size;
        Self {
            q_proj: LinearConfig::new(d, d).init(device),
            k_proj: LinearConfig::new(d, d).init(device),
            v_proj: LinearConfig::new(d, d).init(device),
            out_proj: LinearConfig::new(d, d).init(device),
            num_heads: dims.num_heads,
        }
    }

    /// `x`: `[batch, seq, hidden]`; `key_padding`: `[batch, seq]`, true = padding.
    pub fn forward(
        &self,
        x: Tensor<3>,
        key_padding: Option<Tensor<2, Bool>>,
        causal: bool,
    ) -> Tensor<3> {
        let h = self.num_heads;
        let q = split_heads(linear(&self.q_proj, x.clone()), h);
        let k = split_heads(linear(&self.k_proj, x.clone()), h);
        let v = split_heads(linear(&self.v_proj, x), h);
        let out = scaled_dot_product_attention(q, k, v, key_padding, causal);
        linear(&self.out_proj, merge_heads(out))
    }
}

/// The two-layer MLP of an encoder layer.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Up projection.
    pub fc1: Linear,
    /// Down projection.
    pub fc2: Linear,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    /// An MLP `in → hidden → in`.
    pub fn new(d_in: usize, d_hidden: usize, activation: Activation, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(d_in, d_hidden).init(device),
            fc2: LinearConfig::new(d_hidden, d_in).init(device),
            activation,
        }
    }

    /// Applies the MLP.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(&self.fc2, self.activation.forward(linear(&self.fc1, x)))
    }
}

/// One pre-norm encoder layer.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// Self-attention.
    pub self_attn: SelfAttention,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl EncoderLayer {
    fn new(dims: &EncoderDims, device: &Device) -> Self {
        let norm = LayerNormConfig::new(dims.hidden_size).with_epsilon(dims.layer_norm_eps);
        Self {
            layer_norm1: norm.init(device),
            self_attn: SelfAttention::new(dims, device),
            layer_norm2: norm.init(device),
            mlp: Mlp::new(
                dims.hidden_size,
                dims.intermediate_size,
                dims.activation,
                device,
            ),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        key_padding: Option<Tensor<2, Bool>>,
        causal: bool,
    ) -> Tensor<3> {
        let attn = self
            .self_attn
            .forward(self.layer_norm1.forward(x.clone()), key_padding, causal);
        let x = x + attn;
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// A stack of encoder layers (`encoder.layers.N`).
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers.
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// A randomly initialised encoder.
    pub fn new(dims: &EncoderDims, device: &Device) -> Self {
        Self {
            layers: (0..dims.num_layers)
                .map(|_| EncoderLayer::new(dims, device))
                .collect(),
        }
    }

    /// Runs every layer. Returns the hidden states — the input first, then each layer's output
    /// (`num_layers + 1` entries, as `output_hidden_states=True` in transformers) — and the last
    /// of them.
    pub fn forward(
        &self,
        x: Tensor<3>,
        key_padding: Option<Tensor<2, Bool>>,
        causal: bool,
    ) -> (Vec<Tensor<3>>, Tensor<3>) {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let mut h = x;
        for layer in &self.layers {
            states.push(h.clone());
            h = layer.forward(h, key_padding.clone(), causal);
        }
        states.push(h.clone());
        (states, h)
    }
}
