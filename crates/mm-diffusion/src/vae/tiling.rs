//! Tiled and sliced processing of large inputs, shared by the autoencoders, and the memory
//! estimate checked before an encode or decode allocates anything.
//!
//! diffusers offers two switches on its autoencoders, both off by default:
//!
//! - `enable_tiling()`: an input larger than a tile is cut into overlapping tiles that are
//!   encoded or decoded one at a time and blended over their overlap, so the activations are
//!   those of one tile whatever the image size. The result differs slightly from untiled
//!   processing (each tile sees only its neighbourhood). [`AutoencoderKL`](super::AutoencoderKL)
//!   blends each tile into its upper and left neighbours and crops (`tiled_decode`);
//!   [`AutoencoderTiny`](super::AutoencoderTiny) blends each tile into the output with ramp
//!   masks (`_tiled_decode`). Both are reproduced exactly, with the same default tile sizes.
//! - `enable_slicing()`: a batch is processed one image at a time (same result).
//!
//! Here they are [`VaeOptions`], set with
//! [`Autoencoder::set_options`](super::Autoencoder::set_options). Tiling has a third mode,
//! [`TileMode::Auto`], which tiles only when the untiled call would need more than the memory
//! limit of [`mm_core::limits`]: results equal diffusers' untiled ones whenever those fit,
//! and a large image still goes through instead of failing.
//!
//! Before any call, the peak memory of its activations is estimated — `batch` (1 with slicing)
//! × the widest full-resolution feature map × the live tensors measured at that resolution ×
//! the bytes per element, plus the input and output — and checked with
//! [`mm_core::limits::check_memory`]: an untiled call over the limit fails with
//! [`mm_core::Error::TooLarge`] (its message says how to raise the limit or to tile) instead
//! of aborting the process; a tiled call needs one tile's activations plus the whole output.

use std::str::FromStr;

use burn::tensor::{Int, Tensor};
use mm_core::limits::{check_memory, memory_limit, tensor_bytes};

use crate::{Error, Result};

/// When an autoencoder cuts its input into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TileMode {
    /// Never (diffusers' default). A call whose estimated memory exceeds the limit fails with
    /// [`mm_core::Error::TooLarge`] before allocating.
    #[default]
    Off,
    /// Whenever the input is larger than a tile on either side (diffusers'
    /// `enable_tiling()`).
    On,
    /// Like [`On`](Self::On), but only when the untiled call's estimate exceeds
    /// [`mm_core::limits::memory_limit`]; otherwise untiled, like [`Off`](Self::Off).
    Auto,
}

impl FromStr for TileMode {
    type Err = Error;

    /// `off`, `on` or `auto`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "on" => Ok(Self::On),
            "auto" => Ok(Self::Auto),
            other => Err(Error::InvalidArgument {
                name: "tiling",
                reason: format!("'{other}' is not one of off, on, auto"),
            }),
        }
    }
}

/// The tiles' geometry (diffusers' `tile_sample_min_size` and `tile_overlap_factor`; the
/// latent tile is the sample tile divided by the downscale factor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Tile side in image pixels, a multiple of the downscale factor (diffusers:
    /// `AutoencoderKL`: the config's `sample_size`; `AutoencoderTiny`: 512).
    pub sample_tile: usize,
    /// Fraction of a tile shared with its neighbour, in `[0, 1)` (diffusers:
    /// `AutoencoderKL` 0.25, `AutoencoderTiny` 0.125).
    pub overlap: f64,
}

/// How an autoencoder processes its inputs: diffusers' `enable_tiling()` and
/// `enable_slicing()`, both off by default. Get a model's with
/// [`Autoencoder::options`](super::Autoencoder::options) (its `tiling` is the model's
/// default), change it with the builder methods and set it back:
///
/// ```no_run
/// # fn main() -> mm_diffusion::Result<()> {
/// use mm_diffusion::vae::{Autoencoder, AutoencoderKL, TileMode};
/// let mut vae = AutoencoderKL::load("stable-diffusion-v1-5/vae", &mm_core::device::cpu())?;
/// vae.set_options(vae.options().tile_mode(TileMode::Auto).slicing(true))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeOptions {
    /// When to tile.
    pub tile_mode: TileMode,
    /// The tiles.
    pub tiling: Tiling,
    /// Whether a batch is processed one image at a time.
    pub slicing: bool,
}

impl VaeOptions {
    /// Untiled and unsliced, with `tiling` ready for when tiling is turned on.
    pub fn new(tiling: Tiling) -> Self {
        Self {
            tile_mode: TileMode::Off,
            tiling,
            slicing: false,
        }
    }

    /// Sets when to tile.
    pub fn tile_mode(self, tile_mode: TileMode) -> Self {
        Self { tile_mode, ..self }
    }

    /// Sets the tiles' geometry.
    pub fn tiling(self, tiling: Tiling) -> Self {
        Self { tiling, ..self }
    }

    /// Sets whether a batch is processed one image at a time.
    pub fn slicing(self, slicing: bool) -> Self {
        Self { slicing, ..self }
    }
}

/// The sides of a tiling in both spaces: tiles and the steps between them, in image pixels
/// and in latents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TileSides {
    pub sample: usize,
    pub latent: usize,
    pub sample_step: usize,
    pub latent_step: usize,
}

