//! Batches of the shapes world as tensors: images in `[-1, 1]` (the autoencoder's and the
//! UNet's range) or CLIP-normalised, captions as CLIP token ids.

use burn::tensor::{Device, Int, Tensor};
use mm_core::image::images_to_tensor;
use mm_core::tokenizer::Tokenizer;

use crate::Result;
use crate::shapes::{Sample, ShapesWorld, Split};

/// CLIP's image mean and standard deviation (`CLIPImageProcessor`'s defaults).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// See [`CLIP_MEAN`].
pub const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// One batch: the samples and their tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The samples drawn.
    pub samples: Vec<Sample>,
    /// Images `[n, 3, h, w]` in `[0, 1]`.
    pub images: Tensor<4>,
    /// Caption token ids `[n, max_length]`, padded as the tokenizer says.
    pub input_ids: Tensor<2, Int>,
}

impl Batch {
    /// The images in `[-1, 1]`.
    pub fn signed_images(&self) -> Tensor<4> {
        self.images.clone() * 2.0 - 1.0
    }

    /// The images normalised as CLIP's image processor does.
    pub fn clip_pixels(&self) -> Tensor<4> {
        clip_normalize(self.images.clone())
    }
}

/// `(x − mean) / std` per channel of `[n, 3, h, w]` images in `[0, 1]`.
pub fn clip_normalize(images: Tensor<4>) -> Tensor<4> {
    let device = images.device();
    let mean = Tensor::<1>::from_floats(CLIP_MEAN, &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(CLIP_STD, &device).reshape([1, 3, 1, 1]);
    (images - mean) / std
}

/// Draws batches of a [`ShapesWorld`] split, sample indices `start, start + 1, …`.
#[derive(Debug, Clone)]
pub struct Batcher {
    world: ShapesWorld,
    tokenizer: Tokenizer,
}

impl Batcher {
    /// Batches of `world`, captions tokenized by `tokenizer`.
    pub fn new(world: ShapesWorld, tokenizer: Tokenizer) -> Self {
        Self { world, tokenizer }
    }

    /// The world.
    pub fn world(&self) -> &ShapesWorld {
        &self.world
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Samples `start .. start + size` of `split`.
    pub fn batch(&self, split: Split, start: u64, size: usize, device: &Device) -> Result<Batch> {
        let samples: Vec<Sample> = (0..size as u64)
            .map(|i| self.world.sample(split, start + i))
            .collect();
        self.from_samples(samples, device)
    }

    /// `size / 2` samples from `start` on, each followed by its shape variant
    /// ([`ShapesWorld::shape_contrast`]): contrastive batches in which shape matters.
    pub fn shape_contrast_batch(
        &self,
        split: Split,
        start: u64,
        size: usize,
        device: &Device,
    ) -> Result<Batch> {
        let samples: Vec<Sample> = (0..(size / 2) as u64)
            .flat_map(|i| self.world.shape_contrast(split, start + i))
            .collect();
        self.from_samples(samples, device)
    }

    /// The tensors of `samples`.
    pub fn from_samples(&self, samples: Vec<Sample>, device: &Device) -> Result<Batch> {
        let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
        let images = images_to_tensor(&images, device)?;
        let captions: Vec<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
        let input_ids = self.ids(&captions, device)?;
        Ok(Batch {
            samples,
            images,
            input_ids,
        })
    }

    /// The token ids of `texts`, `[n, max_length]`.
    pub fn ids(&self, texts: &[&str], device: &Device) -> Result<Tensor<2, Int>> {
        let encoded = self.tokenizer.encode_batch(texts)?;
        Ok(encoded.to_tensors(device)?.0)
    }
}
