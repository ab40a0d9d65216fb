//! One full-size Stable Diffusion 1.5 UNet step with classifier-free guidance on the CPU
//! (`Device::flex()`): batch 2 (unconditional + conditional), 4×64×64 latents (512×512
//! images), 77×768 CLIP text embeddings, random weights.
//!
//! `cargo bench -p mm-diffusion --bench unet`; compare with `tools/bench/sd15_bench.py --part
//! unet`, or run both with `tools/bench/sd15_compare.py`.
//! `MM_BENCH_DTYPE=bf16` (or `f16`) keeps the weights' matrices in half precision, as
//! `StableDiffusion::load_with_dtype` does (the arithmetic stays f32); `MM_BENCH_POOL_MIB`
//! limits the pool of recycled buffers (see `benches/common`).
//! `cargo test --release -p mm-diffusion --bench unet` runs the step once as a smoke test and
//! prints its wall time.

mod common;

use std::hint::black_box;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};

/// The model with its (lazily initialised) random weights materialised by a tiny forward
/// pass, so the timed steps do not include drawing 860M random numbers.
fn model(device: &Device) -> UNet2DConditionModel {
    let config: UNet2DConditionConfig =
        mm_core::config::read_json(common::full_config("unet-sd15/config.json"))
            .expect("SD 1.5 UNet config");
    let unet = UNet2DConditionModel::new(&config, device).expect("UNet");
    let start = Instant::now();
    let unet = common::with_bench_dtype(unet);
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
    common::configure();
    let device = Device::flex();
    let unet = model(&device);
    let latents = Tensor::<4>::random([2, 4, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random([2, 77, 768], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<1>::from_floats([500.0], &device);
    common::run(c, "sd15_unet", "cfg_step_512", 60, || {
        let out = unet
            .forward(latents.clone(), t.clone(), text.clone())
            .expect("step");
        // Guidance as a pipeline applies it: uncond + 7.5 · (cond − uncond).
        let uncond = out.clone().narrow(0, 0, 1);
        let guided = uncond.clone() + (out.narrow(0, 1, 1) - uncond) * 7.5;
        black_box(guided.sum().into_scalar::<f32>());
    });
}

criterion_group!(benches, unet_step);
criterion_main!(benches);
