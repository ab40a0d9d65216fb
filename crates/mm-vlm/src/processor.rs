//! LLaVA / LLaVA-NeXT input processing: images to pixel tensors, prompts to token ids.
//!
//! [`LlavaImageProcessor`] reproduces the PIL image processors of `transformers` 5.24 from a
//! `preprocessor_config.json`:
//!
//! - **LLaVA 1.5** (`CLIPImageProcessor`, `LlavaImageProcessor`): optionally (`do_pad`, only
//!   `LlavaImageProcessor`) pad to a square with the mean colour (`int(mean * 255)`, image
//!   centred with `(side - size) // 2`), then resize the shortest edge, center crop, rescale
//!   and normalise with `mm_core`'s Pillow-exact [`ImageProcessor`]. One `[3, S, S]` tile per
//!   image.
//! - **LLaVA-NeXT** (`LlavaNextImageProcessor`): pick the best `image_grid_pinpoints`
//!   resolution ([`select_best_resolution`]), resize inside it keeping the aspect ratio
//!   ([`patch_output_size`]), pad with black to it (centred, `divmod`), cut it into
//!   `crop_size` tiles row by row, and put the whole image resized to `size` first; every tile
//!   then goes through resize / crop / rescale / normalise. `[1 + rows * cols, 3, S, S]` per
//!   image, with the original `(height, width)`.
//!
//! [`LlavaProcessor`] is the prompt side (`LlavaProcessor` / `LlavaNextProcessor`): each
//! `<image>` marker of the text becomes as many image tokens as the model has features for that
//! image, then the text is tokenized (with the tokenizer's special tokens, as the Python
//! processors call the tokenizer with `add_special_tokens=True`).
//!
//! A model folder keeps the image processor settings in `preprocessor_config.json` (published
//! llava-hf snapshots) or, when `processor.save_pretrained` of transformers 5 wrote it, under
//! `"image_processor"` in `processor_config.json`; [`LlavaProcessor::from_dir`] reads either
//! (the nested one first, as transformers does).
//!
//! **Transparent images**: all three image processors have `do_convert_rgb` set and composite
//! an image with alpha onto white before anything else (`convert_to_rgb`). Load images with
//! [`mm_core::image::load_image_on_white`] to get the pixels of
//! `processor(images=Image.open(p))` (transformers 5.24, `AutoProcessor`);
//! [`mm_core::image::load_image`] drops the alpha channel instead and gives other pixels where
//! the image is transparent.
//!
//! ```no_run
//! # fn main() -> mm_vlm::Result<()> {
//! use mm_vlm::processor::LlavaProcessor;
//! let processor = LlavaProcessor::from_dir("path/to/llava-1.5-7b-hf")?;
//! let image = mm_core::image::load_image_on_white("logo.png")?;
//! let inputs = processor.process("USER: <image>\nWhat is this? ASSISTANT:", &[image])?;
//! # Ok(()) }
//! ```

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use mm_core::image::RgbImage;
use mm_core::processor::{ImageProcessor, ImageProcessorConfig, ImageSize, resize};
use mm_core::tokenizer::Tokenizer;
use serde::Deserialize;

use crate::anyres::{
    SelectStrategy, Size, llava_next_num_image_tokens, llava_num_image_tokens, patch_output_size,
    select_best_resolution,
};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::llava_next::NextImages;
use crate::{Error, Result};

fn invalid_config(msg: String) -> Error {
    Error::Config(msg)
}

/// Which Python image processor a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageProcessorKind {
    /// `CLIPImageProcessor` (llava-hf/llava-1.5-*-hf).
    Clip,
    /// `LlavaImageProcessor` (LLaVA 1.5 with optional pad-to-square).
    Llava,
    /// `LlavaNextImageProcessor` (anyres tiling).
    LlavaNext,
}

/// A LLaVA `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaImageProcessorConfig {
    /// The Python class.
    pub kind: ImageProcessorKind,
    /// Resize, crop, rescale and normalisation settings (CLIP defaults).
    pub base: ImageProcessorConfig,
    /// `do_pad`: pad to a square before resizing (`LlavaImageProcessor`; for NeXT it pads the
    /// batch to one tile count, which [`ProcessedImages::padded_pixel_values`] does).
    pub do_pad: bool,
    /// `image_grid_pinpoints` as `(height, width)` (NeXT).
    pub image_grid_pinpoints: Vec<Size>,
}

