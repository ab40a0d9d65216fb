//! Where a model folder keeps its image processor settings: `preprocessor_config.json`
//! (published snapshots, `image_processor.save_pretrained`) or the `"image_processor"` object
//! of `processor_config.json` (`processor.save_pretrained` of transformers 5), read by one
//! function with transformers 5.24's precedence.

use std::path::{Path, PathBuf};

use mm_core::Error;
use mm_core::processor::{
    ImageProcessorConfig, ImageSize, PREPROCESSOR_CONFIG, PROCESSOR_CONFIG,
    find_image_processor_config,
};

fn saved(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/saved")
        .join(name)
}

/// A fresh temporary folder holding `files`.
fn folder(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mm-processor-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn shortest_edge(dir: &Path) -> ImageSize {
    ImageProcessorConfig::from_dir(dir).unwrap().size
}

const NESTED: &str = r#"{"image_processor": {"image_processor_type": "CLIPImageProcessor",
    "size": {"shortest_edge": 30}}, "processor_class": "CLIPProcessor"}"#;
const STALE: &str = r#"{"image_processor_type": "CLIPImageProcessor", "size": 40}"#;

#[test]
fn saved_folders_of_both_kinds_are_read() {
    // processor.save_pretrained: nested only.
    let clip = ImageProcessorConfig::from_dir(saved("clip")).unwrap();
    assert_eq!(clip.size, ImageSize::ShortestEdge { shortest_edge: 30 });
    assert_eq!(
        clip.image_processor_type.as_deref(),
        Some("CLIPImageProcessor")
    );
    let json = find_image_processor_config(saved("clip")).unwrap().unwrap();
    assert!(json.path.ends_with(PROCESSOR_CONFIG));
    // ViTImageProcessor.save_pretrained: preprocessor_config.json only.
    let vit = ImageProcessorConfig::from_dir(saved("vit")).unwrap();
    assert_eq!(
        vit.size,
        ImageSize::Exact {
            height: 30,
            width: 30
        }
    );
}

#[test]
fn nested_settings_win_over_a_stale_preprocessor_config() {
    // processor.save_pretrained into an older folder leaves preprocessor_config.json behind;
    // transformers reads the nested settings.
    let dir = folder(
        "both",
        &[(PROCESSOR_CONFIG, NESTED), (PREPROCESSOR_CONFIG, STALE)],
    );
    assert_eq!(
        shortest_edge(&dir),
        ImageSize::ShortestEdge { shortest_edge: 30 }
    );
    // A processor_config.json without "image_processor" (llava-hf snapshots: options only).
    let options = r#"{"patch_size": 14, "processor_class": "LlavaProcessor"}"#;
    let dir2 = folder(
        "options",
        &[(PROCESSOR_CONFIG, options), (PREPROCESSOR_CONFIG, STALE)],
    );
    assert_eq!(
        shortest_edge(&dir2),
        ImageSize::ShortestEdge { shortest_edge: 40 }
    );
    for d in [dir, dir2] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn missing_or_bad_settings_are_typed_errors() {
    let empty = folder("empty", &[]);
    assert!(find_image_processor_config(&empty).unwrap().is_none());
    let err = ImageProcessorConfig::from_dir(&empty).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains(PROCESSOR_CONFIG), "{err}");

    let bad_nested = r#"{"image_processor": {"size": "big"}}"#;
    let bad = folder("bad", &[(PROCESSOR_CONFIG, bad_nested)]);
    let err = ImageProcessorConfig::from_dir(&bad).unwrap_err();
    match &err {
        Error::Config { path, .. } => assert!(path.ends_with(PROCESSOR_CONFIG)),
        other => panic!("{other}"),
    }
    let broken = folder("broken", &[(PROCESSOR_CONFIG, "{not json")]);
    assert!(matches!(
        find_image_processor_config(&broken).unwrap_err(),
        Error::Config { .. }
    ));
    for d in [empty, bad, broken] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
