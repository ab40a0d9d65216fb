//! One full-size Stable Diffusion 1.5 UNet step with classifier-free guidance on the CPU
//! (`Device::flex()`): batch 2 (unconditional + conditional), 4×64×64 latents (512×512
//! images), 77×768 CLIP text embeddings, random weights.
//!
//! `cargo bench -p mm-diffusion --bench unet`; compare with `tools/bench/unet_bench.py`.
//! `MM_BENCH_DTYPE=bf16` (or `f16`) keeps the weights' matrices in half precision, as
//! `StableDiffusion::load_with_dtype` does (the arithmetic stays f32).
//! `MM_BENCH_POOL_MIB=N` limits the pool of recycled buffers to N MiB (`0` turns it off; see
//! `mm_core::memory`).
//! `cargo test --release -p mm-diffusion --bench unet` runs the step once as a smoke test and
//! prints its wall time.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::precision::with_storage_dtype;
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};

fn config() -> UNet2DConditionConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/full/unet-sd15/config.json");
    mm_core::config::read_json(&path).expect("SD 1.5 UNet config")
}

/// The model with its (lazily initialised) random weights materialised by a tiny forward
/// pass, so the timed steps do not include drawing 860M random numbers.
fn model(device: &Device) -> UNet2DConditionModel {
    let unet = UNet2DConditionModel::new(&config(), device).expect("UNet");
    let start = Instant::now();
    let unet = match std::env::var("MM_BENCH_DTYPE").as_deref() {
        Ok("bf16") => with_storage_dtype(unet, DType::BF16),
        Ok("f16") => with_storage_dtype(unet, DType::F16),
        _ => unet,
    };
    unet.forward(
        Tensor::zeros([1, 4, 8, 8], device),
        Tensor::from_floats([1.0], device),
        Tensor::zeros([1, 1, 768], device),
    )
    .expect("warm-up step");
    eprintln!(
        "weights initialised in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    unet
}

fn unet_step(c: &mut Criterion) {
    if let Ok(mib) = std::env::var("MM_BENCH_POOL_MIB") {
        let mib: usize = mib.parse().expect("MM_BENCH_POOL_MIB: a number of MiB");
        mm_core::memory::set_pool_limit(mib << 20);
    }
    let device = Device::flex();
    let unet = model(&device);
    let latents = Tensor::<4>::random([2, 4, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random([2, 77, 768], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<1>::from_floats([500.0], &device);
    let step = || {
        let out = unet
            .forward(latents.clone(), t.clone(), text.clone())
            .expect("step");
        // Guidance as a pipeline applies it: uncond + 7.5 · (cond − uncond).
        let uncond = out.clone().narrow(0, 0, 1);
        let guided = uncond.clone() + (out.narrow(0, 1, 1) - uncond) * 7.5;
        black_box(guided.sum().into_scalar::<f32>())
    };
    if !std::env::args().any(|a| a == "--bench") {
        let start = Instant::now();
        step();
        eprintln!(
            "sd15 unet step (batch 2, 64x64, CFG): {:.2} s (smoke run)",
            start.elapsed().as_secs_f64()
        );
        return;
    }
    let mut group = c.benchmark_group("sd15_unet");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(60));
    group.bench_function("cfg_step_512", |b| b.iter(step));
    group.finish();
}

criterion_group!(benches, unet_step);
criterion_main!(benches);
