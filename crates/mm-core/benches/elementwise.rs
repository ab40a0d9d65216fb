//! Element-wise activations and group normalisation on the CPU: this crate's vectorised,
//! multi-threaded kernels (`mm_core::nn::Activation::forward`, `geglu`, `group_norm`, f32 on
//! flex) against burn-flex's own operations, at the shapes of Stable Diffusion 1.5's UNet
//! (batch 2) and of CLIP's vision tower (batch 8). `tools/bench/elementwise_bench.py` times
//! PyTorch on the same shapes.
//!
//! Each call gets a freshly made input that it owns alone (made outside the timing), as in a
//! model's forward pass, where these kernels work in place.
//!
//! `cargo bench -p mm-core --bench elementwise`; `MM_BENCH_QUICK=1` for one short pass.

use burn::nn::GroupNormConfig;
use burn::tensor::{Device, Distribution, Tensor, activation};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mm_core::nn::{Activation, geglu, group_norm};

fn sync<const D: usize>(t: Tensor<D>) -> f32 {
    t.sum().into_scalar::<f32>()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let quick = std::env::var_os("MM_BENCH_QUICK").is_some();
    let mut group = c.benchmark_group("elementwise");
    group.sample_size(10);
    if quick {
        group.warm_up_time(std::time::Duration::from_millis(200));
        group.measurement_time(std::time::Duration::from_secs(1));
    }
    let input = |dims: [usize; 3]| {
        let x = Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        move || Tensor::<3>::from_data(x.to_data(), &x.device())
    };
    let mut case =
        |name: &str, fresh: &dyn Fn() -> Tensor<3>, f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            group.bench_function(name, |b| {
                b.iter_batched(fresh, |x| sync(f(x)), BatchSize::PerIteration)
            });
        };
    let ff = input([2, 4096, 1280]);
    case("gelu_2x4096x1280/mm", &ff, &|x| Activation::Gelu.forward(x));
    case("gelu_2x4096x1280/burn", &ff, &activation::gelu);
    let proj = input([2, 4096, 2560]);
    case("geglu_2x4096x2560/mm", &proj, &geglu);
    case("geglu_2x4096x2560/burn", &proj, &|h| {
        h.clone().narrow(2, 0, 1280) * activation::gelu(h.narrow(2, 1280, 1280))
    });
    let map = input([2, 320, 64 * 64]);
    case("silu_2x320x64x64/mm", &map, &|x| {
        Activation::Silu.forward(x)
    });
    case("silu_2x320x64x64/burn", &map, &activation::silu);
    let clip = input([8, 50, 3072]);
    case("quick_gelu_8x50x3072/mm", &clip, &|x| {
        Activation::QuickGelu.forward(x)
    });
    case("quick_gelu_8x50x3072/burn", &clip, &|x| {
        x.clone() * activation::sigmoid(x * 1.702)
    });
    let norm = GroupNormConfig::new(32, 320).init(&device);
    case("group_norm_silu_2x320x64x64/mm", &map, &|x| {
        group_norm(&norm, x, Some(Activation::Silu))
    });
    case("group_norm_silu_2x320x64x64/burn", &map, &|x| {
        activation::silu(norm.forward(x))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
