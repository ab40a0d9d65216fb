//! Streaming: the callback sees every token (and its text with a tokenizer), can cancel, and
//! stop strings end a row; batched rows finish independently.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Expected, device, fixture};
use mm_core::tokenizer::Tokenizer;
use mm_vlm::generate::{Control, FinishReason, Generation, GenerationConfig, Streamer};
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};

const NAME: &str = "llava-tiny";

fn setup() -> (LlavaForConditionalGeneration, Expected, Tokenizer) {
    let model =
        LlavaForConditionalGeneration::load(fixture(NAME).to_str().unwrap(), &device()).unwrap();
    let tokenizer =
        Tokenizer::from_file(fixture("llava-tokenizer").join("tokenizer.json")).unwrap();
    (model, Expected::open(NAME), tokenizer)
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig::greedy()
        .with_max_new_tokens(n)
        .with_min_new_tokens(n)
}

/// 20 greedy tokens for the fixture's one-image prompt, streamed to `streamer`.
fn describe_image(
    model: &LlavaForConditionalGeneration,
    exp: &Expected,
    streamer: &mut Streamer<'_>,
) -> Generation {
    let px = Some(exp.float("pixel_values_1"));
    model
        .generate(
            exp.int("input_ids_1"),
            px,
            None,
            &greedy(20),
            Some(streamer),
        )
        .unwrap()
}

#[test]
fn callback_sees_every_token_and_its_text_and_can_cancel() {
    let (model, exp, tokenizer) = setup();
    let mut seen = Vec::new();
    let mut text = String::new();
    let mut streamer = Streamer::new(|e| {
        seen.push((e.index, e.token));
        text.push_str(e.text.unwrap_or_default());
        Control::Continue
    })
    .with_tokenizer(&tokenizer);
    let out = describe_image(&model, &exp, &mut streamer);
    drop(streamer);
    let tokens: Vec<i64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(tokens, out.new_tokens[0]);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    assert_eq!(text, tokenizer.decode(&ids).unwrap());
    assert_eq!(out.finish, [FinishReason::Length]);

    let mut count = 0;
    let mut cancel = Streamer::new(|_| {
        count += 1;
        if count == 5 {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    let out = describe_image(&model, &exp, &mut cancel);
    assert_eq!(out.new_tokens[0], tokens[..5]);
    assert_eq!(out.finish, [FinishReason::Cancelled]);
}

#[test]
fn stop_strings_end_generation() {
    let (model, exp, tokenizer) = setup();
    let full = model
        .generate(exp.int("text_ids"), None, None, &greedy(20), None)
        .unwrap()
        .new_tokens
        .remove(0);
    // the text of the first k tokens, for the first k where it is non-empty and new
    let decode = |n: usize| {
        let ids: Vec<u32> = full[..n].iter().map(|&t| t as u32).collect();
        tokenizer.decode(&ids).unwrap()
    };
    let k = (3..20)
        .find(|&k| decode(k).len() > decode(k - 1).len())
        .unwrap();
    let stop = decode(k);
    let mut streamer = Streamer::new(|_| Control::Continue).with_tokenizer(&tokenizer);
    let config = greedy(20).with_stop_strings([stop.clone()]);
    let out = model
        .generate(
            exp.int("text_ids"),
            None,
            None,
            &config,
            Some(&mut streamer),
        )
        .unwrap();
    assert_eq!(out.finish, [FinishReason::StopString]);
    assert_eq!(
        out.new_tokens[0],
        full[..k],
        "stops at the token completing {stop:?}"
    );
}

#[test]
fn batched_rows_finish_on_their_own_eos() {
    let (model, exp, _) = setup();
    // Row 0 alone, greedy: pick its 3rd token as EOS; row 1 (another prompt) goes on.
    let padded = exp.int::<2>("padded_ids");
    let mask = exp.int::<2>("padded_mask");
    let alone = model
        .generate(padded.clone().narrow(0, 0, 1), None, None, &greedy(8), None)
        .unwrap()
        .new_tokens
        .remove(0);
    let eos = alone[2];
    let config = GenerationConfig::greedy()
        .with_max_new_tokens(8)
        .with_eos_token_ids([eos]);
    let out = model
        .generate(padded, None, Some(mask), &config, None)
        .unwrap();
    let first_eos = alone.iter().position(|&t| t == eos).unwrap();
    assert_eq!(out.new_tokens[0], alone[..=first_eos]);
    assert_eq!(out.finish[0], FinishReason::Eos);
    // row 1 matches its own unpadded generation up to its first eos or 8 tokens
    let row1: Vec<i64> = exp
        .int::<2>("padded_ids")
        .narrow(0, 1, 1)
        .narrow(1, 3, 4)
        .to_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(row1, [1, 4]), &device());
    let single = model.generate(ids, None, None, &config, None).unwrap();
    assert_eq!(out.new_tokens[1], single.new_tokens[0]);
}
