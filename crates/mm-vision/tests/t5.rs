//! `T5EncoderModel` matches transformers 5.24 on the tiny random checkpoints of
//! `tools/reference/gen_t5.py`: T5 v1.1's gated-GELU feed-forward and the original T5's ReLU
//! one, with a padding mask and without, over 24 tokens (every branch of the relative position
//! buckets); the tied embedding stored under either name; bad ids are typed errors.

mod common;

use burn::tensor::{Int, Tensor};
use common::{Expected, device, fixture};
use mm_core::weights::Weights;
use mm_vision::Pretrained;
use mm_vision::t5::{T5Config, T5EncoderModel, relative_position_bucket};

const TOL: f32 = 1e-4;

fn check(name: &str, model: &T5EncoderModel) {
    let exp = Expected::open(name);
    let ids = exp.int::<2>("input_ids");
    let mask = exp.int::<2>("attention_mask");
    let out = model.forward(ids.clone(), Some(mask)).unwrap();
    exp.check("last_hidden_state", out, TOL);
    let alone = model.forward(ids.narrow(0, 0, 1), None).unwrap();
    exp.check("last_hidden_state_nomask", alone, TOL);
}

#[test]
fn encoder_states_match_transformers() {
    for name in ["t5-tiny", "t5-tiny-relu"] {
        let model = T5EncoderModel::load(fixture(name).to_str().unwrap(), &device()).unwrap();
        check(name, &model);
    }
}

#[test]
fn the_tied_embedding_loads_under_its_encoder_name() {
    // Some checkpoints store `encoder.embed_tokens.weight` (the tie of `shared.weight`), alone
    // or beside it.
    let dir = fixture("t5-tiny");
    let config: T5Config = mm_core::config::read_json(dir.join("config.json")).unwrap();
    let weights = Weights::open(dir.join("model.safetensors"))
        .unwrap()
        .rename(|n| {
            Some(match n {
                "shared.weight" => "encoder.embed_tokens.weight".into(),
                n => n.to_string(),
            })
        });
    let model = T5EncoderModel::from_weights(&config, weights, &device()).unwrap();
    check("t5-tiny", &model);
}

#[test]
fn buckets_match_transformers_formula() {
    // transformers' _relative_position_bucket(bidirectional=True, num_buckets=32,
    // max_distance=128) for a few distances (memory - query).
    let cases = [
        (0, 0),
        (1, 17),
        (-1, 1),
        (7, 23),
        (-7, 7),
        (8, 24),
        (-8, 8),
        (20, 26),
        (-20, 10),
        (127, 31),
        (-127, 15),
        (500, 31),
        (-500, 15),
    ];
    for (relative, bucket) in cases {
        assert_eq!(
            relative_position_bucket(relative, 32, 128),
            bucket,
            "{relative}"
        );
    }
}

#[test]
fn bad_ids_are_typed_errors() {
    let model = T5EncoderModel::load(fixture("t5-tiny").to_str().unwrap(), &device()).unwrap();
    let ids = Tensor::<2, Int>::from_ints([[1, 64]], &device());
    assert!(model.forward(ids, None).is_err());
    let ids = Tensor::<2, Int>::from_ints([[1, 2]], &device());
    let mask = Tensor::<2, Int>::from_ints([[1, 1, 1]], &device());
    assert!(model.forward(ids, Some(mask)).is_err());
    let config = T5Config {
        feed_forward_proj: "gated-nope".into(),
        ..T5Config::default()
    };
    assert!(T5EncoderModel::new(&config, &device()).is_err());
}

#[test]
fn t5_tokenizer_ids_match_transformers() {
    let dir = fixture("t5-tokenizer");
    let text = std::fs::read_to_string(dir.join("prompts.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let max_length = spec["max_length"].as_u64().unwrap() as usize;
    let tokenizer = mm_core::tokenizer::Tokenizer::from_file(dir.join("tokenizer.json"))
        .unwrap()
        .with_max_length(max_length)
        .unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    let exp = Expected::open("t5-tokenizer");
    for (i, prompt) in spec["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = prompt.as_str().unwrap();
        let (ids, mask) = tokenizer
            .encode(prompt)
            .unwrap()
            .to_tensors(&device())
            .unwrap();
        let want = |k: &str| exp.int::<2>(&format!("{i}.{k}")).into_data();
        assert_eq!(ids.into_data(), want("input_ids"), "{prompt:?}");
        assert_eq!(mask.into_data(), want("attention_mask"), "{prompt:?}");
    }
}

#[test]
fn a_folder_with_only_spiece_model_names_the_conversion() {
    let dir = std::env::temp_dir().join(format!("mm-t5-spiece-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spiece.model"), b"not read").unwrap();
    let err = mm_vision::t5::tokenizer_file(&dir).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains("spiece.model") && err.contains("save_pretrained"),
        "{err}"
    );
    let found = mm_vision::t5::tokenizer_file(&fixture("t5-tokenizer")).unwrap();
    assert!(found.ends_with("tokenizer.json"));
}

/// A T5 encoder GGUF file in llama.cpp's names (city96's `t5-v1_1-xxl-encoder-Q8_0.gguf`
/// layout, `tools/reference/gen_flux_gguf.py`): its Q8_0 matrices stay quantized and the
/// states equal transformers' run on the dequantized values.
#[test]
fn gguf_encoder_in_llama_cpp_names_stays_quantized() {
    let dir = fixture("t5-gguf");
    let config: T5Config = mm_core::config::read_json(dir.join("config.json")).unwrap();
    let weights = Weights::open(dir.join("model-q8_0.gguf")).unwrap();
    assert!(weights.contains("enc.blk.0.attn_rel_b.weight"));
    let model = T5EncoderModel::from_weights(&config, weights, &device()).unwrap();
    let mm_vision::t5::T5Layer::SelfAttention(layer) = &model.encoder.block[0].layer[0] else {
        panic!("layer.0 is the self-attention");
    };
    let matrix = mm_core::quant::quantized_weight(&layer.SelfAttention.q).unwrap();
    assert_eq!(matrix.ggml_type(), mm_core::gguf::GgmlType::Q8_0);
    let exp = Expected::file(&dir.join("io.safetensors"));
    let out = model
        .forward(
            exp.int::<2>("input_ids"),
            Some(exp.int::<2>("attention_mask")),
        )
        .unwrap();
    exp.check("out_q8_0", out.clone(), TOL);
    let reference = exp.float::<3>("out_f32");
    let scale = reference.clone().abs().max().into_scalar::<f32>();
    let rel = (out - reference).abs().max().into_scalar::<f32>() / scale;
    eprintln!("T5 Q8_0 against f32: max error / max |state| = {rel:.2e}");
}

/// The T5 v1.1 XXL encoder's 219 tensors under llama.cpp's names map onto the model's.
#[test]
fn full_size_gguf_names_map_to_the_models_tensors() {
    let dir = fixture("full").join("t5-v1_1-xxl");
    let config: T5Config = mm_core::config::read_json(dir.join("config.json")).unwrap();
    let gguf: Vec<(String, Vec<usize>)> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("gguf-tensors.json")).unwrap())
            .unwrap();
    assert_eq!(gguf.len(), 219);
    let mut mapped: Vec<(String, Vec<usize>)> = gguf
        .into_iter()
        .map(|(name, shape)| (mm_vision::t5::gguf_t5_name(&name), shape))
        .collect();
    mapped.sort();
    let model = T5EncoderModel::new(&config, &device()).unwrap();
    assert_eq!(mapped, mm_core::weights::expected_tensors(&model));
}
