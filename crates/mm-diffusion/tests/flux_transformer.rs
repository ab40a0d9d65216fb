//! `FluxTransformer2DModel` matches diffusers on tiny random FLUX.1-schnell- and dev-style
//! configs (double- and single-stream blocks, 3-axis rotary embeddings, the guidance
//! embedding), its packing helpers equal the pipeline's, bad inputs are typed errors, and the
//! models built from the published schnell and dev configs have exactly the real checkpoints'
//! tensor names and shapes.

mod common;

use burn::tensor::{DType, Tensor};
use common::{Expected, device, fixture, max_abs_diff};
use mm_diffusion::Error;
use mm_diffusion::transformer::{
    FluxInput, FluxTransformer2DConfig, FluxTransformer2DModel, latent_image_ids, pack_latents,
    unpack_latents,
};

const TOL: f32 = 1e-4;

/// The tiny model's folder: the dev-style weights are stored once, as the `flux-tiny`
/// pipeline's transformer (`flux-transformer-tiny/dev/` holds only `io.safetensors`).
fn folder(variant: &str) -> String {
    match variant {
        "dev" => fixture("flux-tiny").join("transformer"),
        _ => fixture("flux-transformer-tiny").join(variant),
    }
    .to_string_lossy()
    .into_owned()
}

fn io(variant: &str) -> Expected {
    Expected::open(
        &fixture("flux-transformer-tiny")
            .join(variant)
            .join("io.safetensors"),
    )
}

fn input(exp: &Expected, guidance: bool) -> FluxInput {
    FluxInput {
        hidden_states: exp.float("hidden_states"),
        encoder_hidden_states: exp.float("encoder_hidden_states"),
        pooled_projections: exp.float("pooled_projections"),
        timestep: exp.float("timestep"),
        guidance: guidance.then(|| exp.float("guidance")),
        img_ids: exp.float("img_ids"),
        txt_ids: exp.float("txt_ids"),
    }
}

#[test]
fn schnell_style_matches_diffusers() {
    let model = FluxTransformer2DModel::load(folder("schnell"), &device()).unwrap();
    let exp = io("schnell");
    exp.check("out", model.forward(input(&exp, false)).unwrap(), TOL);
}

#[test]
fn dev_style_with_guidance_embedding_matches_diffusers() {
    let model = FluxTransformer2DModel::load(folder("dev"), &device()).unwrap();
    assert!(model.config().guidance_embeds);
    let exp = io("dev");
    exp.check("out", model.forward(input(&exp, true)).unwrap(), TOL);
    // The guidance embedding is required.
    assert!(matches!(
        model.forward(input(&exp, false)),
        Err(Error::MissingInput {
            what: "guidance",
            ..
        })
    ));
}

#[test]
fn packing_matches_the_pipeline() {
    let exp = io("schnell");
    let latents = exp.float::<4>("latents");
    let packed = pack_latents(latents.clone());
    assert_eq!(
        max_abs_diff(packed.clone(), exp.float("hidden_states")),
        0.0
    );
    assert_eq!(max_abs_diff(unpack_latents(packed, 6, 10), latents), 0.0);
    let ids = latent_image_ids(6, 10, &device());
    assert_eq!(max_abs_diff(ids, exp.float("img_ids")), 0.0);
}

#[test]
fn bf16_storage_stays_close() {
    let exp = io("dev");
    let model =
        FluxTransformer2DModel::load_with_dtype(folder("dev"), DType::BF16, &device()).unwrap();
    let out = model.forward(input(&exp, true)).unwrap();
    let reference = exp.float::<3>("out");
    let scale = reference.clone().abs().max().into_scalar::<f32>();
    let err = max_abs_diff(out, reference) / scale;
    eprintln!("bf16 weights: relative error {err:.2e}");
    assert!(err < 3e-2, "{err}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let model = FluxTransformer2DModel::load(folder("schnell"), &device()).unwrap();
    let exp = io("schnell");
    let dev = device();
    let mut bad = input(&exp, false);
    bad.hidden_states = Tensor::zeros([2, 15, 5], &dev);
    assert!(matches!(model.forward(bad), Err(Error::Shape { .. })));
    let mut bad = input(&exp, false);
    bad.img_ids = bad.img_ids.narrow(0, 0, 14);
    assert!(matches!(
        model.forward(bad),
        Err(Error::Shape {
            what: "img_ids",
            ..
        })
    ));
    let mut bad = input(&exp, false);
    bad.encoder_hidden_states = Tensor::zeros([2, 7, 3], &dev);
    assert!(matches!(model.forward(bad), Err(Error::Shape { .. })));
    let mut bad = input(&exp, false);
    bad.hidden_states = bad.hidden_states.clone() * f32::NAN;
    assert!(matches!(model.forward(bad), Err(Error::NonFinite { .. })));
    let config = FluxTransformer2DConfig {
        axes_dims_rope: vec![2, 2, 2],
        ..model.config().clone()
    };
    assert!(matches!(
        FluxTransformer2DModel::new(&config, &dev),
        Err(Error::Config(_))
    ));
}

fn assert_full_size(name: &str, count: usize) {
    let dir = fixture("full").join(name);
    let config: FluxTransformer2DConfig =
        mm_core::config::read_json(dir.join("config.json")).unwrap();
    let model = FluxTransformer2DModel::new(&config, &device()).unwrap();
    common::assert_tensor_list(&dir, &model, count);
}

#[test]
fn flux1_schnell_names_and_shapes() {
    assert_full_size("flux1-schnell/transformer", 1156);
}

#[test]
fn flux1_dev_names_and_shapes() {
    assert_full_size("flux1-dev/transformer", 1160);
}
