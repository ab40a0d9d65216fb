//! The image encoder of IP-Adapter: a CLIP vision tower with projection (h94's
//! `models/image_encoder`, OpenCLIP ViT-H/14) and the CLIP image processor diffusers pairs
//! with it.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use image::RgbImage;
use mm_core::hub::ModelDir;
use mm_core::processor::{CropSize, ImageProcessor, ImageProcessorConfig, ImageSize};
use mm_vision::Pretrained;
use mm_vision::clip::{ClipVisionConfig, ClipVisionModelWithProjection};

use super::ImageEmbeds;
use crate::check::check_finite;
use crate::{Error, Result};

/// `CLIPVisionModelWithProjection` with its image processor: turns reference images into
/// what an IP-Adapter projects (diffusers' `encode_image`).
#[derive(Module, Debug)]
pub struct ImageEncoder {
    /// The vision tower and `visual_projection`.
    pub model: ClipVisionModelWithProjection,
    #[module(skip)]
    processor: ImageProcessor,
}

impl ImageEncoder {
    /// Loads a `CLIPVisionModelWithProjection` folder (`config.json` + `model.safetensors`,
    /// e.g. `h94/IP-Adapter`'s `models/image_encoder`) with the image processor diffusers'
    /// `load_ip_adapter` creates for it: `CLIPImageProcessor` at the encoder's `image_size`
    /// (shortest edge and center crop; 224 for ViT-H/14). A pipeline that has a
    /// `feature_extractor` uses that one instead (Stable Diffusion 1.5's is the same
    /// 224 CLIP processor): see [`ImageEncoder::with_processor`].
    pub fn load(folder: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(folder)?;
        let config = ClipVisionModelWithProjection::read_config(&dir.file("config.json")?)?;
        let model = ClipVisionModelWithProjection::from_weights(&config, dir.weights()?, device)?;
        let processor = ImageProcessor::new(default_processor(&config))?;
        Ok(Self { model, processor })
    }

    /// An encoder of `model` with `processor`.
    pub fn new(model: ClipVisionModelWithProjection, processor: ImageProcessor) -> Self {
        Self { model, processor }
    }

    /// Replaces the image processor (a pipeline's `feature_extractor`, say).
    pub fn with_processor(self, processor: ImageProcessor) -> Self {
        Self { processor, ..self }
    }

    /// The image processor.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The normalised pixels `[n, 3, size, size]` of `images` (diffusers'
    /// `feature_extractor(images).pixel_values`).
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor<4>> {
        let device = self.model.visual_projection.weight.val().device();
        Ok(self.processor.preprocess(images, &device)?)
    }

    /// What a plain IP-Adapter projects: the projected `image_embeds` `[n, projection_dim]`
    /// of `pixel_values`, with zeros as the negative.
    pub fn pooled(&self, pixel_values: Tensor<4>) -> Result<ImageEmbeds> {
        check_finite("pixel_values", &pixel_values)?;
        let (_, positive) = self.model.forward(pixel_values)?;
        let negative = positive.zeros_like();
        Ok(ImageEmbeds::Pooled {
            positive,
            negative: Some(negative),
        })
    }

    /// What IP-Adapter Plus projects: the penultimate hidden states `[n, tokens, hidden]` of
    /// `pixel_values`, and as the negative those of all-zero pixel values.
    pub fn hidden(&self, pixel_values: Tensor<4>) -> Result<ImageEmbeds> {
        check_finite("pixel_values", &pixel_values)?;
        let penultimate = |pixels: Tensor<4>| -> Result<Tensor<3>> {
            let (out, _) = self.model.forward(pixels)?;
            out.hidden_state(-2).ok_or_else(|| {
                Error::Config("the image encoder has no layer before its last".into())
            })
        };
        let negative = penultimate(pixel_values.zeros_like())?;
        Ok(ImageEmbeds::Hidden {
            positive: penultimate(pixel_values)?,
            negative: Some(negative),
        })
    }
}

/// `CLIPImageProcessor(size=image_size, crop_size=image_size)`.
fn default_processor(config: &ClipVisionConfig) -> ImageProcessorConfig {
    let size = u32::try_from(config.image_size).unwrap_or(u32::MAX);
    ImageProcessorConfig {
        size: ImageSize::ShortestEdge {
            shortest_edge: size,
        },
        crop_size: Some(CropSize {
            height: size,
            width: size,
        }),
        ..ImageProcessorConfig::clip()
    }
}
