//! Stable Diffusion 1.x / 2.x, SDXL, SD3 / SD3.5 and FLUX.1 text-to-image with a progress bar
//! (the pipeline class is detected from `model_index.json`; see also the `flux` example).
//!
//! ```text
//! cargo run --release --example text_to_image -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
//!     --prompt "a watercolor fox in the snow" --negative "blurry" \
//!     --scheduler EulerDiscreteScheduler --steps 25 --seed 7 --out fox.png
//! # SDXL base + refiner (DPM++ 2M Karras, 30 steps, guidance 7.5, 1024², the base running
//! # 80 % of the schedule), keeping only the running model in memory:
//! cargo run --release --example text_to_image -- \
//!     --model stabilityai/stable-diffusion-xl-base-1.0 \
//!     --refiner stabilityai/stable-diffusion-xl-refiner-1.0 --high-noise-frac 0.8 \
//!     --prompt "a majestic lion jumping from a big stone at night" \
//!     --scheduler DPMSolverMultistepScheduler --scheduler-option use_karras_sigmas=true \
//!     --steps 30 --guidance 7.5 --width 1024 --height 1024 --memory sequential --out lion.png
//! # SDXL-Turbo: 1 step, no guidance, trailing timesteps
//! cargo run --release --example text_to_image -- --model stabilityai/sdxl-turbo \
//!     --prompt "a cinematic shot of a raccoon" --steps 1 --guidance 0 \
//!     --scheduler EulerAncestralDiscreteScheduler \
//!     --scheduler-option timestep_spacing=trailing --width 512 --height 512 --out raccoon.png
//! # SD3.5 medium (28 steps by default, flow matching), bf16 weights, one model in memory at a
//! # time, skip-layer guidance on blocks 7-9 as Stability recommends:
//! cargo run --release --example text_to_image -- \
//!     --model stabilityai/stable-diffusion-3.5-medium \
//!     --prompt "a capybara holding a sign that reads Hello World" --steps 40 --guidance 4.5 \
//!     --slg-layers 7,8,9 --dtype bf16 --memory sequential --out capybara.png
//! # SD3 medium without T5 (9.5 GB less; zeros in its place):
//! cargo run --release --example text_to_image -- \
//!     --model stabilityai/stable-diffusion-3-medium-diffusers --no-t5 \
//!     --prompt "a photo of a cat" --dtype bf16 --memory sequential --out cat.png
//! # the tiny random test pipelines (noise-like images, run in a second):
//! cargo run --release --example text_to_image -- --model tests/fixtures/sd-tiny \
//!     --prompt "a red cat" --steps 4 --out /tmp/tiny.png
//! cargo run --release --example text_to_image -- --model tests/fixtures/sdxl-tiny \
//!     --refiner tests/fixtures/sdxl-tiny-refiner --prompt "a red cat" --steps 8 \
//!     --width 32 --height 32 --out /tmp/tiny-xl.png
//! cargo run --release --example text_to_image -- --model tests/fixtures/sd3-tiny \
//!     --prompt "a red cat" --steps 4 --out /tmp/tiny-sd3.png
//! ```

use clap::Parser;
use mm_examples::{AnyError, DiffusionArgs, SizeArgs, run_diffusion};

/// Generates images from a prompt.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    #[command(flatten)]
    size: SizeArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let opts = cli.size.apply(cli.common.options());
    run_diffusion(
        &cli.common,
        opts,
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
