//! LLaVA-NeXT (`LlavaNextForConditionalGeneration`, LLaVA 1.6): each image is seen as a base
//! tile plus the tiles of its best "anyres" resolution; the tiles' features are laid back
//! into a grid, the letterbox padding is cut off, an `image_newline` vector ends every row, and
//! the base tile's features come first (transformers' `pack_image_features`).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};
use mm_vision::clip::ClipVisionModel;

use crate::anyres::{Size, anyres_grid_shape, num_anyres_patches, unpadded_size};
use crate::config::LlavaConfig;
use crate::llama::{LlamaForCausalLM, read_ids};
use crate::llava::{MultiModalProjector, VisionLanguageModel, default_eos, select_features};
use crate::{Error, Result};

/// The images of a LLaVA-NeXT prompt, as the processor returns them.
#[derive(Debug, Clone)]
pub struct NextImages {
    /// `[images, max_tiles, 3, size, size]`: each image's base tile then its grid tiles,
    /// padded to the largest tile count.
    pub pixel_values: Tensor<5>,
    /// `[images, 2]`: each image's original `(height, width)`.
    pub image_sizes: Tensor<2, Int>,
}

/// `LlavaNextForConditionalGeneration`.
#[derive(Module, Debug)]
pub struct LlavaNextForConditionalGeneration {
    /// The CLIP vision tower (`vision_tower.vision_model.*`).
    pub vision_tower: ClipVisionModel,
    /// The projector (`multi_modal_projector.*`).
    pub multi_modal_projector: MultiModalProjector,
    /// The decoder (`language_model.model.*`, `language_model.lm_head`).
    pub language_model: LlamaForCausalLM,
    /// Appended to every row of the unpadded grid (`image_newline`, `[text_hidden]`).
    pub image_newline: Param<Tensor<1>>,
    #[module(skip)]
    config: LlavaConfig,
    #[module(skip)]
    eos: Vec<i64>,
}

impl VisionLanguageModel for LlavaNextForConditionalGeneration {
    type Images = NextImages;

    fn new(config: &LlavaConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        if config.image_grid_pinpoints.is_empty() {
            return Err(Error::Config("image_grid_pinpoints is empty".into()));
        }
        let d = config.text_config.hidden_size;
        Ok(Self {
            vision_tower: ClipVisionModel::new(&config.vision_config, device)?,
            multi_modal_projector: MultiModalProjector::new(config, device),
            language_model: LlamaForCausalLM::new(&config.text_config, config.tied(), device),
            image_newline: Initializer::Normal {
                mean: 0.0,
                std: 1.0 / (d as f64).sqrt(),
            }
            .init([d], device),
            config: config.clone(),
            eos: default_eos(config),
        })
    }

    fn config(&self) -> &LlavaConfig {
        &self.config
    }

    fn language_model(&self) -> &LlamaForCausalLM {
        &self.language_model
    }

    fn eos_token_ids(&self) -> &[i64] {
        &self.eos
    }

    fn with_eos_token_ids(mut self, eos: Vec<i64>) -> Self {
        self.eos = eos;
        self
    }

    fn image_features(&self, images: NextImages) -> Result<(Tensor<2>, usize)> {
        let per_image = self.image_features_per_image(images)?;
        let n = per_image.len();
        Ok((Tensor::cat(per_image, 0), n))
    }
}

