//! The full-size Stable Diffusion 1.5 text encoder (CLIP ViT-L/14's text transformer) on the
//! CPU (`Device::flex()`): a prompt and a negative prompt, 2 × 77 tokens, random weights.
//!
//! `cargo bench -p mm-diffusion --bench text_encoder`; compare with
//! `tools/bench/sd15_bench.py --part text`, or run both with `tools/bench/sd15_compare.py`.
//! `MM_BENCH_DTYPE` and `MM_BENCH_POOL_MIB` as in `benches/common`. `cargo test --release -p
//! mm-diffusion --bench text_encoder` encodes once as a smoke test and prints its wall time.

mod common;

use std::hint::black_box;

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_vision::clip::{ClipTextConfig, ClipTextModel};

/// `<|startoftext|>`, ten word tokens, then `<|endoftext|>` up to 77 tokens (SD's tokenizer
/// pads with it); the same ids as `tools/bench/sd15_bench.py`.
fn prompt_ids() -> Vec<i64> {
    let mut ids = vec![49406];
    ids.extend((0..10).map(|i| 320 + 97 * i));
    ids.resize(77, 49407);
    ids
}

fn text_encoder(c: &mut Criterion) {
    common::configure();
    let device = Device::flex();
    let config = ClipTextConfig::from_file(&common::full_config(
        "sd15-single-file/text_encoder/config.json",
    ))
    .expect("SD 1.5 text encoder config");
    let model = common::with_bench_dtype(ClipTextModel::new(&config, &device).unwrap());
    let ids: Vec<i64> = [prompt_ids(), prompt_ids()].concat();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 77]), &device);
    model.forward(ids.clone(), None).expect("warm-up encode");
    common::run(c, "sd15_text_encoder", "encode_2x77", 20, || {
        let out = model.forward(ids.clone(), None).expect("encode");
        black_box(out.last_hidden_state.sum().into_scalar::<f32>());
    });
}

criterion_group!(benches, text_encoder);
criterion_main!(benches);
