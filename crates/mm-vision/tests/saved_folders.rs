//! Folders written by `save_pretrained` of transformers 5.24 with its default arguments
//! (`tests/fixtures/saved/*`, tools/reference/gen_saved.py) load through the public API and give
//! transformers' outputs: the CLIP / SigLIP pipelines read the image processor nested in
//! `processor_config.json` (there is no `preprocessor_config.json`), ViT reads
//! `preprocessor_config.json`; a transparent image (`CLIP.png`, RGBA) loaded as each module's
//! docs say gives the processor's pixels.

mod common;

use std::path::PathBuf;

use burn::tensor::{Int, Tensor};
use common::{Expected, assets, device, fixture};
use mm_core::image::{RgbImage, load_image, load_image_on_white};
use mm_core::processor::ImageProcessor;
use mm_vision::Pretrained;
use mm_vision::pipeline::{ClipPipeline, ImageTextModel, ImageTextPipeline, SiglipPipeline};
use mm_vision::vit::{ViTForImageClassification, ViTModel};

const TOL: f32 = 1e-4;
const TEXTS: [&str; 2] = ["a photo of a red cat", "the moon"];

fn saved(name: &str) -> PathBuf {
    fixture(&format!("saved/{name}"))
}

fn image_paths() -> [PathBuf; 2] {
    ["CLIP.png", "chelsea.png"].map(|f| assets().join("images").join(f))
}

/// `CLIP.png` (RGBA) and `chelsea.png` (RGB) through `load`.
fn images(load: fn(PathBuf) -> mm_core::Result<RgbImage>) -> Vec<RgbImage> {
    image_paths()
        .into_iter()
        .map(|p| load(p).unwrap())
        .collect()
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// The pixels of `images` through the folder's processor match `pixel_values`; the other
/// loader gives other pixels (the test tells the two rules apart).
fn check_pixels(
    exp: &Expected,
    processor: &ImageProcessor,
    right: fn(PathBuf) -> mm_core::Result<RgbImage>,
    wrong: fn(PathBuf) -> mm_core::Result<RgbImage>,
) {
    let pixels = processor.preprocess(&images(right), &device()).unwrap();
    exp.check("pixel_values", pixels, TOL);
    let other = processor.preprocess(&images(wrong), &device()).unwrap();
    let err = max_abs_diff(other, exp.float("pixel_values"));
    assert!(err > 0.5, "the other loader gives the same pixels ({err})");
}

fn check_pipeline<M: ImageTextModel>(name: &str) {
    let dir = saved(name);
    assert!(!dir.join("preprocessor_config.json").exists());
    let exp = Expected::open(&format!("saved/{name}"));
    let pipeline = ImageTextPipeline::<M>::load(dir.to_str().unwrap(), &device()).unwrap();

    let encoded = pipeline.tokenizer().encode_batch(&TEXTS).unwrap();
    let (ids, mask): (Tensor<2, Int>, Tensor<2, Int>) = encoded.to_tensors(&device()).unwrap();
    let ints = |t: Tensor<2, Int>| {
        t.into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap()
    };
    assert_eq!(ints(ids), ints(exp.int("input_ids")), "input_ids");
    assert_eq!(
        ints(mask),
        ints(exp.int("attention_mask")),
        "attention_mask"
    );

    check_pixels(&exp, pipeline.processor(), load_image_on_white, load_image);
    exp.check("text_embeds", pipeline.embed_texts(&TEXTS).unwrap(), TOL);
    let images = images(load_image_on_white);
    exp.check("image_embeds", pipeline.embed_images(&images).unwrap(), TOL);
    exp.check("probs", pipeline.scores(&images, &TEXTS).unwrap(), TOL);
}

#[test]
fn clip_pipeline_loads_a_saved_folder() {
    check_pipeline::<mm_vision::clip::ClipModel>("clip");
    // Before: the pipeline fell back to the default 224 processor.
    let pipeline = ClipPipeline::load(saved("clip").to_str().unwrap(), &device()).unwrap();
    assert_eq!(pipeline.processor().output_size(100, 200), (30, 30));
}

#[test]
fn siglip_pipeline_loads_a_saved_folder() {
    check_pipeline::<mm_vision::siglip::SiglipModel>("siglip");
    let pipeline = SiglipPipeline::load(saved("siglip").to_str().unwrap(), &device()).unwrap();
    assert_eq!(pipeline.processor().output_size(100, 200), (30, 30));
}

#[test]
fn vit_classifier_loads_a_saved_folder() {
    let dir = saved("vit");
    let exp = Expected::open("saved/vit");
    let processor = ImageProcessor::from_dir(&dir).unwrap();
    // transformers refuses RGBA for ViT; `convert("RGB")` drops alpha: `load_image`.
    check_pixels(&exp, &processor, load_image, load_image_on_white);
    let model = ViTForImageClassification::load(dir.to_str().unwrap(), &device()).unwrap();
    let (logits, _) = model.forward(exp.float("pixel_values")).unwrap();
    exp.check("logits", logits, TOL);
    assert_eq!(model.config().label(1), "logo");
}

#[test]
fn vit_model_loads_a_saved_folder() {
    let dir = saved("vit-model");
    let exp = Expected::open("saved/vit-model");
    let processor = ImageProcessor::from_dir(&dir).unwrap();
    check_pixels(&exp, &processor, load_image, load_image_on_white);
    let model = ViTModel::load(dir.to_str().unwrap(), &device()).unwrap();
    let out = model.forward(exp.float("pixel_values")).unwrap();
    exp.check("last_hidden_state", out.last_hidden_state, TOL);
    exp.check("pooler_output", out.pooler_output, TOL);
}

#[test]
fn saved_processor_values_are_read() {
    // The nested settings, not CLIP's defaults: a 30-pixel crop, SigLIP's 0.5 mean.
    let clip = ImageProcessor::from_dir(saved("clip")).unwrap();
    assert_eq!(clip.output_size(762, 2162), (30, 30));
    let siglip = ImageProcessor::from_dir(saved("siglip")).unwrap();
    assert_eq!(siglip.config().image_mean, [0.5; 3]);
}
