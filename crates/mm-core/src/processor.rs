//! Image preprocessing matching the Python `transformers` image processors.
//!
//! [`ImageProcessor`] reproduces the PIL-based ("slow") processors of `transformers`
//! (`CLIPImageProcessorPil`, `SiglipImageProcessorPil`, `ViTImageProcessorPil` in 5.x, formerly
//! `CLIPImageProcessor` & co.): in this order
//!
//! 1. **resize** the 8-bit RGB image with a port of Pillow's resampling (antialiasing: the
//!    filter support grows with the downscale factor; bit-identical to Pillow, see [`resize`]); for `{"shortest_edge": s}` the other side is
//!    `int(s * long / short)` (truncated), for `{"height", "width"}` the image is stretched;
//!    the result is rounded to 8 bits, as Pillow does;
//! 2. **center crop** with offsets `(h - crop_h) // 2`, `(w - crop_w) // 2`, zero-padding an
//!    image smaller than the crop;
//! 3. **rescale** (`x * rescale_factor`, computed in f64 then cast to f32);
//! 4. **normalise** (`(x - mean) / std` per channel, in f32).
//!
//! The config is read from a Hugging Face `preprocessor_config.json` ([`ImageProcessorConfig`]),
//! or, in a folder written by `processor.save_pretrained` of `transformers` 5, from the
//! `"image_processor"` object of `processor_config.json` ([`ImageProcessorConfig::from_dir`],
//! and [`find_image_processor_config`] for every processor config of a model folder).
//!
//! # Transparent images
//!
//! The processors only take RGB; how an image with an alpha channel becomes RGB decides the
//! pixels. One rule per processor gives exactly the pixels of
//! `processor(images=Image.open(p))` with the class `AutoImageProcessor` picks in
//! `transformers` 5.24:
//!
//! - **CLIP and SigLIP** (`do_convert_rgb` is true): transparency is composited onto white
//!   (`transformers.image_transforms.convert_to_rgb`): load with
//!   [`load_image_on_white`](crate::image::load_image_on_white).
//! - **ViT** (no `do_convert_rgb`): `transformers` refuses an RGBA image ("mean must have 4
//!   elements"); its own `load_image` (what its pipelines call) and
//!   `Image.open(p).convert("RGB")` drop the alpha channel: load with
//!   [`load_image`](crate::image::load_image).
//!
//! In general: [`load_image_on_white`](crate::image::load_image_on_white) when the config's
//! `do_convert_rgb` is true, else [`load_image`](crate::image::load_image). Images without
//! alpha load the same either way.
//!
//! ```no_run
//! # fn main() -> mm_core::Result<()> {
//! use mm_core::processor::ImageProcessor;
//! let processor = ImageProcessor::from_dir("clip-vit-base-patch32")?;
//! let image = mm_core::image::load_image_on_white("logo.png")?; // CLIP: alpha onto white
//! let pixels = processor.preprocess(&[image], &mm_core::device::cpu())?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use ::image::RgbImage;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `OPENAI_CLIP_MEAN` of `transformers`.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// `OPENAI_CLIP_STD` of `transformers`.
#[allow(clippy::excessive_precision)] // the digits transformers writes
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// `IMAGENET_STANDARD_MEAN` of `transformers` (0.5 per channel).
pub const IMAGENET_STANDARD_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// `IMAGENET_STANDARD_STD` of `transformers` (0.5 per channel).
pub const IMAGENET_STANDARD_STD: [f32; 3] = [0.5, 0.5, 0.5];
/// `IMAGENET_DEFAULT_MEAN` of `transformers`.
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// `IMAGENET_DEFAULT_STD` of `transformers`.
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resampling filter, with Pillow's integer codes (as stored in `"resample"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Resample {
    /// `0`: nearest neighbour.
    Nearest,
    /// `1`: Lanczos (a = 3), antialiased.
    Lanczos,
    /// `2`: bilinear (triangle filter), antialiased.
    Bilinear,
    /// `3`: bicubic (Catmull-Rom, a = -0.5), antialiased.
    Bicubic,
    /// `4`: box filter.
    Box,
    /// `5`: Hamming filter.
    Hamming,
}

