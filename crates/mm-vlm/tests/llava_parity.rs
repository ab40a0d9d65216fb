//! LLaVA 1.5 matches transformers' `LlavaForConditionalGeneration` on a tiny random checkpoint
//! (tools/reference/gen_vlm.py): logits with one and two images, greedy generation through the
//! KV cache, text-only and left-padded prompts.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Expected, device, fixture};
use mm_vlm::generate::GenerationConfig;
use mm_vlm::kv_cache::KvCache;
use mm_vlm::llava::LlavaForConditionalGeneration;

const NAME: &str = "llava-tiny";
const TOL: f32 = 1e-4;

fn model() -> LlavaForConditionalGeneration {
    LlavaForConditionalGeneration::load(fixture(NAME).to_str().unwrap(), &device()).unwrap()
}

fn ids_of(t: &Tensor<2, Int>) -> Vec<i64> {
    t.to_data().convert::<i64>().try_into_vec::<i64>().unwrap()
}

#[test]
fn logits_with_one_and_two_images() {
    let model = model();
    let exp = Expected::open(NAME);
    for case in ["1", "2"] {
        let logits = model
            .forward(
                exp.int(&format!("input_ids_{case}")),
                Some(exp.float(&format!("pixel_values_{case}"))),
                None,
            )
            .unwrap();
        exp.check(&format!("logits_{case}"), logits, TOL);
    }
    let features = model.image_features(exp.float("pixel_values_1")).unwrap();
    let [n, t, d] = features.dims();
    exp.check("image_features_1", features.reshape([n * t, d]), TOL);
}

#[test]
fn text_only_and_left_padded_prompts() {
    let model = model();
    let exp = Expected::open(NAME);
    let logits = model.forward(exp.int("text_ids"), None, None).unwrap();
    exp.check("text_logits", logits, TOL);

    // Left padding: compare the real positions only (padding rows are not defined).
    let mask = exp.int::<2>("padded_mask");
    let logits = model
        .forward(exp.int("padded_ids"), None, Some(mask.clone()))
        .unwrap();
    let expected = exp.float::<3>("padded_logits");
    let keep = ids_of(&mask);
    let [b, s, v] = logits.dims();
    let keep = Tensor::<3>::from_data(
        TensorData::new(
            keep.iter()
                .flat_map(|&m| std::iter::repeat_n(m as f32, v))
                .collect::<Vec<_>>(),
            [b, s, v],
        ),
        &device(),
    );
    let err: f32 = ((logits - expected) * keep)
        .abs()
        .max()
        .into_scalar::<f32>();
    eprintln!("padded_logits (real positions): max abs error {err:.2e}");
    assert!(err <= TOL, "padded logits: {err}");
}

#[test]
fn kv_cache_steps_match_the_full_forward() {
    let model = model();
    let exp = Expected::open(NAME);
    let ids = exp.int::<2>("text_ids");
    let expected = exp.float::<3>("text_logits");
    let s = ids.dims()[1];
    let lm = &model.language_model;
    let mut cache = KvCache::new();
    // prefill 4 tokens, then one at a time
    let prefill = lm
        .forward(ids.clone().narrow(1, 0, 4), None, &mut cache)
        .unwrap();
    let mut err: f32 = (prefill - expected.clone().narrow(1, 0, 4))
        .abs()
        .max()
        .into_scalar();
    for i in 4..s {
        let step = lm
            .forward(ids.clone().narrow(1, i, 1), None, &mut cache)
            .unwrap();
        let e: f32 = (step - expected.clone().narrow(1, i, 1))
            .abs()
            .max()
            .into_scalar();
        err = err.max(e);
    }
    assert_eq!(cache.len(), s);
    eprintln!("kv cache steps vs full forward: max abs error {err:.2e}");
    assert!(err <= TOL, "{err}");
}

fn check_greedy(
    model: &LlavaForConditionalGeneration,
    exp: &Expected,
    ids: &str,
    px: Option<&str>,
    generated: &str,
) {
    let input = exp.int::<2>(ids);
    let prompt_len = input.dims()[1];
    let expected = ids_of(&exp.int::<2>(generated));
    let config = GenerationConfig::greedy()
        .with_max_new_tokens(20)
        .with_min_new_tokens(20);
    let out = model
        .generate(input, px.map(|p| exp.float(p)), None, &config, None)
        .unwrap();
    assert_eq!(out.new_tokens[0], expected[prompt_len..], "{generated}");
}

#[test]
fn greedy_generation_matches_transformers() {
    let model = model();
    let exp = Expected::open(NAME);
    assert_eq!(model.eos_token_ids(), &[2]);
    check_greedy(
        &model,
        &exp,
        "input_ids_1",
        Some("pixel_values_1"),
        "generated_1",
    );
    check_greedy(&model, &exp, "text_ids", None, "text_generated");
}
