//! Stable Diffusion 1.x / 2.x and SDXL inpainting with a progress bar: a 9-channel inpainting
//! checkpoint (e.g. stable-diffusion-v1-5/stable-diffusion-inpainting) or any ordinary one
//! (latent blending; SDXL base folders are detected from `model_index.json`).
//!
//! ```text
//! cargo run --release --example inpaint -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-inpainting \
//!     --image photo.png --mask mask.png --prompt "a red sofa" --steps 30 --out out.png
//! cargo run --release --example inpaint -- --model tests/fixtures/sd-tiny-inpaint \
//!     --image photo.png --mask mask.png --prompt "a red cat" --steps 4 --out /tmp/inp.png
//! ```

use std::path::PathBuf;

use clap::Parser;
use mm_diffusion::pipelines::mask_from_image;
use mm_examples::{AnyError, DiffusionArgs, ImageArgs, crop_to_multiple, run_diffusion};

/// Repaints the white part of a mask following a prompt.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    #[command(flatten)]
    input: ImageArgs,
    /// The mask, the image's size: white (≥ 50 % grey) is repainted, black kept.
    #[arg(long)]
    mask: PathBuf,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    if cli.common.refiner.is_some() {
        return Err("--refiner finishes text_to_image and img2img runs, not inpainting".into());
    }
    let device = mm_examples::device(&cli.common.device)?;
    let (image, opts) = cli.input.apply(cli.common.options(), &device)?;
    let mask = crop_to_multiple(mm_core::image::load_image(&cli.mask)?, 8)?;
    let mask = mask_from_image(&mask, &device);
    run_diffusion(
        &cli.common,
        opts,
        Box::new(move |pipe, opts, hooks| pipe.inpaint(&image, &mask, opts, hooks)),
    )
}
