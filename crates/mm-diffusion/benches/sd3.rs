//! Stable Diffusion 3 medium's two heavy parts on the CPU (`Device::flex()`), random weights
//! from the full-size configs (`MM_BENCH_MODEL=sd3`):
//!
//! - `sd3_transformer/cfg_step_1024`: one `SD3Transformer2DModel` step with classifier-free
//!   guidance: batch 2, 16×128×128 latents (1024×1024 images, 4096 image tokens), 333 text
//!   tokens of 4096 features (77 CLIP + 256 T5), pooled `[2, 2048]`; f32 weights (or
//!   `MM_BENCH_DTYPE`);
//! - `sd3_text_encoder/t5_xxl_2x256`: the T5 v1.1 XXL encoder on 2 × 256 token ids, its
//!   matrices kept in bf16 (9.5 GB; f32's 19 GB does not fit beside the reference run).
//!
//! Timed as the median of `MM_BENCH_RUNS` (3) calls after a warm-up (`MM_BENCH_WARMUP=0`
//! skips it); the weights are materialised by a small call first. Run both sides with
//! `tools/bench/sd15_compare.py --model sd3` (PyTorch: `tools/bench/sd15_bench.py --model
//! sd3 --part transformer|t5`).

mod common;

use std::hint::black_box;

use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use common::Family;
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::precision::with_storage_dtype;
use mm_diffusion::transformer::{SD3Input, SD3Transformer2DConfig, SD3Transformer2DModel};
use mm_vision::t5::{T5Config, T5EncoderModel};

/// The step's inputs for `batch` latents of `size`² with `tokens` text tokens.
fn input(
    config: &SD3Transformer2DConfig,
    batch: usize,
    size: usize,
    tokens: usize,
    device: &Device,
) -> SD3Input {
    let normal = Distribution::Normal(0.0, 1.0);
    SD3Input::new(
        Tensor::random([batch, config.in_channels, size, size], normal, device),
        Tensor::from_floats([500.0], device),
        Tensor::random([batch, tokens, config.joint_attention_dim], normal, device),
        Tensor::random([batch, config.pooled_projection_dim], normal, device),
    )
}

fn transformer_step(c: &mut Criterion) {
    common::configure();
    if common::family() != Family::Sd3 {
        return;
    }
    common::run(c, "sd3_transformer", "cfg_step_1024", 3600, || {
        let device = Device::flex();
        let config: SD3Transformer2DConfig =
            mm_core::config::read_json(common::full_config("sd3-medium/transformer/config.json"))
                .expect("SD3 config");
        let model = SD3Transformer2DModel::new(&config, &device).expect("SD3 transformer");
        let model = common::with_bench_dtype(model);
        model
            .forward(input(&config, 1, 8, 4, &device))
            .expect("materialising step");
        let input = input(&config, 2, 128, 333, &device);
        common::bf16_error("sd3_transformer/cfg_step_1024", || {
            model.forward(input.clone()).expect("step")
        });
        move || {
            let out = model.forward(input.clone()).expect("step");
            let uncond = out.clone().narrow(0, 0, 1);
            let guided = uncond.clone() + (out.narrow(0, 1, 1) - uncond) * 7.0;
            black_box(guided.sum().into_scalar::<f32>());
        }
    });
}

fn t5_encode(c: &mut Criterion) {
    common::configure();
    if common::family() != Family::Sd3 {
        return;
    }
    common::run(c, "sd3_text_encoder", "t5_xxl_2x256", 600, || {
        let device = Device::flex();
        let config: T5Config =
            mm_core::config::read_json(common::full_config("t5-v1_1-xxl/config.json"))
                .expect("T5 config");
        let model = T5EncoderModel::new(&config, &device).expect("T5");
        let model = with_storage_dtype(model, DType::BF16);
        let ids = |batch: usize, len: usize| {
            // A prompt's worth of word ids, then `</s>` (1) and padding (0), as the pipeline's
            // tokenizer pads to `max_sequence_length`.
            let row: Vec<i64> = (0..len)
                .map(|i| match i {
                    0..40 => 100 + 37 * i as i64,
                    40 => 1,
                    _ => 0,
                })
                .collect();
            let data = TensorData::new(row.repeat(batch), [batch, len]);
            Tensor::<2, Int>::from_data(data, &device)
        };
        model.forward(ids(1, 8), None).expect("materialising call");
        let ids = ids(2, 256);
        move || {
            let states = model.forward(ids.clone(), None).expect("encode");
            black_box(states.sum().into_scalar::<f32>());
        }
    });
}

criterion_group!(benches, transformer_step, t5_encode);
criterion_main!(benches);
