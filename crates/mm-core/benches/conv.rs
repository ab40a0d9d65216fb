//! 2-D convolutions on the CPU: `mm_core::precision::conv2d` (this crate's implicit-GEMM
//! kernel for f32 stride-1 convolutions on flex) against burn-flex's `Conv2d::forward`, at the
//! shapes of Stable Diffusion 1.5's UNet with classifier-free guidance (batch 2, 512² images).
//!
//! `*/mm_bf16_compute`: the same kernel with bf16 products (`autocast`).
//!
//! `cargo bench -p mm-core --bench conv`; `MM_BENCH_QUICK=1` for one short pass.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{DType, Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::precision::{ComputeDtype, autocast, compute_error, conv2d};

/// (name, channels in, channels out, side, kernel)
const CASES: [(&str, usize, usize, usize, usize); 4] = [
    ("3x3_320_64x64", 320, 320, 64, 3),
    ("3x3_640_32x32", 640, 640, 32, 3),
    ("3x3_1280_16x16", 1280, 1280, 16, 3),
    ("1x1_960_640_32x32", 960, 640, 32, 1),
];

fn sync(t: Tensor<4>) -> f32 {
    t.sum().into_scalar::<f32>()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let quick = std::env::var_os("MM_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    if quick {
        group.warm_up_time(std::time::Duration::from_millis(200));
        group.measurement_time(std::time::Duration::from_secs(1));
    }
    for (name, cin, cout, side, k) in CASES {
        let layer = Conv2dConfig::new([cin, cout], [k, k])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .init(&device);
        let x = Tensor::<4>::random(
            [2, cin, side, side],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let diff = (conv2d(&layer, x.clone()) - layer.forward(x.clone()))
            .abs()
            .max();
        assert!(diff.into_scalar::<f32>() < 1e-3, "{name}");
        group.bench_function(format!("{name}/mm"), |b| {
            b.iter(|| sync(conv2d(&layer, x.clone())))
        });
        let half = mm_core::precision::with_storage_dtype(layer.clone(), DType::BF16);
        group.bench_function(format!("{name}/mm_bf16_weights"), |b| {
            b.iter(|| sync(conv2d(&half, x.clone())))
        });
        let error = compute_error(|| conv2d(&layer, x.clone()));
        println!("{name}: bf16 vs f32 compute: {error}");
        // One scope around the runs, as `torch.autocast` around PyTorch's: the weight is
        // packed at its second use and read from the scope's cache after.
        autocast(ComputeDtype::Bf16, || {
            group.bench_function(format!("{name}/mm_bf16_compute"), |b| {
                b.iter(|| sync(conv2d(&layer, x.clone())))
            })
        });
        group.bench_function(format!("{name}/burn"), |b| {
            b.iter(|| sync(layer.forward(x.clone())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
