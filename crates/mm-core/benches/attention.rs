//! Scaled dot-product attention on the CPU: this crate's kernel
//! (`mm_core::nn::scaled_dot_product_attention`, f32 on flex) against burn-flex's fused
//! `module::attention`, at the shapes of Stable Diffusion 1.5's UNet (batch 2 for CFG) and of
//! CLIP. `tools/bench/attention_bench.py` times PyTorch's `scaled_dot_product_attention` on
//! the same shapes.
//!
//! `cargo bench -p mm-core --bench attention`; `MM_BENCH_QUICK=1` for one short pass.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::nn::scaled_dot_product_attention;

/// (name, batch, heads, query tokens, key tokens, head dim, causal)
const CASES: [(&str, usize, usize, usize, usize, usize, bool); 5] = [
    ("sd15_self_4096x40", 2, 8, 4096, 4096, 40, false),
    ("sd15_cross_4096x77x40", 2, 8, 4096, 77, 40, false),
    ("sd15_self_1024x80", 2, 8, 1024, 1024, 80, false),
    ("clip_vision_b8_50x64", 8, 12, 50, 50, 64, false),
    ("clip_text_b8_77x64_causal", 8, 8, 77, 77, 64, true),
];

fn sync(t: Tensor<4>) -> f32 {
    t.sum().into_scalar::<f32>()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let quick = std::env::var_os("MM_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    if quick {
        group.warm_up_time(std::time::Duration::from_millis(200));
        group.measurement_time(std::time::Duration::from_secs(1));
    }
    for (name, b, h, sq, sk, d, causal) in CASES {
        let rand =
            |s: usize| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (rand(sq), rand(sk), rand(sk));
        let ours = scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), None, causal);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let burn = attention(q.clone(), k.clone(), v.clone(), None, None, options);
        let diff = (ours - burn).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{name}: kernels differ by {diff}");
        group.bench_function(format!("{name}/mm"), |bch| {
            bch.iter(|| {
                sync(scaled_dot_product_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    causal,
                ))
            })
        });
        group.bench_function(format!("{name}/burn"), |bch| {
            bch.iter(|| {
                sync(attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    None,
                    options,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
