//! Progress reporting and cancellation: a callback per step, with an optional cheap preview.

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use super::prompt::ModelFamily;
use crate::Result;
use crate::vae::{Autoencoder, AutoencoderTiny};

/// What the progress callback tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next step.
    Continue,
    /// Stop: the pipeline returns [`Error::Cancelled`](crate::Error::Cancelled).
    Cancel,
}

/// The linear map from Stable Diffusion 1.x / 2.x latents (4 channels, diffusion scale) to
/// RGB in about `[-1, 1]` that is used for live previews (rows: latent channels, columns:
/// R, G, B).
pub const SD_LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// The linear map from Stable Diffusion 3 latents (16 channels, diffusion scale) to RGB in
/// about `[-1, 1]` (ComfyUI's SD3 `latent_rgb_factors`), added to
/// [`SD3_LATENT_RGB_BIAS`].
pub const SD3_LATENT_RGB_FACTORS: [[f32; 3]; 16] = [
    [-0.0922, -0.0175, 0.0749],
    [0.0311, 0.0633, 0.0954],
    [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496],
    [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427],
    [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268],
    [0.0922, 0.0988, 0.0951],
    [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895],
    [-0.0069, -0.0030, -0.0810],
    [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
];

/// The RGB offset of the SD3 preview map.
pub const SD3_LATENT_RGB_BIAS: [f32; 3] = [0.2394, 0.2135, 0.1925];

/// The linear map from FLUX.1 latents (16 channels, diffusion scale, unpacked) to RGB in
/// about `[-1, 1]` (ComfyUI's Flux `latent_rgb_factors`), added to [`FLUX_LATENT_RGB_BIAS`].
pub const FLUX_LATENT_RGB_FACTORS: [[f32; 3]; 16] = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
];

/// The RGB offset of the FLUX.1 preview map.
pub const FLUX_LATENT_RGB_BIAS: [f32; 3] = [-0.0329, -0.0718, -0.0851];

/// How previews are made.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Previewer<'a> {
    /// The family's linear map ([`linear_preview`]): one pixel per latent, nearly free.
    Linear(ModelFamily),
    /// A tiny autoencoder (TAESD) decoding the latents at full size.
    Tiny(&'a AutoencoderTiny),
}

/// The state of the loop after a model evaluation, given to the progress callback.
///
/// `step` / `total` count inference steps as diffusers' progress bar does (the steps asked
/// for, after img2img's strength cut); `evaluation` / `evaluations` count the UNet calls,
/// which are more where a scheduler evaluates the model twice per step (Heun) or adds
/// warm-up evaluations (PNDM's first step): Heun with 5 steps makes 9 evaluations.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Inference steps done (1 after the first step).
    pub step: usize,
    /// Inference steps in this run.
    pub total: usize,
    /// Model evaluations done (1 after the first).
    pub evaluation: usize,
    /// Model evaluations in this run (the scheduler's timesteps).
    pub evaluations: usize,
    /// The timestep just denoised.
    pub timestep: f64,
    /// The latents after this step `[batch, 4, h, w]` (diffusion scale).
    pub latents: &'a Tensor<4>,
    pub(crate) previewer: Previewer<'a>,
}

impl StepInfo<'_> {
    /// A preview of the current latents, one image per batch entry: decoded by the attached
    /// [`AutoencoderTiny`] (see `StableDiffusion::with_preview_decoder`), else the linear
    /// latent → RGB approximation (at latent resolution, for 4-channel SD latents). Only
    /// computed when called.
    pub fn preview(&self) -> Result<Vec<RgbImage>> {
        let rgb = match self.previewer {
            Previewer::Tiny(taesd) => {
                taesd.decode_latents(taesd.unscale_from_diffusion(self.latents.clone()))?
            }
            Previewer::Linear(family) => linear_preview(self.latents.clone(), family)?,
        };
        Ok(mm_core::image::tensor_to_images((rgb + 1.0) / 2.0)?)
    }
}

/// Counts inference steps the way diffusers' pipelines update their progress bar: with
/// `warmup = evaluations - steps · order`, evaluation `i` (0-based) completes a step when it is
/// the last one or when `i + 1 > warmup` and `(i + 1) % order == 0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepCounter {
    evaluations: usize,
    warmup: usize,
    order: usize,
    done: usize,
}

impl StepCounter {
    pub(crate) fn new(evaluations: usize, steps: usize, order: usize) -> Self {
        let order = order.max(1);
        Self {
            evaluations,
            warmup: evaluations.saturating_sub(steps.saturating_mul(order)),
            order,
            done: 0,
        }
    }

    /// Records evaluation `i` (0-based); returns the steps done after it.
    pub(crate) fn after_evaluation(&mut self, i: usize) -> usize {
        if i + 1 == self.evaluations || (i + 1 > self.warmup && (i + 1).is_multiple_of(self.order))
        {
            self.done += 1;
        }
        self.done
    }
}

/// Latents to RGB `[b, 3, h, w]` in about `[-1, 1]`, one pixel per latent, with the linear
/// map of the model family: `[b, 4, h, w]` (Stable Diffusion 1.x / 2.x, SDXL) with
/// [`SD_LATENT_RGB_FACTORS`], `[b, 16, h, w]` with [`SD3_LATENT_RGB_FACTORS`] and
/// [`SD3_LATENT_RGB_BIAS`] (SD3) or [`FLUX_LATENT_RGB_FACTORS`] and [`FLUX_LATENT_RGB_BIAS`]
/// (FLUX.1, unpacked latents). Latents of another channel count are an error.
pub fn linear_preview(latents: Tensor<4>, family: ModelFamily) -> Result<Tensor<4>> {
    let [b, c, h, w] = latents.dims();
    let (factors, bias): (Vec<f32>, [f32; 3]) = match family {
        ModelFamily::StableDiffusion | ModelFamily::StableDiffusionXl => {
            (SD_LATENT_RGB_FACTORS.concat(), [0.0; 3])
        }
        ModelFamily::StableDiffusion3 => (SD3_LATENT_RGB_FACTORS.concat(), SD3_LATENT_RGB_BIAS),
        ModelFamily::Flux => (FLUX_LATENT_RGB_FACTORS.concat(), FLUX_LATENT_RGB_BIAS),
    };
    crate::check::check_channels("latents", &latents, factors.len() / 3)?;
    let device = latents.device();
    let factors = Tensor::<2>::from_data(TensorData::new(factors, [c, 3]), &device);
    let bias = Tensor::<1>::from_floats(bias, &device).reshape([1, 1, 3]);
    let flat = latents.reshape([b, c, h * w]).swap_dims(1, 2); // [b, hw, c]
    let rgb = flat.matmul(factors.unsqueeze::<3>().repeat_dim(0, b)) + bias; // [b, hw, 3]
    Ok(rgb.swap_dims(1, 2).reshape([b, 3, h, w]))
}

/// The progress callback: called after every step; return [`Flow::Cancel`] to stop.
pub type Progress<'a> = dyn FnMut(&StepInfo<'_>) -> Flow + 'a;