#[derive(Deserialize)]
struct RawExtra {
    image_processor_type: Option<String>,
    feature_extractor_type: Option<String>,
    do_pad: Option<bool>,
    image_grid_pinpoints: Option<Vec<[u32; 2]>>,
}

/// `LlavaNextImageProcessor`'s default pinpoints.
pub const DEFAULT_PINPOINTS: [Size; 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

impl LlavaImageProcessorConfig {
    /// Parses a `preprocessor_config.json` value. Missing fields take the defaults of the
    /// class named by `image_processor_type` (all three share CLIP's: bicubic, shortest edge
    /// 224, crop 224, OpenAI CLIP mean/std; NeXT pads and has [`DEFAULT_PINPOINTS`]).
    pub fn from_value(mut json: serde_json::Value) -> Result<Self> {
        let extra: RawExtra = serde_json::from_value(json.clone())
            .map_err(|e| invalid_config(format!("preprocessor config: {e}")))?;
        let type_name = extra
            .image_processor_type
            .or(extra.feature_extractor_type)
            .unwrap_or_default();
        let lower = type_name.to_ascii_lowercase();
        let kind = if lower.starts_with("llavanext") {
            ImageProcessorKind::LlavaNext
        } else if lower.starts_with("llava") {
            ImageProcessorKind::Llava
        } else if lower.is_empty() && extra.image_grid_pinpoints.is_some() {
            ImageProcessorKind::LlavaNext
        } else {
            ImageProcessorKind::Clip
        };
        // The LLaVA processors share CLIPImageProcessor's defaults: parse as CLIP.
        if let Some(obj) = json.as_object_mut() {
            obj.remove("feature_extractor_type");
            obj.insert("image_processor_type".into(), "CLIPImageProcessor".into());
        }
        let mut base: ImageProcessorConfig = serde_json::from_value(json)
            .map_err(|e| invalid_config(format!("preprocessor config: {e}")))?;
        base.image_processor_type = (!type_name.is_empty()).then_some(type_name);
        base.validate()?;
        let do_pad = match kind {
            ImageProcessorKind::Clip => false,
            ImageProcessorKind::Llava => extra.do_pad.unwrap_or(false),
            ImageProcessorKind::LlavaNext => extra.do_pad.unwrap_or(true),
        };
        let image_grid_pinpoints = match (kind, extra.image_grid_pinpoints) {
            (_, Some(p)) => p.into_iter().map(|[h, w]| (h, w)).collect(),
            (ImageProcessorKind::LlavaNext, None) => DEFAULT_PINPOINTS.to_vec(),
            _ => Vec::new(),
        };
        if kind == ImageProcessorKind::LlavaNext {
            if image_grid_pinpoints.is_empty() {
                return Err(invalid_config("image_grid_pinpoints is empty".into()));
            }
            if let Some(&(h, w)) = image_grid_pinpoints
                .iter()
                .find(|(h, w)| *h == 0 || *w == 0)
            {
                return Err(invalid_config(format!("grid pinpoint {h}x{w} is empty")));
            }
        }
        Ok(Self {
            kind,
            base,
            do_pad,
            image_grid_pinpoints,
        })
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_value(mm_core::config::read_json(path)?)
    }

    /// Reads the image processor config of a model folder: the `"image_processor"` object of
    /// `processor_config.json` (what `processor.save_pretrained` of transformers 5 writes),
    /// else `preprocessor_config.json` (see
    /// [`mm_core::processor::find_image_processor_config`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let json = mm_core::processor::read_image_processor_config(dir)?;
        Self::from_value(json.value).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", json.path.display())),
            other => other,
        })
    }

    /// The `(height, width)` of every tile: the crop size, else `size` when exact, else the
    /// shortest edge squared.
    pub fn tile_size(&self) -> Size {
        match (
            self.base.do_center_crop,
            self.base.crop_size,
            self.base.size,
        ) {
            (true, Some(c), _) => (c.height, c.width),
            (_, _, ImageSize::Exact { height, width }) => (height, width),
            (_, _, ImageSize::ShortestEdge { shortest_edge }) => (shortest_edge, shortest_edge),
        }
    }
}

