//! Unusable inputs and configs give typed errors, never a panic.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{device, fixture};
use mm_diffusion::Error;
use mm_diffusion::check::check_finite;
use mm_diffusion::vae::{
    AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny, AutoencoderTinyConfig,
};

fn tiny() -> AutoencoderTiny {
    AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap()
}

fn random(shape: [usize; 4]) -> Tensor<4> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &device())
}

#[test]
fn image_size_not_multiple_of_downscale_factor() {
    let err = tiny().encode(random([1, 3, 32, 20])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotMultiple {
                height: 32,
                width: 20,
                factor: 8
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("multiple of 8"), "{err}");
}

#[test]
fn wrong_channel_count() {
    let vae = tiny();
    let err = vae.encode(random([1, 4, 32, 32])).unwrap_err();
    assert!(matches!(err, Error::Shape { what: "image", .. }), "{err}");
    let err = vae.decode(random([1, 3, 4, 4])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "latents",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn non_finite_values_are_rejected() {
    let vae = tiny();
    let nan = random([1, 4, 4, 4]) / 0.0 * 0.0;
    let err = vae.decode(nan).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "latents",
                count: 64
            }
        ),
        "{err}"
    );
    let inf = random([1, 3, 8, 8]).abs() / 0.0;
    assert!(matches!(
        vae.encode(inf).unwrap_err(),
        Error::NonFinite { what: "image", .. }
    ));
    assert!(check_finite("x", &random([1, 1, 2, 2])).is_ok());
}

#[test]
fn unusable_tiny_configs() {
    let cases = [
        AutoencoderTinyConfig {
            act_fn: "gelu".into(),
            ..Default::default()
        },
        AutoencoderTinyConfig {
            num_encoder_blocks: vec![1, 3],
            ..Default::default()
        },
        AutoencoderTinyConfig {
            decoder_block_out_channels: vec![64, 32, 64, 64],
            ..Default::default()
        },
    ];
    for config in cases {
        let err = AutoencoderTiny::new(&config, &device()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

#[test]
fn wrong_checkpoint_reports_every_problem() {
    // The diffusers-layout fixture read as upstream encoder files: nothing matches.
    let weights = mm_core::weights::Weights::open(
        fixture("taesd-tiny").join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = AutoencoderTiny::from_original(
        &AutoencoderTinyConfig::taesd(4),
        weights.clone(),
        weights,
        &device(),
    )
    .unwrap_err();
    let Error::Core(mm_core::Error::Load(report)) = err else {
        panic!("expected a load report, got {err}");
    };
    assert!(!report.missing.is_empty() && !report.unexpected.is_empty());
}

fn kl() -> AutoencoderKL {
    AutoencoderKL::load(fixture("vae-kl-tiny").to_str().unwrap(), &device()).unwrap()
}

#[test]
fn kl_rejects_bad_images_and_latents() {
    let vae = kl();
    let err = vae.encode(random([1, 3, 16, 18])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotMultiple {
                height: 16,
                width: 18,
                factor: 4
            }
        ),
        "{err}"
    );
    let nan = random([2, 4, 3, 3]) / 0.0 * 0.0;
    let err = vae.decode(nan).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "latents",
                ..
            }
        ),
        "{err}"
    );
    let err = vae.decode(random([1, 8, 3, 3])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "latents",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unusable_kl_configs() {
    let cases = [
        AutoencoderKLConfig {
            block_out_channels: vec![64, 48],
            down_block_types: vec!["DownEncoderBlock2D".into(); 2],
            up_block_types: vec!["UpDecoderBlock2D".into(); 2],
            ..Default::default()
        },
        AutoencoderKLConfig {
            down_block_types: vec!["AttnDownEncoderBlock2D".into()],
            ..Default::default()
        },
        AutoencoderKLConfig {
            block_out_channels: vec![64, 64],
            ..Default::default()
        },
    ];
    for config in cases {
        let err = AutoencoderKL::new(&config, &device()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    let bad_json = mm_core::config::parse_json::<AutoencoderKLConfig>(r#"{"act_fn": "tanhh"}"#);
    assert!(bad_json.is_err());
}