impl TryFrom<u8> for Resample {
    type Error = String;
    fn try_from(code: u8) -> std::result::Result<Self, String> {
        Ok(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            other => return Err(format!("unknown PIL resample code {other} (expected 0-5)")),
        })
    }
}

impl From<Resample> for u8 {
    fn from(r: Resample) -> u8 {
        match r {
            Resample::Nearest => 0,
            Resample::Lanczos => 1,
            Resample::Bilinear => 2,
            Resample::Bicubic => 3,
            Resample::Box => 4,
            Resample::Hamming => 5,
        }
    }
}

/// The `"size"` of a processor config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSize {
    /// `{"shortest_edge": s}`: scale so the shorter side is `s`, keeping the aspect ratio.
    ShortestEdge {
        /// Target length of the shorter side.
        shortest_edge: u32,
    },
    /// `{"height": h, "width": w}`: resize to exactly this size.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

impl ImageSize {
    /// The `(height, width)` an image of `(height, width)` is resized to, as
    /// `transformers.image_transforms.get_resize_output_image_size` computes it.
    pub fn output_size(self, height: u32, width: u32) -> (u32, u32) {
        match self {
            ImageSize::Exact { height, width } => (height, width),
            ImageSize::ShortestEdge { shortest_edge: s } => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // int(s * long / short) in Python float arithmetic.
                let new_long = (f64::from(s) * f64::from(long) / f64::from(short)) as u32;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }
}

/// The `"crop_size"` of a processor config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropSize {
    /// Crop height.
    pub height: u32,
    /// Crop width.
    pub width: u32,
}

/// A Hugging Face `preprocessor_config.json` for the CLIP / SigLIP / ViT family of image
/// processors.
///
/// Deserialising tolerates unknown fields and fills missing ones with the defaults of the class
/// named by `image_processor_type` (or the older `feature_extractor_type`): CLIP, SigLIP, or
/// ViT for anything else. A bare integer `size` means `{"shortest_edge": n}` for CLIP and
/// SigLIP and `{"height": n, "width": n}` otherwise (the classes' `default_to_square`); a bare
/// integer `crop_size` is square.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct ImageProcessorConfig {
    /// Resize the image first.
    pub do_resize: bool,
    /// The resize target.
    pub size: ImageSize,
    /// The resampling filter.
    pub resample: Resample,
    /// Center-crop after resizing.
    pub do_center_crop: bool,
    /// The crop size (required when `do_center_crop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_size: Option<CropSize>,
    /// Multiply the 8-bit values by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually `1 / 255`.
    pub rescale_factor: f64,
    /// Normalise with `image_mean` and `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean (RGB).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub image_std: [f32; 3],
    /// Convert to RGB first (always the case here: images are RGB when they reach the
    /// processor; see [`crate::image`] for how alpha and grayscale are handled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_convert_rgb: Option<bool>,
    /// The Python class, e.g. `"CLIPImageProcessor"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_processor_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Clip,
    Siglip,
    Vit,
}

impl Family {
    fn detect(type_name: Option<&str>) -> Family {
        let lower = type_name.unwrap_or_default().to_ascii_lowercase();
        if lower.starts_with("siglip") {
            Family::Siglip
        } else if lower.starts_with("clip") {
            Family::Clip
        } else {
            Family::Vit
        }
    }
}

impl ImageProcessorConfig {
    /// Defaults of `CLIPImageProcessor`: shortest edge 224, bicubic, center crop 224×224,
    /// OpenAI CLIP mean/std.
    pub fn clip() -> Self {
        Self {
            do_resize: true,
            size: ImageSize::ShortestEdge { shortest_edge: 224 },
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: Some(CropSize {
                height: 224,
                width: 224,
            }),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: Some(true),
            image_processor_type: Some("CLIPImageProcessor".into()),
        }
    }

    /// Defaults of `SiglipImageProcessor`: 224×224 bicubic, no crop, mean/std 0.5.
    pub fn siglip() -> Self {
        Self {
            size: ImageSize::Exact {
                height: 224,
                width: 224,
            },
            do_center_crop: false,
            crop_size: None,
            image_mean: IMAGENET_STANDARD_MEAN,
            image_std: IMAGENET_STANDARD_STD,
            image_processor_type: Some("SiglipImageProcessor".into()),
            ..Self::clip()
        }
    }

