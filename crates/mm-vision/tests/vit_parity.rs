//! ViT matches transformers' `ViTForImageClassification` / `ViTModel` on tiny random
//! checkpoints (tools/reference).

mod common;

use common::{Expected, check_tower, device, fixture};
use mm_vision::Pretrained;
use mm_vision::vit::{ViTForImageClassification, ViTModel};

const TOL: f32 = 1e-4;

#[test]
fn vit_classifier_matches_transformers() {
    let path = fixture("vit-tiny");
    let model = ViTForImageClassification::load(path.to_str().unwrap(), &device()).unwrap();
    let exp = Expected::open("vit-tiny");
    let pixels = exp.float::<4>("pixel_values");
    let (logits, out) = model.forward(pixels.clone()).unwrap();
    exp.check("logits", logits.clone(), TOL);
    check_tower(&exp, "", &out, TOL);

    let top = model.classify(pixels, 3).unwrap();
    assert_eq!(top.len(), 2);
    let logits: Vec<f32> = logits.into_data().try_to_vec().unwrap();
    for (b, preds) in top.iter().enumerate() {
        assert_eq!(preds.len(), 3);
        let row = &logits[b * 5..(b + 1) * 5];
        let best = (0..5).max_by(|&x, &y| row[x].total_cmp(&row[y])).unwrap();
        assert_eq!(preds[0].index, best);
        assert_eq!(preds[0].label, model.config().label(best));
        assert!(preds[0].score >= preds[1].score && preds[1].score >= preds[2].score);
    }
    assert_eq!(model.config().label(0), "tabby cat");
}

#[test]
fn vit_model_with_pooler_matches_transformers() {
    let path = fixture("vit-tiny-model");
    let model = ViTModel::load(path.to_str().unwrap(), &device()).unwrap();
    assert!(model.pooler.is_some());
    let exp = Expected::open("vit-tiny-model");
    let out = model.forward(exp.float::<4>("pixel_values")).unwrap();
    check_tower(&exp, "", &out, TOL);
}

#[test]
fn vit_model_reads_classification_checkpoint_backbone() {
    let path = fixture("vit-tiny");
    let model = ViTModel::load(path.to_str().unwrap(), &device()).unwrap();
    assert!(model.pooler.is_none());
    let exp = Expected::open("vit-tiny");
    let out = model.forward(exp.float::<4>("pixel_values")).unwrap();
    exp.check("last_hidden_state", out.last_hidden_state, TOL);
}
