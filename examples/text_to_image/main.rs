//! Stable Diffusion 1.x / 2.x text-to-image with a progress bar.
//!
//! ```text
//! cargo run --release --example text_to_image -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
//!     --prompt "a watercolor fox in the snow" --negative "blurry" \
//!     --scheduler EulerDiscreteScheduler --steps 25 --seed 7 --out fox.png
//! # the tiny random test pipeline (noise-like images, runs in a second):
//! cargo run --release --example text_to_image -- --model tests/fixtures/sd-tiny \
//!     --prompt "a red cat" --steps 4 --out /tmp/tiny.png
//! ```

use clap::Parser;
use mm_examples::{AnyError, DiffusionArgs, run_diffusion};

/// Generates images from a prompt.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    /// Image width (default: the UNet's sample size × 8, 512 for SD 1.5).
    #[arg(long)]
    width: Option<usize>,
    /// Image height (see --width).
    #[arg(long)]
    height: Option<usize>,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let mut opts = cli.common.options();
    opts.width = cli.width;
    opts.height = cli.height;
    run_diffusion(
        &cli.common,
        opts,
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