    /// Defaults of `ViTImageProcessor`: 224×224 bilinear, no crop, mean/std 0.5.
    pub fn vit() -> Self {
        Self {
            resample: Resample::Bilinear,
            do_convert_rgb: None,
            image_processor_type: Some("ViTImageProcessor".into()),
            ..Self::siglip()
        }
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    what: "image processor config".into(),
                    path: path.to_path_buf(),
                    hint: " (a model folder has it as preprocessor_config.json)".into(),
                }
            } else {
                Error::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Config {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads the image processor config of a model folder (see
    /// [`find_image_processor_config`]: `processor_config.json`'s `"image_processor"`, else
    /// `preprocessor_config.json`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        read_image_processor_config(dir)?.parse()
    }

    /// Checks that the values are usable (positive sizes and std, finite factors) and that
    /// one image at the configured size fits in [`crate::limits::memory_limit`]
    /// ([`Error::TooLarge`] for, e.g., `"size": {"shortest_edge": 100000}`).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        match self.size {
            ImageSize::ShortestEdge { shortest_edge: 0 } => {
                return bad("size.shortest_edge must be positive".into());
            }
            ImageSize::Exact { height, width } if height == 0 || width == 0 => {
                return bad(format!("size must be positive, got {height}x{width}"));
            }
            ImageSize::ShortestEdge { shortest_edge: s } => check_output_size(s, s)?,
            ImageSize::Exact { height, width } => check_output_size(height, width)?,
        }
        if let Some(crop) = self.crop_size {
            check_output_size(crop.height, crop.width)?;
        }
        if self.do_center_crop {
            match self.crop_size {
                None => return bad("do_center_crop is set but crop_size is missing".into()),
                Some(c) if c.height == 0 || c.width == 0 => {
                    return bad(format!(
                        "crop_size must be positive, got {}x{}",
                        c.height, c.width
                    ));
                }
                _ => {}
            }
        }
        if !self.rescale_factor.is_finite() {
            return bad(format!(
                "rescale_factor {} is not finite",
                self.rescale_factor
            ));
        }
        if self.do_normalize {
            if self.image_std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                return bad(format!(
                    "image_std {:?} has a zero or non-finite value",
                    self.image_std
                ));
            }
            if self.image_mean.iter().any(|m| !m.is_finite()) {
                return bad(format!("image_mean {:?} is not finite", self.image_mean));
            }
        }
        Ok(())
    }
}

/// Checks that one image preprocessed to `height × width` fits in the memory limit: the
/// resized 8-bit image, Pillow's intermediate pass and the f32 output, about 16 bytes a pixel.
fn check_output_size(height: u32, width: u32) -> Result<()> {
    crate::limits::check_memory(
        format_args!("preprocessing an image to {width}x{height}"),
        crate::limits::tensor_bytes(&[height as usize, width as usize], 16),
    )
}

/// The file `image_processor.save_pretrained` writes (and every processor folder of
/// `transformers` 4).
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
/// The file `processor.save_pretrained` of `transformers` 5 writes: the processor's own options
/// (`image_token`, `patch_size`, ...) and its image processor's settings nested under
/// `"image_processor"`, without a `preprocessor_config.json`.
pub const PROCESSOR_CONFIG: &str = "processor_config.json";

/// The image processor settings of a model folder, as JSON, with the file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorJson {
    /// The file (`processor_config.json` or `preprocessor_config.json`), for messages.
    pub path: PathBuf,
    /// The settings: a `preprocessor_config.json` object.
    pub value: serde_json::Value,
}

impl ImageProcessorJson {
    /// Deserialises the settings; an error names the file.
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.value).map_err(|source| Error::Config {
            path: self.path,
            source,
        })
    }
}

