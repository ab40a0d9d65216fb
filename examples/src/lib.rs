//! Helpers shared by the example programs in this folder (`cargo run --release --example
//! clip_zero_shot -- --help`).

use std::path::PathBuf;

pub mod vlm;

use burn::tensor::Device;
use mm_vision::pipeline::{ImageTextModel, ImageTextPipeline};

/// The error type of the examples: any library error, printed with its message.
pub type AnyError = Box<dyn std::error::Error>;

/// Options every zero-shot example takes.
#[derive(Debug, clap::Args)]
pub struct ZeroShotArgs {
    /// Model folder or Hugging Face repo id (resolved in the local HF cache).
    #[arg(long)]
    pub model: Option<String>,
    /// Image to classify (png, jpeg or webp).
    #[arg(long)]
    pub image: PathBuf,
    /// Candidate labels, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// Prompt template, `{}` standing for the label.
    #[arg(long, default_value = "This is a photo of {}.")]
    pub template: String,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Prints an error's message (not its debug form) and turns the result into an exit code.
pub fn report(result: Result<(), AnyError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses `--device`.
pub fn device(name: &str) -> Result<Device, AnyError> {
    Ok(mm_core::device::parse(name)?)
}

/// Loads the pipeline, classifies the image and prints the ranked labels.
pub fn run_zero_shot<M: ImageTextModel>(
    args: ZeroShotArgs,
    default_model: &str,
) -> Result<(), AnyError> {
    let device = device(&args.device)?;
    let model = args.model.as_deref().unwrap_or(default_model);
    let pipeline = ImageTextPipeline::<M>::load(model, &device)?.with_template(args.template);
    let image = mm_core::image::load_image(&args.image)?;
    let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
    for (label, probability) in pipeline.zero_shot(&image, &labels)? {
        println!("{probability:>7.4}  {label}");
    }
    Ok(())
}
