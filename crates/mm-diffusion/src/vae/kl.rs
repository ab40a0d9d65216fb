//! `AutoencoderKL`: the variational autoencoder of Stable Diffusion 1.x/2.x, SDXL, SD3 and
//! FLUX, in diffusers' layout (`config.json` + `diffusion_pytorch_model.safetensors`).
//!
//! ```no_run
//! # fn main() -> mm_diffusion::Result<()> {
//! use mm_diffusion::vae::{Autoencoder, AutoencoderKL};
//! let device = mm_core::device::cpu();
//! let vae = AutoencoderKL::load("stable-diffusion-v1-5/vae", &device)?;
//! # let images = burn::tensor::Tensor::<4>::zeros([1, 3, 512, 512], &device);
//! let latents = vae.scale_for_diffusion(vae.encode(images)?.mode()); // images in [-1, 1]
//! let decoded = vae.decode(vae.unscale_from_diffusion(latents))?;    // back in [-1, 1]
//! # Ok(()) }
//! ```

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use mm_core::config::Checks;
use mm_core::nn::{Activation, group_norm};
use mm_core::precision::{conv2d, module_compute_dtype};
use mm_core::weights::Weights;
use serde::{Deserialize, Serialize};

use super::Autoencoder;
use super::attention::SpatialAttention;
use super::layers::{conv, group_norm_layer};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D, VAE_NORM_EPS};
use super::tiling::{Pass, TileSides, Tiling, VaeOptions, ramp, tiles};
use crate::check::{check_image, check_latents};
use crate::loading::component;
use crate::{Error, Result};

/// diffusers' `AutoencoderKL` config, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// One per resolution level; only `DownEncoderBlock2D` is supported.
    pub down_block_types: Vec<String>,
    /// One per resolution level; only `UpDecoderBlock2D` is supported.
    pub up_block_types: Vec<String>,
    /// Width of each level, from the image side.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder has one more).
    pub layers_per_block: usize,
    /// Activation of the ResNet blocks.
    pub act_fn: Activation,
    /// Latent channels.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Training resolution (informational).
    pub sample_size: serde_json::Value,
    /// Pipelines multiply latents by this (after subtracting `shift_factor`).
    pub scaling_factor: f64,
    /// Pipelines subtract this from latents before scaling (FLUX, SD3); absent: 0.
    pub shift_factor: Option<f64>,
    /// Per-channel latent means (SDXL-style normalisation, used by some pipelines).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent standard deviations.
    pub latents_std: Option<Vec<f64>>,
    /// Whether diffusers runs this VAE in f32 even in half-precision pipelines.
    pub force_upcast: bool,
    /// Whether the encoder ends with the 1×1 `quant_conv`.
    pub use_quant_conv: bool,
    /// Whether the decoder starts with the 1×1 `post_quant_conv`.
    pub use_post_quant_conv: bool,
    /// Whether the middle blocks have their attention layer.
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: Activation::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32.into(),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// How many times smaller than the image the latent is on each side.
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Fails with [`Error::Config`] on a config the modules cannot be built from.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::Config(format!("AutoencoderKL: {msg}")));
        let levels = self.block_out_channels.len();
        if levels == 0
            || self.down_block_types.len() != levels
            || self.up_block_types.len() != levels
        {
            return invalid(format!(
                "block_out_channels ({levels}), down_block_types ({}) and up_block_types ({}) \
                 need the same, non-zero length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let unsupported = |types: &[String], name: &str| types.iter().find(|t| *t != name).cloned();
        if let Some(t) = unsupported(&self.down_block_types, "DownEncoderBlock2D")
            .or_else(|| unsupported(&self.up_block_types, "UpDecoderBlock2D"))
        {
            return invalid(format!("block type '{t}' is not supported"));
        }
        let groups = self.norm_num_groups;
        if groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| !c.is_multiple_of(groups) || *c == 0)
        {
            return invalid(format!(
                "block_out_channels {:?} must be non-zero multiples of norm_num_groups ({groups})",
                self.block_out_channels
            ));
        }
        if [self.in_channels, self.out_channels, self.latent_channels].contains(&0) {
            return invalid("channel counts must be > 0".into());
        }
        // ResNet blocks (two 3×3 convolutions each): `layers_per_block` per encoder level,
        // one more per decoder level, two in each mid block.
        let resnets = self
            .block_out_channels
            .iter()
            .map(|&c| (2.0 * self.layers_per_block as f64 + 1.0) * 18.0 * (c as f64).powi(2));
        let mid = 36.0 * (*self.block_out_channels.last().unwrap_or(&0) as f64).powi(2);
        Checks::new("AutoencoderKL").parameters(resnets.sum::<f64>() + 2.0 * mid)?;
        Ok(())
    }
}

