//! Models built from the published llava-hf configs expect exactly the tensor names and shapes
//! of the real checkpoints (lists made by tools/reference/gen_vlm.py on the meta device).
//!
//! Building a 7B model allocates nothing: burn parameters are initialised lazily and
//! `expected_tensors` reads only their shapes.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use common::{device, fixture};
use mm_core::weights::expected_tensors;
use mm_vlm::config::LlavaConfig;
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
use mm_vlm::llava_next::LlavaNextForConditionalGeneration;

fn reference(name: &str) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(fixture("full").join(name).join("tensors.json")).unwrap();
    let mut list: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    list.sort();
    list
}

fn config(name: &str) -> LlavaConfig {
    // A 7B model is 13.5 GB in bf16, which a small machine's memory limit would refuse; these
    // tests only build the lazy structure, so they lift the limit (every test here does).
    mm_core::limits::set_memory_limit(Some(u64::MAX));
    LlavaConfig::from_file(fixture("full").join(name).join("config.json")).unwrap()
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
fn llava_1_5_7b_names_and_shapes() {
    let name = "llava-1.5-7b-hf";
    let config = config(name);
    assert_eq!(config.text_config.vocab_size, 32064);
    assert_eq!(config.text_config.kv_heads(), 32);
    let model = LlavaForConditionalGeneration::new(&config, &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}

#[test]
fn llava_v1_6_mistral_7b_names_and_shapes() {
    let name = "llava-v1.6-mistral-7b-hf";
    let config = config(name);
    let text = &config.text_config;
    assert_eq!((text.kv_heads(), text.sliding_window), (8, None));
    assert_eq!(text.rope().rope_theta, Some(1e6));
    let model = LlavaNextForConditionalGeneration::new(&config, &device()).unwrap();
    assert_same(name, expected_tensors(&model));
}
