//! Bad files and inputs give clear typed errors, never panics.

mod common;

use std::path::{Path, PathBuf};

use common::{Expected, device, fixture};
use mm_core::Error as CoreError;
use mm_vision::Error;
use mm_vision::Pretrained;
use mm_vision::clip::ClipModel;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

/// A copy of a fixture folder in a fresh temp dir, for tests to damage.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Rewrites `model.safetensors` in `dir` through `edit(name, dtype, shape, bytes)`; returning
/// `None` drops the tensor.
fn rewrite(dir: &Path, edit: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((shape, data)) = edit(&name, view.shape().to_vec(), view.data().to_vec()) {
            kept.push((name.to_string(), view.dtype(), shape, data));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

fn load(dir: &Path) -> Result<ClipModel, Error> {
    ClipModel::load(dir.to_str().unwrap(), &device())
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = scratch_copy("clip-tiny-gelu", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Core(CoreError::Safetensors { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensors_are_all_listed() {
    let dir = scratch_copy("clip-tiny-gelu", "missing");
    rewrite(&dir, |name, shape, data| match name {
        "text_model.final_layer_norm.weight" | "visual_projection.weight" => None,
        _ => Some((shape, data)),
    });
    let err = load(&dir).unwrap_err();
    let Error::Core(CoreError::Load(report)) = &err else {
        panic!("expected a load report, got {err:?}");
    };
    assert_eq!(
        report.missing,
        vec![
            "text_model.final_layer_norm.weight",
            "visual_projection.weight"
        ]
    );
    assert!(err.to_string().contains("2 missing tensors"), "{err}");
}

#[test]
fn mis_shaped_tensor_is_reported_with_both_shapes() {
    let dir = scratch_copy("clip-tiny-gelu", "shape");
    rewrite(&dir, |name, shape, data| {
        if name == "text_model.encoder.layers.0.mlp.fc1.weight" {
            // [37, 32] stored as [32, 37]: same bytes, wrong layout.
            Some((vec![shape[1], shape[0]], data))
        } else {
            Some((shape, data))
        }
    });
    let err = load(&dir).unwrap_err();
    let Error::Core(CoreError::Load(report)) = &err else {
        panic!("expected a load report, got {err:?}");
    };
    assert_eq!(
        report.mismatched,
        vec![(
            "text_model.encoder.layers.0.mlp.fc1.weight".to_string(),
            vec![37, 32],
            vec![32, 37]
        )]
    );
}

#[test]
fn config_with_wrong_type_names_the_field() {
    let dir = scratch_copy("clip-tiny-gelu", "config");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"hidden_size\": 32", "\"hidden_size\": \"thirty-two\""),
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Core(CoreError::Config { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid type"), "{err}");
}

#[test]
fn missing_folder_and_weights_say_what_is_missing() {
    let err = load(Path::new("/no/such/model")).unwrap_err();
    assert!(
        matches!(err, Error::Core(CoreError::MissingFile { .. })),
        "{err:?}"
    );
    let dir = scratch_copy("clip-tiny-gelu", "noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("huggingface-cli download"),
        "{err}"
    );
}

#[test]
fn wrong_image_size_and_sequence_length_are_errors() {
    let model = load(&fixture("clip-tiny-gelu")).unwrap();
    let exp = Expected::open("clip-tiny-gelu");
    let small = burn::tensor::Tensor::<4>::zeros([1, 3, 16, 16], &device());
    let err = model.image_features(small).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "pixel_values",
                ..
            }
        ),
        "{err:?}"
    );
    let long = burn::tensor::Tensor::<2, burn::tensor::Int>::zeros([1, 40], &device());
    let err = model.text_features(long, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "input_ids",
                ..
            }
        ),
        "{err:?}"
    );
    let ids = exp.int::<2>("input_ids");
    let bad_mask = burn::tensor::Tensor::<2, burn::tensor::Int>::ones([1, 3], &device());
    assert!(model.text_features(ids, Some(bad_mask)).is_err());
}

/// Loads `fixture` with `config.json` edited by `edit`, through the model's public `load`.
fn load_edited<M: Pretrained>(
    fixture_name: &str,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<M, Error> {
    let dir = scratch_copy(fixture_name, tag);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    let result = M::load(dir.to_str().unwrap(), &device());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn invalid_config(err: Error, needle: &str) {
    match &err {
        Error::Core(CoreError::InvalidConfig(message)) => {
            assert!(message.contains(needle), "{message}")
        }
        other => panic!("expected an invalid config naming {needle}, got {other:?}"),
    }
}

fn too_large(err: Error) {
    let text = err.to_string();
    assert!(
        matches!(err, Error::Core(CoreError::TooLarge { .. })) && text.contains("MM_MEMORY_LIMIT"),
        "{text}"
    );
}

/// Configs whose sizes do not fit together are refused on load (they used to panic in
/// `split_heads` at the first forward or divide by zero while loading), and a layer count
/// no machine can hold is refused before anything is allocated (it used to abort).
#[test]
fn hostile_configs_are_typed_errors() {
    use mm_vision::siglip::SiglipModel;
    use mm_vision::vit::{ViTForImageClassification, ViTModel};
    use serde_json::json;

    let err = load_edited::<ClipModel>("clip-tiny-gelu", "heads", |c| {
        c["text_config"]["num_attention_heads"] = json!(5)
    });
    invalid_config(err.unwrap_err(), "num_attention_heads (5)");
    let err = load_edited::<ClipModel>("clip-tiny-gelu", "heads0", |c| {
        c["vision_config"]["num_attention_heads"] = json!(0)
    });
    invalid_config(err.unwrap_err(), "num_attention_heads (0)");
    let err = load_edited::<ClipModel>("clip-tiny-gelu", "layers", |c| {
        c["vision_config"]["num_hidden_layers"] = json!(1_000_000_000u64)
    });
    too_large(err.unwrap_err());
    let err = load_edited::<SiglipModel>("siglip-tiny", "siglip-heads", |c| {
        c["vision_config"]["num_attention_heads"] = json!(7)
    });
    invalid_config(err.unwrap_err(), "num_attention_heads (7)");
    let err = load_edited::<SiglipModel>("siglip-tiny", "siglip-layers", |c| {
        c["text_config"]["num_hidden_layers"] = json!(1_000_000_000u64)
    });
    too_large(err.unwrap_err());
    let err = load_edited::<ViTForImageClassification>("vit-tiny", "vit-patch", |c| {
        c["patch_size"] = json!(0)
    });
    invalid_config(err.unwrap_err(), "patch_size");
    let err = load_edited::<ViTModel>("vit-tiny-model", "vit-heads", |c| {
        c["num_attention_heads"] = json!(3)
    });
    invalid_config(err.unwrap_err(), "num_attention_heads (3)");
    let err = load_edited::<ViTModel>("vit-tiny-model", "vit-width", |c| {
        c["hidden_size"] = json!(1u64 << 40)
    });
    too_large(err.unwrap_err());
    // `new` validates too.
    let config = mm_vision::clip::ClipConfig {
        projection_dim: 0,
        ..Default::default()
    };
    invalid_config(
        ClipModel::new(&config, &device()).unwrap_err(),
        "projection_dim",
    );
}

/// A model whose weights hold NaN ranks by garbage: classification refuses it.
#[test]
fn nan_weights_give_an_error_not_nan_scores() {
    use mm_vision::vit::ViTForImageClassification;

    let dir = scratch_copy("vit-tiny", "nan-weights");
    rewrite(&dir, |name, shape, data| {
        let data = if name == "classifier.weight" {
            data.chunks(4)
                .flat_map(|_| f32::NAN.to_le_bytes())
                .collect()
        } else {
            data
        };
        Some((shape, data))
    });
    let vit = ViTForImageClassification::load(dir.to_str().unwrap(), &device()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let size = vit.config().image_size;
    let pixels = burn::tensor::Tensor::<4>::zeros([1, 3, size, size], &device());
    let err = vit.classify(pixels, 3).unwrap_err();
    assert!(
        matches!(err, Error::NonFinite { what: "scores", .. }),
        "{err}"
    );
}
