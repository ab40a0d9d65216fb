//! Scaled dot-product attention on the CPU: this crate's kernel
//! (`mm_core::nn::scaled_dot_product_attention`, f32 on flex) against burn-flex's fused
//! `module::attention`, at the shapes of Stable Diffusion 1.5's UNet (batch 2 for CFG) and of
//! CLIP. `tools/bench/attention_bench.py` times PyTorch's `scaled_dot_product_attention` on
//! the same shapes.
//!
//! The `decode/*` cases time one decoding step of a 7B decoder (one query per head, 32 heads of
//! 128) over 640 cached positions held in a larger buffer, as `mm-vlm`'s key/value cache holds
//! them: `mm_core::nn::grouped_attention` reads them in place; burn's kernel gets the same view.
//!
//! `*/mm_bf16_compute` runs this crate's kernel with bf16 products (`autocast`).
//!
//! `cargo bench -p mm-core --bench attention`; `MM_BENCH_QUICK=1` for one short pass.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::nn::{grouped_attention, scaled_dot_product_attention};
use mm_core::precision::{ComputeDtype, autocast, compute_error};

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
        let ours = || scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), None, causal);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let burn = attention(q.clone(), k.clone(), v.clone(), None, None, options);
        let diff = (ours() - burn).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{name}: kernels differ by {diff}");
        group.bench_function(format!("{name}/mm"), |bch| bch.iter(|| sync(ours())));
        println!("{name}: bf16 vs f32 compute: {}", compute_error(ours));
        group.bench_function(format!("{name}/mm_bf16_compute"), |bch| {
            bch.iter(|| autocast(ComputeDtype::Bf16, || sync(ours())))
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
    // (name, key heads): LLaVA 1.5's Llama, LLaVA-NeXT's Mistral.
    for (name, kv_heads) in [
        ("decode/llama_32x640x128", 32),
        ("decode/mistral_32q8kv", 8),
    ] {
        let (h, sk, d, capacity) = (32, 640, 128, 960);
        let rand = |h: usize, s: usize| {
            Tensor::<4>::random([1, h, s, d], Distribution::Normal(0.0, 1.0), &device)
        };
        let q = rand(h, 1);
        let (k, v) = (rand(kv_heads, capacity), rand(kv_heads, capacity));
        let view = |t: &Tensor<4>| t.clone().slice(burn::tensor::s![.., .., 0..sk]);
        group.bench_function(format!("{name}/mm"), |bch| {
            bch.iter(|| {
                sync(grouped_attention(
                    q.clone(),
                    view(&k),
                    view(&v),
                    None,
                    false,
                ))
            })
        });
        let rep = h / kv_heads;
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        group.bench_function(format!("{name}/burn"), |bch| {
            bch.iter(|| {
                let q = q.clone().reshape([1, kv_heads, rep, d]);
                sync(attention(q, view(&k), view(&v), None, None, options))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
