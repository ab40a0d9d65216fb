//! Encodes a photo into a diffusion latent space and decodes it back; prints the latent shape,
//! the reconstruction PSNR and the time taken, and saves the reconstruction.
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
use std::time::Instant;

use burn::tensor::Tensor;
use clap::{Parser, ValueEnum};
use mm_diffusion::vae::{Autoencoder, AutoencoderKL, AutoencoderTiny, AutoencoderTinyConfig};
use mm_examples::{AnyError, device};

/// The TAESD variants, by the latent space they target.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Flavour {
    /// SD 1.x/2.x and SDXL (4 latent channels).
    Taesd,
    /// SD3 and FLUX.1 (16 latent channels).
    Taesd3,
    /// FLUX.2 (32 latent channels, pooled blocks).
    Taef2,
}

/// Encode → decode round trip of one image.
#[derive(Parser)]
struct Cli {
    /// Image to reconstruct (cropped to multiples of the downscale factor).
    #[arg(long)]
    image: PathBuf,
    /// A diffusers VAE folder or cached repo id (`AutoencoderKL` or `AutoencoderTiny`).
    #[arg(long, conflicts_with = "taesd", required_unless_present = "taesd")]
    vae: Option<String>,
    /// Upstream TAESD encoder and decoder files.
    #[arg(long, num_args = 2, value_names = ["ENCODER", "DECODER"])]
    taesd: Option<Vec<PathBuf>>,
    /// Which TAESD the `--taesd` files are.
    #[arg(long, value_enum, default_value = "taesd")]
    flavour: Flavour,
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

fn load(cli: &Cli, device: &burn::tensor::Device) -> Result<Box<dyn Autoencoder>, AnyError> {
    if let Some([encoder, decoder]) = cli.taesd.as_deref() {
        let config = match cli.flavour {
            Flavour::Taesd => AutoencoderTinyConfig::taesd(4),
            Flavour::Taesd3 => AutoencoderTinyConfig::taesd(16),
            Flavour::Taef2 => AutoencoderTinyConfig::taef2(),
        };
        let model = AutoencoderTiny::from_original_files(&config, encoder, decoder, device)?;
        return Ok(Box::new(model));
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
    let device = device(&cli.device)?;
    let vae = load(&cli, &device)?;
    let f = vae.downscale_factor() as u32;
    let image = mm_core::image::load_image(&cli.image)?;
    let (w, h) = (image.width() / f * f, image.height() / f * f);
    let crop = image::imageops::crop_imm(&image, 0, 0, w, h).to_image();
    let pixels: Tensor<4> = mm_core::image::image_to_tensor(&crop, &device).unsqueeze();

    let start = Instant::now();
    let latents = vae.encode_latents(pixels.clone() * 2.0 - 1.0)?;
    let encoded = start.elapsed();
    println!("latents {:?} in {encoded:.2?}", latents.dims());
    let decoded = ((vae.decode_latents(latents)? + 1.0) / 2.0).clamp(0.0, 1.0);
    println!(
        "decoded {:?} in {:.2?}",
        decoded.dims(),
        start.elapsed() - encoded
    );

    let mse: f32 = (decoded.clone() - pixels)
        .powi_scalar(2)
        .mean()
        .into_scalar();
    println!("PSNR {:.2} dB", 10.0 * (1.0 / mse).log10());
    if let Some(out) = &cli.out {
        let [recon] = <[_; 1]>::try_from(mm_core::image::tensor_to_images(decoded)?)
            .map_err(|_| "expected one image")?;
        mm_core::image::save_image(&recon, out)?;
        println!("saved {}", out.display());
    }
    Ok(())
}
