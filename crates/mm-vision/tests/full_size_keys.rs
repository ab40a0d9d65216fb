//! Models built from the published configs expect exactly the tensor names and shapes of the
//! real checkpoints (lists made by tools/reference on the meta device), so a real checkpoint
//! loads with nothing missing or left over.

mod common;

use common::{device, fixture};
use mm_core::weights::expected_tensors;
use mm_vision::clip::{ClipConfig, ClipModel};
use mm_vision::siglip::{SiglipConfig, SiglipModel};
use mm_vision::vit::{ViTConfig, ViTForImageClassification};

fn reference(name: &str) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(fixture("full").join(name).join("tensors.json")).unwrap();
    let mut list: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    // burn has no 0-d tensors: scalars (CLIP's logit_scale) are 1-element vectors here.
    for (_, shape) in &mut list {
        if shape.is_empty() {
            shape.push(1);
        }
    }
    list.sort();
    list
}

fn config<T: serde::de::DeserializeOwned>(name: &str) -> T {
    mm_core::config::read_json(fixture("full").join(name).join("config.json")).unwrap()
}

fn assert_same(name: &str, ours: Vec<(String, Vec<usize>)>) {
    let theirs = reference(name);
    let missing: Vec<_> = theirs.iter().filter(|t| !ours.contains(t)).collect();
    let extra: Vec<_> = ours.iter().filter(|t| !theirs.contains(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: checkpoint tensors we lack: {missing:?}\nours not in checkpoint: {extra:?}"
    );
    assert_eq!(ours.len(), theirs.len());
}

#[test]
fn clip_vit_base_patch32_names_and_shapes() {
    let name = "clip-vit-base-patch32";
    let model = ClipModel::new(&config::<ClipConfig>(name), &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}

#[test]
fn clip_vit_large_patch14_names_and_shapes() {
    let name = "clip-vit-large-patch14";
    let model = ClipModel::new(&config::<ClipConfig>(name), &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}

#[test]
fn siglip_base_patch16_224_names_and_shapes() {
    let name = "siglip-base-patch16-224";
    let model = SiglipModel::new(&config::<SiglipConfig>(name), &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}

#[test]
fn vit_base_patch16_224_names_and_shapes() {
    let name = "vit-base-patch16-224";
    let model = ViTForImageClassification::new(&config::<ViTConfig>(name), &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}

#[test]
fn t5_v1_1_xxl_encoder_names_and_shapes() {
    let name = "t5-v1_1-xxl";
    let config = config::<mm_vision::t5::T5Config>(name);
    let model = mm_vision::t5::T5EncoderModel::new(&config, &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}
