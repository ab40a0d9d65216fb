//! Zero-shot image classification with CLIP.
//!
//! ```text
//! huggingface-cli download openai/clip-vit-base-patch32
//! cargo run --release --example clip_zero_shot -- \
//!     --image photo.jpg --labels "a cat,a dog,an astronaut"
//! ```

use clap::Parser;
use mm_examples::{ZeroShotArgs, run_zero_shot};
use mm_vision::clip::ClipModel;

/// Ranks candidate labels for an image with CLIP (softmax over the labels).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ZeroShotArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run_zero_shot::<ClipModel>(
        Cli::parse().args,
        "openai/clip-vit-base-patch32",
    ))
}
