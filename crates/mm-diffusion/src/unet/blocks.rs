//! The UNet's resolution levels: down blocks (`CrossAttnDownBlock2D`, `DownBlock2D`), the
//! middle block (`UNetMidBlock2DCrossAttn`) and up blocks (`CrossAttnUpBlock2D`,
//! `UpBlock2D`). A block without attention is the same struct with no `attentions`, which
//! adds no tensor names.

use burn::module::Module;
use burn::tensor::Tensor;

use super::transformer::{CrossAttnContext, Transformer2DModel};
use crate::vae::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// A down block: ResNet blocks (each followed by a transformer in `CrossAttnDownBlock2D`),
/// then a strided-convolution downsampler except at the lowest resolution.
#[derive(Module, Debug)]
pub struct DownBlock2D {
    /// The ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer per ResNet block (`CrossAttnDownBlock2D`), or none (`DownBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// The downsampler (`downsamplers.0`).
    pub downsamplers: Option<Vec<Downsample2D>>,
}

/// `CrossAttnDownBlock2D` is a [`DownBlock2D`] with attentions.
pub type CrossAttnDownBlock2D = DownBlock2D;

impl DownBlock2D {
    /// Applies the block; returns the output and the skip connections it adds (one per
    /// ResNet block, plus the downsampled output).
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        ctx: &CrossAttnContext,
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        let mut x = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward_with_temb(x, Some(temb));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, ctx);
            }
            skips.push(x.clone());
        }
        for down in self.downsamplers.iter().flatten() {
            x = down.forward(x);
            skips.push(x.clone());
        }
        (x, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: ResNet, then (transformer, ResNet) pairs.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    /// The ResNet blocks (one more than the transformers).
    pub resnets: Vec<ResnetBlock2D>,
    /// The transformers.
    pub attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, ctx: &CrossAttnContext) -> Tensor<4> {
        let mut resnets = self.resnets.iter();
        let mut x = match resnets.next() {
            Some(first) => first.forward_with_temb(x, Some(temb)),
            None => x,
        };
        for (attention, resnet) in self.attentions.iter().zip(resnets) {
            x = attention.forward(x, ctx);
            x = resnet.forward_with_temb(x, Some(temb));
        }
        x
    }
}

/// An up block: ResNet blocks on the input concatenated with a skip connection (each
/// followed by a transformer in `CrossAttnUpBlock2D`), then an upsampler except at the full
/// resolution.
#[derive(Module, Debug)]
pub struct UpBlock2D {
    /// The ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer per ResNet block (`CrossAttnUpBlock2D`), or none (`UpBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// The upsampler (`upsamplers.0`).
    pub upsamplers: Option<Vec<Upsample2D>>,
}

/// `CrossAttnUpBlock2D` is an [`UpBlock2D`] with attentions.
pub type CrossAttnUpBlock2D = UpBlock2D;

impl UpBlock2D {
    /// Applies the block, consuming skip connections from the end of `skips` (one per ResNet
    /// block). `upsample_size` is the size to upsample to instead of doubling.
    pub fn forward(
        &self,
        x: Tensor<4>,
        skips: &mut Vec<Tensor<4>>,
        temb: &Tensor<2>,
        ctx: &CrossAttnContext,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<4> {
        let mut x = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            if let Some(skip) = skips.pop() {
                x = Tensor::cat(vec![x, skip], 1);
            }
            x = resnet.forward_with_temb(x, Some(temb));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, ctx);
            }
        }
        for up in self.upsamplers.iter().flatten() {
            x = up.forward_to(x, upsample_size);
        }
        x
    }
}