/// Finds the image processor settings of a model folder, as `transformers` 5.24's
/// `ImageProcessingMixin.get_image_processor_dict` does: the `"image_processor"` object of
/// [`PROCESSOR_CONFIG`] (what `processor.save_pretrained` writes) when there is one, else
/// [`PREPROCESSOR_CONFIG`] (published snapshots, `image_processor.save_pretrained`).
///
/// The nested settings win because `processor.save_pretrained` into an older folder leaves a
/// stale `preprocessor_config.json` behind, which `transformers` then ignores.
/// `Ok(None)` when the folder has neither; an unreadable or malformed file is an error.
pub fn find_image_processor_config(dir: impl AsRef<Path>) -> Result<Option<ImageProcessorJson>> {
    let dir = dir.as_ref();
    let processor = dir.join(PROCESSOR_CONFIG);
    if processor.is_file() {
        let mut json: serde_json::Value = crate::config::read_json(&processor)?;
        if let Some(value) = json.get_mut("image_processor").map(serde_json::Value::take) {
            return Ok(Some(ImageProcessorJson {
                path: processor,
                value,
            }));
        }
    }
    let preprocessor = dir.join(PREPROCESSOR_CONFIG);
    if preprocessor.is_file() {
        let value = crate::config::read_json(&preprocessor)?;
        return Ok(Some(ImageProcessorJson {
            path: preprocessor,
            value,
        }));
    }
    Ok(None)
}

/// Like [`find_image_processor_config`], with [`Error::MissingFile`] when the folder has
/// neither file.
pub fn read_image_processor_config(dir: impl AsRef<Path>) -> Result<ImageProcessorJson> {
    let dir = dir.as_ref();
    find_image_processor_config(dir)?.ok_or_else(|| Error::MissingFile {
        what: format!(
            "image processor config ({PREPROCESSOR_CONFIG}, or \"image_processor\" in \
             {PROCESSOR_CONFIG})"
        ),
        path: dir.to_path_buf(),
        hint: String::new(),
    })
}

/// A mean/std given as one number or a list of 1 or 3.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawTriple {
    One(f32),
    List(Vec<f32>),
}

