//! IP-Adapter text-to-image (SD 1.x / 2.x and SDXL): a style (or subject) image prompts the
//! generation beside the text, through the `h94/IP-Adapter` files; optionally with
//! ControlNets for the layout (the chapter's architecture: edges + depth + style).
//!
//! ```text
//! cargo run --release --example ip_adapter -- \
//!     --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
//!     --ip-adapter IP-Adapter/models/ip-adapter_sd15.safetensors \
//!     --image-encoder IP-Adapter/models/image_encoder \
//!     --style-image van_gogh.png --scale 0.6 --prompt "a cat in a garden" --out cat.png
//! # SDXL, InstantStyle (style blocks only), with a Canny ControlNet for the layout:
//! cargo run --release --example ip_adapter -- \
//!     --model stabilityai/stable-diffusion-xl-base-1.0 \
//!     --ip-adapter IP-Adapter/sdxl_models/ip-adapter_sdxl_vit-h.safetensors \
//!     --image-encoder IP-Adapter/models/image_encoder --style-image style.png \
//!     --scale '{"up": {"block_0": [0.0, 1.0, 0.0]}}' \
//!     --controlnet diffusers/controlnet-canny-sdxl-1.0 --control canny=room.png \
//!     --conditioning-scale 0.5 --prompt "a living room" --out room.png
//! # the tiny random test folders (noise-like images, a second):
//! cargo run --release --example ip_adapter -- --model tests/fixtures/sd-tiny \
//!     --ip-adapter tests/fixtures/ip-adapter-tiny/models/ip-adapter_sd-tiny.safetensors \
//!     --image-encoder tests/fixtures/ip-adapter-tiny/models/image_encoder \
//!     --style-image tests/fixtures/ip-adapter-tiny/image.png --prompt "a cat" --steps 4 \
//!     --out /tmp/ip.png
//! ```

use std::path::PathBuf;

use clap::Parser;
use mm_diffusion::ip_adapter::{ImageEncoder, IpAdapterScale};
use mm_examples::{AnyError, ControlArgs, DiffusionArgs, SizeArgs, run_diffusion_with};

/// Generates images prompted by a style image and a text.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    /// An IP-Adapter `.safetensors` file of h94/IP-Adapter (e.g.
    /// models/ip-adapter_sd15.safetensors, sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors);
    /// repeatable, one per --style-image.
    #[arg(long = "ip-adapter", required = true)]
    ip_adapters: Vec<PathBuf>,
    /// The adapters' image encoder folder (h94/IP-Adapter's models/image_encoder, ViT-H; the
    /// non-vit-h SDXL adapters take sdxl_models/image_encoder).
    #[arg(long)]
    image_encoder: String,
    /// The reference image of each adapter, in order.
    #[arg(long = "style-image", required = true)]
    style_images: Vec<PathBuf>,
    /// Each adapter's scale: a number (default 1.0), or per-block scales as diffusers'
    /// `set_ip_adapter_scale` takes them (InstantStyle: '{"up": {"block_0": [0.0, 1.0, 0.0]}}').
    #[arg(long = "scale")]
    scales: Vec<String>,
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
    let adapters = cli.ip_adapters.len();
    if cli.style_images.len() != adapters {
        return Err(format!(
            "{} --style-image for {adapters} --ip-adapter: give one image per adapter",
            cli.style_images.len()
        )
        .into());
    }
    let scales = match cli.scales.len() {
        0 => vec![IpAdapterScale::Uniform(1.0); adapters],
        n if n == adapters => (cli.scales.iter())
            .map(|s| Ok(IpAdapterScale::parse(s)?.remove(0)))
            .collect::<Result<Vec<_>, AnyError>>()?,
        n => {
            return Err(
                format!("{n} --scale for {adapters} adapters: give one per adapter").into(),
            );
        }
    };
    let mut opts = cli
        .control
        .apply(cli.size.apply(cli.common.options()), &cli.common.out)?;
    for path in &cli.style_images {
        opts = opts.ip_adapter_image(mm_core::image::load_image(path)?);
    }
    let device = mm_examples::device(&cli.common.device)?;
    let dtype = mm_examples::parse_dtype(&cli.common.dtype)?;
    run_diffusion_with(
        &cli.common,
        opts,
        Box::new(move |pipe| {
            let encoder = ImageEncoder::load(&cli.image_encoder, &device)?;
            let pipe = pipe.with_ip_adapter(&cli.ip_adapters, encoder, &scales)?;
            cli.control.attach(pipe, dtype, &device)
        }),
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