impl LlavaNextForConditionalGeneration {
    /// The packed features of each image (`[tokens_i, text_hidden]`): base tile, then the
    /// unpadded grid with a newline vector after each row.
    pub fn image_features_per_image(&self, images: NextImages) -> Result<Vec<Tensor<2>>> {
        let NextImages {
            pixel_values,
            image_sizes,
        } = images;
        let [n, max_tiles, c, h, w] = pixel_values.dims();
        let vc = &self.config.vision_config;
        let tile = vc.image_size;
        if n == 0 || c != vc.num_channels || h != tile || w != tile {
            return Err(Error::Shape {
                what: "pixel_values",
                expected: format!("[images >= 1, tiles, {}, {tile}, {tile}]", vc.num_channels),
                got: vec![n, max_tiles, c, h, w],
            });
        }
        if image_sizes.dims() != [n, 2] {
            return Err(Error::Shape {
                what: "image_sizes",
                expected: format!("[{n}, 2] (height, width per image)"),
                got: image_sizes.dims().to_vec(),
            });
        }
        let sizes = read_ids(&image_sizes)?;
        let pinpoints: Vec<Size> = self
            .config
            .image_grid_pinpoints
            .iter()
            .map(|&[ph, pw]| (ph as u32, pw as u32))
            .collect();
        let mut originals = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        let mut tiles = Vec::with_capacity(n);
        for i in 0..n {
            let (oh, ow) = (sizes[2 * i], sizes[2 * i + 1]);
            if oh <= 0 || ow <= 0 || oh > u32::MAX as i64 || ow > u32::MAX as i64 {
                return Err(Error::InvalidInput(format!(
                    "image_sizes[{i}] = ({oh}, {ow}) is not a valid (height, width)"
                )));
            }
            let original = (oh as u32, ow as u32);
            let count = num_anyres_patches(original, &pinpoints, tile as u32)?;
            if count > max_tiles {
                return Err(Error::Shape {
                    what: "pixel_values",
                    expected: format!(
                        "at least {count} tiles for image {i} of size {oh}x{ow} (base + anyres grid)"
                    ),
                    got: vec![n, max_tiles, c, h, w],
                });
            }
            tiles.push(
                pixel_values
                    .clone()
                    .narrow(0, i, 1)
                    .reshape([max_tiles, c, h, w])
                    .narrow(0, 0, count),
            );
            originals.push(original);
            counts.push(count);
        }
        let dtype = self.language_model.model.dtype();
        let out = self
            .vision_tower
            .forward(Tensor::cat(tiles, 0).cast(dtype))?;
        let features = self
            .multi_modal_projector
            .forward(select_features(&out, &self.config)?);
        let [_, t, d] = features.dims();
        let side = vc.grid();
        let newline = self.image_newline.val().cast(dtype);
        let mut packed = Vec::with_capacity(n);
        let mut start = 0;
        for (original, count) in originals.into_iter().zip(counts) {
            let image = features.clone().narrow(0, start, count);
            start += count;
            let base = image.clone().narrow(0, 0, 1).reshape([t, d]);
            if count == 1 {
                packed.push(Tensor::cat(vec![base, newline.clone().reshape([1, d])], 0));
                continue;
            }
            if t != side * side {
                return Err(Error::Config(format!(
                    "anyres packing needs {side}x{side} tokens per tile, the tower gives {t} \
                     (use vision_feature_select_strategy \"default\" with a CLS tower)"
                )));
            }
            let (rows, cols) = anyres_grid_shape(original, &pinpoints, tile as u32)?;
            let (rows, cols) = (rows as usize, cols as usize);
            if rows * cols != count - 1 {
                return Err(Error::InvalidInput(format!(
                    "an image of {}x{} has a {rows}x{cols} grid but {} tiles",
                    original.0,
                    original.1,
                    count - 1
                )));
            }
            let grid = image
                .narrow(0, 1, count - 1)
                .reshape([rows, cols, side, side, d])
                .permute([4, 0, 2, 1, 3])
                .reshape([d, rows * side, cols * side]);
            let (gh, gw) = (rows * side, cols * side);
            let (uh, uw) = unpadded_size(original, (gh as u32, gw as u32))?;
            let (uh, uw) = (uh as usize, uw as usize);
            let grid = grid
                .narrow(1, (gh - uh) / 2, uh)
                .narrow(2, (gw - uw) / 2, uw);
            let ends = newline.clone().reshape([d, 1, 1]).expand([d, uh, 1]);
            let grid = Tensor::cat(vec![grid, ends], 2)
                .reshape([d, uh * (uw + 1)])
                .transpose();
            packed.push(Tensor::cat(vec![base, grid], 0));
        }
        Ok(packed)
    }
}
