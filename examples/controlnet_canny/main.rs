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

use std::path::{Path, PathBuf};

use clap::Parser;
use mm_core::image::canny::{CannyOptions, control_image};
use mm_diffusion::controlnet::ControlNetModel;
use mm_diffusion::pipelines::ControlInput;
use mm_examples::{AnyError, DiffusionArgs, run_diffusion_with};

/// Generates images whose layout follows control images.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    /// A ControlNet folder or repo id (e.g. lllyasviel/sd-controlnet-canny); repeatable, one
    /// per --control.
    #[arg(long = "controlnet", required = true)]
    controlnets: Vec<String>,
    /// KIND=IMAGE: `canny=photo.png` extracts the photo's edges; any other kind (depth, pose,
    /// …) uses the image as the control image; repeatable, one per --controlnet.
    #[arg(long = "control", required = true, value_parser = parse_control)]
    controls: Vec<(String, PathBuf)>,
    /// `controlnet_conditioning_scale`: one for all, or one per ControlNet (default 1.0).
    #[arg(long = "conditioning-scale")]
    scales: Vec<f64>,
    /// The fraction of the steps after which the ControlNets start acting.
    #[arg(long, default_value_t = 0.0)]
    control_start: f64,
    /// The fraction of the steps after which they stop.
    #[arg(long, default_value_t = 1.0)]
    control_end: f64,
    /// diffusers' guess mode: the ControlNets see only the prompt's guidance branch.
    #[arg(long)]
    guess_mode: bool,
    /// Canny's lower hysteresis threshold.
    #[arg(long, default_value_t = 100.0)]
    low_threshold: f64,
    /// Canny's upper hysteresis threshold.
    #[arg(long, default_value_t = 200.0)]
    high_threshold: f64,
    /// Canny with the L2 gradient magnitude (OpenCV's `L2gradient=True`) instead of L1.
    #[arg(long)]
    l2_gradient: bool,
    /// Image width (default: the first control image's, rounded down to a multiple of 8).
    #[arg(long)]
    width: Option<usize>,
    /// Image height (see --width).
    #[arg(long)]
    height: Option<usize>,
}

fn parse_control(text: &str) -> Result<(String, PathBuf), String> {
    let (kind, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=IMAGE (e.g. canny=photo.png), got {text:?}"))?;
    Ok((kind.to_string(), PathBuf::from(path)))
}

/// `out.png` → `out.<i>.<kind>.png` (`out.canny.png` for a single control).
fn beside(out: &Path, i: usize, count: usize, kind: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or("out".into(), |s| s.to_string_lossy());
    let name = if count == 1 {
        format!("{stem}.{kind}.png")
    } else {
        format!("{stem}.{i}.{kind}.png")
    };
    out.with_file_name(name)
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let count = cli.controls.len();
    if cli.controlnets.len() != count {
        return Err(format!(
            "{} --controlnet for {count} --control: give one ControlNet per control image",
            cli.controlnets.len()
        )
        .into());
    }
    if cli.scales.len() > 1 && cli.scales.len() != count {
        return Err(format!(
            "{} --conditioning-scale for {count} ControlNets: give one, or one per ControlNet",
            cli.scales.len()
        )
        .into());
    }
    let canny = CannyOptions::default()
        .thresholds(cli.low_threshold, cli.high_threshold)
        .l2_gradient(cli.l2_gradient);
    let mut opts = cli.common.options().guess_mode(cli.guess_mode);
    opts.width = cli.width;
    opts.height = cli.height;
    for (i, (kind, path)) in cli.controls.iter().enumerate() {
        let reference = mm_core::image::load_image(path)?;
        let image = if kind == "canny" {
            let edges = control_image(&reference, &canny)?;
            let saved = beside(&cli.common.out, i, count, kind);
            mm_core::image::save_image(&edges, &saved)?;
            println!("saved the edge map {}", saved.display());
            edges
        } else {
            reference
        };
        let mut input =
            ControlInput::new(image).guidance_window(cli.control_start, cli.control_end);
        if let Some(&scale) = cli.scales.get(i).or(cli.scales.first()) {
            input = input.conditioning_scale(scale);
        }
        opts = opts.control(input);
    }
    let device = mm_examples::device(&cli.common.device)?;
    let dtype = mm_examples::parse_dtype(&cli.common.dtype)?;
    let controlnets = cli.controlnets.clone();
    run_diffusion_with(
        &cli.common,
        opts,
        Box::new(move |mut pipe| {
            for model in &controlnets {
                pipe =
                    pipe.with_controlnet(ControlNetModel::load_with_dtype(model, dtype, &device)?);
            }
            Ok(pipe)
        }),
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