/// `UNetMidBlock2D` as the VAE builds it: ResNet, attention, ResNet (the attention is left
/// out with `mid_block_add_attention: false`).
#[derive(Module, Debug)]
pub struct MidBlock {
    /// The two ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// The attention between them (empty when disabled).
    pub attentions: Vec<SpatialAttention>,
}

impl MidBlock {
    fn new(config: &AutoencoderKLConfig, device: &Device) -> Self {
        let c = config.block_out_channels[config.block_out_channels.len() - 1];
        let g = config.norm_num_groups;
        let resnet = || ResnetBlock2D::new(c, c, g, config.act_fn, device);
        Self {
            resnets: vec![resnet(), resnet()],
            attentions: config
                .mid_block_add_attention
                .then(|| SpatialAttention::new(c, g, device))
                .into_iter()
                .collect(),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut resnets = self.resnets.iter();
        let mut x = match resnets.next() {
            Some(first) => first.forward(x),
            None => x,
        };
        for (i, resnet) in resnets.enumerate() {
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x);
            }
            x = resnet.forward(x);
        }
        x
    }
}

/// `DownEncoderBlock2D`: ResNet blocks, then a downsampler (none at the lowest resolution).
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    /// The ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// The downsampler (`downsamplers.0`).
    pub downsamplers: Option<Vec<Downsample2D>>,
}

impl DownEncoderBlock2D {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = resnets_forward(&self.resnets, x);
        self.downsamplers
            .iter()
            .flatten()
            .fold(x, |x, d| d.forward(x))
    }
}

/// `UpDecoderBlock2D`: ResNet blocks, then an upsampler (none at the full resolution).
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    /// The ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// The upsampler (`upsamplers.0`).
    pub upsamplers: Option<Vec<Upsample2D>>,
}

impl UpDecoderBlock2D {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = resnets_forward(&self.resnets, x);
        self.upsamplers
            .iter()
            .flatten()
            .fold(x, |x, u| u.forward(x))
    }
}

/// `layers` ResNet blocks from `cin` to `cout` channels (the first one changes the width).
fn resnets(
    config: &AutoencoderKLConfig,
    [cin, cout]: [usize; 2],
    layers: usize,
    device: &Device,
) -> Vec<ResnetBlock2D> {
    (0..layers)
        .map(|i| {
            let cin = if i == 0 { cin } else { cout };
            ResnetBlock2D::new(cin, cout, config.norm_num_groups, config.act_fn, device)
        })
        .collect()
}

fn resnets_forward(resnets: &[ResnetBlock2D], x: Tensor<4>) -> Tensor<4> {
    resnets.iter().fold(x, |x, r| r.forward(x))
}

/// The VAE encoder (`Encoder`): images to the latent distribution's moments `[mean,
/// logvar]` (before `quant_conv`).
#[derive(Module, Debug)]
pub struct Encoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// One block per level, from the image side.
    pub down_blocks: Vec<DownEncoderBlock2D>,
    /// Middle block.
    pub mid_block: MidBlock,
    /// Output group norm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution to `2 × latent_channels`.
    pub conv_out: Conv2d,
}

