//! SigLIP matches transformers' `SiglipModel` on a tiny random checkpoint (tools/reference).

mod common;

use common::{Expected, check_contrastive, device, fixture};
use mm_vision::Pretrained;
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

    check_contrastive(&exp, &out, TOL);

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
