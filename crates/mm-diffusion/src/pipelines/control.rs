//! ControlNet guidance of the pipelines: the control inputs of a call ([`ControlInput`]), their
//! preparation as diffusers' ControlNet pipelines do it, and the residuals of each step.

use burn::tensor::{Device, Tensor};
use image::RgbImage;
use mm_core::processor::{Resample, resize};

use super::denoiser::Conditioning;
use crate::check::check_finite;
use crate::controlnet::{ControlNetModel, ControlNetOutput};
use crate::unet::UNetInput;
use crate::{Error, Result};

/// A control image: a picture (resized to the generation size with Lanczos, as diffusers'
/// control image processor does with PIL images) or a tensor `[1 or batch, 3, H, W]` in
/// `[0, 1]` of exactly the generation size.
#[derive(Debug, Clone)]
pub enum ControlImage {
    /// An RGB picture (an edge map from [`mm_core::image::canny`], a depth map, …).
    Image(RgbImage),
    /// Pixels in `[0, 1]`.
    Tensor(Box<Tensor<4>>),
}

impl From<RgbImage> for ControlImage {
    fn from(image: RgbImage) -> Self {
        Self::Image(image)
    }
}

impl From<Tensor<4>> for ControlImage {
    fn from(pixels: Tensor<4>) -> Self {
        Self::Tensor(Box::new(pixels))
    }
}

impl ControlImage {
    /// The image's `(height, width)` rounded down to multiples of `factor` (diffusers'
    /// `get_default_height_width`): the size a text-to-image call makes when none is given.
    pub(crate) fn default_size(&self, factor: usize) -> (usize, usize) {
        let (h, w) = match self {
            Self::Image(image) => (image.height() as usize, image.width() as usize),
            Self::Tensor(t) => (t.dims()[2], t.dims()[3]),
        };
        (h - h % factor, w - w % factor)
    }

    /// `[1 or n, 3, height, width]` pixels in `[0, 1]`.
    fn pixels(&self, (height, width): (usize, usize), device: &Device) -> Result<Tensor<4>> {
        match self {
            Self::Image(image) => {
                let resized = resize(image, height as u32, width as u32, Resample::Lanczos)?;
                Ok(mm_core::image::image_to_tensor(&resized, device).unsqueeze::<4>())
            }
            Self::Tensor(t) => {
                let [_, c, h, w] = t.dims();
                if c != 3 || (h, w) != (height, width) {
                    return Err(Error::Shape {
                        what: "control image",
                        expected: format!(
                            "[1 or batch, 3, {height}, {width}] (the generation size; give an \
                             RgbImage to have it resized)"
                        ),
                        got: t.dims().to_vec(),
                    });
                }
                check_finite("control image", t)?;
                Ok((**t).clone())
            }
        }
    }
}

/// One ControlNet's input for a call: its control image, `controlnet_conditioning_scale` and
/// the fraction of the steps it acts on (`control_guidance_start` / `control_guidance_end`).
#[derive(Debug, Clone)]
pub struct ControlInput {
    /// The control image.
    pub image: ControlImage,
    /// The residuals' factor (default: the pipeline's — 1.0 for text-to-image, 0.8 for
    /// img2img, 0.5 for SD inpainting, 1.0 for SDXL inpainting, as in diffusers).
    pub conditioning_scale: Option<f64>,
    /// The fraction of the steps after which it starts acting (default 0).
    pub guidance_start: f64,
    /// The fraction of the steps after which it stops acting (default 1).
    pub guidance_end: f64,
}

impl ControlInput {
    /// The control image with diffusers' defaults.
    pub fn new(image: impl Into<ControlImage>) -> Self {
        Self {
            image: image.into(),
            conditioning_scale: None,
            guidance_start: 0.0,
            guidance_end: 1.0,
        }
    }

    /// Sets `controlnet_conditioning_scale`.
    pub fn conditioning_scale(mut self, scale: f64) -> Self {
        self.conditioning_scale = Some(scale);
        self
    }

    /// Sets `control_guidance_start` and `control_guidance_end`, fractions of the steps.
    pub fn guidance_window(mut self, start: f64, end: f64) -> Self {
        self.guidance_start = start;
        self.guidance_end = end;
        self
    }
}

/// The prepared ControlNet inputs of a call.
pub(crate) struct ControlPlan {
    /// Per ControlNet: the image batch it reads (doubled for guidance unless in guess mode).
    images: Vec<Tensor<4>>,
    scales: Vec<f64>,
    windows: Vec<(f64, f64)>,
    /// diffusers' guess mode with classifier-free guidance: the ControlNets see only the
    /// conditional half, and the unconditional half gets no residuals.
    guess_guided: bool,
    guess_mode: bool,
}

/// What [`ControlPlan::new`] needs of a call.
pub(crate) struct ControlCall<'a> {
    pub inputs: &'a [ControlInput],
    pub controlnets: &'a [ControlNetModel],
    /// The UNet's skip connections (`None`: a denoiser that takes no residuals).
    pub skip_connections: Option<usize>,
    pub size: (usize, usize),
    pub batch: usize,
    pub guided: bool,
    pub guess_mode: bool,
    pub default_scale: f64,
    pub device: &'a Device,
}