impl Encoder {
    /// A randomly initialised encoder (the config is assumed valid).
    pub fn new(config: &AutoencoderKLConfig, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let last = ch.len() - 1;
        Self {
            conv_in: conv(config.in_channels, ch[0], 3, true, device),
            down_blocks: (0..=last)
                .map(|i| DownEncoderBlock2D {
                    resnets: resnets(
                        config,
                        [ch[i.saturating_sub(1)], ch[i]],
                        config.layers_per_block,
                        device,
                    ),
                    downsamplers: (i != last).then(|| vec![Downsample2D::new(ch[i], device)]),
                })
                .collect(),
            mid_block: MidBlock::new(config, device),
            conv_norm_out: group_norm_layer(config.norm_num_groups, ch[last], VAE_NORM_EPS, device),
            conv_out: conv(ch[last], 2 * config.latent_channels, 3, true, device),
        }
    }

    /// Encodes images in `[-1, 1]` into moments `[batch, 2 × latent, H / f, W / f]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv_in, images);
        let x = self.down_blocks.iter().fold(x, |x, b| b.forward(x));
        let x = self.mid_block.forward(x);
        conv2d(
            &self.conv_out,
            group_norm(&self.conv_norm_out, x, Some(Activation::Silu)),
        )
    }
}

/// The VAE decoder (`Decoder`): latents (after `post_quant_conv`) to images in about
/// `[-1, 1]`.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Middle block.
    pub mid_block: MidBlock,
    /// One block per level, from the latent side.
    pub up_blocks: Vec<UpDecoderBlock2D>,
    /// Output group norm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution to the image channels.
    pub conv_out: Conv2d,
}

impl Decoder {
    /// A randomly initialised decoder (the config is assumed valid).
    pub fn new(config: &AutoencoderKLConfig, device: &Device) -> Self {
        let ch: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let last = ch.len() - 1;
        Self {
            conv_in: conv(config.latent_channels, ch[0], 3, true, device),
            mid_block: MidBlock::new(config, device),
            up_blocks: (0..=last)
                .map(|i| UpDecoderBlock2D {
                    resnets: resnets(
                        config,
                        [ch[i.saturating_sub(1)], ch[i]],
                        config.layers_per_block + 1,
                        device,
                    ),
                    upsamplers: (i != last).then(|| vec![Upsample2D::new(ch[i], device)]),
                })
                .collect(),
            conv_norm_out: group_norm_layer(config.norm_num_groups, ch[last], VAE_NORM_EPS, device),
            conv_out: conv(ch[last], config.out_channels, 3, true, device),
        }
    }

    /// Decodes latents into images in about `[-1, 1]` (not clamped).
    pub fn forward(&self, latents: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv_in, latents);
        let x = self.mid_block.forward(x);
        let x = self.up_blocks.iter().fold(x, |x, b| b.forward(x));
        conv2d(
            &self.conv_out,
            group_norm(&self.conv_norm_out, x, Some(Activation::Silu)),
        )
    }
}

/// The diagonal Gaussian posterior the KL encoder outputs (diffusers'
/// `DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// The mean, `[batch, latent, h, w]`.
    pub mean: Tensor<4>,
    /// The log-variance, clamped to `[-30, 20]`.
    pub logvar: Tensor<4>,
}

impl DiagonalGaussian {
    /// Splits moments `[batch, 2 × latent, h, w]` into mean and log-variance along channels.
    pub fn from_moments(moments: Tensor<4>) -> Self {
        let half = moments.dims()[1] / 2;
        Self {
            mean: moments.clone().narrow(1, 0, half),
            logvar: moments.narrow(1, half, half).clamp(-30.0, 20.0),
        }
    }

