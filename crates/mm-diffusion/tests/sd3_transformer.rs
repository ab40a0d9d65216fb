//! `SD3Transformer2DModel` matches diffusers on tiny random SD3- and SD3.5-style configs (qk
//! RMS norm, dual attention, an off-centre crop of the position grid, skipped layers), rejects
//! bad inputs with typed errors, and the models built from the published SD3 medium and
//! SD3.5 large / medium configs have exactly the real checkpoints' tensor names and shapes.

mod common;

use burn::tensor::{DType, Tensor};
use common::{Expected, device, fixture};
use mm_diffusion::Error;
use mm_diffusion::transformer::{SD3Input, SD3Transformer2DConfig, SD3Transformer2DModel};

const TOL: f32 = 1e-4;

fn folder(variant: &str) -> String {
    fixture("sd3-transformer-tiny")
        .join(variant)
        .to_string_lossy()
        .into_owned()
}

fn io(variant: &str) -> Expected {
    Expected::open(
        &fixture("sd3-transformer-tiny")
            .join(variant)
            .join("io.safetensors"),
    )
}

fn input(exp: &Expected) -> SD3Input {
    SD3Input::new(
        exp.float("hidden_states"),
        exp.float("timestep"),
        exp.float("encoder_hidden_states"),
        exp.float("pooled_projections"),
    )
}

fn check_variant(variant: &str) {
    let model = SD3Transformer2DModel::load(folder(variant), &device()).unwrap();
    let exp = io(variant);
    exp.check("out", model.forward(input(&exp)).unwrap(), TOL);
    let skipped = model.forward(input(&exp).skip_layers(&[1])).unwrap();
    exp.check("out_skip", skipped, TOL);
}

#[test]
fn sd3_style_matches_diffusers() {
    check_variant("sd3");
}

#[test]
fn sd35_style_with_qk_norm_and_dual_attention_matches_diffusers() {
    let model = SD3Transformer2DModel::load(folder("sd35"), &device()).unwrap();
    assert_eq!(model.config().qk_norm.as_deref(), Some("rms_norm"));
    assert!(model.transformer_blocks[0].attn2.is_some());
    assert!(model.transformer_blocks[2].attn2.is_none());
    check_variant("sd35");
}

#[test]
fn bf16_storage_stays_close() {
    let exp = io("sd35");
    let model =
        SD3Transformer2DModel::load_with_dtype(folder("sd35"), DType::BF16, &device()).unwrap();
    let out = model.forward(input(&exp)).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let reference = exp.float::<4>("out");
    let scale = reference.clone().abs().max().into_scalar::<f32>();
    let err = common::max_abs_diff(out, reference) / scale;
    eprintln!("bf16 weights: relative error {err:.2e}");
    assert!(err < 3e-2, "{err}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let model = SD3Transformer2DModel::load(folder("sd3"), &device()).unwrap();
    let exp = io("sd3");
    let dev = device();
    // Wrong channel count.
    let mut bad = input(&exp);
    bad.hidden_states = Tensor::zeros([2, 4, 8, 12], &dev);
    assert!(model.forward(bad).is_err());
    // Odd size (not a multiple of the patch).
    let mut bad = input(&exp);
    bad.hidden_states = Tensor::zeros([2, 16, 7, 12], &dev);
    assert!(matches!(model.forward(bad), Err(Error::Shape { .. })));
    // Larger than the position grid.
    let max = model.config().pos_embed_max_size * model.config().patch_size;
    let mut bad = input(&exp);
    bad.hidden_states = Tensor::zeros([2, 16, max + 2, 8], &dev);
    assert!(matches!(
        model.forward(bad),
        Err(Error::InvalidArgument { .. })
    ));
    // Text states of the wrong width, pooled of the wrong batch.
    let mut bad = input(&exp);
    bad.encoder_hidden_states = Tensor::zeros([2, 7, 5], &dev);
    assert!(matches!(model.forward(bad), Err(Error::Shape { .. })));
    let mut bad = input(&exp);
    bad.pooled_projections = bad.pooled_projections.narrow(0, 0, 1);
    assert!(matches!(model.forward(bad), Err(Error::Shape { .. })));
    // A skipped block that does not exist; NaN latents.
    assert!(model.forward(input(&exp).skip_layers(&[9])).is_err());
    let mut bad = input(&exp);
    bad.hidden_states = bad.hidden_states.clone() * f32::NAN;
    assert!(matches!(model.forward(bad), Err(Error::NonFinite { .. })));
    // A config the model cannot be built from.
    let config = SD3Transformer2DConfig {
        caption_projection_dim: 7,
        ..model.config().clone()
    };
    assert!(matches!(
        SD3Transformer2DModel::new(&config, &dev),
        Err(Error::Config(_))
    ));
}

/// The model built from the full-size config has exactly the checkpoint's tensors, without
/// materialising its (lazily initialised) weights.
fn assert_full_size(name: &str, count: usize) {
    let dir = fixture("full").join(name);
    let config: SD3Transformer2DConfig =
        mm_core::config::read_json(dir.join("config.json")).unwrap();
    let model = SD3Transformer2DModel::new(&config, &device()).unwrap();
    common::assert_tensor_list(&dir, &model, count);
}

#[test]
fn sd3_medium_names_and_shapes() {
    assert_full_size("sd3-medium/transformer", 683);
}

#[test]
fn sd35_large_names_and_shapes() {
    assert_full_size("sd35-large/transformer", 1227);
}

#[test]
fn sd35_medium_names_and_shapes() {
    assert_full_size("sd35-medium/transformer", 909);
}

#[test]
fn initial_position_grid_is_diffusers_sincos() {
    // The fixture's `pos_embed.pos_embed` is diffusers' saved sin-cos table (a buffer the
    // generator does not randomise); a model built from the config computes the same one.
    let loaded = SD3Transformer2DModel::load(folder("sd35"), &device()).unwrap();
    let built = SD3Transformer2DModel::new(loaded.config(), &device()).unwrap();
    let err = common::max_abs_diff(
        built.pos_embed.pos_embed.val(),
        loaded.pos_embed.pos_embed.val(),
    );
    assert!(err < 1e-6, "{err}");
}