/// One preprocessed image: its tiles as planar f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `[num_tiles, 3, height, width]` values, row-major.
    pub pixels: Vec<f32>,
    /// Number of tiles (1 for LLaVA 1.5; base + grid for NeXT).
    pub num_tiles: usize,
    /// Tile height.
    pub height: usize,
    /// Tile width.
    pub width: usize,
    /// The `(height, width)` of the input image (NeXT's `image_sizes`).
    pub original_size: Size,
}

impl ProcessedImage {
    /// The tiles as a `[num_tiles, 3, H, W]` tensor.
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::<4>::from_data(
            TensorData::new(
                self.pixels.clone(),
                [self.num_tiles, 3, self.height, self.width],
            ),
            device,
        )
    }
}

/// Preprocessed images of one call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessedImages {
    /// One entry per image, in order.
    pub images: Vec<ProcessedImage>,
}

impl ProcessedImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True without images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    fn tile_shape(&self) -> Result<(usize, usize)> {
        let first = self
            .images
            .first()
            .ok_or_else(|| Error::InvalidInput("no images".into()))?;
        Ok((first.height, first.width))
    }

    /// All tiles of all images concatenated: `[sum of num_tiles, 3, H, W]` (for LLaVA 1.5 the
    /// `pixel_values` of `transformers`; for NeXT the unpadded tiles its model flattens).
    pub fn pixel_values(&self, device: &Device) -> Result<Tensor<4>> {
        let (h, w) = self.tile_shape()?;
        let total: usize = self.images.iter().map(|i| i.num_tiles).sum();
        let data: Vec<f32> = self
            .images
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        Ok(Tensor::<4>::from_data(
            TensorData::new(data, [total, 3, h, w]),
            device,
        ))
    }

    /// NeXT's batched `pixel_values`: `[num_images, max num_tiles, 3, H, W]`, images with fewer
    /// tiles padded with zero tiles (`do_pad`).
    pub fn padded_pixel_values(&self, device: &Device) -> Result<Tensor<5>> {
        let (h, w) = self.tile_shape()?;
        let max = self.images.iter().map(|i| i.num_tiles).max().unwrap_or(0);
        let per_tile = 3 * h * w;
        let mut data = Vec::with_capacity(self.images.len() * max * per_tile);
        for img in &self.images {
            data.extend_from_slice(&img.pixels);
            data.resize(data.len() + (max - img.num_tiles) * per_tile, 0.0);
        }
        Ok(Tensor::<5>::from_data(
            TensorData::new(data, [self.images.len(), max, 3, h, w]),
            device,
        ))
    }

    /// `image_sizes` (`[num_images, 2]`, original `(height, width)`).
    pub fn image_sizes(&self, device: &Device) -> Tensor<2, Int> {
        let data: Vec<i64> = self
            .images
            .iter()
            .flat_map(|i| [i64::from(i.original_size.0), i64::from(i.original_size.1)])
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [self.images.len(), 2]), device)
    }

    /// The input of [`LlavaNextForConditionalGeneration`](crate::llava_next::LlavaNextForConditionalGeneration):
    /// [`ProcessedImages::padded_pixel_values`] and [`ProcessedImages::image_sizes`].
    pub fn to_next_images(&self, device: &Device) -> Result<NextImages> {
        Ok(NextImages {
            pixel_values: self.padded_pixel_values(device)?,
            image_sizes: self.image_sizes(device),
        })
    }

    /// Tiles per image.
    pub fn num_tiles(&self) -> Vec<usize> {
        self.images.iter().map(|i| i.num_tiles).collect()
    }
}

/// Turns images into LLaVA / LLaVA-NeXT pixel values (see the module docs).
#[derive(Debug, Clone)]
pub struct LlavaImageProcessor {
    config: LlavaImageProcessorConfig,
    tiles: ImageProcessor,
}

