//! CLIP ViT-B/32 inference on the CPU (`Device::flex()`), full-size random weights.
//!
//! `cargo bench -p mm-vision --bench clip`; compare with `tools/bench/clip_bench.py`
//! (results and method in docs/performance.md).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mm_vision::clip::{ClipConfig, ClipModel};

const BATCHES: [usize; 2] = [1, 8];

fn config() -> ClipConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/full/clip-vit-base-patch32/config.json");
    mm_core::config::read_json(&path).expect("CLIP ViT-B/32 config")
}

fn clip(c: &mut Criterion) {
    let device = Device::flex();
    let config = config();
    let model = ClipModel::new(&config, &device).unwrap();
    let image_size = config.vision_config.image_size;
    let seq = config.text_config.max_position_embeddings;
    let vocab = config.text_config.vocab_size as f64;

    let mut group = c.benchmark_group("clip_vit_b32");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10));

    for batch in BATCHES {
        let pixels = Tensor::<4>::random(
            [batch, 3, image_size, image_size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        group.bench_with_input(
            BenchmarkId::new("image_features", batch),
            &pixels,
            |b, pixels| {
                b.iter(|| {
                    let features = model.image_features(pixels.clone()).unwrap();
                    black_box(features.sum().into_scalar::<f32>())
                })
            },
        );
    }

    for batch in BATCHES {
        let ids =
            Tensor::<2, Int>::random([batch, seq], Distribution::Uniform(0.0, vocab), &device);
        let mask = Tensor::<2, Int>::ones([batch, seq], &device);
        group.bench_with_input(
            BenchmarkId::new("text_features", batch),
            &(ids, mask),
            |b, (ids, mask)| {
                b.iter(|| {
                    let features = model
                        .text_features(ids.clone(), Some(mask.clone()))
                        .unwrap();
                    black_box(features.sum().into_scalar::<f32>())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, clip);
criterion_main!(benches);
