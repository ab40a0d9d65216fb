//! Folders written by `model.save_pretrained` + `processor.save_pretrained` of transformers
//! 5.24 with their default arguments (`tests/fixtures/saved/llava*`,
//! tools/reference/gen_saved.py): the CLIP tower is saved as `vision_tower.embeddings.*` (no
//! `vision_model.`), the image processor settings are nested in `processor_config.json` (no
//! `preprocessor_config.json`). `LlavaProcessor::from_dir` and `VisionLanguageModel::load` give
//! transformers' ids, pixels and logits for a transparent image (`CLIP.png`, RGBA) loaded with
//! `load_image_on_white`, as the processor module's docs say.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use burn::tensor::{Int, Tensor};
use common::{Expected, assets, device, fixture};
use mm_core::image::{load_image, load_image_on_white};
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
use mm_vlm::llava_next::LlavaNextForConditionalGeneration;
use mm_vlm::processor::{LlavaProcessor, ProcessorOutput};

const TOL: f32 = 1e-4;
const PROMPT: &str = "USER: <image>\nWhat is this? ASSISTANT:";

fn ints(t: Tensor<2, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

/// The processor's output for `CLIP.png` loaded with `load`; its ids and mask equal
/// transformers'.
fn process(
    name: &str,
    exp: &Expected,
    load: fn(std::path::PathBuf) -> mm_core::Result<image::RgbImage>,
) -> ProcessorOutput {
    let dir = fixture(name);
    assert!(!dir.join("preprocessor_config.json").exists());
    let processor = LlavaProcessor::from_dir(&dir).unwrap();
    let image = load(assets().join("images/CLIP.png")).unwrap();
    let out = processor.process(PROMPT, &[image]).unwrap();
    let (ids, mask) = out.token_tensors(&device()).unwrap();
    assert_eq!(ints(ids), ints(exp.int("input_ids")), "input_ids");
    assert_eq!(
        ints(mask),
        ints(exp.int("attention_mask")),
        "attention_mask"
    );
    out
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn llava_loads_a_saved_folder() {
    let name = "saved/llava";
    let exp = Expected::open(name);
    let out = process(name, &exp, load_image_on_white);
    let pixels = out.images.pixel_values(&device()).unwrap();
    exp.check("pixel_values", pixels.clone(), TOL);
    // Dropping alpha instead gives other pixels.
    let dropped = process(name, &exp, load_image);
    let err = max_abs_diff(
        dropped.images.pixel_values(&device()).unwrap(),
        pixels.clone(),
    );
    assert!(err > 0.5, "{err}");

    let model =
        LlavaForConditionalGeneration::load(fixture(name).to_str().unwrap(), &device()).unwrap();
    let (ids, mask) = out.token_tensors(&device()).unwrap();
    let logits = model.forward(ids, Some(pixels), Some(mask)).unwrap();
    exp.check("logits", logits, TOL);
}

#[test]
fn llava_next_loads_a_saved_folder() {
    let name = "saved/llava-next";
    let exp = Expected::open(name);
    let out = process(name, &exp, load_image_on_white);
    let images = out.images.to_next_images(&device()).unwrap();
    exp.check("pixel_values", images.pixel_values.clone(), TOL);
    assert_eq!(
        ints(images.image_sizes.clone()),
        ints(exp.int("image_sizes"))
    );

    let model = LlavaNextForConditionalGeneration::load(fixture(name).to_str().unwrap(), &device())
        .unwrap();
    // Tied embeddings: the folder has no lm_head.
    assert!(model.language_model.lm_head.is_none());
    let (ids, mask) = out.token_tensors(&device()).unwrap();
    let logits = model.forward(ids, Some(images), Some(mask)).unwrap();
    exp.check("logits", logits, TOL);
}
