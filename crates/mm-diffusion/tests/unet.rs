//! `UNet2DConditionModel` matches diffusers on tiny random configs (SD1, SD2, inpainting,
//! SDXL-style, ControlNet residuals, odd latent sizes), chunked attention changes nothing, and
//! the models built from the published configs have exactly the real checkpoints' tensor names
//! and shapes (checked without allocating their weights).

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture};
use mm_core::weights::Weights;
use mm_diffusion::ip_adapter::IpAdapterScale;
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetInput};

const TOL: f32 = 1e-4;

fn load(name: &str) -> UNet2DConditionModel {
    UNet2DConditionModel::load(fixture(name).to_str().unwrap(), &device()).unwrap()
}

/// Runs the fixture's `sample`/`timestep`/`encoder_hidden_states` and checks `out`.
fn check_basic(unet: &UNet2DConditionModel, name: &str) -> f32 {
    let exp = Expected::fixture(name);
    let out = unet
        .forward(
            exp.float("sample"),
            exp.float("timestep"),
            exp.float("encoder_hidden_states"),
        )
        .unwrap();
    exp.check("out", out, TOL)
}

#[test]
fn sd1_matches_diffusers() {
    let unet = load("unet-sd1-tiny");
    assert_eq!(unet.num_skip_connections(), 9);
    check_basic(&unet, "unet-sd1-tiny");
    // One timestep per sample (float values).
    let exp = Expected::fixture("unet-sd1-tiny");
    let out = unet
        .forward(
            exp.float("sample"),
            exp.float("timestep_batch"),
            exp.float("encoder_hidden_states"),
        )
        .unwrap();
    exp.check("out_timestep_batch", out, TOL);
}

#[test]
fn sd1_odd_latent_size_matches_diffusers() {
    // 7×5 is not a multiple of 4: every upsampler resizes to its skip connection's size.
    let unet = load("unet-sd1-tiny");
    let exp = Expected::fixture("unet-sd1-tiny");
    let text = exp.float::<3>("encoder_hidden_states").narrow(0, 0, 1);
    let out = unet
        .forward(exp.float("odd_sample"), exp.float("timestep"), text)
        .unwrap();
    exp.check("out_odd", out, TOL);
}

#[test]
fn sd1_controlnet_residuals_match_diffusers() {
    let unet = load("unet-sd1-tiny");
    let exp = Expected::fixture("unet-sd1-tiny");
    let down: Vec<Tensor<4>> = (0..unet.num_skip_connections())
        .map(|i| exp.float(&format!("down_residual_{i}")))
        .collect();
    let input = UNetInput::new(
        exp.float::<4>("sample").narrow(0, 0, 1),
        exp.float("timestep"),
        exp.float::<3>("encoder_hidden_states").narrow(0, 0, 1),
    )
    .with_control_residuals(down, exp.float("mid_residual"));
    exp.check("out_control", unet.forward_with(input).unwrap(), TOL);
}

#[test]
fn sd2_with_class_embedding_matches_diffusers() {
    let unet = load("unet-sd2-tiny");
    assert!(unet.config().use_linear_projection && unet.config().upcast_attention);
    let exp = Expected::fixture("unet-sd2-tiny");
    let input = UNetInput::new(
        exp.float("sample"),
        exp.float("timestep"),
        exp.float("encoder_hidden_states"),
    )
    .with_class_labels(exp.float("class_labels"));
    exp.check("out", unet.forward_with(input).unwrap(), TOL);
}

#[test]
fn inpainting_fp16_variant_matches_diffusers() {
    // The folder holds only `diffusion_pytorch_model.fp16.safetensors` (float16 weights); the
    // config also sets downsample_padding 0, output scale factors, center_input_sample,
    // flip_sin_to_cos false, freq_shift 1 and conv_in/conv_out kernels 5/1.
    let unet = load("unet-inpaint-tiny");
    let config = unet.config();
    assert_eq!(config.in_channels, 9);
    assert!(config.center_input_sample && !config.flip_sin_to_cos);
    assert_eq!((config.downsample_padding, config.freq_shift), (0, 1.0));
    assert_eq!((config.conv_in_kernel, config.conv_out_kernel), (5, 1));
    check_basic(&unet, "unet-inpaint-tiny");
}

#[test]
fn sdxl_style_matches_diffusers() {
    // Also `only_cross_attention` in the second block (attn1 attends to the text).
    let unet = load("unet-sdxl-tiny");
    let exp = Expected::fixture("unet-sdxl-tiny");
    let input = UNetInput::new(
        exp.float("sample"),
        exp.float("timestep"),
        exp.float("encoder_hidden_states"),
    )
    .with_added_cond(exp.float("text_embeds"), exp.float("time_ids"));
    exp.check("out", unet.forward_with(input).unwrap(), TOL);
}

