//! bf16 compute (`ComputeDtype::Bf16`: the products' operands rounded to bfloat16, the sums
//! f32) against f32 on the tiny fixtures: the UNet's ε, the VAE's decoded image and the
//! pipeline's text embeddings stay within a bound that bf16's rounding implies.
//!
//! bf16 keeps 8 significant bits: rounding an operand moves it by at most u = 2⁻⁹ of itself,
//! so each product in a layer is off by at most 2u of itself, and a layer's output by at most
//! 2u of the sum of its terms' magnitudes. Through the few layers of a tiny model, with
//! normalisations in between that keep the magnitudes in check, the error relative to the
//! output's largest value stays a small multiple of that: the bound here is 16u = 2⁻⁵.
//! (Measured: printed with `--nocapture`.)

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture};
use mm_core::precision::{autocast_dtype, compute_error};
use mm_diffusion::pipelines::{GenerateOptions, StableDiffusion};
use mm_diffusion::unet::UNet2DConditionModel;
use mm_diffusion::vae::AutoencoderKL;

/// 16 units of bf16's rounding (u = 2⁻⁹).
const BOUND: f32 = 16.0 / 512.0;

/// How far `f` with bf16 products is from f32, relative to the output's largest value.
fn compare<const D: usize>(what: &str, f: impl Fn() -> Tensor<D>) -> f32 {
    let error = compute_error(f);
    eprintln!("{what}: bf16 vs f32: {error} (bound on the max: {BOUND:.2e})");
    error.max_relative
}

#[test]
fn unet_epsilon_in_bf16() {
    let unet =
        UNet2DConditionModel::load(fixture("unet-sd1-tiny").to_str().unwrap(), &device()).unwrap();
    let exp = Expected::fixture("unet-sd1-tiny");
    let rel = compare("UNet ε (unet-sd1-tiny)", || {
        unet.forward(
            exp.float("sample"),
            exp.float("timestep"),
            exp.float("encoder_hidden_states"),
        )
        .unwrap()
    });
    assert!(rel < BOUND);
}

#[test]
fn vae_image_in_bf16() {
    let vae = AutoencoderKL::load(fixture("vae-kl-tiny").to_str().unwrap(), &device()).unwrap();
    let exp = Expected::fixture("vae-kl-tiny");
    let latent = vae.encode(exp.float("image")).unwrap().mode();
    let rel = compare("VAE decode (vae-kl-tiny)", || {
        vae.decode(latent.clone()).unwrap()
    });
    assert!(rel < BOUND);
}

#[test]
fn text_states_in_bf16() {
    let pipeline = StableDiffusion::load(fixture("sd-tiny").to_str().unwrap(), &device()).unwrap();
    let opts = GenerateOptions::new("a photograph of an astronaut riding a horse");
    // Through the pipeline's own option (which `encode_prompt` enters), set to the dtype
    // `compute_error` runs the closure with.
    let rel = compare("text states (sd-tiny)", || {
        let opts = opts.clone().compute_dtype(autocast_dtype());
        pipeline.encode_prompt(&opts).unwrap().cond
    });
    assert!(rel < BOUND);
}