impl ControlPlan {
    /// Checks the inputs against the attached ControlNets and prepares the images (diffusers'
    /// `prepare_image`: resized, repeated to the batch, doubled for guidance).
    pub(crate) fn new(call: ControlCall<'_>) -> Result<Option<Self>> {
        let ControlCall {
            inputs,
            controlnets,
            skip_connections,
            size,
            batch,
            guided,
            guess_mode,
            default_scale,
            device,
        } = call;
        if inputs.len() != controlnets.len() {
            return Err(Error::InvalidArgument {
                name: "control",
                reason: format!(
                    "{} control inputs for {} ControlNets: give one image (and scale) per \
                     ControlNet",
                    inputs.len(),
                    controlnets.len()
                ),
            });
        }
        if controlnets.is_empty() {
            return Ok(None);
        }
        for (i, net) in controlnets.iter().enumerate() {
            if skip_connections != Some(net.num_residuals()) {
                return Err(Error::Config(format!(
                    "ControlNet {i} returns {} residuals but the denoiser takes {}: it was made \
                     for another base model",
                    net.num_residuals(),
                    skip_connections.map_or("none".into(), |n| n.to_string())
                )));
            }
        }
        // diffusers: a ControlNet with `global_pool_conditions` switches guess mode on.
        let guess_mode = guess_mode
            || controlnets
                .iter()
                .any(|n| n.config().global_pool_conditions);
        let mut images = Vec::with_capacity(inputs.len());
        for input in inputs {
            let pixels = input.image.pixels(size, device)?;
            let n = pixels.dims()[0];
            if n != 1 && n != batch {
                return Err(Error::InvalidArgument {
                    name: "control image",
                    reason: format!("a batch of {n} control images for {batch} images"),
                });
            }
            let pixels = pixels.repeat_dim(0, batch / n);
            images.push(if guided && !guess_mode {
                Tensor::cat(vec![pixels.clone(), pixels], 0)
            } else {
                pixels
            });
            let (start, end) = (input.guidance_start, input.guidance_end);
            if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start >= end {
                return Err(Error::InvalidArgument {
                    name: "control_guidance_start",
                    reason: format!("the window ({start}, {end}) must satisfy 0 ≤ start < end ≤ 1"),
                });
            }
            if let Some(scale) = input.conditioning_scale
                && !scale.is_finite()
            {
                return Err(Error::InvalidArgument {
                    name: "controlnet_conditioning_scale",
                    reason: format!("{scale} is not finite"),
                });
            }
        }
        Ok(Some(Self {
            images,
            scales: (inputs.iter())
                .map(|i| i.conditioning_scale.unwrap_or(default_scale))
                .collect(),
            windows: (inputs.iter())
                .map(|i| (i.guidance_start, i.guidance_end))
                .collect(),
            guess_guided: guess_mode && guided,
            guess_mode,
        }))
    }

    /// The summed residuals of every ControlNet acting at evaluation `i` of `n`, for the
    /// model input `input` (doubled for guidance); `scaled` is the un-doubled latents after
    /// `scale_model_input` (what guess mode feeds the ControlNets). `None` when none acts.
    pub(crate) fn residuals(
        &self,
        controlnets: &[ControlNetModel],
        (i, n): (usize, usize),
        input: &Tensor<4>,
        scaled: impl FnOnce() -> Result<Tensor<4>>,
        timestep: f64,
        cond: &Conditioning,
    ) -> Result<Option<ControlNetOutput>> {
        // diffusers' `controlnet_keep`.
        let keep = |(start, end): (f64, f64)| {
            let off = (i as f64 / n as f64) < start || ((i + 1) as f64 / n as f64) > end;
            if off { 0.0 } else { 1.0 }
        };
        let acting: Vec<_> = (controlnets.iter().zip(&self.images))
            .zip(self.scales.iter().zip(&self.windows))
            .map(|((net, image), (&scale, &window))| (net, image, scale * keep(window)))
            .filter(|(.., scale)| *scale != 0.0)
            .collect();
        if acting.is_empty() {
            return Ok(None);
        }
        let (sample, context, added) = if self.guess_guided {
            let half = cond.conditional_half();
            (scaled()?, half.context, half.added)
        } else {
            (input.clone(), cond.context.clone(), cond.added.clone())
        };
        let t = Tensor::<1>::from_floats([timestep as f32], &sample.device());
        let mut input = UNetInput::new(sample, t, context);
        if let Some(added) = added {
            input = input.with_added_cond(added.text_embeds, added.time_ids);
        }
        let mut total: Option<ControlNetOutput> = None;
        for (net, image, scale) in acting {
            let out = net.forward(input.clone(), image.clone(), scale, self.guess_mode)?;
            total = Some(match total {
                Some(sum) => sum + out,
                None => out,
            });
        }
        Ok(total.map(|out| {
            if self.guess_guided {
                let pad = |t: Tensor<4>| Tensor::cat(vec![t.zeros_like(), t], 0);
                ControlNetOutput {
                    down: out.down.into_iter().map(pad).collect(),
                    mid: pad(out.mid),
                }
            } else {
                out
            }
        }))
    }
}
