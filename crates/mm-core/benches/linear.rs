//! Linear layers on the CPU: `mm_core::precision::matmul` with f32 activations and bf16
//! weights (this crate's kernel), stored `[in, out]` as burn's `Linear` holds them and `[out,
//! in]` (a tied language-model head), and with f32 weights (one `gemm` into a fresh buffer),
//! against burn-flex's own bf16 × bf16 and f32 × f32 products, at a 7B Llama's MLP width (one
//! token, decoding, and 128 tokens, a prompt) and a UNet feed-forward width; and the same
//! products with bf16 arithmetic (`autocast(ComputeDtype::Bf16, ..)`: `vdpbf16ps` where the
//! CPU has AVX512-BF16), from f32 and from bf16 weights.
//!
//! `cargo bench -p mm-core --bench linear`; `MM_BENCH_QUICK=1` for one short pass.

use burn::tensor::{DType, Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::precision::{ComputeDtype, autocast, compute_error, matmul};

fn sync(t: Tensor<2>) -> f32 {
    t.cast(DType::F32).sum().into_scalar::<f32>()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let quick = std::env::var_os("MM_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("linear");
    group.sample_size(10);
    if quick {
        group.warm_up_time(std::time::Duration::from_millis(200));
        group.measurement_time(std::time::Duration::from_secs(1));
    }
    for (m, k, n) in [(1, 4096, 11008), (128, 4096, 11008), (8192, 320, 2560)] {
        case(&mut group, &device, m, k, n);
    }
    group.finish();
}

/// One `[m, k] · [k, n]` product.
fn case(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    device: &Device,
    m: usize,
    k: usize,
    n: usize,
) {
    let device = device.clone();
    let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 0.02), &device);
    let w16 = w.clone().cast(DType::BF16);
    // Stored `[out, in]`, used transposed.
    let w_t = Tensor::<2>::from_data(w.clone().transpose().into_data(), &device);
    let w16_t = w_t.cast(DType::BF16).transpose();
    {
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let want = x.clone().matmul(w16.clone().cast(DType::F32));
        for w in [&w16, &w16_t] {
            let diff = (matmul(x.clone(), w.clone()) - want.clone()).abs().max();
            assert!(diff.into_scalar::<f32>() < 1e-3);
        }
        group.bench_function(format!("{m}x{k}x{n}/mm_bf16_weights"), |b| {
            b.iter(|| sync(matmul(x.clone(), w16.clone())))
        });
        group.bench_function(format!("{m}x{k}x{n}/mm_bf16_weights_transposed"), |b| {
            b.iter(|| sync(matmul(x.clone(), w16_t.clone())))
        });
        let x16 = x.clone().cast(DType::BF16);
        group.bench_function(format!("{m}x{k}x{n}/burn_bf16"), |b| {
            b.iter(|| sync(x16.clone().matmul(w16.clone())))
        });
        group.bench_function(format!("{m}x{k}x{n}/burn_f32"), |b| {
            b.iter(|| sync(x.clone().matmul(w.clone())))
        });
        group.bench_function(format!("{m}x{k}x{n}/mm_f32"), |b| {
            b.iter(|| sync(matmul(x.clone(), w.clone())))
        });
        let error = compute_error(|| matmul(x.clone(), w.clone()));
        println!("{m}x{k}x{n}: bf16 vs f32 compute: {error}");
        let bf16 = |w: &Tensor<2>| autocast(ComputeDtype::Bf16, || matmul(x.clone(), w.clone()));
        group.bench_function(format!("{m}x{k}x{n}/mm_f32_weights_bf16_compute"), |b| {
            b.iter(|| sync(bf16(&w)))
        });
        group.bench_function(format!("{m}x{k}x{n}/mm_bf16_weights_bf16_compute"), |b| {
            b.iter(|| sync(bf16(&w16)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
