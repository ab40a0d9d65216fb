//! Unusable inputs give typed errors, never panics.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Expected, device, fixture};
use mm_vlm::Error;
use mm_vlm::generate::{Control, GenerationConfig, Streamer};
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
use mm_vlm::llava_next::{LlavaNextForConditionalGeneration, NextImages};

fn llava() -> LlavaForConditionalGeneration {
    LlavaForConditionalGeneration::load(fixture("llava-tiny").to_str().unwrap(), &device()).unwrap()
}

fn ids(v: Vec<i64>) -> Tensor<2, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), &device())
}

#[test]
fn image_count_must_match_the_image_tokens() {
    let model = llava();
    let exp = Expected::open("llava-tiny");
    // two image groups in the prompt, one image given
    let err = model
        .forward(
            exp.int("input_ids_2"),
            Some(exp.float("pixel_values_1")),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageTokens {
                tokens: 50,
                images: 1,
                features: 25
            }
        ),
        "{err}"
    );
    // image tokens but no image
    let err = model
        .forward(exp.int("input_ids_1"), None, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageTokens {
                tokens: 25,
                images: 0,
                ..
            }
        ),
        "{err}"
    );
    // an image but no image tokens
    let err = model
        .forward(exp.int("text_ids"), Some(exp.float("pixel_values_1")), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageTokens {
                tokens: 0,
                images: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn empty_and_too_long_prompts_and_unknown_ids() {
    let model = llava();
    let config = GenerationConfig::greedy().with_max_new_tokens(2);
    let empty = Tensor::<2, Int>::from_data(TensorData::new(Vec::<i64>::new(), [1, 0]), &device());
    let err = model
        .generate(empty, None, None, &config, None)
        .unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt), "{err}");

    let max = model.config().text_config.max_position_embeddings;
    let err = model
        .forward(ids(vec![5; max + 1]), None, None)
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len, max: m } if len == max + 1 && m == max),
        "{err}"
    );

    // a prompt that fills the context exactly still gives one token, then stops
    let out = model
        .generate(ids(vec![5; max]), None, None, &config, None)
        .unwrap();
    assert_eq!(out.new_tokens[0].len(), 1);
    assert_eq!(out.finish[0], mm_vlm::generate::FinishReason::MaxPositions);

    let err = model.forward(ids(vec![1, 300]), None, None).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = model.forward(ids(vec![1, -3]), None, None).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[test]
fn wrong_pixel_sizes_and_masks() {
    let model = llava();
    let exp = Expected::open("llava-tiny");
    let px = Tensor::<4>::zeros([1, 3, 32, 32], &device());
    let err = model
        .forward(exp.int("input_ids_1"), Some(px), None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Vision(mm_vision::Error::Shape { .. })),
        "{err}"
    );

    let mask = Tensor::<2, Int>::ones([1, 3], &device());
    let err = model
        .forward(exp.int("text_ids"), None, Some(mask))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "attention_mask",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn next_images_are_checked() {
    let model = LlavaNextForConditionalGeneration::load(
        fixture("llava-next-tiny").to_str().unwrap(),
        &device(),
    )
    .unwrap();
    let exp = Expected::open("llava-next-tiny");
    let px = exp.float::<5>("pixel_values_2");
    let sizes = exp.int::<2>("image_sizes_2");
    // Each call must fail with a shape error naming `what`.
    let shape_error = |pixel_values: Tensor<5>, image_sizes: Tensor<2, Int>, what: &str| {
        let err = model
            .image_features(NextImages {
                pixel_values,
                image_sizes,
            })
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { what: w, .. } if *w == what),
            "{what}: {err}"
        );
    };
    // one size for two images
    shape_error(px.clone(), sizes.clone().narrow(0, 0, 1), "image_sizes");
    // too few tiles for the second image's grid
    shape_error(px.clone().narrow(1, 0, 3), sizes.clone(), "pixel_values");
    // tiles of the wrong size
    let wrong = Tensor::zeros([2, 5, 3, 32, 32], &device());
    shape_error(wrong, sizes.clone(), "pixel_values");
    // a zero size
    let zero =
        Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 50, 56, 40], [2, 2]), &device());
    let err = model
        .image_features(NextImages {
            pixel_values: px,
            image_sizes: zero,
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[test]
fn stop_strings_need_a_tokenizer() {
    let model = llava();
    let config = GenerationConfig::greedy().with_stop_strings(["x"]);
    let mut streamer = Streamer::new(|_| Control::Continue);
    let err = model
        .generate(ids(vec![1, 5]), None, None, &config, Some(&mut streamer))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

/// Hostile configs are refused on load with typed errors: sizes that do not fit together
/// (they used to panic at the first forward), and layer counts or widths no machine can
/// hold (they used to abort while the model was built).
#[test]
fn hostile_configs_are_typed_errors() {
    use mm_vlm::config::LlavaConfig;
    use serde_json::json;

    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llava-tiny").join("config.json")).unwrap(),
    )
    .unwrap();
    let build = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = base.clone();
        edit(&mut json);
        let config: LlavaConfig = serde_json::from_value(json).unwrap();
        LlavaForConditionalGeneration::new(&config, &device())
            .map(|_| ())
            .unwrap_err()
    };
    let err = build(&|c| c["text_config"]["num_attention_heads"] = json!(5));
    assert!(err.to_string().contains("num_attention_heads (5)"), "{err}");
    let err = build(&|c| c["vision_config"]["num_attention_heads"] = json!(0));
    assert!(err.to_string().contains("num_attention_heads (0)"), "{err}");
    let err = build(&|c| c["vision_config"]["patch_size"] = json!(0));
    assert!(err.to_string().contains("patch_size"), "{err}");
    for field in ["text_config", "vision_config"] {
        let err = build(&|c| c[field]["num_hidden_layers"] = json!(1_000_000_000u64));
        assert!(
            err.to_string().contains("MM_MEMORY_LIMIT"),
            "{field}: {err}"
        );
    }
    let err = build(&|c| c["text_config"]["vocab_size"] = json!(u64::MAX));
    assert!(err.to_string().contains("MM_MEMORY_LIMIT"), "{err}");
}

/// A model whose weights hold NaN used to decode greedily from NaN logits and print garbage
/// with success; generation now stops with an error.
#[test]
fn nan_weights_stop_generation_with_an_error() {
    use safetensors::SafeTensors;
    use safetensors::tensor::TensorView;

    let src = fixture("llava-tiny");
    let dir = std::env::temp_dir().join(format!("mm-vlm-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(file), dir.join(file)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let nan: Vec<u8> = f32::NAN.to_le_bytes().repeat(
        st.tensor("language_model.model.norm.weight")
            .unwrap()
            .data()
            .len()
            / 4,
    );
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = if name == "language_model.model.norm.weight" {
                &nan[..]
            } else {
                view.data()
            };
            let view = TensorView::new(view.dtype(), view.shape().to_vec(), data).unwrap();
            (name, view)
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let model = LlavaForConditionalGeneration::load(dir.to_str().unwrap(), &device()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = model
        .generate(
            ids(vec![1, 5]),
            None,
            None,
            &GenerationConfig::greedy(),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
}
