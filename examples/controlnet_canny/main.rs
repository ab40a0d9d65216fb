//! ControlNet text-to-image (SD 1.x / 2.x and SDXL): a reference image's Canny edges (OpenCV's
//! `cv2.Canny(image, 100, 200)`, computed in Rust and saved beside the output) steer the
//! generation so that the result keeps the reference's layout. Several ControlNets combine
//! (`--controlnet` and `--control` repeated, in the same order; their residuals are summed).
//!
//! ```text
//! cargo run --release --example controlnet_canny -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
//!     --controlnet lllyasviel/sd-controlnet-canny --control canny=bird.png \
//!     --prompt "a colourful bird, best quality" --steps 20 --seed 2 --out bird_out.png
//! # writes bird_out.canny.png (the edge map) and bird_out.png
//! # SDXL with edges and a depth map (any kind but canny is used as given):
//! cargo run --release --example controlnet_canny -- \
//!     --model stabilityai/stable-diffusion-xl-base-1.0 \
//!     --controlnet diffusers/controlnet-canny-sdxl-1.0 --control canny=room.png \
//!     --controlnet diffusers/controlnet-depth-sdxl-1.0 --control depth=room_depth.png \
//!     --conditioning-scale 0.5 --conditioning-scale 0.7 --prompt "a cosy living room" \
//!     --out room_out.png
//! # the tiny random test pipeline and ControlNet (noise-like images, a second):
//! cargo run --release --example controlnet_canny -- --model tests/fixtures/sd-tiny \
//!     --controlnet tests/fixtures/controlnet-tiny/sd \
//!     --control canny=../shared/assets/images/chelsea.png --width 32 --height 32 \
//!     --prompt "a cat" --steps 4 --out /tmp/cn.png
//! ```

use clap::Parser;
use mm_examples::{AnyError, ControlArgs, DiffusionArgs, SizeArgs, run_diffusion_with};

/// Generates images whose layout follows control images.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    size: SizeArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    if cli.control.controlnets.is_empty() {
        return Err("give at least one --controlnet and its --control".into());
    }
    let opts = cli
        .control
        .apply(cli.size.apply(cli.common.options()), &cli.common.out)?;
    let device = mm_examples::device(&cli.common.device)?;
    let dtype = mm_examples::parse_dtype(&cli.common.dtype)?;
    run_diffusion_with(
        &cli.common,
        opts,
        Box::new(move |pipe| cli.control.attach(pipe, dtype, &device)),
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
