//! `AutoencoderTiny`: the real TAEF2 weights reproduce the upstream golden outputs and
//! reconstruct real photos; the diffusers layout matches diffusers on a tiny random config.

mod common;

use common::{Expected, assets, device, fixture, photo, psnr};
use mm_diffusion::vae::{AutoencoderTiny, AutoencoderTinyConfig};

fn taef2() -> AutoencoderTiny {
    let dir = assets().join("taef2");
    AutoencoderTiny::from_original_files(
        &AutoencoderTinyConfig::taef2(),
        dir.join("taef2_encoder.safetensors"),
        dir.join("taef2_decoder.safetensors"),
        &device(),
    )
    .unwrap()
}

/// The upstream reference ran the same fp16 weights in f32; measured on the CPU: 4.3e-6
/// (latent) and 1.9e-6 (decoded).
const GOLDEN_TOL: f32 = 1e-4;

#[test]
fn taef2_matches_upstream_golden_outputs() {
    let model = taef2();
    let golden =
        Expected::open(&assets().join("taef2/golden_astronaut128_taef2_taesana.safetensors"));
    let latent = model.encode_unit_range(golden.float::<4>("image")).unwrap();
    golden.check("taef2_latent", latent, GOLDEN_TOL);
    let decoded = model
        .decode_unit_range(golden.float::<4>("taef2_latent"))
        .unwrap();
    golden.check("taef2_decoded", decoded, GOLDEN_TOL);
}

fn roundtrip_psnr(model: &AutoencoderTiny, name: &str, size: u32) -> f32 {
    let image = photo(name, size);
    let latent = model.encode_unit_range(image.clone()).unwrap();
    let [_, c, h, w] = latent.dims();
    assert_eq!(c, 32);
    assert_eq!([h * 8, w * 8], [image.dims()[2], image.dims()[3]]);
    let decoded = model.decode_unit_range(latent).unwrap();
    let db = psnr(decoded, image);
    eprintln!("{name} at {size}: {db:.2} dB");
    db
}

#[test]
fn taef2_reconstructs_real_photos() {
    let model = taef2();
    for name in ["chelsea.png", "coffee.png", "camera.png", "rocket.jpg"] {
        let db = roundtrip_psnr(&model, name, 192);
        assert!(db >= 29.0, "{name}: {db:.2} dB < 29 dB");
    }
}

#[test]
fn taef2_reconstructs_astronaut_512() {
    let db = roundtrip_psnr(&taef2(), "astronaut.png", 512);
    assert!(db >= 30.5, "astronaut: {db:.2} dB, expected about 31 dB");
}

/// bf16 compute on the real TAEF2 weights and photos: the round trip's PSNR against the
/// original drops by at most 0.2 dB, and the bf16 reconstruction is within 30 dB of the f32
/// one (issue target).
#[test]
fn taef2_round_trip_in_bf16() {
    use mm_core::precision::{ComputeDtype, autocast};
    let model = taef2();
    for name in [
        "chelsea.png",
        "coffee.png",
        "camera.png",
        "rocket.jpg",
        "astronaut.png",
    ] {
        let image = photo(name, 256);
        let round_trip = || {
            let latent = model.encode_unit_range(image.clone()).unwrap();
            model.decode_unit_range(latent).unwrap()
        };
        let f32 = autocast(ComputeDtype::F32, round_trip);
        let bf16 = autocast(ComputeDtype::Bf16, round_trip);
        let (db32, db16) = (psnr(f32.clone(), image.clone()), psnr(bf16.clone(), image));
        let agreement = psnr(bf16, f32.clamp(0.0, 1.0));
        eprintln!(
            "{name}: round trip f32 {db32:.3} dB, bf16 {db16:.3} dB (drop {:.3}); \
             bf16 vs f32 {agreement:.1} dB",
            db32 - db16
        );
        assert!(db32 - db16 <= 0.2, "{name}: {db32:.3} → {db16:.3} dB");
        assert!(agreement >= 30.0, "{name}: bf16 vs f32 {agreement:.1} dB");
    }
}

#[test]
fn diffusers_layout_matches_diffusers() {
    let model = AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap();
    assert_eq!(model.config().num_encoder_blocks, [1, 2, 2, 2]);
    let exp = Expected::fixture("taesd-tiny");
    let latents = model.encode(exp.float("image")).unwrap();
    exp.check("latents", latents.clone(), 1e-4);
    exp.check("decoded", model.decode(latents.clone()).unwrap(), 1e-4);
    exp.check(
        "decoded_in",
        model.decode(exp.float("latents_in")).unwrap(),
        1e-4,
    );
    let scaled = model.scale_latents(latents);
    exp.check("scaled_latents", scaled.clone(), 1e-6);
    exp.check("unscaled_latents", model.unscale_latents(scaled), 1e-5);
}
