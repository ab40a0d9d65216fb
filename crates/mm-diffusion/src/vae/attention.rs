//! The single-head spatial self-attention of the VAE's middle block (diffusers' `Attention`
//! with a group norm and a residual connection, as built for `UNetMidBlock2D`).

use burn::module::Module;
use burn::nn::{GroupNorm, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{group_norm, scaled_dot_product_attention};
use mm_core::precision::linear;

use super::layers::group_norm_layer;
use super::resnet::VAE_NORM_EPS;

/// Self-attention over the `H × W` positions of a feature map, one head as wide as the
/// channels: `x + to_out(attention(to_q(n), to_k(n), to_v(n)))` with `n = group_norm(x)`.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    /// Group norm of the input.
    pub group_norm: GroupNorm,
    /// Query projection.
    pub to_q: Linear,
    /// Key projection.
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// Output projection (`to_out.0`; diffusers' `to_out.1` is a dropout).
    pub to_out: Vec<Linear>,
}

impl SpatialAttention {
    /// A randomly initialised attention block over `channels`.
    pub fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(channels, channels).init(device);
        Self {
            group_norm: group_norm_layer(groups, channels, VAE_NORM_EPS, device),
            to_q: linear(),
            to_k: linear(),
            to_v: linear(),
            to_out: vec![linear()],
        }
    }

    /// Applies the block to `[batch, channels, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = group_norm(&self.group_norm, x.clone(), None)
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let head = |proj: &Linear| linear(proj, tokens.clone()).unsqueeze_dim::<4>(1);
        let attended = scaled_dot_product_attention(
            head(&self.to_q),
            head(&self.to_k),
            head(&self.to_v),
            None,
            false,
        )
        .squeeze_dim::<3>(1);
        let out = self.to_out.iter().fold(attended, |t, proj| linear(proj, t));
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}