    /// The standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Tensor<4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor<4> {
        self.mean.clone()
    }

    /// A sample `mean + std · noise` with caller-supplied standard normal `noise` of the
    /// mean's shape (so results are reproducible with the caller's generator).
    pub fn sample(&self, noise: Tensor<4>) -> Result<Tensor<4>> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::Shape {
                what: "noise",
                expected: format!("{:?} (the latent mean's shape)", self.mean.dims()),
                got: noise.dims().to_vec(),
            });
        }
        Ok(self.mean.clone() + self.std() * noise)
    }
}

/// diffusers' `AutoencoderKL` tiling (`_tiled_encode`, `tiled_decode`): every tile output is
/// blended into its (already blended) upper and left neighbours over `blend` rows or columns,
/// then cropped to `keep`; rows are cropped and stitched as soon as the next row no longer
/// needs them.
struct RowBlender {
    blend: usize,
    keep: usize,
    /// The previous row's blended tiles.
    above: Vec<Tensor<4>>,
    /// The current row's blended tiles.
    row: Vec<Tensor<4>>,
    /// Stitched rows.
    done: Vec<Tensor<4>>,
}

impl RowBlender {
    /// Tiles every `step` of `tile` input elements, mapped by `f`.
    fn run(
        x: &Tensor<4>,
        [tile, step, blend, keep]: [usize; 4],
        f: impl Fn(Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        let mut rows = Self {
            blend,
            keep,
            above: Vec::new(),
            row: Vec::new(),
            done: Vec::new(),
        };
        for ([i, j], input) in tiles(x, tile, step) {
            if j == 0 && i > 0 {
                rows.next_row();
            }
            rows.push(f(input));
        }
        rows.next_row();
        rows.next_row();
        Tensor::cat(rows.done, 2)
    }

    fn push(&mut self, mut tile: Tensor<4>) {
        if let Some(above) = self.above.get(self.row.len()) {
            tile = blend(above, tile, 2, self.blend);
        }
        if let Some(left) = self.row.last() {
            tile = blend(left, tile, 3, self.blend);
        }
        self.row.push(tile);
    }

    /// Crops and stitches the row above (no longer needed), and moves on.
    fn next_row(&mut self) {
        let finished = std::mem::replace(&mut self.above, std::mem::take(&mut self.row));
        if finished.is_empty() {
            return;
        }
        let keep = self.keep;
        let crop = |t: Tensor<4>| {
            let [_, _, th, tw] = t.dims();
            t.narrow(2, 0, keep.min(th)).narrow(3, 0, keep.min(tw))
        };
        self.done
            .push(Tensor::cat(finished.into_iter().map(crop).collect(), 3));
    }
}

/// Blends the last `extent` rows (`dim` 2) or columns (`dim` 3) of `a` into the first ones of
/// `b`, linearly from all `a` to all `b` (diffusers' `blend_v` / `blend_h`).
fn blend(a: &Tensor<4>, b: Tensor<4>, dim: usize, extent: usize) -> Tensor<4> {
    let (len_a, len_b) = (a.dims()[dim], b.dims()[dim]);
    let e = extent.min(len_a).min(len_b);
    if e == 0 {
        return b;
    }
    let mut shape = [1; 4];
    shape[dim] = e;
    let weight = ramp(e, e as f64, &b).reshape(shape);
    let tail = a.clone().narrow(dim, len_a - e, e);
    let head = b.clone().narrow(dim, 0, e);
    let mixed = tail * (weight.clone().neg() + 1.0) + head * weight;
    if e == len_b {
        return mixed;
    }
    Tensor::cat(vec![mixed, b.narrow(dim, e, len_b - e)], dim)
}

/// Live full-resolution feature maps of the widest width at the peak of an untiled call,
/// measured (peak RSS over image sizes, minus the image-sized tensors) at 3.75.
const LIVE_MAPS: u64 = 4;

/// diffusers' `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// The encoder (`encoder.*`).
    pub encoder: Encoder,
    /// The decoder (`decoder.*`).
    pub decoder: Decoder,
    /// 1×1 convolution of the moments (`use_quant_conv`).
    pub quant_conv: Option<Conv2d>,
    /// 1×1 convolution of the latents before decoding (`use_post_quant_conv`).
    pub post_quant_conv: Option<Conv2d>,
    #[module(skip)]
    config: AutoencoderKLConfig,
    #[module(skip)]
    options: VaeOptions,
}

