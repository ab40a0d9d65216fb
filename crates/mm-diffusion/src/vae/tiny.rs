//! `AutoencoderTiny`: the TAESD family of tiny distilled autoencoders (TAESD, TAESDXL, TAESD3,
//! TAEF1, TAEF2), which share the latent space of a full VAE at a fraction of its cost.
//!
//! Two checkpoint layouts load into the same modules:
//!
//! - diffusers' `AutoencoderTiny` (`config.json` + `diffusion_pytorch_model.safetensors`, keys
//!   `encoder.layers.N.*` / `decoder.layers.N.*`): [`AutoencoderTiny::load`];
//! - the upstream `taesd` files (`taef2_encoder.safetensors`, `taef2_decoder.safetensors`, bare
//!   `nn.Sequential` indices like `1.conv.0.weight`, the decoder's index 0 being its clamp):
//!   [`AutoencoderTiny::from_original`] with a preset such as [`AutoencoderTinyConfig::taef2`].
//!
//! [`EncoderTiny`] and [`DecoderTiny`] work in the upstream convention (images in `[0, 1]`, raw
//! latents); [`AutoencoderTiny::encode`] and [`AutoencoderTiny::decode`] in diffusers' (images
//! in `[-1, 1]`).

use std::path::Path;

use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, activation};
use mm_core::config::Checks;
use mm_core::precision::{conv2d, module_compute_dtype};
use mm_core::weights::Weights;
use serde::{Deserialize, Serialize};

use super::Autoencoder;
use super::layers::{Layer, Upsample, conv, group_norm_layer, sequential, strided_conv};
use super::tiling::{Pass, Tiling, VaeOptions, ramp, tiles};
use crate::check::{check_image, check_latents};
use crate::loading::component;
use crate::{Error, Result};

/// diffusers' `AutoencoderTiny` config, with its defaults (those of TAESD for SD 1.x/2.x).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderTinyConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Width of each encoder stage (all equal, as diffusers builds them).
    pub encoder_block_out_channels: Vec<usize>,
    /// Width of each decoder stage (all equal).
    pub decoder_block_out_channels: Vec<usize>,
    /// Activation inside the blocks; only `relu` (every published checkpoint) is supported.
    pub act_fn: String,
    /// Upsampling mode; only `nearest` is supported.
    pub upsample_fn: String,
    /// Latent channels.
    pub latent_channels: usize,
    /// Upsampling factor between decoder stages.
    pub upsampling_scaling_factor: usize,
    /// Residual blocks per encoder stage (the first stage has no downsampling convolution).
    pub num_encoder_blocks: Vec<usize>,
    /// Residual blocks per decoder stage (the last stage has no upsampling).
    pub num_decoder_blocks: Vec<usize>,
    /// Range of the raw latents that [`AutoencoderTiny::scale_latents`] maps onto `[0, 1]`.
    pub latent_magnitude: f64,
    /// Offset of [`AutoencoderTiny::scale_latents`].
    pub latent_shift: f64,
    /// Latent scaling a diffusion pipeline applies (`1.0` for TAESD: none).
    pub scaling_factor: f64,
    /// Latent shift a diffusion pipeline applies (`0.0` or absent: none).
    pub shift_factor: Option<f64>,
    /// TAEF2 only (not a diffusers field): the blocks of the stage next to the latent (the
    /// encoder's last, the decoder's first) add a pooled branch (`pool.0`, `pool.1`,
    /// `pool.3`) to their input.
    pub pooled_latent_blocks: bool,
}

impl Default for AutoencoderTinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            scaling_factor: 1.0,
            shift_factor: None,
            pooled_latent_blocks: false,
        }
    }
}

impl AutoencoderTinyConfig {
    /// TAESD for the latent space of a VAE with `latent_channels` channels (4: SD 1.x/2.x and
    /// SDXL; 16: SD3 and FLUX.1).
    pub fn taesd(latent_channels: usize) -> Self {
        Self {
            latent_channels,
            ..Self::default()
        }
    }

    /// TAEF2, for the FLUX.2 VAE latent space: 32 channels, pooled blocks next to the latent.
    pub fn taef2() -> Self {
        Self {
            latent_channels: 32,
            pooled_latent_blocks: true,
            ..Self::default()
        }
    }

    /// How many times smaller than the image the latent is on each side.
    pub fn downscale_factor(&self) -> usize {
        1 << self.num_encoder_blocks.len().saturating_sub(1)
    }