impl TileSides {
    /// diffusers' arithmetic: a step is `int(tile · (1 - overlap))`. Fails unless the tiles and
    /// steps are positive multiples of the downscale factor `f` (whole latents) and the
    /// overlap is in `[0, 1)`.
    pub fn new(tiling: &Tiling, f: usize) -> Result<Self> {
        let step = |tile: usize| (tile as f64 * (1.0 - tiling.overlap)) as usize;
        let sides = Self {
            sample: tiling.sample_tile,
            latent: tiling.sample_tile / f,
            sample_step: step(tiling.sample_tile),
            latent_step: step(tiling.sample_tile / f),
        };
        if !(0.0..1.0).contains(&tiling.overlap)
            || sides.latent == 0
            || !sides.sample.is_multiple_of(f)
            || !sides.sample_step.is_multiple_of(f)
            || sides.latent_step == 0
            || sides.sample_step == 0
        {
            return Err(Error::Config(format!(
                "tiling {tiling:?}: the tile side must be a positive multiple of {f} whose \
                 non-overlapping part is one too, and the overlap in [0, 1)"
            )));
        }
        Ok(sides)
    }
}

/// `clamp(k / den, 0, 1)` for `k` in `0..n`: the blend weights of both tilings.
pub(crate) fn ramp(n: usize, den: f64, like: &Tensor<4>) -> Tensor<1> {
    Tensor::<1, Int>::arange(0..n as i64, &like.device())
        .float()
        .cast(like.dtype())
        .div_scalar(den)
        .clamp(0.0, 1.0)
}

/// The `tile` × `tile` tiles of `x` that start every `step` rows and columns (the last ones
/// cut by the border), in diffusers' order (row by row), each with its first row and column.
pub(crate) fn tiles(
    x: &Tensor<4>,
    tile: usize,
    step: usize,
) -> impl Iterator<Item = ([usize; 2], Tensor<4>)> + '_ {
    let [_, _, h, w] = x.dims();
    (0..h).step_by(step).flat_map(move |i| {
        (0..w).step_by(step).map(move |j| {
            let t = x.clone().narrow(2, i, tile.min(h - i));
            ([i, j], t.narrow(3, j, tile.min(w - j)))
        })
    })
}

/// The part of a tiled call that is the same for both autoencoders: which path to take, the
/// memory check, slicing.
pub(crate) struct Pass<'a> {
    /// What the call is, for error messages (`AutoencoderKL decode`).
    pub what: &'static str,
    /// The model's options.
    pub options: &'a VaeOptions,
    /// The input tile side (pixels to encode, latents to decode).
    pub tile: usize,
    /// Inputs with a side above this are tiled: `AutoencoderKL`'s tile side, or
    /// `AutoencoderTiny`'s step between tiles (diffusers always tiles it, and the tiles start
    /// every step, so only an input within one step is a single tile).
    pub split_above: usize,
    /// The output's channels.
    pub out_channels: usize,
    /// Output side = input side × `scale[0]` / `scale[1]`.
    pub scale: [usize; 2],
    /// Channels of the widest feature map at the image's resolution.
    pub widest: usize,
    /// How many such maps are live at the peak (measured per model).
    pub live_maps: u64,
    /// Bytes per element of the network's compute dtype.
    pub elem: u64,
}

impl Pass<'_> {
    /// The estimated peak bytes of the untiled network's activations on an input of `shape`:
    /// `live_maps` maps of `widest` channels at the image's resolution.
    fn activations(&self, [b, _, h, w]: [usize; 4]) -> u64 {
        let [num, den] = self.scale;
        let up = (num / den).max(1);
        tensor_bytes(&[b, self.widest, h * up, w * up], self.elem).saturating_mul(self.live_maps)
    }

    /// Runs `untiled` or `tiled` on `x` (image by image with slicing), after checking the
    /// memory that path needs against the limit.
    pub fn run(
        &self,
        x: Tensor<4>,
        untiled: impl Fn(Tensor<4>) -> Tensor<4>,
        tiled: impl Fn(Tensor<4>) -> Tensor<4>,
    ) -> Result<Tensor<4>> {
        let tile = self.check(x.dims(), x.dtype().size() as u64)?;
        let f = |x| if tile { tiled(x) } else { untiled(x) };
        Ok(if self.options.slicing && x.dims()[0] > 1 {
            Tensor::cat(x.split(1, 0).into_iter().map(f).collect(), 0)
        } else {
            f(x)
        })
    }

    /// Whether an input of `shape` (`elem` bytes an element) is tiled, after checking the
    /// memory that path needs against the limit; allocates nothing.
    pub fn check(&self, shape: [usize; 4], elem: u64) -> Result<bool> {
        let [b, c, h, w] = shape;
        let [num, den] = self.scale;
        let out = tensor_bytes(&[b, self.out_channels, h * num / den, w * num / den], elem);
        let input = tensor_bytes(&shape, elem);
        let batch = if self.options.slicing { 1 } else { b };
        let untiled_need = self
            .activations([batch, c, h, w])
            .saturating_add(input)
            .saturating_add(out);
        let larger = h > self.split_above || w > self.split_above;
        let tile = larger
            && match self.options.tile_mode {
                TileMode::Off => false,
                TileMode::On => true,
                TileMode::Auto => untiled_need > memory_limit(),
            };
        if tile {
            // One tile's activations, the input, the output and the tiles kept for blending.
            let tile_need = self
                .activations([batch, c, h.min(self.tile), w.min(self.tile)])
                .saturating_add(input)
                .saturating_add(out.saturating_mul(2));
            let what = format!("{} of {shape:?} in tiles of {}", self.what, self.tile);
            check_memory(what, tile_need)?;
        } else {
            check_memory(format!("{} of {shape:?}", self.what), untiled_need).map_err(
                |e| match e {
                    mm_core::Error::TooLarge {
                        what,
                        needed,
                        limit,
                        hint,
                    } if larger => mm_core::Error::TooLarge {
                        what,
                        needed,
                        limit,
                        hint: format!(
                            "{hint}, or tile it (VaeOptions::tile_mode(TileMode::Auto) or On)"
                        ),
                    },
                    e => e,
                },
            )?;
        }
        Ok(tile)
    }
}
