//! The zero-shot / embedding pipelines wire tokenizer, processor and model together correctly
//! (random full-vocabulary models with the real CLIP tokenizer and real photos).

mod common;

use common::{assets, device};
use mm_core::processor::{ImageProcessor, ImageProcessorConfig};
use mm_core::tokenizer::Tokenizer;
use mm_vision::Error;
use mm_vision::clip::{ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
use mm_vision::pipeline::{ClipPipeline, SiglipPipeline};
use mm_vision::siglip::{SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig};

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(assets().join("clip-tokenizer/tokenizer.json")).unwrap()
}

fn photo(name: &str) -> image::RgbImage {
    let dir = assets().join("images");
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_stem().is_some_and(|s| s == name))
        .unwrap();
    mm_core::image::load_image(path).unwrap()
}

fn small_clip() -> ClipPipeline {
    let config = ClipConfig {
        text_config: ClipTextConfig {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            ..Default::default()
        },
        vision_config: ClipVisionConfig {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            ..Default::default()
        },
        projection_dim: 16,
        ..Default::default()
    };
    let model = ClipModel::new(&config, &device()).unwrap();
    let processor = ImageProcessor::new(ImageProcessorConfig::clip()).unwrap();
    ClipPipeline::new(model, tokenizer(), processor, &device()).unwrap()
}

#[test]
fn clip_zero_shot_gives_a_ranked_distribution() {
    let clip = small_clip();
    let labels = ["an astronaut", "a cat", "a cup of coffee"];
    let ranked = clip.zero_shot(&photo("astronaut"), &labels).unwrap();
    assert_eq!(ranked.len(), 3);
    let total: f32 = ranked.iter().map(|(_, p)| p).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1));
    for label in labels {
        assert!(ranked.iter().any(|(l, _)| l == label));
    }
}

#[test]
fn clip_embeddings_are_normalised_and_batched() {
    let clip = small_clip();
    let texts = clip
        .embed_texts(&["a photo of a cat", "a rocket on the launch pad"])
        .unwrap();
    let images = clip
        .embed_images(&[photo("chelsea"), photo("rocket"), photo("camera")])
        .unwrap();
    assert_eq!(texts.dims(), [2, 16]);
    assert_eq!(images.dims(), [3, 16]);
    let norms: Vec<f32> = images
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .into_data()
        .try_to_vec()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    // Batching does not change a text's embedding.
    let alone = clip.embed_texts(&["a photo of a cat"]).unwrap();
    let diff: f32 = (alone - texts.narrow(0, 0, 1)).abs().max().into_scalar();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn empty_label_list_is_an_error() {
    let clip = small_clip();
    let err = clip.zero_shot(&photo("coffee"), &[]).unwrap_err();
    assert!(matches!(err, Error::NoLabels), "{err:?}");
    assert!(matches!(clip.embed_texts(&[]), Err(Error::InvalidInput(_))));
}

#[test]
fn token_ids_outside_the_vocabulary_are_an_error() {
    let config = ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: 99,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let model = ClipModel::new(&config, &device()).unwrap();
    let (ids, mask) = tokenizer()
        .encode_batch(&["a cat"])
        .unwrap()
        .to_tensors(&device())
        .unwrap();
    let err = model.text_features(ids, Some(mask)).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

#[test]
fn siglip_scores_are_independent_sigmoids() {
    let config = SiglipConfig {
        text_config: SiglipTextConfig {
            vocab_size: 49408,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            ..Default::default()
        },
        vision_config: SiglipVisionConfig {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            patch_size: 32,
            ..Default::default()
        },
    };
    let model = SiglipModel::new(&config, &device()).unwrap();
    let processor = ImageProcessor::new(ImageProcessorConfig::siglip()).unwrap();
    let siglip = SiglipPipeline::new(model, tokenizer(), processor, &device()).unwrap();
    let ranked = siglip
        .zero_shot(&photo("coffee"), &["coffee", "a cat"])
        .unwrap();
    assert_eq!(ranked.len(), 2);
    assert!(ranked.iter().all(|(_, p)| *p > 0.0 && *p < 1.0));
    let embeds = siglip.embed_texts(&["coffee", "a cat"]).unwrap();
    // SigLIP pads to max_position_embeddings (64).
    assert_eq!(embeds.dims(), [2, 32]);
    assert_eq!(siglip.tokenizer().max_length(), 64);
}
