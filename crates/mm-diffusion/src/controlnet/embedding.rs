//! `ControlNetConditioningEmbedding`: the small convolution stack that brings the control
//! image down to the latents' resolution and the UNet's first width.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, activation};
use mm_core::precision::conv2d;

use crate::vae::layers::{conv, strided_conv};

/// `conv_in`, then per step a 3×3 convolution and a stride-2 3×3 convolution (`blocks`, in
/// pairs), SiLU after each, and the zero-initialised `conv_out`.
#[derive(Module, Debug)]
pub struct ControlNetConditioningEmbedding {
    /// From the image channels to the first width.
    pub conv_in: Conv2d,
    /// `[conv, strided conv]` per step.
    pub blocks: Vec<Conv2d>,
    /// To the UNet's first width.
    pub conv_out: Conv2d,
}

impl ControlNetConditioningEmbedding {
    /// A randomly initialised embedding from `input` image channels through `channels` to
    /// `output` channels.
    pub fn new(input: usize, channels: &[usize], output: usize, device: &Device) -> Self {
        let blocks = channels
            .windows(2)
            .flat_map(|pair| {
                [
                    conv(pair[0], pair[0], 3, true, device),
                    strided_conv(pair[0], pair[1], [1; 4], true, device),
                ]
            })
            .collect();
        let last = channels.last().copied().unwrap_or(input);
        Self {
            conv_in: conv(input, channels[0], 3, true, device),
            blocks,
            conv_out: conv(last, output, 3, true, device),
        }
    }

    /// Embeds a control image `[batch, channels, H, W]` to `[batch, output, H / f, W / f]`.
    pub fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let x = activation::silu(conv2d(&self.conv_in, image));
        let x = (self.blocks.iter()).fold(x, |x, block| activation::silu(conv2d(block, x)));
        conv2d(&self.conv_out, x)
    }
}
