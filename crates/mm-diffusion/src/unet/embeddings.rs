//! The time embedding of the UNet: diffusers' sinusoidal `Timesteps` projection and the
//! `TimestepEmbedding` MLP (also used for SDXL's added conditions and class embeddings).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use mm_core::nn::Activation;
use mm_core::precision::linear;

/// diffusers' `get_timestep_embedding` (`max_period` 10000, `scale` 1): `[n]` timesteps (may
/// be fractional) to `[n, dim]` sinusoidal features, `sin` then `cos` halves (`cos` first
/// with `flip_sin_to_cos`), frequencies `exp(-ln(10000) · i / (dim / 2 - freq_shift))`.
pub fn timestep_embedding(
    timesteps: Tensor<1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<2> {
    let half = dim / 2;
    // In f32 as PyTorch computes it, so the frequencies match bit for bit (up to exp's ulp).
    let log_period = -(10000f64.ln()) as f32;
    let denom = half as f32 - freq_shift as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / denom).exp())
        .collect();
    let device = timesteps.device();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device)
        .cast(timesteps.dtype())
        .unsqueeze_dim::<2>(0);
    let args = timesteps.unsqueeze_dim::<2>(1) * freqs;
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        let n = emb.dims()[0];
        let zeros = Tensor::zeros([n, 1], (&device, emb.dtype()));
        return Tensor::cat(vec![emb, zeros], 1);
    }
    emb
}

/// diffusers' `TimestepEmbedding`: `linear_2(act(linear_1(x + cond_proj(c))))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// Projection of a condition added to the input (`time_cond_proj_dim`: LCM's guidance
    /// embedding), without bias.
    pub cond_proj: Option<Linear>,
    /// First projection.
    pub linear_1: Linear,
    /// Second projection.
    pub linear_2: Linear,
    #[module(skip)]
    act: Activation,
}

impl TimestepEmbedding {
    /// A randomly initialised MLP from `input` to `dim` features.
    pub fn new(input: usize, dim: usize, act: Activation, device: &Device) -> Self {
        Self {
            cond_proj: None,
            linear_1: LinearConfig::new(input, dim).init(device),
            linear_2: LinearConfig::new(dim, dim).init(device),
            act,
        }
    }

    /// Adds `cond_proj` from `cond_dim` features (diffusers' `cond_proj_dim`).
    pub fn with_cond_proj(mut self, cond_dim: usize, device: &Device) -> Self {
        let input = self.linear_1.weight.lazy_shape().to_vec()[0];
        self.cond_proj = Some(
            LinearConfig::new(cond_dim, input)
                .with_bias(false)
                .init(device),
        );
        self
    }

    /// Applies the MLP to `[batch, input]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_with_cond(x, None)
    }

    /// Applies the MLP to `[batch, input]` plus the projected condition `[batch, cond_dim]`
    /// (ignored without `cond_proj`).
    pub fn forward_with_cond(&self, x: Tensor<2>, cond: Option<Tensor<2>>) -> Tensor<2> {
        let x = match (&self.cond_proj, cond) {
            (Some(proj), Some(c)) => x + linear(proj, c),
            _ => x,
        };
        linear(&self.linear_2, self.act.forward(linear(&self.linear_1, x)))
    }
}

/// diffusers' `get_guidance_scale_embedding` (latent consistency models): `w · 1000` embedded
/// sinusoidally, `[sin; cos]` over `dim` features (zero-padded when odd), one row per value of
/// `w` — the `timestep_cond` of an LCM-distilled UNet, with `w = guidance_scale - 1`.
pub fn guidance_scale_embedding(w: &[f64], dim: usize, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let step = (10000f64).ln() / (half.max(2) - 1) as f64;
    let mut rows = Vec::with_capacity(w.len() * dim);
    for &w in w {
        // diffusers computes in float32.
        let w = (w * 1000.0) as f32;
        let freqs = (0..half).map(|i| (-(i as f32) * step as f32).exp() * w);
        let sin: Vec<f32> = freqs.clone().map(f32::sin).collect();
        rows.extend(sin);
        rows.extend(freqs.map(f32::cos));
        if dim % 2 == 1 {
            rows.push(0.0);
        }
    }
    Tensor::from_data(burn::tensor::TensorData::new(rows, [w.len(), dim]), device)
}