impl AutoencoderKL {
    /// A randomly initialised autoencoder; fails on an unusable config.
    pub fn new(config: &AutoencoderKLConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let moments = 2 * config.latent_channels;
        let latent = config.latent_channels;
        Ok(Self {
            encoder: Encoder::new(config, device),
            decoder: Decoder::new(config, device),
            quant_conv: config
                .use_quant_conv
                .then(|| conv(moments, moments, 1, true, device)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| conv(latent, latent, 1, true, device)),
            options: VaeOptions::new(default_tiling(config)),
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// Loads a diffusers `AutoencoderKL` folder (a pipeline's `vae/`) or cached repo id.
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let (config, weights) = component(model.as_ref())?;
        Self::from_weights(&config, weights, device)
    }

    /// Builds the model and loads `weights` strictly. The attention names of checkpoints
    /// saved by diffusers before 0.14 (`query`, `key`, `value`, `proj_attn`, as in Stable
    /// Diffusion 1.5's `vae/`) are read as today's (`to_q`, `to_k`, `to_v`, `to_out.0`).
    pub fn from_weights(
        config: &AutoencoderKLConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        let weights = weights.rename(|name| Some(modern_attention_name(name)));
        Ok(weights.load_into(Self::new(config, device)?)?)
    }

    /// Encodes images in `[-1, 1]` (`[batch, 3, H, W]`, `H` and `W` multiples of
    /// [`Autoencoder::downscale_factor`]) into the latent distribution, tiled and sliced as
    /// the [options](Autoencoder::options) say. Fails with [`mm_core::Error::TooLarge`] (as
    /// [`Error::Core`]) when the estimated memory exceeds [`mm_core::limits::memory_limit`].
    pub fn encode(&self, images: Tensor<4>) -> Result<DiagonalGaussian> {
        let f = self.downscale_factor();
        check_image(&images, self.config.in_channels, f)?;
        let sides = TileSides::new(&self.options.tiling, f)?;
        let blend = (sides.latent as f64 * self.options.tiling.overlap) as usize;
        let plan = [sides.sample, sides.sample_step, blend, sides.latent - blend];
        let moments = self
            .pass("AutoencoderKL encode", sides.sample, [1, f])
            .run(
                images,
                |x| self.moments(x),
                |x| RowBlender::run(&x, plan, |tile| self.moments(tile)),
            )?;
        Ok(DiagonalGaussian::from_moments(moments))
    }

    /// Decodes (unscaled) latents into images in about `[-1, 1]` (not clamped), tiled and
    /// sliced as the [options](Autoencoder::options) say; fails like
    /// [`encode`](Self::encode) when the estimate exceeds the memory limit.
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        check_latents(&latents, self.config.latent_channels)?;
        let sides = TileSides::new(&self.options.tiling, self.downscale_factor())?;
        let blend = (sides.sample as f64 * self.options.tiling.overlap) as usize;
        let plan = [sides.latent, sides.latent_step, blend, sides.sample - blend];
        self.decode_pass(&sides).run(
            latents,
            |z| self.decode_unchecked(z),
            |z| RowBlender::run(&z, plan, |tile| self.decode_unchecked(tile)),
        )
    }

    /// Checks, allocating nothing, that [`decode`](Self::decode) of f32 latents of
    /// `latent_shape` fits in the memory limit with the current options (the check `decode`
    /// makes first), so that a pipeline can refuse a request before it denoises.
    pub fn check_decode(&self, latent_shape: [usize; 4]) -> Result<()> {
        let sides = TileSides::new(&self.options.tiling, self.downscale_factor())?;
        self.decode_pass(&sides).check(latent_shape, 4)?;
        Ok(())
    }

    fn decode_pass(&self, sides: &TileSides) -> Pass<'_> {
        self.pass(
            "AutoencoderKL decode",
            sides.latent,
            [self.downscale_factor(), 1],
        )
    }