impl RawTriple {
    fn resolve(self, field: &str) -> std::result::Result<[f32; 3], String> {
        match self {
            RawTriple::One(v) => Ok([v; 3]),
            RawTriple::List(v) => match v.as_slice() {
                [a] => Ok([*a; 3]),
                [a, b, c] => Ok([*a, *b, *c]),
                other => Err(format!(
                    "{field} must have 1 or 3 values, got {}",
                    other.len()
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(u32),
    Dict {
        height: Option<u32>,
        width: Option<u32>,
        shortest_edge: Option<u32>,
        longest_edge: Option<u32>,
    },
}

impl RawSize {
    fn resize(self, default_to_square: bool) -> std::result::Result<ImageSize, String> {
        match self {
            RawSize::Int(n) if default_to_square => Ok(ImageSize::Exact {
                height: n,
                width: n,
            }),
            RawSize::Int(n) => Ok(ImageSize::ShortestEdge { shortest_edge: n }),
            RawSize::Dict {
                height: Some(height),
                width: Some(width),
                shortest_edge: None,
                longest_edge: None,
            } => Ok(ImageSize::Exact { height, width }),
            RawSize::Dict {
                height: None,
                width: None,
                shortest_edge: Some(shortest_edge),
                longest_edge: None,
            } => Ok(ImageSize::ShortestEdge { shortest_edge }),
            other => Err(format!(
                "unsupported size {other:?}: expected {{\"shortest_edge\": n}}, \
                 {{\"height\": h, \"width\": w}} or an integer"
            )),
        }
    }

    fn crop(self) -> std::result::Result<CropSize, String> {
        match self.resize(true)? {
            ImageSize::Exact { height, width } => Ok(CropSize { height, width }),
            ImageSize::ShortestEdge { .. } => {
                Err("crop_size must be {\"height\": h, \"width\": w} or an integer".into())
            }
        }
    }
}

/// What a `preprocessor_config.json` may hold; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    do_resize: Option<bool>,
    size: Option<RawSize>,
    resample: Option<Resample>,
    do_center_crop: Option<bool>,
    crop_size: Option<RawSize>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<RawTriple>,
    image_std: Option<RawTriple>,
    do_convert_rgb: Option<bool>,
    image_processor_type: Option<String>,
    feature_extractor_type: Option<String>,
}

impl TryFrom<RawConfig> for ImageProcessorConfig {
    type Error = String;
    fn try_from(raw: RawConfig) -> std::result::Result<Self, String> {
        let type_name = raw
            .image_processor_type
            .as_deref()
            .or(raw.feature_extractor_type.as_deref());
        let family = Family::detect(type_name);
        let mut cfg = match family {
            Family::Clip => Self::clip(),
            Family::Siglip => Self::siglip(),
            Family::Vit => Self::vit(),
        };
        cfg.image_processor_type = raw.image_processor_type.clone();
        if cfg.image_processor_type.is_none() {
            cfg.image_processor_type = raw
                .feature_extractor_type
                .map(|t| t.replace("FeatureExtractor", "ImageProcessor"));
        }
        let default_to_square = family == Family::Vit;
        if let Some(v) = raw.do_resize {
            cfg.do_resize = v;
        }
        if let Some(s) = raw.size {
            cfg.size = s.resize(default_to_square)?;
        }
        if let Some(r) = raw.resample {
            cfg.resample = r;
        }
        if let Some(v) = raw.do_center_crop {
            cfg.do_center_crop = v;
        }
        if let Some(c) = raw.crop_size {
            cfg.crop_size = Some(c.crop()?);
        }
        if let Some(v) = raw.do_rescale {
            cfg.do_rescale = v;
        }
        if let Some(v) = raw.rescale_factor {
            cfg.rescale_factor = v;
        }
        if let Some(v) = raw.do_normalize {
            cfg.do_normalize = v;
        }
        if let Some(m) = raw.image_mean {
            cfg.image_mean = m.resolve("image_mean")?;
        }
        if let Some(s) = raw.image_std {
            cfg.image_std = s.resolve("image_std")?;
        }
        if raw.do_convert_rgb.is_some() {
            cfg.do_convert_rgb = raw.do_convert_rgb;
        }
        Ok(cfg)
    }
}

/// Turns RGB images into normalised `[N, 3, H, W]` pixel tensors like the Python processors.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ImageProcessorConfig,
}

impl ImageProcessor {
    /// A processor for a config (validated with [`ImageProcessorConfig::validate`]).
    pub fn new(config: ImageProcessorConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// A processor from a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(ImageProcessorConfig::from_file(path)?)
    }

    /// The processor of a model folder ([`ImageProcessorConfig::from_dir`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::new(ImageProcessorConfig::from_dir(dir)?)
    }

    /// The config in use.
    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// The `(height, width)` of the output for an input of `(height, width)`.
    pub fn output_size(&self, height: u32, width: u32) -> (u32, u32) {
        let (h, w) = if self.config.do_resize {
            self.config.size.output_size(height, width)
        } else {
            (height, width)
        };
        match (self.config.do_center_crop, self.config.crop_size) {
            (true, Some(c)) => (c.height, c.width),
            _ => (h, w),
        }
    }

    /// Resizes and center-crops one image, staying in 8 bits (steps 1-2).
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::InvalidInput("image has zero width or height".into()));
        }
        let mut img = if self.config.do_resize {
            let (h, w) = self.config.size.output_size(image.height(), image.width());
            check_output_size(h, w)?;
            resize(image, h, w, self.config.resample)?
        } else {
            image.clone()
        };
        if self.config.do_center_crop {
            let crop = self.config.crop_size.ok_or_else(|| {
                Error::InvalidConfig("do_center_crop is set but crop_size is missing".into())
            })?;
            img = center_crop(&img, crop.height, crop.width);
        }
        Ok(img)
    }

    /// Preprocesses one image into planar `[3, H, W]` f32 values; returns them and the shape.
    pub fn preprocess_to_vec(&self, image: &RgbImage) -> Result<(Vec<f32>, [usize; 3])> {
        let img = self.resize_and_crop(image)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let plane = w * h;
        let cfg = &self.config;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let v = px.0[c];
                // numpy: (uint8 as f64 * factor) as f32, then (x - mean) / std in f32.
                let mut x = if cfg.do_rescale {
                    (f64::from(v) * cfg.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if cfg.do_normalize {
                    x = (x - cfg.image_mean[c]) / cfg.image_std[c];
                }
                out[c * plane + i] = x;
            }
        }
        Ok((out, [3, h, w]))
    }

    /// Preprocesses a batch into a `[N, 3, H, W]` f32 tensor.
    ///
    /// An empty batch, or images that come out at different sizes (possible with a
    /// shortest-edge resize and no crop), give [`Error::InvalidInput`].
    pub fn preprocess(&self, images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
        if images.is_empty() {
            return Err(Error::InvalidInput("empty image batch".into()));
        }
        let mut data = Vec::new();
        let mut shape: Option<[usize; 3]> = None;
        for (i, img) in images.iter().enumerate() {
            let (values, s) = self.preprocess_to_vec(img)?;
            match shape {
                None => shape = Some(s),
                Some(first) if first != s => {
                    return Err(Error::InvalidInput(format!(
                        "image {i} preprocesses to {s:?} but the first image to {first:?}; \
                         a batch needs one size (enable center crop or an exact size)"
                    )));
                }
                Some(_) => {}
            }
            data.extend(values);
        }
        let [c, h, w] = shape.unwrap_or([3, 0, 0]);
        Ok(Tensor::<4>::from_data(
            TensorData::new(data, [images.len(), c, h, w]),
            device,
        ))
    }
}

