//! Checks shared by the LLaVA and LLaVA-NeXT parity tests (fixtures of tools/reference/gen_vlm.py).
#![allow(dead_code)]

use burn::tensor::{Int, Tensor, TensorData};
use mm_vlm::generate::GenerationConfig;
use mm_vlm::kv_cache::KvCache;
use mm_vlm::llava::VisionLanguageModel;

use crate::common::{Expected, device};

pub const TOL: f32 = 1e-4;

pub fn ids_of(t: &Tensor<2, Int>) -> Vec<i64> {
    t.to_data().convert::<i64>().try_into_vec::<i64>().unwrap()
}

/// Greedy 20 tokens (EOS suppressed for 20, as the generator's `min_new_tokens`) equal
/// transformers' `generate(do_sample=False)`.
pub fn check_greedy<M: VisionLanguageModel>(
    model: &M,
    exp: &Expected,
    ids: &str,
    images: Option<M::Images>,
    generated: &str,
) {
    let input = exp.int::<2>(ids);
    let prompt_len = input.dims()[1];
    let expected = ids_of(&exp.int::<2>(generated));
    let config = GenerationConfig::greedy()
        .with_max_new_tokens(20)
        .with_min_new_tokens(20);
    let out = model.generate(input, images, None, &config, None).unwrap();
    assert_eq!(out.new_tokens[0], expected[prompt_len..], "{generated}");
    eprintln!("{generated}: 20 greedy tokens identical");
}

/// Text-only logits, a left-padded batch (real positions only), prefill + one-token steps
/// through the KV cache against the full forward, and greedy text generation.
pub fn check_text_paths<M: VisionLanguageModel>(model: &M, exp: &Expected) {
    let logits = model.forward(exp.int("text_ids"), None, None).unwrap();
    exp.check("text_logits", logits, TOL);

    let mask = exp.int::<2>("padded_mask");
    let logits = model
        .forward(exp.int("padded_ids"), None, Some(mask.clone()))
        .unwrap();
    let [b, s, v] = logits.dims();
    let keep: Vec<f32> = ids_of(&mask)
        .iter()
        .flat_map(|&m| std::iter::repeat_n(m as f32, v))
        .collect();
    let keep = Tensor::<3>::from_data(TensorData::new(keep, [b, s, v]), &device());
    let err: f32 = ((logits - exp.float::<3>("padded_logits")) * keep)
        .abs()
        .max()
        .into_scalar();
    eprintln!("padded_logits (real positions): max abs error {err:.2e}");
    assert!(err <= TOL, "padded logits: {err}");

    let ids = exp.int::<2>("text_ids");
    let expected = exp.float::<3>("text_logits");
    let s = ids.dims()[1];
    let lm = model.language_model();
    let mut cache = KvCache::new();
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

    check_greedy(model, exp, "text_ids", None, "text_generated");
}