/// Copies `image` into a `height × width` canvas filled with `fill`, at `(top, left)`.
fn paste(
    image: &RgbImage,
    height: u32,
    width: u32,
    top: u32,
    left: u32,
    fill: [u8; 3],
) -> RgbImage {
    let mut out = RgbImage::from_pixel(width, height, ::image::Rgb(fill));
    for (x, y, px) in image.enumerate_pixels() {
        if x + left < width && y + top < height {
            out.put_pixel(x + left, y + top, *px);
        }
    }
    out
}

/// Copies the `height × width` region at `(top, left)` (clipped to the image).
fn crop(image: &RgbImage, top: u32, left: u32, height: u32, width: u32) -> RgbImage {
    let h = height.min(image.height() - top);
    let w = width.min(image.width() - left);
    RgbImage::from_fn(w, h, |x, y| *image.get_pixel(left + x, top + y))
}

impl LlavaImageProcessor {
    /// A processor for a config.
    pub fn new(config: LlavaImageProcessorConfig) -> Result<Self> {
        let tiles = ImageProcessor::new(config.base.clone())?;
        Ok(Self { config, tiles })
    }

    /// A processor from a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(LlavaImageProcessorConfig::from_file(path)?)
    }

    /// The processor of a model folder ([`LlavaImageProcessorConfig::from_dir`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::new(LlavaImageProcessorConfig::from_dir(dir)?)
    }

    /// The config.
    pub fn config(&self) -> &LlavaImageProcessorConfig {
        &self.config
    }

    /// `pad_to_square` of `LlavaImageProcessor`: the image centred on a square of its longer
    /// side filled with `int(mean * 255)`.
    pub fn pad_to_square(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = image.dimensions();
        if w == h {
            return image.clone();
        }
        let side = w.max(h);
        let m = self.config.base.image_mean;
        // Python `int(x * 255)` truncates.
        let fill = [0, 1, 2].map(|c| (f64::from(m[c]) * 255.0) as u8);
        if w > h {
            paste(image, side, side, (side - h) / 2, 0, fill)
        } else {
            paste(image, side, side, 0, (side - w) / 2, fill)
        }
    }

    /// The 8-bit tiles of one image before rescaling: NeXT's base image and grid tiles, or
    /// the (padded) image for LLaVA 1.5.
    pub fn tiles_u8(&self, image: &RgbImage) -> Result<Vec<RgbImage>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::Core(mm_core::Error::Image {
                path: None,
                reason: "image has zero width or height".into(),
            }));
        }
        let cfg = &self.config;
        match cfg.kind {
            ImageProcessorKind::Clip => Ok(vec![image.clone()]),
            ImageProcessorKind::Llava if cfg.do_pad => Ok(vec![self.pad_to_square(image)]),
            ImageProcessorKind::Llava => Ok(vec![image.clone()]),
            ImageProcessorKind::LlavaNext => self.anyres_tiles(image),
        }
    }

    fn anyres_tiles(&self, image: &RgbImage) -> Result<Vec<RgbImage>> {
        let cfg = &self.config;
        let original = (image.height(), image.width());
        let best = select_best_resolution(original, &cfg.image_grid_pinpoints)?;
        let (nh, nw) = patch_output_size(original, best)?;
        let resized = resize(image, nh, nw, cfg.base.resample)?;
        // divmod(target - new, 2): the image starts at the quotient.
        let padded = paste(
            &resized,
            best.0,
            best.1,
            (best.0 - nh) / 2,
            (best.1 - nw) / 2,
            [0; 3],
        );
        // Patch size: crop height, else size height, else the shortest edge.
        let tile = match (cfg.base.crop_size, cfg.base.size) {
            (Some(c), _) => c.height,
            (None, ImageSize::Exact { height, .. }) => height,
            (None, ImageSize::ShortestEdge { shortest_edge }) => shortest_edge,
        };
        if tile == 0 {
            return Err(invalid_config(
                "the anyres tile size (crop_size) is zero".into(),
            ));
        }
        let base_size = match cfg.base.size {
            ImageSize::Exact { height, width } => (height, width),
            ImageSize::ShortestEdge { shortest_edge } => (shortest_edge, shortest_edge),
        };
        let mut tiles = vec![resize(image, base_size.0, base_size.1, cfg.base.resample)?];
        for top in (0..best.0).step_by(tile as usize) {
            for left in (0..best.1).step_by(tile as usize) {
                tiles.push(crop(&padded, top, left, tile, tile));
            }
        }
        Ok(tiles)
    }

    /// Preprocesses one image into its tiles.
    pub fn preprocess_one(&self, image: &RgbImage) -> Result<ProcessedImage> {
        let tiles = self.tiles_u8(image)?;
        let mut pixels = Vec::new();
        let mut shape = None;
        for tile in &tiles {
            let (values, s) = self.tiles.preprocess_to_vec(tile)?;
            match shape {
                None => shape = Some(s),
                Some(first) if first != s => {
                    return Err(invalid_config(format!(
                        "tiles preprocess to different sizes ({first:?} and {s:?}); \
                         enable center crop"
                    )));
                }
                Some(_) => {}
            }
            pixels.extend(values);
        }
        let [_, height, width] = shape.unwrap_or([3, 0, 0]);
        Ok(ProcessedImage {
            pixels,
            num_tiles: tiles.len(),
            height,
            width,
            original_size: (image.height(), image.width()),
        })
    }

    /// Preprocesses images.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<ProcessedImages> {
        let images = images
            .iter()
            .map(|i| self.preprocess_one(i))
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = images.first()
            && let Some(other) = images
                .iter()
                .find(|i| (i.height, i.width) != (first.height, first.width))
        {
            return Err(invalid_config(format!(
                "images preprocess to different tile sizes ({}x{} and {}x{}); enable center crop",
                first.height, first.width, other.height, other.width
            )));
        }
        Ok(ProcessedImages { images })
    }
}

