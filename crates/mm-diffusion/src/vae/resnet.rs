//! diffusers' ResNet-style building blocks of the KL autoencoder: `ResnetBlock2D` (without the
//! time embedding, as the VAE uses it), `Downsample2D` and `Upsample2D`.

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use mm_core::nn::Activation;

use super::layers::{conv, group_norm, strided_conv, upsample_nearest};

/// Group-norm epsilon of every norm of diffusers' VAE blocks.
pub const VAE_NORM_EPS: f64 = 1e-6;

/// `ResnetBlock2D` without a time embedding: `x + conv2(act(norm2(conv1(act(norm1(x))))))`,
/// the skip through a 1×1 `conv_shortcut` when the width changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// First group norm (over the input width).
    pub norm1: GroupNorm,
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Second group norm.
    pub norm2: GroupNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// 1×1 projection of the skip path when input and output widths differ.
    pub conv_shortcut: Option<Conv2d>,
    #[module(skip)]
    act: Activation,
}

impl ResnetBlock2D {
    /// A randomly initialised block from `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, groups: usize, act: Activation, device: &Device) -> Self {
        Self {
            norm1: group_norm(groups, cin, VAE_NORM_EPS, device),
            conv1: conv(cin, cout, 3, true, device),
            norm2: group_norm(groups, cout, VAE_NORM_EPS, device),
            conv2: conv(cout, cout, 3, true, device),
            conv_shortcut: (cin != cout).then(|| conv(cin, cout, 1, true, device)),
            act,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self
            .conv1
            .forward(self.act.forward(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(self.act.forward(self.norm2.forward(h)));
        let skip = match &self.conv_shortcut {
            Some(shortcut) => shortcut.forward(x),
            None => x,
        };
        skip + h
    }
}

/// `Downsample2D` with a convolution and `padding=0`: pad right and bottom by one, then a 3×3
/// convolution of stride 2.
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The strided convolution.
    pub conv: Conv2d,
}

impl Downsample2D {
    /// A randomly initialised downsampler keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: strided_conv(channels, channels, [0, 0, 1, 1], true, device),
        }
    }

    /// Halves the height and width (which must be even).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour ×2, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The convolution after upsampling.
    pub conv: Conv2d,
}

impl Upsample2D {
    /// A randomly initialised upsampler keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: conv(channels, channels, 3, true, device),
        }
    }

    /// Doubles the height and width.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(upsample_nearest(x, 2))
    }
}
