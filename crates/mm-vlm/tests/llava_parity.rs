//! LLaVA 1.5 matches transformers' `LlavaForConditionalGeneration` on a tiny random checkpoint
//! (tools/reference/gen_vlm.py): logits with one and two images, greedy generation through the
//! KV cache, text-only and left-padded prompts.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;
mod vlm;

use common::{Expected, device, fixture};
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
use vlm::{TOL, check_greedy, check_text_paths};

const NAME: &str = "llava-tiny";

fn model() -> LlavaForConditionalGeneration {
    LlavaForConditionalGeneration::load(fixture(NAME).to_str().unwrap(), &device()).unwrap()
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
    let (features, images) = model.image_features(exp.float("pixel_values_1")).unwrap();
    assert_eq!(images, 1);
    exp.check("image_features_1", features, TOL);
}

#[test]
fn greedy_generation_with_an_image_matches_transformers() {
    let model = model();
    let exp = Expected::open(NAME);
    assert_eq!(model.eos_token_ids(), &[2]);
    let pixels = exp.float("pixel_values_1");
    check_greedy(&model, &exp, "input_ids_1", Some(pixels), "generated_1");
}

#[test]
fn text_only_padded_and_cached_paths_match_transformers() {
    check_text_paths(&model(), &Expected::open(NAME));
}