/// The prompt-side settings of a LLaVA processor (`processor_config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorOptions {
    /// The image marker / placeholder token.
    pub image_token: String,
    /// The vision tower's patch size.
    pub patch_size: u32,
    /// Extra tokens of the vision tower (1 for CLIP's CLS).
    pub num_additional_image_tokens: u32,
    /// Which vision tokens the projector uses.
    pub vision_feature_select_strategy: SelectStrategy,
    /// Tokenize with the tokenizer's special tokens (BOS for Llama / Mistral), like the Python
    /// processor's default `add_special_tokens=True`.
    pub add_special_tokens: bool,
    /// Pad batches on the left (`padding_side` of `tokenizer_config.json`).
    pub pad_left: bool,
}

impl Default for ProcessorOptions {
    fn default() -> Self {
        Self {
            image_token: "<image>".into(),
            patch_size: 14,
            num_additional_image_tokens: 1,
            vision_feature_select_strategy: SelectStrategy::Default,
            add_special_tokens: true,
            pad_left: false,
        }
    }
}

#[derive(Deserialize, Default)]
struct RawProcessorConfig {
    image_token: Option<String>,
    patch_size: Option<u32>,
    num_additional_image_tokens: Option<u32>,
    vision_feature_select_strategy: Option<SelectStrategy>,
}

#[derive(Deserialize, Default)]
struct RawModelConfig {
    vision_feature_select_strategy: Option<SelectStrategy>,
    image_token_index: Option<u32>,
    vision_config: Option<RawVisionConfig>,
}

#[derive(Deserialize, Default)]
struct RawVisionConfig {
    patch_size: Option<u32>,
}

