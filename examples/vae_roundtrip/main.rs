//! Encodes a photo into a diffusion latent space and decodes it back; prints the latent shape,
//! the reconstruction PSNR and the time taken, and saves the reconstruction. Large images are
//! encoded and decoded in tiles when the untiled round trip would exceed the memory limit
//! (`--tiling auto`, the default; `on` always tiles images larger than a tile, `off` never).
//!
//! ```text
//! # TAEF2 (upstream taesd files)
//! cargo run --release --example vae_roundtrip -- --image photo.png --out recon.png \
//!     --taesd ../shared/assets/taef2/taef2_encoder.safetensors \
//!             ../shared/assets/taef2/taef2_decoder.safetensors --flavour taef2
//! # a diffusers VAE folder (AutoencoderKL or AutoencoderTiny), e.g. a pipeline's vae/
//! cargo run --release --example vae_roundtrip -- --image photo.png --vae sd15/vae
//! ```

use std::path::PathBuf;

use clap::Parser;
use mm_diffusion::vae::{Autoencoder, AutoencoderKL, AutoencoderTiny};
use mm_examples::{AnyError, RoundtripArgs, TaesdFlavour, device, roundtrip};

/// Encode → decode round trip of one image.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: RoundtripArgs,
    /// A diffusers VAE folder or cached repo id (`AutoencoderKL` or `AutoencoderTiny`).
    #[arg(long, conflicts_with = "taesd", required_unless_present = "taesd")]
    vae: Option<String>,
    /// Upstream TAESD encoder and decoder files.
    #[arg(long, num_args = 2, value_names = ["ENCODER", "DECODER"])]
    taesd: Option<Vec<PathBuf>>,
    /// Which TAESD the `--taesd` files are.
    #[arg(long, value_enum, default_value = "taesd")]
    flavour: TaesdFlavour,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn load(cli: &Cli, device: &burn::tensor::Device) -> Result<Box<dyn Autoencoder>, AnyError> {
    if let Some([encoder, decoder]) = cli.taesd.as_deref() {
        return Ok(Box::new(cli.flavour.load_files(encoder, decoder, device)?));
    }
    let folder = cli.vae.as_deref().ok_or("give --vae or --taesd")?;
    let dir = mm_core::hub::ModelDir::resolve(folder)?;
    let config: serde_json::Value = mm_core::config::read_json(dir.file("config.json")?)?;
    let path = dir.path().to_string_lossy();
    Ok(match config["_class_name"].as_str() {
        Some("AutoencoderTiny") => Box::new(AutoencoderTiny::load(path, device)?),
        _ => Box::new(AutoencoderKL::load(path, device)?),
    })
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let device = device(&cli.common.device)?;
    let mut vae = load(&cli, &device)?;
    roundtrip(vae.as_mut(), &cli.common, &device)
}
