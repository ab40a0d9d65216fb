//! One full-size UNet step with classifier-free guidance on the CPU (`Device::flex()`), random
//! weights, batch 2 (unconditional + conditional):
//!
//! - SD 1.5 (default): 4×64×64 latents (512×512 images), 77×768 CLIP text embeddings;
//! - SDXL base (`MM_BENCH_MODEL=sdxl`): 4×128×128 latents (1024×1024 images), 77×2048 text
//!   embeddings, and the added conditions `text_embeds` `[2, 1280]` and `time_ids` `[2, 6]`;
//!   timed as one warm-up step and the median of `MM_BENCH_RUNS` (3) steps.
//!
//! `sd15_controlnet/cfg_step_512` times the same SD 1.5 step steered by a ControlNet
//! (`lllyasviel/sd-controlnet-canny`'s config): the ControlNet on the batch and a
//! `[2, 3, 512, 512]` control image, then the UNet with its residuals.
//!
//! `cargo bench --workspace --bench unet`; compare with `tools/bench/sd15_bench.py --part
//! unet [--model sdxl]`, or run both with `tools/bench/sd15_compare.py [--model sdxl]`.
//! `MM_BENCH_DTYPE=bf16` (or `f16`) keeps the weights' matrices in half precision, as
//! `StableDiffusion::load_with_dtype` does (the arithmetic stays f32); `MM_BENCH_POOL_MIB`
//! limits the pool of recycled buffers (see `benches/common`).
//! `cargo test --release -p mm-diffusion --bench unet` runs the step once as a smoke test and
//! prints its wall time.

mod common;

use std::hint::black_box;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::Family;
use criterion::{Criterion, criterion_group, criterion_main};
use mm_diffusion::controlnet::{ControlNetConfig, ControlNetModel};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetInput};

/// One family's case: its config and the shapes of one step's inputs.
struct Case {
    group: &'static str,
    name: &'static str,
    config: &'static str,
    /// Latent height and width (the image's / 8).
    latent: usize,
    /// Width of the text embeddings (`cross_attention_dim`).
    context: usize,
    /// SDXL's added conditions: the width of the pooled text embeddings (`time_ids` has 6).
    pooled: Option<usize>,
    /// Criterion's measurement time.
    seconds: u64,
}

const SD15: Case = Case {
    group: "sd15_unet",
    name: "cfg_step_512",
    config: "unet-sd15/config.json",
    latent: 64,
    context: 768,
    pooled: None,
    seconds: 60,
};

const SDXL: Case = Case {
    group: "sdxl_unet",
    name: "cfg_step_1024",
    config: "sdxl-base/unet/config.json",
    latent: 128,
    context: 2048,
    pooled: Some(1280),
    seconds: 600,
};

impl Case {
    /// Inputs for `batch` latents of `size`²: random, or zeros.
    fn input(&self, batch: usize, size: usize, random: bool, device: &Device) -> UNetInput {
        let tensor = |shape: [usize; 3]| {
            if random {
                Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device)
            } else {
                Tensor::zeros(shape, device)
            }
        };
        let latents = tensor([batch * 4, size, size]).reshape([batch, 4, size, size]);
        let text = tensor([batch, 77, self.context]);
        let input = UNetInput::new(latents, Tensor::from_floats([500.0], device), text);
        match self.pooled {
            None => input,
            Some(pooled) => {
                // Original size, crop offset and target size: 1024², (0, 0), 1024².
                let ids = [1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0].repeat(batch);
                let time_ids = Tensor::from_data(TensorData::new(ids, [batch, 6]), device);
                let text_embeds = tensor([1, batch, pooled]).reshape([batch, pooled]);
                input.with_added_cond(text_embeds, time_ids)
            }
        }
    }

    /// The model with its (lazily initialised) random weights materialised by a tiny forward
    /// pass, so the timed steps do not include drawing billions of random numbers.
    fn model(&self, device: &Device) -> UNet2DConditionModel {
        let config: UNet2DConditionConfig =
            mm_core::config::read_json(common::full_config(self.config)).expect("UNet config");
        let unet = UNet2DConditionModel::new(&config, device).expect("UNet");
        let start = Instant::now();
        let unet = common::with_bench_dtype(unet);
        unet.forward_with(self.input(1, 8, false, device))
            .expect("warm-up step");
        eprintln!(
            "weights initialised in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        unet
    }
}

/// Guidance as a pipeline applies it to a `[uncond; cond]` output: uncond + 7.5 · (cond −
/// uncond), summed (so that the step is not optimised away).
fn guide(out: Tensor<4>) -> f32 {
    let uncond = out.clone().narrow(0, 0, 1);
    let guided = uncond.clone() + (out.narrow(0, 1, 1) - uncond) * 7.5;
    guided.sum().into_scalar::<f32>()
}

/// The UNet of `MM_BENCH_MODEL` (SD3 has none: see `benches/sd3.rs`).
fn family_case() -> Option<Case> {
    match common::family() {
        Family::Sd15 => Some(SD15),
        Family::Sdxl => Some(SDXL),
        Family::Sd3 | Family::Flux => None,
    }
}

fn unet_step(c: &mut Criterion) {
    common::configure();
    let Some(case) = family_case() else { return };
    common::run(c, case.group, case.name, case.seconds, || {
        let device = Device::flex();
        let unet = case.model(&device);
        let input = case.input(2, case.latent, true, &device);
        let id = format!("{}/{}", case.group, case.name);
        common::bf16_error(&id, || unet.forward_with(input.clone()).expect("step"));
        move || {
            black_box(guide(unet.forward_with(input.clone()).expect("step")));
        }
    });
}

/// SD 1.5's step with a ControlNet (SD 1.5 only).
fn controlnet_step(c: &mut Criterion) {
    if common::family() != Family::Sd15 {
        return;
    }
    let case = SD15;
    common::run(c, "sd15_controlnet", case.name, case.seconds, || {
        let device = Device::flex();
        let unet = case.model(&device);
        let config: ControlNetConfig =
            mm_core::config::read_json(common::full_config("controlnet-sd15-canny/config.json"))
                .expect("ControlNet config");
        let net =
            common::with_bench_dtype(ControlNetModel::new(&config, &device).expect("ControlNet"));
        let side = 8 * case.latent;
        let image =
            Tensor::<4>::random([2, 3, side, side], Distribution::Uniform(0.0, 1.0), &device);
        let input = case.input(2, case.latent, true, &device);
        move || {
            let control = net
                .forward(input.clone(), image.clone(), 1.0, false)
                .expect("ControlNet");
            let input = input
                .clone()
                .with_control_residuals(control.down, control.mid);
            black_box(guide(unet.forward_with(input).expect("step")));
        }
    });
}

criterion_group!(benches, unet_step, controlnet_step);
criterion_main!(benches);