    /// Fails with [`Error::Config`] on a config the modules cannot be built from (or that
    /// diffusers would build but not run).
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::Config(format!("AutoencoderTiny: {msg}")));
        if self.act_fn != "relu" {
            return invalid(format!("act_fn '{}' is not supported (relu)", self.act_fn));
        }
        if self.upsample_fn != "nearest" {
            return invalid(format!(
                "upsample_fn '{}' is not supported (nearest)",
                self.upsample_fn
            ));
        }
        for (side, channels, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() || channels.len() != blocks.len() {
                return invalid(format!(
                    "{side}_block_out_channels ({}) and num_{side}_blocks ({}) need the same, \
                     non-zero length",
                    channels.len(),
                    blocks.len()
                ));
            }
            if channels.iter().any(|&c| c != channels[0] || c == 0) {
                return invalid(format!(
                    "{side}_block_out_channels {channels:?} must be equal and non-zero"
                ));
            }
        }
        if self.upsampling_scaling_factor == 0
            || [self.in_channels, self.out_channels, self.latent_channels].contains(&0)
        {
            return invalid("channel counts and upsampling_scaling_factor must be > 0".into());
        }
        // Three 3×3 convolutions per block, on both sides.
        let blocks = |channels: &[usize], blocks: &[usize]| -> f64 {
            (channels.iter().zip(blocks))
                .map(|(&c, &n)| n as f64 * 27.0 * (c as f64).powi(2))
                .sum()
        };
        Checks::new("AutoencoderTiny").parameters(
            blocks(&self.encoder_block_out_channels, &self.num_encoder_blocks)
                + blocks(&self.decoder_block_out_channels, &self.num_decoder_blocks),
        )?;
        Ok(())
    }
}

/// TAESD's residual block: `ReLU(conv(x) + skip(x))`, where `conv` is conv → ReLU → conv →
/// ReLU → conv (keys `conv.0`, `conv.2`, `conv.4`) and `skip` a 1×1 convolution when the
/// widths differ. TAEF2's pooled blocks first replace `x` by `x + pool(x)`.
#[derive(Module, Debug)]
pub struct TinyBlock {
    /// The three 3×3 convolutions and the ReLUs between them.
    pub conv: Vec<Layer>,
    /// 1×1 convolution without bias when the block changes width.
    pub skip: Option<Conv2d>,
    /// TAEF2: 1×1 conv to 4× width (no bias), GroupNorm(4), ReLU, 1×1 conv back (no bias).
    pub pool: Option<Vec<Layer>>,
}

impl TinyBlock {
    /// A randomly initialised block from `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, pooled: bool, device: &Device) -> Self {
        let relu = || Layer::Relu(Relu::new());
        let pool = pooled.then(|| {
            let wide = 4 * cin;
            vec![
                Layer::Conv(conv(cin, wide, 1, false, device)),
                Layer::Norm(group_norm_layer(4, wide, 1e-5, device)),
                relu(),
                Layer::Conv(conv(wide, cin, 1, false, device)),
            ]
        });
        Self {
            conv: vec![
                Layer::Conv(conv(cin, cout, 3, true, device)),
                relu(),
                Layer::Conv(conv(cout, cout, 3, true, device)),
                relu(),
                Layer::Conv(conv(cout, cout, 3, true, device)),
            ],
            skip: (cin != cout).then(|| conv(cin, cout, 1, false, device)),
            pool,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.pool {
            Some(pool) => x.clone() + sequential(pool, x),
            None => x,
        };
        let skip = match &self.skip {
            Some(skip) => conv2d(skip, x.clone()),
            None => x.clone(),
        };
        activation::relu(sequential(&self.conv, x) + skip)
    }
}

/// The TAESD encoder (`EncoderTiny`): images in `[0, 1]` to raw latents.
#[derive(Module, Debug)]
pub struct EncoderTiny {
    /// conv, blocks, then per further stage a stride-2 conv (no bias) and blocks; a final conv.
    pub layers: Vec<Layer>,
}

impl EncoderTiny {
    /// A randomly initialised encoder (the config is assumed valid).
    pub fn new(config: &AutoencoderTinyConfig, device: &Device) -> Self {
        let channels = &config.encoder_block_out_channels;
        let last = config.num_encoder_blocks.len() - 1;
        let mut layers = Vec::new();
        for (i, &blocks) in config.num_encoder_blocks.iter().enumerate() {
            let ch = channels[i];
            layers.push(Layer::Conv(if i == 0 {
                conv(config.in_channels, ch, 3, true, device)
            } else {
                strided_conv(ch, ch, [1; 4], false, device)
            }));
            let pooled = config.pooled_latent_blocks && i == last;
            layers
                .extend((0..blocks).map(|_| Layer::Block(TinyBlock::new(ch, ch, pooled, device))));
        }
        layers.push(Layer::Conv(conv(
            channels[last],
            config.latent_channels,
            3,
            true,
            device,
        )));
        Self { layers }
    }

