//! `AutoencoderKL` matches diffusers on a tiny random config, and the model built from Stable
//! Diffusion 1.5's `vae/config.json` has exactly the real checkpoint's tensor names and shapes.

mod common;

use common::{Expected, device, fixture};
use mm_core::weights::{Weights, expected_tensors};
use mm_diffusion::Error;
use mm_diffusion::vae::{
    Autoencoder, AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny, TileMode,
};

const TOL: f32 = 1e-4;

fn tiny_path() -> String {
    fixture("vae-kl-tiny").to_str().unwrap().to_string()
}

fn check_outputs(vae: &AutoencoderKL, exp: &Expected) {
    let posterior = vae.encode(exp.float("image")).unwrap();
    exp.check("latent_mean", posterior.mean.clone(), TOL);
    exp.check("latent_logvar", posterior.logvar.clone(), TOL);
    exp.check(
        "latent_sample",
        posterior.sample(exp.float("noise")).unwrap(),
        TOL,
    );
    exp.check("decoded", vae.decode(posterior.mode()).unwrap(), TOL);
}

#[test]
fn kl_matches_diffusers() {
    let vae = AutoencoderKL::load(tiny_path(), &device()).unwrap();
    assert_eq!(vae.downscale_factor(), 4);
    check_outputs(&vae, &Expected::fixture("vae-kl-tiny"));
}

#[test]
fn kl_reads_pre_0_14_attention_names() {
    let folder = fixture("vae-kl-tiny");
    let config: AutoencoderKLConfig =
        mm_core::config::read_json(folder.join("config.json")).unwrap();
    let old = Weights::open(&folder).unwrap().rename(|name| {
        Some(
            name.replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn."),
        )
    });
    assert!(old.contains("encoder.mid_block.attentions.0.proj_attn.weight"));
    let vae = AutoencoderKL::from_weights(&config, old, &device()).unwrap();
    check_outputs(&vae, &Expected::fixture("vae-kl-tiny"));
}

#[test]
fn latent_scaling_round_trips() {
    let vae = AutoencoderKL::load(tiny_path(), &device()).unwrap();
    assert_eq!(vae.config().shift_factor, Some(0.1159));
    let z = Expected::fixture("vae-kl-tiny").float::<4>("latent_mean");
    let scaled = vae.scale_for_diffusion(z.clone());
    let expected = (z.clone() - 0.1159) * 0.3611;
    assert!(common::max_abs_diff(scaled.clone(), expected) < 1e-6);
    assert!(common::max_abs_diff(vae.unscale_from_diffusion(scaled), z) < 1e-5);
}

#[test]
fn noise_of_the_wrong_shape_is_rejected() {
    let vae = AutoencoderKL::load(tiny_path(), &device()).unwrap();
    let exp = Expected::fixture("vae-kl-tiny");
    let posterior = vae.encode(exp.float("image")).unwrap();
    let err = posterior.sample(exp.float("image")).unwrap_err();
    assert!(matches!(err, Error::Shape { what: "noise", .. }), "{err}");
}

#[test]
fn sd15_vae_names_and_shapes() {
    let dir = fixture("full/sd15-vae");
    let config: AutoencoderKLConfig = mm_core::config::read_json(dir.join("config.json")).unwrap();
    let vae = AutoencoderKL::new(&config, &device()).unwrap();
    let text = std::fs::read_to_string(dir.join("tensors.json")).unwrap();
    let mut theirs: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    theirs.sort();
    let ours = expected_tensors(&vae);
    let missing: Vec<_> = theirs.iter().filter(|t| !ours.contains(t)).collect();
    let extra: Vec<_> = ours.iter().filter(|t| !theirs.contains(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "checkpoint tensors we lack: {missing:?}\nours not in checkpoint: {extra:?}"
    );
    assert_eq!(ours.len(), 248);
}

/// The tiny VAE with diffusers' `enable_tiling()`: tiles of its `sample_size` (32 pixels).
fn tiled_vae() -> AutoencoderKL {
    let mut vae = AutoencoderKL::load(tiny_path(), &device()).unwrap();
    assert_eq!(vae.options().tiling.sample_tile, 32);
    vae.set_options(vae.options().tile_mode(TileMode::On))
        .unwrap();
    vae
}

#[test]
fn tiled_encode_and_decode_match_diffusers() {
    let vae = tiled_vae();
    let exp = Expected::fixture("vae-kl-tiny");
    let posterior = vae.encode(exp.float("tiled_image")).unwrap();
    exp.check("tiled_latent_mean", posterior.mean.clone(), TOL);
    exp.check("tiled_latent_logvar", posterior.logvar, TOL);
    let decoded = vae.decode(posterior.mean).unwrap();
    exp.check("tiled_decoded", decoded, TOL);
    // Inputs no larger than a tile take the untiled path.
    let small = vae.encode(exp.float("image")).unwrap();
    exp.check("latent_mean", small.mean, TOL);
}

/// Encodes and decodes through the trait, as a pipeline would, and checks against diffusers.
fn check_through_trait(vae: &dyn Autoencoder, fixture: &str, latent: &str, decoded: &str) {
    let exp = Expected::fixture(fixture);
    let z = vae.encode_latents(exp.float("image")).unwrap();
    exp.check(latent, z.clone(), TOL);
    let scaled = vae.scale_for_diffusion(z);
    exp.check(
        decoded,
        vae.decode_latents(vae.unscale_from_diffusion(scaled))
            .unwrap(),
        TOL,
    );
}

#[test]
fn both_autoencoders_work_through_the_trait() {
    let kl = AutoencoderKL::load(tiny_path(), &device()).unwrap();
    check_through_trait(&kl, "vae-kl-tiny", "latent_mean", "decoded");
    assert_eq!((kl.latent_channels(), kl.shift_factor()), (4, 0.1159));
    let tiny = AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap();
    check_through_trait(&tiny, "taesd-tiny", "latents", "decoded");
    assert_eq!((tiny.downscale_factor(), tiny.scaling_factor()), (8, 1.0));
}

#[test]
fn tiling_handles_a_last_tile_thinner_than_the_blend() {
    // 32-pixel tiles every 24: a 28-pixel-wide image leaves a 4-pixel (1-latent) last column,
    // narrower than the 2-latent blend.
    let vae = tiled_vae();
    let exp = Expected::fixture("vae-kl-tiny");
    let image = exp.float::<4>("tiled_image").narrow(3, 0, 28);
    let posterior = vae.encode(image).unwrap();
    exp.check("thin_latent_mean", posterior.mean.clone(), TOL);
    let decoded = vae.decode(posterior.mean).unwrap();
    exp.check("thin_decoded", decoded, TOL);
}
