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

mod unet {
    use super::*;
    use mm_diffusion::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel, UNetInput};

    fn sd1() -> UNet2DConditionModel {
        UNet2DConditionModel::load(fixture("unet-sd1-tiny").to_str().unwrap(), &device()).unwrap()
    }

    fn t() -> Tensor<1> {
        Tensor::from_floats([500.0], &device())
    }

    fn text(batch: usize, dim: usize) -> Tensor<3> {
        Tensor::random([batch, 5, dim], Distribution::Uniform(-1.0, 1.0), &device())
    }

    fn shape_error(err: Error) -> &'static str {
        match err {
            Error::Shape { what, .. } => what,
            other => panic!("expected a shape error, got {other}"),
        }
    }

    #[test]
    fn unet_rejects_bad_shapes() {
        let unet = sd1();
        let err = unet.forward(random([2, 3, 8, 8]), t(), text(2, 16));
        assert_eq!(shape_error(err.unwrap_err()), "sample");
        // Batch of the text embeddings differs from the sample's.
        let err = unet.forward(random([2, 4, 8, 8]), t(), text(1, 16));
        assert_eq!(shape_error(err.unwrap_err()), "encoder_hidden_states");
        // Text width differs from cross_attention_dim (16).
        let err = unet.forward(random([2, 4, 8, 8]), t(), text(2, 8));
        let err = err.unwrap_err();
        assert!(err.to_string().contains("16"), "{err}");
        assert_eq!(shape_error(err), "encoder_hidden_states");
        // Three timesteps for two samples.
        let three = Tensor::from_floats([1.0, 2.0, 3.0], &device());
        let err = unet.forward(random([2, 4, 8, 8]), three, text(2, 16));
        assert_eq!(shape_error(err.unwrap_err()), "timestep");
    }

    #[test]
    fn unet_rejects_non_finite_inputs() {
        let unet = sd1();
        let nan = random([1, 4, 8, 8]) / 0.0 * 0.0;
        let err = unet.forward(nan, t(), text(1, 16)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "sample",
                    count: 256
                }
            ),
            "{err}"
        );
        let inf_t = Tensor::from_floats([f32::INFINITY], &device());
        let err = unet
            .forward(random([1, 4, 8, 8]), inf_t, text(1, 16))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "timestep",
                    ..
                }
            ),
            "{err}"
        );
        let nan_text = text(1, 16) / 0.0 * 0.0;
        let err = unet
            .forward(random([1, 4, 8, 8]), t(), nan_text)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "encoder_hidden_states",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unet_rejects_bad_controlnet_residuals() {
        let unet = sd1();
        let input = || UNetInput::new(random([1, 4, 8, 8]), t(), text(1, 16));
        let mid = random([1, 12, 2, 2]);
        // Too few residuals.
        let err = unet
            .forward_with(input().with_control_residuals(vec![random([1, 8, 8, 8])], mid.clone()))
            .unwrap_err();
        assert_eq!(shape_error(err), "down_block_additional_residuals");
        // The right count, one of the wrong shape.
        let skips = unet.num_skip_connections();
        let mut down: Vec<Tensor<4>> = (0..skips).map(|_| random([1, 8, 8, 8])).collect();
        down[0] = random([1, 8, 4, 4]);
        let err = unet
            .forward_with(input().with_control_residuals(down, mid.clone()))
            .unwrap_err();
        assert_eq!(shape_error(err), "down_block_additional_residuals");
        // Only the middle residual.
        let mut only_mid = input();
        only_mid.mid_block_additional_residual = Some(mid);
        let err = unet.forward_with(only_mid).unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    }

    #[test]
    fn unet_added_conditions_must_fit_the_config() {
        let sdxl =
            UNet2DConditionModel::load(fixture("unet-sdxl-tiny").to_str().unwrap(), &device())
                .unwrap();
        let input = || UNetInput::new(random([2, 4, 8, 8]), t(), text(2, 16));
        let err = sdxl.forward_with(input()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingInput {
                    what: "added_cond",
                    ..
                }
            ),
            "{err}"
        );
        let ids = || Tensor::<2>::zeros([2, 6], &device());
        let err = sdxl
            .forward_with(input().with_added_cond(Tensor::zeros([2, 11], &device()), ids()))
            .unwrap_err();
        assert_eq!(shape_error(err), "added_cond");
        let err = sd1()
            .forward_with(input().with_added_cond(Tensor::zeros([2, 12], &device()), ids()))
            .unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    }

    #[test]
    fn unet_rejects_bad_image_tokens() {
        let unet = sd1().with_ip_adapter(10, vec![0.5], &device());
        let input = || UNetInput::new(random([1, 4, 8, 8]), t(), text(1, 16));
        let tokens = |dim: usize| text(1, dim).narrow(1, 0, 3);
        let err = unet
            .forward_with(input().with_image_tokens(vec![tokens(10), tokens(10)]))
            .unwrap_err();
        assert_eq!(shape_error(err), "image_tokens");
        let err = unet
            .forward_with(input().with_image_tokens(vec![tokens(16)]))
            .unwrap_err();
        assert_eq!(shape_error(err), "image_tokens");
        let nan = tokens(10) / 0.0 * 0.0;
        let err = unet
            .forward_with(input().with_image_tokens(vec![nan]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "image_tokens",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            unet.forward_with(input().with_image_tokens(vec![tokens(10)]))
                .is_ok()
        );
    }

    #[test]
    fn unet_checkpoint_missing_a_tensor_is_reported() {
        let folder = fixture("unet-sd1-tiny");
        let config: UNet2DConditionConfig =
            mm_core::config::read_json(folder.join("config.json")).unwrap();
        let name = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
        let weights = mm_core::weights::Weights::open(&folder)
            .unwrap()
            .rename(|n| (n != name).then(|| n.to_string()));
        let err = UNet2DConditionModel::from_weights(&config, weights, &device()).unwrap_err();
        let Error::Core(mm_core::Error::Load(report)) = err else {
            panic!("expected a load report, got {err}");
        };
        assert_eq!(report.missing, vec![name.to_string()]);
        assert!(report.unexpected.is_empty() && report.mismatched.is_empty());
    }

    #[test]
    fn unusable_unet_configs() {
        let base = UNet2DConditionConfig::default;
        let cases = [
            UNet2DConditionConfig {
                resnet_time_scale_shift: "scale_shift".into(),
                ..base()
            },
            UNet2DConditionConfig {
                time_embedding_type: "fourier".into(),
                ..base()
            },
            UNet2DConditionConfig {
                down_block_types: vec!["AttnDownBlock2D".into(); 4],
                ..base()
            },
            UNet2DConditionConfig {
                attention_head_dim: PerBlock::Each(vec![5, 10]),
                ..base()
            },
            UNet2DConditionConfig {
                attention_head_dim: PerBlock::All(7),
                ..base()
            },
            UNet2DConditionConfig {
                block_out_channels: vec![320, 640, 1280],
                ..base()
            },
            UNet2DConditionConfig {
                addition_embed_type: Some("text_time".into()),
                ..base()
            },
            UNet2DConditionConfig {
                class_embed_type: Some("timestep".into()),
                ..base()
            },
            UNet2DConditionConfig {
                norm_num_groups: None,
                ..base()
            },
            UNet2DConditionConfig {
                dual_cross_attention: true,
                ..base()
            },
        ];
        for config in cases {
            let err = UNet2DConditionModel::new(&config, &device()).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err}");
        }
    }

    /// A layer count no machine can hold is refused before the model is built (it used to
    /// try to allocate 1.3 TB and abort).
    #[test]
    fn configs_too_large_to_build() {
        let unet = UNet2DConditionConfig {
            layers_per_block: PerBlock::All(1_000_000_000),
            ..Default::default()
        };
        super::too_large(UNet2DConditionModel::new(&unet, &device()).map(|_| ()));
        let unet = UNet2DConditionConfig {
            transformer_layers_per_block: PerBlock::All(usize::MAX),
            ..Default::default()
        };
        super::too_large(UNet2DConditionModel::new(&unet, &device()).map(|_| ()));
        let kl = AutoencoderKLConfig {
            layers_per_block: 1_000_000_000,
            ..Default::default()
        };
        super::too_large(AutoencoderKL::new(&kl, &device()).map(|_| ()));
        let tiny = AutoencoderTinyConfig {
            num_decoder_blocks: vec![3, 3, 3, 1_000_000_000],
            ..Default::default()
        };
        super::too_large(AutoencoderTiny::new(&tiny, &device()).map(|_| ()));
    }
}

/// `result` failed with the memory limit's typed error, which says how to raise it.
fn too_large(result: mm_diffusion::Result<()>) {
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::Core(mm_core::Error::TooLarge { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("MM_MEMORY_LIMIT"), "{err}");
}
