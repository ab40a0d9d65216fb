//! Training objectives, as diffusers' and transformers' training scripts compute them.
//!
//! - Diffusion ([`diffusion_target`], [`diffusion_loss`]): the network predicts the noise ε,
//!   the velocity `v = √ᾱ·ε − √(1−ᾱ)·x₀` or the clean sample `x₀`; the loss is the mean
//!   squared error per sample, optionally weighted by min-SNR ([`min_snr_weights`], Hang et
//!   al. 2023, as `train_text_to_image.py --snr_gamma` does).
//! - Flow matching ([`flow_matching_inputs`], [`flow_matching_loss`]): rectified flow as SD3
//!   and FLUX train it, `x_σ = (1 − σ)·x₀ + σ·ε`, target `ε − x₀`.
//! - Classifier-free guidance ([`condition_dropout`]): a fraction of the conditions replaced
//!   by the unconditional one, so one network learns both.
//! - Autoencoders ([`kl_divergence`], [`autoencoder_loss`]): reconstruction MSE plus the KL
//!   divergence of the diagonal Gaussian posterior from N(0, I), as diffusers'
//!   `DiagonalGaussianDistribution.kl()`.
//! - Language models ([`causal_lm_loss`]): cross-entropy of each position's logits against the
//!   next token, labels of −100 ignored, as transformers' `ForCausalLMLoss`.
//!
//! Every function is plain burn tensor arithmetic, so gradients flow on an autodiff device.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use crate::{Error, Result};

/// What a diffusion network predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (`epsilon`).
    Epsilon,
    /// The velocity `√ᾱ·ε − √(1−ᾱ)·x₀` (`v_prediction`).
    Velocity,
    /// The clean sample `x₀` (`sample`).
    Sample,
}

/// `ᾱ_t` of each batch entry, `[batch]`, broadcast over a `[batch, c, h, w]` tensor.
fn per_sample(values: Tensor<1>) -> Tensor<4> {
    let b = values.dims()[0];
    values.reshape([b, 1, 1, 1])
}

/// The noised sample `√ᾱ·x₀ + √(1−ᾱ)·ε` (diffusers' `DDPMScheduler.add_noise`), with
/// `alphas_cumprod` the `ᾱ_t` of each batch entry.
pub fn add_noise(x0: Tensor<4>, noise: Tensor<4>, alphas_cumprod: Tensor<1>) -> Tensor<4> {
    let a = per_sample(alphas_cumprod);
    x0 * a.clone().sqrt() + noise * (a.neg() + 1.0).sqrt()
}

/// The regression target of `prediction` for clean samples `x0` noised with `noise` at
/// `ᾱ_t = alphas_cumprod` (per batch entry).
pub fn diffusion_target(
    prediction: Prediction,
    x0: Tensor<4>,
    noise: Tensor<4>,
    alphas_cumprod: Tensor<1>,
) -> Tensor<4> {
    match prediction {
        Prediction::Epsilon => noise,
        Prediction::Sample => x0,
        Prediction::Velocity => {
            let a = per_sample(alphas_cumprod);
            noise * a.clone().sqrt() - x0 * (a.neg() + 1.0).sqrt()
        }
    }
}

/// The signal-to-noise ratio `ᾱ / (1 − ᾱ)` of each batch entry.
pub fn snr(alphas_cumprod: Tensor<1>) -> Tensor<1> {
    alphas_cumprod.clone() / (alphas_cumprod.neg() + 1.0)
}

/// The min-SNR-γ loss weights of each batch entry: `min(SNR, γ) / SNR` for ε-prediction,
/// `min(SNR, γ) / (SNR + 1)` for v-prediction, `min(SNR, γ)` for x₀-prediction (the MSE of
/// each target is then comparable to x₀'s, as in diffusers' `compute_snr` use). `gamma`
/// must be positive (5 is the paper's).
pub fn min_snr_weights(
    prediction: Prediction,
    alphas_cumprod: Tensor<1>,
    gamma: f64,
) -> Result<Tensor<1>> {
    if !(gamma > 0.0 && gamma.is_finite()) {
        return Err(Error::InvalidConfig(format!(
            "snr_gamma {gamma} (must be > 0)"
        )));
    }
    let snr = snr(alphas_cumprod);
    let clipped = snr.clone().clamp_max(gamma);
    Ok(match prediction {
        Prediction::Epsilon => clipped / snr,
        Prediction::Velocity => clipped / (snr + 1.0),
        Prediction::Sample => clipped,
    })
}

/// The mean squared error of `prediction` against `target`, averaged over each sample's
/// values, weighted per sample by `weights` when given, averaged over the batch: a
/// one-element tensor.
pub fn diffusion_loss(
    prediction: Tensor<4>,
    target: Tensor<4>,
    weights: Option<Tensor<1>>,
) -> Tensor<1> {
    let b = prediction.dims()[0];
    let per_sample = (prediction - target)
        .powi_scalar(2)
        .reshape([b as i32, -1])
        .mean_dim(1)
        .reshape([b]);
    match weights {
        Some(w) => (per_sample * w).mean(),
        None => per_sample.mean(),
    }
}