/// Resizes an RGB image exactly like Pillow's `Image.resize(size, resample)` (same size: a
/// plain copy).
///
/// This is a port of Pillow's `libImaging/Resample.c`: separable convolution whose support
/// scales with the downscale factor (antialiasing), coefficients normalised in f64 then
/// converted to 22-bit fixed point, horizontal pass first with the intermediate rounded and
/// clamped to 8 bits, then the vertical pass. Nearest neighbour samples the source pixel under
/// each output pixel centre. The results are bit-identical to Pillow's.
pub fn resize(image: &RgbImage, height: u32, width: u32, resample: Resample) -> Result<RgbImage> {
    if height == 0 || width == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize to {height}x{width}"
        )));
    }
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::InvalidInput("image has zero width or height".into()));
    }
    if image.dimensions() == (width, height) {
        return Ok(image.clone());
    }
    if resample == Resample::Nearest {
        return Ok(resize_nearest(image, height, width));
    }
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let src = image.as_raw();
    // Horizontal pass.
    let tmp: std::borrow::Cow<'_, [u8]> = if out_w != in_w {
        let coeffs = Coeffs::new(in_w, out_w, resample);
        let mut tmp = vec![0u8; in_h * out_w * 3];
        for y in 0..in_h {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            let out = &mut tmp[y * out_w * 3..(y + 1) * out_w * 3];
            for (xx, px) in out.chunks_exact_mut(3).enumerate() {
                let (xmin, k) = coeffs.get(xx);
                let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        ss[c] += i32::from(p[c]) * w;
                    }
                }
                for c in 0..3 {
                    px[c] = clip8(ss[c]);
                }
            }
        }
        tmp.into()
    } else {
        src.as_slice().into()
    };
    // Vertical pass.
    let out = if out_h != in_h {
        let coeffs = Coeffs::new(in_h, out_h, resample);
        let stride = out_w * 3;
        let mut out = vec![0u8; out_h * stride];
        let mut acc = vec![0i32; stride];
        for yy in 0..out_h {
            let (ymin, k) = coeffs.get(yy);
            acc.fill(1i32 << (PRECISION_BITS - 1));
            for (y, &w) in k.iter().enumerate() {
                let row = &tmp[(ymin + y) * stride..(ymin + y + 1) * stride];
                for (a, &p) in acc.iter_mut().zip(row) {
                    *a += i32::from(p) * w;
                }
            }
            for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        out
    } else {
        tmp.into_owned()
    };
    RgbImage::from_raw(width, height, out)
        .ok_or_else(|| Error::InvalidInput("resize buffer size mismatch".into()))
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

impl Resample {
    /// Pillow's filter support (radius at scale 1) and kernel.
    fn filter(self) -> (f64, fn(f64) -> f64) {
        match self {
            Resample::Box | Resample::Nearest => {
                (0.5, |x| if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 })
            }
            Resample::Bilinear => (1.0, |x| {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }),
            Resample::Hamming => (1.0, |x| {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }),
            Resample::Bicubic => (2.0, |x| {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }),
            Resample::Lanczos => (3.0, |x| {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }),
        }
    }
}