impl ProcessorOptions {
    /// The options of a model folder: `processor_config.json` (`image_token`, `patch_size`,
    /// `num_additional_image_tokens`, `vision_feature_select_strategy`), else `config.json`
    /// (`vision_config.patch_size`, `vision_feature_select_strategy`, the token of
    /// `image_token_index`; one additional token for the CLIP tower), and `padding_side` of
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>, tokenizer: &Tokenizer) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(Some(mm_core::config::read_json(p)?))
            } else {
                Ok(None)
            }
        };
        fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value, name: &str) -> Result<T> {
            serde_json::from_value(v).map_err(|e| invalid_config(format!("{name}: {e}")))
        }
        let proc: RawProcessorConfig = match read("processor_config.json")? {
            Some(v) => parse(v, "processor_config.json")?,
            None => RawProcessorConfig::default(),
        };
        let model: RawModelConfig = match read("config.json")? {
            Some(v) => parse(v, "config.json")?,
            None => RawModelConfig::default(),
        };
        let mut opts = Self::default();
        if let Some(t) = proc.image_token.or_else(|| {
            model
                .image_token_index
                .and_then(|id| tokenizer.id_to_token(id))
        }) {
            opts.image_token = t;
        }
        if let Some(p) = proc
            .patch_size
            .or_else(|| model.vision_config.and_then(|v| v.patch_size))
        {
            opts.patch_size = p;
        }
        if let Some(n) = proc.num_additional_image_tokens {
            opts.num_additional_image_tokens = n;
        }
        if let Some(s) = proc
            .vision_feature_select_strategy
            .or(model.vision_feature_select_strategy)
        {
            opts.vision_feature_select_strategy = s;
        }
        if let Some(tc) = read("tokenizer_config.json")? {
            opts.pad_left = tc.get("padding_side").and_then(|v| v.as_str()) == Some("left");
        }
        Ok(opts)
    }
}

/// Token ids, masks and pixel values of a processor call.
#[derive(Debug, Clone)]
pub struct ProcessorOutput {
    /// Token ids per prompt (padded to one length for a batch).
    pub input_ids: Vec<Vec<u32>>,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// The preprocessed images, in prompt order.
    pub images: ProcessedImages,
}

impl ProcessorOutput {
    /// `(input_ids, attention_mask)` as `[batch, seq]` int tensors.
    pub fn token_tensors(&self, device: &Device) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        let encoded = mm_core::tokenizer::Encoded {
            ids: self.input_ids.clone(),
            attention_mask: self.attention_mask.clone(),
        };
        Ok(encoded.to_tensors(device)?)
    }
}

/// The LLaVA / LLaVA-NeXT processor: prompt expansion, tokenization and image preprocessing.
#[derive(Debug, Clone)]
pub struct LlavaProcessor {
    tokenizer: Tokenizer,
    images: LlavaImageProcessor,
    options: ProcessorOptions,
    image_token_id: u32,
}

impl LlavaProcessor {
    /// A processor from its parts. The image token must be a single token of the tokenizer.
    pub fn new(
        tokenizer: Tokenizer,
        images: LlavaImageProcessor,
        options: ProcessorOptions,
    ) -> Result<Self> {
        let image_token_id = tokenizer.token_to_id(&options.image_token).ok_or_else(|| {
            Error::Core(mm_core::Error::Tokenizer(format!(
                "the image token {} is not in the vocabulary",
                options.image_token
            )))
        })?;
        if options.patch_size == 0 {
            return Err(invalid_config("patch_size must be positive".into()));
        }
        Ok(Self {
            tokenizer,
            images,
            options,
            image_token_id,
        })
    }

    /// Loads `tokenizer.json`, the image processor config
    /// ([`LlavaImageProcessorConfig::from_dir`]: `processor_config.json`'s `"image_processor"`,
    /// else `preprocessor_config.json`) and the options ([`ProcessorOptions::from_dir`]) of a
    /// model folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let images = LlavaImageProcessor::from_dir(dir)?;
        let options = ProcessorOptions::from_dir(dir, &tokenizer)?;
        Self::new(tokenizer, images, options)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The image processor.
    pub fn image_processor(&self) -> &LlavaImageProcessor {
        &self.images
    }

    /// The options.
    pub fn options(&self) -> &ProcessorOptions {
        &self.options
    }

    /// The id of the image token.
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    /// How many image tokens an image of `original` `(height, width)` takes in the prompt.
    pub fn num_image_tokens(&self, original: Size) -> Result<usize> {
        let o = &self.options;
        let cfg = self.images.config();
        let tile = cfg.tile_size();
        match cfg.kind {
            ImageProcessorKind::LlavaNext => llava_next_num_image_tokens(
                original,
                tile,
                o.patch_size,
                &cfg.image_grid_pinpoints,
                o.num_additional_image_tokens,
                o.vision_feature_select_strategy,
            ),
            _ => llava_num_image_tokens(
                tile,
                o.patch_size,
                o.num_additional_image_tokens,
                o.vision_feature_select_strategy,
            ),
        }
    }