    /// Encodes images in `[0, 1]` (`[batch, 3, H, W]`) into raw latents.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        sequential(&self.layers, images)
    }
}

/// The TAESD decoder (`DecoderTiny`): raw latents to images in about `[0, 1]` (not clamped).
#[derive(Module, Debug)]
pub struct DecoderTiny {
    /// conv, ReLU, then per stage: blocks, upsampling and a conv (no bias) — the last stage
    /// without upsampling and with a biased conv to the image channels.
    pub layers: Vec<Layer>,
}

impl DecoderTiny {
    /// A randomly initialised decoder (the config is assumed valid).
    pub fn new(config: &AutoencoderTinyConfig, device: &Device) -> Self {
        let channels = &config.decoder_block_out_channels;
        let last = config.num_decoder_blocks.len() - 1;
        let mut layers = vec![
            Layer::Conv(conv(config.latent_channels, channels[0], 3, true, device)),
            Layer::Relu(Relu::new()),
        ];
        for (i, &blocks) in config.num_decoder_blocks.iter().enumerate() {
            let ch = channels[i];
            let pooled = config.pooled_latent_blocks && i == 0;
            layers
                .extend((0..blocks).map(|_| Layer::Block(TinyBlock::new(ch, ch, pooled, device))));
            if i == last {
                layers.push(Layer::Conv(conv(ch, config.out_channels, 3, true, device)));
            } else {
                layers.push(Layer::Upsample(Upsample {
                    scale: config.upsampling_scaling_factor,
                }));
                layers.push(Layer::Conv(conv(ch, ch, 3, false, device)));
            }
        }
        Self { layers }
    }

    /// Decodes raw latents into images in about `[0, 1]`. The latents are first soft-clamped
    /// to `(-3, 3)` with `tanh(x / 3) * 3`.
    pub fn forward(&self, latents: Tensor<4>) -> Tensor<4> {
        sequential(&self.layers, (latents / 3.0).tanh() * 3.0)
    }
}

/// diffusers' `AutoencoderTiny`: a TAESD encoder and decoder.
#[derive(Module, Debug)]
pub struct AutoencoderTiny {
    /// The encoder (`encoder.layers.*`).
    pub encoder: EncoderTiny,
    /// The decoder (`decoder.layers.*`).
    pub decoder: DecoderTiny,
    #[module(skip)]
    config: AutoencoderTinyConfig,
    #[module(skip)]
    options: VaeOptions,
}

impl AutoencoderTiny {
    /// A randomly initialised autoencoder; fails on an unusable config.
    pub fn new(config: &AutoencoderTinyConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            encoder: EncoderTiny::new(config, device),
            decoder: DecoderTiny::new(config, device),
            config: config.clone(),
            options: VaeOptions::new(DEFAULT_TILING),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderTinyConfig {
        &self.config
    }

    /// Loads a diffusers `AutoencoderTiny` snapshot folder or cached repo id (`config.json` +
    /// `diffusion_pytorch_model.safetensors`).
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let (config, weights) = component(model.as_ref())?;
        Self::from_weights(&config, weights, device)
    }

    /// Builds the model and loads diffusers-layout weights (`encoder.layers.*`,
    /// `decoder.layers.*`) strictly.
    pub fn from_weights(
        config: &AutoencoderTinyConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// Builds the model and loads the upstream `taesd` encoder and decoder weights (bare
    /// `nn.Sequential` indices; the decoder's index 0 is its parameter-free clamp).
    pub fn from_original(
        config: &AutoencoderTinyConfig,
        encoder: Weights,
        decoder: Weights,
        device: &Device,
    ) -> Result<Self> {
        let model = Self::new(config, device)?;
        let encoder = original_layout(encoder, 0).load_into(model.encoder)?;
        let decoder = original_layout(decoder, 1).load_into(model.decoder)?;
        Ok(Self {
            encoder,
            decoder,
            ..model
        })
    }

    /// [`AutoencoderTiny::from_original`] from the two files.
    pub fn from_original_files(
        config: &AutoencoderTinyConfig,
        encoder: impl AsRef<Path>,
        decoder: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        Self::from_original(
            config,
            Weights::open(encoder)?,
            Weights::open(decoder)?,
            device,
        )
    }

    /// Encodes images in `[-1, 1]` (`[batch, 3, H, W]`, `H` and `W` multiples of
    /// [`Autoencoder::downscale_factor`]) into raw latents, like diffusers'
    /// `AutoencoderTiny.encode(x).latents`.
    pub fn encode(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        self.encode_unit_range((images + 1.0) / 2.0)
    }

    /// Decodes raw latents into images in about `[-1, 1]` (not clamped), like diffusers'
    /// `AutoencoderTiny.decode(z).sample`.
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        Ok(self.decode_unit_range(latents)? * 2.0 - 1.0)
    }