/// Fixed-point convolution weights for one axis (Pillow's `precompute_coeffs` followed by
/// `normalize_coeffs_8bpc`).
struct Coeffs {
    ksize: usize,
    /// Per output pixel: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Coeffs {
    fn new(in_size: usize, out_size: usize, resample: Resample) -> Self {
        let (support, filter) = resample.filter();
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..xx * ksize + n];
            for (dst, &w) in row.iter_mut().zip(&k[..n]) {
                let w = if ww != 0.0 { w / ww } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *dst = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    fn get(&self, i: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[i];
        (min, &self.weights[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's nearest-neighbour resize (an affine transform sampling at pixel centres).
fn resize_nearest(image: &RgbImage, height: u32, width: u32) -> RgbImage {
    let sx = f64::from(image.width()) / f64::from(width);
    let sy = f64::from(image.height()) / f64::from(height);
    let max_x = image.width() - 1;
    let max_y = image.height() - 1;
    RgbImage::from_fn(width, height, |x, y| {
        let ix = (((f64::from(x) + 0.5) * sx).floor() as u32).min(max_x);
        let iy = (((f64::from(y) + 0.5) * sy).floor() as u32).min(max_y);
        *image.get_pixel(ix, iy)
    })
}

/// Center crop as `transformers.image_transforms.center_crop`: offsets `(h - ch) // 2` and
/// `(w - cw) // 2` (floor division), zero-padding (centred, `ceil` on the top/left) where the
/// image is smaller than the crop.
pub fn center_crop(image: &RgbImage, crop_height: u32, crop_width: u32) -> RgbImage {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (ch, cw) = (i64::from(crop_height), i64::from(crop_width));
    // Padded canvas (only larger than the image when the crop is larger).
    let (nh, nw) = (ch.max(h), cw.max(w));
    let top_pad = (nh - h + 1) / 2;
    let left_pad = (nw - w + 1) / 2;
    let top = (h - ch).div_euclid(2) + top_pad;
    let left = (w - cw).div_euclid(2) + left_pad;
    let mut out = RgbImage::new(crop_width, crop_height);
    for (x, y, px) in out.enumerate_pixels_mut() {
        // Coordinates in the image.
        let sy = top + i64::from(y) - top_pad;
        let sx = left + i64::from(x) - left_pad;
        if (0..h).contains(&sy) && (0..w).contains(&sx) {
            *px = *image.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_truncate() {
        let s = ImageSize::ShortestEdge { shortest_edge: 224 };
        // chelsea 451x300 -> int(224 * 451 / 300) = 336
        assert_eq!(s.output_size(300, 451), (224, 336));
        assert_eq!(s.output_size(451, 300), (336, 224));
        // rocket 640x427 -> int(335.73) = 335
        assert_eq!(s.output_size(427, 640), (224, 335));
        assert_eq!(s.output_size(512, 512), (224, 224));
    }

    #[test]
    fn center_crop_offsets_and_padding() {
        let mut img = RgbImage::new(5, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            p.0 = [x as u8, y as u8, 1];
        }
        let c = center_crop(&img, 2, 2);
        // top = (4-2)//2 = 1, left = (5-2)//2 = 1
        assert_eq!(c.get_pixel(0, 0).0, [1, 1, 1]);
        let c = center_crop(&img, 6, 5);
        // pad top = ceil(2/2) = 1
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(2, 1).0, [2, 0, 1]);
        assert_eq!(c.get_pixel(2, 5).0, [0, 0, 0]);
        let c = center_crop(&img, 5, 6);
        // width 5 -> 6: left pad ceil(1/2) = 1
        assert_eq!(c.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(1, 1).0, [0, 0, 1]);
    }

    #[test]
    fn config_forms() {
        let old = r#"{"crop_size": 224, "do_center_crop": true, "feature_extractor_type":
            "CLIPFeatureExtractor", "resample": 3, "size": 224, "unknown_field": [1, 2]}"#;
        let cfg: ImageProcessorConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg, ImageProcessorConfig::clip());

        let vit: ImageProcessorConfig =
            serde_json::from_str(r#"{"image_processor_type": "ViTImageProcessor", "size": 384}"#)
                .unwrap();
        assert_eq!(
            vit.size,
            ImageSize::Exact {
                height: 384,
                width: 384
            }
        );
        assert_eq!(vit.resample, Resample::Bilinear);
        let sig: ImageProcessorConfig = serde_json::from_str(
            r#"{"image_processor_type": "SiglipImageProcessor", "image_mean": 0.5,
                "size": {"height": 384, "width": 384}}"#,
        )
        .unwrap();
        assert_eq!(sig.resample, Resample::Bicubic);
        assert!(!sig.do_center_crop);

        // Serialising gives a config that reads back identically.
        for cfg in [
            ImageProcessorConfig::clip(),
            ImageProcessorConfig::siglip(),
            ImageProcessorConfig::vit(),
        ] {
            let json = serde_json::to_string(&cfg).unwrap();
            let back: ImageProcessorConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg);
        }

        for bad in [
            r#"{"resample": 9}"#,
            r#"{"image_mean": [0.1, 0.2]}"#,
            r#"{"size": {"longest_edge": 3}}"#,
            r#"{"size": "big"}"#,
        ] {
            assert!(
                serde_json::from_str::<ImageProcessorConfig>(bad).is_err(),
                "{bad}"
            );
        }
        let zero_std = ImageProcessorConfig {
            image_std: [0.0; 3],
            ..ImageProcessorConfig::vit()
        };
        assert!(matches!(
            ImageProcessor::new(zero_std),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn missing_and_malformed_config_files() {
        let err = ImageProcessor::from_file("/nonexistent/preprocessor_config.json").unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        let tmp = std::env::temp_dir().join(format!("mm_core_bad_pp_{}.json", std::process::id()));
        std::fs::write(&tmp, r#"{"size": {"height": "x"}}"#).unwrap();
        let err = ImageProcessor::from_file(&tmp).unwrap_err();
        let _ = std::fs::remove_file(&tmp);
        assert!(matches!(err, Error::Config { .. }), "{err}");
    }

    /// A size no machine can hold is refused when the processor is made (it used to abort in
    /// the first resize), and a resize target too large for the image at hand at call time.
    #[test]
    fn sizes_too_large_are_refused_before_allocating() {
        let config = |json: &str| -> ImageProcessorConfig { serde_json::from_str(json).unwrap() };
        for json in [
            r#"{"size": {"shortest_edge": 100000}, "do_center_crop": false}"#,
            r#"{"size": {"height": 200000, "width": 200000}}"#,
            r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 100000, "width": 100000}}"#,
        ] {
            let err = ImageProcessor::new(config(json)).unwrap_err();
            assert!(matches!(err, Error::TooLarge { .. }), "{json}: {err}");
            assert!(err.to_string().contains("MM_MEMORY_LIMIT"), "{err}");
        }
        // 10000 fits on its own, but a 1000 × 1 strip resizes to 10⁷ × 10⁴.
        let p = ImageProcessor::new(config(
            r#"{"size": {"shortest_edge": 10000}, "do_center_crop": false}"#,
        ))
        .unwrap();
        let strip = RgbImage::new(1000, 1);
        let err = p.resize_and_crop(&strip).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }

    #[test]
    fn batch_shapes_and_empty_batch() {
        let device = Device::flex();
        let p = ImageProcessor::new(ImageProcessorConfig::clip()).unwrap();
        let a = RgbImage::from_pixel(300, 200, ::image::Rgb([10, 200, 30]));
        let b = RgbImage::from_pixel(64, 640, ::image::Rgb([0, 0, 0]));
        let t = p.preprocess(&[a.clone(), b], &device).unwrap();
        assert_eq!(t.dims(), [2, 3, 224, 224]);
        assert!(matches!(
            p.preprocess(&[], &device),
            Err(Error::InvalidInput(_))
        ));
        let (v, shape) = p.preprocess_to_vec(&a).unwrap();
        assert_eq!(shape, [3, 224, 224]);
        let expect = (10.0f32 / 255.0 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0];
        assert!((v[0] - expect).abs() < 1e-6);

        let no_crop = ImageProcessor::new(ImageProcessorConfig {
            do_center_crop: false,
            ..ImageProcessorConfig::clip()
        })
        .unwrap();
        let c = RgbImage::new(100, 50);
        assert!(matches!(
            no_crop.preprocess(&[a, c], &device),
            Err(Error::InvalidInput(_))
        ));
    }
}
