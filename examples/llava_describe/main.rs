//! Describes every image of a folder with a LLaVA 1.5 or LLaVA-NeXT model, one after the other,
//! streaming each description to stdout.
//!
//! ```text
//! huggingface-cli download llava-hf/llava-1.5-7b-hf
//! cargo run --release --example llava_describe -- \
//!     --model llava-hf/llava-1.5-7b-hf --images photos/
//! ```
//!
//! Files that are not png, jpeg or webp images are skipped; an image that cannot be decoded is
//! reported and the others are still described.

use std::path::{Path, PathBuf};

use clap::Parser;
use mm_examples::AnyError;
use mm_examples::vlm::{Llava, LlavaArgs};

/// Describes each image of a folder with LLaVA.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    llava: LlavaArgs,
    /// The folder of images.
    #[arg(long)]
    images: PathBuf,
    /// The instruction asked for every image.
    #[arg(long, default_value = "Describe this image in one or two sentences.")]
    prompt: String,
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg" | "webp"
        )
    })
}

fn run(cli: Cli) -> Result<(), AnyError> {
    let read = std::fs::read_dir(&cli.images)
        .map_err(|e| format!("cannot read folder {}: {e}", cli.images.display()))?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no png, jpeg or webp images in {}", cli.images.display()).into());
    }
    let llava = Llava::load(&cli.llava)?;
    let mut failed = 0;
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        println!("== {name}");
        match mm_core::image::load_image_on_white(file) {
            Ok(image) => {
                llava.answer(std::slice::from_ref(&image), &cli.prompt)?;
            }
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed == files.len() {
        return Err("no image could be decoded".into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run(Cli::parse()))
}
