//! The CLIP tokenizer in `$MM_ASSETS/clip-tokenizer` against `tokenizer_golden.json` (ids the
//! OpenAI reference, open_clip and the HF tokenizers agree on), loaded both from
//! `tokenizer.json` and from `vocab.json` + `merges.txt`.

use std::path::{Path, PathBuf};

use mm_core::Error;
use mm_core::burn::tensor::Device;
use mm_core::tokenizer::{Padding, Tokenizer};

fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    }
}

fn dir() -> PathBuf {
    assets().join("clip-tokenizer")
}

fn golden() -> Vec<(String, Vec<u32>)> {
    let bytes = std::fs::read(dir().join("tokenizer_golden.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = e["text"].as_str().unwrap().to_owned();
            let ids = e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| u32::try_from(i.as_u64().unwrap()).unwrap())
                .collect();
            (text, ids)
        })
        .collect()
}

fn both() -> [(&'static str, Tokenizer); 2] {
    [
        (
            "tokenizer.json",
            Tokenizer::from_file(dir().join("tokenizer.json")).unwrap(),
        ),
        (
            "vocab.json+merges.txt",
            Tokenizer::from_vocab_merges(dir().join("vocab.json"), dir().join("merges.txt"))
                .unwrap(),
        ),
    ]
}

const LONG: &str = "a very long prompt about a cat sitting on a mat in the sun while the dog \
    watches from the garden and the birds sing in the trees above the quiet house by the river, \
    with mountains far away and clouds drifting slowly over the valley in the late afternoon light, \
    then night falls and the stars come out one by one above the sleeping town and its old bridge, \
    while an owl calls twice from the dark forest at the edge of the silent frozen lake";

#[test]
fn golden_ids_padded_to_77_from_both_sources() {
    let golden = golden();
    let texts: Vec<&str> = golden.iter().map(|(t, _)| t.as_str()).collect();
    for (name, tok) in both() {
        assert_eq!(tok.max_length(), 77, "{name}");
        assert_eq!(tok.pad_id(), 49407, "{name}");
        let enc = tok.encode_batch(&texts).unwrap();
        for ((text, ids), (row, mask)) in golden.iter().zip(enc.ids.iter().zip(&enc.attention_mask))
        {
            assert_eq!(row.len(), 77, "{name}: {text}");
            assert_eq!(&row[..ids.len()], &ids[..], "{name}: {text}");
            assert!(
                row[ids.len()..].iter().all(|&i| i == 49407),
                "{name}: {text}"
            );
            let ones = mask.iter().filter(|&&m| m == 1).count();
            assert_eq!(ones, ids.len(), "{name}: {text}");
            assert!(mask[..ids.len()].iter().all(|&m| m == 1));
        }
    }
}

#[test]
fn both_sources_agree_unpadded() {
    let [(_, a), (_, b)] = both();
    let (a, b) = (a.with_padding(Padding::None), b.with_padding(Padding::None));
    for text in [
        LONG,
        "  Mixed   CASE\twhitespace\n and émojis 🙂🙂 ",
        "",
        "<|endoftext|> x",
    ] {
        assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap(), "{text:?}");
    }
}

#[test]
fn too_long_prompt_errors_without_truncation_and_truncates_with_it() {
    for (name, tok) in both() {
        let n = tok
            .clone()
            .with_padding(Padding::None)
            .with_truncation(false)
            .with_max_length(1000)
            .unwrap()
            .encode(LONG)
            .unwrap()
            .ids[0]
            .len();
        assert!(n > 77, "{name}: test prompt has only {n} tokens");

        let err = tok.clone().with_truncation(false).encode(LONG).unwrap_err();
        assert!(matches!(err, Error::Tokenizer(_)), "{name}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("prompt too long: {n} tokens > 77")),
            "{name}: {err}"
        );

        let enc = tok.encode(LONG).unwrap();
        let row = &enc.ids[0];
        assert_eq!(row.len(), 77, "{name}");
        assert_eq!(row[0], 49406, "{name}");
        assert_eq!(row[76], 49407, "{name}");
        assert!(enc.attention_mask[0].iter().all(|&m| m == 1));
        // The kept tokens are the first 75 of the untruncated encoding.
        let full = tok
            .clone()
            .with_padding(Padding::None)
            .with_max_length(1000)
            .unwrap()
            .encode(LONG)
            .unwrap();
        assert_eq!(&row[..76], &full.ids[0][..76], "{name}");
    }
}

#[test]
fn longest_padding_custom_pad_and_tensors() {
    let tok = Tokenizer::from_file(dir().join("tokenizer.json"))
        .unwrap()
        .with_padding(Padding::Longest)
        .with_pad_id(0);
    let enc = tok
        .encode_batch(&["a dog", "a photograph of an astronaut"])
        .unwrap();
    assert_eq!(enc.ids[0], vec![49406, 320, 1929, 49407, 0, 0, 0]);
    assert_eq!(enc.attention_mask[0], vec![1, 1, 1, 1, 0, 0, 0]);
    assert_eq!(enc.ids[1].len(), 7);

    let device = Device::flex();
    let (ids, mask) = enc.to_tensors(&device).unwrap();
    assert_eq!(ids.dims(), [2, 7]);
    assert_eq!(mask.dims(), [2, 7]);
    let flat = ids
        .try_into_data_as::<i64>()
        .unwrap()
        .try_into_vec::<i64>()
        .unwrap();
    assert_eq!(&flat[..4], &[49406, 320, 1929, 49407]);

    let ragged = tok
        .clone()
        .with_padding(Padding::None)
        .encode_batch(&["a dog", "a photograph of an astronaut"])
        .unwrap();
    assert!(matches!(
        ragged.to_tensors(&device),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn decode_and_vocab_lookup() {
    for (name, tok) in both() {
        assert_eq!(tok.token_to_id("<|startoftext|>"), Some(49406), "{name}");
        assert_eq!(tok.token_to_id("cat</w>"), Some(2368), "{name}");
        let enc = tok.encode("A photograph of an astronaut").unwrap();
        let text = tok.decode(&enc.ids[0]).unwrap();
        assert_eq!(text.trim(), "a photograph of an astronaut", "{name}");
    }
}

#[test]
fn missing_files_are_typed_errors() {
    let err = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    let err = Tokenizer::from_vocab_merges(dir().join("vocab.json"), "/nonexistent/merges.txt")
        .unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    let bad = std::env::temp_dir().join(format!("mm_core_bad_tok_{}.json", std::process::id()));
    std::fs::write(&bad, "{not json").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err();
    let _ = std::fs::remove_file(&bad);
    assert!(matches!(err, Error::Tokenizer(_)), "{err}");
}
