//! The full-size Stable Diffusion 1.5 VAE decoder on the CPU (`Device::flex()`): one 4×64×64
//! latent to a 512×512 image (`post_quant_conv` and the decoder), random weights.
//!
//! `cargo bench -p mm-diffusion --bench vae`; compare with `tools/bench/sd15_bench.py --part
//! vae`, or run both with `tools/bench/sd15_compare.py`. `MM_BENCH_DTYPE` and
//! `MM_BENCH_POOL_MIB` as in `benches/common`. `cargo test --release -p mm-diffusion --bench
//! vae` decodes once as a smoke test and prints its wall time.

mod common;

use std::hint::black_box;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};

fn vae_decode(c: &mut Criterion) {
    common::configure();
    let device = Device::flex();
    let config: AutoencoderKLConfig =
        mm_core::config::read_json(common::full_config("sd15-vae/config.json"))
            .expect("SD 1.5 VAE config");
    let vae = common::with_bench_dtype(AutoencoderKL::new(&config, &device).expect("VAE"));
    // Materialise the lazily initialised weights outside the timed calls.
    vae.decode(Tensor::zeros([1, 4, 8, 8], &device))
        .expect("warm-up decode");
    let latents = Tensor::<4>::random([1, 4, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    common::run(c, "sd15_vae", "decode_512", 200, || {
        let image = vae.decode(latents.clone()).expect("decode");
        black_box(image.sum().into_scalar::<f32>());
    });
}

criterion_group!(benches, vae_decode);
criterion_main!(benches);
