//! Encodes a photo with a tiny autoencoder (TAESD family) and decodes it back; prints the
//! latent shape, the reconstruction PSNR and the time taken, and saves the reconstruction.
//! (`vae_roundtrip` does the same for any VAE; this is its TAESD-only front end.)
//!
//! ```text
//! # a diffusers AutoencoderTiny folder or cached repo id
//! cargo run --release --example taesd_roundtrip -- --model madebyollin/taesd --image photo.png
//! # upstream files (TAEF2 from the shared assets)
//! cargo run --release --example taesd_roundtrip -- --image photo.png --out recon.png \
//!     --encoder ../shared/assets/taef2/taef2_encoder.safetensors \
//!     --decoder ../shared/assets/taef2/taef2_decoder.safetensors --flavour taef2
//! ```

use std::path::PathBuf;

use clap::Parser;
use mm_diffusion::vae::AutoencoderTiny;
use mm_examples::{AnyError, TaesdFlavour, device, roundtrip};

/// TAESD encode → decode round trip of one image.
#[derive(Parser)]
struct Cli {
    /// Image to reconstruct (cropped to multiples of the downscale factor).
    #[arg(long)]
    image: PathBuf,
    /// A diffusers `AutoencoderTiny` folder or cached repo id.
    #[arg(long, conflicts_with_all = ["encoder", "decoder"], required_unless_present = "encoder")]
    model: Option<String>,
    /// Upstream encoder file (`taesd_encoder.safetensors`, …).
    #[arg(long, requires = "decoder")]
    encoder: Option<PathBuf>,
    /// Upstream decoder file.
    #[arg(long, requires = "encoder")]
    decoder: Option<PathBuf>,
    /// Which TAESD the upstream files are.
    #[arg(long, value_enum, default_value = "taesd")]
    flavour: TaesdFlavour,
    /// Where to save the reconstruction (png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let device = device(&cli.device)?;
    let taesd = match (&cli.model, &cli.encoder, &cli.decoder) {
        (Some(model), _, _) => AutoencoderTiny::load(model, &device)?,
        (None, Some(encoder), Some(decoder)) => {
            cli.flavour.load_files(encoder, decoder, &device)?
        }
        _ => return Err("give --model, or --encoder and --decoder".into()),
    };
    roundtrip(&taesd, &cli.image, cli.out.as_deref(), &device)
}
