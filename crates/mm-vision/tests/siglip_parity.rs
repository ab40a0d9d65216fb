//! SigLIP matches transformers' `SiglipModel` on a tiny random checkpoint (tools/reference).

mod common;

use common::{Expected, device, fixture};
use mm_vision::siglip::{SiglipModel, SiglipTextModel, SiglipVisionModel};

const TOL: f32 = 1e-4;

#[test]
fn siglip_matches_transformers() {
    let path = fixture("siglip-tiny");
    let model = SiglipModel::load(path.to_str().unwrap(), &device()).unwrap();
    let exp = Expected::open("siglip-tiny");
    let ids = exp.int::<2>("input_ids");
    let mask = exp.int::<2>("attention_mask");
    let pixels = exp.float::<4>("pixel_values");
    let out = model.forward(ids.clone(), Some(mask), pixels).unwrap();

    exp.check(
        "text.last_hidden_state",
        out.text_output.last_hidden_state.clone(),
        TOL,
    );
    exp.check(
        "text.pooler_output",
        out.text_output.pooler_output.clone(),
        TOL,
    );
    for (i, h) in out.text_output.hidden_states.iter().enumerate() {
        exp.check(&format!("text.hidden_states.{i}"), h.clone(), TOL);
    }
    exp.check(
        "vision.last_hidden_state",
        out.vision_output.last_hidden_state.clone(),
        TOL,
    );
    exp.check(
        "vision.pooler_output",
        out.vision_output.pooler_output.clone(),
        TOL,
    );
    for (i, h) in out.vision_output.hidden_states.iter().enumerate() {
        exp.check(&format!("vision.hidden_states.{i}"), h.clone(), TOL);
    }
    exp.check("text_embeds", out.text_embeds.clone(), TOL);
    exp.check("image_embeds", out.image_embeds.clone(), TOL);
    exp.check("logits_per_image", out.logits_per_image.clone(), TOL);
    exp.check("logits_per_text", out.logits_per_text.clone(), TOL);
    exp.check("loss", out.loss(), TOL);

    let unmasked = model.text_features(ids, None).unwrap();
    exp.check("text_nomask.pooler_output", unmasked, TOL);
}

#[test]
fn siglip_towers_load_alone() {
    let path = fixture("siglip-tiny");
    let exp = Expected::open("siglip-tiny");
    let text = SiglipTextModel::load(path.to_str().unwrap(), &device()).unwrap();
    let out = text
        .forward(
            exp.int::<2>("input_ids"),
            Some(exp.int::<2>("attention_mask")),
        )
        .unwrap();
    exp.check("text.pooler_output", out.pooler_output, TOL);
    let vision = SiglipVisionModel::load(path.to_str().unwrap(), &device()).unwrap();
    let out = vision.forward(exp.float::<4>("pixel_values")).unwrap();
    exp.check("vision.pooler_output", out.pooler_output, TOL);
}