#[test]
fn chunked_attention_equals_unchunked() {
    let mut unet = load("unet-sd1-tiny");
    let exp = Expected::fixture("unet-sd1-tiny");
    let run = |unet: &UNet2DConditionModel| {
        unet.forward(
            exp.float("sample"),
            exp.float("timestep"),
            exp.float("encoder_hidden_states"),
        )
        .unwrap()
    };
    let full = run(&unet);
    // 144 tokens at the full resolution: chunks of 50 leave a partial last chunk; 1 is the
    // extreme; 1000 is larger than any sequence (no chunking).
    for chunk in [50, 1, 1000] {
        unet.set_attention_chunk(Some(chunk));
        assert_eq!(unet.attention_chunk(), Some(chunk));
        let err = common::max_abs_diff(run(&unet), full.clone());
        eprintln!("chunk {chunk}: max abs diff {err:.2e}");
        assert!(err <= 1e-5, "chunk {chunk}: {err}");
    }
    exp.check("out", run(&unet), TOL);
    unet.set_attention_chunk(None);
    assert_eq!(unet.attention_chunk(), None);
}

fn full_config(name: &str) -> UNet2DConditionConfig {
    mm_core::config::read_json(fixture("full").join(name).join("config.json")).unwrap()
}

/// The built model's (name, shape) list equals the checkpoint's, without materialising the
/// (lazily initialised) weights.
fn assert_full_size(name: &str, count: usize) {
    let unet = UNet2DConditionModel::new(&full_config(name), &device()).unwrap();
    common::assert_tensor_list(&fixture("full").join(name), &unet, count);
}

#[test]
fn sd15_unet_names_and_shapes() {
    // The real SD 1.5 config from $MM_ASSETS is the fixture's config.json (copied by the
    // generator); check it is the same file content.
    let real = common::assets().join("sd15-configs/unet/config.json");
    if real.is_file() {
        let real: UNet2DConditionConfig = mm_core::config::read_json(real).unwrap();
        assert_eq!(real, full_config("unet-sd15"));
    }
    assert_full_size("unet-sd15", 686);
}

#[test]
fn sd21_unet_names_and_shapes() {
    let config = full_config("unet-sd21");
    assert!(config.use_linear_projection && config.upcast_attention);
    assert_full_size("unet-sd21", 686);
}

#[test]
fn sdxl_base_unet_names_and_shapes() {
    assert_full_size("unet-sdxl-base", 1680);
}

#[test]
fn sdxl_refiner_unet_names_and_shapes() {
    // The published refiner config (written by gen_single_file.py): four levels, transformer
    // depth 4, 2560 added-condition inputs (five time ids and the 1280-wide pooled bigG text).
    let config = full_config("sdxl-refiner/unet");
    assert_eq!(config.projection_class_embeddings_input_dim, Some(2560));
    assert_full_size("sdxl-refiner/unet", 1220);
}

#[test]
fn ip_adapter_matches_diffusers_processor() {
    // The UNet's and the IP-Adapter layers' tensors, loaded together.
    let folder = fixture("unet-sd1-tiny");
    let config: UNet2DConditionConfig =
        mm_core::config::read_json(folder.join("config.json")).unwrap();
    let weights = Weights::from_files(
        &[
            folder.join("diffusion_pytorch_model.safetensors"),
            folder.join("ip_adapter.safetensors"),
        ],
        "unet + ip-adapter",
    )
    .unwrap();
    let unet = UNet2DConditionModel::new(&config, &device())
        .unwrap()
        .with_ip_adapter(10, vec![0.6], &device());
    let mut unet = weights.load_into(unet).unwrap();
    let exp = Expected::fixture("unet-sd1-tiny");
    let input = || {
        UNetInput::new(
            exp.float("sample"),
            exp.float("timestep"),
            exp.float("encoder_hidden_states"),
        )
        .with_image_tokens(vec![exp.float("image_tokens")])
    };
    exp.check("out_ip_adapter", unet.forward_with(input()).unwrap(), TOL);
    // Scale 0, or no image tokens: the base model's output.
    unet.set_ip_adapter_scale(&[IpAdapterScale::Uniform(0.0)])
        .unwrap();
    exp.check("out", unet.forward_with(input()).unwrap(), TOL);
    unet.set_ip_adapter_scale(&[IpAdapterScale::Uniform(0.6)])
        .unwrap();
    let plain = UNetInput::new(
        exp.float("sample"),
        exp.float("timestep"),
        exp.float("encoder_hidden_states"),
    );
    exp.check("out", unet.forward_with(plain).unwrap(), TOL);
    // The base model has no IP-Adapter tensors to load.
    let base = UNet2DConditionModel::load(folder.to_str().unwrap(), &device()).unwrap();
    let err = base.forward_with(input()).unwrap_err();
    assert!(
        matches!(err, mm_diffusion::Error::MissingInput { .. }),
        "{err}"
    );
}
