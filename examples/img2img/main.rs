//! Stable Diffusion 1.x / 2.x and SDXL image-to-image with a progress bar (an SDXL refiner
//! folder given as `--model` refines an image, diffusers' default strength 0.3).
//!
//! ```text
//! cargo run --release --example img2img -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 --image sketch.png \
//!     --prompt "a fantasy landscape, detailed" --strength 0.75 --steps 30 --out out.png
//! cargo run --release --example img2img -- --model tests/fixtures/sd-tiny \
//!     --image photo.png --prompt "a red cat" --steps 4 --out /tmp/i2i.png
//! ```

use clap::Parser;
use mm_examples::{AnyError, DiffusionArgs, ImageArgs, run_diffusion};

/// Transforms an image following a prompt.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    #[command(flatten)]
    input: ImageArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let device = mm_examples::device(&cli.common.device)?;
    let (image, opts) = cli.input.apply(cli.common.options(), &device)?;
    run_diffusion(
        &cli.common,
        opts,
        Box::new(move |pipe, opts, hooks| pipe.img2img(&image, opts, hooks)),
    )
}
