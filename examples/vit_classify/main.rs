//! ImageNet classification with ViT.
//!
//! ```text
//! huggingface-cli download google/vit-base-patch16-224
//! cargo run --release --example vit_classify -- --image photo.jpg --top-k 5
//! ```

use std::path::PathBuf;

use clap::Parser;
use mm_core::hub::ModelDir;
use mm_core::processor::{ImageProcessor, ImageProcessorConfig, find_image_processor_config};
use mm_examples::{AnyError, device};
use mm_vision::Pretrained;
use mm_vision::vit::ViTForImageClassification;

/// Prints the top-k classes of each image.
#[derive(Parser)]
struct Cli {
    /// Model folder or Hugging Face repo id (resolved in the local HF cache).
    #[arg(long, default_value = "google/vit-base-patch16-224")]
    model: String,
    /// Images to classify.
    #[arg(long, required = true, num_args = 1..)]
    image: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
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
    let dir = ModelDir::resolve(&cli.model)?;
    let model = ViTForImageClassification::load(dir.path().to_string_lossy(), &device)?;
    let processor = ImageProcessor::new(match find_image_processor_config(dir.path())? {
        Some(json) => json.parse()?,
        None => ImageProcessorConfig::vit(),
    })?;
    let images = cli
        .image
        .iter()
        .map(mm_core::image::load_image) // ViT: alpha dropped, as `convert("RGB")`
        .collect::<Result<Vec<_>, _>>()?;
    let pixels = processor.preprocess(&images, &device)?;
    for (path, predictions) in cli.image.iter().zip(model.classify(pixels, cli.top_k)?) {
        println!("{}", path.display());
        for p in predictions {
            println!("  {:>7.4}  {}", p.score, p.label);
        }
    }
    Ok(())
}
