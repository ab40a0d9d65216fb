//! CLIP matches transformers' `CLIPModel` on tiny random checkpoints (tools/reference).

mod common;

use common::{Expected, check_contrastive, device, fixture};
use mm_vision::Pretrained;
use mm_vision::clip::{
    ClipModel, ClipTextModel, ClipTextModelWithProjection, ClipVisionModel,
    ClipVisionModelWithProjection,
};

const TOL: f32 = 1e-4;

fn check_full_model(name: &str) {
    let dir = fixture(name);
    let model = ClipModel::load(dir.to_str().unwrap(), &device()).unwrap();
    let exp = Expected::open(name);
    let ids = exp.int::<2>("input_ids");
    let mask = exp.int::<2>("attention_mask");
    let pixels = exp.float::<4>("pixel_values");
    let out = model.forward(ids, Some(mask), pixels).unwrap();

    check_contrastive(&exp, &out, TOL);
}

#[test]
fn clip_quick_gelu_legacy_eos_matches_transformers() {
    check_full_model("clip-tiny-quickgelu");
}

#[test]
fn clip_gelu_new_eos_matches_transformers() {
    check_full_model("clip-tiny-gelu");
}

#[test]
fn clip_towers_load_alone_with_projections() {
    for name in ["clip-tiny-quickgelu", "clip-tiny-gelu"] {
        let dir = fixture(name);
        let path = dir.to_str().unwrap();
        let exp = Expected::open(name);
        let ids = exp.int::<2>("input_ids");
        let mask = exp.int::<2>("attention_mask");
        let pixels = exp.float::<4>("pixel_values");

        let text = ClipTextModel::load(path, &device()).unwrap();
        let out = text.forward(ids.clone(), Some(mask.clone())).unwrap();
        exp.check("text.pooler_output", out.pooler_output, TOL);

        let text = ClipTextModelWithProjection::load(path, &device()).unwrap();
        let (_, embeds) = text.forward(ids, Some(mask)).unwrap();
        exp.check("text_embeds_raw", embeds, TOL);

        let vision = ClipVisionModel::load(path, &device()).unwrap();
        let out = vision.forward(pixels.clone()).unwrap();
        exp.check("vision.pooler_output", out.pooler_output.clone(), TOL);
        assert_eq!(
            out.hidden_state(-2).unwrap().dims(),
            out.hidden_states[out.hidden_states.len() - 2].dims()
        );

        let vision = ClipVisionModelWithProjection::load(path, &device()).unwrap();
        let (_, embeds) = vision.forward(pixels).unwrap();
        exp.check("image_embeds_raw", embeds, TOL);
    }
}
