//! [`Denoiser`]: what the sampling loop needs of a diffusion model.

use burn::tensor::Tensor;

use crate::Result;
use crate::unet::UNet2DConditionModel;

/// A noise-prediction network conditioned on text, as the Stable Diffusion pipelines call it
/// (`UNet2DConditionModel`, or any model with the same contract).
pub trait Denoiser {
    /// Channels of the sample it takes: the latent channels (4), or 9 for an inpainting
    /// model (latents, mask, masked-image latents).
    fn in_channels(&self) -> usize;

    /// The latent side length it was trained at (`sample_size` of the UNet config), which
    /// sets the default image size (× the VAE's downscale factor).
    fn sample_size(&self) -> usize;

    /// The model output for `sample` `[batch, in_channels, h, w]` at `timestep` (the same for
    /// the whole batch) with text conditioning `context` `[batch, tokens, dim]`: the noise,
    /// `v` or the clean sample, whichever the scheduler's `prediction_type` says.
    fn predict(&self, sample: Tensor<4>, timestep: f64, context: Tensor<3>) -> Result<Tensor<4>>;

    /// An estimate (a lower bound) of the activation bytes one [`predict`](Self::predict)
    /// call on a `[batch, in_channels, height, width]` sample needs, which the pipelines check
    /// against [`mm_core::limits::memory_limit`] before they start. `0` (the default): unknown.
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        let _ = (batch, height, width);
        0
    }
}

impl Denoiser for UNet2DConditionModel {
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }

    /// The config's `sample_size` (the first entry of a `[height, width]` pair; 64, Stable
    /// Diffusion 1.x's, when absent).
    fn sample_size(&self) -> usize {
        let size = &self.config().sample_size;
        size.as_u64()
            .or_else(|| size.get(0).and_then(serde_json::Value::as_u64))
            .map_or(64, |s| s as usize)
    }

    fn predict(&self, sample: Tensor<4>, timestep: f64, context: Tensor<3>) -> Result<Tensor<4>> {
        let t = Tensor::<1>::from_floats([timestep as f32], &sample.device());
        self.forward(sample, t, context)
    }

    /// About 16 f32 feature maps of the first level's width at the latent resolution: the
    /// skip connections the down path keeps (≈ 5 such maps for SD's channel ladder) and the
    /// transformer's feed-forward (8 maps of GEGLU) with its input and output.
    fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        let channels = self
            .config()
            .block_out_channels
            .first()
            .copied()
            .unwrap_or(0);
        mm_core::limits::tensor_bytes(&[16, batch, channels, height, width], 4)
    }
}
