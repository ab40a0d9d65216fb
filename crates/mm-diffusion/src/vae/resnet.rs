//! diffusers' ResNet-style building blocks shared by the KL autoencoder and the UNet:
//! `ResnetBlock2D` (with or without the time embedding), `Downsample2D` and `Upsample2D`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use mm_core::nn::{Activation, group_norm};
use mm_core::precision::{conv2d, linear};

use super::layers::{conv, group_norm_layer, strided_conv, upsample_nearest, upsample_nearest_to};

/// Group-norm epsilon of every norm of diffusers' VAE blocks.
pub const VAE_NORM_EPS: f64 = 1e-6;

/// `ResnetBlock2D` (`time_embedding_norm="default"`):
/// `(skip(x) + conv2(act(norm2(conv1(act(norm1(x))) + time_emb_proj(act(temb))))) / s`, the
/// skip through a 1×1 `conv_shortcut` when the width changes. The VAE builds it without the
/// time embedding and with `s = 1`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// First group norm (over the input width).
    pub norm1: GroupNorm,
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Projection of the time embedding added after `conv1` (UNet blocks only).
    pub time_emb_proj: Option<Linear>,
    /// Second group norm.
    pub norm2: GroupNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// 1×1 projection of the skip path when input and output widths differ.
    pub conv_shortcut: Option<Conv2d>,
    #[module(skip)]
    act: Activation,
    #[module(skip)]
    output_scale_factor: f64,
}

/// How a [`ResnetBlock2D`] is built besides its widths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResnetOptions {
    /// Groups of both group norms.
    pub groups: usize,
    /// Epsilon of both group norms.
    pub eps: f64,
    /// The activation.
    pub act: Activation,
    /// Width of the time embedding, `None` for a block without one.
    pub temb_channels: Option<usize>,
    /// The output is divided by this (diffusers' `output_scale_factor`).
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// A randomly initialised VAE block from `cin` to `cout` channels (no time embedding,
    /// epsilon `1e-6`).
    pub fn new(cin: usize, cout: usize, groups: usize, act: Activation, device: &Device) -> Self {
        let options = ResnetOptions {
            groups,
            eps: VAE_NORM_EPS,
            act,
            temb_channels: None,
            output_scale_factor: 1.0,
        };
        Self::with_options(cin, cout, &options, device)
    }

    /// A randomly initialised block from `cin` to `cout` channels.
    pub fn with_options(cin: usize, cout: usize, options: &ResnetOptions, device: &Device) -> Self {
        let ResnetOptions { groups, eps, .. } = *options;
        Self {
            norm1: group_norm_layer(groups, cin, eps, device),
            conv1: conv(cin, cout, 3, true, device),
            time_emb_proj: options
                .temb_channels
                .map(|t| LinearConfig::new(t, cout).init(device)),
            norm2: group_norm_layer(groups, cout, eps, device),
            conv2: conv(cout, cout, 3, true, device),
            conv_shortcut: (cin != cout).then(|| conv(cin, cout, 1, true, device)),
            act: options.act,
            output_scale_factor: options.output_scale_factor,
        }
    }

    /// Applies the block without a time embedding.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with_temb(x, None)
    }

    /// Applies the block; `temb` (`[batch, temb_channels]`, before the activation) is used
    /// when the block has a `time_emb_proj`.
    pub fn forward_with_temb(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = conv2d(
            &self.conv1,
            group_norm(&self.norm1, x.clone(), Some(self.act)),
        );
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = linear(proj, self.act.forward(temb.clone()));
            h = h + t.unsqueeze_dims::<4>(&[2, 3]);
        }
        let h = conv2d(&self.conv2, group_norm(&self.norm2, h, Some(self.act)));
        let skip = match &self.conv_shortcut {
            Some(shortcut) => conv2d(shortcut, x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `Downsample2D` with a convolution: a 3×3 convolution of stride 2, padded by `padding` on
/// every side, or (`padding=0`, as in the VAE) by one on the right and bottom only.
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The strided convolution.
    pub conv: Conv2d,
}

impl Downsample2D {
    /// A randomly initialised VAE downsampler (`padding=0`) keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self::with_padding(channels, 0, device)
    }

    /// A randomly initialised downsampler keeping `channels` with diffusers' `padding`.
    pub fn with_padding(channels: usize, padding: usize, device: &Device) -> Self {
        let p = padding;
        let pad = if p == 0 { [0, 0, 1, 1] } else { [p, p, p, p] };
        Self {
            conv: strided_conv(channels, channels, pad, true, device),
        }
    }

    /// Halves the height and width (rounding as the padding makes it).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(&self.conv, x)
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
        conv2d(&self.conv, upsample_nearest(x, 2))
    }

    /// Upsamples to `size` (`[height, width]`, nearest neighbour as PyTorch's
    /// `F.interpolate(size=...)`) instead of doubling when given; diffusers' UNet passes the
    /// skip connection's size when the input is not a multiple of its overall downscale factor.
    pub fn forward_to(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        match size {
            Some(size) => conv2d(&self.conv, upsample_nearest_to(x, size)),
            None => self.forward(x),
        }
    }
}
