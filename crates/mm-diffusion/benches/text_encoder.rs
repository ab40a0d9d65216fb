//! The full-size text encoders on the CPU (`Device::flex()`), random weights:
//!
//! - SD 1.5 (default): CLIP ViT-L/14's text transformer (`ClipTextModel`) on a prompt and a
//!   negative prompt, 2 × 77 tokens (`sd15_text_encoder/encode_2x77`);
//! - SDXL base (`MM_BENCH_MODEL=sdxl`): its two encoders on one prompt, 1 × 77 tokens (SDXL
//!   zeroes the embeddings of an empty negative prompt instead of encoding it): CLIP-L
//!   (`ClipTextModel`, `sdxl_text_encoder/clip_l_1x77`) and OpenCLIP bigG
//!   (`ClipTextModelWithProjection`, `sdxl_text_encoder/clip_bigg_1x77`); timed as one
//!   warm-up call and the median of `MM_BENCH_RUNS` (3). Select one with a filter
//!   (`-- clip_bigg`) to measure its memory alone.
//!
//! `cargo bench --workspace --bench text_encoder`; compare with `tools/bench/sd15_bench.py
//! --part text|text2 [--model sdxl]`, or run both with `tools/bench/sd15_compare.py [--model
//! sdxl]`. `MM_BENCH_DTYPE` and `MM_BENCH_POOL_MIB` as in `benches/common`. `cargo test
//! --release -p mm-diffusion --bench text_encoder` encodes once as a smoke test and prints
//! its wall time.

mod common;

use std::hint::black_box;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::Family;
use criterion::{Criterion, criterion_group, criterion_main};
use mm_vision::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};

/// `<|startoftext|>`, ten word tokens, then `<|endoftext|>` up to 77 tokens (SD's tokenizer
/// pads with it); the same ids as `tools/bench/sd15_bench.py`.
fn prompt_ids() -> Vec<i64> {
    let mut ids = vec![49406];
    ids.extend((0..10).map(|i| 320 + 97 * i));
    ids.resize(77, 49407);
    ids
}

/// The timed call: `encode` on `batch` copies of the prompt's ids, after one untimed call
/// that materialises the lazily initialised weights.
fn timed(batch: usize, device: &Device, encode: impl Fn(Tensor<2, Int>) -> f32) -> impl FnMut() {
    let ids = prompt_ids().repeat(batch);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 77]), device);
    encode(ids.clone());
    move || {
        black_box(encode(ids.clone()));
    }
}

fn config(relative: &str) -> ClipTextConfig {
    ClipTextConfig::from_file(&common::full_config(relative)).expect("text encoder config")
}

fn text_encoder(c: &mut Criterion) {
    common::configure();
    let device = Device::flex();
    let device = &device;
    // The last hidden states (and bigG's projected pooled embeddings) as one number.
    let clip = |config_file: &str| {
        let model = ClipTextModel::new(&config(config_file), device).unwrap();
        let model = common::with_bench_dtype(model);
        move |ids: Tensor<2, Int>| {
            let out = model.forward(ids, None).expect("encode");
            out.last_hidden_state.sum().into_scalar::<f32>()
        }
    };
    if common::family() == Family::Sd15 {
        common::run(c, "sd15_text_encoder", "encode_2x77", 20, || {
            let config = config("sd15-single-file/text_encoder/config.json");
            let model = ClipTextModel::new(&config, device).unwrap();
            let model = common::with_bench_dtype(model);
            let ids = prompt_ids().repeat(2);
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 77]), device);
            common::bf16_error("sd15_text_encoder/encode_2x77", || {
                model
                    .forward(ids.clone(), None)
                    .expect("encode")
                    .last_hidden_state
            });
            timed(2, device, move |ids| {
                let out = model.forward(ids, None).expect("encode");
                out.last_hidden_state.sum().into_scalar::<f32>()
            })
        });
        return;
    }
    common::run(c, "sdxl_text_encoder", "clip_l_1x77", 20, || {
        timed(1, device, clip("sdxl-base/text_encoder/config.json"))
    });
    common::run(c, "sdxl_text_encoder", "clip_bigg_1x77", 60, || {
        let config = config("sdxl-base/text_encoder_2/config.json");
        let model = ClipTextModelWithProjection::new(&config, device).unwrap();
        let model = common::with_bench_dtype(model);
        timed(1, device, move |ids| {
            let (out, embeds) = model.forward(ids, None).expect("encode");
            out.last_hidden_state.sum().into_scalar::<f32>() + embeds.sum().into_scalar::<f32>()
        })
    });
}

criterion_group!(benches, text_encoder);
criterion_main!(benches);
