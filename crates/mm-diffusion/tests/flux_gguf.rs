//! FLUX.1 transformers from Black Forest Labs' original checkpoints and the GGUF files made
//! from them (city96's layout: BFL names, Q8_0 / Q4_K / … matrices), kept quantized, against
//! diffusers run on the same weights (`tools/reference/gen_flux_gguf.py`); quantizing as the
//! weights load; the full-size BFL name lists; and the pipeline's weight-file and
//! quantization options.

mod common;

use burn::tensor::{DType, Tensor};
use common::{Expected, device, fixture};
use mm_core::gguf::GgmlType;
use mm_core::quant::quantized_weight;
use mm_core::weights::{Weights, expected_tensors};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{Flux, GenerateOptions, Hooks, LoadOptions, StableDiffusion};
use mm_diffusion::single_file::{bfl_flux_name, flux_diffusers_weights, is_bfl_flux};
use mm_diffusion::transformer::{FluxInput, FluxTransformer2DConfig, FluxTransformer2DModel};

const TOL: f32 = 1e-4;

fn dir() -> std::path::PathBuf {
    fixture("flux-gguf")
}

fn config() -> FluxTransformer2DConfig {
    mm_core::config::read_json(dir().join("config.json")).unwrap()
}

fn load(file: &str, quantize: Option<GgmlType>) -> FluxTransformer2DModel {
    FluxTransformer2DModel::from_file(&config(), dir().join(file), DType::F32, quantize, &device())
        .unwrap()
}

/// The tiny model's forward on the fixture's inputs.
fn forward(model: &FluxTransformer2DModel, exp: &Expected) -> Tensor<3> {
    let input = FluxInput {
        hidden_states: exp.float("hidden_states"),
        encoder_hidden_states: exp.float("encoder_hidden_states"),
        pooled_projections: exp.float("pooled_projections"),
        timestep: exp.float("timestep"),
        guidance: Some(exp.float("guidance")),
        img_ids: exp.float("img_ids"),
        txt_ids: exp.float("txt_ids"),
    };
    model.forward(input).unwrap()
}

fn io() -> Expected {
    Expected::open(&dir().join("io.safetensors"))
}

/// `max |a - b| / max |b|`.
fn relative(a: Tensor<3>, b: Tensor<3>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>();
    common::max_abs_diff(a, b) / scale
}

#[test]
fn bfl_safetensors_equals_diffusers() {
    let weights = Weights::open(dir().join("transformer-bfl.safetensors")).unwrap();
    assert!(is_bfl_flux(&weights));
    let model = FluxTransformer2DModel::from_weights(&config(), weights, &device()).unwrap();
    io().check("out_f32", forward(&model, &io()), TOL);
}

#[test]
fn q8_0_gguf_stays_quantized_and_equals_diffusers_on_its_values() {
    let model = load("transformer-q8_0.gguf", None);
    // `img_in` (16 inputs, not a whole Q8_0 block) is stored in F32 and loads as such.
    assert!(quantized_weight(&model.x_embedder).is_none());
    // The fused projections' parts stay quantized (rows of blocks).
    let block = &model.single_transformer_blocks[0];
    for layer in [
        &block.attn.to_q,
        &block.attn.to_v,
        &block.proj_mlp,
        &block.proj_out,
    ] {
        assert_eq!(quantized_weight(layer).unwrap().ggml_type(), GgmlType::Q8_0);
    }
    let exp = io();
    let out = forward(&model, &exp);
    exp.check("out_q8_0", out.clone(), TOL);
    // The step ran on the blocks: no quantized weight was dequantized into a cached copy
    // (the adaptive norms once read their weight's shape through it: 6.5 GB at full size).
    let norms = [
        &model.transformer_blocks[0].norm1.linear,
        &block.norm.linear,
        &block.proj_out,
    ];
    for layer in norms {
        assert!(quantized_weight(layer).is_some());
        assert!(
            !layer.weight.is_initialized(),
            "a dequantized copy was cached"
        );
    }
    let rel = relative(out, exp.float("out_f32"));
    eprintln!("Q8_0 against f32: max error / max |out| = {rel:.2e}");
    assert!(rel < 2e-2, "Q8_0 relative error {rel}");
}

#[test]
fn mixed_types_gguf_equals_diffusers_on_its_values() {
    let model = load("transformer-mixed.gguf", None);
    let exp = io();
    let out = forward(&model, &exp);
    exp.check("out_mixed", out.clone(), TOL);
    eprintln!(
        "mixed types against f32: max error / max |out| = {:.2e}",
        relative(out, exp.float("out_f32"))
    );
}

