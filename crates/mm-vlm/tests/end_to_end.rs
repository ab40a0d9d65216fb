//! From image files to model inputs: the image processor reproduces the pixels the reference
//! generator fed the models (transformers' `CLIPImageProcessor` / `LlavaNextImageProcessor`),
//! and the processed LLaVA-NeXT images give as many features as the processor counts tokens.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use common::{Expected, device, fixture};
use mm_vlm::llava::VisionLanguageModel;
use mm_vlm::llava_next::{LlavaNextForConditionalGeneration, NextImages};
use mm_vlm::processor::LlavaImageProcessor;

fn images(name: &str) -> Vec<image::RgbImage> {
    ["image1.png", "image2.png"]
        .iter()
        .map(|f| image::open(fixture(name).join(f)).unwrap().to_rgb8())
        .collect()
}

fn processor(name: &str) -> LlavaImageProcessor {
    LlavaImageProcessor::from_file(fixture(name).join("preprocessor_config.json")).unwrap()
}

#[test]
fn llava_pixels_from_the_images() {
    let exp = Expected::open("llava-tiny");
    let processed = processor("llava-tiny")
        .preprocess(&images("llava-tiny"))
        .unwrap();
    exp.check(
        "pixel_values_2",
        processed.pixel_values(&device()).unwrap(),
        1e-5,
    );
}

#[test]
fn llava_next_pixels_sizes_and_token_counts_from_the_images() {
    let name = "llava-next-tiny";
    let exp = Expected::open(name);
    let processed = processor(name).preprocess(&images(name)).unwrap();
    let pixel_values = processed.padded_pixel_values(&device()).unwrap();
    // At most one 8-bit level apart (1 / 255 / std = 0.01501): a resampled pixel rounds the
    // other way in a few places of these tiny tiles.
    exp.check("pixel_values_2", pixel_values.clone(), 0.0151);
    let image_sizes = processed.image_sizes(&device());
    let sizes: Vec<i64> = image_sizes
        .to_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    assert_eq!(sizes, [28, 50, 56, 40]);

    let model = LlavaNextForConditionalGeneration::load(fixture(name).to_str().unwrap(), &device())
        .unwrap();
    let counts: Vec<usize> = model
        .image_features_per_image(NextImages {
            pixel_values,
            image_sizes,
        })
        .unwrap()
        .iter()
        .map(|f| f.dims()[0])
        .collect();
    let config = model.config();
    let expected: Vec<usize> = [(28, 50), (56, 40)]
        .iter()
        .map(|&size| {
            mm_vlm::anyres::llava_next_num_image_tokens(
                size,
                (30, 30),
                config.vision_config.patch_size as u32,
                &[(30, 60), (60, 30), (60, 60)],
                1,
                config.vision_feature_select_strategy,
            )
            .unwrap()
        })
        .collect();
    assert_eq!(counts, expected);
    assert_eq!(counts, [70, 115]);
}