/// Rectified flow's noised input and target for clean samples `x0`, noise `noise` and noise
/// levels `sigmas` (per batch entry, in `[0, 1]`): `((1 − σ)·x₀ + σ·ε, ε − x₀)`.
pub fn flow_matching_inputs(
    x0: Tensor<4>,
    noise: Tensor<4>,
    sigmas: Tensor<1>,
) -> (Tensor<4>, Tensor<4>) {
    let s = per_sample(sigmas);
    let noisy = x0.clone() * (s.clone().neg() + 1.0) + noise.clone() * s;
    (noisy, noise - x0)
}

/// Rectified flow's loss: the MSE of the predicted velocity against `ε − x₀`
/// ([`flow_matching_inputs`]), weighted per sample when `weights` are given.
pub fn flow_matching_loss(
    prediction: Tensor<4>,
    x0: Tensor<4>,
    noise: Tensor<4>,
    weights: Option<Tensor<1>>,
) -> Tensor<1> {
    diffusion_loss(prediction, noise - x0, weights)
}

/// Classifier-free guidance training: each row of `conditions` (`[batch, …]`) replaced by
/// `unconditional` (`[1, …]`, the empty prompt's embedding) where `drop` is true.
pub fn condition_dropout<const D: usize>(
    conditions: Tensor<D>,
    unconditional: Tensor<D>,
    drop: &[bool],
) -> Result<Tensor<D>> {
    let dims = conditions.dims();
    if drop.len() != dims[0]
        || unconditional.dims()[0] != 1
        || unconditional.dims()[1..] != dims[1..]
    {
        return Err(Error::InvalidConfig(format!(
            "condition dropout of {dims:?} conditions with {} flags and an unconditional \
             embedding of {:?}",
            drop.len(),
            unconditional.dims()
        )));
    }
    let device = conditions.device();
    let mut shape = [1; D];
    shape[0] = dims[0];
    let mask = Tensor::<1>::from_floats(
        drop.iter()
            .map(|&d| if d { 1.0 } else { 0.0 })
            .collect::<Vec<f32>>()
            .as_slice(),
        &device,
    )
    .reshape(shape);
    let keep = mask.clone().neg() + 1.0;
    Ok(conditions * keep + unconditional * mask)
}

/// The KL divergence of `N(mean, exp(logvar))` from `N(0, I)`, summed over each sample's
/// values (`[batch]`): diffusers' `DiagonalGaussianDistribution.kl()`.
pub fn kl_divergence(mean: Tensor<4>, logvar: Tensor<4>) -> Tensor<1> {
    let b = mean.dims()[0];
    let terms = mean.powi_scalar(2) + logvar.clone().exp() - logvar - 1.0;
    terms.reshape([b as i32, -1]).sum_dim(1).reshape([b]) * 0.5
}

/// An autoencoder's loss: the reconstruction MSE (mean over values) plus `kl_weight` times
/// the mean over the batch of [`kl_divergence`] (Stable Diffusion's VAE used 1e-6).
pub fn autoencoder_loss(
    reconstruction: Tensor<4>,
    target: Tensor<4>,
    mean: Tensor<4>,
    logvar: Tensor<4>,
    kl_weight: f64,
) -> Tensor<1> {
    let mse = (reconstruction - target).powi_scalar(2).mean();
    mse + kl_divergence(mean, logvar).mean() * kl_weight
}

/// A causal language model's loss: the mean cross-entropy of the logits at each position
/// (`[batch, seq, vocab]`) against the next position's label (`[batch, seq]`), labels of
/// −100 ignored, as transformers' `ForCausalLMLoss`. No position to score is an error.
pub fn causal_lm_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> Result<Tensor<1>> {
    let [b, t, v] = logits.dims();
    if labels.dims() != [b, t] || t < 2 {
        return Err(Error::InvalidConfig(format!(
            "logits {:?} and labels {:?} (need [batch, seq ≥ 2, vocab] and [batch, seq])",
            [b, t, v],
            labels.dims()
        )));
    }
    let logits = logits.narrow(1, 0, t - 1).reshape([b * (t - 1), v]);
    let labels = labels.narrow(1, 1, t - 1).reshape([b * (t - 1)]);
    let valid = labels.clone().greater_equal_elem(0);
    let count = valid.clone().int().sum().into_scalar::<i64>();
    if count == 0 {
        return Err(Error::InvalidConfig("every label is ignored (-100)".into()));
    }
    let safe = labels.mask_fill(valid.clone().bool_not(), 0);
    let picked = log_softmax(logits, 1)
        .gather(1, safe.unsqueeze_dim(1))
        .reshape([b * (t - 1)]);
    let picked = picked.mask_fill(valid.bool_not(), 0.0);
    Ok(picked.sum().neg() / count as f64)
}
