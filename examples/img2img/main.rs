//! Stable Diffusion 1.x / 2.x image-to-image with a progress bar.
//!
//! ```text
//! cargo run --release --example img2img -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 --image sketch.png \
//!     --prompt "a fantasy landscape, detailed" --strength 0.75 --steps 30 --out out.png
//! cargo run --release --example img2img -- --model tests/fixtures/sd-tiny \
//!     --image ../shared/assets/images/<photo> --prompt "a red cat" --steps 4 --out /tmp/i2i.png
//! ```

use clap::Parser;
use mm_examples::{AnyError, DiffusionArgs, load_image_tensor, run_diffusion};
use std::path::PathBuf;

/// Transforms an image following a prompt.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    /// The starting image (cropped to multiples of 8).
    #[arg(long)]
    image: PathBuf,
    /// How much to change it: the fraction of the schedule run (0–1).
    #[arg(long, default_value_t = mm_diffusion::pipelines::IMG2IMG_STRENGTH)]
    strength: f64,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let device = mm_examples::device(&cli.common.device)?;
    let image = load_image_tensor(&cli.image, &device)?;
    let opts = cli.common.options().strength(cli.strength);
    run_diffusion(
        &cli.common,
        opts,
        Box::new(move |pipe, opts, hooks| pipe.img2img(&image, opts, hooks)),
    )
}