    /// The options' handling of an encode (`scale` 1/f) or decode (`scale` f/1) whose input
    /// tiles are `tile` wide. The widest full-resolution feature map is the first level's, or
    /// in the decoder the last upsampler's (the second level's width).
    fn pass(&self, what: &'static str, tile: usize, scale: [usize; 2]) -> Pass<'_> {
        let ch = &self.config.block_out_channels;
        let (out_channels, widest, dtype) = if scale[0] == 1 {
            let moments = 2 * self.config.latent_channels;
            (moments, ch[0], module_compute_dtype(&self.encoder))
        } else {
            let upsampled = ch[ch.len().min(2) - 1];
            let decoder = module_compute_dtype(&self.decoder);
            (self.config.out_channels, ch[0].max(upsampled), decoder)
        };
        Pass {
            what,
            options: &self.options,
            tile,
            split_above: tile,
            out_channels,
            scale,
            widest,
            live_maps: LIVE_MAPS,
            elem: dtype.size() as u64,
        }
    }

    /// The moments of `images` (encoder and `quant_conv`), computed in the weights' compute
    /// dtype and returned in the images' dtype.
    fn moments(&self, images: Tensor<4>) -> Tensor<4> {
        let in_dtype = images.dtype();
        let dtype = module_compute_dtype(&self.encoder);
        let moments = self.encoder.forward(images.cast(dtype));
        match &self.quant_conv {
            Some(quant) => conv2d(quant, moments),
            None => moments,
        }
        .cast(in_dtype)
    }

    /// `post_quant_conv` and the decoder, computed in the weights' compute dtype and returned
    /// in the latents' dtype.
    fn decode_unchecked(&self, latents: Tensor<4>) -> Tensor<4> {
        let in_dtype = latents.dtype();
        let z = latents.cast(module_compute_dtype(&self.decoder));
        let z = match &self.post_quant_conv {
            Some(post) => conv2d(post, z),
            None => z,
        };
        self.decoder.forward(z).cast(in_dtype)
    }
}

/// diffusers' default tiling: tiles of the config's `sample_size`, overlapping by 0.25. A size
/// whose tiles would not be whole latents is rounded down to a multiple of 4 × the downscale
/// factor (diffusers would cut such tiles between latents), so that the default is always
/// usable.
fn default_tiling(config: &AutoencoderKLConfig) -> Tiling {
    let size = &config.sample_size;
    let side = size
        .as_u64()
        .or_else(|| size.get(0).and_then(|v| v.as_u64()))
        .map_or(512, |s| s as usize);
    let tiling = Tiling {
        sample_tile: side,
        overlap: 0.25,
    };
    let f = config.downscale_factor();
    if TileSides::new(&tiling, f).is_ok() {
        return tiling;
    }
    Tiling {
        sample_tile: (side / (4 * f)).max(1) * 4 * f,
        ..tiling
    }
}

impl Autoencoder for AutoencoderKL {
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
        Ok(self.encode(images)?.mode())
    }

    fn decode_latents(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        self.decode(latents)
    }

    fn options(&self) -> VaeOptions {
        self.options
    }

    fn set_options(&mut self, options: VaeOptions) -> Result<()> {
        TileSides::new(&options.tiling, self.downscale_factor())?;
        self.options = options;
        Ok(())
    }
}

/// Maps the pre-0.14 attention names of diffusers VAE checkpoints to today's.
fn modern_attention_name(name: &str) -> String {
    const OLD: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    if name.contains(".attentions.") {
        for (old, new) in OLD {
            if name.contains(old) {
                return name.replacen(old, new, 1);
            }
        }
    }
    name.to_string()
}
