//! The input embeddings of SD3's transformer: diffusers' `PatchEmbed` (patches of the latents
//! plus the cropped learned position grid) and `CombinedTimestepTextProjEmbeddings` (the
//! timestep and the pooled text embedding, summed).

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor, TensorData};
use mm_core::nn::Activation;
use mm_core::precision::conv2d;

use crate::unet::{TimestepEmbedding, timestep_embedding};
use crate::{Error, Result};

/// Sinusoidal features of the timestep (diffusers' `Timesteps(256, flip_sin_to_cos=True)`).
const TIME_PROJ_DIM: usize = 256;

/// diffusers' `PatchEmbed` with `pos_embed_max_size` (SD3): a stride-`patch` convolution to
/// tokens, plus the centre crop of a `max × max` grid of position embeddings that matches the
/// token grid.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// `in_channels → dim`, kernel and stride `patch_size`.
    pub proj: Conv2d,
    /// `[1, max², dim]` position embeddings (a buffer the checkpoints store).
    pub pos_embed: Param<Tensor<3>>,
    #[module(skip)]
    patch: usize,
    #[module(skip)]
    max_size: usize,
}

impl PatchEmbed {
    /// A patch embedding with diffusers' initial 2-D sin-cos position grid (`base` = the
    /// trained token grid side, `sample_size / patch`).
    pub fn new(
        in_channels: usize,
        dim: usize,
        patch: usize,
        max_size: usize,
        base: usize,
        device: &Device,
    ) -> Self {
        let shape = [1, max_size * max_size, dim];
        // Lazily built, like the layers' random weights: a checkpoint's grid replaces it
        // without the default ever being computed (SD3.5 medium's is 384² × 1536 values).
        let init = move |device: &Device, _grad: bool| {
            let grid = sincos_grid(dim, max_size, base.max(1));
            Tensor::from_data(TensorData::new(grid, shape), device)
        };
        let pos_embed =
            Param::uninitialized(ParamId::new(), init, device.clone(), false, shape.into());
        Self {
            proj: Conv2dConfig::new([in_channels, dim], [patch, patch])
                .with_stride([patch, patch])
                .init(device),
            pos_embed,
            patch,
            max_size,
        }
    }

    /// `[batch, channels, h, w]` latents to `[batch, (h / p)·(w / p), dim]` tokens, row-major
    /// over the patch grid, with their position embeddings added.
    pub fn forward(&self, latents: Tensor<4>) -> Result<Tensor<3>> {
        let [b, _, h, w] = latents.dims();
        let (gh, gw) = (h / self.patch, w / self.patch);
        if gh > self.max_size || gw > self.max_size {
            return Err(Error::InvalidArgument {
                name: "hidden_states",
                reason: format!(
                    "a {h}×{w} latent is a {gh}×{gw} patch grid, larger than the model's \
                     position grid ({m}×{m}: at most {px}×{px} latent pixels)",
                    m = self.max_size,
                    px = self.max_size * self.patch
                ),
            });
        }
        let x = conv2d(&self.proj, latents);
        let dim = x.dims()[1];
        let tokens = x.reshape([b, dim, gh * gw]).swap_dims(1, 2);
        let (top, left) = ((self.max_size - gh) / 2, (self.max_size - gw) / 2);
        let pos = (self.pos_embed.val())
            .reshape([self.max_size, self.max_size, dim])
            .slice([top..top + gh, left..left + gw])
            .reshape([1, gh * gw, dim])
            .cast(tokens.dtype());
        Ok(tokens + pos)
    }
}

/// diffusers' `get_2d_sincos_pos_embed(dim, grid, base_size=base)` (f64 arithmetic as there),
/// row-major over a `grid × grid` grid: the first half of each row embeds the column
/// coordinate, the second half the row coordinate, each as `[sin, cos]` of `dim / 4`
/// frequencies; coordinates are `index / (grid / base)`.
fn sincos_grid(dim: usize, grid: usize, base: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let scale = grid as f64 / base as f64;
    let half = |pos: f64, out: &mut Vec<f32>| {
        out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
        out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
    };
    let mut out = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            let start = out.len();
            half(col as f64 / scale, &mut out);
            half(row as f64 / scale, &mut out);
            out.resize(start + dim, 0.0);
        }
    }
    out
}

/// diffusers' `CombinedTimestepTextProjEmbeddings`: `timestep_embedder(time_proj(t)) +
/// text_embedder(pooled)`, both two-layer SiLU MLPs; with a `guidance_embedder` (FLUX.1-dev's
/// `CombinedTimestepGuidanceTextProjEmbeddings`) the embedded guidance scale is added too.
#[derive(Module, Debug)]
pub struct CombinedTimestepTextProjEmbeddings {
    /// `256 → dim → dim` over the sinusoidal timestep features.
    pub timestep_embedder: TimestepEmbedding,
    /// `256 → dim → dim` over the sinusoidal guidance-scale features (guidance-distilled
    /// models).
    pub guidance_embedder: Option<TimestepEmbedding>,
    /// `pooled_dim → dim → dim` (diffusers' `PixArtAlphaTextProjection`).
    pub text_embedder: TimestepEmbedding,
}

impl CombinedTimestepTextProjEmbeddings {
    /// A randomly initialised embedding to `dim` features, with a guidance embedder when
    /// `guidance`.
    pub fn new(dim: usize, pooled_dim: usize, guidance: bool, device: &Device) -> Self {
        let mlp = |input| TimestepEmbedding::new(input, dim, Activation::Silu, device);
        Self {
            timestep_embedder: mlp(TIME_PROJ_DIM),
            guidance_embedder: guidance.then(|| mlp(TIME_PROJ_DIM)),
            text_embedder: mlp(pooled_dim),
        }
    }

    /// The conditioning `[batch, dim]` of timesteps `[batch]` (fractional values allowed),
    /// guidance values `[batch]` (used only with a guidance embedder) and pooled text
    /// embeddings `[batch, pooled_dim]`.
    pub fn forward(
        &self,
        timestep: Tensor<1>,
        guidance: Option<Tensor<1>>,
        pooled: Tensor<2>,
    ) -> Tensor<2> {
        let dtype = pooled.dtype();
        let features = |t| timestep_embedding(t, TIME_PROJ_DIM, true, 0.0).cast(dtype);
        let mut emb = self.timestep_embedder.forward(features(timestep));
        if let (Some(embedder), Some(g)) = (&self.guidance_embedder, guidance) {
            emb = emb + embedder.forward(features(g));
        }
        emb + self.text_embedder.forward(pooled)
    }
}
