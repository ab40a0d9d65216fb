//! LLaVA-NeXT matches transformers' `LlavaNextForConditionalGeneration` on a tiny random
//! checkpoint (Mistral decoder with a binding sliding window, two feature layers, non-square
//! images with anyres grids 1x2 and 2x2, unpadding, image_newline).

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;
mod vlm;

use common::{Expected, device, fixture};
use mm_vlm::llava::VisionLanguageModel;
use mm_vlm::llava_next::{LlavaNextForConditionalGeneration, NextImages};
use vlm::{TOL, check_greedy, check_text_paths, ids_of};

const NAME: &str = "llava-next-tiny";

fn model() -> LlavaNextForConditionalGeneration {
    LlavaNextForConditionalGeneration::load(fixture(NAME).to_str().unwrap(), &device()).unwrap()
}

fn images(exp: &Expected, case: &str) -> NextImages {
    NextImages {
        pixel_values: exp.float(&format!("pixel_values_{case}")),
        image_sizes: exp.int(&format!("image_sizes_{case}")),
    }
}

#[test]
fn image_token_counts_and_logits_match_transformers() {
    let model = model();
    let exp = Expected::open(NAME);
    let image = model.config().image_token_index;
    for case in ["1", "2"] {
        let ids = exp.int::<2>(&format!("input_ids_{case}"));
        let tokens = ids_of(&ids).iter().filter(|&&t| t == image).count();
        let (features, n) = model.image_features(images(&exp, case)).unwrap();
        assert_eq!(features.dims()[0], tokens, "image tokens of case {case}");
        assert_eq!(n, case.parse::<usize>().unwrap());
        let logits = model.forward(ids, Some(images(&exp, case)), None).unwrap();
        exp.check(&format!("logits_{case}"), logits, TOL);
    }
    let per_image = model
        .image_features_per_image(images(&exp, "2"))
        .unwrap()
        .iter()
        .map(|f| f.dims()[0])
        .collect::<Vec<_>>();
    assert_eq!(per_image, [70, 115]);
    let (features, _) = model.image_features(images(&exp, "1")).unwrap();
    exp.check("image_features_1", features, TOL);
}

#[test]
fn greedy_generation_with_an_image_matches_transformers() {
    let model = model();
    let exp = Expected::open(NAME);
    assert_eq!(model.eos_token_ids(), &[2]);
    check_greedy(
        &model,
        &exp,
        "input_ids_1",
        Some(images(&exp, "1")),
        "generated_1",
    );
}

#[test]
fn text_only_padded_and_cached_paths_match_transformers() {
    check_text_paths(&model(), &Expected::open(NAME));
}