    /// Encodes images in `[0, 1]` (the upstream TAESD convention) into raw latents, tiled and
    /// sliced as the [options](Autoencoder::options) say. Fails with
    /// [`mm_core::Error::TooLarge`] (as [`Error::Core`]) when the estimated memory exceeds
    /// [`mm_core::limits::memory_limit`].
    pub fn encode_unit_range(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        check_image(&images, self.config.in_channels, self.downscale_factor())?;
        self.run(images, true)
    }

    /// Decodes raw latents into images in about `[0, 1]` (the upstream TAESD convention),
    /// tiled and sliced as the [options](Autoencoder::options) say; fails like
    /// [`encode_unit_range`](Self::encode_unit_range) when the estimate exceeds the limit.
    pub fn decode_unit_range(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        check_latents(&latents, self.config.latent_channels)?;
        self.run(latents, false)
    }

    /// The encoder (`encode`) or the decoder on `x`, as the options say, computed in the
    /// weights' compute dtype and returned in `x`'s.
    fn run(&self, x: Tensor<4>, encode: bool) -> Result<Tensor<4>> {
        let f = self.downscale_factor();
        let sides = TinySides::new(&self.options.tiling, f)?;
        let c = &self.config;
        // Input tile and blend, output blend, scale, output and widest channels, dtype.
        let (what, [tile, blend, blend_out], scale, [channels, widest], dtype) = if encode {
            let encoder = module_compute_dtype(&self.encoder);
            let sizes = [sides.sample, sides.blend_sample, sides.blend_latent];
            let widths = [c.latent_channels, c.encoder_block_out_channels[0]];
            ("AutoencoderTiny encode", sizes, [1, f], widths, encoder)
        } else {
            let decoder = module_compute_dtype(&self.decoder);
            let sizes = [sides.latent, sides.blend_latent, sides.blend_sample];
            let widths = [c.out_channels, c.decoder_block_out_channels[0]];
            ("AutoencoderTiny decode", sizes, [f, 1], widths, decoder)
        };
        let forward = |x: Tensor<4>| {
            if encode {
                self.encoder.forward(x)
            } else {
                self.decoder.forward(x)
            }
        };
        let step = tile - blend;
        let plan = MaskBlend {
            tile,
            step,
            blend: blend_out,
            scale,
            channels,
        };
        let pass = Pass {
            what,
            options: &self.options,
            tile,
            split_above: step,
            out_channels: channels,
            scale,
            widest,
            live_maps: LIVE_MAPS,
            elem: dtype.size() as u64,
        };
        let in_dtype = x.dtype();
        let out = pass.run(x.cast(dtype), forward, |x| plan.run(&x, forward))?;
        Ok(out.cast(in_dtype))
    }

    /// Raw latents to `[0, 1]` (for storing them as 8-bit images): `x / (2 ·
    /// latent_magnitude) + latent_shift`, clamped.
    pub fn scale_latents(&self, latents: Tensor<4>) -> Tensor<4> {
        (latents / (2.0 * self.config.latent_magnitude) + self.config.latent_shift).clamp(0.0, 1.0)
    }

    /// The inverse of [`scale_latents`](Self::scale_latents) (without the clamp).
    pub fn unscale_latents(&self, scaled: Tensor<4>) -> Tensor<4> {
        (scaled - self.config.latent_shift) * (2.0 * self.config.latent_magnitude)
    }
}

impl Autoencoder for AutoencoderTiny {
    fn downscale_factor(&self) -> usize {
        self.config.downscale_factor()
    }

    fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    fn shift_factor(&self) -> f64 {
        self.config.shift_factor.unwrap_or(0.0)
    }

    fn encode_latents(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        self.encode(images)
    }

    fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        self.decode(latents)
    }

    fn options(&self) -> VaeOptions {
        self.options
    }

    fn set_options(&mut self, options: VaeOptions) -> Result<()> {
        TinySides::new(&options.tiling, self.downscale_factor())?;
        self.options = options;
        Ok(())
    }
}

/// diffusers' `AutoencoderTiny` tiles: 512 pixels, overlapping by 0.125.
const DEFAULT_TILING: Tiling = Tiling {
    sample_tile: 512,
    overlap: 0.125,
};

/// Live full-resolution feature maps of the decoder's width at the peak of an untiled call:
/// measured 6.0 with TAEF2 (peak RSS at 512² and 1024², minus the image-sized tensors).
const LIVE_MAPS: u64 = 6;

/// The sides of an `AutoencoderTiny` tiling, in diffusers' arithmetic: tiles of `sample`
/// pixels or `latent` latents, blended over `int(tile · overlap)` of them.
struct TinySides {
    sample: usize,
    latent: usize,
    blend_sample: usize,
    blend_latent: usize,
}

impl TinySides {
    /// Fails unless the tile and its blend are whole latents and the blend at least two
    /// latents (diffusers divides by `blend / f - 1`).
    fn new(tiling: &Tiling, f: usize) -> Result<Self> {
        let blend = |tile: usize| (tile as f64 * tiling.overlap) as usize;
        let latent = tiling.sample_tile / f;
        let sides = Self {
            sample: tiling.sample_tile,
            latent,
            blend_sample: blend(tiling.sample_tile),
            blend_latent: blend(latent),
        };
        if !(0.0..1.0).contains(&tiling.overlap)
            || !sides.sample.is_multiple_of(f)
            || sides.blend_sample != f * sides.blend_latent
            || sides.blend_latent < 2
        {
            return Err(Error::Config(format!(
                "tiling {tiling:?}: the tile side must be a multiple of {f}, its overlap a \
                 multiple of {f} of at least {} pixels, and the overlap fraction in [0, 1)",
                2 * f
            )));
        }
        Ok(sides)
    }
}

/// diffusers' `AutoencoderTiny._tiled_encode` / `_tiled_decode`: the tiles' outputs are
/// written in order into a zeroed output, each mixed with what is there by a mask that ramps
/// from 0 to 1 over the first `blend` output rows (and columns) of every tile but those of the
/// first row (column).
struct MaskBlend {
    /// Input tile side and step.
    tile: usize,
    step: usize,
    /// Output rows (columns) of the ramp.
    blend: usize,
    /// Output side = input side × `scale[0]` / `scale[1]`.
    scale: [usize; 2],
    /// Output channels.
    channels: usize,
}

impl MaskBlend {
    fn run(&self, x: &Tensor<4>, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let [num, den] = self.scale;
        let side = self.tile * num / den;
        let shape = [b, self.channels, h * num / den, w * num / den];
        let mut out = Tensor::<4>::zeros(shape, &x.device()).cast(x.dtype());
        let ramp = ramp(side, (self.blend - 1) as f64, x);
        for ([i, j], input) in tiles(x, self.tile, self.step) {
            let tile = f(input);
            let [_, _, th, tw] = tile.dims();
            let (oi, oj) = (i * num / den, j * num / den);
            let region = [0..b, 0..self.channels, oi..oi + th, oj..oj + tw];
            let rows = (i > 0).then(|| ramp.clone().narrow(0, 0, th).reshape([1, 1, th, 1]));
            let cols = (j > 0).then(|| ramp.clone().narrow(0, 0, tw).reshape([1, 1, 1, tw]));
            let mask = match (rows, cols) {
                (Some(r), Some(c)) => Some(r * c),
                (r, c) => r.or(c),
            };
            let value = match mask {
                Some(m) => {
                    let old = out.clone().slice(region.clone());
                    tile * m.clone() + old * (m.neg() + 1.0)
                }
                None => tile,
            };
            out = out.slice_assign(region, value);
        }
        out
    }
}

/// Renames upstream `N.rest` keys to `layers.{N - offset}.rest`; other names are kept, for
/// the strict load to report them.
fn original_layout(weights: Weights, offset: usize) -> Weights {
    weights.rename(|name| {
        let renamed = name.split_once('.').and_then(|(index, rest)| {
            let index = index.parse::<usize>().ok()?.checked_sub(offset)?;
            Some(format!("layers.{index}.{rest}"))
        });
        Some(renamed.unwrap_or_else(|| name.to_string()))
    })
}
