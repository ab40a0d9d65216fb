//! The loader keeps half-precision weights in half precision on request, and accepts the
//! tensor names transformers 5 saves as well as the published llava-hf ones.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use burn::tensor::DType;
use common::{Expected, device, fixture};
use mm_core::precision::{cast_params, with_storage_dtype};
use mm_core::weights::Weights;
use mm_vlm::config::LlavaConfig;
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};

const NAME: &str = "llava-tiny";

fn logits(model: &LlavaForConditionalGeneration, exp: &Expected) -> burn::tensor::Tensor<3> {
    model
        .forward(
            exp.int("input_ids_2"),
            Some(exp.float("pixel_values_2")),
            None,
        )
        .unwrap()
}

#[test]
fn half_precision_storage_gives_close_logits() {
    let exp = Expected::open(NAME);
    let path = fixture(NAME);
    for (dtype, tol) in [(DType::F16, 1e-2), (DType::BF16, 8e-2)] {
        let model = LlavaForConditionalGeneration::load_with_dtype(
            path.to_str().unwrap(),
            dtype,
            &device(),
        )
        .unwrap();
        // Matrices stay in half precision; on the CPU the arithmetic is f32.
        let lm = &model.language_model;
        assert_eq!(lm.model.embed_tokens.weight.val().dtype(), dtype);
        let attn = &lm.model.layers[0].self_attn;
        assert_eq!(attn.q_proj.weight.val().dtype(), dtype);
        assert_eq!(lm.model.norm.gamma.val().dtype(), DType::F32);
        assert_eq!(lm.model.dtype(), DType::F32);
        let out = logits(&model, &exp);
        assert_eq!(out.dtype(), DType::F32);
        exp.check("logits_2", out, tol);
    }
}

/// With half-precision storage on the CPU only the weights are rounded: the logits equal an
/// f32 model whose weights were rounded the same way (the tied head included).
#[test]
fn half_storage_computes_in_f32() {
    let exp = Expected::open(NAME);
    let dir = fixture(NAME);
    let mut config = LlavaConfig::from_file(dir.join("config.json")).unwrap();
    config.tie_word_embeddings = true;
    for dtype in [DType::BF16, DType::F16] {
        let load = |dtype| {
            let weights = Weights::open(&dir).unwrap().with_dtype(dtype);
            LlavaForConditionalGeneration::from_weights(&config, weights, &device()).unwrap()
        };
        let half = logits(&load(dtype), &exp);
        let rounded = cast_params(with_storage_dtype(load(DType::F32), dtype), DType::F32);
        let want = logits(&rounded, &exp);
        let err: f32 = (half - want).abs().max().into_scalar();
        eprintln!("{dtype:?} storage vs rounded f32 weights: {err:.2e}");
        assert!(err < 1e-4, "{dtype:?}: {err}");
    }
}

#[test]
fn transformers_5_names_load_too() {
    let exp = Expected::open(NAME);
    let dir = fixture(NAME);
    let config = LlavaConfig::from_file(dir.join("config.json")).unwrap();
    // The names `save_pretrained` of transformers 5 writes.
    let weights = Weights::open(&dir).unwrap().rename(|name| {
        Some(
            if let Some(rest) = name.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if let Some(rest) = name.strip_prefix("language_model.lm_head.") {
                format!("lm_head.{rest}")
            } else if let Some(rest) = name.strip_prefix("vision_tower.vision_model.") {
                format!("model.vision_tower.{rest}")
            } else {
                format!("model.{name}")
            },
        )
    });
    assert!(weights.contains("model.vision_tower.pre_layrnorm.weight"));
    let model = LlavaForConditionalGeneration::from_weights(&config, weights, &device()).unwrap();
    exp.check("logits_2", logits(&model, &exp), 1e-4);
}

#[test]
fn tied_embeddings_drop_a_stored_lm_head() {
    let dir = fixture(NAME);
    let mut config = LlavaConfig::from_file(dir.join("config.json")).unwrap();
    config.tie_word_embeddings = true;
    // A checkpoint that stores lm_head although it is tied loads; the head is the embedding.
    let weights = Weights::open(&dir).unwrap();
    let model = LlavaForConditionalGeneration::from_weights(&config, weights, &device()).unwrap();
    assert!(model.language_model.lm_head.is_none());
    let untied = LlavaForConditionalGeneration::load(dir.to_str().unwrap(), &device()).unwrap();
    let hidden = burn::tensor::Tensor::<3>::random(
        [1, 2, config.text_config.hidden_size],
        burn::tensor::Distribution::Default,
        &device(),
    );
    // tied logits = hidden · embed_tokensᵀ
    let w = untied.language_model.model.embed_tokens.weight.val();
    let expected = hidden
        .clone()
        .reshape([2, 64])
        .matmul(w.transpose())
        .reshape([1, 2, 300]);
    let err: f32 = (model.language_model.logits(hidden) - expected)
        .abs()
        .max()
        .into_scalar();
    assert!(err < 1e-5, "{err}");
}

/// Any model takes quantized weights: the tiny LLaVA quantized to Q8_0 as it loads (every
/// linear layer: vision tower, projector, decoder; the embedding table stays f32) gives logits
/// within Q8_0's rounding of the f32 ones, through the prefill and the one-token decoding path.
#[test]
fn q8_0_weights_quantized_as_they_load() {
    use mm_core::gguf::GgmlType;
    use mm_core::quant::quantized_weight;
    let exp = Expected::open(NAME);
    let dir = fixture(NAME);
    let config = LlavaConfig::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::open(&dir).unwrap().quantize(GgmlType::Q8_0);
    let model = LlavaForConditionalGeneration::from_weights(&config, weights, &device()).unwrap();
    let lm = &model.language_model.model;
    for layer in [&lm.layers[0].self_attn.q_proj, &lm.layers[0].mlp.down_proj] {
        assert_eq!(quantized_weight(layer).unwrap().ggml_type(), GgmlType::Q8_0);
    }
    let out = logits(&model, &exp);
    let reference = exp.float::<3>("logits_2");
    let scale = reference.clone().abs().max().into_scalar::<f32>();
    let rel = (out - reference).abs().max().into_scalar::<f32>() / scale;
    eprintln!("LLaVA Q8_0 logits against f32: max error / max |logit| = {rel:.2e}");
    assert!(rel < 5e-2, "{rel}");
}
