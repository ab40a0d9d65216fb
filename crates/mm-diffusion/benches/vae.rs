//! The full-size VAE decoder on the CPU (`Device::flex()`), random weights:
//! `post_quant_conv` and the decoder on one latent,
//!
//! - SD 1.5 (default): 4×64×64 → a 512×512 image;
//! - SDXL base (`MM_BENCH_MODEL=sdxl`): 4×128×128 → a 1024×1024 image; timed as one warm-up
//!   decode and the median of `MM_BENCH_RUNS` (3).
//!
//! `cargo bench --workspace --bench vae`; compare with `tools/bench/sd15_bench.py --part
//! vae [--model sdxl]`, or run both with `tools/bench/sd15_compare.py [--model sdxl]`.
//! `MM_BENCH_DTYPE` and `MM_BENCH_POOL_MIB` as in `benches/common`. `cargo test --release -p
//! mm-diffusion --bench vae` decodes once as a smoke test and prints its wall time.

mod common;

use std::hint::black_box;

use burn::tensor::{Device, Distribution, Tensor};
use common::Family;
use criterion::{Criterion, criterion_group, criterion_main};
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};

fn vae_decode(c: &mut Criterion) {
    common::configure();
    // (group, name, config, latent size, criterion's measurement time)
    let (group, name, config, latent, seconds) = match common::family() {
        Family::Sd15 => ("sd15_vae", "decode_512", "sd15-vae/config.json", 64, 200),
        Family::Sdxl => (
            "sdxl_vae",
            "decode_1024",
            "sdxl-base/vae/config.json",
            128,
            800,
        ),
        Family::Sd3 | Family::Flux => return,
    };
    common::run(c, group, name, seconds, || {
        let device = Device::flex();
        let config: AutoencoderKLConfig =
            mm_core::config::read_json(common::full_config(config)).expect("VAE config");
        let vae = common::with_bench_dtype(AutoencoderKL::new(&config, &device).expect("VAE"));
        // Materialise the lazily initialised weights outside the timed calls.
        vae.decode(Tensor::zeros([1, 4, 8, 8], &device))
            .expect("warm-up decode");
        let latents = Tensor::<4>::random(
            [1, 4, latent, latent],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        common::bf16_error(&format!("{group}/{name}"), || {
            vae.decode(latents.clone()).expect("decode")
        });
        move || {
            let image = vae.decode(latents.clone()).expect("decode");
            black_box(image.sum().into_scalar::<f32>());
        }
    });
}

criterion_group!(benches, vae_decode);
criterion_main!(benches);