    /// Expands each image marker of `text` into the image tokens of the next image of
    /// `sizes`; returns the expanded text and the number of images used.
    fn expand(&self, text: &str, sizes: &[Size]) -> Result<(String, usize)> {
        let token = &self.options.image_token;
        let mut out = String::with_capacity(text.len());
        let mut used = 0;
        let mut pieces = text.split(token.as_str());
        out.push_str(pieces.next().unwrap_or_default());
        for piece in pieces {
            let size = sizes.get(used).copied();
            used += 1;
            if let Some(size) = size {
                out.push_str(&token.repeat(self.num_image_tokens(size)?));
            }
            out.push_str(piece);
        }
        Ok((out, used))
    }

    /// Processes one prompt with its images (one per `<image>` marker, in order).
    pub fn process(&self, text: &str, images: &[RgbImage]) -> Result<ProcessorOutput> {
        self.process_batch(&[text], images)
    }

    /// Processes prompts; `images` are those of all prompts in order. Rows are padded to the
    /// longest with the tokenizer's pad id, on the side `padding_side` says.
    ///
    /// Errors: no prompt or an empty one ([`Error::EmptyPrompt`]); a number of images other
    /// than the number of markers ([`Error::ImageCountMismatch`]).
    pub fn process_batch(&self, texts: &[&str], images: &[RgbImage]) -> Result<ProcessorOutput> {
        self.process_with(texts, images, self.options.add_special_tokens)
    }

    /// Renders a conversation with `template` and processes it with the images of its image
    /// parts, like `processor.apply_chat_template(messages, tokenize=True)`: the tokenizer's
    /// special tokens are added unless the rendered prompt already starts with the template's
    /// BOS token.
    pub fn process_chat(
        &self,
        template: &ChatTemplate,
        messages: &[ChatMessage],
        images: &[RgbImage],
        add_generation_prompt: bool,
    ) -> Result<ProcessorOutput> {
        let prompt = template.render(messages, add_generation_prompt)?;
        let has_bos = template
            .special_tokens()
            .bos_token
            .as_deref()
            .is_some_and(|bos| prompt.starts_with(bos));
        self.process_with(
            &[&prompt],
            images,
            self.options.add_special_tokens && !has_bos,
        )
    }

    fn process_with(
        &self,
        texts: &[&str],
        images: &[RgbImage],
        add_special_tokens: bool,
    ) -> Result<ProcessorOutput> {
        if texts.is_empty() || texts.iter().any(|t| t.is_empty()) {
            return Err(Error::EmptyPrompt);
        }
        let token = &self.options.image_token;
        let markers: usize = texts
            .iter()
            .map(|t| t.matches(token.as_str()).count())
            .sum();
        if markers != images.len() {
            return Err(Error::ImageCountMismatch {
                markers,
                images: images.len(),
                token: token.clone(),
            });
        }
        let processed = self.images.preprocess(images)?;
        let sizes: Vec<Size> = processed.images.iter().map(|i| i.original_size).collect();
        let mut ids = Vec::with_capacity(texts.len());
        let mut offset = 0;
        for text in texts {
            let (expanded, used) = self.expand(text, &sizes[offset..])?;
            offset += used;
            let enc = self
                .tokenizer
                .inner()
                .encode(expanded.as_str(), add_special_tokens)
                .map_err(|e| {
                    Error::Core(mm_core::Error::Tokenizer(format!(
                        "cannot encode text: {e}"
                    )))
                })?;
            ids.push(enc.get_ids().to_vec());
        }
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.tokenizer.pad_id();
        let mut attention_mask = Vec::with_capacity(ids.len());
        for row in &mut ids {
            let n = longest - row.len();
            let mut mask = vec![1u32; row.len()];
            if self.options.pad_left {
                row.splice(0..0, std::iter::repeat_n(pad, n));
                mask.splice(0..0, std::iter::repeat_n(0, n));
            } else {
                row.resize(longest, pad);
                mask.resize(longest, 0);
            }
            attention_mask.push(mask);
        }
        Ok(ProcessorOutput {
            input_ids: ids,
            attention_mask,
            images: processed,
        })
    }
}
