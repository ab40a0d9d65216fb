//! Encodes a photo with a tiny autoencoder (TAESD family) and decodes it back; prints the
//! latent shape, the reconstruction PSNR and the time taken, and saves the reconstruction.
//! Large images are encoded and decoded in tiles when the untiled round trip would exceed the
//! memory limit (`--tiling auto`, the default; `on` always tiles, `off` never).
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
use mm_examples::{AnyError, RoundtripArgs, TaesdFlavour, device, roundtrip};

/// TAESD encode → decode round trip of one image.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: RoundtripArgs,
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
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let device = device(&cli.common.device)?;
    let mut taesd = match (&cli.model, &cli.encoder, &cli.decoder) {
        (Some(model), _, _) => AutoencoderTiny::load(model, &device)?,
        (None, Some(encoder), Some(decoder)) => {
            cli.flavour.load_files(encoder, decoder, &device)?
        }
        _ => return Err("give --model, or --encoder and --decoder".into()),
    };
    roundtrip(&mut taesd, &cli.common, &device)
}
