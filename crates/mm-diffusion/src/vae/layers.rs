//! Layers shared by the autoencoders: convolutions with PyTorch's padding conventions, nearest
//! upsampling, and a layer enum that mirrors an `nn.Sequential` of mixed layers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use mm_core::nn::group_norm;
use mm_core::precision::conv2d;

/// `nn.Conv2d(cin, cout, kernel, padding=kernel // 2)` (stride 1).
pub(crate) fn conv(cin: usize, cout: usize, kernel: usize, bias: bool, device: &Device) -> Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .init(device)
}

/// `nn.Conv2d(cin, cout, 3, stride=2, ...)` padded `(top, left, bottom, right)`.
pub(crate) fn strided_conv(
    cin: usize,
    cout: usize,
    padding: [usize; 4],
    bias: bool,
    device: &Device,
) -> Conv2d {
    let [t, l, b, r] = padding;
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
        .with_bias(bias)
        .init(device)
}

/// `nn.GroupNorm(groups, channels, eps)` with affine parameters.
pub(crate) fn group_norm_layer(
    groups: usize,
    channels: usize,
    eps: f64,
    device: &Device,
) -> GroupNorm {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device)
}

/// Nearest-neighbour upsampling by an integer factor (`nn.Upsample(scale_factor=s,
/// mode="nearest")`): every pixel repeated `s × s` times.
pub fn upsample_nearest(x: Tensor<4>, scale: usize) -> Tensor<4> {
    if scale == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, scale, w, scale])
        .reshape([b, c, h * scale, w * scale])
}

/// Nearest-neighbour resizing to `[height, width]` as PyTorch's `F.interpolate(x, size=...,
/// mode="nearest")`: output row `i` reads input row `floor(i · in / out)` (the scale in f32).
pub fn upsample_nearest_to(x: Tensor<4>, [height, width]: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if height == 2 * h && width == 2 * w {
        return upsample_nearest(x, 2);
    }
    let device = x.device();
    let indices = |from: usize, to: usize| {
        let scale = from as f32 / to as f32;
        let idx: Vec<i64> = (0..to)
            .map(|i| ((i as f32 * scale).floor() as i64).min(from as i64 - 1))
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(idx, [to]), &device)
    };
    x.select(2, indices(h, height)).select(3, indices(w, width))
}

/// A parameter-free nearest-neighbour upsampling layer.
#[derive(Module, Debug)]
pub struct Upsample {
    /// The integer scale factor.
    pub scale: usize,
}

/// One entry of an `nn.Sequential` of mixed layers. Enum variants add nothing to the tensor
/// names, so a `Vec<Layer>` has the checkpoint's keys: `layers.3.conv.0.weight`, with the
/// parameter-free entries (ReLU, upsampling) keeping their indices.
#[derive(Module, Debug)]
pub enum Layer {
    /// A convolution.
    Conv(Conv2d),
    /// A group normalisation.
    Norm(GroupNorm),
    /// A ReLU.
    Relu(Relu),
    /// Nearest-neighbour upsampling.
    Upsample(Upsample),
    /// A TAESD residual block.
    Block(super::tiny::TinyBlock),
}

impl Layer {
    /// Applies the layer.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Layer::Conv(conv) => conv2d(conv, x),
            Layer::Norm(norm) => group_norm(norm, x, None),
            Layer::Relu(_) => activation::relu(x),
            Layer::Upsample(up) => upsample_nearest(x, up.scale),
            Layer::Block(block) => block.forward(x),
        }
    }
}

/// Runs the layers in order, like `nn.Sequential.forward`.
pub fn sequential(layers: &[Layer], x: Tensor<4>) -> Tensor<4> {
    layers.iter().fold(x, |x, layer| layer.forward(x))
}
