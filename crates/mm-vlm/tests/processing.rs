//! The processor side of mm-vlm against transformers 5.24 (`tools/reference/gen_vlm_chat.py`
//! wrote the fixtures): anyres arithmetic, chat templates, prompt token ids and LLaVA /
//! LLaVA-NeXT pixel values of the real photos in `$MM_ASSETS/images`.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{assets, device, fixture};

use mm_core::image::{RgbImage, decode_image_on_white, load_image_on_white};
use mm_core::tokenizer::Tokenizer;
use mm_vlm::Error;
use mm_vlm::anyres::{
    Size, anyres_grid_shape, llava_next_feature_count, num_anyres_patches, select_best_resolution,
    unpadded_size,
};
use mm_vlm::chat::{
    ChatMessage, ChatTemplate, Content, ContentFormat, DefaultTemplate, SpecialTokens,
};
use mm_vlm::config::SelectStrategy;
use mm_vlm::processor::{
    ImageProcessorKind, LlavaImageProcessor, LlavaImageProcessorConfig, LlavaProcessor,
    ProcessorOptions,
};
use safetensors::SafeTensors;
use serde_json::Value;

fn tok_dir() -> PathBuf {
    fixture("llava-tokenizer")
}

fn proc_dir() -> PathBuf {
    fixture("llava-processor")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(tok_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn photo(name: &str) -> RgbImage {
    load_image_on_white(assets().join("images").join(name)).unwrap()
}

fn size(v: &Value) -> Size {
    (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32)
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn anyres_matches_python_table() {
    let cases = cases();
    let rows = cases["anyres"].as_array().unwrap();
    assert!(rows.len() > 100);
    for row in rows {
        let pinpoints: Vec<Size> = row["pinpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(size)
            .collect();
        let image = size(&row["image_size"]);
        let tile = row["tile"].as_u64().unwrap() as u32;
        let patch = row["patch_size"].as_u64().unwrap() as u32;
        let extra = row["num_additional_image_tokens"].as_u64().unwrap() as u32;
        let ctx = format!("{} {image:?}", row["pinpoints_name"]);
        assert_eq!(
            select_best_resolution(image, &pinpoints).unwrap(),
            size(&row["best_resolution"]),
            "{ctx}"
        );
        let grid = anyres_grid_shape(image, &pinpoints, tile).unwrap();
        assert_eq!(grid, size(&row["grid_shape"]), "{ctx}");
        assert_eq!(
            num_anyres_patches(image, &pinpoints, tile).unwrap() as u64,
            row["num_patches"].as_u64().unwrap(),
            "{ctx}"
        );
        let side = tile / patch;
        assert_eq!(
            unpadded_size(image, (grid.0 * side, grid.1 * side)).unwrap(),
            size(&row["unpadded"]),
            "{ctx}"
        );
        let count =
            llava_next_feature_count(image, (tile, tile), patch, &pinpoints, extra).unwrap();
        assert_eq!(
            count.total() as u64,
            row["num_features"].as_u64().unwrap(),
            "{ctx}"
        );
    }
}

fn special_tokens() -> SpecialTokens {
    SpecialTokens {
        bos_token: Some("<s>".into()),
        eos_token: Some("</s>".into()),
        unk_token: Some("<unk>".into()),
        pad_token: Some("<pad>".into()),
    }
}

/// The typed messages of a JSON conversation.
fn typed_messages(messages: &Value) -> Vec<ChatMessage> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap();
            match &m["content"] {
                Value::String(s) => ChatMessage::text(role, s.as_str()),
                Value::Array(parts) => ChatMessage::new(
                    role,
                    parts
                        .iter()
                        .map(|p| match p["type"].as_str().unwrap() {
                            "image" => Content::Image,
                            _ => Content::Text(p["text"].as_str().unwrap().into()),
                        })
                        .collect(),
                ),
                other => panic!("unexpected content {other}"),
            }
        })
        .collect()
}

#[test]
fn chat_templates_render_like_transformers() {
    let cases = cases();
    let tokenizer = Tokenizer::from_file(tok_dir().join("tokenizer.json")).unwrap();
    let mut checked = 0;
    for case in cases["chats"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let source = cases["templates"][name].as_str().unwrap();
        let template = ChatTemplate::new(source)
            .unwrap()
            .with_special_tokens(special_tokens());
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let expected = case["rendered"].as_str().unwrap();
        let ctx = format!("{name} / {} / agp={agp}", case["chat"]);
        let got = template.render_json(&case["messages"], agp).unwrap();
        assert_eq!(got, expected, "{ctx}");
        // The typed API renders the same.
        let typed = template
            .render(&typed_messages(&case["messages"]), agp)
            .unwrap();
        assert_eq!(typed, expected, "{ctx} (typed)");
        let ids = tokenizer.inner().encode(got.as_str(), false).unwrap();
        assert_eq!(ids.get_ids(), u32s(&case["ids_no_special"]), "{ctx} ids");
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
    let err_case = &cases["template_error"];
    let t = ChatTemplate::new(cases["templates"]["mistral_next"].as_str().unwrap()).unwrap();
    match t.render_json(&err_case["messages"], false) {
        Err(Error::Template(msg)) => assert_eq!(msg, err_case["error"].as_str().unwrap()),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn builtin_defaults_are_the_published_templates() {
    let cases = cases();
    for (which, name) in [
        (DefaultTemplate::Llava15, "llava15"),
        (DefaultTemplate::Vicuna, "vicuna"),
        (DefaultTemplate::Mistral, "mistral_next"),
    ] {
        assert_eq!(
            which.source(),
            cases["templates"][name].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            ChatTemplate::builtin(which).content_format(),
            ContentFormat::Parts
        );
    }
    let t = ChatTemplate::new(cases["templates"]["mistral_instruct"].as_str().unwrap()).unwrap();
    assert_eq!(t.content_format(), ContentFormat::String);
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm_vlm_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn template_sources_in_a_model_folder() {
    let cases = cases();
    let llava = cases["templates"]["llava15"].as_str().unwrap();
    let mistral = cases["templates"]["mistral_instruct"].as_str().unwrap();

    // tokenizer_config.json with a string template and the special tokens.
    let t = ChatTemplate::from_dir(tok_dir()).unwrap();
    assert_eq!(t.source(), llava);
    assert_eq!(t.special_tokens(), &special_tokens());

    // A list of named templates.
    let dir = temp_dir("named");
    let config = serde_json::json!({
        "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
        "chat_template": [{"name": "default", "template": mistral}, {"name": "llava", "template": llava}],
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let t = ChatTemplate::from_dir(&dir).unwrap();
    assert_eq!(t.source(), mistral);
    assert_eq!(t.special_tokens().bos_token.as_deref(), Some("<s>"));
    let out = t
        .render(
            &[
                ChatMessage::text("user", "Hi"),
                ChatMessage::text("assistant", "Yo"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(out, "<s>[INST] Hi [/INST]Yo</s> ");
    assert_eq!(
        ChatTemplate::from_dir_named(&dir, Some("llava"))
            .unwrap()
            .source(),
        llava
    );
    assert!(matches!(
        ChatTemplate::from_dir_named(&dir, Some("nope")),
        Err(Error::Template(m)) if m.contains("default, llava")
    ));

    // chat_template.json wins over tokenizer_config.json, chat_template.jinja over both.
    std::fs::write(
        dir.join("chat_template.json"),
        serde_json::json!({ "chat_template": llava }).to_string(),
    )
    .unwrap();
    assert_eq!(ChatTemplate::from_dir(&dir).unwrap().source(), llava);
    std::fs::write(dir.join("chat_template.jinja"), "{{ messages | length }}").unwrap();
    let t = ChatTemplate::from_dir(&dir).unwrap();
    assert_eq!(
        t.render(&[ChatMessage::text("user", "x")], true).unwrap(),
        "1"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // No template: the default of config.json's model type.
    let dir = temp_dir("default");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llava_next", "text_config": {"model_type": "mistral"}}"#,
    )
    .unwrap();
    assert_eq!(
        ChatTemplate::from_dir(&dir).unwrap().source(),
        DefaultTemplate::Mistral.source()
    );
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llava_next"}"#).unwrap();
    assert_eq!(
        ChatTemplate::from_dir(&dir).unwrap().source(),
        DefaultTemplate::Vicuna.source()
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_eq!(
        ChatTemplate::from_dir(&dir).unwrap().source(),
        DefaultTemplate::Llava15.source()
    );
    // A malformed chat_template entry.
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"chat_template": 5}"#).unwrap();
    assert!(matches!(
        ChatTemplate::from_dir(&dir),
        Err(Error::Template(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn template_errors_are_typed() {
    assert!(matches!(
        ChatTemplate::new("{% for x in %}"),
        Err(Error::Template(_))
    ));
    let t = ChatTemplate::new("{{ raise_exception('bad ' + messages[0]['role']) }}").unwrap();
    match t.render(&[ChatMessage::text("tool", "x")], false) {
        Err(Error::Template(m)) => assert_eq!(m, "bad tool"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(t.render(&[], false), Err(Error::EmptyPrompt)));
    // strftime_now and loop controls are available.
    let t = ChatTemplate::new(
        "{{ strftime_now('%Y') | length }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
    )
    .unwrap();
    let out = t
        .render(
            &[ChatMessage::text("a", ""), ChatMessage::text("b", "")],
            false,
        )
        .unwrap();
    assert_eq!(out, "4a");
}

fn processor(config: &str, patch: u32, extra: u32, strategy: SelectStrategy) -> LlavaProcessor {
    let tokenizer = Tokenizer::from_file(tok_dir().join("tokenizer.json")).unwrap();
    let images = LlavaImageProcessor::from_file(proc_dir().join(config)).unwrap();
    let mut options = ProcessorOptions::from_dir(tok_dir(), &tokenizer).unwrap();
    assert!(options.pad_left);
    options.patch_size = patch;
    options.num_additional_image_tokens = extra;
    options.vision_feature_select_strategy = strategy;
    LlavaProcessor::new(tokenizer, images, options).unwrap()
}

#[test]
fn prompts_tokenize_like_the_python_processors() {
    let cases = cases();
    let llava = processor(
        "llava15_full_preprocessor_config.json",
        14,
        1,
        SelectStrategy::Default,
    );
    let small = processor(
        "llava15_preprocessor_config.json",
        8,
        0,
        SelectStrategy::Full,
    );
    let next = processor(
        "next_full_preprocessor_config.json",
        14,
        1,
        SelectStrategy::Default,
    );
    assert_eq!(
        next.image_processor().config().kind,
        ImageProcessorKind::LlavaNext
    );
    let device = device();
    for case in cases["prompts"].as_array().unwrap() {
        let proc = match case["processor"].as_str().unwrap() {
            "llava15" => &llava,
            "llava15_small" => &small,
            "next" => &next,
            other => panic!("{other}"),
        };
        let images: Vec<RgbImage> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| photo(f.as_str().unwrap()))
            .collect();
        let (out, ids, masks): (_, Vec<Vec<u32>>, Vec<Vec<u32>>) = match &case["text"] {
            Value::Null => {
                let name = case["chat_template"].as_str().unwrap();
                let template = ChatTemplate::new(cases["templates"][name].as_str().unwrap())
                    .unwrap()
                    .with_special_tokens(special_tokens());
                let messages = typed_messages(&case["messages"]);
                (
                    proc.process_chat(&template, &messages, &images, true)
                        .unwrap(),
                    vec![u32s(&case["input_ids"])],
                    vec![u32s(&case["attention_mask"])],
                )
            }
            Value::String(text) => (
                proc.process(text, &images).unwrap(),
                vec![u32s(&case["input_ids"])],
                vec![u32s(&case["attention_mask"])],
            ),
            Value::Array(texts) => {
                let texts: Vec<&str> = texts.iter().map(|t| t.as_str().unwrap()).collect();
                (
                    proc.process_batch(&texts, &images).unwrap(),
                    case["input_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(u32s)
                        .collect(),
                    case["attention_mask"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(u32s)
                        .collect(),
                )
            }
            other => panic!("{other}"),
        };
        let ctx = format!("{} {:?}", case["processor"], case["text"]);
        assert_eq!(out.input_ids, ids, "{ctx}");
        assert_eq!(out.attention_mask, masks, "{ctx}");
        let (t_ids, _) = out.token_tensors(&device).unwrap();
        assert_eq!(t_ids.dims(), [ids.len(), ids[0].len()]);
        if let Some(shape) = case.get("pixel_values_shape") {
            let shape: Vec<usize> = u32s(shape).into_iter().map(|v| v as usize).collect();
            if shape.len() == 5 {
                let pv = out.images.padded_pixel_values(&device).unwrap();
                assert_eq!(pv.dims().to_vec(), shape, "{ctx}");
            } else {
                let pv = out.images.pixel_values(&device).unwrap();
                assert_eq!(pv.dims().to_vec(), shape, "{ctx}");
            }
        } else {
            assert!(out.images.is_empty());
        }
        if let Some(sizes) = case.get("image_sizes") {
            let expected: Vec<Size> = sizes.as_array().unwrap().iter().map(size).collect();
            let got: Vec<Size> = out.images.images.iter().map(|i| i.original_size).collect();
            assert_eq!(got, expected, "{ctx}");
            let t = out.images.image_sizes(&device);
            assert_eq!(t.dims(), [expected.len(), 2]);
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `(max, mean)` abs error allowed: decoding is exact for PNG and JPEG (Pillow's
/// libjpeg-turbo), so the processors match to float rounding for every file.
fn tolerance(_file: &str) -> (f32, f64) {
    (1e-4, 1e-6)
}

const IMAGES: [&str; 6] = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "CLIP.png",
];

#[test]
fn pixel_values_match_the_pil_processors() {
    let bytes = std::fs::read(proc_dir().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut worst = 0.0f32;
    for (name, kind) in [
        ("llava15", ImageProcessorKind::Llava),
        ("llava15_pad", ImageProcessorKind::Llava),
        ("next", ImageProcessorKind::LlavaNext),
    ] {
        let proc = LlavaImageProcessor::from_file(
            proc_dir().join(format!("{name}_preprocessor_config.json")),
        )
        .unwrap();
        assert_eq!(proc.config().kind, kind);
        assert_eq!(proc.config().do_pad, name != "llava15");
        for file in IMAGES {
            let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
            let key = format!("{name}.{stem}");
            let view = st.tensor(&key).unwrap();
            let expected = f32s(view.data());
            let img = photo(file);
            let got = proc.preprocess_one(&img).unwrap();
            let shape = [got.num_tiles, 3, got.height, got.width];
            let want: Vec<usize> = view.shape().to_vec();
            let want = if want.len() == 3 {
                vec![1, want[0], want[1], want[2]]
            } else {
                want
            };
            assert_eq!(shape.to_vec(), want, "{key}");
            let max = got
                .pixels
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let mean = got
                .pixels
                .iter()
                .zip(&expected)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum::<f64>()
                / expected.len() as f64;
            eprintln!(
                "{key}: {} tiles, max abs err {max:.2e}, mean {mean:.2e}",
                got.num_tiles
            );
            let (max_tol, mean_tol) = tolerance(file);
            assert!(max <= max_tol, "{key}: max abs error {max}");
            assert!(mean <= mean_tol, "{key}: mean abs error {mean}");
            if max_tol < 1e-3 {
                worst = worst.max(max);
            }
            if kind == ImageProcessorKind::LlavaNext {
                let sizes = st.tensor(&format!("{key}.image_size")).unwrap();
                let hw: Vec<i64> = sizes
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(
                    hw,
                    vec![i64::from(img.height()), i64::from(img.width())],
                    "{key}"
                );
            }
        }
    }
    eprintln!("worst max abs err on PNG inputs {worst:.2e}");
}

#[test]
fn full_size_configs_match_python_statistics() {
    let text = std::fs::read_to_string(proc_dir().join("stats.json")).unwrap();
    let stats: Value = serde_json::from_str(&text).unwrap();
    for name in ["llava15", "llava15_pad", "next"] {
        let proc = LlavaImageProcessor::from_file(
            proc_dir().join(format!("{name}_full_preprocessor_config.json")),
        )
        .unwrap();
        // The photos that differ most in size and aspect (all six are in the fixture).
        for file in ["chelsea.png", "CLIP.png", "rocket.jpg"] {
            let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
            let key = format!("{name}.{stem}");
            let s = &stats[&key];
            let (max_tol, mean_tol) = tolerance(file);
            let got = proc.preprocess_one(&photo(file)).unwrap();
            let mut shape = vec![got.num_tiles, 3, got.height, got.width];
            if s["shape"].as_array().unwrap().len() == 3 {
                shape.remove(0);
            }
            let want: Vec<usize> = u32s(&s["shape"]).into_iter().map(|v| v as usize).collect();
            assert_eq!(shape, want, "{key}");
            let sum: f64 = got.pixels.iter().map(|&v| f64::from(v)).sum();
            let sum_sq: f64 = got
                .pixels
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
            let n = got.pixels.len() as f64;
            assert!(
                (sum - s["sum"].as_f64().unwrap()).abs() / n < mean_tol,
                "{key} sum"
            );
            assert!(
                (sum_sq - s["sum_sq"].as_f64().unwrap()).abs() / n < 10.0 * mean_tol,
                "{key} sum_sq"
            );
            for (i, want) in u32s(&s["sample_index"])
                .iter()
                .zip(s["sample"].as_array().unwrap())
            {
                let d = (f64::from(got.pixels[*i as usize]) - want.as_f64().unwrap()).abs();
                assert!(d <= f64::from(max_tol), "{key}[{i}]: {d}");
            }
            if let Some(patch_sums) = s["patch_sums"].as_array() {
                let per = 3 * got.height * got.width;
                for (p, want) in patch_sums.iter().enumerate() {
                    let sum: f64 = got.pixels[p * per..(p + 1) * per]
                        .iter()
                        .map(|&v| f64::from(v))
                        .sum();
                    assert!(
                        (sum - want.as_f64().unwrap()).abs() / (per as f64) < mean_tol,
                        "{key} tile {p}"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let proc = processor(
        "llava15_preprocessor_config.json",
        8,
        0,
        SelectStrategy::Full,
    );
    let img = RgbImage::from_pixel(40, 30, ::image::Rgb([10, 20, 30]));
    assert!(matches!(
        proc.process("<image> and <image>", std::slice::from_ref(&img)),
        Err(Error::ImageCountMismatch {
            markers: 2,
            images: 1,
            ..
        })
    ));
    assert!(matches!(
        proc.process("no marker", std::slice::from_ref(&img)),
        Err(Error::ImageCountMismatch {
            markers: 0,
            images: 1,
            ..
        })
    ));
    assert!(matches!(proc.process("", &[]), Err(Error::EmptyPrompt)));
    assert!(matches!(
        proc.process_batch(&[], &[]),
        Err(Error::EmptyPrompt)
    ));
    // Image counts are checked over the whole batch.
    assert!(
        proc.process_batch(&["<image>", "<image>"], &[img.clone(), img.clone()])
            .is_ok()
    );
    // A zero-size image and a corrupt file.
    assert!(proc.process("<image>", &[RgbImage::new(0, 5)]).is_err());
    let bytes = std::fs::read(assets().join("images/camera.png")).unwrap();
    assert!(matches!(
        decode_image_on_white(&bytes[..bytes.len() / 3]).map_err(Error::from),
        Err(Error::Core(mm_core::Error::Image { .. }))
    ));
    // Configs: an unknown image token, empty pinpoints, a bad size.
    let tokenizer = Tokenizer::from_file(tok_dir().join("tokenizer.json")).unwrap();
    let images =
        LlavaImageProcessor::from_file(proc_dir().join("next_preprocessor_config.json")).unwrap();
    let options = ProcessorOptions {
        image_token: "<img>".into(),
        ..ProcessorOptions::default()
    };
    assert!(LlavaProcessor::new(tokenizer, images, options).is_err());
    for bad in [
        r#"{"image_processor_type": "LlavaNextImageProcessor", "image_grid_pinpoints": []}"#,
        r#"{"image_processor_type": "LlavaNextImageProcessor", "image_grid_pinpoints": [[0, 336]]}"#,
        r#"{"image_processor_type": "LlavaImageProcessor", "size": {"shortest_edge": 0}}"#,
        r#"{"image_processor_type": "LlavaImageProcessor", "do_pad": "yes"}"#,
    ] {
        let v: Value = serde_json::from_str(bad).unwrap();
        assert!(LlavaImageProcessorConfig::from_value(v).is_err(), "{bad}");
    }
    // A zero crop size without center crop only shows when tiling.
    let v: Value = serde_json::from_str(
        r#"{"image_processor_type": "LlavaNextImageProcessor", "do_center_crop": false,
            "crop_size": {"height": 0, "width": 0}}"#,
    )
    .unwrap();
    let zero_tile =
        LlavaImageProcessor::new(LlavaImageProcessorConfig::from_value(v).unwrap()).unwrap();
    assert!(matches!(
        zero_tile.preprocess_one(&img),
        Err(Error::Config(_))
    ));
    // Defaults of a bare LlavaNext config.
    let v: Value =
        serde_json::from_str(r#"{"image_processor_type": "LlavaNextImageProcessor"}"#).unwrap();
    let cfg = LlavaImageProcessorConfig::from_value(v).unwrap();
    assert!(cfg.do_pad);
    assert_eq!(cfg.image_grid_pinpoints.len(), 5);
    assert_eq!(cfg.tile_size(), (224, 224));
}

/// Processor, chat template and model together: the `llava-tiny` and `llava-next-tiny` models
/// of `gen_vlm.py` with a tokenizer that fits them, each loaded from one folder like a hub
/// snapshot, against `processor.apply_chat_template(..., tokenize=True)` + `model.generate` in
/// Python.
#[test]
fn end_to_end_with_the_tiny_models() {
    use mm_vlm::generate::{Control, GenerationConfig, Streamer};
    use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
    use mm_vlm::llava_next::LlavaNextForConditionalGeneration;

    let cases = cases();
    let device = device();
    for case in cases["end_to_end"].as_array().unwrap() {
        let model_name = case["model"].as_str().unwrap();
        let dir = temp_dir(model_name);
        let tiny = fixture(model_name);
        for name in [
            "config.json",
            "model.safetensors",
            "generation_config.json",
            "preprocessor_config.json",
        ] {
            std::fs::copy(tiny.join(name), dir.join(name)).unwrap();
        }
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(tok_dir().join("tiny").join(name), dir.join(name)).unwrap();
        }
        let processor = LlavaProcessor::from_dir(&dir).unwrap();
        assert_eq!(processor.image_token_id(), 299);
        let template = ChatTemplate::new(
            cases["templates"][case["template"].as_str().unwrap()]
                .as_str()
                .unwrap(),
        )
        .unwrap()
        .with_special_tokens(SpecialTokens::from_dir(&dir).unwrap());
        let messages = [ChatMessage::user_with_images(
            1,
            case["text"].as_str().unwrap(),
        )];
        let image = photo(case["image"].as_str().unwrap());
        let inputs = processor
            .process_chat(&template, &messages, std::slice::from_ref(&image), true)
            .unwrap();
        assert_eq!(
            inputs.input_ids,
            vec![u32s(&case["input_ids"])],
            "{model_name}"
        );

        let (ids, mask) = inputs.token_tensors(&device).unwrap();
        let mut streamed = Vec::new();
        let mut streamer = Streamer::new(|event| {
            streamed.push(event.token);
            Control::Continue
        })
        .with_tokenizer(processor.tokenizer());
        let config = GenerationConfig::greedy().with_max_new_tokens(8);
        let path = dir.to_str().unwrap();
        let out = match model_name {
            "llava-tiny" => LlavaForConditionalGeneration::load(path, &device)
                .unwrap()
                .generate(
                    ids,
                    Some(inputs.images.pixel_values(&device).unwrap()),
                    Some(mask),
                    &config,
                    Some(&mut streamer),
                ),
            _ => LlavaNextForConditionalGeneration::load(path, &device)
                .unwrap()
                .generate(
                    ids,
                    Some(inputs.images.to_next_images(&device).unwrap()),
                    Some(mask),
                    &config,
                    Some(&mut streamer),
                ),
        }
        .unwrap();
        let expected: Vec<i64> = case["new_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(out.new_tokens[0], expected, "{model_name}");
        drop(streamer);
        assert_eq!(streamed, expected, "{model_name}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