#[test]
fn quantizing_as_it_loads_equals_the_gguf_quantizer() {
    // Our Q8_0 quantizer is bit-exact with the gguf package's, so quantizing the BFL
    // checkpoint (bf16 values, exact in f32) while it loads gives the Q8_0 file's values.
    let model = load("transformer-bfl.safetensors", Some(GgmlType::Q8_0));
    let to_q = &model.transformer_blocks[0].attn.to_q;
    assert_eq!(quantized_weight(to_q).unwrap().ggml_type(), GgmlType::Q8_0);
    io().check("out_q8_0", forward(&model, &io()), TOL);
    // The same through the weights of a GGUF file already quantized: they keep their type.
    let model = load("transformer-mixed.gguf", Some(GgmlType::Q8_0));
    io().check("out_mixed", forward(&model, &io()), TOL);
}

#[test]
fn quantized_weights_dequantize_for_other_uses() {
    // Code that reads the weight (another backend, autodiff) sees the dequantized matrix.
    let q8 = load("transformer-q8_0.gguf", None);
    let layer = &q8.single_transformer_blocks[0].proj_mlp;
    let matrix = quantized_weight(layer).unwrap();
    let [rows, cols] = matrix.shape();
    let values: Vec<f32> = layer
        .weight
        .val()
        .transpose()
        .into_data()
        .try_to_vec()
        .unwrap();
    assert_eq!(layer.weight.dims(), [cols, rows]);
    assert_eq!(values, matrix.dequantize());
}

/// `[name, shape]` of `file` in `tests/fixtures/full/<model>/transformer/`.
fn list(model: &str, file: &str) -> Vec<(String, Vec<usize>)> {
    let path = fixture("full").join(model).join("transformer").join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn full_size_bfl_names_map_to_the_models_tensors() {
    for (model, count) in [("flux1-schnell", 776), ("flux1-dev", 780)] {
        let dir = fixture("full").join(model).join("transformer");
        let config: FluxTransformer2DConfig =
            mm_core::config::read_json(dir.join("config.json")).unwrap();
        let bfl = list(model, "bfl-tensors.json");
        assert_eq!(bfl.len(), count, "{model}");
        // A list of names and shapes, never read.
        let mut weights = Weights::from_files(&[], model).unwrap();
        for (name, shape) in &bfl {
            let name = format!("model.diffusion_model.{name}");
            weights = weights.insert_with(name, shape.clone(), DType::F32, || unreachable!());
        }
        let weights = flux_diffusers_weights(weights, &config).unwrap();
        let mut ours: Vec<(String, Vec<usize>)> = weights
            .names()
            .map(|n| (n.to_string(), weights.shape(n).unwrap()))
            .collect();
        ours.sort();
        let expected = expected_tensors(&FluxTransformer2DModel::new(&config, &device()).unwrap());
        assert_eq!(ours, expected, "{model}");
        let mut diffusers = list(model, "tensors.json");
        diffusers.sort();
        assert_eq!(ours, diffusers, "{model}");
    }
    assert_eq!(
        bfl_flux_name("model.diffusion_model.single_blocks.37.linear2.weight"),
        "single_transformer_blocks.37.proj_out.weight"
    );
}

#[test]
fn the_pipeline_takes_weight_files_and_quantizes() {
    let device = device();
    let path = fixture("flux-tiny").to_string_lossy().into_owned();
    let mut opts = GenerateOptions::new("a red cube").steps(2).seed(3);
    (opts.height, opts.width) = (Some(16), Some(16));
    let reference = Flux::load(&path, &device)
        .unwrap()
        .text_to_image(&opts, Hooks::new())
        .unwrap();
    // The folder's own transformer and T5 files given explicitly, quantized to Q8_0 where
    // the widths allow it (the tiny T5's feed-forward output, …).
    let transformer = fixture("flux-tiny/transformer/diffusion_pytorch_model.safetensors");
    let t5 = fixture("flux-tiny/text_encoder_2/model.safetensors");
    let options = LoadOptions::new()
        .component_file("transformer", &transformer)
        .component_file("text_encoder_2", &t5)
        .quantize(GgmlType::Q8_0);
    let quantized = Flux::load_with_options(&path, options, &device)
        .unwrap()
        .text_to_image(&opts, Hooks::new())
        .unwrap();
    let diff = common::max_abs_diff(quantized.pixels, reference.pixels);
    eprintln!("tiny FLUX pipeline, Q8_0 against f32: max pixel difference {diff:.2e}");
    assert!(diff < 5e-2, "{diff}");
    // A file for a component the pipeline does not read is refused, not ignored.
    let options = LoadOptions::new().component_file("unet", &transformer);
    assert!(matches!(
        Flux::load_with_options(&path, options.clone(), &device),
        Err(Error::InvalidArgument { name: "files", .. })
    ));
    let sd = fixture("sd-tiny").to_string_lossy().into_owned();
    assert!(matches!(
        StableDiffusion::load_with_options(&sd, options, &device),
        Err(Error::InvalidArgument { name: "files", .. })
    ));
}
