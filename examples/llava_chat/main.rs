//! Asks a LLaVA 1.5 or LLaVA-NeXT model about one or more images, streaming the answer to stdout.
//!
//! ```text
//! huggingface-cli download llava-hf/llava-1.5-7b-hf
//! cargo run --release --example llava_chat -- \
//!     --model llava-hf/llava-1.5-7b-hf --image a.jpg [--image b.jpg] \
//!     --prompt "What is shown in this image?"
//! ```
//!
//! The prompt is put into one user turn after the images and rendered with the model's chat
//! template (`USER: <image>\n... ASSISTANT:` for llava-1.5-hf).

use std::path::PathBuf;

use clap::Parser;
use mm_examples::AnyError;
use mm_examples::vlm::{Llava, LlavaArgs};

/// Answers a question about images with LLaVA, streaming the text.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    llava: LlavaArgs,
    /// An image (png, jpeg or webp); repeat for several.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// The question or instruction.
    #[arg(long)]
    prompt: String,
}

fn run(cli: Cli) -> Result<(), AnyError> {
    if cli.prompt.trim().is_empty() {
        return Err("--prompt is empty".into());
    }
    // As transformers' processors do, transparency is composited onto white.
    let images = cli
        .image
        .iter()
        .map(mm_core::image::load_image_on_white)
        .collect::<Result<Vec<_>, _>>()?;
    let llava = Llava::load(&cli.llava)?;
    llava.answer(&images, &cli.prompt)?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run(Cli::parse()))
}
